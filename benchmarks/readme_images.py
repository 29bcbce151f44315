"""The pictures in README.md and docs/ (docs/images/), from a finished run: the figures
`mnist-eval` draws, a `mnist-predict` grid of digits drawn on a white canvas (kept in
docs/images/digits/ for README's example) plus MNIST test digits saved as PNG, and training
digits with elastic distortions (`data.augment=elastic`).
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from benchmarks.common import ROOT, data_dir
from mnist_lightning.data.augment import Augment
from mnist_lightning.data.datamodule import load_pair
from mnist_lightning.data.datasets import ensure_mnist
from mnist_lightning.run.report import augmentation_figure

IMAGES = ROOT / "docs" / "images"
DIGITS = IMAGES / "digits"  # drawn with a pen stroke on white: inputs=docs/images/digits/
STROKES = {  # (kind, points) on a 200x200 canvas
    "drawn_0": ("ellipse", [(55, 30), (145, 170)]),
    "drawn_1": ("line", [(100, 30), (100, 170)]),
    "drawn_4": ("line", [(120, 170), (120, 30), (45, 120), (155, 120)]),
    "drawn_7": ("line", [(50, 40), (150, 40), (90, 170)]),
}


def draw(kind: str, points: list, path: Path) -> None:
    image = Image.new("L", (200, 200), 255)
    pen = ImageDraw.Draw(image)
    if kind == "ellipse":
        pen.ellipse(points, outline=0, width=16)
    else:
        pen.line(points, fill=0, width=16, joint="curve")
    image.save(path)


def main(args: argparse.Namespace) -> None:
    run = args.run
    IMAGES.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "mnist_lightning.cli.eval", f"run_dir={run}"], check=True)
    for name in ("confusion_matrix", "mistakes", "first_layer"):
        shutil.copy(run / "eval" / f"{name}.png", IMAGES / f"{name}.png")
    DIGITS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (kind, points) in STROKES.items():  # kept: README's mnist-predict example
            draw(kind, points, DIGITS / f"{name}.png")
            shutil.copy(DIGITS / f"{name}.png", Path(tmp) / f"{name}.png")
        test_images, _ = load_pair(ensure_mnist(data_dir()), "t10k")
        for i in range(4):  # dark ink on light paper, 4x larger: as a scan would be
            picture = Image.fromarray(255 - test_images[i].numpy()).resize((112, 112))
            picture.save(Path(tmp) / f"mnist_test_{i}.png")
        predict = [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"inputs={tmp}"]
        predict += [f"grid={IMAGES / 'predictions.png'}"]
        subprocess.run([sys.executable, "-m", "mnist_lightning.cli.predict", *predict], check=True)
    train_images, _ = load_pair(ensure_mnist(data_dir()), "train")
    figure = augmentation_figure(train_images[:8], Augment("elastic"))
    figure.savefig(IMAGES / "augmentations.png", dpi=80)
    print(f"wrote {IMAGES}")
