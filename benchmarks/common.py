"""What every benchmark shares: the tutorial recipe, the machine's description, and the one way
to run `mnist-train` and measure it.

Every run is a child process, so that its peak memory is its own and the CPU time other
processes took meanwhile can be told apart from its own: on two cores a busy neighbour can
make a small step tens of times slower.
"""

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
# The recipe: 784-128-64-10 MLP (ReLU, no dropout), batch 64, Adam lr 1e-3, seed 42, CPU.
SEED = 42
BATCH_SIZE = 64
LR = 1e-3
HIDDEN = (128, 64)
VAL_SIZE = 5000  # mnist-train holds these out of the 60 000; the plain loop does the same
TRAIN_IMAGES = 60_000 - VAL_SIZE  # mnist-train's (and the plain loop's) training split
# The same recipe on mnist-train; everything else (logging, metrics, progress bar, checkpoints)
# is its default.
MLP_128_64_ADAM = [
    "model=mlp_128_64",
    f"data.batch_size={BATCH_SIZE}",
    "model.optimizer=adam",
    f"model.lr={LR}",
    "model.weight_decay=0",
    "model.scheduler=none",
]
RECIPE = [*MLP_128_64_ADAM, "trainer.accelerator=cpu"]
# For runs measured by their accuracy and fit_seconds: no progress bar to redraw.
QUIET_CPU = ["trainer.accelerator=cpu", "callbacks.progress_bar.refresh_rate=0"]
TRIES = 4  # a timed run that shared the machine is run again, up to this many runs in all
STILL_CONTENDED: list[str] = []  # runs that shared the machine on every try (see run_alone)
EPOCH_RECORDS = "bench_epochs.json"  # where mnist_train(timer=True) has EpochTimer write


def data_dir() -> Path:
    """Where MNIST lives: `$MNIST_DATA_DIR`, else `data/` at the project root (as mnist-train)."""
    return Path(os.environ.get("MNIST_DATA_DIR", ROOT / "data"))


def machine() -> dict[str, Any]:
    """What the figures were measured on. Versions come from the packages' metadata: importing
    lightning would set, for every loop this process starts, the variable it sets (see
    tutorial.LIGHTNING_ENV)."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    return {
        "cpu": models[0] if models else platform.processor() or "unknown CPU",
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
        "versions": {
            "Python": platform.python_version(),
            "torch": torch.__version__,
            **{name: version(name) for name in ("torchvision", "lightning")},
        },
    }


def machine_line(m: dict[str, Any]) -> str:
    """`machine()` in one line, as the accuracy and presets pages print it."""
    gpu = "no GPU" if m["gpu"] == "none" else f"GPU: {m['gpu']}"
    v = m["versions"]
    return f"{m['cpu']}, {m['cores']} cores, {gpu}; torch {v['torch']}, lightning {v['lightning']}"


def cpu_mark() -> tuple[float, float]:
    """(CPU seconds every process on the machine has used since boot (/proc/stat), those used
    by this process and the children it has waited for)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
    me, kids = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    own = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"), own


def others_cpu_seconds(mark: tuple[float, float]) -> float:
    """CPU seconds other processes used since `mark`: were we alone on the machine?"""
    busy, own = cpu_mark()
    return max(0.0, busy - mark[0] - (own - mark[1]))


@dataclass
class ChildRun:
    """A finished subprocess: its wall time, its own peak resident memory, and how much CPU
    time other processes took meanwhile."""

    seconds: float
    peak_rss_mb: float  # MB = 10**6 bytes
    output: str
    others_cpu: float

    @property
    def contended(self) -> bool:
        """Did others use more than a tenth of a core?"""
        return self.others_cpu > 0.1 * self.seconds


Watch = Callable[[subprocess.Popen, Path], None]


