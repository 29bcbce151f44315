"""Run directories, and `resume=<run_dir>`: continue a run in its own directory with its own
config, and stop one so that it can be continued (`GracefulInterrupt`).

The run is found and locked before Hydra starts (`claim_run_directory`), so Hydra logs into it.
A run directory someone handed you is data, never code: its files must be regular files and
directories of its own, and its saved config may choose values, but not classes (`conf/` and
the command line do) nor places outside the run to write to. (Its checkpoint: checkpoint.py.)
"""

import itertools
import logging
import os
import re
import secrets
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from mnist_lightning.errors import (
    CheckpointError,
    ConfigError,
    UserError,
    one_line,
    printable,
)
from mnist_lightning.files import (
    LOCK_NAME,
    cannot_write,
    kind_of,
    lock_run,
    open_regular,
    put_back_locks,
    read_json,
    run_holder,
)
from mnist_lightning.run.config import CONFIG_DIR, is_resume, nodes, resume_arg
from mnist_lightning.run.sweep import completed

log = logging.getLogger(__name__)

MLFLOW_LOGGER = "lightning.pytorch.loggers.MLFlowLogger"
WANDB_LOGGER = "lightning.pytorch.loggers.WandbLogger"
EXTRAS = {MLFLOW_LOGGER: "mlflow", WANDB_LOGGER: "wandb"}  # pyproject's extras they need

FROM_WEIGHTS = "Start a new run from its weights with ckpt_path=<checkpoint> instead."
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
    "data.data_dir",
    "data.source",
)


def is_rank_zero() -> bool:
    """The process that locks the run and writes its results (the only one, under DDP)."""
    return rank_zero_only.rank == 0


def run_id() -> str:
    """`2026-11-24_14-03-59_a1b2c3`: sortable by time, unique even within one second."""
    return time.strftime("%Y-%m-%d_%H-%M-%S_") + secrets.token_hex(3)


def run_dir(resume: str | None) -> str:
    """hydra.run.dir: a new directory, or the one `resume=` names. The tasks `srun` starts
    for one DDP run each compose their config: they share a directory named after the job."""
    if resume:
        return str(find_run(resume))
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
        step = os.environ.get("SLURM_STEP_ID")
        return f"{RUNS_DIR}/slurm-{os.environ['SLURM_JOB_ID']}{f'.{step}' if step else ''}"
    return f"{RUNS_DIR}/{run_id()}"


def sweep_dir(resume: str | None) -> str:
    """hydra.sweep.dir: a new directory, or the sweep `resume=` names (claim_run_directory
    looked it up, `latest` too, before Hydra started)."""
    return resume or f"{SWEEPS_DIR}/{run_id()}"


def hydra_output_subdir(output_dir: str) -> str | None:
    """Where Hydra saves the composed config: not in a run that has a checkpoint or results
    (resumed, or a sweep's job re-launched or requeued): its .hydra/ says what it trained with."""
    run = Path(output_dir or ".")  # (`--cfg hydra --resolve`: no output_dir yet)
    return None if output_dir and (last_checkpoint(run).is_file() or results(run)) else ".hydra"


def slurm_tasks(devices: Any) -> int:
    """hydra.launcher.tasks_per_node: trainer.devices, or -1, which the launcher refuses."""
    return devices if isinstance(devices, int) and devices > 0 else -1


def slurm_gpus(accelerator: str, devices: Any) -> int:
    """hydra.launcher.gpus_per_node: one per process for trainer=gpu or ddp (`auto`: none)."""
    return slurm_tasks(devices) if str(accelerator) in ("gpu", "cuda") else 0


def register_resolvers() -> None:
    """The resolvers conf/hydra/ names; cached, so every reference in a run sees one value."""
    for name, resolver in [
        ("run_id", run_id),
        ("run_dir", run_dir),
        ("sweep_dir", sweep_dir),
        ("hydra_output_subdir", hydra_output_subdir),
        ("slurm_tasks", slurm_tasks),
        ("slurm_gpus", slurm_gpus),
        ("on_a_terminal", lambda: sys.stdout.isatty()),  # where Lightning's bar writes
    ]:
        OmegaConf.register_new_resolver(name, resolver, use_cache=True, replace=True)


# A new run's or sweep's directory -> the nearest folder of it that exists, as it was: what a
# refused run puts back (remove_refused).
BEFORE_HYDRA: dict[Path, tuple[Path, os.stat_result]] = {}
# The run (hydra.run.dir) or sweep (hydra.sweep.dir) `resume=` names, found, checked and locked.
CLAIMED: dict[str, Path] = {}


