"""The console commands as processes, for the tests that need one (signals, DDP, runs side by
side, a shell's view); the rest: tests/helpers/hydra_jobs.py."""

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
    """The `mnist-train` command line; with `synthetic`, SMALL's settings come first."""
    args = merged(SMALL, overrides) if synthetic else list(overrides)
    return [sys.executable, "-m", "mnist_lightning.cli.train", *args]


def cli_env(data_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment, MNIST_DATA_DIR, tests/ on PYTHONPATH (for probes.py), `extra`."""
    path = os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))
    return os.environ | {"MNIST_DATA_DIR": str(data_dir), "PYTHONPATH": path} | (extra or {})


def run_cli(
    module: str, args: list[str], cwd: Path, data: Path, env: dict | None = None, **popen: object
) -> subprocess.CompletedProcess:
    """`python -m mnist_lightning.cli.<module> args...` in `cwd` (TimeoutExpired: TIMEOUT_S)."""
    command = [sys.executable, "-m", f"mnist_lightning.cli.{module}", *args]
    popen |= {"capture_output": True, "text": True, "timeout": TIMEOUT_S}
    return subprocess.run(command, cwd=cwd, env=cli_env(data, env), **popen)


def run_dirs(cwd: Path) -> list[Path]:
    """The single-run directories under `cwd/outputs/runs/`, oldest first."""
    runs = cwd / "outputs" / "runs"
    return sorted(runs.iterdir()) if runs.is_dir() else []
