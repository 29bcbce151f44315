"""A user's world (data, a finished run, pictures) and a command's console entry run in it in
the test process, with a snapshot of everything in it before and after: a refused command
changes nothing that existed (test_bad_input.py, test_trust.py; as processes: test_train.py)."""

import os
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.hydra_jobs import run_console
from tests.helpers.synthetic import write_mnist

Entry = tuple[str, int, int]  # by lstat: `ls -l`'s kind letter (and a link's target), size, mtime


def snapshot(root: Path, directory_times: bool = False) -> dict[Path, Entry]:
    """Every entry under `root`, by lstat (nothing opened or followed); a directory's size and
    times, which change when an entry comes or goes even for a moment, with `directory_times`."""
    entries = {}
    for path in root.rglob("*"):
        st = path.lstat()
        target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
        entries[path] = (f"{stat.filemode(st.st_mode)[0]}{target}", st.st_size, st.st_mtime_ns)
        if stat.S_ISDIR(st.st_mode) and not directory_times:
            entries[path] = ("d", 0, 0)
    return entries


def make_world(directory: Path, trained_run: Path) -> Path:
    """A data directory, a finished run and a folder of pictures, as a user would have."""
    write_mnist(directory / "data", train=300, test=50)
    shutil.copytree(trained_run, directory / "run")
    (directory / "pictures").mkdir()
    return directory


def last_ckpt(w: Path) -> str:
    return str(w / "run" / "checkpoints" / "last.ckpt")


@dataclass
class Outcome:
    done: subprocess.CompletedProcess
    before: dict[Path, Entry]
    after: dict[Path, Entry]


@dataclass
class Command:
    """`mnist-<module> args...` as a user runs it in `world`, on the data in `world/data`,
    with `env` added to the environment."""

    module: str
    args: list[str]
    world: Path
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: int = 120
    memory_gib: float | None = None  # more address space than the tests use, at most


def run_in_world(command: Command, directory_times: bool = False) -> Outcome:
    """`command` in its world, with snapshots before and after."""
    before = snapshot(command.world, directory_times)
    env = {"MNIST_DATA_DIR": str(command.world / "data"), **command.env}
    done = run_console(
        command.module, command.args, command.world, env, command.timeout_s, command.memory_gib
    )
    return Outcome(done, before, snapshot(command.world, directory_times))