class RunDirectory(Callback):
    """Where Hydra will write, as it composed it (presets, interpolations, `hydra.mode`), before
    it makes anything: a new run or sweep needs a directory of its own."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        claim_new(config, "hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        claim_new(config, "hydra.sweep.dir", config.hydra.sweep.dir)


def claim_new(config: DictConfig, key: str, place: str) -> None:
    if not is_rank_zero():  # DDP's other tasks: rank 0's
        return
    if config.get("resume"):  # its own: the run or sweep claim_run_directory checked and locked
        if CLAIMED.get(key) != Path(place).resolve():
            refuse(
                f"resume= continues {config.resume} in its own directory; drop {key}={place} "
                "(a sweep is resumed with -m, not hydra.mode)."
            )
        return
    where = Path(os.path.abspath(place))  # as Hydra names it (runtime.output_dir)
    if why := cannot_write(where):  # (Hydra's mkdir: a traceback)
        refuse(f"{key}={place}: cannot write to {printable(where)} ({why}).")
    parts = Path(place).parts  # `a/../b`: Hydra makes a/ (through a link: b there) and writes b
    if any(p == ".." and q != ".." for q, p in itertools.pairwise(parts)):
        refuse(f"{key}={place} goes down and up again (..): name the folder itself.")
    real = where.resolve()  # (a link's target: its parents)
    made = (".hydra", "multirun.yaml", "optuna.db")  # a run or a sweep: a lock and a record
    owned = (p for p in [real, *real.parents] if any((p / f).exists() for f in made))
    run = next((p for p in owned if (p / LOCK_NAME).is_file()), None)
    if run or (where.is_dir() and any(where.iterdir())):
        there = f"lies in the run {run}" if run and run != real else "already holds files"
        again = "-m <its overrides> " if run and not (run / ".hydra").is_dir() else ""  # a sweep
        advice = f" To continue the run there: mnist-train {again}resume={run}" if run else ""
        refuse(f"{key}={place} {there}; a new run needs a directory of its own.{advice}")
    above = next(p for p in [where, *where.parents] if p.exists())
    BEFORE_HYDRA[where] = (above, above.stat())


def refuse(reason: str = "", status: int = 2) -> None:
    """A command that did nothing (refused: one line, exit 2, not Hydra's words and exit 1;
    stopped by Ctrl-C: 130, quietly): its locks put back, the new run or sweep it claimed
    (`BEFORE_HYDRA`: not yet trained) undone."""
    for made in list(BEFORE_HYDRA):
        remove_refused(made)
    put_back_locks()
    if reason:
        print(f"Error: {reason}", file=sys.stderr)
    sys.exit(status)


def claim_run_directory(args: list[str]) -> list[str]:
    """Before Hydra makes the run directory (with a traceback where it cannot) or logs into a
    resumed run: check where this command writes and lock the run it resumes (a new run's own
    directory: `RunDirectory`). Returns the arguments with that run named (`latest` looked up)."""
    if not (resume := resume_arg(args)):
        return args
    flags = get_args_parser().parse_known_args(args)[0]  # as Hydra reads them (`--multi` too)
    run = find_run(resume, sweep=flags.multirun)
    if flags.multirun:
        check_relaunch(flags.overrides, run, resume)
    if is_rank_zero():  # before Hydra appends to the run's train.log
        lock_run(run, "mnist-train")
    CLAIMED["hydra.sweep.dir" if flags.multirun else "hydra.run.dir"] = run
    return [f"resume={hydra_quoted(str(run))}" if is_resume(arg) else arg for arg in args]


def hydra_quoted(text: str) -> str:
    """`text` as an override value that Hydra and OmegaConf read back as it is (any path)."""
    escaped = re.sub(r"\\+(?='|$|\$\{)", lambda m: m[0] * 2, text)  # (Hydra's escape rules)
    return "'" + escaped.replace("'", "\\'").replace("${", "\\${") + "'"


# Each limit of trainer, and metrics.json's count of it
LIMITS = {"max_steps": "global_step", "max_epochs": "epoch"}


def limits(trainer: DictConfig) -> dict[str, Any]:
    """trainer.max_steps and max_epochs as Lightning reads them: a null max_epochs is 1000
    epochs unless max_steps or max_time ends the run (`_parse_loop_limits`)."""
    steps, epochs = trainer.get("max_steps"), trainer.get("max_epochs")
    if epochs is None:
        epochs = -1 if steps not in (None, -1) or trainer.get("max_time") else 1000
    return {"max_steps": steps, "max_epochs": epochs}


def finished(run: Path, trainer: DictConfig) -> str | None:
    """How to train `run` further if it ended and `trainer`'s limits take it no further: it
    reached one of them, or stopped before the limits it had (max_time, early stopping: their
    state is in the checkpoint). None: not finished, or the limits extend it."""
    if (done := results(run)) is None:
        return None
    for key, limit in limits(trainer).items():
        count = done.get(LIMITS[key])
        if isinstance(limit, int) and limit >= 0 and isinstance(count, int) and count >= limit:
            return f"To train it further, raise trainer.{key} above {count}."
    saved = saved_config(run).trainer
    if limits(trainer) != limits(saved) and not saved.get("max_time"):
        return None
    return (
        "It stopped before its limits (trainer.max_time or early stopping), which resume= "
        "does not extend; to train further, start a new run from it: mnist-train "
        f"ckpt_path={last_checkpoint(run)}"
    )


def continue_or_finish(cfg: DictConfig) -> tuple[DictConfig, float | None]:
    """(config to train with, None), or (config, result) when there is nothing to train: a
    finished sweep job, or a finished run the command does not extend."""
    single = HydraConfig.get().mode == RunMode.RUN
    if cfg.resume and cfg.ckpt_path and single:
        raise ConfigError(
            "resume= continues a run with its optimizer and loop state, ckpt_path= starts a "
            "new run from a checkpoint's weights: give one of them, not both."
        )
    run, done, advice = Path(cfg.paths.output_dir), None, None
    if not single:  # a re-launched sweep or a requeued job: one with a checkpoint goes on as a
        # run does; one without is skipped if it completed
        cfg.resume = str(run) if last_checkpoint(run).is_file() else None
        done = None if cfg.resume or not completed(run) else results(run)
    if cfg.resume:
        cfg = resumed_config(cfg)
        done = results(run) if (advice := finished(run, cfg.trainer)) else None
    if done and single:
        print(f"{run} finished before (its results: {run}/metrics.json); nothing to do. {advice}")
        put_back_locks()
    elif done:
        log.info("%s finished before; skipped", run)
    return cfg, done["val/acc_best"] if done else None


# What a refused run or sweep may have written into its directory (Hydra's config and log,
# the lock, TensorBoard's folder, the sweep's record and study): a directory holding anything
# else is not only this command's, and keeps all it holds.
REFUSED_LEAVES = {".hydra", "train.log", ".lock", "tensorboard", "multirun.yaml", "optuna.db"}
REFUSED_LEAVES |= {".submitit", "csv", "wandb"}  # the SLURM launcher's, conf/logger/'s folders


def remove_refused(made: Path) -> None:
    """What this command wrote for a run or sweep it then refused, and nothing else: in the
    directory `RunDirectory` claimed, its files, then the directory and the folders above it
    that were not there before Hydra; the folder that was there gets its times back."""
    made = Path(os.path.abspath(made))
    anchor, times = BEFORE_HYDRA.pop(made, (None, None))
    entries = list(made.iterdir()) if made.is_dir() else []
    if anchor is None or any(entry.name not in REFUSED_LEAVES for entry in entries):
        return  # not claimed, or another process wrote there meanwhile
    if Path.cwd().is_relative_to(made):  # hydra.job.chdir=true
        os.chdir(made.parent)
    for entry in entries:
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    for folder in [made, *made.parents]:
        if folder == anchor:
            os.utime(folder, ns=(times.st_atime_ns, times.st_mtime_ns))
            break
        if folder.is_symlink() or any(folder.iterdir()):
            break
        folder.rmdir()


# The checkpoint conf/callbacks/default.yaml rewrites at every epoch end: what resume= reads.
LAST_IN_RUN = "checkpoints/last.ckpt"


def last_checkpoint(run: Path) -> Path:
    return run / LAST_IN_RUN


def find_run(resume: str, sweep: bool = False) -> Path:
    """The run (with `sweep`: the sweep) directory `resume=` names; `latest`: the newest one
    with a checkpoint (a multirun.yaml) that no other process is writing (names sort by time)."""
    parent, marker = (SWEEPS_DIR, "multirun.yaml") if sweep else (RUNS_DIR, LAST_IN_RUN)
    if resume == "latest":
        for found in sorted((d for d in parent.glob("*") if (d / marker).is_file()), reverse=True):
            if not (holder := run_holder(found)):
                return check_run_files(found.resolve())
            print(f"resume=latest: passing over {found}: {holder} is writing it.", file=sys.stderr)
        raise CheckpointError(
            f"resume=latest: no {'sweep' if sweep else 'run'} under {parent}/ with a {marker} "
            "that no other process is writing."
        )
    run = Path(resume)
    if (run / "optuna.db").is_file() and not (run / "multirun.yaml").is_file():
        raise CheckpointError(  # (Hydra's Optuna sweeper writes no multirun.yaml to re-launch)
            f"resume={resume}: an Optuna search is not re-launched; continue its study in a new "
            "search: mnist-train -m hparams_search=optuna hydra.sweeper.storage="
            f"sqlite:///{printable(run.resolve())}/optuna.db"
        )
    if sweep and not (run / marker).is_file():
        raise CheckpointError(
            f"resume={resume}: not a sweep directory (no multirun.yaml in it). With -m, "
            "resume= names the sweep to re-launch; without -m, a single run."
        )
    if not sweep:
        if not run.is_dir():
            how = " (a file: to start from its weights, give ckpt_path=)" if run.is_file() else ""
            raise CheckpointError(f"resume={resume}: there is no such run directory{how}.")
        if (run / "multirun.yaml").is_file():
            raise CheckpointError(f"resume={resume}: {run} is a sweep; {relaunch(run, resume)}")
        if run_holder(run):  # a live run may have no checkpoint yet: say who is writing it
            lock_run(run, "mnist-train")  # refused, naming the process
        saved_config(run)
        if not (run / marker).is_file():
            raise CheckpointError(
                f"resume={resume}: {run / marker} is missing; the run stopped before its "
                "first checkpoint. Start it again instead."
            )
    return check_run_files(run.resolve())


def job_finished(job_dir: Path, overrides: list[str]) -> bool:
    """Whether a sweep job completed and its launch with `overrides` (a re-launch may raise
    trainer.max_epochs, max_steps) takes it no further (`finished`)."""
    if not completed(job_dir):
        return False
    asked = OmegaConf.create({"trainer": saved_config(job_dir).trainer})
    keys = [f"trainer.{key}" for key in LIMITS]
    asked.merge_with_dotlist([o for o in overrides if o.split("=")[0] in keys])
    return finished(job_dir, asked.trainer) is not None


def results(run: Path) -> dict | None:
    """A finished run's metrics.json, if it holds results (else None: not finished)."""
    metrics = read_json(run / "metrics.json")
    ok = isinstance(metrics, dict) and isinstance(metrics.get("val/acc_best"), int | float)
    return metrics if ok else None


