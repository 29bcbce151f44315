"""hparams_search=optuna's sweeper: Hydra's, but a search space or setting Optuna refuses is
one line, before Hydra starts where it can be (`check_search_space`), else before any trial
with nothing left; and a search in which no trial completed ends with the sweep's summary (why
each failed) and exit status 1, not Optuna's traceback from `study.best_trial`."""

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra_plugins.hydra_optuna_sweeper import _impl, optuna_sweeper
from omegaconf import DictConfig

from mnist_lightning.errors import ConfigError, one_line
from mnist_lightning.files import check_sqlite_store
from mnist_lightning.run.resume import refuse
from mnist_lightning.run.sweep import SweepSummary, job_rows


def check_search_space(
    sweeper: DictConfig, sweeps: list[str], check: Callable[[str, Any], None]
) -> None:
    """Optuna's distribution of each swept key, made as the sweep makes them from its params
    and the command line's sweeps, with finite bounds (Optuna samples `interval(0, inf)` as an
    OverflowError) and each bound or choice a value the key takes (`check`): a trial may draw
    it."""
    try:
        params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    except Exception as e:  # an interpolation that does not resolve
        raise ConfigError(f"hydra.sweeper.params cannot be read: {one_line(e)}") from None
    for key in ("n_trials", "n_jobs"):  # Optuna's "Record does not exist.", a ZeroDivisionError
        if not isinstance(count := sweeper.get(key), int) or isinstance(count, bool) or count < 1:
            raise ConfigError(f"hydra.sweeper.{key}={count} must be 1 or more.")
    rate = sweeper.get("max_failure_rate")  # Hydra's: an AssertionError naming nothing
    if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 <= rate <= 1:
        raise ConfigError(f"hydra.sweeper.max_failure_rate={rate} must be from 0 to 1.")
    direction = sweeper.get("direction")  # (hydra/sweeper=optuna's: an Enum)
    if getattr(direction, "name", direction) not in ("maximize", "minimize"):  # one value
        raise ConfigError(f"hydra.sweeper.direction={direction} must be maximize or minimize.")
    check_sqlite_store(sweeper.get("storage"), "hydra.sweeper.storage", "studies")
    for param in params + sweeps:
        try:
            searched, fixed = _impl.create_params_from_overrides([param])
        except Exception as e:
            raise ConfigError(f"{param}: Optuna cannot search it: {one_line(e)}") from None
        taken = {key: [value] for key, value in fixed.items()}  # (every trial's)
        for key, distribution in searched.items():
            bounds = [getattr(distribution, bound, 0) for bound in ("low", "high")]
            if not all(math.isfinite(bound) for bound in bounds):
                raise ConfigError(f"{param}: Optuna searches between finite bounds only.")
            taken[key] = getattr(distribution, "choices", bounds)
        for key, value in ((k, v) for k, values in taken.items() for v in values):
            try:
                check(key, value)
            except ConfigError as e:
                raise ConfigError(f"{param}: a trial may take {value}: {e}") from None


class OptunaSweeper(optuna_sweeper.OptunaSweeper):
    def sweep(self, arguments: list[str]) -> Any:
        config = self.sweeper.config
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            return super().sweep(arguments)
        except Exception as e:
            rows = job_rows(sweep_dir)
            if not rows:  # refused before a trial ran (a setting): nothing is left of it
                refuse(f"the Optuna search cannot start: {one_line(e)}")
            if not isinstance(e, ValueError) or any(r["status"] == "completed" for r in rows):
                raise
            SweepSummary().on_multirun_end(config)  # prints the summary, exits with status 1
            raise
