"""Your own pictures of digits as MNIST images (mnist-predict's input): ink bright on black,
cropped, fitted in 20x20 and centred by mass in 28x28 as MNIST's were, after the paper's tone,
gradients and shadows are taken away and the strokes made as thick as MNIST's, so a photo or a
scan is read like a test image (docs/studies.md measures it)."""

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

from mnist_lightning.errors import UserError, one_line, printable
from mnist_lightning.files import open_regular

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm"}
MAX_SIDE = 512  # larger pictures are shrunk first: a digit needs no more detail
INK_THRESHOLD = 0.25  # of the ink's peak contrast: what counts as ink when cropping
WORK_SIDE = 80  # the cropped digit's longest side while its strokes are measured
# How thick MNIST's strokes are: 2 x area / outline over the digit's longest side, 5th and 95th
# percentiles of the test split's digits (measured as _mnist_stroke measures).
STROKE = (0.066, 0.164)
# A blot of ink is part of the digit if it has PART of the largest blot's ink and lies within
# NEAR of the digit's size, or REACH cells of a 96-cell grid, of the digit's other blots.
PART, NEAR, REACH = 0.02, 0.15, 6
MIN_DIGIT = 10  # pixels (after shrinking to MAX_SIDE): ink spanning less is a speck, not a digit
SHADOW = 0.35  # the most a shadow or a lamp changes the paper's tone beyond a smooth gradient


class ImageError(UserError):
    """One input image cannot be classified; the others still are."""


def prepare(image: Image.Image, name: str = "image") -> torch.Tensor:
    """A picture of one digit as MNIST would have it: (28, 28) float in [0, 1], ink bright."""
    ink = _ink(_gray_levels(image, name))
    if ink is None or not (ink > INK_THRESHOLD).any():
        raise ImageError(f"{name}: the image is blank (no ink found).")
    ink = _digit(ink)
    rows, cols = np.nonzero(ink > INK_THRESHOLD)
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    if max(ink.shape) < MIN_DIGIT:
        raise ImageError(
            f"{name}: the only ink is a speck of {ink.shape[1]}x{ink.shape[0]} pixels, too small "
            f"to be a digit (at least {MIN_DIGIT} pixels tall or wide)."
        )
    ink = _mnist_stroke(_resize(ink, WORK_SIDE / max(ink.shape)))
    small = _resize(ink, 20 / max(ink.shape))
    mass = small.sum()
    if not mass > 0:  # ink too faint to survive the shrinking
        raise ImageError(f"{name}: the image is blank (no ink found).")
    # Centre of mass to the middle of the 28x28 field, as MNIST's creators did.
    centre = (np.indices(small.shape) * small).sum((1, 2)) / mass
    top, left = np.clip(np.rint(14 - centre), 0, np.subtract(28, small.shape)).astype(int)
    return _field(small, top, left)  # (in [0, 1]: _resize clips)


def _field(image: np.ndarray, top: int, left: int) -> torch.Tensor:
    rows, cols = (top, 28 - top - image.shape[0]), (left, 28 - left - image.shape[1])
    return torch.from_numpy(np.pad(image, (rows, cols)).astype(np.float32))


def _gray_levels(image: Image.Image, name: str) -> np.ndarray:
    """The picture shrunk to at most MAX_SIDE, as grey levels 0 (black) to 1 (white). A 16-bit
    or float picture (a scientific TIFF) is scaled by the first of `whites` its largest value
    fits under, judged before the shrink (whose filter overshoots); NaN or infinity is refused."""
    if image.mode.startswith("I;16"):  # Pillow shrinks these badly (big-endian) or not at all
        image = image.convert("I")
    if image.mode not in ("F", "I"):
        image.thumbnail((MAX_SIDE, MAX_SIDE))
        return np.asarray(image.convert("L"), dtype=np.float32) / 255
    values = np.asarray(image, dtype=np.float64)
    if bad := int(values.size - np.isfinite(values).sum()):
        raise ImageError(f"{name}: {bad} of its pixels are not numbers (NaN or infinity).")
    top = values.max(initial=0)
    whites = (1, 255, 65535) if image.mode == "F" else (255, 65535)
    white = next((w for w in whites if top <= 1.1 * w), top)
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    return (np.asarray(image, dtype=np.float32) / white).clip(0, 1)


