"""(a) The tutorial-style loop, as the scripts this project grew out of train.

torchvision's `datasets.MNIST` (reading the IDX files under <data_dir>/MNIST/raw), a PIL image
per sample through `ToTensor()` and `Normalize()`, a `DataLoader(batch_size=64, shuffle=True)`
in the main process, and a plain training loop. This is the reference the project must beat:
its time goes to per-sample Python work, not to arithmetic.

    python -m benchmarks.loop_tutorial --epochs 4 --out result.json
"""

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from benchmarks.common import BATCH_SIZE, LR, MNIST_MEAN, MNIST_STD, SEED, data_dir, mlp


def loader(train: bool, batch_size: int, shuffle: bool) -> DataLoader:
    """The tutorial's data path: a Dataset of PIL images and per-sample transforms."""
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
    )
    dataset = datasets.MNIST(root=data_dir(), train=train, download=False, transform=transform)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle)


def train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: DataLoader,
    max_batches: int | None,
) -> int:
    """One pass of the tutorial loop; returns the number of images trained on."""
    model.train()
    seen = 0
    for i, (images, labels) in enumerate(batches):
        if i == max_batches:
            break
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        seen += len(labels)
    return seen


@torch.no_grad()
def test_accuracy(model: torch.nn.Module) -> float:
    """Accuracy on the official 10 000 test images, through the same per-sample path."""
    model.eval()
    correct = total = 0
    for images, labels in loader(train=False, batch_size=1000, shuffle=False):
        correct += int((model(images).argmax(1) == labels).sum())
        total += len(labels)
    return correct / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=4, help="the first is the warm-up")
    parser.add_argument("--max-batches", type=int, default=None, help="cut epochs short")
    parser.add_argument("--out", type=Path, required=True, help="JSON result file")
    args = parser.parse_args()

    torch.manual_seed(SEED)
    batches = loader(train=True, batch_size=BATCH_SIZE, shuffle=True)
    model = mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    epoch_seconds, samples = [], 0
    for _ in range(args.epochs):
        start = time.perf_counter()
        samples = train_epoch(model, optimizer, batches, args.max_batches)
        epoch_seconds.append(time.perf_counter() - start)
    result = {
        "epoch_seconds": epoch_seconds,
        "samples_per_epoch": samples,
        "test_acc": test_accuracy(model),
    }
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
