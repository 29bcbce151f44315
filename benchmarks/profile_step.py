"""Where the time of mnist-train's training step goes: py-spy samples of a real run.

Runs `mnist-train` with the issue's recipe (784-128-64-10, batch 64, Adam; default logging and
progress bar) and the passive EpochTimer. Once two epochs are done (a warm-up and one clean
epoch, whose step time is the reference), py-spy attaches to the process and samples it until
it exits. Only samples of the main thread inside Lightning's training epoch loop and outside
its validation loop are kept; each is sorted into one category by its frames, and a category's
time per optimizer step is its share of the samples times the clean step time. Needs py-spy
(`pip install py-spy`), which is not a dependency of the project. The table ends
docs/benchmarks.md (`tutorial` runs this too).
"""

import argparse
import json
import linecache
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.common import EPOCH_RECORDS, RECIPE, mnist_train

# training_step's statements, recognised by their source text (first match wins).
STATEMENTS = [
    ("self(images)", "forward"),
    ("cross_entropy", "loss (cross-entropy)"),
    ("l1", "L1 penalty"),
    ("correct", "train loss/accuracy sums on the device"),
    ("seen", "train loss/accuracy sums on the device"),
    ("train_window", "train loss/accuracy sums on the device"),
]
# Where forward, backward and the Adam step do their arithmetic: the leaf Python frame is the
# line that calls into ATen (py-spy is run without --native).
KERNEL_LINES = {
    "forward": ("F.linear(", "torch.relu(", "MNIST_MEAN"),
    "backward": ("_execution_engine.run_backward(",),
    "optimizer.step": ("func(", "torch._foreach_", "torch._fused_adam"),
}
ADAM_KERNEL_FUNCTIONS = ("_fused_adam ", "_single_tensor_adam ", "_multi_tensor_adam ")
# Categories that are work any loop must do, not overhead.
ARITHMETIC = ("loss", "batch gather")


def source(frame: str) -> str:
    """The source line of a py-spy frame `function (path:line)`."""
    path, _, line = frame.rsplit(" (", 1)[1].rstrip(")").rpartition(":")
    return linecache.getline(path, int(line)) if line.isdigit() else ""


def inside(name: str, frames: list[str]) -> str:
    """Split a step's part into kernels, torch's and Lightning's Python."""
    if name not in KERNEL_LINES or not frames:
        return name
    leaf = frames[-1]
    in_adam = leaf.startswith(ADAM_KERNEL_FUNCTIONS) or name != "optimizer.step"
    if in_adam and any(key in source(leaf) for key in KERNEL_LINES[name]):
        return f"{name}: ATen kernels"
    if "/lightning/" in leaf:
        return f"{name}: Lightning's Python around it"
    return f"{name}: torch's Python around it"


def first(frames: list[str], prefixes: tuple[str, ...]) -> int | None:
    return next((i for i, f in enumerate(frames) if f.startswith(prefixes)), None)


def category(frames: list[str]) -> str:
    """One sample's category, from its frames (outermost first)."""
    if any(f.startswith("_device_count_nvml ") for f in frames):
        return (
            "torch.cuda.is_available() via NVML, from Adam.step (see PYTORCH_NVML_BASED_CUDA_CHECK)"
        )
    step = first(frames, ("MNISTClassifier.training_step ",))
    if step is not None:
        text = source(frames[step])
        name = next((n for key, n in STATEMENTS if key in text), "training_step, other lines")
        return inside(name, frames[step + 1 :])
    backward = first(frames, ("Strategy.backward ",))
    if backward is not None:
        return inside("backward", frames[backward + 1 :])
    if first(frames, ("_AutomaticOptimization._make_zero_grad_fn",)) is not None:
        return "optimizer.zero_grad (with Lightning's hooks)"
    if first(frames, ("MNISTClassifier.on_before_optimizer_step ",)) is not None:
        return "logging window: train/* through self.log"
    adam = first(frames, ("Adam.step ", "AdamW.step ", "SGD.step "))
    if adam is not None and first(frames, ("Closure.__call__ ",)) is None:
        return inside("optimizer.step", frames[adam + 1 :])
    text = ";".join(frames)
    if "_call_callback_hooks" in text:
        return "callbacks' per-step hooks (checkpoints, interrupt, bar, summary)"
    if "update_lr_schedulers" in text or "_update_learning_rates" in text:
        return "LR scheduler step"
    if "callbacks/progress/" in text or "/tqdm/" in text:
        return "progress bar (TQDMProgressBar, tqdm)"
    if "logger_connector" in text or "/loggers/" in text or "/tensorboard/" in text:
        return "Lightning logging (logger connector, loggers)"
    if frames[-1].startswith("TensorBatches.__iter__"):
        return "batch gather (TensorBatches: index, uint8 -> float)"
    if "fetchers.py" in text or "combined_loader.py" in text or "TensorBatches" in text:
        return "Lightning data fetching"
    if "checkpoint" in text:
        return "checkpointing"
    return "Lightning loop, closure and module hooks (other)"


