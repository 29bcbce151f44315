"""The console commands as a user runs them: real subprocesses, `python -m
mnist_lightning.cli.<command>`, with MNIST_DATA_DIR naming the data."""

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.synthetic import SMALL, merged

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600

# The run the read-only tests share: two epochs of 784-64-10 on the synthetic data.
TRAINED_RUN = ("trainer.max_epochs=2", "model.hidden_dims=[64]")


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
    """`python -m mnist_lightning.cli.<module> args...` in `cwd`, with MNIST_DATA_DIR set; the
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
