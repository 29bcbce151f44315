"""mnist-predict: whatever the picture or file, a 28×28 MNIST-like image or an `ImageError`
naming the file, never another exception; its arguments and `grid=`, function by function
(inputs that give no picture, a picture as grid=, the command: test_bad_input.py)."""

import contextlib
import errno
import io
import itertools
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from omegaconf import OmegaConf
from PIL import Image, ImageDraw

from mnist_lightning.cli import writing
from mnist_lightning.cli.predict import GRID_SOFTWARE, check_grid, is_grid, write_grid
from mnist_lightning.cli.predict import main as predict
from mnist_lightning.data.images import ImageError, prepare, read_image
from mnist_lightning.errors import ConfigError, UserError
from mnist_lightning.model.classifier import MNISTClassifier
from mnist_lightning.run.config import validate_predict
from tests.helpers.worlds import unix_socket

# Pillow modes a file on disk can decode to, and how each is built from 8-bit channels.
MODES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4, "1": 1, "P": 1, "I": 1, "F": 1}


def picture(mode: str, pixels: np.ndarray) -> Image.Image:
    channels = MODES[mode]
    if mode in ("I", "F"):  # 32-bit integer and float images, e.g. from TIFF files
        return Image.fromarray(pixels[..., 0].astype(np.int32 if mode == "I" else np.float32))
    base = Image.fromarray(pixels[..., 0] if channels == 1 else pixels[..., :channels])
    return base.convert(mode) if mode in ("1", "P") else base


def is_mnist_like(image: torch.Tensor) -> bool:  # (NaN and infinity are not in [0, 1])
    in_range = bool(((image >= 0) & (image <= 1)).all())
    return image.shape == (28, 28) and image.dtype == torch.float32 and in_range


@pytest.mark.slow  # 60 pictures
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_float_picture_with_pixels_that_are_not_numbers_is_refused(value: float) -> None:
    """Not guessed: a NaN taken for paper or ink would change the digit read."""
    pixels = np.zeros((30, 30), np.float32)
    pixels[10:20, 12:16] = value
    with pytest.raises(ImageError) as info:
        prepare(Image.fromarray(pixels), "scan.tif")
    assert str(info.value) == "scan.tif: 40 of its pixels are not numbers (NaN or infinity)."


DEEP = [(np.float32, 1.0), (np.float32, 255.0), (np.float32, 1e30), (np.uint16, 65535),
        (np.int32, 255), ("I;16", 65535), ("I;16B", 65535)]  # fmt: skip


LARGE = [pytest.param(*k, 2100, marks=() if k[0] == "I;16" else pytest.mark.slow) for k in DEEP]


@pytest.mark.parametrize(("kind", "white", "side"), [*((*k, 96) for k in DEEP), *LARGE])
def test_a_deep_picture_is_read_as_its_8_bit_copy_is(kind: object, white: float, side: int) -> None:
    """Scaled by its white, not clipped, also when shrunk (whose filter overshoots; Pillow cannot
    shrink I;16 by 4x or more, and shrinks big-endian ones into junk)."""
    seven = drawn_seven().resize((side, side))
    values = np.asarray(seven, np.float64) / 255 * white
    if isinstance(kind, str):  # as a TIFF reader makes them, in that byte order
        order = ">u2" if kind == "I;16B" else "<u2"
        deep = Image.frombytes(kind, seven.size, values.round().astype(order))
    else:
        deep = Image.fromarray(values.astype(kind))
    assert torch.allclose(prepare(deep), prepare(seven), atol=0.02)


def test_a_speck_alone_is_refused_not_read_as_a_digit() -> None:
    """A dot of dirt on a clean page was blown up to 20x20 and read as an 8."""
    page = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(page).ellipse((100, 100, 106, 106), fill=0)
    with pytest.raises(ImageError, match=r"^speck.png: the only ink is a speck of 9x9 pixels"):
        prepare(page, "speck.png")
    small = Image.new("L", (200, 200), 255)  # a small digit is still read
    small.paste(drawn_seven().resize((16, 16)), (90, 90))
    assert prepare(small).sum() > 0


