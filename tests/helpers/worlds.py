"""A user's world (data, a finished run, pictures), a snapshot of everything in it, and a
command run in it, with snapshots before and after.

test_bad_input.py and test_trust.py check one promise: a refused command changes nothing that
existed. `run_in_world` snapshots the world, runs the command's console entry in the test process
(tests/helpers/hydra_jobs.py), and snapshots it again; test_train.py checks the same contract on
real processes.
"""

import os
import shutil
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.hydra_jobs import run_console
from tests.helpers.synthetic import write_mnist

# What a path was, by lstat: its kind (`ls -l`'s first letter, then a link's target), its size
# and its modification time.
Entry = tuple[str, int, int]


def snapshot(root: Path, directory_times: bool = False) -> dict[Path, Entry]:
    """Every entry under `root`, by lstat (nothing opened or followed). A directory's size and
    times change when an entry comes or goes, even for a moment: compared only with
    `directory_times`."""
    entries = {}
    for path in root.rglob("*"):
        st = path.lstat()
        if stat.S_ISDIR(st.st_mode) and not directory_times:
            entries[path] = ("d", 0, 0)
            continue
        target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
        entries[path] = (f"{stat.filemode(st.st_mode)[0]}{target}", st.st_size, st.st_mtime_ns)
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
    world: Path
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
    """`command` in its world, snapshot before and after (with `directory_times`: see
    `snapshot`)."""
    before = snapshot(command.world, directory_times)
    env = {"MNIST_DATA_DIR": str(command.world / "data"), **command.env}
    done = run_console(
        command.module, command.args, command.world, env, command.timeout_s, command.memory_gib
    )
    return Outcome(command.world, done, before, snapshot(command.world, directory_times))