def _ink(gray: np.ndarray) -> np.ndarray | None:
    """How much ink is on each pixel, 0 (paper) to 1 (the darkest stroke), or None if none is.

    Ink is the minority of pixels, far from the paper's tone: dark on light paper, or bright
    on a dark ground (MNIST's own). It is measured against the paper's smooth surface
    (`_paper`: a tone, a light gradient, vignetting), relative to the paper's brightness there,
    so a stroke reads the same in the lit and the shaded corner. Noise is smoothed over a pixel
    or two and counted as ink only well above its own spread; a picture with no such ink is blank.
    """
    width = 2 * max(1, min(gray.shape) // 150) + 1  # each pixel the mean of width x width
    smooth = torch.nn.functional.avg_pool2d(
        torch.tensor(gray, dtype=torch.float32)[None], width, 1, width // 2, count_include_pad=False
    )[0].numpy()
    # The noise left after smoothing: from pixels a blur's width apart (independent), so a
    # page mostly covered by a marker's strokes does not count as noisy.
    apart = np.abs(smooth[:, width:] - smooth[:, :-width])
    noise = 1.4826 * np.median(apart) / np.sqrt(2) if apart.size else 0.0
    middle = np.median(smooth)
    if middle - smooth.min() > smooth.max() - middle:  # dark ink on light paper: invert
        smooth = 1 - smooth
    paper = _paper(smooth)
    contrast = smooth - paper
    if contrast.max() < max(0.1, 8 * noise):
        return None
    ink = contrast / np.maximum(1 - paper, 0.25)  # the paper's own brightness: 1 - paper
    return np.clip((ink - 2 * noise) / (0.8 * ink.max() - 2 * noise), 0, 1)


def _digit(ink: np.ndarray) -> np.ndarray:
    """The ink of the digit alone: a shadow's edge, a speck or a smudge away from it is taken
    off before the crop, which it would otherwise widen. Blots of ink are found on a grid of
    at most 96x96 cells (strokes two cells apart joined); the digit is the largest blot and,
    again and again, every blot with `PART` of its ink within reach of those kept: `NEAR` of
    their size, at least `REACH` cells (a stroke the pen lifted off, a digit drawn in dots)."""
    pool = torch.nn.functional.max_pool2d
    side = max(1, -(-max(ink.shape) // 96))
    t = torch.from_numpy(np.ascontiguousarray(ink, dtype=np.float32))[None, None]
    # Summed, not averaged: a partial cell at the edge weighs what its pixels weigh.
    mass = torch.nn.functional.avg_pool2d(t, side, side, ceil_mode=True, divisor_override=1)[0, 0]
    blots = pool(pool((t > INK_THRESHOLD).float(), side, side, ceil_mode=True), 3, 1, 1)[0, 0]
    labels = torch.arange(1, blots.numel() + 1, dtype=torch.float32).view_as(blots) * blots
    while True:  # each blot takes the largest label in it
        grown = pool(labels[None, None], 3, 1, 1)[0, 0] * blots
        if torch.equal(grown, labels):
            break
        labels = grown
    labels = labels.long()
    per_blot = torch.zeros(blots.numel() + 1).index_add_(0, labels.flatten(), mass.flatten())
    per_blot[0] = 0  # the paper
    candidate = per_blot >= PART * per_blot.max()
    kept = torch.zeros_like(candidate)
    kept[per_blot.argmax()] = True
    while True:  # add the candidates within reach of what is kept, until none is
        where = kept[labels]
        rows, cols = where.nonzero(as_tuple=True)
        size = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
        reach = max(REACH, int(NEAR * size))
        near = pool(where[None, None].float(), 2 * reach + 1, 1, reach)[0, 0] > 0
        more = kept.clone()
        more[labels[near]] = True
        more &= candidate
        if torch.equal(more, kept):
            break
        kept = more
    kept = kept[labels].repeat_interleave(side, 0).repeat_interleave(side, 1)
    return ink * kept[: ink.shape[0], : ink.shape[1]].numpy()


def _paper(image: np.ndarray) -> np.ndarray:
    """The paper under the (bright) ink: a quadratic surface fitted, four times, to the
    pixels of a 48x48 copy that the previous fit did not take for ink."""
    coarse = np.asarray(Image.fromarray(image).resize((48, 48), Image.Resampling.BOX))
    y, x = np.mgrid[-1:1:48j, -1:1:48j]
    basis = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], -1).reshape(-1, 6)
    values = coarse.ravel().astype(np.float64)
    keep = values <= np.percentile(values, 30)  # at first: surely paper, even by a marker
    for _ in range(4):
        fit = basis @ np.linalg.lstsq(basis[keep], values[keep], rcond=None)[0]
        spread = 1.4826 * np.median(np.abs(values - fit)[keep]) + 0.01
        keep = values - fit < 3 * spread
    # What the quadratic missed (a shadow's edge): per 3x3 tile, the 30th percentile of its
    # residual, opened over 5x5 tiles so that a patch of ink smaller than that is not taken
    # for paper however thick its stroke, and at most a shadow's depth: a larger patch of ink
    # (a filled shape) stays ink.
    tiles = (values - fit).reshape(16, 3, 16, 3).transpose(0, 2, 1, 3).reshape(16, 16, 9)
    local = torch.from_numpy(np.percentile(tiles, 30, axis=2).astype(np.float32))[None, None]
    local = -torch.nn.functional.max_pool2d(-local, 5, 1, 2)  # erode, then dilate
    local = torch.nn.functional.max_pool2d(local, 5, 1, 2)
    local = torch.nn.functional.interpolate(local, (48, 48), mode="bilinear")[0, 0].numpy()
    local = local.clip(-SHADOW, SHADOW)
    surface = Image.fromarray((fit.reshape(48, 48) + local).astype(np.float32))
    return np.asarray(surface.resize(image.shape[::-1], Image.Resampling.BILINEAR))


def _mnist_stroke(ink: np.ndarray) -> np.ndarray:
    """Strokes made as thick as MNIST's: a fine pen's thickened, a marker's thinned, one
    pixel each side at a time, judged by twice the ink's area over its outline."""
    for _ in range(6):
        mask = ink > 0.5
        outline = mask & ~_rank(mask, ImageFilter.MinFilter).astype(bool)
        width = 2 * mask.sum() / max(outline.sum(), 1) / max(ink.shape)
        if width < STROKE[0]:
            ink = _rank(ink, ImageFilter.MaxFilter)
        elif width > STROKE[1] and mask.sum() > outline.sum():
            ink = _rank(ink, ImageFilter.MinFilter)
        else:
            break
    return ink


def _rank(image: np.ndarray, kind: type) -> np.ndarray:  # MinFilter: erosion, MaxFilter: dilation
    return np.asarray(Image.fromarray(image.astype(np.float32)).filter(kind(3)))


def _resize(ink: np.ndarray, scale: float) -> np.ndarray:
    height, width = ink.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(ink).resize(size, Image.Resampling.LANCZOS)).clip(0, 1)


