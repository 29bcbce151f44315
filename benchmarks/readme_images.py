"""The pictures in README.md and docs/ (docs/images/), from a finished run: the figures
`mnist-eval` draws, a `mnist-predict` grid of README's example digits (docs/images/digits/,
drawn with a pen on white) and MNIST test digits saved as PNG, and training digits with elastic
distortions (`data.augment=elastic`).
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from benchmarks.common import ROOT, data_dir
from mnist_lightning.data.augment import Augment
from mnist_lightning.data.datamodule import load_pair
from mnist_lightning.data.datasets import ensure_mnist
from mnist_lightning.run.report import augmentation_figure

IMAGES = ROOT / "docs" / "images"
DIGITS = IMAGES / "digits"  # README's mnist-predict example: inputs=docs/images/digits/


def main(args: argparse.Namespace) -> None:
    run = args.run
    IMAGES.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "mnist_lightning.cli.eval", f"run_dir={run}"], check=True)
    for name in ("confusion_matrix", "mistakes", "first_layer"):
        shutil.copy(run / "eval" / f"{name}.png", IMAGES / f"{name}.png")
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copytree(DIGITS, tmp, dirs_exist_ok=True)
        test_images, _ = load_pair(ensure_mnist(data_dir()), "t10k")
        for i in range(4):  # dark ink on light paper, 4x larger: as a scan would be
            picture = Image.fromarray(255 - test_images[i].numpy()).resize((112, 112))
            picture.save(Path(tmp) / f"mnist_test_{i}.png")
        predict = [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"inputs={tmp}"]
        predict += [f"grid={IMAGES / 'predictions.png'}"]
        (IMAGES / "predictions.png").unlink(missing_ok=True)  # mnist-predict keeps other files
        subprocess.run([sys.executable, "-m", "mnist_lightning.cli.predict", *predict], check=True)
    train_images, _ = load_pair(ensure_mnist(data_dir()), "train")
    figure = augmentation_figure(train_images[:8], Augment("elastic"))
    figure.savefig(IMAGES / "augmentations.png", dpi=80)
    print(f"wrote {IMAGES}")
