"""A user's world (data, a finished run, pictures), a command run in it, and snapshots of
everything in it before and after: a refused command changes nothing that existed."""

import fcntl
import os
import shutil
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

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


def unix_socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))  # the socket file stays when the socket is closed


def make_world(directory: Path, trained_run: Path) -> Path:
    """A data directory, a finished run and a folder with a picture of a 1, as a user would have."""
    write_mnist(directory / "data", train=300, test=50)
    shutil.copytree(trained_run, directory / "run")
    (directory / "pictures").mkdir()
    drawn = Image.new("L", (64, 64), 255)
    ImageDraw.Draw(drawn).line((32, 8, 32, 56), fill=0, width=6)
    drawn.save(directory / "pictures" / "one.png")
    return directory


def hold_lock(run: Path) -> int:
    """The run's lock as another mnist-train process holds it (until closed: it died)."""
    fd = os.open(run / ".lock", os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    os.write(fd, b"process 4242 (mnist-train)")
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def last_ckpt(w: Path) -> str:
    return str(w / "run" / "checkpoints" / "last.ckpt")


def run_in_world(
    module: str, args: list[str], world: Path, env: dict | None = None, **options: Any
) -> tuple[subprocess.CompletedProcess, dict[Path, Entry], dict[Path, Entry]]:
    """`mnist-<module> args...` run in `world` on `world/data`: what it did, and snapshots before
    and after (`options`: the snapshots' directory_times, run_console's timeout_s, memory_gib)."""
    times = options.pop("directory_times", False)
    before = snapshot(world, times)
    done = run_console(
        module, args, world, {"MNIST_DATA_DIR": str(world / "data"), **(env or {})}, **options
    )
    return done, before, snapshot(world, times)