def check_run_files(run: Path) -> Path:
    """`run` if everything in it is a regular file with one name or a directory: a link could
    send a write (train.log, last.ckpt, event files) anywhere, and a FIFO would block the run.
    W&B's link to its own log (`wandb/<run-*>/logs/debug-core.log`) is never written through:
    a resumed W&B run opens a folder of its own."""
    walked = (Path(top) / name for top, dirs, files in os.walk(run) for name in dirs + files)
    for path in [run, *walked]:
        info = path.lstat()
        kind = kind_of(info.st_mode)
        if kind == "a regular file" and info.st_nlink > 1:  # a write would change the others
            kind = f"a file with {info.st_nlink} hard links (a run copied with cp -l?)"
        wandb_log = path.parts[-4::2] == ("wandb", "logs") and path.name == "debug-core.log"
        if kind not in ("a regular file", "a directory", *["a symbolic link"] * wandb_log):
            raise CheckpointError(
                f"resume={run}: {path} is {kind}; a run or sweep directory holds only its own "
                "regular files and directories. Remove it, or start afresh (a single run from "
                "its weights with ckpt_path=<checkpoint>)."
            )
    return run


MAX_CONFIG_BYTES = 1_000_000  # a saved config is a few kilobytes


def read_yaml(path: Path, run: Path) -> Any:
    """A run's or a sweep's YAML file, which someone may have crafted: as data, unresolved."""
    try:
        with open_regular(path) as file:
            text = file.read(MAX_CONFIG_BYTES + 1).decode()
        if len(text) > MAX_CONFIG_BYTES:
            raise ValueError(f"larger than {MAX_CONFIG_BYTES} bytes")
        # Aliases are refused unexpanded: a few hundred bytes of them expand to gigabytes.
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text)):
            raise ValueError("it uses YAML aliases, which mnist-train never writes")
        return OmegaConf.create(text)
    except Exception as e:  # not YAML, not text, or not readable
        reason = one_line(e, 200)
        raise CheckpointError(f"resume={run}: {path} cannot be read ({reason}).") from None


