"""The Lightning Trainer from the config, and what its refusals mean to a user.

Every callback and logger is built on its own, so a value its class refuses names its key
(`callbacks.<name>`); what Lightning refuses while building or fitting becomes one line that
says which config or checkpoint is at fault, not a traceback.
"""

import os
import traceback
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.accelerators import AcceleratorRegistry
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig

from mnist_lightning.errors import CheckpointError, ConfigError, UserError, one_line
from mnist_lightning.run.checkpoint import AtomicCheckpointIO
from mnist_lightning.run.trackers import EXTRAS, WANDB_LOGGER, finish_wandb_run, run_identity


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The Lightning Trainer with the configured loggers and callbacks and atomic checkpoints."""
    nodes = (cfg.logger or {}).items()
    if any(node.get("_target_") == WANDB_LOGGER for _, node in nodes):
        finish_wandb_run()  # a WandbLogger would log into the run still open (a sweep's last job)
    loggers = [build(f"logger.{name}", c, **run_identity(c, cfg)) for name, c in nodes]
    callbacks = [build(f"callbacks.{name}", c) for name, c in (cfg.callbacks or {}).items()]
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar callback then
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    t = cfg.trainer
    try:
        return instantiate(
            cfg.trainer,
            logger=loggers or False,
            callbacks=callbacks,
            plugins=[AtomicCheckpointIO(), *slurm_environment()],
        )
    except Exception as e:  # e.g. trainer.accelerator=gpu on a machine without one
        reason = one_line(e.__cause__ or e).rstrip(".!")
        if not accelerator_available(t.accelerator):
            raise ConfigError(
                f"trainer.accelerator={t.accelerator} trainer.devices={t.devices} cannot be "
                f"used on this machine: {reason}. Try trainer.accelerator=auto or trainer=cpu."
            ) from None
        raise ConfigError(f"The trainer config cannot be used: {reason}.") from None


def slurm_environment() -> list[SLURMEnvironment]:
    """In a job of hydra/launcher=slurm, Lightning's SLURM environment without its own requeue
    on SIGUSR1: there, submitit requeues (hydra_plugins/mnist_lightning/_slurm.py)."""
    submitit = os.environ.get("SUBMITIT_EXECUTOR") == "slurm"
    return [SLURMEnvironment(auto_requeue=False)] if submitit and SLURMEnvironment.detect() else []


def accelerator_available(name: object) -> bool:
    """Whether this machine has the accelerator `trainer.accelerator` names, by Lightning's own
    registry (`gpu` is CUDA or MPS; `auto`, or a name Lightning does not know, is not ours to
    judge: Lightning's message says what is wrong with it)."""
    kinds = {"gpu": ("cuda", "mps")}.get(str(name), (str(name),))
    known = [k for k in kinds if k in AcceleratorRegistry]
    return not known or any(AcceleratorRegistry[k]["accelerator"].is_available() for k in known)


def build(key: str, node: DictConfig, **extra: Any) -> Any:
    """A callback or logger from its config, or one line naming its key."""
    try:
        return instantiate(node, **extra)
    except Exception as e:  # a value of the wrong type or range, which the class refused
        package = EXTRAS.get(str(node.get("_target_")))
        if package and isinstance(e.__cause__ or e, ModuleNotFoundError):
            raise ConfigError(
                f"{key} needs the {package} package: pip install -e '.[{package}]'"
            ) from None
        reason = one_line(e.__cause__ or e).rstrip(".!")[:300]
        raise ConfigError(f"{key} cannot be built from its config: {reason}.") from None


def raised_by_lightning(error: BaseException) -> bool:
    """Whether the Trainer's own checks raised `error`: some Trainer arguments are checked
    against the model and data only inside fit (e.g. a val_check_interval longer than the
    epoch). Not its checks of `self.log` calls, which are bugs in the module."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return False
    where = Path(frames[-1].filename).parts
    return (
        "lightning" in where
        and ("loops" in where or "trainer" in where)
        and ("logger_connector" not in where)
    )


def fit_failure(error: Exception, resume_from: str | None) -> UserError | None:
    """The one line for what `trainer.fit` raised, if the config or the resumed checkpoint is
    at fault; None for anything else (a bug keeps its traceback)."""
    # What a resumed checkpoint's state makes Lightning's restore raise (a buffer of another
    # shape, random states torch refuses, a damaged loop state): the checkpoint is at fault,
    # whatever the exception. trust.check_resumable saw to what could crash.
    restoring = any(
        Path(frame.filename).name == "checkpoint_connector.py" or frame.name == "load_state_dict"
        for frame in traceback.extract_tb(error.__traceback__)
    )
    if resume_from and restoring and not isinstance(error, UserError):
        reason = one_line(error, 300)
        return CheckpointError(
            f"{resume_from} cannot be restored ({reason}); the file is damaged or was edited. "
            f"Start a new run from its weights instead: mnist-train ckpt_path={resume_from}"
        )
    if isinstance(error, MisconfigurationException | ValueError) and raised_by_lightning(error):
        reason = one_line(error).rstrip(".!")
        return ConfigError(f"The trainer config cannot be used: {reason}.")
    return None
