"""`mnist-predict`: classify your own pictures of handwritten digits.

A photo of a digit is not an MNIST image until it is prepared the way MNIST's were: grey
levels with the ink bright on black, cropped to the ink, scaled to fit 20x20 keeping its
aspect, and centred by its centre of mass in a 28x28 field. `prepare` does exactly that, so a
digit drawn with a marker on white paper is read like a test image.
"""

import json
import logging
import sys
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, ListConfig
from PIL import Image, UnidentifiedImageError

from mnist_lightning.checkpoint import load_classifier
from mnist_lightning.config import CONFIG_DIR
from mnist_lightning.errors import ConfigError, UserError, exit_on_user_error
from mnist_lightning.eval import pick_device
from mnist_lightning.figures import digits_figure

log = logging.getLogger(__name__)

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
    try:
        with Image.open(path) as image:
            image.load()
            return prepare(image, str(path))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as e:
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise ImageError(f"{path}: not a readable image ({reason}).") from None


def input_files(inputs: str | list[str]) -> list[Path]:
    """The image files `inputs=` names: files as given, directories by image suffix."""
    files: list[Path] = []
    for item in [inputs] if isinstance(inputs, str) else list(inputs):
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ConfigError(f"inputs={item}: the directory holds no image files.")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"inputs={item}: no such file or directory.")
    return files


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    inputs = list(cfg.inputs) if isinstance(cfg.inputs, ListConfig) else str(cfg.inputs)
    files = input_files(inputs)
    device = pick_device(cfg.device)
    model, _ = load_classifier(cfg.ckpt_path, device)

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
        for row in rows:
            print(json.dumps(row))
    else:
        width = max((len(r["file"]) for r in rows), default=4)
        print(f"{'file':<{width}}  digit  probability  runner-up")
        for r in rows:
            print(
                f"{r['file']:<{width}}  {r['digit']:>5}  {r['probability']:>11.1%}  "
                f"{r['runner_up']} ({r['runner_up_probability']:.1%})"
            )
    if cfg.grid and prepared:
        captions = [
            f"{Path(r['file']).name[:14]}\n{r['digit']} ({r['probability']:.0%})" for r in rows
        ]
        digits_figure(torch.stack(prepared), captions, "Predictions").savefig(cfg.grid, dpi=120)
        log.info("wrote %s", cfg.grid)
    if failures:
        sys.exit(1 if rows else 2)


if __name__ == "__main__":
    main()