def saved_config(run: Path) -> DictConfig:
    """The config a run was made with (`.hydra/config.yaml`), if it is one."""
    if not (path := run / ".hydra" / "config.yaml").is_file():
        raise CheckpointError(
            f"resume={run}: {path} is missing, so the run's config is unknown. {FROM_WEIGHTS}"
        )
    saved = read_yaml(path, run)
    if not isinstance(saved, DictConfig) or not all(
        isinstance(saved.get(group), DictConfig) for group in ("data", "model", "trainer")
    ):
        raise CheckpointError(
            f"resume={run}: {path} is not a config mnist-train saved (no data, model and "
            f"trainer sections). {FROM_WEIGHTS}"
        )
    return saved


def sweep_overrides(sweep: Path, resume: str) -> list[Override]:
    """The overrides a sweep's command line gave (its multirun.yaml's), `resume=` left out."""
    ran = OmegaConf.to_container(read_yaml(sweep / "multirun.yaml", sweep))
    try:
        task = OverridesParser.create().parse_overrides(ran["hydra"]["overrides"]["task"])
    except Exception:  # not Hydra's record of a command line
        raise CheckpointError(f"resume={resume}: its multirun.yaml has no overrides.") from None
    return [o for o in task if o.key_or_group != "resume"]


def relaunch(sweep: Path, resume: str) -> str:
    given = shlex.join(o.input_line for o in sweep_overrides(sweep, resume))
    return printable(f"re-launch it with: mnist-train -m {given} resume={resume}")


