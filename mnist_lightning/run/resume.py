"""`resume=<run_dir>`: continue a run in its own directory, with its own config.

The run directory is chosen while Hydra composes the config (the `run_dir` resolver), so
Hydra logs into the resumed run instead of a new one; Hydra's own copy of the config is not
written again (`hydra_output_subdir`), so `.hydra/config.yaml` stays the run's original. All
checks happen before anything is written: a failed resume leaves the directory as it was.

A run directory is data someone may have handed you, never code: its saved config may choose
values, but it may name only the classes this project and Lightning provide for its config
groups (`check_saved_config`), and only places inside the run to write to. Its files must be
regular files and directories (no links out of it, no FIFOs), and one process at a time
writes it (`files.lock_run`); `resume=latest` passes over a run another process is writing.
"""

import importlib
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from mnist_lightning.errors import CheckpointError, ConfigError
from mnist_lightning.files import kind_of, lock_run, open_regular, run_holder

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
    """The run directory `resume=` names (`latest`: the newest run with a checkpoint that no
    other process is writing)."""
    if resume == "latest":
        return check_run_files(newest_free(RUNS_DIR, "*/checkpoints/last.ckpt", 2, "run"))
    run = Path(resume)
    if not run.is_dir():
        raise CheckpointError(f"resume={resume}: there is no such run directory.")
    if run_holder(run):  # a live run may have no checkpoint yet: say who is writing it
        lock_run(run, "mnist-train")  # raises RunBusyError naming the process
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
    saved_config(run)
    return check_run_files(run.resolve())


def check_run_files(run: Path) -> Path:
    """`run` if everything in it is a regular file or a directory of its own: a link could send
    a write (train.log, last.ckpt, event files) anywhere, and a FIFO would block the run."""
    for path in [run, *walk(run)]:
        info = path.lstat()
        kind = kind_of(info.st_mode)
        if kind == "a regular file" and info.st_nlink > 1:  # a write would change the others
            kind = f"a file with {info.st_nlink} hard links (a run copied with cp -l?)"
        if kind not in ("a regular file", "a directory"):
            raise CheckpointError(
                f"resume={run}: {path} is {kind}; a run or sweep directory holds only its own "
                "regular files and directories. Remove it, or start afresh (a single run from "
                "its weights with ckpt_path=<checkpoint>)."
            )
    return run


def newest_free(parent: Path, pattern: str, up: int, noun: str) -> Path:
    """For `resume=latest`: the newest directory under `parent` holding `pattern` (its file is
    `up` levels below it) that no other process is writing. Names start with the start time,
    so they sort by it."""
    for found in sorted((p.parents[up - 1] for p in parent.glob(pattern)), reverse=True):
        holder = run_holder(found)
        if holder is None:
            return found.resolve()
        print(f"resume=latest: passing over {found}: {holder} is writing it.", file=sys.stderr)
    raise CheckpointError(
        f"resume=latest: no {noun} under {parent}/ that no other process is writing ({pattern})."
    )


def find_sweep(resume: str) -> Path:
    """The sweep directory `resume=` names in a multirun (`latest`: the newest sweep)."""
    if resume == "latest":
        return check_run_files(newest_free(SWEEPS_DIR, "*/multirun.yaml", 1, "sweep"))
    sweep = Path(resume)
    if not (sweep / "multirun.yaml").is_file():
        raise CheckpointError(
            f"resume={resume}: not a sweep directory (no multirun.yaml in it). With -m, "
            "resume= names the sweep to re-launch; without -m, a single run."
        )
    return check_run_files(sweep.resolve())


