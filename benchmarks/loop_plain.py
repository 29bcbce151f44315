"""(b) A plain PyTorch loop over in-memory tensors: the floor a framework is measured against.

The 55 000 training images mnist-train uses (the same seeded 5 000 held out for validation)
sit in one normalised float tensor; an epoch is a random permutation cut into batches, each
gathered by indexing. No Dataset, no DataLoader, no Lightning, no logging: forward, loss,
backward, Adam step. Also the loop of the width and batch-size sweeps.

    python -m benchmarks.loop_plain --epochs 6 --out result.json
    python -m benchmarks.loop_plain --hidden 4096 2048 --train-size 6400 --out result.json
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.common import (
    BATCH_SIZE,
    HIDDEN,
    LR,
    MNIST_MEAN,
    MNIST_STD,
    SEED,
    VAL_SIZE,
    data_dir,
    mlp,
)

Split = tuple[torch.Tensor, torch.Tensor]


def read_split(prefix: str, rows: torch.Tensor | None = None) -> Split:
    """Images as normalised float rows (N, 784) and int64 labels, straight from the IDX files;
    only `rows` of them if given. Converted after selecting, in place: no extra copies."""
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


def train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    data: Split,
    batch_size: int,
    generator: torch.Generator,
) -> None:
    """One epoch: a permutation of the rows, batches by indexing."""
    x, y = data
    order = torch.randperm(len(y), generator=generator)
    for i in range(0, len(y), batch_size):
        index = order[i : i + batch_size]
        loss = F.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@torch.no_grad()
def test_accuracy(model: torch.nn.Module) -> float:
    """Accuracy on the official 10 000 test images."""
    x, y = read_split("t10k")
    return float((model(x).argmax(1) == y).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hidden", type=int, nargs="*", default=list(HIDDEN))
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--epochs", type=int, default=6, help="the first is the warm-up")
    parser.add_argument("--train-size", type=int, default=None, help="use only N images")
    parser.add_argument("--fused", action="store_true", help="torch.optim.Adam(fused=True)")
    parser.add_argument("--out", type=Path, required=True, help="JSON result file")
    args = parser.parse_args()

    torch.manual_seed(SEED)
    data = train_split(args.train_size)
    model = mlp(args.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, fused=args.fused or None)
    generator = torch.Generator().manual_seed(SEED)
    epoch_seconds = []
    for _ in range(args.epochs):
        model.train()
        start = time.perf_counter()
        train_epoch(model, optimizer, data, args.batch_size, generator)
        epoch_seconds.append(time.perf_counter() - start)
    result = {
        "epoch_seconds": epoch_seconds,
        "samples_per_epoch": len(data[1]),
        "test_acc": test_accuracy(model),
    }
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