def check_relaunch(overrides: list[str], sweep: Path, resume: str) -> None:
    """A sweep is re-launched with the values it ran with, as written (to Lightning, a limit
    of 1.0 is not 1), else its jobs yet to run would train others; in any order, and
    `RESUMABLE_KEYS` (not swept) may change."""
    given = OverridesParser.create().parse_overrides(overrides)
    swept = ("hydra.sweeper.params", "hydra/sweeper")  # Hydra's keys that choose the jobs
    ran, now = (
        {
            (o.get_key_element(), str(o.value())): o.input_line
            for o in overrides
            if (not o.is_hydra_override() or o.key_or_group.startswith(swept))
            and (o.key_or_group not in (*RESUMABLE_KEYS, "resume") or o.is_sweep_override())
        }
        for overrides in (sweep_overrides(sweep, resume), given)
    )
    if ran.keys() != now.keys():
        old, new = (
            ", ".join(v for k, v in a.items() if k not in b) for a, b in ((ran, now), (now, ran))
        )
        said = " and ".join(
            filter(None, [old and f"with {printable(old)}", new and f"without {new}"])
        )
        raise ConfigError(
            f"resume={resume}: a sweep is re-launched with the values it ran with, and it ran "
            f"{said}; {relaunch(sweep, resume)}, or start a new sweep."
        )


# The classes a node that only the saved config has may name: the callbacks docs/lightning.md
# adds with `+callbacks.x=` and Lightning's file loggers, each writing only where
# `check_writes_inside` looks and talking to no one; MLflow and W&B only as `logger.<name>`,
# where conf/logger/'s own replace them (`trackers_as_configured`). Any other class, even one
# of Lightning's (SpikeDetection writes where it is told, CometLogger calls a server), is
# named on the resuming command line.
ADDABLE = {
    *(
        f"lightning.pytorch.callbacks.{name}"
        for name in "BatchSizeFinder EarlyStopping LearningRateFinder "  # noqa: SIM905
        "LearningRateMonitor ModelCheckpoint ModelSummary OnExceptionCheckpoint RichModelSummary "
        "RichProgressBar StochasticWeightAveraging TQDMProgressBar Timer".split()
    ),
    "lightning.pytorch.loggers.CSVLogger",
    "lightning.pytorch.loggers.TensorBoardLogger",
    "lightning.pytorch.strategies.DDPStrategy",  # trainer=ddp_cpu's
}
NOT_CODE = "a run directory may choose values, not code"


