"""docs/benchmarks.md and its scaling plot, from what benchmarks/tutorial.py measured.

Only formatting lives here; what each figure means is explained on the page it writes.
"""

import itertools
import statistics
from pathlib import Path
from typing import Any

from benchmarks import overhead, profile_step
from benchmarks.common import STILL_CONTENDED, verdict


def seconds(loop: Any) -> str:
    xs = loop.epoch_seconds
    return f"{loop.median:.2f} [{min(xs):.2f}–{max(xs):.2f}] ×{len(xs)}"


def side_by_side(loops: dict[str, Any]) -> list[str]:
    rows = [
        "| loop | images per epoch | warm-up epoch (s) | s per epoch: median [min–max] ×epochs "
        "| images/s | peak RSS (MB) | test acc after the run |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key in ("a", "b", "b_fused", "b_nvml", "c"):
        loop = loops[key]
        rows.append(
            f"| {loop.name} | {loop.samples_per_epoch:,} | {loop.warmup:.2f} | {seconds(loop)} | "
            f"{loop.samples_per_s:,.0f} | {loop.peak_rss_mb:.0f} | {loop.test_acc:.4f} |"
        )
    # Epochs 1, 2, ... of each run: the warm-up epoch has no event before it.
    gaps = [gap for run in loops["c_runs"] for gap in val_acc_gaps(run)]
    if gaps:
        median = statistics.median(gaps)
        rows.append(
            f"| (c) whole epoch cycle, from the `val/acc` event times: training + validation "
            f"(5 000 images) + checkpoint writes | {loops['c'].samples_per_epoch:,} | | "
            f"{median:.2f} [{min(gaps):.2f}–{max(gaps):.2f}] ×{len(gaps)} | "
            f"{loops['c'].samples_per_epoch / median:,.0f} | | |"
        )
    return rows


def val_acc_gaps(run: Any) -> list[float]:
    """Seconds between consecutive `val/acc` events (wall times, set when logged); none when
    the run had no TensorBoard logger."""
    times = [seconds for _, seconds, _ in run.curves.get("val/acc", [])]
    return [b - a for a, b in itertools.pairwise(times)]


def ratios(loops: dict[str, Any]) -> dict[str, float]:
    """(c)/(b) and its variants: the median over the repeats of each repeat's ratio of median
    epochs (a repeat's runs are a minute apart; the machine's speed drifts more than that
    over the whole benchmark). (a) runs once, against the pooled (c)."""
    repeats = loops["repeats"]

    def paired(top: str, bottom: str) -> float:
        return statistics.median(r[top] / r[bottom] for r in repeats)

    a, c = loops["a"], loops["c"]
    return {
        "c/b": paired("c", "b"),
        "c/b_fused": paired("c", "b_fused"),
        "c/b_nvml": paired("c", "b_nvml"),
        "b_nvml/b_fused": paired("b_nvml", "b_fused"),
        "a/c epoch": a.median / c.median,
        "a/c image": c.samples_per_s / a.samples_per_s,
    }


def time_to_98(run: Any) -> dict[str, Any] | None:
    """The first epoch whose test accuracy reached 98 %, if any."""
    return next((e for e in run.epochs if e["test_acc"] >= 0.98), None)


def median_time_to_98(runs: list[Any]) -> float | None:
    """Median over the runs of the training time to 98 % (None if one never got there)."""
    times = [time_to_98(run) for run in runs]
    if any(t is None for t in times):
        return None
    return statistics.median(t["training_time"] for t in times)


def default_section(runs: list[Any]) -> list[str]:
    first = runs[0]
    lines = [
        f"Run 1 of {len(runs)}:",
        "",
        "| epoch | training time so far (s) | this epoch's training batches (s) | val/acc "
        "| test acc |",
        "| ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {e['epoch']} | {e['training_time']:.2f} | {e['train_seconds']:.2f} | "
            f"{e['val_acc']:.4f} | {e['test_acc']:.4f} |"
            for e in first.epochs
        ),
        "",
    ]
    for i, run in enumerate(runs, 1):
        test, m = time_to_98(run), run.metrics
        val = next((e for e in run.epochs if e["val_acc"] >= 0.98), None)
        reached = (
            f"98 % test accuracy first after epoch {test['epoch']}, at "
            f"**{test['training_time']:.1f} s** of training"
            if test
            else "98 % test accuracy **not reached**"
        )
        if val:
            reached += f"; `val/acc` ≥ 0.98 first after epoch {val['epoch']}, at "
            reached += f"{val['training_time']:.1f} s"
        lines.append(
            f"- Run {i}: {reached}. Final `test/acc` (metrics.json, best-by-`val/acc` "
            f"checkpoint) {m['test/acc']:.4f}; `fit_seconds` {m['fit_seconds']:.1f} s for "
            f"{m['epoch']} epochs; launch to exit (imports, data, sanity check, training, "
            f"test, figures) {run.seconds:.1f} s; peak RSS {run.peak_rss_mb:.0f} MB."
        )
    return lines