def prepare_object(image: Image.Image, name: str = "image") -> torch.Tensor:
    """A picture of one object (a Fashion-MNIST class) as that data set's were made. Not the
    digits' preparation: a garment fills its picture, and has no strokes to measure."""
    tone = _gray_levels(image, name)
    ground = np.median(np.concatenate([tone[0], tone[-1], tone[:, 0], tone[:, -1]]))
    if ground > 0.5:  # a product photo on a light background
        tone, ground = 1 - tone, 1 - ground
    tone = (tone - ground).clip(0, None)  # the background becomes black
    if tone.max() < 0.1:
        raise ImageError(f"{name}: the image is blank (nothing stands out of its background).")
    rows, cols = np.nonzero(tone > 0.1 * tone.max())
    item = tone[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] / tone.max()
    small = _resize(item, 28 / max(item.shape))
    return _field(small, (28 - small.shape[0]) // 2, (28 - small.shape[1]) // 2)


def read_image(path: Path, objects: bool = False) -> torch.Tensor:
    """The prepared image in `path` (a digit's, or with `objects` a Fashion-MNIST object's), or
    an `ImageError` naming it (`printable`); only a regular file is opened (`open_regular`)."""
    name = printable(path)
    try:
        file = open_regular(path)
    except OSError as e:
        why = e.strerror or str(e)
        if isinstance(e, FileNotFoundError) and os.path.islink(path):
            why = f"a dangling symbolic link (to {os.readlink(path)}), not a regular file"
        elif not why.endswith("not a regular file"):  # else open_regular's own words
            why = why.lower()  # no such file or directory, not a directory, ...
        raise ImageError(f"{name}: {printable(why)}.") from None
    try:
        # Pillow's warnings on a damaged file would add lines; the error below says it.
        with file, warnings.catch_warnings(action="ignore"):
            # As a viewer shows it: turned as a phone's EXIF says, a transparent drawing on white.
            image = ImageOps.exif_transpose(Image.open(file))  # (it decodes the file first)
            if "A" in image.getbands() or "transparency" in image.info:
                white = Image.new("RGBA", image.size, "white")
                image = Image.alpha_composite(white, image.convert("RGBA"))
            return (prepare_object if objects else prepare)(image, name)
    except UnidentifiedImageError:  # Pillow's words name its file object, not the file
        raise ImageError(f"{name}: not a readable image (no picture format it knows).") from None
    except (Image.DecompressionBombError, OSError, ValueError) as e:
        raise ImageError(f"{name}: not a readable image ({one_line(e, 200)}).") from None
