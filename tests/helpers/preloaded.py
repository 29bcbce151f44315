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
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

COMMANDS = ("train", "eval", "predict", "export")
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
        command still running after `timeout_s` is killed and gets exit status None."""
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
            command = [sys.executable, "-m", f"mnist_lightning.cli.{module}", *args]
            return subprocess.CompletedProcess(
                command, reply["returncode"], out.read_text(errors="replace"), stderr
            )

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


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


def serve() -> None:
    for module in COMMANDS:
        importlib.import_module(f"mnist_lightning.cli.{module}")
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            run_command(request)  # never returns
        print(json.dumps({"returncode": wait(pid, request["timeout_s"])}), flush=True)


def wait(pid: int, timeout_s: float) -> int | None:
    """The child's exit status as `subprocess` gives it (-N: killed by signal N); None if it
    ran past `timeout_s` (it is killed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def run_command(request: dict) -> None:
    """In the forked child: become the command's process, run it, exit with its status."""
    code = 1
    try:
        os.setsid()  # a group of its own: a command that signals its group spares the tests
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        # sys.path as `python -m` starts it: the working directory, then PYTHONPATH.
        extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[0:1] = [request["cwd"], *extra]
        if request["memory_limit_kib"]:  # `ulimit -v`
            limit = request["memory_limit_kib"] * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            os.dup2(os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
        sys.argv = ["-m", *request["args"]]  # run_module sets argv[0] to the module's file
        module = f"mnist_lightning.cli.{request['module']}"
        del sys.modules[module]  # `python -m` runs it only as __main__; what it imports stays
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:  # as the interpreter turns it into an exit status
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        atexit._run_exitfuncs()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    serve()