def check_saved_config(saved: dict, composed: DictConfig, run: Path) -> None:
    """A saved config (resolved: `${oc.create:...}` can make a node) chooses values, not code:
    a node the command's own config (`composed`) has takes its class from there if it is the
    same by name (it may have moved since); a node only the run has must name one of `ADDABLE`."""
    for key, name, value in nodes(saved):  # a node comes before what it holds
        live = isinstance(value, str) and "${" in value  # escaped, made live again later
        if live or name in ("_args_", "_partial_"):  # (they hide arguments)
            how = ", which mnist-train's configs never use"
            how = f" to {value[:60]!r}, an interpolation after resolving" if live else how
            raise ConfigError(f"resume={run}: its .hydra/config.yaml sets {key}{how}; {NOT_CODE}.")
        if not isinstance(value, dict) or "_target_" not in value:
            continue
        target = str(value["_target_"])
        try:
            mine = OmegaConf.select(composed, f"{key}._target_", default=None)
        except Exception:  # the command's config has a value of another kind there
            mine = None
        tracker = target in EXTRAS and re.fullmatch(r"logger\.\w+", key)
        if isinstance(mine, str) and mine.rpartition(".")[2] == target.rpartition(".")[2]:
            value["_target_"] = mine
        elif mine is not None or not (target in ADDABLE or tracker):
            conf = f"where conf/ has {mine}" if isinstance(mine, str) else "which conf/ lacks"
            raise ConfigError(
                f"resume={run}: its .hydra/config.yaml sets {key}._target_={target!r:.80}, "
                f"{conf}; {NOT_CODE}. If you trust it, name it on the command line: "
                f"{'' if mine else '+'}{key}._target_={target:.80}"
            )


def resumed_config(cfg: DictConfig) -> DictConfig:
    """The resumed run's saved config with the command line's overrides that leave what it
    computes unchanged: `RESUMABLE_KEYS`, or a value equal to the saved one."""
    run = Path(cfg.paths.output_dir)
    saved = saved_config(run)
    for override in OverridesParser.create().parse_overrides(HydraConfig.get().overrides.task):
        key = override.key_or_group
        if key == "resume" or OmegaConf.select(cfg, key) == OmegaConf.select(saved, key):
            continue
        if key not in RESUMABLE_KEYS:
            raise ConfigError(
                f"resume= continues a run with its own config, and {key} would change what it "
                f"computes. Only these may change on resume: {', '.join(RESUMABLE_KEYS)}. "
                + FROM_WEIGHTS
            )
        OmegaConf.update(saved, key, OmegaConf.select(cfg, key), force_add=True)
    saved.paths = cfg.paths  # where the data and the outputs live: the command line's choice
    saved.data.data_dir = cfg.data.data_dir
    try:  # resolved once and used as checked: no interpolation is left to make anything later
        resolved = OmegaConf.to_container(saved, resolve=True)
    except Exception as e:  # an interpolation that does not resolve
        raise CheckpointError(
            f"resume={run}: {run}/.hydra/config.yaml cannot be read ({one_line(e, 200)})."
        ) from None
    check_saved_config(resolved, cfg, run)
    resumed = OmegaConf.create(resolved)
    trackers_as_configured(resumed)
    resumed.resume = str(run)
    resumed.ckpt_path = None
    return resumed


def trackers_as_configured(resumed: DictConfig) -> None:
    """Each MLflow or W&B logger of a resumed run (its classes settled: `check_saved_config`)
    replaced by conf/logger/'s own: where a tracker writes is the command's choice, never the
    run directory's (a crafted one could send the W&B API key to a server of its choosing)."""
    for name, node in list((resumed.get("logger") or {}).items()):
        kind = EXTRAS.get(str(node.get("_target_"))) if isinstance(node, DictConfig) else None
        if kind is not None:
            resumed.logger[name] = OmegaConf.load(Path(CONFIG_DIR, "logger", f"{kind}.yaml"))[kind]


