"""`resume=<run_dir>`: continue a run in its own directory, with its own config.

The run directory is chosen while Hydra composes the config (the `run_dir` resolver), so
Hydra logs into the resumed run instead of a new one; Hydra's own copy of the config is not
written again (`hydra_output_subdir`), so `.hydra/config.yaml` stays the run's original. All
checks happen before anything is written: a failed resume leaves the directory as it was.
"""

import logging
import signal
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from mnist_lightning.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

RUNS_DIR = Path("outputs/runs")
SWEEPS_DIR = Path("outputs/multiruns")
# Overrides that extend a run (its schedule stretches to the new horizon) or change where it
# runs, not what it is.
RESUMABLE_KEYS = (
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.enable_progress_bar",
    "callbacks.progress_bar.refresh_rate",
    "paths.data_dir",
    "data.source",
)


def last_checkpoint(run: Path) -> Path:
    return run / "checkpoints" / "last.ckpt"


def find_run(resume: str) -> Path:
    """The run directory `resume=` names (`latest`: the newest run with a checkpoint)."""
    if resume == "latest":
        runs = sorted(p.parents[1] for p in RUNS_DIR.glob("*/checkpoints/last.ckpt"))
        if not runs:
            raise CheckpointError(f"resume=latest: no run under {RUNS_DIR}/ has a last.ckpt yet.")
        return runs[-1].resolve()  # names start with the start time, so they sort by it
    run = Path(resume)
    if not run.is_dir():
        raise CheckpointError(f"resume={resume}: there is no such run directory.")
    if not (run / ".hydra" / "config.yaml").is_file():
        raise CheckpointError(
            f"resume={resume}: {run}/.hydra/config.yaml is missing, so the run's config is "
            "unknown. Start a new run from its weights with ckpt_path=<checkpoint> instead."
        )
    if not last_checkpoint(run).is_file():
        raise CheckpointError(
            f"resume={resume}: {last_checkpoint(run)} is missing; the run stopped before its "
            "first checkpoint. Start it again instead."
        )
    return run.resolve()


def find_sweep(resume: str) -> Path:
    """The sweep directory `resume=` names in a multirun (`latest`: the newest sweep)."""
    if resume == "latest":
        sweeps = sorted(p.parent for p in SWEEPS_DIR.glob("*/multirun.yaml"))
        if not sweeps:
            raise CheckpointError(f"resume=latest: there is no sweep under {SWEEPS_DIR}/ yet.")
        return sweeps[-1].resolve()
    sweep = Path(resume)
    if not (sweep / "multirun.yaml").is_file():
        raise CheckpointError(
            f"resume={resume}: not a sweep directory (no multirun.yaml in it). With -m, "
            "resume= names the sweep to re-launch; without -m, a single run."
        )
    return sweep.resolve()


def job_finished(job_dir: Path) -> bool:
    """Whether a sweep job already completed (its status and its metrics are written)."""
    status = job_dir / "job_status.json"
    return (
        status.is_file()
        and '"completed"' in status.read_text()
        and (job_dir / "metrics.json").is_file()
    )


def resumed_config(cfg: DictConfig) -> DictConfig:
    """The resumed run's saved config, with the command line's harmless overrides applied.

    An override is accepted if it leaves what the run computes unchanged: one of
    `RESUMABLE_KEYS`, or a value equal to the saved one (as in a re-launched sweep).
    """
    run = Path(cfg.paths.output_dir)
    saved = OmegaConf.load(run / ".hydra" / "config.yaml")
    overrides = OverridesParser.create().parse_overrides(HydraConfig.get().overrides.task)
    for override in overrides:
        key = override.key_or_group
        if key == "resume" or OmegaConf.select(cfg, key) == OmegaConf.select(saved, key):
            continue
        if key not in RESUMABLE_KEYS:
            raise ConfigError(
                f"resume= continues a run with its own config, and {key} would change what it "
                f"computes. Only these may change on resume: {', '.join(RESUMABLE_KEYS)}. "
                "Start a new run from its weights with ckpt_path=<checkpoint> instead."
            )
        OmegaConf.update(saved, key, OmegaConf.select(cfg, key), force_add=True)
    saved.resume = str(run)
    saved.ckpt_path = None
    return saved


class GracefulInterrupt(L.Callback):
    """Ctrl-C and SIGTERM stop training after the current `training_step` and save
    `last.ckpt` there, in a consistent state (no half-taken optimizer step), so resuming
    continues exactly where training stopped. Lightning alone would abort Ctrl-C mid-step.
    Other exceptions (a diverged loss, a bug) leave the last good `last.ckpt` alone."""

    def __init__(self, dirpath: str) -> None:
        self.last = Path(dirpath) / "last.ckpt"
        self._previous: Any = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:
            # Lightning's SIGTERM handler talks to the other processes from inside the signal
            # handler and can deadlock when every process gets the signal at once, as they all
            # do on Ctrl-C. So under DDP, Ctrl-C stays Lightning's plain KeyboardInterrupt: it
            # stops every process, and resume= continues from the last checkpoint written.
            return
        # Lightning installed its SIGTERM handler when fit started; Ctrl-C now goes there too.
        self._previous = signal.signal(signal.SIGINT, signal.getsignal(signal.SIGTERM))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore()
        if isinstance(exception, SIGTERMException) and not trainer.sanity_checking:
            trainer.save_checkpoint(self.last, weights_only=False)

    def _restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
