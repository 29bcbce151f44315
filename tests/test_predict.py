"""mnist-predict's image preprocessing, fuzzed: whatever the picture, the result is a 28×28
MNIST-like image or an `ImageError` naming the file, never another exception."""

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from mnist_lightning.predict import ImageError, prepare, read_image

# Pillow modes a file on disk can decode to, and how each is built from 8-bit channels.
MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4, "1": 1, "P": 1, "I": 1, "F": 1}


def picture(mode: str, pixels: np.ndarray) -> Image.Image:
    channels = MODES[mode]
    if mode in ("I", "F"):  # 32-bit integer and float images, e.g. from TIFF files
        return Image.fromarray(pixels[..., 0].astype(np.int32 if mode == "I" else np.float32))
    base = Image.fromarray(pixels[..., 0] if channels == 1 else pixels[..., :channels])
    return base.convert(mode) if mode in ("1", "P") else base


def is_mnist_like(image: torch.Tensor) -> bool:
    return (
        image.shape == (28, 28)
        and image.dtype == torch.float32
        and bool(torch.isfinite(image).all())
        and 0 <= float(image.min()) <= float(image.max()) <= 1
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mode=st.sampled_from(sorted(MODES)),
    pixels=arrays(
        np.uint8,
        st.tuples(st.integers(1, 64), st.integers(1, 64), st.just(4)),
        elements=st.integers(0, 255),
    ),
)
@example(mode="L", pixels=np.zeros((1, 1, 4), np.uint8))  # one black pixel
@example(mode="L", pixels=np.full((40, 3, 4), 255, np.uint8))  # a white sliver
def test_any_picture_becomes_an_mnist_image_or_an_image_error(
    mode: str, pixels: np.ndarray
) -> None:
    try:
        image = prepare(picture(mode, pixels), "drawn.png")
    except ImageError as e:
        assert str(e).startswith("drawn.png: ")
    else:
        assert is_mnist_like(image)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1e30, 1e30])
def test_float_images_with_extreme_values(value: float) -> None:
    pixels = np.zeros((30, 30), np.float32)
    pixels[10:20, 12:16] = value
    try:
        image = prepare(Image.fromarray(pixels), "scan.tif")
    except ImageError as e:
        assert str(e).startswith("scan.tif: ")
    else:
        assert is_mnist_like(image)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=2000), name=st.sampled_from(["x.png", "x.jpg", "x.gif"]))
@example(data=b"", name="x.png")
@example(data=b"\x89PNG\r\n\x1a\n", name="x.png")  # a PNG signature and nothing else
def test_any_file_is_read_or_refused_with_its_name(data: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        try:
            image = read_image(path)
        except ImageError as e:
            assert str(e).startswith(f"{path}: ")
        else:
            assert is_mnist_like(image)


def test_a_corrupted_real_png_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    Image.new("L", (50, 50), 255).save(buffer, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[:60])
    with pytest.raises(ImageError, match=r"cut\.png: not a readable image"):
        read_image(path)
