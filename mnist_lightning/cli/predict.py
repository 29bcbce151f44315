"""`mnist-predict`: classify your own pictures of handwritten digits.

A photo of a digit is not an MNIST image until it is prepared the way MNIST's were: grey
levels with the ink bright on black, cropped to the ink, scaled to fit 20x20 keeping its
aspect, and centred by its centre of mass in a 28x28 field. `prepare` does exactly that, so a
digit drawn with a marker on white paper is read like a test image.

Every argument is checked before any work, and the inputs are read only if they are regular
files: a FIFO, a device, a socket or a dangling link among them is skipped by name, never opened.
The grid (`grid=`) is written atomically, never over an input, and over an existing file only if
that file is a grid mnist-predict wrote (it carries `Software: mnist-predict` in its metadata).
"""

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from PIL import Image, UnidentifiedImageError

from mnist_lightning.cli import CONFIG_DIR, console_entry, exit_on_user_error
from mnist_lightning.errors import ConfigError, UserError
from mnist_lightning.files import (
    atomic_open,
    check_writable,
    kind_of,
    open_regular,
)
from mnist_lightning.model.inference import pick_device
from mnist_lightning.run.checkpoint import load_classifier
from mnist_lightning.run.config import DEVICES, check_boolean, check_choice
from mnist_lightning.run.report import digits_figure

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm"}
MAX_SIDE = 1024  # larger pictures are shrunk first: a digit needs no more detail
INK_THRESHOLD = 0.25  # of the ink range: what counts as ink when cropping
GRID_SOFTWARE = "mnist-predict"  # the PNG `Software` text of the grids it writes


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


def input_files(inputs: list[str]) -> list[Path]:
    """The files `inputs=` names: files as given, directories by image suffix. Whatever is not
    a regular file is kept, for `read_image` to skip by name; a name that is nothing at all
    (not even a dangling link) is an error."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        try:
            is_dir = stat.S_ISDIR(os.stat(path).st_mode)
        except OSError:
            is_dir = False
        if is_dir:
            try:
                found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            except OSError as e:
                raise ConfigError(f"inputs={item}: cannot list it ({e.strerror or e}).") from None
            if not found:
                raise ConfigError(f"inputs={item}: the directory holds no image files.")
            files += found
        elif os.path.lexists(path):
            files.append(path)
        else:
            raise ConfigError(f"inputs={item}: no such file or directory.")
    return files


def _value(cfg: DictConfig, key: str, example: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=True)
    except MissingMandatoryValue:
        raise ConfigError(f"{key} is required, e.g. {example}") from None
    except Exception as e:  # an interpolation that does not resolve
        raise ConfigError(f"{key}: {' '.join(str(e).split())}") from None


def check_arguments(cfg: DictConfig) -> tuple[str, list[str], Path | None]:
    """ckpt_path, the input names and the grid path, once every argument is known to be usable;
    else a `ConfigError` naming the key. Non-finite numbers are refused like any other."""
    example = "ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt."
    ckpt = _value(cfg, "ckpt_path", example)
    if ckpt is None:
        raise ConfigError(f"ckpt_path is required, e.g. {example}")
    if not isinstance(ckpt, str) or not ckpt.strip():
        raise ConfigError(f"ckpt_path={ckpt!r} must be the path of a checkpoint, e.g. {example}")
    raw = _value(cfg, "inputs", "inputs=my_digits/ or 'inputs=[a.png,b.jpg]'.")
    items = list(raw) if isinstance(raw, ListConfig | list) else [raw]
    if not items or not all(isinstance(i, str) and i.strip() for i in items):
        shown = OmegaConf.to_container(raw) if isinstance(raw, ListConfig) else raw
        raise ConfigError(
            f"inputs={shown!r} must name image files or directories: a path, or a non-empty list "
            "of paths (a name that looks like a number is given quoted: 'inputs=\"7\"')."
        )
    check_choice(cfg, "device", DEVICES)
    check_boolean(cfg, "json")
    grid = _value(cfg, "grid", "grid=predictions.png.")
    if grid is None:
        return ckpt, items, None
    if not isinstance(grid, str) or Path(grid).suffix.lower() != ".png":
        raise ConfigError(
            f"grid={grid!r} must be the path of a PNG file to write, ending in .png "
            "(or null for no grid)."
        )
    return ckpt, items, Path(grid)


def check_grid(grid: Path, inputs: list[Path]) -> None:
    """Refuse, before any work, a grid path that would overwrite an input or a file that is not
    an earlier grid, or that cannot be written."""
    name = f"grid={grid}"
    for item in inputs:
        if _same_file(grid, item):
            raise ConfigError(
                f"{name} is also an input ({item}); mnist-predict never writes over its inputs. "
                "Choose another path for the grid."
            )
    check_writable(grid.absolute().parent, name)
    check_grid_target(grid)


def check_grid_target(grid: Path) -> None:
    """What is at `grid` now may be replaced only if it is an earlier grid of mnist-predict."""
    try:
        mode = os.lstat(grid).st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise ConfigError(f"grid={grid}: cannot write there ({e.strerror or e}).") from None
    if not stat.S_ISREG(mode):
        raise ConfigError(
            f"grid={grid} is {kind_of(mode)}, not a regular file; choose another path for the grid."
        )
    if not is_grid(grid):
        raise ConfigError(
            f"grid={grid} exists and is not a grid mnist-predict wrote; choose another path or "
            "delete it."
        )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): the same name is the same file
        return os.path.realpath(a) == os.path.realpath(b)


def is_grid(path: Path) -> bool:
    """Whether `path` is a PNG that mnist-predict wrote (its `Software` text says so)."""
    try:
        with open_regular(path) as file, Image.open(file) as image:
            return image.format == "PNG" and image.info.get("Software") == GRID_SOFTWARE
    except Exception:  # whatever Pillow makes of a file that is not a PNG: not a grid
        return False


def write_grid(grid: Path, images: list[torch.Tensor], rows: list[dict[str, Any]]) -> None:
    captions = [f"{Path(r['file']).name[:14]}\n{r['digit']} ({r['probability']:.0%})" for r in rows]
    figure = digits_figure(torch.stack(images), captions, "Predictions")
    check_grid_target(grid)  # again: something may have appeared there meanwhile
    try:
        with atomic_open(grid, "wb") as f:
            figure.savefig(f, format="png", dpi=120, metadata={"Software": GRID_SOFTWARE})
    except OSError as e:
        raise UserError(f"Cannot write grid={grid}: {e.strerror or e}.") from None
    print(f"wrote {grid}", file=sys.stderr)  # stdout is the table, or JSON lines


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    ckpt_path, inputs, grid = check_arguments(cfg)
    files = input_files(inputs)
    if grid is not None:
        check_grid(grid, files)
    device = pick_device(cfg.device)
    model, _ = load_classifier(ckpt_path, device)

    prepared, rows, failures = [], [], 0
    for path in files:
        try:
            image = read_image(path)
        except ImageError as e:
            print(f"skipped: {e}", file=sys.stderr)
            failures += 1
            continue
        with torch.no_grad():
            probs = model(image[None].to(device)).softmax(1)[0].cpu()
        if not probs.isfinite().all():  # NaN or infinite weights: no answer, not a guess
            print(
                f"skipped: {path}: the model's output is not finite (NaN); the checkpoint's "
                "weights are damaged.",
                file=sys.stderr,
            )
            failures += 1
            continue
        top = probs.topk(2)
        prepared.append(image)
        rows.append(
            {
                "file": str(path),
                "digit": int(top.indices[0]),
                "probability": round(float(top.values[0]), 4),
                "runner_up": int(top.indices[1]),
                "runner_up_probability": round(float(top.values[1]), 4),
            }
        )
    if cfg.json:
        for row in rows:  # strict JSON: a number that is not finite would be written NaN
            finite = {
                k: None if isinstance(v, float) and not np.isfinite(v) else v
                for k, v in row.items()
            }
            print(json.dumps(finite, allow_nan=False))
    else:
        width = max((len(r["file"]) for r in rows), default=4)
        print(f"{'file':<{width}}  digit  probability  runner-up")
        for r in rows:
            print(
                f"{r['file']:<{width}}  {r['digit']:>5}  {r['probability']:>11.1%}  "
                f"{r['runner_up']} ({r['runner_up_probability']:.1%})"
            )
    if grid is not None and prepared:
        write_grid(grid, prepared, rows)
    if failures:
        sys.exit(1 if rows else 2)


cli = console_entry(main)


if __name__ == "__main__":
    cli()
