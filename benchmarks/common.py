"""What every benchmark shares: the machine, the one runner of `mnist-train` (a child process:
its peak memory is its own, and a run that shared the cores with a busy neighbour, which can
make a step tens of times slower, is run again), and results saved as JSON with the command,
machine and date."""

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TRAIN_IMAGES = 55_000  # mnist-train holds 5 000 of the 60 000 out for validation
# The tutorial recipe (benchmarks/tutorial.py): 784-128-64-10, batch 64, Adam lr 1e-3.
MLP_128_64_ADAM = ["model=mlp_128_64", "data.batch_size=64", "model.optimizer=adam"]
MLP_128_64_ADAM += ["model.lr=0.001", "model.weight_decay=0", "model.scheduler=none"]
RECIPE = [*MLP_128_64_ADAM, "trainer.accelerator=cpu"]
QUIET_CPU = ["trainer.accelerator=cpu", "callbacks.progress_bar.refresh_rate=0"]


def data_dir() -> Path:
    """Where MNIST lives: `$MNIST_DATA_DIR`, else `data/` at the project root (as mnist-train)."""
    return Path(os.environ.get("MNIST_DATA_DIR", ROOT / "data"))


def machine() -> str:
    """What the figures were measured on, in one line. Versions come from package metadata:
    importing lightning would change how torch checks for a GPU (see tutorial.LIGHTNING_ENV)."""
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    cpu = names[0] if names else platform.processor() or "unknown CPU"
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    versions = ", ".join(f"{p} {version(p)}" for p in ("torch", "lightning"))
    return f"{cpu}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, {versions}"


def save(path: Path, keys: tuple[str, ...], result: dict, command: str) -> None:
    """Write `result` with its command, machine and date into the JSON file `path`, at the
    nested `keys` if any, keeping the file's other entries (parts are measured one at a time)."""
    entry = {"command": command, "machine": machine(), "date": time.strftime("%Y-%m-%d")}
    data = json.loads(path.read_text()) if path.is_file() else {}
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node.update({keys[-1]: entry | result} if keys else entry | result)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def markdown(records: list[dict] | dict[str, dict]) -> str:
    """Records (or name -> record) as a Markdown table, columns as found; lists left out."""
    if isinstance(records, dict):
        records = [{"": name, **record} for name, record in records.items()]
    columns = list(dict.fromkeys(c for r in records for c in r if not isinstance(r[c], list)))
    lines = [columns, ["---"] * len(columns)]
    lines += ([_cell(r.get(c)) for c in columns] for r in records)
    return "\n".join(f"| {' | '.join(line)} |" for line in lines)


def _cell(v: object) -> str:
    return "–" if v is None else str(round(v, 4)) if isinstance(v, float) else str(v)


def busy_cpu_seconds() -> float:
    """CPU seconds every process but this one and its children used since boot (/proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields)
    me, kids = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    own = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK") - own


def run_child(
    cmd: Sequence[str], cwd: Path, env: dict[str, str] | None = None, tries: int = 1
) -> tuple[float, float, str]:
    """Run `cmd`: its seconds, peak memory (its own ru_maxrss, MB = 10**6 bytes) and output.
    While another process used more than a tenth of a core meanwhile, wait 30 s and run it
    again, up to `tries` runs in all. `os.wait4` gives this child's own rusage
    (RUSAGE_CHILDREN would give the largest of every child so far)."""
    for attempt in range(1, tries + 1):
        with tempfile.TemporaryFile() as log:
            start, busy = time.perf_counter(), busy_cpu_seconds()
            proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(proc.pid, 0)
            seconds = time.perf_counter() - start
            log.seek(0)
            output = log.read().decode(errors="replace")
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{output[-4000:]}")
        others = busy_cpu_seconds() - busy
        if others <= 0.1 * seconds or attempt == tries:
            break
        print(f"    others used {others:.0f} CPU-s meanwhile; again in 30 s", flush=True)
        time.sleep(30)
    return seconds, usage.ru_maxrss * 1024 / 1e6, output


@dataclass
class Run:
    """What one `mnist-train` run left: its directory (the sweep's with -m; gone unless a
    workdir was given), metrics.json, EpochTimer's records, peak memory and wall time."""

    command: list[str]
    dir: Path
    metrics: dict[str, Any]
    epochs: list[dict[str, Any]]
    peak_rss_mb: float
    seconds: float


def mnist_train(
    overrides: Sequence[str], workdir: Path | None = None, timer: dict | None = None, tries: int = 1
) -> Run:
    """`mnist-train <overrides>` as a user runs it, in `workdir` (a temporary one if None),
    with MNIST from `data_dir()`; `timer` adds the passive callbacks.EpochTimer with these
    arguments."""
    env = os.environ | {"MNIST_DATA_DIR": str(data_dir()), "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix="bench-mnist-train-") as tmp:
        work = workdir or Path(tmp)
        records = work / "bench_epochs.json"
        # A run as on a terminal, with the bar (a pipe switches it off; -m must come first).
        bar = [] if "-m" in overrides else ["trainer.enable_progress_bar=true"]
        cmd = [sys.executable, "-m", "mnist_lightning.cli.train", *bar, *overrides]
        if timer is not None:
            timer = timer | {"_target_": "benchmarks.callbacks.EpochTimer", "out": str(records)}
            cmd += [f"+callbacks.bench_timer.{k}={json.dumps(v)}" for k, v in timer.items()]
        seconds, rss, _ = run_child(cmd, work, env, tries)
        made = work / "outputs" / ("multiruns" if "-m" in overrides else "runs")
        run_dir = sorted(made.iterdir())[-1]
        metrics = run_dir / "metrics.json"
        metrics = json.loads(metrics.read_text()) if metrics.is_file() else {}
        epochs = json.loads(records.read_text()) if timer is not None else []
        return Run(["mnist-train", *overrides], run_dir, metrics, epochs, rss, seconds)


def scalars(tensorboard: Path) -> dict[str, list[tuple[int, float, float]]]:
    """tag -> [(step, seconds since the first event, value)] from a run's event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(tensorboard.rglob("events.out.tfevents.*"))
    files = [EventAccumulator(str(f), {"scalars": 0}, purge_orphaned_data=False) for f in files]
    start = files[0].Reload().FirstEventTimestamp() if files else 0
    curves: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for events in files:
        for tag in events.Reload().Tags()["scalars"]:
            curves[tag] += [(e.step, e.wall_time - start, e.value) for e in events.Scalars(tag)]
    return dict(curves)