def run_child(
    cmd: Sequence[str], cwd: Path, env: dict[str, str] | None = None, during: Watch | None = None
) -> ChildRun:
    """Run `cmd` to completion; `during(process, cwd)` is called once it has started.

    `os.wait4` gives the rusage of exactly this child; `getrusage(RUSAGE_CHILDREN)` would give
    the largest of every child waited for so far, so a small loop run after a big one would
    inherit the big one's figure. Output goes to a temporary file (no pipe to fill up).
    """
    with tempfile.TemporaryFile() as log:
        start, mark = time.perf_counter(), cpu_mark()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        if during is not None:
            during(proc, cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        output = log.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{output[-4000:]}")
    rss = usage.ru_maxrss * 1024 / 1e6  # ru_maxrss is in KiB
    return ChildRun(seconds, rss, output, others_cpu_seconds(mark))


def run_alone(
    cmd: Sequence[str],
    cwd: Path,
    env: dict[str, str] | None = None,
    *,
    tries: int = 1,
    label: str = "",
    during: Watch | None = None,
) -> ChildRun:
    """`run_child`, run again (after a pause) while another process was busy meanwhile, up to
    `tries` runs in all. The last try is kept whatever happened, and `label` (the command as a
    user types it) goes to STILL_CONTENDED if it shared the machine too."""
    for attempt in range(1, tries + 1):
        child = run_child(cmd, cwd, env, during)
        if not child.contended:
            return child
        if attempt < tries:
            print(
                f"    another process used {child.others_cpu:.0f} CPU-s during this run; "
                f"waiting 30 s and running it again ({attempt}/{tries - 1})",
                flush=True,
            )
            time.sleep(30)
    STILL_CONTENDED.append(label or " ".join(cmd))
    return child


@dataclass
class Run:
    """What one `mnist-train` run measured."""

    command: list[str]  # as a user types it
    dir: Path  # the run directory (the sweep directory with -m); gone unless workdir was given
    metrics: dict[str, Any]  # its metrics.json ({} for a sweep)
    epochs: list[dict[str, Any]]  # EpochTimer's records ([] without the timer)
    curves: dict[str, list[tuple[int, float, float]]]  # its TensorBoard scalars, see scalars()
    peak_rss_mb: float
    seconds: float  # launch to exit: imports, data, training, test, figures


def mnist_train(
    overrides: Sequence[str],
    workdir: Path | None = None,
    *,
    timer: bool = False,
    test_every_epoch: bool = False,
    tries: int = 1,
    during: Watch | None = None,
) -> Run:
    """`mnist-train <overrides>` as a user runs it, in `workdir` (its own `outputs/`; a
    temporary directory if None), with MNIST from `data_dir()`.

    `timer` adds the passive EpochTimer callback (benchmarks/epoch_timer.py) for per-epoch
    times, with the test accuracy after every epoch if `test_every_epoch`; not for sweeps.
    `tries` and `during` are `run_alone`'s.
    """
    env = os.environ | {"MNIST_DATA_DIR": str(data_dir()), "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix="bench-mnist-train-") as tmp:
        work = workdir or Path(tmp)
        records = work / EPOCH_RECORDS
        timing = [
            "+callbacks.bench_timer._target_=benchmarks.epoch_timer.EpochTimer",
            f"+callbacks.bench_timer.out={records}",
            f"+callbacks.bench_timer.test_every_epoch={str(test_every_epoch).lower()}",
        ]
        cmd = [sys.executable, "-m", "mnist_lightning.cli.train", *overrides]
        child = run_alone(
            [*cmd, *(timing if timer else [])],
            work,
            env,
            tries=tries,
            label=" ".join(["mnist-train", *overrides]),
            during=during,
        )
        made = work / "outputs" / ("multiruns" if "-m" in overrides else "runs")
        run_dir = sorted(made.iterdir())[-1]
        metrics = run_dir / "metrics.json"
        return Run(
            command=["mnist-train", *overrides],
            dir=run_dir,
            metrics=json.loads(metrics.read_text()) if metrics.is_file() else {},
            epochs=json.loads(records.read_text()) if timer else [],
            curves=scalars(run_dir / "tensorboard"),
            peak_rss_mb=child.peak_rss_mb,
            seconds=child.seconds,
        )


def scalars(tensorboard: Path) -> dict[str, list[tuple[int, float, float]]]:
    """tag -> [(step, seconds since the logger started, value)] from a run's event files.

    Depending on the tensorboard version, the loader hands a scalar back as `simple_value` or
    migrated to a one-element tensor; both are read. Imported here, not above: the loops'
    processes import this module, and their peak memory must be the loops' own.
    """
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util.tensor_util import make_ndarray

    curves: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    start = None
    for events in sorted(tensorboard.rglob("events.out.tfevents.*")):
        for event in EventFileLoader(str(events)).Load():
            start = event.wall_time if start is None else start
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    number = value.simple_value
                elif value.HasField("tensor") and not value.tensor.tensor_shape.dim:
                    number = float(make_ndarray(value.tensor))
                else:
                    continue  # images, histograms, text
                curves[value.tag].append((event.step, event.wall_time - start, number))
    return dict(curves)


def verdict(value: float, target: float, at_most: bool, unit: str = "") -> str:
    """`met` or `missed by <amount> (<percent>)`: how a measured figure compares to a target."""
    ok = value <= target if at_most else value >= target
    if ok:
        return "**met**"
    gap = abs(value - target)
    share = 100 * gap / target
    return f"**missed** by {gap:.2f}{unit} ({share:.{1 if share < 10 else 0}f} % of the target)"
