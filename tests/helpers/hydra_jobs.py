"""The console commands in the test process: `run_command` runs a `@hydra.main` function as
`Hydra.run` does (without the console's checks: pass a fresh `hydra.run.dir`); `run_console` runs
the console entry and gives back what a process would, the process-wide state put back after."""

import contextlib
import importlib
import io
import logging
import os
import resource
import signal
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from mnist_lightning import files


@contextlib.contextmanager
def locks_released() -> Iterator[None]:
    """Release the run locks taken inside, as the command's process would by ending."""
    held = set(files._held_locks)
    try:
        yield
    finally:
        for run in set(files._held_locks) - held:
            files.unlock_run(run)


def run_command(main: Callable[..., Any], config_name: str, overrides: Sequence[str]) -> Any:
    """What `main` returns when Hydra runs it (exceptions go through); needs `hydra_on_conf`."""
    hydra = GlobalHydra.instance().hydra
    assert hydra is not None, "initialise Hydra on conf/ first (the hydra_on_conf fixture)"
    with locks_released():
        job = hydra.run(config_name, main, list(overrides), with_log_configuration=False)
        return job.return_value


@contextlib.contextmanager
def limits(timeout_s: int, memory_gib: float | None) -> Iterator[None]:
    """A TimeoutError after `timeout_s`, a MemoryError past `memory_gib` more address space:
    a regression that blocks or reads without end fails its test instead of the machine."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {timeout_s} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(timeout_s)
    address_space = resource.getrlimit(resource.RLIMIT_AS)
    if memory_gib:
        used = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (used + int(memory_gib * 2**30), address_space[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, address_space)
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_console(
    command: str,
    args: Sequence[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout_s: int = 120,
    memory_gib: float | None = None,
) -> subprocess.CompletedProcess:
    """`mnist-<command> args...` in `cwd` with `env` added, in this process, with cwd, argv,
    environment, sys.path, Hydra, logging and warnings as a new process would have them, put back
    after. An escaping exception is a traceback on stderr and exit status 1, as in a process."""
    main = importlib.import_module(f"mnist_lightning.cli.{command}").main
    out, err = io.StringIO(), io.StringIO()
    argv, env = [f"mnist-{command}", *args], env or {}
    cwd.mkdir(parents=True, exist_ok=True)
    hydra, hydra_cfg = GlobalHydra.instance().hydra, HydraConfig.instance().cfg
    loggers = [logging.getLogger(), *map(logging.getLogger, list(logging.root.manager.loggerDict))]
    logging_state = [(lg, lg.level, lg.handlers[:], lg.propagate, lg.disabled) for lg in loggers]
    GlobalHydra.instance().clear()
    path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    try:
        with (
            contextlib.chdir(cwd),
            mock.patch.object(sys, "argv", argv),
            mock.patch.object(sys, "path", [*path, *sys.path]),
            mock.patch.dict(os.environ, env),
            warnings.catch_warnings(),
            locks_released(),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
            limits(timeout_s, memory_gib),
        ):
            # Lightning's own handler, as `import lightning` sets it up in a process whose root
            # logger has none yet (under pytest its lines would reach Hydra's train.log instead).
            lightning = logging.getLogger("lightning.pytorch")
            lightning.handlers[:], lightning.propagate = [logging.StreamHandler(err)], False
            try:
                main()
                status = 0
            except SystemExit as e:  # a message, not a status, is printed: status 1, as Python does
                if e.code is not None and not isinstance(e.code, int):
                    print(e.code, file=err)
                status = e.code if isinstance(e.code, int) else int(e.code is not None)
            except Exception:  # reported as the process would report it
                traceback.print_exc(file=err)
                status = 1
    finally:
        for lg, level, handlers, propagate, disabled in logging_state:
            for handler in set(lg.handlers) - set(handlers):
                handler.close()
            lg.setLevel(level)
            lg.handlers[:], lg.propagate, lg.disabled = handlers, propagate, disabled
        GlobalHydra.instance().hydra, HydraConfig.instance().cfg = hydra, hydra_cfg
    return subprocess.CompletedProcess(argv, status, out.getvalue(), err.getvalue())
