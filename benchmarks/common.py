"""What every benchmark shares: the fixed recipe, the model, and running a loop in its own
process so that its peak memory is its own.

The recipe is the issue's: 784-128-64-10 MLP (ReLU, no dropout), batch 64, Adam lr 1e-3,
seed 42, CPU. Every loop builds the model with `mlp()` so that "same model" is true by
construction, not by convention.
"""

import itertools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SEED = 42
BATCH_SIZE = 64
LR = 1e-3
HIDDEN = (128, 64)
VAL_SIZE = 5000  # mnist-train holds these out of the 60 000; the plain loop does the same
TRAIN_IMAGES = 60_000 - VAL_SIZE  # mnist-train's (and the plain loop's) training split
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
STILL_CONTENDED: list[str] = []  # runs that shared the machine on every try (see run_alone)
TRIES = {"tries": 4}  # run_alone's tries; --quick sets 1 (it measures nothing worth a wait)


def data_dir() -> Path:
    """Where MNIST lives: `$MNIST_DATA_DIR`, else `data/` at the project root (as mnist-train)."""
    return Path(os.environ.get("MNIST_DATA_DIR", ROOT / "data"))


def mnist_train(args: Sequence[str], cwd: Path) -> Path:
    """`mnist-train <args>` on the CPU in `cwd`, without a progress bar; the run directory it
    made (the sweep directory for `-m`). Its stderr is shown if it fails."""
    cmd = [sys.executable, "-m", "mnist_lightning.cli.train", *args]
    cmd += ["trainer.accelerator=cpu", "callbacks.progress_bar.refresh_rate=0"]
    env = os.environ | {"MNIST_DATA_DIR": str(data_dir())}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed:\n{done.stderr[-3000:]}")
    made = cwd / "outputs" / ("multiruns" if "-m" in args else "runs")
    return sorted(made.iterdir())[-1]


def mlp(hidden: Sequence[int] = HIDDEN) -> nn.Sequential:
    """784 -> hidden -> 10 with ReLU, no dropout: the tutorial network, for loops (a) and (b)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = 28 * 28
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def weight_macs(hidden: Sequence[int]) -> int:
    """Multiply-accumulates per image in one forward pass (the weight matrices)."""
    widths = [28 * 28, *hidden, 10]
    return sum(a * b for a, b in itertools.pairwise(widths))


@dataclass
class ChildRun:
    """A finished subprocess: its wall time, its own peak resident memory, and how much CPU
    time other processes took meanwhile."""

    seconds: float
    peak_rss_mb: float  # MB = 10**6 bytes
    output: str
    others_cpu: float  # CPU-seconds used by every other process while it ran

    @property
    def contended(self) -> bool:
        """Did others use more than a tenth of a core? With two cores and two OpenMP threads,
        a busy neighbour can make a small step tens of times slower."""
        return self.others_cpu > 0.1 * self.seconds


def busy_cpu_seconds() -> float:
    """CPU seconds every process on the machine has used since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_child(cmd: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> ChildRun:
    """Run `cmd` to completion and return its own peak RSS.

    `os.wait4` gives the rusage of exactly this child; `getrusage(RUSAGE_CHILDREN)` would give
    the largest of every child waited for so far, so a small loop run after a big one would
    inherit the big one's figure. Output goes to a temporary file (no pipe to fill up).
    """
    with tempfile.TemporaryFile() as log:
        start, busy = time.perf_counter(), busy_cpu_seconds()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        others = busy_cpu_seconds() - busy - usage.ru_utime - usage.ru_stime
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read().decode(errors="replace")
    if proc.returncode != 0:
        tail = output[-4000:]
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{tail}")
    rss = usage.ru_maxrss * 1024 / 1e6  # ru_maxrss is in KiB
    return ChildRun(seconds, rss, output, max(0.0, others))


def run_alone(cmd: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> ChildRun:
    """`run_child`, run again (after a pause) while another process was busy meanwhile.

    The last try is kept whatever happened; the report counts the contended ones.
    """
    tries = TRIES["tries"]
    for attempt in range(1, tries + 1):
        child = run_child(cmd, cwd, env)
        if not child.contended:
            return child
        if attempt == tries:
            STILL_CONTENDED.append(" ".join(cmd[1:]).split(" --out ")[0])
            return child
        print(
            f"    another process used {child.others_cpu:.0f} CPU-s during this run; "
            f"waiting 30 s and running it again ({attempt}/{tries - 1})",
            flush=True,
        )
        time.sleep(30)
    raise AssertionError("unreachable")
