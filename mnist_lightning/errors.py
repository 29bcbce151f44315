"""The exception type users see: a clear message instead of a traceback.

Every check on user input (config values, files, checkpoints, images) raises `UserError` with a
message that names the offending key, file or value and says what to do. The entry points catch
it, print the message and exit with status 2.
"""

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

P = ParamSpec("P")
R = TypeVar("R")


class UserError(Exception):
    """Bad input from the user: printed as one paragraph, never as a traceback."""


class ConfigError(UserError):
    """A config value is out of range, of the wrong type or unknown."""


class DataError(UserError):
    """The MNIST files are missing, corrupt or could not be fetched."""


class CheckpointError(UserError):
    """A checkpoint or run directory is missing, corrupt or incompatible."""


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
                from mnist_lightning.sweep import record_failure

                record_failure(str(e))
                return None
            print(f"Error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper
