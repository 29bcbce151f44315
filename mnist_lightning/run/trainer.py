"""The Lightning Trainer from the config: where it runs (threads, DDP, SLURM), what the
trackers are told about the run, and what Lightning refuses as one line naming the config key
or checkpoint at fault, not a traceback."""

import difflib
import json
import logging
import os
import re
import sys
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from inspect import signature
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra._internal.utils import _locate
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.accelerators import AcceleratorRegistry
from lightning.pytorch.callbacks import ProgressBar, StochasticWeightAveraging
from lightning.pytorch.trainer.connectors.data_connector import _parse_num_batches
from lightning.pytorch.trainer.states import RunningStage, TrainerFn
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf
from tqdm.contrib.logging import logging_redirect_tqdm

from mnist_lightning.data.datamodule import TensorBatches
from mnist_lightning.data.datasets import raw_dir, unusable
from mnist_lightning.errors import (
    ConfigError,
    TrainingFailedError,
    UserError,
    one_line,
)
from mnist_lightning.files import cannot_write, check_sqlite_store, check_writable, to_run_log
from mnist_lightning.model.classifier import MNISTClassifier
from mnist_lightning.run.checkpoint import (
    AtomicCheckpointIO,
    check_resumable,
    load_checkpoint,
    network_weights,
    unrestorable,
)
from mnist_lightning.run.config import check_value, value_at
from mnist_lightning.run.resume import (
    EXTRAS,
    MLFLOW_LOGGER,
    WANDB_LOGGER,
    GracefulInterrupt,
    check_writes_inside,
    is_rank_zero,
    last_checkpoint,
    remove_refused,
)
from mnist_lightning.run.sweep import check_joblib, sweep_job

log = logging.getLogger(__name__)
WARNINGS = logging.getLogger("py.warnings")  # as logging.captureWarnings names them

# Lightning's warnings that do not apply here: the model logs what is left of a window at each
# epoch end, the data module reads the same batches with overfit_batches, epoch metrics are
# already reduced, a resumed run's checkpoint directory is not empty, and a machine with
# SLURM's commands need not run on SLURM; torch's, about Lightning's use of its pytrees.
IGNORED_WARNINGS = (
    r"The `srun` command is available on your system but is not used",
    r".*smaller than the logging interval",
    r"You requested to overfit but enabled \w+ dataloader shuffling",
    r".*sync_dist=True.*when logging on epoch level",
    r"Checkpoint directory .* exists and is not empty",
    r".*isinstance\(treespec, LeafSpec\)",
)
# Lightning's lines that are not for this project's user: an advertisement, a step count it
# estimates, restoring a checkpoint (our "Resuming ... from" and the results name it), Ctrl-C
# (the stop message says more), the accelerators (the data line names the device used; a GPU
# left unused is Lightning's warning, which stays), a new MLflow experiment; Optuna's new
# study (Hydra's sweeper names it and its storage next) and its "Got 'None'" for a failed trial
# (the job's line said why).
CHATTER = (
    "litlogger",
    "GPU available: ",
    "TPU available: ",
    "Loading `train_dataloader` to estimate",
    "from the checkpoint",  # restoring it: "Restoring states", "Restored all states", "Loaded ..."
    "Received SIGTERM",
    "Detected KeyboardInterrupt",
    "not found. Creating it.",
    "A new study created in",
    "must be float-castable. Got 'None'",
)


def no_chatter(record: logging.LogRecord) -> bool:
    return not any(text in record.getMessage() for text in CHATTER)


