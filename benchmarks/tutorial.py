"""The tutorial loop, a plain PyTorch loop and `mnist-train` side by side, against the issue's
targets: docs/benchmarks.md and its scaling plot (`make bench`; `--quick` is a smoke test of a
few batches each).

Every loop runs in its own subprocess, one after another, so that each has the machine to
itself and its peak RSS is its own. Seconds per epoch are medians over the epochs after the
first (the warm-up). Nothing here is asserted: the numbers go to the page.
"""

import argparse
import inspect
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from benchmarks import overhead, profile_step, tutorial_page
from benchmarks.common import (
    BATCH_SIZE,
    HIDDEN,
    RECIPE,
    ROOT,
    TRAIN_IMAGES,
    TRIES,
    Run,
    cpu_mark,
    machine,
    mnist_train,
    others_cpu_seconds,
    run_alone,
    run_child,
)

# `import lightning` sets this (lightning/fabric/__init__.py), so that torch.cuda.is_available()
# asks NVML instead of initialising CUDA. On a machine without a GPU every such call then tries
# to load libnvidia-ml, and torch's Adam.step asks once per step.
LIGHTNING_ENV = {"PYTORCH_NVML_BASED_CUDA_CHECK": "1"}
IS_AVAILABLE_US = (
    "import timeit, torch; "
    "print(1e6 * min(timeit.repeat(torch.cuda.is_available, number=200, repeat=5)) / 200)"
)


@dataclass(frozen=True)
class Targets:
    """The issue's targets for what this module measures, on this machine (issue 14's, for
    mnist-train against the bare loop in one process, are in overhead.py)."""

    c_over_b: float = 1.2  # (c)/(b): seconds per epoch at batch 64
    a_over_c: float = 8.0  # (a)/(c): per image
    seconds_to_98: float = 15.0  # (d): training time to 98 % test accuracy
    rss_mb: float = 1500.0  # (d): peak RSS of a default run


@dataclass(frozen=True)
class Settings:
    """How much to run. Epoch counts include the one warm-up epoch."""

    quick: bool
    tutorial_epochs: int = 4
    tutorial_batches: int | None = None  # None: whole epochs
    epochs: int = 6  # (b) and (c) at batch 64, and the batch-size sweep
    train_size: int | None = None  # None: all 55 000 training images
    width_epochs: int = 6
    width_train_size: int | None = 6400  # 100 steps at batch 64; scaled to a full epoch
    widths: tuple[int, ...] = (128, 512, 1024, 2048, 4096)
    batch_sizes: tuple[int, ...] = (16, 64, 256, 1024, 4096)
    sweep_mnist_train: bool = True
    repeats: int = 4  # interleaved runs of (b) and (c) at batch 64
    tries: int = TRIES  # a run that shared the machine is run again, up to this many runs
    default_runs: int = 2  # (d): the default experiment, this many times
    profile: bool = True
    overhead_epochs: int = 6  # overhead.py: paired epochs in one process
    overhead_rounds: int = 2
    overhead_train_size: int | None = None


FULL = Settings(quick=False)
QUICK = Settings(
    quick=True,
    tutorial_batches=20,
    epochs=2,
    train_size=1280,
    width_train_size=1280,
    widths=(128, 256),
    batch_sizes=(64, 256),
    width_epochs=2,
    sweep_mnist_train=False,
    repeats=1,
    tries=1,
    default_runs=0,
    profile=False,
    overhead_epochs=2,
    overhead_rounds=1,
    overhead_train_size=1280,
)


@dataclass
class Loop:
    """One loop's figures: its warm-up epoch, its measured epochs, and its size."""

    name: str
    warmup: float
    epoch_seconds: list[float]
    samples_per_epoch: int
    peak_rss_mb: float
    test_acc: float
    scale: float = 1.0  # epochs measured on a subset are scaled by this to a 55 000 epoch

    @property
    def median(self) -> float:
        return statistics.median(self.epoch_seconds)

    @property
    def full_epoch(self) -> float:
        """Median seconds per epoch, scaled to the 55 000-image training split."""
        return self.median * self.scale

    @property
    def samples_per_s(self) -> float:
        return self.samples_per_epoch / self.median


def pooled(runs: list[Loop]) -> Loop:
    """Repeated runs of one loop as one: every measured epoch, the first warm-up, the top RSS."""
    first = runs[0]
    return replace(
        first,
        epoch_seconds=[t for run in runs for t in run.epoch_seconds],
        peak_rss_mb=max(run.peak_rss_mb for run in runs),
    )


def plain_env() -> dict[str, str]:
    """Our environment without Lightning's variable (set here if anything imported lightning,
    e.g. pytest's conftest), so that the plain loops run as they would in a fresh shell."""
    return {k: v for k, v in os.environ.items() if k not in LIGHTNING_ENV}


