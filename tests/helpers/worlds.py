"""A user's world (data, a finished run, pictures), a snapshot of everything in it, and the
runner that takes a test module's cases through their commands in worlds of their own.

test_bad_input.py, test_tool_arguments.py, test_special_files.py and test_trust.py check the
same promise: a refused command changes nothing that existed. Each case there sets up its
world, and the runner snapshots it, runs the command, and snapshots it again.
"""

import os
import re
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.commands import TIMEOUT_S, cli_env
from tests.helpers.preloaded import CommandServers
from tests.helpers.synthetic import write_mnist

# What a path was, by lstat: its kind (`ls -l`'s first letter, then a link's target), its size
# and its modification time.
Entry = tuple[str, int, int]


def snapshot(root: Path, directory_times: bool = False) -> dict[Path, Entry]:
    """Every entry under `root`, by lstat: a link or a FIFO is recorded as what it is, and
    nothing is opened or followed. A directory is recorded as one, and with `directory_times`
    by its size and times too, which change when an entry is added to it or removed, even for
    a moment (as the data directory's download lock is, by every command that reads the data).
    A run's `.lock` is left out: every command that may write the run takes it, and writes
    its own process id into it."""
    entries = {}
    for path in root.rglob("*"):
        if path.name == ".lock":
            continue
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
    """`python -m mnist_lightning.cli.<module> args...` as a user runs it in `world`: there,
    on the data in `world/data`, with `env` added to the test's environment."""

    module: str
    args: list[str]
    world: Path
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float = TIMEOUT_S
    memory_limit_kib: int | None = None  # as `ulimit -v`


# prepare(case, world): sets up an empty `world` folder for `case` and returns the command to
# run in it.
Prepare = Callable[[str, Path], Command]


def selected_cases(request: pytest.FixtureRequest, tests: Iterable[str]) -> list[str]:
    """The `case` parameters of the collected items of `tests` in the requesting module."""
    names = set(tests)
    return [
        item.callspec.params["case"]
        for item in request.session.items
        if item.originalname in names and item.module is request.module
    ]


def run_cases(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    tests: Iterable[str],
    prepare: Prepare,
    directory_times: bool = False,
) -> dict[str, Outcome]:
    """Every case the module's `tests` were selected with, each in a world of its own, two at
    a time (a command's process is busy on one core). The commands are forked from processes
    that imported them once (tests/helpers/preloaded.py), which saves each ~6 s of imports.
    The world is snapshot before and after the command (with `directory_times`: see
    `snapshot`)."""
    servers: CommandServers = request.getfixturevalue("command_servers")

    def run(case: str) -> Outcome:
        world = tmp_path_factory.mktemp(re.sub(r"\W+", "-", case))
        command = prepare(case, world)
        before = snapshot(world, directory_times)
        with servers.server() as server:
            done = server.run(
                command.module,
                command.args,
                command.world,
                cli_env(command.world / "data", command.env),
                command.timeout_s,
                command.memory_limit_kib,
            )
        return Outcome(world, done, before, snapshot(world, directory_times))

    selected = selected_cases(request, tests)
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(selected, pool.map(run, selected), strict=True))
