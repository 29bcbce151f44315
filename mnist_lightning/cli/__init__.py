"""The console commands, one module each, and what they share: the one way a command fails on
bad input; the checkpoint commands' device, test images, and refusal to write over others'."""

import os
import signal
import sys
import threading

# Ctrl-C while torch and Lightning load (seconds) ends a command quietly, not with a traceback
# from inside an import: in a command (`mnist-*`, `python -m`) only, not when the package is
# imported (pytest), and over Python's own handler only (SIG_IGN under nohup stays).
COMMAND = os.path.basename(sys.argv[0]).startswith("mnist-") or sys.argv[0] == "-m"
LOADING = COMMAND and threading.current_thread() is threading.main_thread()
LOADING = LOADING and signal.getsignal(signal.SIGINT) is signal.default_int_handler
if LOADING:
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))

import contextlib
import functools
import logging
import mmap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig

from mnist_lightning.data.datamodule import load_pair, trained_on
from mnist_lightning.data.datasets import DataSet, ensure_mnist
from mnist_lightning.errors import ConfigError, TrainingFailedError, UserError
from mnist_lightning.files import check_place, check_writable, open_regular, to_run_log
from mnist_lightning.model.classifier import MNISTClassifier
from mnist_lightning.run.checkpoint import load_classifier
from mnist_lightning.run.config import CONFIG_DIR, check_command_line, check_value
from mnist_lightning.run.resume import refuse
from mnist_lightning.run.sweep import record_failure, sweep_job
from mnist_lightning.run.trainer import accelerator_available

log = logging.getLogger(__name__)
if LOADING:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def exit_on_user_error(task: Callable[..., Any]) -> Callable[..., Any]:
    """Print a `UserError` as one paragraph and exit with status 2, instead of a traceback. In
    a Hydra multirun the job is recorded as failed (the sweep's summary lists it, its exit
    status is 1) and returns None, which Optuna records as a failed trial (NaN would stop the
    whole search: hydra-optuna-sweeper 1.x calls `study.tell` twice)."""

    @functools.wraps(task)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return task(*args, **kwargs)
        except UserError as e:
            if sweep_job():
                record_failure(str(e))  # logged, in the job's train.log too
                return None
            if not isinstance(e, TrainingFailedError):  # refused: nothing done
                refuse(str(e))
            to_run_log(log, f"Error: {e}", logging.ERROR)  # the run's log says why it stopped
            print(f"Error: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:  # before Lightning's fit (GracefulInterrupt), or in a tool
            refuse(status=130)  # quietly, as while torch loads
        except BrokenPipeError:  # `mnist-train --help | head`: the reader left (Python's advice)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)

    return wrapper


def command(name: str) -> Callable[[Callable[[DictConfig], None]], Callable[..., None]]:
    """mnist-<name>'s Hydra `main` (conf/<name>.yaml; it makes no run directory). As the console
    script, called without a config, its keys and the directories its command line asks Hydra
    to make are checked before Hydra makes them."""

    def decorate(task: Callable[[DictConfig], None]) -> Callable[..., None]:
        hydra_main = hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=name)
        run = hydra_main(exit_on_user_error(task))

        @exit_on_user_error
        @functools.wraps(task)
        def main(cfg: DictConfig | None = None) -> None:
            if cfg is None:
                check_command_line(sys.argv[1:], name)
            run(cfg)

        return main

    return decorate


def open_checkpoint(ckpt: Path, device: str) -> tuple[MNISTClassifier, dict[str, Any], DataSet]:
    """The classifier in `ckpt` on `device`, the checkpoint, and the data set it learned."""
    model, checkpoint = load_classifier(ckpt, pick_device(device))
    return model, checkpoint, trained_on(checkpoint, ckpt)


def held_out(cfg: DictConfig, dataset: DataSet) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images and labels of `dataset`: what mnist-eval and mnist-export check on."""
    check_value("data_source", cfg.data_source, dataset.sources)  # now that it is known
    return load_pair(ensure_mnist(cfg.data_dir, cfg.data_source, dataset.name), "t10k")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = next((kind for kind in ("mps", "cuda") if accelerator_available(kind)), "cpu")
    elif not accelerator_available(name):
        raise ConfigError(f"device={name}: this machine has no {name} device; use device=cpu.")
    return torch.device(name)


def carries(path: Path, mark: tuple[bytes, bytes]) -> bool:
    """Whether `path` is a regular file of a format (magic bytes `mark[0]`) holding `mark[1]`."""
    try:
        with open_regular(path) as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            return m[: len(mark[0])] == mark[0] and m.find(mark[1]) >= 0
    except (OSError, ValueError):  # not a regular file, or an empty one (no mmap): not ours
        return False


def png_mark(software: str) -> tuple[bytes, bytes]:
    """What `carries` finds in a PNG a command wrote: the magic bytes, a `Software` text chunk."""
    text = b"Software\0" + software.encode()
    return b"\x89PNG", len(text).to_bytes(4, "big") + b"tEXt" + text


def check_overwrite(
    path: Path,
    key: str,
    inputs: dict[Path, str],
    tool: str,
    mark: Callable[[Path], bool],
    what: str,
) -> None:
    """Before any work, creating nothing: the file `path` that `tool` writes is none of its
    `inputs` (how it stands to each, in words) and in none of them, and is absent or a file
    `tool` wrote (`mark`: `what`), in a folder that takes a file: replacing it loses nothing."""
    for item, relation in inputs.items():
        try:
            same = os.path.samefile(path, item)  # a hard or symbolic link to it, too
        except OSError:  # one of them does not exist (yet): by name, below
            same = False
        real = os.path.realpath(item)
        if same or os.path.commonpath([os.path.realpath(path), real]) == real:
            raise ConfigError(
                f"{key} {relation}; {tool} never writes over its inputs: choose another "
                f"{key.split('=')[0]}=."
            )
    if check_place(path, key) and not mark(path):
        raise ConfigError(f"{key} exists and is not {what}; choose another path or delete it.")
    check_writable(path.absolute().parent, key)


@contextlib.contextmanager
def writing(what: str) -> Iterator[None]:
    """A write that fails (a full disk, a quota, a folder gone) ends the command in one line
    naming the file; atomic writes leave each file there the old one or the new."""
    try:
        yield
    except OSError as e:
        raise UserError(f"Cannot write {what}: {e.strerror or e} ({e.filename or what}).") from None