def run_loop(
    s: Settings, loop: str, *args: str, env: dict[str, str] | None = None
) -> tuple[dict, float]:
    """`python -m benchmarks.loops <loop> <args>`: its JSON result and its peak RSS (MB)."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "benchmarks.loops", loop, *args, "--out", str(out)]
        label = " ".join(["python", *cmd[1:-2]])
        child = run_alone(cmd, ROOT, plain_env() | (env or {}), tries=s.tries, label=label)
        return json.loads(out.read_text()), child.peak_rss_mb


def tutorial_loop(s: Settings) -> Loop:
    args = ["--epochs", str(s.tutorial_epochs)]
    if s.tutorial_batches:
        args += ["--max-batches", str(s.tutorial_batches)]
    result, rss = run_loop(s, "tutorial", *args)
    seconds = result["epoch_seconds"]
    return Loop(
        "(a) tutorial: torchvision MNIST + ToTensor/Normalize per sample + DataLoader",
        seconds[0],
        seconds[1:],
        result["samples_per_epoch"],
        rss,
        result["test_acc"],
    )


def memoised(fn: Callable) -> Callable:
    """Cache on the arguments' values however they are passed, so that a sweep point equal
    to a headline run reuses it instead of running it again."""
    signature = inspect.signature(fn)
    results: dict[tuple, Any] = {}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        key = tuple(bound.arguments.values())
        if key not in results:
            results[key] = fn(*args, **kwargs)
        return results[key]

    return wrapper


@memoised
def plain_loop(
    s: Settings,
    hidden: tuple[int, ...],
    batch_size: int,
    epochs: int,
    train_size: int | None,
    fused: bool,
    nvml_check: bool = False,
    repeat: int = 0,
) -> Loop:
    """(b). `nvml_check` runs it with the environment variable `import lightning` sets (see
    `LIGHTNING_ENV`); `repeat` numbers repeated runs."""
    args = ["--hidden", *map(str, hidden), "--batch-size", str(batch_size), "--epochs", str(epochs)]
    if train_size:
        args += ["--train-size", str(train_size)]
    if fused:
        args.append("--fused")
    result, rss = run_loop(s, "plain", *args, env=LIGHTNING_ENV if nvml_check else None)
    name = "(b) plain PyTorch, in-memory tensors, index-permutation batches"
    if fused:
        name += ", fused Adam"
    if nvml_check:
        name += ", with `PYTORCH_NVML_BASED_CUDA_CHECK=1` as `import lightning` sets it"
    seconds = result["epoch_seconds"]
    return Loop(
        name,
        seconds[0],
        seconds[1:],
        result["samples_per_epoch"],
        rss,
        result["test_acc"],
        scale=TRAIN_IMAGES / result["samples_per_epoch"],
    )


@memoised
def mnist_train_loop(
    s: Settings,
    hidden: tuple[int, ...],
    batch_size: int,
    epochs: int,
    train_size: int | None,
    repeat: int = 0,
) -> tuple[Loop, Run]:
    """(c): the real mnist-train with the issue's recipe; `repeat` numbers repeated runs."""
    overrides = [o for o in RECIPE if not o.startswith("data.batch_size=")]
    overrides += [f"data.batch_size={batch_size}", f"trainer.max_epochs={epochs}"]
    if hidden != HIDDEN:
        overrides.append(f"model.hidden_dims=[{','.join(map(str, hidden))}]")
    if train_size:
        overrides.append(f"data.train_subset={train_size}")
    run = mnist_train(overrides, timer=True, tries=s.tries)
    samples = train_size or TRAIN_IMAGES
    seconds = [e["train_seconds"] for e in run.epochs]
    loop = Loop(
        "(c) mnist-train: default logging, metrics, progress bar, checkpoints",
        seconds[0],
        seconds[1:],
        samples,
        run.peak_rss_mb,
        run.metrics["test/acc"],
        scale=TRAIN_IMAGES / samples,
    )
    return loop, run


