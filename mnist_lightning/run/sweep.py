"""The summary of a Hydra multirun: one row per job, best first.

`SweepSummary`, a Hydra callback, records each job's status in `<job>/job_status.json` and
rewrites the sweep's `summary.csv` and `summary.md` from the job directories after every job:
current while the sweep runs, after a crash, and with launchers that run jobs elsewhere.
"""

import csv
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from mnist_lightning.errors import ConfigError, one_line
from mnist_lightning.files import atomic_open, atomic_write_json, lock_run, read_json, unlock_run

log = logging.getLogger(__name__)

COLUMNS = ("job", "overrides", "status", "val/acc_best", "test/acc", "epoch", "wall_seconds")

STATUS_FILE = "job_status.json"


def sweep_job() -> DictConfig | None:
    """Hydra's config of the sweep job this process runs (its launcher, its sweep directory,
    whatever the sweeper: Optuna's writes no multirun.yaml); None outside a sweep."""
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    return hydra if hydra and hydra.mode == RunMode.MULTIRUN else None


def check_joblib(launcher: DictConfig) -> None:
    """hydra/launcher=joblib's settings as joblib takes them, given as Hydra's launcher gives
    them (its `loky` backend): `n_jobs=0` is otherwise a traceback once the jobs start."""
    from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
    from joblib import Parallel, effective_n_jobs

    settings = {k: v for k, v in launcher.items() if k != "_target_"} | {"backend": "loky"}
    process_joblib_cfg(settings)
    try:
        Parallel(**settings)
        effective_n_jobs(settings.get("n_jobs"))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"hydra.launcher cannot be used: {one_line(e)}.") from None


def completed(job_dir: Path) -> bool:
    status = read_json(job_dir / STATUS_FILE)
    return isinstance(status, dict) and status.get("status") == "completed"


def record_failure(reason: str, job_dir: Path | None = None, overrides: list | None = None) -> None:
    """A job's status and why, for the summary: called by a job that stops on bad input (its
    overrides are added when it ends), or by the SLURM launcher for a job that ended without
    saying why (cancelled, failed on its node) or never started."""
    job_dir = job_dir or Path(HydraConfig.get().runtime.output_dir)
    log.error("Job %s failed: %s", job_dir.name, reason)
    given = {} if overrides is None else {"overrides": overrides}
    atomic_write_json(job_dir / STATUS_FILE, {"status": "failed", "reason": reason} | given)


class SweepSummary(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Before any job: the Optuna sweeper keeps its study in the sweep directory.
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        lock_run(Path(config.hydra.sweep.dir), "mnist-train -m")  # one process runs a sweep

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        # A re-launched sweep retries unfinished jobs: forget how they failed last time.
        job_dir = Path(config.hydra.runtime.output_dir)
        if config.hydra.mode == RunMode.MULTIRUN and not completed(job_dir):
            (job_dir / STATUS_FILE).unlink(missing_ok=True)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        unlock_run(Path(config.hydra.runtime.output_dir))  # the job's (train): others may write it
        status_file = Path(config.hydra.runtime.output_dir) / STATUS_FILE
        # A job that completed before keeps the overrides it ran with, as its .hydra/ does.
        overrides = [o for o in job_return.overrides or [] if not o.startswith("resume=")]
        status = {"status": "completed", "reason": "", "overrides": overrides}
        status |= read_json(status_file) or {}
        if job_return.status != JobStatus.COMPLETED:  # a crash, not bad input: a bug or a kill
            error = job_return._return_value
            reason = f"{type(error).__name__}: {one_line(error, 300)}"
            status |= {"status": "failed", "reason": reason}
        atomic_write_json(status_file, status)
        write_summary(Path(config.hydra.sweep.dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        rows = write_summary(Path(config.hydra.sweep.dir))
        print(f"\n{markdown_table(rows)}\n\nsummary: {config.hydra.sweep.dir}/summary.md")
        if failed := sum(row["status"] != "completed" for row in rows):
            log.error("%d of %d jobs failed.", failed, len(rows))
            sys.exit(1)


def job_rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job, best first (failed jobs, without val/acc_best, last in job order);
    `overrides` shows what differs between jobs, not what they share."""
    jobs = {path.parent: read_json(path) for path in sweep_dir.glob(f"*/{STATUS_FILE}")}
    overrides = [set(status["overrides"]) for status in jobs.values()]
    shared = set.intersection(*overrides) if len(overrides) > 1 else set()
    rows = [
        {
            "job": job.name,
            "overrides": " ".join(o for o in status["overrides"] if o not in shared),
            "status": status["status"] + (f": {status['reason']}" if status["reason"] else ""),
            **{key: metrics.get(key, "") for key in COLUMNS[3:]},
        }
        for job, status in jobs.items()
        for metrics in [read_json(job / "metrics.json") or {}]
    ]
    return sorted(
        rows, key=lambda r: (r["val/acc_best"] == "", -(r["val/acc_best"] or 0), int(r["job"]))
    )


def write_summary(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = job_rows(sweep_dir)
    with atomic_open(sweep_dir / "summary.csv", "w") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    with atomic_open(sweep_dir / "summary.md", "w") as f:
        f.write(f"# Sweep {sweep_dir.name}\n\n{markdown_table(rows)}\n")
    return rows


def markdown_table(rows: list[dict[str, Any]]) -> str:
    def cell(column: str, value: Any) -> str:  # accuracies to 4 places, seconds as measured
        accuracy = isinstance(value, float) and "acc" in column
        return f"{value:.4f}" if accuracy else str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(c, row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)
