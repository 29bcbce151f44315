"""The console commands as a user runs them: processes of `python -m
mnist_lightning.cli.<command>`, with MNIST_DATA_DIR naming the data.

A command is forked from a process that imported the commands once (tests/helpers/preloaded.py),
which saves each ~6 s of imports; `fresh=True` starts a new interpreter instead, for what
depends on how the process started (DDP starts its other processes by running the command line
again)."""

import atexit
import os
import subprocess
import sys
import threading
from pathlib import Path

from tests.helpers.preloaded import CommandServers, run_fresh
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


_servers: list[CommandServers] = []
_starting = threading.Lock()


def command_servers() -> CommandServers:
    """The test session's two command servers, started on first use."""
    with _starting:
        if not _servers:
            _servers.append(CommandServers(2))
            atexit.register(_servers[0].close)
    return _servers[0]


def run(
    command: list[str], cwd: Path, env: dict[str, str], fresh: bool
) -> subprocess.CompletedProcess:
    """`command` (`python -m mnist_lightning.cli.<module> args...`) in `cwd` with `env`."""
    if fresh:
        return run_fresh(command, cwd, env, TIMEOUT_S)
    module = command[2].rsplit(".", 1)[1]
    with command_servers().server() as server:
        return server.run(module, command[3:], cwd, env, TIMEOUT_S)


def run_train(
    cwd: Path,
    data_dir: Path,
    *overrides: str,
    synthetic: bool = True,
    env: dict[str, str] | None = None,
    fresh: bool = False,
) -> subprocess.CompletedProcess:
    """Run `mnist-train` in `cwd` (so `outputs/` lands there) on the data in `data_dir`.

    With `synthetic` (the default) the SMALL settings come first and `overrides` replace them
    key by key; without it only `overrides` are given (the project's defaults otherwise).
    """
    cwd.mkdir(parents=True, exist_ok=True)
    return run(train_command(*overrides, synthetic=synthetic), cwd, cli_env(data_dir, env), fresh)


def run_cli(
    module: str,
    args: list[str],
    cwd: Path,
    data_dir: Path,
    env: dict[str, str] | None = None,
    fresh: bool = False,
) -> subprocess.CompletedProcess:
    """`python -m mnist_lightning.cli.<module> args...` in `cwd`, with MNIST_DATA_DIR set; the
    arguments are passed as they are."""
    cwd.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", f"mnist_lightning.cli.{module}", *args]
    return run(command, cwd, cli_env(data_dir, env), fresh)


def run_dirs(cwd: Path) -> list[Path]:
    """The single-run directories under `cwd/outputs/runs/`, oldest first."""
    runs = cwd / "outputs" / "runs"
    return sorted(runs.iterdir()) if runs.is_dir() else []