def targets(
    t: Any, loops: dict[str, Any], extra: list[dict], default: list[Any] | None
) -> list[str]:
    r = ratios(loops)
    rows = [
        "| target | measured | verdict |",
        "| --- | --- | --- |",
        *(
            f"| issue 14: {row['experiment']}, every default callback on, ≤ "
            f"{row['target']:.2f}× the bare loop with the same fused optimizer | "
            f"{row['ratio']:.2f} (epoch after epoch in one process, below) | "
            f"{verdict(row['ratio'], row['target'], True)} |"
            for row in extra
            if row["variant"] == "as it is"
        ),
        f"| issue 3: (c)/(b) ≤ {t.c_over_b} at batch 64 | {r['c/b']:.2f} against (b) as "
        f"that issue defines it (default, for-loop Adam), {r['c/b_fused']:.2f} against (b) "
        "with fused Adam (the separate runs below) | "
        f"{verdict(r['c/b'], t.c_over_b, True)}; against fused Adam "
        f"{verdict(r['c/b_fused'], t.c_over_b, True)} |",
        f"| (a)/(c) ≥ {t.a_over_c:.0f} | {r['a/c image']:.1f} per image "
        f"({r['a/c epoch']:.1f} per epoch: (a)'s epoch has 60 000 images, (c)'s 55 000) | "
        f"{verdict(r['a/c image'], t.a_over_c, False)} |",
    ]
    if not default:
        rows += [
            f"| 98 % test accuracy in ≤ {t.seconds_to_98:.0f} s of training | "
            "not measured (--quick) | – |",
            f"| peak RSS of a default run ≤ {t.rss_mb / 1000} GB | not measured (--quick) | – |",
        ]
        return rows
    t98 = median_time_to_98(default)
    each = ", ".join(
        f"{t['training_time']:.1f} s" if (t := time_to_98(run)) else "not reached"
        for run in default
    )
    rss = max(run.peak_rss_mb for run in default) / 1000
    rows += [
        f"| 98 % test accuracy in ≤ {t.seconds_to_98:.0f} s of training | "
        + (f"median {t98:.1f} s of {len(default)} runs ({each})" if t98 else each)
        + " | "
        + (verdict(t98, t.seconds_to_98, True, " s") if t98 else "**missed**")
        + " |",
        f"| peak RSS of a default run ≤ {t.rss_mb / 1000} GB | {rss:.2f} GB | "
        f"{verdict(rss, t.rss_mb / 1000, True, ' GB')} |",
    ]
    return rows


def why_missed(t: Any, loops: dict[str, Any], extra: list[dict]) -> list[str]:
    """Why the ratio targets that are missed are missed, from this run's figures."""
    r = ratios(loops)
    a = loops["a"]
    lines = []
    if r["a/c image"] < t.a_over_c:
        a_over_b = r["a/c image"] * r["c/b_fused"]  # (a)/(b fused), per image
        need = (
            f"so (a)/(c) ≥ {t.a_over_c:.0f} would need mnist-train to be no more than "
            f"{100 * (a_over_b / t.a_over_c - 1):.0f} % slower than that bare loop"
            if a_over_b > t.a_over_c
            else "short of the target itself"
        )
        lines.append(
            f"- (a)/(c): the tutorial loop takes {60_000 / a.samples_per_s:.1f} s per "
            "60 000-image epoch on this machine, not the 11.9 s the issue measured. Even the "
            f"bare loop with fused Adam is only about {a_over_b:.1f} times faster than it per "
            f"image ((a)/(c) times the paired (c)/(b with fused Adam)), {need}."
        )
    for row in extra:
        if row["variant"] != "as it is" or row["ratio"] <= row["target"]:
            continue
        alone = next(
            (r for r in extra if r["experiment"] == row["experiment"] and r is not row), None
        )
        if alone is None:  # --quick measures mnist-train as it is only
            continue
        step_us = row["extra_us"] / (row["ratio"] - 1) if row["ratio"] > 1 else float("nan")
        lines.append(
            f"- {row['experiment']}: {row['ratio']:.2f}, a step takes {row['extra_us']:.0f} µs "
            f"more than the bare loop's (about {step_us:.0f} µs). Lightning alone (no "
            f"checkpoints, interrupt handler, progress bar, summary or logger) is "
            f"{alone['extra_us']:.0f} µs of it ({alone['ratio']:.2f}×): its loop, the "
            "optimizer closure, the precision plugin and the hooks it calls on the module and "
            "every callback at each step (see the profile at the end). The project's default "
            f"callbacks and logging add the other {row['extra_us'] - alone['extra_us']:.0f} µs. "
            "Bypassing Lightning's optimizer or backward wrappers, or taking several steps per "
            "`training_step` call, would cut this but change what Trainer flags and callbacks "
            "mean, so mnist-train does neither."
        )
    return ["Why:", "", *lines, ""] if lines else []


