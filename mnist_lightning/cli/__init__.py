"""The console commands, one module each (mnist-train, mnist-eval, mnist-predict, mnist-export),
and what they share: where the configs are and the one way a command fails on bad input."""

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from mnist_lightning.errors import UserError
from mnist_lightning.files import check_hydra_dirs
from mnist_lightning.run.sweep import record_failure

# The project's conf/ directory (the package is installed editable, from the clone).
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")

P = ParamSpec("P")
R = TypeVar("R")


def exit_on_user_error(task: Callable[P, R]) -> Callable[P, R]:
    """Print a `UserError` as one paragraph and exit with status 2, instead of a traceback.

    In a Hydra multirun the job is recorded as failed, with the message, and the sweep goes on
    with the next job; the sweep's summary lists it and its exit status is 1. The job returns
    None, which the Optuna sweeper records as a failed trial. (Not NaN: hydra-optuna-sweeper
    1.x then calls `study.tell` twice, and the second call stops the whole search.)
    """

    @functools.wraps(task)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | None:
        try:
            return task(*args, **kwargs)
        except UserError as e:
            if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
                record_failure(str(e))
                return None
            print(f"Error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def console_entry(main: Callable[[], None]) -> Callable[[], None]:
    """The console script of a Hydra `main` that makes no run directory of its own: the
    directories its command line asks Hydra to make are checked before Hydra makes them (with
    a traceback where it cannot)."""

    @exit_on_user_error
    def cli() -> None:
        check_hydra_dirs(sys.argv[1:])
        main()

    return cli
