"""Files as they really are: written atomically, read only when regular, one writer per run.

Atomic writes go to a temporary file in the destination's folder, renamed over it: a kill or a
full disk mid-write leaves the previous file whole. (Lightning's atomic save writes through
$TMPDIR: across file systems, as to a cluster's run directory, a plain copy.) Data is read only
from regular files: a FIFO would block, a link to /dev/zero fill the memory. A run's one writer
holds its `.lock`, an `fcntl` lock the kernel frees however the process dies.
"""

import contextlib
import errno
import fcntl
import json
import logging
import os
import sqlite3
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

from mnist_lightning.errors import ConfigError, UserError, printable

LOCK_NAME = ".lock"
# Run directory -> (descriptor, for the life of the process; its lock file as this process
# found it: text, access and modification times, or None if it made the file).
_held_locks: dict[Path, tuple[int, tuple[bytes, int, int] | None]] = {}


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file that replaces `path` only when the `with` block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the result is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Strict JSON: a NaN or infinite number is written as null (Python's `NaN` is not JSON)."""
    strict = json.loads(json.dumps(obj), parse_constant=lambda _: None)  # NaN read back as null
    with atomic_open(path, "w") as f:
        json.dump(strict, f, indent=2, sort_keys=True, allow_nan=False)
        f.write("\n")


def read_json(path: Path) -> Any:
    """The JSON in `path`; None if there is none (missing, unreadable, or not JSON)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


KINDS = {
    stat.S_IFREG: "a regular file",
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFLNK: "a symbolic link",
}


def kind_of(mode: int) -> str:
    """What a `st_mode` describes, in words: 'a FIFO', 'a directory', ..."""
    return KINDS.get(stat.S_IFMT(mode), "not a regular file")


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """Open `path` (links followed) for reading if it is a regular file, else raise OSError
    saying what it is, never opening it (a FIFO cannot block, a device is never touched);
    checked again on the open descriptor, against a swap in between."""
    if stat.S_ISREG(mode := os.stat(path).st_mode):
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        if stat.S_ISREG(mode := os.fstat(fd).st_mode):
            return os.fdopen(fd, "rb")
        os.close(fd)
    raise OSError(errno.EINVAL, f"{kind_of(mode)}, not a regular file", str(path))


def check_place(
    path: Path, key: str, wanted: str = "a regular file", error: type[UserError] = ConfigError
) -> bool:
    """Whether anything is at `path` (named by `key`); if so, it must be `wanted`, a link not
    followed: a command writes, and reads a run's checkpoints, only where its own files are."""
    key = printable(key)  # (a name from a crafted run's metrics.json can hold a newline)
    try:
        kind = kind_of(os.lstat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):  # nothing there (check_writable: a folder?)
        return False
    except (OSError, ValueError) as e:  # a name too long or with a NUL, a folder unreadable
        why = getattr(e, "strerror", None) or e
        raise error(f"{key}: cannot see what is there ({why}).") from None
    if kind != wanted:
        raise error(
            f"{key} is {kind}, not {wanted}; a command uses only its own files there: move it "
            "away or choose another path."
        )
    return True


def cannot_write(folder: Path) -> str | None:
    """Why `folder` cannot take a file, found creating nothing; None if it can. The nearest
    folder that exists (itself, or the one above where it would be made) must be a directory
    that takes a temporary file (its times put back)."""
    existing = Path(os.path.abspath(folder))
    if any(len(os.fsencode(name)) > 255 for name in existing.parts):  # Linux's NAME_MAX
        return "a name in it is longer than 255 bytes"
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    try:
        times = os.stat(existing)
        kind = kind_of(times.st_mode)
    except OSError:
        kind = "a dangling symbolic link"
    if kind != "a directory":
        return f"{printable(existing)} is {kind}"
    try:  # a real file: a read-only mount, /proc and ACLs answer os.access wrongly for root
        with tempfile.TemporaryFile(dir=existing):
            pass
        os.utime(existing, ns=(times.st_atime_ns, times.st_mtime_ns))  # as it was, too
    except OSError as e:
        return str(e.strerror or e)
    return None


def check_writable(folder: Path, key: str) -> None:
    """Before any work, creating nothing: `folder`, where `key` writes, can take a file."""
    if why := cannot_write(folder):
        raise ConfigError(f"{key}: cannot write to {printable(folder)} ({why}).")


def lock_run(run: Path, command: str) -> None:
    """Make this process the one writer of `run` until it exits, or raise a `UserError`
    naming the process that is. (Not the `filelock` package: it truncates the lock file on
    every attempt, so it cannot say who holds the lock.)"""
    if (run := run.resolve()) in _held_locks:
        return
    existed = os.path.lexists(run / LOCK_NAME)
    try:
        fd = os.open(run / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as e:
        raise UserError(f"Cannot lock {run} for writing: {e.strerror or e}.") from None
    kind = kind_of(os.fstat(fd).st_mode)
    if kind != "a regular file":
        os.close(fd)
        raise UserError(f"Cannot lock {run} for writing: its {LOCK_NAME} is {kind}.")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = run_holder(run) or "another process"  # (it may have ended meanwhile)
        raise UserError(
            f"{run} is in use: {holder} is writing it. One process at a time writes a run "
            f"directory; wait until it ends (or stop it), then run {command} again."
        ) from None
    info = os.fstat(fd)
    found = (os.pread(fd, 200, 0), info.st_atime_ns, info.st_mtime_ns) if existed else None
    os.ftruncate(fd, 0)
    os.write(fd, f"process {os.getpid()} ({command})\n".encode())
    _held_locks[run] = (fd, found)


def put_back_locks() -> None:
    """A command that did nothing (refused, or nothing to do) leaves each run it locked as it
    found it: the lock file's text and times, or no lock file."""
    for run, (fd, found) in _held_locks.items():
        if found is None:
            (run / LOCK_NAME).unlink(missing_ok=True)  # (a refused new run is gone whole)
        else:
            os.ftruncate(fd, 0)
            os.pwrite(fd, found[0], 0)
            os.utime(run / LOCK_NAME, ns=found[1:])


def unlock_run(run: Path) -> None:
    """Let other processes write `run` again (a sweep's job is done; its process goes on)."""
    if held := _held_locks.pop(run.resolve(), None):
        os.close(held[0])


def run_holder(run: Path) -> str | None:
    """Who holds `run`'s lock, if another live process does; else None (this process's own
    lock, or a stale lock of a dead process, holds nothing)."""
    if (run := run.resolve()) in _held_locks:
        return None
    try:
        fd = os.open(run / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None
    except BlockingIOError:
        return os.read(fd, 200).decode(errors="replace").strip() or "another process"
    finally:
        os.close(fd)  # also releases the shared lock just taken


def to_run_log(log: logging.Logger, text: str, level: int = logging.INFO) -> None:
    """`text` from `log` in the run's train.log only: the terminal has shown it already."""
    record = log.makeRecord(log.name, level, "", 0, text, (), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def check_sqlite_store(uri: object, key: str, table: str) -> Path | None:
    """The file of a local store (`sqlite:///<file>`; None for any other), which must not exist
    yet or be one its tool made (holding its `table`): MLflow and Optuna add their tables to any
    SQLite file, and MLflow retries a FIFO, a directory, a missing folder for minutes."""
    if not (isinstance(uri, str) and uri.startswith("sqlite:///")):
        return None
    path = Path(uri.removeprefix("sqlite:///").split("?")[0])
    if path.exists():
        if not path.is_file():
            kind = kind_of(path.stat().st_mode)
            raise ConfigError(f"{key}={uri}: {path} is {kind}, not an SQLite database file.")
        try:  # read only: the file is not changed
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            with contextlib.closing(db):
                tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
        except sqlite3.Error:
            tables = set()
        if table not in tables:
            raise ConfigError(
                f"{key}={uri}: {printable(path)} is not a store of this kind (no {table} table); "
                "its tables would be added to it. Name a new file, or a store it made."
            )
    check_writable(path.parent, f"{key}={uri}")
    return path
