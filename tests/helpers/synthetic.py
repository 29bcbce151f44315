"""A small synthetic MNIST in IDX format, and the settings for fast runs on it."""

from pathlib import Path

import torch

from mnist_lightning.data.datasets import encode_idx, raw_dir

# The synthetic data set: 1 200 training images (1 000 train + 200 val with data.val_size=200)
# and 300 test images, 120 and 30 of each digit.
SYNTHETIC_TRAIN, SYNTHETIC_TEST, SYNTHETIC_VAL = 1200, 300, 200


def write_mnist(data_dir: Path, train: int, test: int) -> Path:
    """A synthetic MNIST in `<data_dir>/MNIST/raw/`: balanced labels in a seeded order, each digit
    a bright bar in its own rows over noise (a tiny MLP learns it in one epoch; no two alike)."""
    raw = raw_dir(data_dir)
    raw.mkdir(parents=True)
    for prefix, count, seed in (("train", train, 0), ("t10k", test, 1)):  # counts: tens
        generator = torch.Generator().manual_seed(seed)
        labels = (torch.arange(count) % 10)[torch.randperm(count, generator=generator)]
        images = torch.randint(0, 60, (count, 28, 28), generator=generator)
        for digit in range(10):
            images[labels == digit, 2 + 2 * digit : 4 + 2 * digit, 4:24] += 180
        images, labels = images.clamp(0, 255).to(torch.uint8), labels.to(torch.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(encode_idx(images))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(encode_idx(labels))
    return data_dir


# Small, fast settings for runs on the synthetic data: 20 optimizer steps per epoch.
SMALL = [
    "data.source=files",  # trust the synthetic IDX files (no official sha256 check)
    "trainer.accelerator=cpu",
    f"data.val_size={SYNTHETIC_VAL}",
    "data.batch_size=50",
    "data.eval_batch_size=100",
    "model.hidden_dims=[32]",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=4",
    "callbacks.progress_bar.refresh_rate=0",
]
STEPS_PER_EPOCH = (SYNTHETIC_TRAIN - SYNTHETIC_VAL) // 50


def merged(base: list[str], overrides: tuple[str, ...] | list[str]) -> list[str]:
    """`base` with every key that `overrides` sets replaced: one value per key on the line."""
    key = lambda override: override.split("=", 1)[0].lstrip("+~")  # noqa: E731
    keys = {key(o) for o in overrides if "=" in o}
    return [o for o in base if key(o) not in keys] + list(overrides)
