"""(a) and (b), the loops `python -m benchmarks tutorial` sets mnist-train against. Each runs
in a process of its own, so that its peak memory is its own:

    python -m benchmarks.loops tutorial --epochs 4 --out result.json
    python -m benchmarks.loops plain --epochs 6 --hidden 4096 2048 --train-size 6400 --out r.json

(a) is the tutorial loop this project grew out of: torchvision's `datasets.MNIST`, a PIL image
per sample through `ToTensor()` and `Normalize()`, a `DataLoader(batch_size=64, shuffle=True)`
in the main process. Its time goes to per-sample Python work, not to arithmetic.

(b) is the floor a framework is measured against: mnist-train's 55 000 training images (the
same seeded 5 000 held out) in one normalised float tensor, an epoch a random permutation cut
into batches gathered by indexing. No Dataset, DataLoader, Lightning or logging. Also the loop
of the width and batch-size sweeps.

Both train `mlp()`, so that "the same model" is true by construction, not by convention.
"""

import argparse
import itertools
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from benchmarks.common import BATCH_SIZE, HIDDEN, LR, SEED, VAL_SIZE, data_dir
from mnist_lightning.model.mlp import MNIST_MEAN, MNIST_STD  # the network's own normalisation

Split = tuple[torch.Tensor, torch.Tensor]


def mlp(hidden: Sequence[int] = HIDDEN) -> nn.Sequential:
    """784 -> hidden -> 10 with ReLU, no dropout: the tutorial network."""
    widths = [28 * 28, *hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(widths[-1], 10))
    return nn.Sequential(*layers)


def tutorial_batches(train: bool, batch_size: int, shuffle: bool) -> DataLoader:
    """(a)'s data path: a Dataset of PIL images and per-sample transforms. torchvision is
    imported here, so that (b)'s process does not load it."""
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
    )
    dataset = datasets.MNIST(root=data_dir(), train=train, download=False, transform=transform)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle)


def read_split(prefix: str, rows: torch.Tensor | None = None) -> Split:
    """(b)'s data: images as normalised float rows (N, 784) and int64 labels, straight from the
    IDX files; only `rows` of them if given. Converted after selecting, in place: no copies."""
    raw = data_dir() / "MNIST" / "raw"
    images = np.fromfile(raw / f"{prefix}-images-idx3-ubyte", dtype=np.uint8, offset=16)
    labels = np.fromfile(raw / f"{prefix}-labels-idx1-ubyte", dtype=np.uint8, offset=8)
    x, y = torch.from_numpy(images).view(-1, 784), torch.from_numpy(labels).long()
    if rows is not None:
        x, y = x[rows], y[rows]
    return x.float().div_(255).sub_(MNIST_MEAN).div_(MNIST_STD), y


def train_split(size: int | None) -> Split:
    """mnist-train's training split (its seeded permutation of the 60 000, the first 5 000
    held out), optionally only its first `size` images."""
    order = torch.randperm(60_000, generator=torch.Generator().manual_seed(SEED))[VAL_SIZE:]
    return read_split("train", order[:size])


def step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> None:
    """Forward, loss, backward, optimizer step: all either loop does per batch."""
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


Loop = tuple[nn.Module, Callable[[], int], Callable[[], float]]


def tutorial(args: argparse.Namespace) -> Loop:
    """(a): the model, one epoch (returns the images it trained on), and the accuracy on the
    official 10 000 test images, through the same per-sample path."""
    batches = tutorial_batches(train=True, batch_size=BATCH_SIZE, shuffle=True)
    model = mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)

    def epoch() -> int:
        seen = 0
        for images, labels in itertools.islice(batches, args.max_batches):
            step(model, optimizer, images, labels)
            seen += len(labels)
        return seen

    def test() -> float:
        correct = total = 0
        for images, labels in tutorial_batches(train=False, batch_size=1000, shuffle=False):
            correct += int((model(images).argmax(1) == labels).sum())
            total += len(labels)
        return correct / total

    return model, epoch, test


def plain(args: argparse.Namespace) -> Loop:
    """(b): the model, one epoch (returns the images it trained on), and the accuracy on the
    official 10 000 test images."""
    x, y = train_split(args.train_size)
    model = mlp(args.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, fused=args.fused or None)
    generator = torch.Generator().manual_seed(SEED)

    def epoch() -> int:
        order = torch.randperm(len(y), generator=generator)
        for index in order.split(args.batch_size):
            step(model, optimizer, x[index], y[index])
        return len(y)

    def test() -> float:
        test_x, test_y = read_split("t10k")
        return float((model(test_x).argmax(1) == test_y).float().mean())

    return model, epoch, test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("loop", choices=("tutorial", "plain"))
    parser.add_argument("--epochs", type=int, required=True, help="the first is the warm-up")
    parser.add_argument("--out", type=Path, required=True, help="JSON result file")
    parser.add_argument("--max-batches", type=int, default=None, help="(a): cut epochs short")
    parser.add_argument("--hidden", type=int, nargs="*", default=list(HIDDEN), help="(b)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="(b)")
    parser.add_argument("--train-size", type=int, default=None, help="(b): use only N images")
    parser.add_argument("--fused", action="store_true", help="(b): Adam(fused=True)")
    args = parser.parse_args()

    torch.manual_seed(SEED)
    model, epoch, test = {"tutorial": tutorial, "plain": plain}[args.loop](args)
    epoch_seconds, samples = [], 0
    for _ in range(args.epochs):
        model.train()
        start = time.perf_counter()
        samples = epoch()
        epoch_seconds.append(time.perf_counter() - start)
    model.eval()
    with torch.no_grad():
        test_acc = test()
    result = {"epoch_seconds": epoch_seconds, "samples_per_epoch": samples, "test_acc": test_acc}
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