def scaling_tables(scaling: dict[str, list[dict]]) -> list[str]:
    has_c = any("mnist_train" in row for row in scaling["width"] + scaling["batch"])
    head_c = " mnist-train (c) | (c)/(b) |" if has_c else ""
    sep_c = " ---: | ---: |" if has_c else ""

    def c_cells(row: dict) -> str:
        if not has_c:
            return ""
        c, b = row["mnist_train"], row["plain"]
        return f" {c.full_epoch:.2f} | {c.median / b.median:.2f} |"

    lines = [
        f"| hidden widths | MACs per image | plain (b), fused Adam |{head_c} plain GFLOP/s |",
        f"| --- | ---: | ---: |{sep_c} ---: |",
    ]
    for row in scaling["width"]:
        b = row["plain"]
        gflops = 6 * row["macs"] * b.samples_per_s / 1e9
        lines.append(
            f"| {row['width']}-{row['width'] // 2} | {row['macs']:,} | {b.full_epoch:.2f} |"
            f"{c_cells(row)} {gflops:.0f} |"
        )
    lines += [
        "",
        f"| batch size | steps per epoch | plain (b), fused Adam |{head_c}",
        f"| ---: | ---: | ---: |{sep_c}",
    ]
    for row in scaling["batch"]:
        b = row["plain"]
        steps = -(-b.samples_per_epoch // row["batch"])
        lines.append(f"| {row['batch']} | {steps:,} | {b.full_epoch:.2f} |{c_cells(row)}")
    return lines


def plot(scaling: dict[str, list[dict]], path: Path) -> None:
    """Seconds per 55 000-image epoch against width and against batch size, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for ax, key, label in (
        (axes[0], "width", "first hidden width W (784-W-W/2-10, batch 64)"),
        (axes[1], "batch", "batch size (784-128-64-10)"),
    ):
        xs = [row[key] for row in scaling[key]]
        ax.plot(
            xs,
            [row["plain"].full_epoch for row in scaling[key]],
            "o-",
            label="plain (b), fused Adam",
        )
        if all("mnist_train" in row for row in scaling[key]):
            ys = [row["mnist_train"].full_epoch for row in scaling[key]]
            ax.plot(xs, ys, "s-", label="mnist-train (c)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("seconds per 55 000-image epoch")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(
    s: Any,
    t: Any,
    machine: dict[str, Any],
    command: str,
    loops: dict[str, Any],
    extra: list[dict],
    default: Any,
    scaling: dict[str, list[dict]],
    profile: tuple[list[tuple[str, float, float]], float] | None,
    plot_path: Path,
) -> str:
    r = ratios(loops)
    minutes = machine["minutes"]
    versions = ", ".join(f"{name} {v}" for name, v in machine["versions"].items())
    c_run = loops["c_runs"][0]
    epochs_note = "**--quick: a few batches per epoch, not representative.** " if s.quick else ""
    lines = [
        "# Benchmarks: the tutorial loop, plain PyTorch and mnist-train, side by side",
        "",
        f"{epochs_note}Measured {machine['date']} on {machine['cpu']}, {machine['cores']} cores "
        f"({machine['threads']} torch threads), GPU: {machine['gpu']}; {versions}. "
        f"Load average (1/5/15 min) {machine['load_before']} before, {machine['load_after']} "
        f"after; other processes used {machine['others_cpu']:.0f} CPU-seconds during the run "
        f"({100 * machine['others_cpu'] / (60 * minutes * machine['cores']):.0f} % of the "
        f"machine). Made by `{command}` (`make bench`) in {minutes:.1f} min. A run during "
        "which other processes used more than a tenth of a core is run again "
        + (f"(up to {s.tries - 1} times, 30 s apart); " if s.tries > 1 else "(not in --quick); ")
        + (
            f"**{len(STILL_CONTENDED)} run(s) shared the machine on every try**: "
            + "; ".join(f"`{c}`" for c in STILL_CONTENDED)
            if STILL_CONTENDED
            else "every figure below comes from a run that had the machine to itself"
        )
        + ".",
        "",
        "## Targets (issues 3 and 14)",
        "",
        *targets(t, loops, extra, default),
        "",
        *why_missed(t, loops, extra),
        "## (a), (b), (c): 784-128-64-10, batch 64, Adam 1e-3, seed 42, CPU",
        "",
        *side_by_side(loops),
        "",
        f"Ratios of median seconds per epoch, each the median over the {len(loops['repeats'])} "
        f"repeats of that repeat's ratio: (c)/(b) = {r['c/b']:.2f}, (c)/(b with fused "
        f"Adam) = {r['c/b_fused']:.2f}, (c)/(b with fused Adam and Lightning's environment "
        f"variable) = {r['c/b_nvml']:.2f}, (a)/(c) = {r['a/c epoch']:.1f} per epoch and "
        f"{r['a/c image']:.1f} per image. (c) was `{' '.join(c_run.command)}`. For scale, "
        f"a process that only runs `import torch` peaks at {loops['baseline_rss']['torch']:.0f}"
        f" MB, `import lightning` at {loops['baseline_rss']['lightning']:.0f} MB.",
        "",
        f"`import lightning` sets `PYTORCH_NVML_BASED_CUDA_CHECK=1` "
        "(in `lightning/fabric/__init__.py`), so that `torch.cuda.is_available()` asks NVML "
        "instead of initialising CUDA. On this machine (a CUDA build of torch, no GPU) every "
        "such call then tries to load libnvidia-ml and fails, uncached, and torch's "
        "`Adam.step` makes the call on every step (`Optimizer._accelerator_graph_capture_"
        f"health_check`): one call takes {loops['is_available_us']['set']:.0f} µs with the "
        f"variable set and {loops['is_available_us']['unset']:.1f} µs without (timeit). The "
        f"same plain loop takes {100 * (r['b_nvml/b_fused'] - 1):+.0f} % per epoch with only "
        f"that variable set (median of the repeats' ratios; of the pooled epochs: "
        f"{100 * (loops['b_nvml'].median / loops['b_fused'].median - 1):+.0f} %). "
        "In mnist-train's process, while it trains, the "
        f"variable is `{loops['nvml_in_mnist_train']}`, so mnist-train "
        + (
            "pays this too, and (c)/(b with the variable) is what the rest of the framework costs."
            if loops["nvml_in_mnist_train"] == "1"
            else "does not pay it."
        ),
        "",
        "## mnist-train against the bare loop in one process (issue 14's targets)",
        "",
        "Every training epoch of `mnist-train` followed, in the same process, by an epoch of a "
        "bare PyTorch loop over the same training tensors with a twin of the same network, "
        "the same fused optimizer and the same schedule (`benchmarks/paired_epochs.py`): the "
        "epochs compared share the machine's state, which separate runs minutes apart do not. "
        "Each experiment as it is (every default callback and TensorBoard) and as Lightning "
        "alone (no checkpoints, interrupt handler, progress bar, summary or logger):",
        "",
        *overhead.table(extra),
        "",
        f"Medians over {extra[0]['pairs']} pairs of epochs per row"
        + (f", on {s.overhead_train_size:,} images" if s.overhead_train_size else "")
        + ". Made by `python -m benchmarks overhead`.",
        "",
    ]
    if default:
        lines += [
            "## (d) The default experiment: time to 98 % test accuracy",
            "",
            "`mnist-train trainer.accelerator=cpu` (784-512-256-10, dropout 0.2, label "
            "smoothing 0.1, AdamW 2e-3 one-cycle, batch 128, 12 epochs), with the accuracy on "
            "the official 10 000 test "
            "images measured after every epoch's validation by the benchmark's callback, with "
            "its clock paused. *Training time* runs from Lightning's `on_train_start` (data "
            "loaded, sanity check done) to the end of that epoch's validation pass, so it "
            "includes every epoch's validation and the earlier epochs' checkpoint writes.",
            "",
            *default_section(default),
            "",
        ]
    lines += [
        "## (e) Epoch time against hidden width and batch size",
        "",
        f"![seconds per epoch against width and batch size]({plot_path.name})",
        "",
        "Seconds per 55 000-image training epoch (median). Width: 784-W-W/2-10 (W = 128 is "
        "the headline model), batch 64, each epoch measured on "
        + (
            f"the first {s.width_train_size:,} images of the split (`data.train_subset` for "
            f"mnist-train), {s.width_epochs - 1} epochs after a warm-up, and scaled by "
            f"55 000 / {s.width_train_size:,}"
            if s.width_train_size
            else "the whole split"
        )
        + ". The plain loop uses fused Adam here, as mnist-train does, so that (c)/(b) is the "
        "framework's cost alone. GFLOP/s counts 6 FLOP per weight multiply-accumulate per "
        "image (forward and "
        "backward). Batch size: 784-128-64-10 on "
        + (f"{s.train_size:,} images" if s.train_size else "all 55 000 images")
        + f", {s.epochs - 1} epochs after a warm-up. Each point is one run of each loop, so a "
        "slow phase of this VM "
        "that hits one of the two skews its (c)/(b): a ratio below 1, or far above its "
        "neighbours, is that, not a property of the width or batch size.",
        "",
        *scaling_tables(scaling),
        "",
    ]
    if profile is not None:
        rows, step_us = profile
        lines += [
            "## Where mnist-train's training step goes (py-spy)",
            "",
            *profile_step.table(rows, step_us),
            "",
            "Made by `python -m benchmarks profile` (needs `pip install py-spy`).",
            "",
        ]
    lines += [
        "## How each figure is measured",
        "",
        "- Every loop runs in its own subprocess, one at a time. Peak RSS is that process's "
        "own `ru_maxrss` (from `os.wait4`), in MB of 10^6 bytes; for a loop run more than "
        "once, the largest.",
        f"- (b) and (c) at batch 64 ran {s.repeats} times each, interleaved (b, b fused, b "
        "fused with the variable, c, then again); their measured epochs are pooled in the "
        "table and the ratios are medians over the repeats of each repeat's own ratio: the "
        "speed of this virtual machine drifts over minutes (the same plain loop has measured "
        "anywhere from 0.62 to 1.1 s per epoch in one hour, in fast and slow phases that "
        "no process on the machine accounts for), and comparing runs a minute apart keeps "
        "most of the drift out of the ratios.",
        "- Seconds per epoch: the median of the epochs after the first, which is a warm-up "
        "(allocator, oneDNN kernels, lazy imports). The three loops train the same "
        "784-128-64-10 ReLU network (no dropout), batch 64, Adam lr 1e-3, seed 42.",
        "- (a) reads MNIST with torchvision's `datasets.MNIST(download=False)` from the same "
        "IDX files, one PIL image at a time through `ToTensor()` and `Normalize((0.1307,), "
        "(0.3081,))`, `DataLoader(batch_size=64, shuffle=True, num_workers=0)`; its epoch is "
        "all 60 000 training images, as in the tutorials. Its time is the loop over the "
        "loader, forward, backward and `Adam.step`.",
        "- (b) trains on mnist-train's own 55 000-image training split (same seeded "
        "permutation, the same 5 000 held out), held as one normalised float tensor; batches "
        "are slices of a fresh permutation per epoch. Default `torch.optim.Adam` (the "
        "for-loop implementation on CPU); the *fused Adam* row is the same loop with "
        "`fused=True`, which is what mnist-train uses.",
        "- (c) is `mnist-train` itself in a temporary directory (logging to TensorBoard, "
        "torchmetrics, progress bar, its checkpoint callbacks, test and figures at the end), "
        "with one extra, passive callback (`benchmarks/epoch_timer.py`) that reads the clock at "
        "`on_train_epoch_start` and at the start of the epoch's validation: that interval is "
        "the training part of the epoch, comparable with (a) and (b). The *whole epoch cycle* "
        "row is independent of that callback: the gaps between consecutive `val/acc` events' "
        "wall times in the run's TensorBoard event file, i.e. training plus the validation "
        "pass over 5 000 images plus the checkpoint writes.",
        "- Test accuracies in the side-by-side table are a sanity check that every loop "
        "learns, after each loop's own number of epochs; (c)'s is its best-by-validation "
        "checkpoint.",
        "",
    ]
    return "\n".join(lines)
