"""Shared fixtures: a small synthetic MNIST in IDX format, the real one, and a way to run the
console scripts as real subprocesses."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mnist_lightning.download import ensure_mnist, raw_dir
from mnist_lightning.idx import write_idx

ROOT = Path(__file__).resolve().parents[1]


def synthetic_digits(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` 28x28 uint8 images, balanced over 0-9: each class a bright bar at its own place
    plus noise, so a tiny MLP learns them in one epoch."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 10
    labels = labels[torch.randperm(count, generator=generator)]
    images = torch.randint(0, 60, (count, 28, 28), generator=generator)
    for digit in range(10):
        rows = slice(2 + 2 * digit, 4 + 2 * digit)
        images[labels == digit, rows, 4:24] += 180
    return images.clamp(0, 255).to(torch.uint8), labels.to(torch.uint8)


def write_mnist(data_dir: Path, train: int, test: int) -> Path:
    raw = raw_dir(data_dir)
    raw.mkdir(parents=True)
    for prefix, count, seed in (("train", train, 0), ("t10k", test, 1)):
        images, labels = synthetic_digits(count, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return data_dir


@pytest.fixture(scope="session")
def synthetic_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory in torchvision's layout with 1 200 training and 300 test images."""
    return write_mnist(tmp_path_factory.mktemp("synthetic"), train=1200, test=300)


@pytest.fixture(scope="session")
def real_mnist() -> Path:
    """The project's data/ with the official MNIST files (fetched on first use)."""
    data_dir = Path(os.environ.get("MNIST_DATA_DIR", ROOT / "data"))
    ensure_mnist(data_dir)
    return data_dir


# Small, fast settings for runs on the synthetic data.
SMALL = [
    "data.source=files",
    "data.val_size=200",
    "data.batch_size=50",
    "data.eval_batch_size=100",
    "model.hidden_dims=[32]",
    "trainer.accelerator=cpu",
    "trainer.max_epochs=2",
    "trainer.log_every_n_steps=4",
    "callbacks.progress_bar.refresh_rate=0",
]


def run_cli(
    module: str, args: list[str], cwd: Path, data_dir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python -m mnist_lightning.<module> args...` in `cwd`, with MNIST_DATA_DIR set."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", f"mnist_lightning.{module}", *args],
        cwd=cwd,
        env=os.environ | {"MNIST_DATA_DIR": str(data_dir)} | (env or {}),
        capture_output=True,
        text=True,
        timeout=600,
    )


def run_dirs(cwd: Path) -> list[Path]:
    runs = cwd / "outputs" / "runs"
    return sorted(runs.iterdir()) if runs.is_dir() else []


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, synthetic_mnist: Path) -> Path:
    """One finished small run on the synthetic data, shared by the tests that only read it."""
    cwd = tmp_path_factory.mktemp("trained")
    done = run_cli("train", SMALL, cwd, synthetic_mnist)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = run_dirs(cwd)
    return run