def headline(s: Settings) -> dict[str, Any]:
    """(a), the (b) variants and (c) at batch 64 on 784-128-64-10.

    (b) and (c) run `s.repeats` times, interleaved. Their epochs are pooled for the table; the
    ratios are the median over the repeats of each repeat's ratio, since this machine's speed
    drifts by tens of percent from one minute to the next.
    """
    args = (s, HIDDEN, BATCH_SIZE, s.epochs, s.train_size)
    runs: dict[str, list] = {"b": [], "b_fused": [], "b_nvml": [], "c": []}
    for r in range(s.repeats):
        runs["b"].append(plain_loop(*args, fused=False, repeat=r))
        runs["b_fused"].append(plain_loop(*args, fused=True, repeat=r))
        runs["b_nvml"].append(plain_loop(*args, fused=True, nvml_check=True, repeat=r))
        runs["c"].append(mnist_train_loop(*args, repeat=r))
    c_loops, c_runs = zip(*runs.pop("c"), strict=True)
    runs["c"] = list(c_loops)
    return {
        "a": tutorial_loop(s),
        **{key: pooled(loops) for key, loops in runs.items()},
        # Each repeat's medians: its runs follow each other within a minute or so.
        "repeats": [
            {key: loops[r].median for key, loops in runs.items()} for r in range(s.repeats)
        ],
        "c_runs": list(c_runs),
        "is_available_us": {
            setting: float(run_child([sys.executable, "-c", IS_AVAILABLE_US], ROOT, env).output)
            for setting, env in (("unset", plain_env()), ("set", plain_env() | LIGHTNING_ENV))
        },
        "nvml_in_mnist_train": c_runs[0].epochs[0]["nvml_check"],  # as (c) trained
        "baseline_rss": {
            module: run_child([sys.executable, "-c", f"import {module}"], ROOT).peak_rss_mb
            for module in ("torch", "lightning")
        },
    }


def weight_macs(hidden: Sequence[int]) -> int:
    """Multiply-accumulates per image in one forward pass (the weight matrices)."""
    widths = [28 * 28, *hidden, 10]
    return sum(a * b for a, b in itertools.pairwise(widths))


def sweeps(s: Settings) -> dict[str, list[dict]]:
    """Epoch time against hidden width (784-W-W/2-10, batch 64) and batch size (128-64).

    The plain loop uses fused Adam here, as mnist-train does, so that (c)/(b) isolates the
    framework's cost: for-loop Adam's cost grows with the parameter count and would hide it.
    """
    widths, batches = [], []
    for w in s.widths:
        hidden = (w, w // 2)
        row = {"width": w, "macs": weight_macs(hidden)}
        size = (hidden, BATCH_SIZE, s.width_epochs, s.width_train_size)
        row["plain"] = plain_loop(s, *size, fused=True)
        if s.sweep_mnist_train:
            row["mnist_train"] = mnist_train_loop(s, *size)[0]
        widths.append(row)
        print(f"  width {w}: done", flush=True)
    for b in s.batch_sizes:
        size = (HIDDEN, b, s.epochs, s.train_size)
        row = {"batch": b, "plain": plain_loop(s, *size, fused=True)}
        if s.sweep_mnist_train:
            row["mnist_train"] = mnist_train_loop(s, *size)[0]
        batches.append(row)
        print(f"  batch {b}: done", flush=True)
    return {"width": widths, "batch": batches}


def load() -> str:
    """The 1, 5 and 15 minute load averages: whether something else was busy."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a few batches of each (< 1 min)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the Markdown report; the plot goes beside it (default: docs/benchmarks.md, "
        "or outputs/benchmarks-quick.md with --quick)",
    )


def main(args: argparse.Namespace) -> None:
    s = QUICK if args.quick else FULL
    out = args.out or ROOT / ("outputs/benchmarks-quick.md" if s.quick else "docs/benchmarks.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    started, mark = time.perf_counter(), cpu_mark()
    measured_on = machine() | {"date": time.strftime("%Y-%m-%d %H:%M"), "load_before": load()}
    print("(a) (b) (c) side by side ...", flush=True)
    loops = headline(s)
    print("(c) against (b) in one process ...", flush=True)
    subset = [f"data.train_subset={s.overhead_train_size}"] if s.overhead_train_size else []
    extra = overhead.measure(s.overhead_epochs, s.overhead_rounds, subset, s.quick, s.tries)
    print("(d) the default experiment ...", flush=True)
    default = [
        mnist_train(["trainer.accelerator=cpu"], timer=True, test_every_epoch=True, tries=s.tries)
        for _ in range(s.default_runs)
    ]
    print("(e) width and batch-size sweeps ...", flush=True)
    scaling = sweeps(s)
    profile = None
    if s.profile and profile_step.available():
        print("profile of mnist-train's training step ...", flush=True)
        step_us = 1e6 * loops["c"].median / loops["c_runs"][0].epochs[-1]["steps"]
        profile = profile_step.profile(step_us)
    measured_on["load_after"] = load()
    measured_on["others_cpu"] = others_cpu_seconds(mark)
    measured_on["minutes"] = (time.perf_counter() - started) / 60
    if measured_on["others_cpu"] > 10:
        print(
            f"warning: other processes used {measured_on['others_cpu']:.0f} CPU-seconds meanwhile"
        )

    plot = out.with_name(out.stem + "_scaling.png")
    tutorial_page.plot(scaling, plot)
    page = tutorial_page.markdown(
        s, Targets(), measured_on, args.command_line, loops, extra, default, scaling, profile, plot
    )
    out.write_text(page)
    print(f"wrote {out} and {plot}")
