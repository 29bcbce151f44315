"""`mnist-predict`: classify your own pictures of digits (of clothes, with a Fashion-MNIST
checkpoint), each prepared as the data set's were (data/images.py). `grid=` is written
atomically, never over an input or a file other than a grid it wrote (PNG text `Software`)."""

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from mnist_lightning.cli import (
    carries,
    check_overwrite,
    command,
    open_checkpoint,
    png_mark,
    writing,
)
from mnist_lightning.data.datasets import MNIST, DataSet
from mnist_lightning.data.images import IMAGE_SUFFIXES, ImageError, read_image
from mnist_lightning.errors import printable
from mnist_lightning.files import atomic_open
from mnist_lightning.run.config import validate_predict
from mnist_lightning.run.report import digits_figure

GRID_SOFTWARE = "mnist-predict"  # the PNG `Software` text of the grids it writes


def input_files(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """The files `inputs=` names (files as given, directories by image suffix), each once as
    first spelt, and a line for each directory that gives none. A name that is no regular file
    is kept, for `read_image` to skip saying why."""
    files: dict[str, Path] = {}
    skipped: list[str] = []
    for item in map(Path, inputs):
        found = [item]
        if os.path.isdir(item):  # False for whatever cannot be looked at
            try:
                found = sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
                why = f"the directory holds no pictures ({', '.join(sorted(IMAGE_SUFFIXES))})"
            except OSError as e:
                found, why = [], f"cannot list this directory ({e.strerror or e})"
            if not found:
                skipped.append(f"{printable(item)}: {why}.")
        for path in found:
            files.setdefault(os.path.abspath(path), path)
    return list(files.values()), skipped


def check_grid(grid: Path, inputs: list[Path]) -> None:
    """Before any work, and again just before writing."""
    also = {item: f"is also an input ({printable(item)})" for item in inputs}
    what = "a grid mnist-predict wrote"
    check_overwrite(grid, f"grid={printable(grid)}", also, "mnist-predict", is_grid, what)


def is_grid(path: Path) -> bool:
    return carries(path, png_mark(GRID_SOFTWARE))


def write_grid(
    grid: Path, images: list[torch.Tensor], rows: list[dict[str, Any]], dataset: DataSet = MNIST
) -> None:
    captions = [
        f"{printable(Path(r['file']).name)[:14]}\n"
        f"{dataset.classes[r[dataset.noun]]} ({r['probability']:.0%})"
        for r in rows
    ]
    figure = digits_figure(torch.stack(images), captions, "Predictions")
    check_grid(grid, [])  # something may have appeared there meanwhile
    with writing(f"grid={printable(grid)}"), atomic_open(grid, "wb") as f:
        figure.savefig(f, format="png", dpi=120, metadata={"Software": GRID_SOFTWARE})
    print(f"wrote {printable(grid)}", file=sys.stderr)  # stdout is the table, or JSON lines


def answer(path: Path, probs: torch.Tensor, dataset: DataSet) -> dict[str, Any]:
    """One picture's row: the best class and the runner-up, by number (under the data set's
    noun: `digit` for MNIST, `class` for Fashion-MNIST) and, where they have them, by name."""
    top = probs.topk(2)
    best, second = (int(i) for i in top.indices)
    row = {
        "file": str(path),
        dataset.noun: best,
        "probability": round(float(top.values[0]), 4),
        "runner_up": second,
        "runner_up_probability": round(float(top.values[1]), 4),
    }
    if dataset.named:
        row |= {"name": dataset.classes[best], "runner_up_name": dataset.classes[second]}
    return row


@command("predict")
def main(cfg: DictConfig) -> None:
    inputs, grid = validate_predict(cfg)
    files, skipped = input_files(inputs)
    for line in skipped:
        print(f"skipped: {line}", file=sys.stderr)
    if not files:
        sys.exit(2)
    if grid is not None:
        check_grid(grid, files)
    model, _, dataset = open_checkpoint(Path(cfg.ckpt_path), cfg.device)  # what its outputs are

    prepared, rows = [], []
    for path in files:
        try:
            image = read_image(path, objects=dataset.named)
            with torch.no_grad():
                probs = model(image[None].to(model.device)).softmax(1)[0].cpu()
            if not probs.isfinite().all():  # NaN or infinite weights: no answer, not a guess
                raise ImageError(
                    f"{printable(path)}: the model's output is not finite (NaN); the "
                    "checkpoint's weights are damaged."
                )
        except ImageError as e:
            print(f"skipped: {e}", file=sys.stderr)
            continue
        prepared.append(image)
        rows.append(answer(path, probs, dataset))
    if cfg.json:
        for row in rows:  # strict JSON: a row's numbers are finite (others were skipped above)
            print(json.dumps(row, allow_nan=False))
    elif rows:
        shown = [printable(r["file"]) for r in rows]
        width = max(map(len, shown))
        noun, names = dataset.noun, dataset.classes
        column = max(len(noun), *(len(name) for name in names))
        print(f"{'file':<{width}}  {noun:>{column}}  probability  runner-up")
        for r, file in zip(rows, shown, strict=True):
            print(
                f"{file:<{width}}  {names[r[noun]]:>{column}}  {r['probability']:>11.1%}  "
                f"{names[r['runner_up']]} ({r['runner_up_probability']:.1%})"
            )
    if grid is not None and prepared:
        write_grid(grid, prepared, rows, dataset)
    if skipped or len(rows) < len(files):
        sys.exit(1 if rows else 2)


if __name__ == "__main__":
    main()