PNG = io.BytesIO()
Image.new("L", (50, 50), 255).save(PNG, format="PNG")
CUT_PNG = PNG.getvalue()[:60]  # a real PNG cut short


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=2000), name=st.sampled_from(["x.png", "x.jpg", "x.gif"]))
@example(data=b"", name="x.png")
@example(data=b"\x89PNG\r\n\x1a\n", name="x.png")  # a PNG signature and nothing else
@example(data=CUT_PNG, name="x.png")  # a real PNG cut short
def test_any_file_is_read_or_refused_with_its_name(data: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        try:
            image = read_image(path)
        except ImageError as e:
            assert str(e).startswith(f"{path}: ")
            assert data != CUT_PNG or "not a readable image" in str(e)
        else:
            assert is_mnist_like(image)


GOOD_ARGS = {"ckpt_path": "last.ckpt", "inputs": "x.png", "device": "auto", "json": False}
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("key", "values", "words"),
    [
        ("ckpt_path", ["???", None, ""], "ckpt_path is missing: give ckpt_path=<path>."),
        ("ckpt_path", [5, NAN], "must be a file or directory path (quote a name Hydra"),
        ("inputs", ["???"], "inputs is required"),
        ("inputs", [[], NAN, 7, "", None, ["a.png", 1]], "must name image files or dir"),
        ("device", [NAN, INF, "gpu"], "is not one of: auto, cpu, cuda, mps."),
        ("json", [2, NAN, "yes"], "must be true or false."),
        (
            "grid",
            [NAN, -INF, True, 5, "", "x.txt"],
            "must be the path of a PNG file to write, ending in .png (or null for no grid).",
        ),
    ],
)
def test_every_argument_is_checked_before_any_work(key: str, values: list, words: str) -> None:
    for value in values:
        cfg = OmegaConf.create(GOOD_ARGS | {"grid": None, key: value})
        with pytest.raises(ConfigError) as info:
            validate_predict(cfg)
        message = str(info.value)
        missing = value == "???" or (key == "ckpt_path" and value in (None, ""))
        named = f"{key} is" if missing else f"{key}={value!r} "
        assert message.startswith(named) and words in message, message


def earlier_grid(path: Path) -> None:
    write_grid(path, [torch.ones(28, 28)], [{"file": "a.png", "digit": 1, "probability": 0.5}])


@pytest.mark.usefixtures("no_hang")
@pytest.mark.parametrize(
    ("grid", "make", "words"),
    [
        ("in.png", None, "is also an input (in.png)"),
        ("hardlink.png", lambda p: os.link(p.with_name("in.png"), p), "is also an input"),
        ("symlink.png", lambda p: p.symlink_to("in.png"), "is also an input"),
        ("sub/../in.png", None, "is also an input"),
        ("notes.png", lambda p: p.write_text("notes"), "exists and is not a grid mnist-predict"),
        ("empty.png", lambda p: p.write_bytes(b""), "exists and is not a grid"),
        (  # even to a grid
            "link.png",
            lambda p: (earlier_grid(p.with_name("g.png")), p.symlink_to("g.png")),
            "is a symbolic link, not a regular file",
        ),
        ("fifo.png", os.mkfifo, "is a FIFO, not a regular file"),
        ("dir.png", Path.mkdir, "is a directory, not a regular file"),
        ("sock.png", unix_socket, "is a socket, not a regular file"),
        ("gone.png", lambda p: p.symlink_to("nowhere.png"), "is a symbolic link, not a regular"),
        ("loop.png", lambda p: p.symlink_to("loop.png"), "is a symbolic link, not a regular file"),
        ("a.txt/sub/g.png", None, "a.txt is a regular file)"),
        ("/proc/g.png", None, "cannot write to /proc ("),
        ("/proc/self/g.png", None, "cannot write to /proc/self ("),
        ("/dev/null/g.png", None, "(/dev/null is a character device)"),
        ("g.png", None, None),  # written
        ("new/folders/g.png", None, None),
        ("earlier.png", earlier_grid, None),
    ],
)
def test_a_grid_is_written_only_where_it_overwrites_nothing_but_an_earlier_grid(
    grid: str, make: Callable[[Path], None] | None, words: str | None, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Image.new("L", (8, 8), 255).save(tmp_path / "in.png")
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("")
    if make:
        make(tmp_path / grid)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ConfigError) if words else contextlib.nullcontext() as info:
        check_grid(Path(grid), [Path("in.png")])
    assert sorted(os.listdir(tmp_path)) == before  # checked: no probe file, no folder made
    if words:
        assert str(info.value).startswith(f"grid={grid}") and words in str(info.value)
        return
    earlier_grid(Path(grid))
    with Image.open(grid) as image:
        assert image.info["Software"] == GRID_SOFTWARE and is_grid(Path(grid))
    assert not list(tmp_path.rglob("*.tmp"))  # written atomically


def test_a_model_that_answers_nan_skips_the_image_and_prints_strict_json(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """NaN weights made it print `"probability": NaN` (not JSON) and exit 0. Weights infinite
    on the centre pixel: NaN where it is ink, finite where it is not."""
    model = MNISTClassifier(hidden_dims=[4])
    with torch.no_grad():
        model.net.layers[0].weight.zero_()
        model.net.layers[0].weight[:, 14 * 28 + 14] = float("inf")
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}
    torch.save(checkpoint, tmp_path / "x.ckpt")
    filled, ring = tmp_path / "filled.png", tmp_path / "ring.png"
    for path, inside in ((filled, 255), (ring, 0)):  # a white square on black, or its outline
        pixels = np.zeros((40, 40), dtype=np.uint8)
        pixels[10:30, 10:30], pixels[14:26, 14:26] = 255, inside
        Image.fromarray(pixels).save(path)
    args = {"ckpt_path": str(tmp_path / "x.ckpt"), "inputs": str(tmp_path), "grid": None}
    with pytest.raises(SystemExit) as exit_info:  # (composed by Hydra: test_commands_in_process)
        predict(OmegaConf.create(args | {"json": True, "device": "cpu"}))
    out, err = capsys.readouterr()
    damaged = "the model's output is not finite (NaN); the checkpoint's weights are damaged."
    assert f"skipped: {filled}: {damaged}" in err and "NaN" not in out
    rows = [json.loads(line) for line in out.splitlines()]  # strict JSON, or it raises
    assert exit_info.value.code == 1  # some answered, some skipped
    assert [row["file"] for row in rows] == [str(ring)] and 0 <= rows[0]["probability"] <= 1


