"""hparams_search=optuna's sweeper: Hydra's, but a search in which no trial completed ends
with the sweep's summary (why each failed) and exit status 1, not Optuna's traceback from
`study.best_trial`."""

from pathlib import Path
from typing import Any

from hydra_plugins.hydra_optuna_sweeper import optuna_sweeper

from mnist_lightning.run.sweep import SweepSummary, job_rows


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
