"""The Lightning Trainer from the config: where it runs (threads, DDP, SLURM), what the
trackers are told about the run, and what Lightning refuses as one line naming the config key
or checkpoint at fault, not a traceback."""

import json
import logging
import os
import re
import sys
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.accelerators import AcceleratorRegistry
from lightning.pytorch.callbacks import ProgressBar, StochasticWeightAveraging
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from mnist_lightning.errors import (
    CheckpointError,
    ConfigError,
    TrainingFailedError,
    UserError,
    one_line,
)
from mnist_lightning.files import kind_of, to_run_log
from mnist_lightning.model.classifier import MNISTClassifier
from mnist_lightning.run.checkpoint import (
    AtomicCheckpointIO,
    check_resumable,
    load_checkpoint,
    network_weights,
)
from mnist_lightning.run.resume import (
    EXTRAS,
    MLFLOW_LOGGER,
    WANDB_LOGGER,
    check_writes_inside,
    exit_when_interrupted,
    is_rank_zero,
    last_checkpoint,
)

log = logging.getLogger(__name__)


def setup_process() -> None:
    """Settings for this process, made before any training starts (again in a launcher's job)."""
    # `import lightning` makes torch check for CUDA through NVML (safe for forked workers).
    # With a CUDA build of torch on a machine without a GPU that check fails, uncached, every
    # time, and Adam makes it on every step (docs/benchmarks.md). Without a GPU there is nothing a
    # fork could break, so torch's ordinary, cached check is used instead.
    if not torch.cuda.is_available():
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"
    else:
        torch.set_float32_matmul_precision("high")  # TF32 matmuls: free speed, no accuracy loss
    # Messages that do not apply to this project: an epoch shorter than the logging interval
    # still gets its train/* points (the model logs what is left of a window at each epoch
    # end), the data module itself reads the same batches with overfit_batches, under DDP the
    # epoch metrics are sums the model or torchmetrics already reduced, a resumed run's
    # checkpoint directory is not empty, a diverged run stops with its own message, and a
    # machine with SLURM's commands need not run on SLURM (jobs of hydra/launcher=slurm do).
    for pattern in (
        r"The `srun` command is available on your system but is not used",
        r".*smaller than the logging interval",
        r"You requested to overfit but enabled train dataloader shuffling",
        r".*sync_dist=True.*when logging on epoch level",
        r"Checkpoint directory .* exists and is not empty",
        r"Encountered `nan` values in tensor",
        r".*isinstance\(treespec, LeafSpec\)",
    ):
        warnings.filterwarnings("ignore", message=pattern)
    if not hasattr(warnings.showwarning, "shown"):  # the warnings kept reach train.log too
        shown = warnings.showwarning

        def show(message: Any, category: type[Warning], *where: Any, **kw: Any) -> None:
            shown(message, category, *where, **kw)
            to_run_log(f"{category.__name__}: {message}", logging.WARNING)

        show.shown = shown  # type: ignore[attr-defined]
        warnings.showwarning = show
    for name in ("utilities.rank_zero", "trainer.connectors.signal_connector"):
        logging.getLogger(f"lightning.pytorch.{name}").addFilter(no_chatter)
    if not sys.stderr.isatty():  # colour only on a terminal: Optuna's colorlog obeys NO_COLOR
        os.environ.setdefault("NO_COLOR", "1")
    for chatty in ("alembic", "mlflow.store.db.utils"):  # MLflow creating its tables
        logging.getLogger(chatty).setLevel(logging.WARNING)
    # submitit's messages go to Hydra's log handlers (the terminal, a job's log, train.log),
    # not also to submitit's own, which would print each twice (submitit's own switch).
    os.environ.setdefault("SUBMITIT_LOG_LEVEL", "NOCONFIG")
    # A SLURM job gets the CPUs it asked for (torch would start a thread per core of the node);
    # jobs of hydra/launcher=joblib run side by side: each gets its share of the cores.
    if "SLURM_CPUS_PER_TASK" in os.environ:
        torch.set_num_threads(int(os.environ["SLURM_CPUS_PER_TASK"]))
        return
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    jobs = hydra.launcher.get("n_jobs") if hydra and hydra.mode == RunMode.MULTIRUN else None
    if jobs:
        cores = os.cpu_count() or 1
        at_once = jobs if jobs > 0 else max(1, cores + 1 + jobs)  # joblib: -1 is every core
        threads = max(1, cores // at_once)
        torch.set_num_threads(threads)
        log.info("%d jobs at once on %d cores: %d torch threads each", at_once, cores, threads)


# Lightning's lines that are not for this project's user: an advertisement, a step count it
# estimates, the test's checkpoint (the results name it), Ctrl-C (the stop message says more),
# TPUs (the data line names the device used; Lightning's GPU line stays).
CHATTER = (
    "litlogger",
    "TPU available: ",
    "Loading `train_dataloader` to estimate",
    "Restoring states from the checkpoint path",
    "Loaded model weights from the checkpoint",
    "Received SIGTERM",
)


def no_chatter(record: logging.LogRecord) -> bool:
    return not any(text in record.getMessage() for text in CHATTER)


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The Lightning Trainer with the configured loggers and callbacks and atomic checkpoints."""
    nodes = (cfg.logger or {}).items()
    if any(node.get("_target_") == WANDB_LOGGER for _, node in nodes):
        finish_wandb_run()  # a WandbLogger would log into the run still open (a sweep's last job)
    loggers = [build(f"logger.{name}", c, **run_identity(c, cfg)) for name, c in nodes]
    callbacks = [build(f"callbacks.{name}", c) for name, c in (cfg.callbacks or {}).items()]
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar callback then
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    # In a job of hydra/launcher=slurm, Lightning's SLURM environment without its own requeue
    # on SIGUSR1: there, submitit requeues (hydra_plugins/mnist_lightning/_slurm.py).
    submitit = os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and SLURMEnvironment.detect()
    plugins = [AtomicCheckpointIO(), *([SLURMEnvironment(auto_requeue=False)] if submitit else [])]
    t = cfg.trainer
    try:
        trainer = instantiate(t, logger=loggers or False, callbacks=callbacks, plugins=plugins)
    except Exception as e:  # e.g. trainer.accelerator=gpu on a machine without one
        reason = one_line(e.__cause__ or e).rstrip(".!")
        if not accelerator_available(t.accelerator):
            raise ConfigError(
                f"trainer.accelerator={t.accelerator} trainer.devices={t.devices} cannot be "
                f"used on this machine: {reason}. Try trainer.accelerator=auto or trainer=cpu."
            ) from None
        raise ConfigError(f"The trainer config cannot be used: {reason}.") from None
    if cfg.get("resume"):
        run = Path(cfg.paths.output_dir)
        check_writes_inside(trainer, run)
        log.info("Resuming %s from %s", run, last_checkpoint(run))
    # Accepted: from here on Lightning's lines, printed by its own handler, also go to the
    # run's train.log (a sweep's earlier job's log is replaced).
    run_log = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    for name in ("lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        if not logger.propagate:
            others = [h for h in logger.handlers if not isinstance(h, logging.FileHandler)]
            logger.handlers = others + run_log
    return trainer


def start_from(model: MNISTClassifier, ckpt_path: str | None, resume_from: str | None) -> None:
    """Check the checkpoint a run resumes from against `model` (before the Trainer is built and
    says anything; Lightning restores it in fit), or load the weights `ckpt_path=` starts from."""
    if resume_from:
        check_resumable(model, load_checkpoint(resume_from), resume_from)
    elif ckpt_path:
        model.net.load_state_dict(network_weights(model, load_checkpoint(ckpt_path), ckpt_path))
        log.info("Starting from the weights of %s", ckpt_path)


def accelerator_available(name: object) -> bool:
    """Whether this machine has the accelerator `trainer.accelerator` names, by Lightning's
    registry (`gpu`: CUDA or MPS; a name it does not know is for its own message)."""
    kinds = {"gpu": ("cuda", "mps")}.get(str(name), (str(name),))
    known = [k for k in kinds if k in AcceleratorRegistry]
    return not known or any(AcceleratorRegistry[k]["accelerator"].is_available() for k in known)


def build(key: str, node: DictConfig, **extra: Any) -> Any:
    """The data, model, a callback or a logger from its config, or one line naming its key
    (`+model.x=1`: the model takes no argument `x`)."""
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


@contextmanager
def lightning_errors(trainer: L.Trainer, run_dir: Path, resume_from: str | None) -> Iterator[None]:
    """Around `trainer.fit` or `trainer.test`: an interrupt exits 130 saying how to continue;
    a fault of the config or the resumed checkpoint is one line; a bug keeps its traceback."""
    try:
        with exit_when_interrupted(trainer, run_dir):
            yield
    except Exception as e:
        # What a resumed checkpoint's state makes Lightning's restore raise (a buffer of another
        # shape, random states torch refuses, a damaged loop state): the checkpoint is at
        # fault, whatever the exception. checkpoint.check_resumable saw to what could crash.
        frames = traceback.extract_tb(e.__traceback__)
        restoring = any(
            Path(f.filename).name == "checkpoint_connector.py" or f.name == "load_state_dict"
            for f in frames
        )
        if resume_from and restoring and not isinstance(e, UserError):
            raise CheckpointError(
                f"{resume_from} cannot be restored ({one_line(e, 300)}); the file is damaged or "
                f"was edited. Start a new run from its weights instead: mnist-train "
                f"ckpt_path={resume_from}"
            ) from None
        # Some Trainer arguments are checked against the model and data only inside fit (e.g. a
        # val_check_interval longer than the epoch); not its checks of `self.log` calls, which
        # are bugs in the module.
        where = Path(frames[-1].filename).parts if frames else ()
        lightning = "lightning" in where and ("loops" in where or "trainer" in where)
        ours = lightning and "logger_connector" not in where
        if isinstance(e, MisconfigurationException | ValueError) and ours:
            reason = one_line(e).rstrip(".!")
            raise ConfigError(f"The trainer config cannot be used: {reason}.") from None
        raise


def checkpoint_to_test(trainer: L.Trainer, run_dir: Path) -> str:
    """The best checkpoint by val/acc; with stochastic weight averaging that ran to its end, the
    averaged network Lightning put in the model, saved where mnist-eval looks."""
    best = next((c.best_model_path for c in trainer.checkpoint_callbacks if c.monitor), "")
    swa = next((c for c in trainer.callbacks if isinstance(c, StochasticWeightAveraging)), None)
    if swa is not None and trainer.current_epoch - 1 >= swa.swa_end:
        best = str(run_dir / "checkpoints" / "best-swa.ckpt")
        trainer.save_checkpoint(best)
    if best and not Path(best).is_file():
        raise CheckpointError(f"The best checkpoint {best} is gone; test it with mnist-eval.")
    return best


class LearnedNothingError(TrainingFailedError):
    """Training ended with the training accuracy at chance level."""


CHANCE_LEVEL = 0.15  # train/acc below this at the end: the run learned nothing (10 classes)


def stop_if_learned_nothing(trainer: L.Trainer) -> None:
    """A run whose training accuracy ended at chance learned nothing: not a result, though
    Lightning ends it with exit status 0. (A run of a few batches, such as fast_dev_run, is not
    judged.)"""
    acc = trainer.callback_metrics.get("train/acc")
    if acc is None or trainer.fast_dev_run or trainer.global_step < 100:
        return
    if acc < CHANCE_LEVEL:
        raise LearnedNothingError(
            f"train/acc ended at {float(acc):.1%} after {trainer.global_step} steps: chance "
            "level, the network learned nothing (its loss stayed finite). Try another model.lr "
            f"(now {trainer.lightning_module.hparams.lr}) or model.optimizer, or "
            "model.batch_norm=true."
        )


# DDP with Hydra: Lightning's `ddp` strategy starts the other processes of a run by running the
# command line again. Under Hydra each would compose its own config and make its own run
# directory, and in a sweep each would re-launch the whole sweep (lightning-hydra-template #393,
# #194); Lightning also leaves `LOCAL_RANK` and friends behind, so a sweep's next job would wait
# for processes that never come. So the first process hands the others its composed config and
# run directory in the environment (`DDP_RUN_ENV`), and puts the environment back after the job.
# On a SLURM cluster `srun` starts every process, and `resume.run_dir` names a shared directory.
DDP_RUN_ENV = "MNIST_LIGHTNING_DDP_RUN"


def ddp_child_run() -> tuple[DictConfig, Path, str | None] | None:
    """(config, run directory, checkpoint to resume) in a process Lightning started for another
    rank of a run; None in one a user (or srun) started."""
    if os.environ.get("LOCAL_RANK", "0") == "0" or DDP_RUN_ENV not in os.environ:
        return None
    run = json.loads(os.environ[DDP_RUN_ENV])
    return OmegaConf.create(run["config"]), Path(run["run_dir"]), run["resume_from"]


@contextmanager
def ddp_job(
    trainer: L.Trainer, cfg: DictConfig, run_dir: Path, resume_from: str | None
) -> Iterator[None]:
    """Around one run's fit and test: the run for the processes Lightning starts; nothing left
    behind for a sweep's next job."""
    if trainer.world_size == 1:
        yield
        return
    saved = dict(os.environ)
    if is_rank_zero():
        run = {"config": OmegaConf.to_container(cfg, resolve=True), "run_dir": str(run_dir)}
        os.environ[DDP_RUN_ENV] = json.dumps(run | {"resume_from": resume_from})
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(saved)


# What MLflow and W&B are told about a run beside their config (conf/logger/): its name, the
# sweep it is a job of, and, when it is resumed, the tracker's run to continue, so a resumed run
# and every job of a sweep land where a user looks for them (docs/loggers.md).


def check_sqlite_store(uri: object) -> None:
    """A local MLflow store must be a database file or not yet exist, in a directory: MLflow
    itself retries anything else for minutes (a FIFO, a directory) before it gives up."""
    if not isinstance(uri, str) or not uri.startswith("sqlite:///"):
        return
    path = Path(uri.removeprefix("sqlite:///").split("?")[0])
    if path.exists() and not path.is_file():
        raise ConfigError(
            f"logger.mlflow.tracking_uri={uri}: {path} is {kind_of(path.stat().st_mode)}, not "
            "an SQLite database file."
        )
    if not path.parent.is_dir():
        raise ConfigError(
            f"logger.mlflow.tracking_uri={uri}: {path.parent} is not a directory; MLflow "
            "keeps its store in a file there."
        )


def finish_wandb_run() -> None:
    """Close the W&B run this process has open, if any: its files are complete, and the next
    run (a sweep's next job in the same process) gets its own."""
    wandb = sys.modules.get("wandb")  # not imported: no run
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def run_names(run: Path) -> tuple[str, str | None]:
    """The run's name for a tracker, `<run dir>` or `<sweep dir>/<job>`, and its sweep or None."""
    if (run.parent / "multirun.yaml").is_file():
        return f"{run.parent.name}/{run.name}", run.parent.name
    return run.name, None


def run_identity(node: DictConfig, cfg: DictConfig) -> dict[str, Any]:
    """What MLflow and W&B are told beside their config: the run's name, its sweep, and the
    tracker's run to continue when it is resumed. Values the config sets win."""
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    if target not in (MLFLOW_LOGGER, WANDB_LOGGER):
        return {}
    extra: dict[str, Any] = {"_convert_": "all"}  # plain dicts: wandb ignores a DictConfig
    run = Path(cfg.paths.output_dir).resolve()
    name, sweep = run_names(run)
    if target == MLFLOW_LOGGER:
        check_sqlite_store(node.get("tracking_uri"))
        tags = {"run_dir": str(run), **({"sweep": sweep} if sweep else {})}
        extra["run_name"] = node.get("run_name") or name
        extra["tags"] = {**tags, **dict(node.get("tags") or {})}
        if cfg.get("resume") and not node.get("run_id") and is_rank_zero():
            extra["run_id"] = mlflow_run_of(node, str(run))
        return extra
    # W&B: the id is the run's name, so a resumed run (same directory) continues it. The run
    # directory holds only its own files and folders (run/resume.py): no links to the latest run.
    settings = {**dict(node.get("settings") or {}), "symlink": False}
    extra |= {"name": node.get("name") or name, "settings": settings}
    if not node.get("id") and not node.get("version"):
        extra["id"] = re.sub(r"[^\w.-]", "-", name.replace("/", "-"))[:64]
    if sweep and not node.get("group"):
        extra["group"] = sweep
    return extra


def mlflow_run_of(node: DictConfig, run_dir: str) -> str | None:
    """The MLflow run a resumed run logged to (tagged with its directory); None: a new one."""
    try:
        from mlflow.tracking import MlflowClient
    except ModuleNotFoundError:  # building the logger says what to install
        return None

    uri = node.get("tracking_uri")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(node.get("experiment_name") or "lightning_logs")
    found = []
    if experiment is not None:
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string="" if "'" in run_dir else f"tags.run_dir = '{run_dir}'",
            order_by=["attributes.start_time DESC"],
        )
        found = [r for r in runs if r.data.tags.get("run_dir") == run_dir]
    if not found:
        log.warning("No MLflow run of %s in %s: the resumed run starts a new one.", run_dir, uri)
        return None
    return found[0].info.run_id