def job_finished(job_dir: Path) -> bool:
    """Whether a sweep job already completed (its status and its results are written)."""
    try:
        status = json.loads((job_dir / "job_status.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(status, dict) and status.get("status") == "completed" and bool(results(job_dir))
    )


def results(run: Path) -> dict | None:
    """A finished run's metrics.json, if it holds results (else None: not finished)."""
    try:
        metrics = json.loads((run / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(metrics, dict) and isinstance(metrics.get("val/acc_best"), int | float)
    return metrics if ok else None


def saved_config(run: Path) -> DictConfig:
    """The config a run was made with (`.hydra/config.yaml`), if it is one."""
    path = run / ".hydra" / "config.yaml"
    try:
        with open_regular(path) as file:
            text = file.read(MAX_CONFIG_BYTES + 1).decode()
        if len(text) > MAX_CONFIG_BYTES:
            raise ValueError(f"larger than {MAX_CONFIG_BYTES} bytes")
        # Aliases are refused unexpanded: a few hundred bytes of them expand to gigabytes.
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text)):
            raise ValueError("it uses YAML aliases, which mnist-train never writes")
        saved = OmegaConf.create(text)
    except Exception as e:  # not YAML, not text, or not readable
        reason = " ".join(str(e).split())[:200]
        raise CheckpointError(f"resume={run}: {path} cannot be read ({reason}).") from None
    if not isinstance(saved, DictConfig) or not all(
        isinstance(saved.get(group), DictConfig) for group in ("data", "model", "trainer")
    ):
        raise CheckpointError(
            f"resume={run}: {path} is not a config mnist-train saved (no data, model and "
            "trainer sections). Start a new run from its weights with ckpt_path=<checkpoint>."
        )
    return saved


def walk(top: Path) -> Iterator[Path]:
    """Everything under `top`, links not followed."""
    for folder, dirs, files in os.walk(top):
        yield from (Path(folder) / name for name in sorted(dirs + files))


MAX_CONFIG_BYTES = 1_000_000  # a saved config is a few kilobytes

# What a saved config may instantiate without the command line naming it: this project's
# classes and Lightning's public callbacks, loggers, profilers and strategies (the config
# groups' own kinds), the Trainer, and the time interval of the periodic checkpoint.
TRUSTED_MODULES = (
    "lightning.pytorch.callbacks",
    "lightning.pytorch.loggers",
    "lightning.pytorch.profilers",
    "lightning.pytorch.strategies",
)
TRUSTED_TARGETS = ("lightning.pytorch.Trainer", "lightning.Trainer", "datetime.timedelta")
# Config keys that name where a callback, logger or the Trainer writes.
WRITE_KEYS = ("dirpath", "save_dir", "default_root_dir")


def trusted_target(target: object) -> bool:
    """Whether `target` names a class of a trusted module by its public name (not, say,
    `lightning.pytorch.callbacks.model_checkpoint.os.system`)."""
    if not isinstance(target, str):
        return False
    if target in TRUSTED_TARGETS:
        return True
    module_name, _, name = target.rpartition(".")
    if module_name in TRUSTED_MODULES:
        return name in importlib.import_module(module_name).__all__
    if re.fullmatch(r"mnist_lightning(\.\w+)+", module_name):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return False
        found = getattr(module, name, None)
        if not isinstance(found, type) or not found.__module__.startswith("mnist_lightning."):
            return False
        return found.__module__ == module_name or name in getattr(module, "__all__", ())
    return False


def nodes(tree: object, key: str = "") -> Iterator[tuple[str, object, object]]:
    """`(dotted key, name, value)` of every node of a plain config tree."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return
    for name, value in items:
        path = f"{key}.{name}" if key else str(name)
        yield path, name, value
        yield from nodes(value, path)


def check_saved_config(saved: dict, composed: DictConfig, run: Path) -> None:
    """Refuse a saved config (resolved: an interpolation such as `${oc.create:...}` can make a
    node) that names code or a place outside the run (module docstring). A target the command
    line's own config names (`composed`: conf/ and the overrides given) is the user's choice,
    so a run made with a callback of one's own resumes when the command repeats it
    (`+callbacks.mine._target_=my_module.Mine`)."""
    chosen = {value for _, name, value in nodes(to_tree(composed)) if name == "_target_"}
    for key, name, target in nodes(saved):
        if name in ("_args_", "_partial_"):  # our configs never use them; they hide arguments
            raise ConfigError(
                f"resume={run}: its .hydra/config.yaml sets {key}, which mnist-train's configs "
                "never use; a run directory may choose values by name only."
            )
        if name == "_target_" and target not in chosen and not trusted_target(target):
            raise ConfigError(
                f"resume={run}: its .hydra/config.yaml sets {key}={target!r}, which is not a "
                "class of mnist_lightning or one of Lightning's callbacks, loggers, profilers "
                "or strategies; a run directory may choose values, not code. If you trust it, "
                f"name it on the command line: +{key}={target}"
            )
    for key, name, place in nodes(saved):
        if name in WRITE_KEYS and not Path(str(place)).resolve().is_relative_to(run.resolve()):
            raise ConfigError(
                f"resume={run}: its .hydra/config.yaml sets {key}={place!r}, outside the run; "
                "a resumed run writes only into its own directory."
            )


def to_tree(cfg: DictConfig, resolve: bool = False) -> object:
    try:
        return OmegaConf.to_container(cfg, resolve=resolve)
    except Exception as e:  # an interpolation that does not resolve
        raise ConfigError(f"The resumed run's config cannot be read: {e}") from None


# Classes that moved since a run saved its config (the package got its folders).
MOVED_TARGETS = {
    "mnist_lightning.resume.GracefulInterrupt": "mnist_lightning.run.resume.GracefulInterrupt"
}


def renamed_targets(tree: object) -> object:
    """`tree` with each `_target_` that names a moved class naming it where it is now."""
    if isinstance(tree, dict):
        return {
            k: MOVED_TARGETS.get(v, v) if k == "_target_" else renamed_targets(v)
            for k, v in tree.items()
        }
    if isinstance(tree, list):
        return [renamed_targets(v) for v in tree]
    return tree


def resumed_config(cfg: DictConfig) -> DictConfig:
    """The resumed run's saved config, with the command line's harmless overrides applied.

    An override is accepted if it leaves what the run computes unchanged: one of
    `RESUMABLE_KEYS`, or a value equal to the saved one (as in a re-launched sweep).
    """
    run = Path(cfg.paths.output_dir)
    saved = saved_config(run)
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
    saved.paths = cfg.paths  # where the data and the outputs live: the command line's choice
    # Resolved once and used as checked: no interpolation is left to make anything later.
    resolved = renamed_targets(to_tree(saved, resolve=True))
    check_saved_config(resolved, cfg, run)
    resumed = OmegaConf.create(resolved)
    resumed.resume = str(run)
    resumed.ckpt_path = None
    return resumed


def check_writes_inside(trainer: L.Trainer, run: Path) -> None:
    """What the resumed run's callbacks, loggers and Trainer will write, as built (a
    checkpoint's `filename`, a logger's `version` can lead out of a directory): all in `run`."""
    places = {"trainer.default_root_dir": trainer.default_root_dir}
    for callback in trainer.callbacks:
        name = type(callback).__name__
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            filename = f"{callback.filename or 'epoch'}{callback.FILE_EXTENSION}"
            places[f"{name}(filename={callback.filename!r})"] = f"{callback.dirpath}/{filename}"
        elif getattr(callback, "dirpath", None):
            places[name] = callback.dirpath
        if isinstance(callback, GracefulInterrupt):
            places[name] = callback.last
    for logger in trainer.loggers:
        places[type(logger).__name__] = logger.log_dir or logger.save_dir or run
    if getattr(trainer.profiler, "dirpath", None):
        places[type(trainer.profiler).__name__] = trainer.profiler.dirpath
    for what, place in places.items():
        if not Path(os.path.expanduser(str(place))).resolve().is_relative_to(run.resolve()):
            raise ConfigError(
                f"resume={run}: its config makes {what} write to {place}, outside the run; a "
                "resumed run writes only into its own directory."
            )


def finished(resumed: DictConfig, run: Path) -> dict | None:
    """The results of `run` if it already ended and the command does not extend it: resuming
    would only test it again and rewrite them."""
    saved = saved_config(run).trainer
    extended = any(resumed.trainer.get(k) != saved.get(k) for k in ("max_epochs", "max_steps"))
    return None if extended else results(run)


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