def drawn_seven() -> Image.Image:  # black pen on white, 96x96
    image = Image.new("L", (96, 96), 255)
    ImageDraw.Draw(image).line([(25, 20), (70, 20), (40, 80)], fill=0, width=7)
    return image


def transparent(seven: Image.Image) -> Image.Image:  # opaque where the pen went
    rgba = Image.new("RGBA", seven.size, (0, 0, 0, 0))
    rgba.putalpha(Image.eval(seven, lambda v: 255 - v))
    return rgba


def dirty(seven: Image.Image) -> Image.Image:  # a speck and a shadow's edge, far from the 7
    draw = ImageDraw.Draw(seven)
    draw.ellipse((84, 84, 88, 88), fill=0)
    draw.line([(3, 5), (3, 90)], fill=90, width=2)
    return seven


@pytest.mark.parametrize(
    ("variant", "orientation", "atol"),  # EXIF's Orientation: 1 upright, 6 the camera turned
    [
        (transparent, 1, 0.05),  # its background, as seen, is white paper
        (lambda seven: seven.transpose(Image.Transpose.ROTATE_90), 6, 1e-6),  # turned back
        (dirty, 1, 0.05),  # they would widen the crop and shrink the digit in its box
    ],
    ids=["transparent-drawing", "phone-photo-exif", "speck-and-shadow-edge"],
)
def test_a_picture_is_read_as_its_plain_upright_clean_copy(
    variant: Callable[[Image.Image], Image.Image], orientation: int, atol: float, tmp_path: Path
) -> None:
    drawn_seven().save(tmp_path / "plain.png")
    tags = Image.Exif()
    tags[0x0112] = orientation
    variant(drawn_seven()).save(tmp_path / "variant.png", exif=tags)
    got, expected = read_image(tmp_path / "variant.png"), read_image(tmp_path / "plain.png")
    assert torch.allclose(got, expected, atol=atol)


def ink_box(path: Path, level: float, **objects: bool) -> tuple[int, int]:
    """The height and width of what `read_image` makes of `path` above `level`."""
    rows, cols = np.nonzero(read_image(path, **objects).numpy() > level)
    return rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def test_a_garment_filling_its_picture_is_prepared_whole(tmp_path: Path) -> None:
    """Fashion-MNIST pictures are objects: not refused or thinned as a digit's strokes would be."""
    photo = Image.new("L", (120, 90), 255)
    photo.paste(60, (10, 5, 110, 85))  # a dark grey garment filling most of the frame
    photo.save(tmp_path / "shirt.png")
    height, width = ink_box(tmp_path / "shirt.png", 0.5, objects=True)
    assert width == 28 and 20 <= height <= 24  # its longest side scaled to 28, its aspect kept


def test_a_digit_written_in_dots_keeps_every_dot(tmp_path: Path) -> None:
    """A dot-matrix display, a stencil, a skipping pen: one digit, as the solid line is."""
    seven = [(128, 100), (384, 100), (230, 435)]
    dots, solid = Image.new("L", (512, 512), 255), Image.new("L", (512, 512), 255)
    ImageDraw.Draw(solid).line(seven, fill=0, width=16)
    for (x0, y0), (x1, y1) in itertools.pairwise(seven):  # dots of radius 8, about 40 px apart
        for t in np.linspace(0, 1, int(np.hypot(x1 - x0, y1 - y0) / 40) + 1):
            x, y = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
            ImageDraw.Draw(dots).ellipse((x - 8, y - 8, x + 8, y + 8), fill=0)
    dots.save(tmp_path / "dots.png")
    solid.save(tmp_path / "solid.png")
    box = [ink_box(tmp_path / f"{name}.png", 0.3) for name in ("dots", "solid")]
    assert abs(box[0][0] - box[1][0]) <= 2 and abs(box[0][1] - box[1][1]) <= 2, box


def test_a_write_that_fails_is_one_line_naming_the_file() -> None:
    with pytest.raises(UserError) as info, writing("grid=g.png"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), ".g.png.x1.tmp")
    assert str(info.value) == "Cannot write grid=g.png: No space left on device (.g.png.x1.tmp)."
