"""The console commands as processes forked from one that has already imported them.

A command's process spends ~6 s of a 2-core machine importing torch and Lightning before it
reads its first argument, and the spoiled-world tests (tests/helpers/worlds.py) run ~80 of
them. A `CommandServer` imports the four commands once and forks a child for each command
line. The child is a process of its own, as a user's command is: its own working directory,
environment, locks, stdout, stderr and exit status, nothing shared with the test process or the
next command. It runs the command's module as `python -m` does, as `__main__`; only the
interpreter's start-up and the imports happened before the fork.

`python -m tests.helpers.preloaded` is the server: one JSON request per line on stdin, one
JSON reply per line on stdout.
"""

import atexit
import ctypes
import importlib
import json
import os
import queue
import resource
import runpy
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies
ROOT = Path(__file__).resolve().parents[2]


class CommandServer:
    """One server process; one command at a time."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.preloaded"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.strip() == "ready", f"the command server did not start: {line!r}"

    def run(
        self,
        module: str,
        args: list[str],
        cwd: Path,
        env: dict[str, str],
        timeout_s: float,
        memory_limit_kib: int | None = None,
    ) -> subprocess.CompletedProcess:
        """`python -m mnist_lightning.cli.<module> args...` in `cwd` with exactly `env`; a
        command still running after `timeout_s` is killed and gets exit status None. A command
        whose environment the server's imports could have read differently gets a new
        interpreter."""
        command = [sys.executable, "-m", f"mnist_lightning.cli.{module}", *args]
        if not preloadable(env):
            return run_fresh(command, cwd, env, timeout_s, memory_limit_kib)
        assert self.process.stdin is not None and self.process.stdout is not None
        with tempfile.TemporaryDirectory() as tmp:
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            request = {
                "module": module,
                "args": args,
                "cwd": str(cwd),
                "env": env,
                "stdout": str(out),
                "stderr": str(err),
                "timeout_s": timeout_s,
                "memory_limit_kib": memory_limit_kib,
            }
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
            reply = json.loads(self.process.stdout.readline())
            stderr = err.read_text(errors="replace")
            if reply["returncode"] is None:
                stderr += f"\ntimed out after {timeout_s} s"
            return subprocess.CompletedProcess(
                command, reply["returncode"], out.read_text(errors="replace"), stderr
            )

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


def run_fresh(
    command: list[str],
    cwd: Path,
    env: dict[str, str],
    timeout_s: float,
    memory_limit_kib: int | None = None,
) -> subprocess.CompletedProcess:
    """`command` in a new interpreter, with the same timeout and limit as a forked one."""

    def limit_memory() -> None:
        if memory_limit_kib:
            limit = memory_limit_kib * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    try:
        return subprocess.run(
            command,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            preexec_fn=limit_memory,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else ""
        return subprocess.CompletedProcess(command, None, out, f"timed out after {timeout_s} s")


class CommandServers:
    """`count` servers, for commands run side by side from threads (one each at a time)."""

    def __init__(self, count: int) -> None:
        self.all = [CommandServer() for _ in range(count)]  # they import side by side
        self.free: queue.Queue[CommandServer] = queue.Queue()
        for server in self.all:
            server.wait_ready()
            self.free.put(server)

    @contextmanager
    def server(self) -> Iterator[CommandServer]:
        server = self.free.get()
        try:
            yield server
        finally:
            self.free.put(server)

    def close(self) -> None:
        for server in self.all:
            server.close()


# What a command's environment may change from the server's: variables read when they are
# used, not when the libraries are imported (Lightning reads RANK and friends at import, so a
# command with another rank, or another locale, gets a new interpreter instead).
LATE_READ = {
    "MNIST_DATA_DIR",
    "PYTHONPATH",  # applied to sys.path in the child, as the interpreter does at start-up
    "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD",  # read by each torch.load
    "CUBLAS_WORKSPACE_CONFIG",
    "HYDRA_FULL_ERROR",
    # tests/kill_at.py, tests/disk_full.py, tests/ddp_probe.py
    "KILL_AT_STEP",
    "KILL_SIGNAL",
    "KILL_GROUP",
    "STEP_SECONDS",
    "DISK_FULL_AT_EPOCH",
    "DDP_PROBE_DIR",
}


def preloadable(env: dict[str, str]) -> bool:
    """Whether a command with `env` can run forked from a server started with this process's
    environment."""
    keys = (set(env) | set(os.environ)) - LATE_READ
    return all(env.get(key) == os.environ.get(key) for key in keys)


def serve() -> None:
    # Everything the commands import, but not mnist-train's module itself: importing it
    # registers its resolvers, which the other commands' processes do not have.
    for module in ("eval", "predict", "export"):
        importlib.import_module(f"mnist_lightning.cli.{module}")
    for name in ("trainer", "resume", "report", "sweep", "trust", "checkpoint"):
        importlib.import_module(f"mnist_lightning.run.{name}")
    base_path = [p for p in sys.path if p not in os.environ.get("PYTHONPATH", "").split(":")]
    print("ready", flush=True)
    child = 0
    try:
        for line in sys.stdin:
            request = json.loads(line)
            sys.stdout.flush()
            sys.stderr.flush()
            child = os.fork()
            if child == 0:
                run_command(request, base_path)  # never returns
            status = wait(child, request["timeout_s"])
            child = 0
            print(json.dumps({"returncode": status}), flush=True)
    finally:  # the tests stopped (Ctrl-C): so does the command
        if child:
            os.killpg(child, signal.SIGKILL)


def wait(pid: int, timeout_s: float) -> int | None:
    """The child's exit status as `subprocess` gives it (-N: killed by signal N); None if it
    ran past `timeout_s` (it is killed, with any process it started)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def run_command(request: dict, base_path: list[str]) -> None:
    """In the forked child: become the command's process, run it as `python -m` does, and end
    as CPython ends it: the same exit status (SystemExit's code, 1 for an exception, killed by
    SIGINT for an uncaught KeyboardInterrupt), its excepthook, threads joined, exit handlers
    run, output flushed (120 if that fails). Only the modules' own teardown is skipped."""
    os.setsid()  # a group of its own: a command that signals its group spares the tests
    if sys.platform == "linux":  # and it dies with the server, however the server ends
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    # sys.path as the interpreter starts it for `python -m`: the working directory, then
    # PYTHONPATH, then the standard places.
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:] = [request["cwd"], *extra, *base_path[1:]]
    for name in [m for m in sys.modules if m == "tests" or m.startswith("tests.")]:
        del sys.modules[name]  # the server's own code is not the command's
    if request["memory_limit_kib"]:  # `ulimit -v`
        limit = request["memory_limit_kib"] * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    for fd, path, flags in (
        (0, os.devnull, os.O_RDONLY),
        (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
    ):
        opened = os.open(path, flags, 0o600)
        os.dup2(opened, fd)
        os.close(opened)
    sys.argv = ["-m", *request["args"]]  # run_module sets argv[0] to the module's file
    module = f"mnist_lightning.cli.{request['module']}"
    sys.modules.pop(module, None)  # `python -m` runs it only as __main__
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        code = exit_status(e)
    except BaseException as e:
        sys.excepthook(type(e), e, e.__traceback__)
        if isinstance(e, KeyboardInterrupt):  # CPython ends by the signal itself
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]  # joins non-daemon threads
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        code = 120
    # Not sys.exit: tearing down torch's and Lightning's modules takes seconds and does
    # nothing a command relies on; CPython skips it too for a process that calls os._exit.
    os._exit(code)


def exit_status(e: SystemExit) -> int:
    """The exit status CPython gives a process that ends with `e`."""
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code & 0xFF
    print(e.code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    serve()