def setup_process() -> None:
    """Settings for this process, made before any training starts (again in a launcher's job)."""
    # Without a GPU, torch's cached CUDA check instead of NVML's, which a CUDA build of torch
    # repeats, uncached, on every Adam step (docs/benchmarks.md).
    if not torch.cuda.is_available():
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"
    else:
        torch.set_float32_matmul_precision("high")  # TF32 matmuls: free speed, no accuracy loss
    for pattern in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    if not hasattr(warnings.showwarning, "shown"):  # the warnings kept reach train.log too
        shown = warnings.showwarning

        def show(message: Any, category: type[Warning], *where: Any, **kw: Any) -> None:
            shown(message, category, *where, **kw)
            to_run_log(WARNINGS, f"{category.__name__}: {message}", logging.WARNING)

        show.shown = shown  # type: ignore[attr-defined]
        warnings.showwarning = show
    lightning = ("utilities.rank_zero", "trainer.connectors.signal_connector", "loggers.mlflow")
    optuna = ("optuna.storages._rdb.storage", "hydra_plugins.hydra_optuna_sweeper._impl")
    for name in (*(f"lightning.pytorch.{n}" for n in lightning), *optuna):
        logging.getLogger(name).addFilter(no_chatter)
    if not sys.stderr.isatty():  # colour only on a terminal: Optuna's colorlog obeys NO_COLOR
        os.environ.setdefault("NO_COLOR", "1")
    for chatty in ("alembic", "mlflow.store.db.utils"):  # MLflow creating its tables
        logging.getLogger(chatty).setLevel(logging.WARNING)
    logging.raiseExceptions = False  # a full disk: no "Logging error" traceback per log line
    # submitit's messages go to Hydra's handlers only, not also to its own (printed twice).
    os.environ.setdefault("SUBMITIT_LOG_LEVEL", "NOCONFIG")
    # A SLURM job gets the CPUs it asked for (torch would start a thread per core of the node);
    # jobs of hydra/launcher=joblib run side by side: each gets its share of the cores.
    if "SLURM_CPUS_PER_TASK" in os.environ:
        torch.set_num_threads(int(os.environ["SLURM_CPUS_PER_TASK"]))
        return
    jobs = hydra.launcher.get("n_jobs") if (hydra := sweep_job()) else None
    if jobs:
        cores = os.cpu_count() or 1
        at_once = jobs if jobs > 0 else max(1, cores + 1 + jobs)  # joblib: -1 is every core
        threads = max(1, cores // at_once)
        torch.set_num_threads(threads)
        log.info("%d jobs at once on %d cores; torch threads a job: %d", at_once, cores, threads)


def build_callbacks(cfg: DictConfig, own: bool = False) -> list[L.Callback]:
    """The configured callbacks (with `own`: only Lightning's callback classes and ours, which
    do nothing as they are built; another may act, or need the run)."""
    callbacks = [
        build(f"callbacks.{name}", node)
        for name, node in (cfg.get("callbacks") or {}).items()
        if not own or is_callback(str(node._target_))
    ]
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar callback then
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    return callbacks


def is_callback(target: str) -> bool:
    """Whether `target` is Lightning's callback class or ours (another's module: not imported)."""
    try:  # one it cannot find: building it says why
        found = _locate(target) if target.startswith(("lightning.", "mnist_lightning.")) else None
    except Exception:
        return False
    return isinstance(found, type) and issubclass(found, L.Callback)


def build_trainer(cfg: DictConfig, callbacks: list[L.Callback]) -> L.Trainer:
    """The Lightning Trainer with the configured loggers, `callbacks` and atomic checkpoints."""
    nodes = (cfg.get("logger") or {}).items()  # `~logger`: none
    finish_wandb_run()  # a WandbLogger would log into a run left open (a failed sweep job's)
    # MLflow's logger makes its store as it is built: last, once the others were accepted.
    mlflow_last = sorted(nodes, key=lambda item: item[1].get("_target_") == MLFLOW_LOGGER)
    built = {name: build(f"logger.{name}", c, **run_identity(c, cfg)) for name, c in mlflow_last}
    loggers = [built[name] for name, _ in nodes]
    for logger in loggers:  # Lightning hands W&B `anonymous=None`, which wandb warns of
        if getattr(logger, "_wandb_init", {}).get("anonymous", False) is None:
            del logger._wandb_init["anonymous"]
    # In a job of hydra/launcher=slurm, submitit requeues, not Lightning on SIGUSR1
    # (hydra_plugins/mnist_lightning/_slurm.py).
    submitit = os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and SLURMEnvironment.detect()
    run = Path(cfg.paths.output_dir)
    checkpoints = AtomicCheckpointIO(run)
    plugins = [checkpoints, *([SLURMEnvironment(auto_requeue=False)] if submitit else [])]
    trainer = build(  # plain containers: Lightning reads `max_time={minutes: 1}` as a dict
        "trainer",
        cfg.trainer,
        _convert_="all",
        logger=loggers or False,
        callbacks=callbacks,
        plugins=plugins,
    )
    check_writes_inside(trainer, run)  # (another run's checkpoints, its CSV log: written over)
    if cfg.get("resume"):
        log.info("Resuming %s from %s", run, last_checkpoint(run))
    # Accepted: from here on Lightning's lines also go to the run's train.log (a sweep's
    # earlier job's log is replaced).
    run_log = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    for logger in map(logging.getLogger, ("lightning.pytorch", "lightning.fabric")):
        if not logger.propagate:
            others = [h for h in logger.handlers if not isinstance(h, logging.FileHandler)]
            logger.handlers = others + run_log
    return trainer


def start_from(model: MNISTClassifier, cfg: DictConfig, resume_from: str | None) -> None:
    """Check the checkpoint a run resumes from against `model` and the limit of epochs (before
    the Trainer is built and says anything; Lightning restores it, and refuses an epoch past
    trainer.max_epochs, in fit), or load the weights `ckpt_path=` starts from."""
    ckpt_path, limit = cfg.get("ckpt_path"), cfg.trainer.get("max_epochs")
    if resume_from:
        check_resumable(model, checkpoint := load_checkpoint(resume_from), resume_from)
        if limit not in (None, -1) and (epoch := checkpoint.get("epoch", 0)) > limit:
            raise ConfigError(
                f"resume= continues a run at epoch {epoch}; trainer.max_epochs={limit} is below "
                "it. Give a higher one, or none (the run's own)."
            )
    elif ckpt_path:
        model.net.load_state_dict(network_weights(model, load_checkpoint(ckpt_path), ckpt_path))
        log.info("Starting from the weights of %s", ckpt_path)


def check_before_training(cfg: DictConfig) -> None:
    """What would refuse a run before it trains (no such accelerator, a value Lightning, a
    callback or joblib refuses, data sizes the files lack, an unusable `ckpt_path`): before
    Hydra makes a directory (for each job of a sweep), and again in the job (for a resumed run's,
    an Optuna trial's, a SLURM job's config), before the data is fetched or a logger writes."""
    launcher = (cfg.get("hydra") or {}).get("launcher") or {}  # (in the job: not in cfg)
    if "JoblibLauncher" in str(launcher.get("_target_")):
        check_joblib(launcher)
    t = cfg.trainer
    if not accelerator_available(t.get("accelerator")):
        raise ConfigError(
            f"trainer.accelerator={t.accelerator} trainer.devices={t.get('devices')} cannot be "
            f"used on this machine: it has no {t.accelerator}. Try trainer.accelerator=auto or "
            "trainer=cpu."
        )
    nodes = {"trainer": t, "data": cfg.data, "model": cfg.model} | {
        f"{group}.{name}": node
        for group in ("logger", "callbacks")
        for name, node in (cfg.get(group) or {}).items()
    }
    for key, node in nodes.items():  # also of what is not built here (MLflow's makes its store)
        check_arguments(key, node)
        check_sqlite_store(node.get("tracking_uri"), f"{key}.tracking_uri", "experiments")
        for name in ("default_root_dir", "save_dir", "dirpath"):  # where each writes, as given
            place = node.get(name)  # (the run's folder, made by Hydra later, is not yet known)
            if isinstance(place, str) and not OmegaConf.is_interpolation(node, name):
                check_writable(Path(place), f"{key}.{name}")
    level = logging.root.manager.disable
    logging.disable(logging.INFO)  # its lines and warnings: when the run builds its own
    try:
        with warnings.catch_warnings(action="ignore"):
            callbacks = build_callbacks(cfg, own=True)
            trainer = build("trainer", t, _convert_="all", logger=False, callbacks=callbacks)
            data = build("data", cfg.data)
            train = data.check_sizes()
            raw = raw_dir(data.data_dir, data.dataset.name)
            fetched = not (raw / "train-labels-idx1-ubyte").exists()  # then it must take files
            if fetched and (why := cannot_write(raw)):
                raise unusable(raw, why)
            check_batches(trainer, data, train)
            start_from(build("model", cfg.model, _convert_="all"), cfg, None)
    finally:
        logging.disable(level)


def check_batches(trainer: L.Trainer, data: Any, train: int) -> None:
    """Lightning's checks of the number of batches, which it makes only inside fit, after a
    tracker made its store and run: here, with its own function, on the splits' sizes (`train`:
    the training images, `check_sizes`'), a process's part under DDP."""
    for stage, images, size in (
        (RunningStage.TRAINING, data.train_subset or train - data.val_size, data.batch_size),
        (RunningStage.VALIDATING, data.val_size, data.eval_batch_size),
        (RunningStage.TESTING, data.images_in("t10k"), data.eval_batch_size),
    ):
        training, rows = stage == RunningStage.TRAINING, torch.empty(images)
        loader = TensorBatches(
            rows, rows, size, False, 0, world_size=trainer.world_size, training=training
        )
        limit = getattr(trainer, f"limit_{stage.dataloader_prefix}_batches")
        try:
            batches = _parse_num_batches(stage, len(loader), limit)
        except MisconfigurationException as e:
            raise ConfigError(f"The trainer config cannot be used: {one_line(e)}") from None
        every = getattr(trainer, "val_check_interval", None)  # (unset: a duration)
        per_epoch = trainer.check_val_every_n_epoch is not None and trainer.limit_val_batches
        if training and isinstance(every, int) and every > batches and per_epoch:
            raise ConfigError(
                f"The trainer config cannot be used: `val_check_interval` ({every}) is more than "
                f"the {batches} training batches of an epoch: give at most {batches}, a fraction "
                "of the epoch, or trainer.check_val_every_n_epoch=null to count across epochs."
            )


def accelerator_available(name: object) -> bool:
    """Whether this machine has that accelerator, by Lightning's registry (`gpu`: CUDA or MPS; a
    name it does not know is for its own message)."""
    kinds = {"gpu": ("cuda", "mps")}.get(str(name), (str(name),))
    known = [k for k in kinds if k in AcceleratorRegistry]
    return not known or any(AcceleratorRegistry[k]["accelerator"].is_available() for k in known)


def build(key: str, node: DictConfig, **extra: Any) -> Any:
    """The data, model, a callback or a logger from its config, or one line naming its key."""
    try:
        return instantiate(node, **extra)
    except Exception as e:  # a value of the wrong type or range, which the class refused
        cause = e.__cause__ or e
        package = EXTRAS.get(str(node.get("_target_")))
        if package and isinstance(cause, ModuleNotFoundError):
            raise ConfigError(
                f"{key} needs the {package} package: pip install -e '.[{package}]'"
            ) from None
        reason = one_line(cause).rstrip(".!")[:300]
        raise ConfigError(f"{key} cannot be built from its config: {reason}.") from None


# The keywords these loggers do not take themselves, they hand on (less what they set there).
HANDS_ON = {
    "lightning.pytorch.loggers.TensorBoardLogger": (
        "torch.utils.tensorboard.SummaryWriter",
        "log_dir",
    ),
    WANDB_LOGGER: ("wandb.init", ""),
    "mnist_lightning.data.datamodule.MNISTDataModule": (
        "mnist_lightning.data.augment.Augment",
        "kind",
    ),
}


# The argument types `check_arguments` checks as the class declares them (`save_top_k=abc`:
# ModelCheckpoint's own check is a TypeError that names no key).
TYPED = {int: "int", float: "float", bool: "bool", int | float: "float"}
TYPED |= {kind | None: f"{rule}?" for kind, rule in TYPED.items()}


def check_arguments(key: str, node: DictConfig) -> None:
    """One line for a node that names no class (`+callbacks.x.patience=1`), an argument its
    class lacks (`+trainer.gradient_clip_vall=1`) or a value not of the type the class declares,
    found before anything is built: MLflow's logger makes its store as it is built."""
    if not isinstance(node, DictConfig) or "_target_" not in node:
        raise ConfigError(
            f"{key} names no class to build: give its class (+{key}._target_=<class>) or remove it."
        )
    target = str(node._target_)
    to, its_own = HANDS_ON.get(target, (None, ""))
    try:  # found as `instantiate` finds it; one it cannot find or read: building it says why
        takes = {
            k: p for n in (target, to) if n for k, p in signature(_locate(n)).parameters.items()
        }
    except Exception:
        return
    takes.pop(its_own, None)
    any_name = target not in HANDS_ON and any(p.kind == p.VAR_KEYWORD for p in takes.values())
    takes = {k: p for k, p in takes.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    for name in (str(n) for n in node if not str(n).startswith("_")):  # `_convert_`: Hydra's
        if name in takes and (rule := TYPED.get(takes[name].annotation)):
            check_value(f"{key}.{name}", value_at(node, name), rule)
        elif name not in takes and not any_name:
            close = difflib.get_close_matches(name, takes, 1)
            hint = f" Did you mean {key}.{close[0]}?" if close else ""
            raise ConfigError(f"{key}.{name}: {target} takes no argument {name}.{hint}")


@contextmanager
def lightning_errors(trainer: L.Trainer, run_dir: Path, resume_from: str | None) -> Iterator[None]:
    """Around `trainer.fit`, the test and the report: Ctrl-C and SIGTERM (GracefulInterrupt:
    also the scheduler's signal) exit 130 saying how to continue; a fault of the config or the
    resumed checkpoint is one line; a bug keeps its traceback. Log lines go through tqdm, above
    the bars (written plainly, they would land on the bar's line, which the bar then redraws)."""
    try:
        with logging_redirect_tqdm([logging.getLogger(), logging.getLogger("lightning.pytorch")]):
            yield
    except (SystemExit, KeyboardInterrupt) as e:  # SystemExit: also Lightning's SIGTERMException
        if isinstance(e, SystemExit) and not trainer.interrupted:  # (Ctrl-C after fit: plain)
            raise
        for callback in trainer.callbacks:
            if isinstance(callback, GracefulInterrupt):
                callback.hand_back()  # a SLURM job's time limit: submitit requeues it
        sweep = (hydra := sweep_job()) and hydra.sweep.dir
        if is_rank_zero() and (sweep or last_checkpoint(run_dir).is_file()):
            how = f"-m <the sweep's overrides> resume={sweep}" if sweep else f"resume={run_dir}"
            stopped = f"Training stopped; {last_checkpoint(run_dir)} holds the state to resume"
            print(f"\n{stopped}:\n  mnist-train {how}", file=sys.stderr)
            to_run_log(log, f"{stopped}: mnist-train {how}")
        elif is_rank_zero():
            if trainer.state.fn == TrainerFn.FITTING and trainer.global_step == 0:
                remove_refused(run_dir)  # stopped before its first step: a new run is undone
            stopped = f"Training stopped with no {last_checkpoint(run_dir)}: nothing to resume."
            print(f"\n{stopped}", file=sys.stderr)
            to_run_log(log, stopped)
        sys.exit(130)
    except Exception as e:
        # What a resumed checkpoint's state makes Lightning's restore raise (a buffer of another
        # shape, random states torch refuses, a damaged loop state; not a max_epochs below the
        # run's epoch): the checkpoint is at fault. check_resumable saw to what could crash.
        frames = traceback.extract_tb(e.__traceback__)
        restoring = any(
            Path(f.filename).name == "checkpoint_connector.py" or f.name == "load_state_dict"
            for f in frames
        )
        if resume_from and restoring and not isinstance(e, (UserError, MisconfigurationException)):
            raise unrestorable(resume_from, e) from None
        # Callbacks Lightning checks only inside fit (a LearningRateMonitor without a logger,
        # a metric to monitor that the model does not log; check_batches checks the batches), not
        # its checks of `self.log` calls (bugs in the module) nor torch's RuntimeError in its lines.
        where = set(Path(frames[-1].filename).parts)  # (frames: at least this one's)
        ours = "lightning" in where and {"loops", "trainer", "callbacks"} & where
        raised = (frames[-1].line or "").lstrip().startswith("raise")
        kinds = (MisconfigurationException, ValueError, *([RuntimeError] if raised else []))
        if isinstance(e, kinds) and ours and "logger_connector" not in where:
            reason = one_line(e).rstrip(".!")
            raise ConfigError(f"The trainer config cannot be used: {reason}.") from None
        raise


def checkpoint_to_test(trainer: L.Trainer, run_dir: Path) -> str:
    """The best checkpoint by val/acc; with stochastic weight averaging that ran to its end, the
    averaged network Lightning put in the model, saved where mnist-eval looks."""
    best = next((c.best_model_path for c in trainer.checkpoint_callbacks if c.monitor), "")
    swa = next((c for c in trainer.callbacks if isinstance(c, StochasticWeightAveraging)), None)
    if swa is not None and trainer.current_epoch - 1 >= swa.swa_end:
        # (Resumed at its end, fit ran no hook: the average, restored, is put in the model here.)
        swa.transfer_weights(swa._average_model, trainer.lightning_module)
        best = str(run_dir / "checkpoints" / "best-swa.ckpt")
        trainer.save_checkpoint(best, weights_only=False)  # (unset: a warning says so)
    return best


def stop_if_learned_nothing(trainer: L.Trainer) -> None:
    """A run whose training accuracy ended at chance (10 classes) learned nothing: not a
    result, though Lightning ends it with exit status 0. A run of a few batches is not judged."""
    acc = trainer.callback_metrics.get("train/acc")
    if acc is None or trainer.fast_dev_run or trainer.global_step < 100 or acc >= 0.15:
        return
    raise TrainingFailedError(
        f"train/acc ended at {float(acc):.1%} after {trainer.global_step} steps: chance "
        "level, the network learned nothing (its loss stayed finite). Try another model.lr "
        f"(now {trainer.lightning_module.hparams.lr}) or model.optimizer, or "
        "model.batch_norm=true."
    )


# DDP with Hydra: Lightning's `ddp` strategy starts the other processes by running the command
# line again; under Hydra each would compose its own config and run directory, and in a sweep
# re-launch the sweep (lightning-hydra-template #393, #194). So the first process hands the
# others its config and run directory in the environment, and puts the environment back after
# the job (Lightning leaves `LOCAL_RANK` behind). On SLURM `srun` starts every process.
DDP_RUN_ENV = "MNIST_LIGHTNING_DDP_RUN"


def ddp_child_run() -> tuple[DictConfig, Path, str | None] | None:
    """(config, run directory, checkpoint to resume) in a process Lightning started for another
    rank; None in one a user (or srun) started."""
    if os.environ.get("LOCAL_RANK", "0") == "0" or DDP_RUN_ENV not in os.environ:
        return None
    run = json.loads(os.environ[DDP_RUN_ENV])
    return OmegaConf.create(run["config"]), Path(run["run_dir"]), run["resume_from"]


@contextmanager
def ddp_job(
    trainer: L.Trainer, cfg: DictConfig, run_dir: Path, resume_from: str | None
) -> Iterator[None]:
    """Around a run's fit and test: the run for Lightning's other processes; nothing left after."""
    if trainer.world_size == 1:
        yield
        return
    saved = dict(os.environ)
    if is_rank_zero():
        config = OmegaConf.to_container(cfg, resolve=True)
        run = {"config": config, "run_dir": str(run_dir), "resume_from": resume_from}
        os.environ[DDP_RUN_ENV] = json.dumps(run)
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(saved)


def finish_wandb_run() -> None:
    """Close this process's W&B run, if open: a sweep's next job in the process gets its own."""
    wandb = sys.modules.get("wandb")  # not imported: no run
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def run_identity(node: DictConfig, cfg: DictConfig) -> dict[str, Any]:
    """What MLflow and W&B are told beside their config (docs/outputs.md): the run's name, its
    sweep, and the tracker's run to continue when it is resumed. Values the config sets win."""
    target = node.get("_target_")  # (check_arguments refused a node that is no DictConfig)
    if target not in (MLFLOW_LOGGER, WANDB_LOGGER):
        return {}
    run = Path(cfg.paths.output_dir).resolve()  # its name: `<run dir>` or `<sweep dir>/<job>`
    sweep = Path(hydra.sweep.dir).name if (hydra := sweep_job()) else None
    name = f"{sweep}/{run.name}" if sweep else run.name
    extra: dict[str, Any] = {"_convert_": "all"}  # plain dicts: wandb ignores a DictConfig
    if target == MLFLOW_LOGGER:
        if store := check_sqlite_store(node.get("tracking_uri"), "tracking_uri", "experiments"):
            store.parent.mkdir(parents=True, exist_ok=True)
        tags = {"run_dir": str(run), **({"sweep": sweep} if sweep else {})}
        extra |= {"run_name": node.get("run_name") or name}
        extra["tags"] = tags | dict(node.get("tags") or {})
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
    runs = experiment and client.search_runs(
        [experiment.experiment_id],
        filter_string="" if "'" in run_dir else f"tags.run_dir = '{run_dir}'",
        order_by=["attributes.start_time DESC"],
    )
    found = [r.info.run_id for r in runs or [] if r.data.tags.get("run_dir") == run_dir]
    if not found:
        log.warning("No MLflow run of %s in %s: the resumed run starts a new one.", run_dir, uri)
    return found[0] if found else None
