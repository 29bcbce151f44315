"""Your own pictures of digits as MNIST images (mnist-predict's input).

A photo of a digit is not an MNIST image until it is prepared the way MNIST's were: grey
levels with the ink bright on black, cropped to the ink, scaled to fit 20x20 keeping its
aspect, and centred by its centre of mass in a 28x28 field. `prepare` does exactly that, so a
digit drawn with a marker on white paper is read like a test image. Only regular files are
opened: a FIFO, a device, a socket or a dangling link is named for what it is.
"""

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mnist_lightning.errors import UserError
from mnist_lightning.files import open_regular

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm"}


MAX_SIDE = 1024  # larger pictures are shrunk first: a digit needs no more detail


INK_THRESHOLD = 0.25  # of the ink range: what counts as ink when cropping


class ImageError(UserError):
    """One input image cannot be classified; the others still are."""


def prepare(image: Image.Image, name: str = "image") -> torch.Tensor:
    """A picture of one digit as MNIST would have it: (28, 28) float in [0, 1], ink bright."""
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    gray = np.asarray(image.convert("L"), dtype=np.float32) / 255
    if np.median(_border(gray)) > 0.5:  # dark ink on light paper: make the ink bright
        gray = 1 - gray
    gray = np.clip(gray - np.median(_border(gray)), 0, None)  # the paper becomes black
    if gray.max() < 0.1:
        raise ImageError(f"{name}: the image is blank (no ink found).")
    gray /= gray.max()
    rows, cols = np.nonzero(gray > INK_THRESHOLD)
    ink = gray[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    height, width = ink.shape
    scale = 20 / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = (
        np.asarray(
            Image.fromarray((ink * 255).astype(np.uint8)).resize(size, Image.Resampling.LANCZOS),
            dtype=np.float32,
        )
        / 255
    )
    # Centre of mass to the middle of the 28x28 field, as MNIST's creators did.
    ys, xs = np.indices(small.shape)
    mass = small.sum()
    cy, cx = (ys * small).sum() / mass, (xs * small).sum() / mass
    top = int(np.clip(round(14 - cy), 0, 28 - small.shape[0]))
    left = int(np.clip(round(14 - cx), 0, 28 - small.shape[1]))
    field = np.zeros((28, 28), dtype=np.float32)
    field[top : top + small.shape[0], left : left + small.shape[1]] = small
    return torch.from_numpy(np.clip(field, 0, 1))


def _border(gray: np.ndarray) -> np.ndarray:
    return np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])


def read_image(path: Path) -> torch.Tensor:
    """The prepared image in `path`, or an `ImageError` naming it. Only a regular file is
    opened: anything else is named for what it is, never opened (a FIFO would block)."""
    try:
        file = open_regular(path)
    except OSError as e:
        raise ImageError(f"{path}: {_not_regular(path, e)}.") from None
    try:
        with file, Image.open(file) as image:
            image.load()
            return prepare(image, str(path))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as e:
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise ImageError(f"{path}: not a readable image ({reason}).") from None


def _not_regular(path: Path, e: OSError) -> str:
    """Why `open_regular` refused `path`, in words."""
    if isinstance(e, FileNotFoundError) and os.path.islink(path):
        return f"a dangling symbolic link (to {os.readlink(path)}), not a regular file"
    if e.strerror and e.strerror.endswith("not a regular file"):  # open_regular's own words
        return e.strerror
    return f"cannot open it ({e.strerror or e})"