def check_writes_inside(trainer: L.Trainer, run: Path) -> None:
    """What the run's Trainer, callbacks and loggers write, as built, is inside `run` (a
    resumed run's config, a checkpoint's `filename`, a logger's `version` can lead out of it)."""
    places = [("trainer.default_root_dir", trainer.default_root_dir)]  # (a name may repeat)
    for callback in trainer.callbacks:
        name, filename = type(callback).__name__, getattr(callback, "filename", None)
        if isinstance(callback, GracefulInterrupt):
            places.append((name, callback.last))
        elif getattr(callback, "dirpath", None) is not None:  # "": where the command runs
            name += f"(filename={filename!r})" if isinstance(filename, str) else ""
            places.append((name, os.path.join(callback.dirpath, f"{filename or 'epoch'}.ckpt")))
        # (Where a checkpoint lands is checked again as it is written: AtomicCheckpointIO.)
        # Lightning formats a file name with str.format: a field may name a metric and its
        # number format, not an attribute, an item, a nested field or a fill (`{epoch:/^3}`).
        field = r"\{[\w/-]+(:[\w.+-]*)?\}"
        if isinstance(filename, str) and not re.fullmatch(rf"([^{{}}]|{field})*", filename):
            raise ConfigError(
                f"{type(callback).__name__}'s file name {filename[:60]!r}: a field of it may "
                "name a metric and a number format only."
            )
    for logger in trainer.loggers:  # MLflow's store is the command's (trackers_as_configured)
        if not isinstance(logger, MLFlowLogger):
            for place in (getattr(logger, "root_dir", None), logger.log_dir, logger.save_dir):
                places.append((type(logger).__name__, place or run))
    if getattr(trainer.profiler, "dirpath", None):
        places.append((type(trainer.profiler).__name__, trainer.profiler.dirpath))
    for what, place in places:
        if not Path(os.path.expanduser(str(place))).resolve().is_relative_to(run.resolve()):
            raise ConfigError(
                f"{what} would write to {place}, outside the run {run}: a run writes only into "
                "its own directory."
            )


class GracefulInterrupt(L.Callback):
    """Ctrl-C, SIGTERM and submitit's SIGUSR2 before a SLURM time limit stop training after a
    step or at an epoch's end, never within a validation, and save `last.ckpt` there, so a
    resumed run continues exactly. (Lightning alone stops Ctrl-C mid-step and SIGTERM
    mid-validation; its `OnExceptionCheckpoint` saves on any exception, mid-step, over the last
    good state.) `hand_back` gives submitit its signal once the checkpoint is saved."""

    def __init__(self, dirpath: str) -> None:
        self.last = Path(dirpath) / "last.ckpt"
        self._previous: dict[int, Any] = {}
        self._stop: Any = None
        self.signal: int | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size > 1:
            # Lightning's SIGTERM handler talks to the other processes from inside the signal
            # handler and can deadlock when every process gets the signal at once, as they all
            # do on Ctrl-C. So under DDP, Ctrl-C stays Lightning's plain KeyboardInterrupt: it
            # stops every process, and resume= continues from the last checkpoint written.
            return
        # Lightning's SIGTERM handler, installed when fit started: the loops stop once it ran.
        self._stop = signal.getsignal(signal.SIGTERM)
        signals = [signal.SIGINT, signal.SIGTERM]
        if callable(signal.getsignal(signal.SIGUSR2)):  # submitit's: requeue the job
            signals.append(signal.SIGUSR2)
        self._previous = {signum: signal.signal(signum, self._note) for signum in signals}

    def _note(self, signum: int, frame: Any) -> None:
        self.signal = signum  # acted on after the step, or at the epoch's end

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        if i + 1 < trainer.num_training_batches:  # after an epoch's last one, validation runs
            self.on_train_epoch_end(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.signal is not None and self._stop is not None:
            self._stop(self.signal, None)
            self._stop = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self.on_train_end(trainer, pl_module)
        fitting = trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
        if isinstance(exception, SIGTERMException) and fitting:
            trainer.save_checkpoint(self.last, weights_only=False)
            name = signal.Signals(self.signal or signal.SIGTERM).name
            log.info("%s: stopped after step %d, saved %s", name, trainer.global_step, self.last)

    def hand_back(self) -> None:
        """After the save: if the scheduler's signal stopped training, call the handler it was
        meant for (submitit's, which requeues the job and exits, or says why it cannot)."""
        if self.signal != signal.SIGUSR2:
            return
        try:
            signal.getsignal(signal.SIGUSR2)(signal.SIGUSR2, None)
        except RuntimeError as e:  # submitit's UncompletedJobError: out of requeues
            raise UserError(
                f"Stopped at its time limit and not requeued ({one_line(e)}). {self.last} is "
                "saved: relaunch the sweep with resume=<sweep dir> to continue it."
            ) from None
