"""hparams_search=optuna's sweeper: Hydra's, but a search in which no trial completed ends
with the sweep's summary (why each failed) and exit status 1, not Optuna's traceback from
`study.best_trial`; and a search space Optuna refuses is refused before Hydra starts."""

from pathlib import Path
from typing import Any

from hydra_plugins.hydra_optuna_sweeper import _impl, optuna_sweeper
from omegaconf import DictConfig

from mnist_lightning.errors import ConfigError, one_line
from mnist_lightning.run.sweep import SweepSummary, job_rows


def check_search_space(sweeper: DictConfig, sweeps: list[str]) -> None:
    """Optuna's distributions, made as the sweep makes them from its params and the command
    line's sweeps (`interval(1, 0)` is Optuna's traceback once the sweep directory exists)."""
    params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    try:
        _impl.create_params_from_overrides(params + sweeps)
    except Exception as e:
        what = "hydra.sweeper.params and the command line's sweeps"
        raise ConfigError(f"Optuna cannot search {what}: {one_line(e)}") from None


class OptunaSweeper(optuna_sweeper.OptunaSweeper):
    def sweep(self, arguments: list[str]) -> Any:
        try:
            return super().sweep(arguments)
        except ValueError:
            config = self.sweeper.config
            rows = job_rows(Path(config.hydra.sweep.dir))
            if not rows or any(row["status"] == "completed" for row in rows):
                raise
            SweepSummary().on_multirun_end(config)  # prints the summary, exits with status 1
            raise
