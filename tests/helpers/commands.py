"""The console commands as a user runs them: new `python -m mnist_lightning.cli.<command>`
processes, with MNIST_DATA_DIR naming the data. For the few tests that need a process of its
own (exit status and output as a shell sees them, signals, DDP, runs side by side); the rest
run the same entry points in the test process (tests/helpers/hydra_jobs.py)."""

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
    """The test's environment with MNIST_DATA_DIR and `extra`; a PYTHONPATH in `extra` comes
    before the test's own."""
    env = os.environ | {"MNIST_DATA_DIR": str(data_dir)} | (extra or {})
    if extra and "PYTHONPATH" in extra and os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = extra["PYTHONPATH"] + os.pathsep + os.environ["PYTHONPATH"]
    return env


def run_cli(
    module: str,
    args: list[str],
    cwd: Path,
    data_dir: Path,
    env: dict[str, str] | None = None,
    **popen: object,
) -> subprocess.CompletedProcess:
    """`python -m mnist_lightning.cli.<module> args...` in `cwd`, the arguments as given, with
    subprocess's `popen` arguments; one still running after TIMEOUT_S gets exit status None."""
    command = [sys.executable, "-m", f"mnist_lightning.cli.{module}", *args]
    env = cli_env(data_dir, env)
    cwd.mkdir(parents=True, exist_ok=True)
    try:
        return subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, **popen
        )
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, None, "", f"timed out after {TIMEOUT_S} s")


def run_dirs(cwd: Path) -> list[Path]:
    """The single-run directories under `cwd/outputs/runs/`, oldest first."""
    runs = cwd / "outputs" / "runs"
    return sorted(runs.iterdir()) if runs.is_dir() else []