def available() -> bool:
    return py_spy() is not None


def py_spy() -> str | None:
    """py-spy from the venv running us, else from the PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def in_training_loop(frames: list[str]) -> bool:
    return (
        frames[0].startswith("_run_module_as_main")
        and any(f.startswith("_TrainingEpochLoop.run") for f in frames)
        and not any("evaluation_loop.py" in f for f in frames)
    )


def categorise(raw: str) -> tuple[Counter, int]:
    """py-spy's raw (collapsed) output -> samples per category, and samples kept."""
    counts: Counter = Counter()
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if stack and in_training_loop(frames):
            counts[category(frames)] += int(n)
    return counts, sum(counts.values())


def profile(
    step_us: float | None = None, epochs: int = 10, rate: int = 250, keep: Path | None = None
) -> tuple[list[tuple[str, float, float]], float]:
    """Profile a run; rows of (category, share, µs per step), and the step time used.

    `step_us`: the step time to apportion (e.g. the side-by-side run's median); by default the
    profiled run's own second epoch, measured before py-spy attached. `keep`: where to copy
    py-spy's raw stacks (for a flame graph, e.g. speedscope.app).
    """
    seen: dict[str, Any] = {}

    def sample(train: subprocess.Popen, work: Path) -> None:
        """Once the warm-up and one clean epoch are done, py-spy samples until the run exits."""
        records = work / EPOCH_RECORDS
        while train.poll() is None and (
            not records.exists() or records.read_text().count('"epoch"') < 2
        ):
            time.sleep(0.05)
        if train.returncode is not None:
            raise RuntimeError(f"mnist-train exited with {train.returncode} before py-spy attached")
        seen["second"] = json.loads(records.read_text())[1]
        stacks = work / "stacks.txt"
        spy = [py_spy(), "record", "--pid", str(train.pid), "--rate", str(rate)]
        spy += ["--format", "raw", "--full-filenames", "-o", str(stacks)]
        subprocess.run(spy, check=True, capture_output=True)
        seen["stacks"] = stacks.read_text()
        if keep:
            shutil.copy(stacks, keep)

    mnist_train([*RECIPE, f"trainer.max_epochs={epochs}"], timer=True, during=sample)
    counts, total = categorise(seen["stacks"])
    step_us = step_us or 1e6 * seen["second"]["train_seconds"] / seen["second"]["steps"]
    rows = [
        (name, n / total, n / total * step_us)
        for name, n in counts.most_common()
        if n / total >= 0.001  # drop categories with a handful of samples
    ]
    return rows, step_us


def table(rows: list[tuple[str, float, float]], step_us: float) -> list[str]:
    """The page's section (`step_us` is (c)'s median step there)."""
    lines = [
        f"Median step of (c): {step_us:.0f} µs. Share of py-spy samples in mnist-train's "
        "training loop (epochs after the first; validation excluded), times that step time:",
        "",
        "| where | share | µs per optimizer step |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {name} | {100 * share:.1f} % | {us:.0f} |" for name, share, us in rows]
    lines += [
        "",
        "py-spy samples the Python stacks 250 times a second, pausing the process each time, "
        "in a separate run of the same command after its first two epochs; a sample in native "
        "code is charged to the Python line that called it. The shares are estimates (a few "
        "thousand samples) and the µs apportion (c)'s unprofiled median step, so they are "
        "good to a few µs for the large rows, not better.",
    ]
    work = [r for r in rows if r[0].endswith("ATen kernels") or r[0].startswith(ARITHMETIC)]
    share, us = sum(r[1] for r in work), sum(r[2] for r in work)
    lines += [
        "",
        f"Arithmetic and data movement that any loop must do (the ATen kernels of forward, "
        f"backward and Adam, the loss, the batch gather): {100 * share:.0f} %, {us:.0f} µs per "
        f"step. Everything else, {100 * (1 - share):.0f} % or {step_us - us:.0f} µs per step, "
        "is Python: torch's own wrappers (which the plain loop pays too), Lightning's, and "
        "the metrics, logging and progress bar.",
    ]
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--stacks", type=Path, default=None, help="keep py-spy's raw stacks")


def main(args: argparse.Namespace) -> None:
    if not available():
        sys.exit("py-spy not found: pip install py-spy")
    rows, step_us = profile(epochs=args.epochs, rate=args.rate, keep=args.stacks)
    print(f"clean step: {step_us:.0f} µs")
    for name, share, us in rows:
        print(f"{100 * share:5.1f} %  {us:6.0f} µs  {name}")
