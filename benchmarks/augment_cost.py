"""What on-device augmentation costs per training epoch, on the CPU (a table for README.md).

Times `Augment` (what `data.augment=...` runs on each training mini-batch) over 55 000 real
MNIST training images, in mini-batches as mnist-train draws them, with each kind's default
strength; the median of `--repeats` passes after a warm-up pass.
"""

import argparse
import statistics
import time

import torch

from benchmarks.common import TRAIN_IMAGES, data_dir
from mnist_lightning.data.augment import AUGMENTS, Augment
from mnist_lightning.data.datamodule import load_pair
from mnist_lightning.data.datasets import ensure_mnist


def epoch_seconds(augment: Augment, images: torch.Tensor, batch_size: int) -> float:
    generator = torch.Generator()
    start = time.perf_counter()
    for step, batch in enumerate(images.split(batch_size)):
        generator.manual_seed(step)
        augment(batch, generator)
    return time.perf_counter() - start


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)


def main(args: argparse.Namespace) -> None:
    images, _ = load_pair(ensure_mnist(data_dir()), "train")
    images = images[:TRAIN_IMAGES].float().div_(255)
    print(f"| data.augment | s per {TRAIN_IMAGES:,}-image epoch | ms per 1 000 images |")
    print("| --- | ---: | ---: |")
    for kind in AUGMENTS[1:]:
        augment = Augment(kind)
        epoch_seconds(augment, images[: 20 * args.batch_size], args.batch_size)  # warm-up
        seconds = statistics.median(
            epoch_seconds(augment, images, args.batch_size) for _ in range(args.repeats)
        )
        print(f"| {kind} | {seconds:.2f} | {1000 * seconds / TRAIN_IMAGES * 1000:.1f} |")
