"""The tutorial loop (a), a plain PyTorch loop (b) and `mnist-train` (c) side by side, the
default experiment's time to 98 % (d), and epoch time against width and batch size (e):
docs/benchmarks.json and docs/benchmarks_scaling.png (`make bench`, about 17 minutes;
`--quick` runs a few batches of each into outputs/, as a smoke test).

Every loop runs in its own subprocess, one after another. Seconds per epoch are medians over
the epochs after the first (the warm-up). (b) and (c) at batch 64 run several times,
interleaved, and their ratio is the median of each repeat's ratio: this VM's speed drifts by
tens of percent from one minute to the next.
"""

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from functools import cache
from pathlib import Path

from benchmarks import overhead
from benchmarks.common import (
    BATCH_SIZE,
    DOCS,
    HIDDEN,
    RECIPE,
    ROOT,
    TRAIN_IMAGES,
    busy_cpu_seconds,
    mnist_train,
    run_child,
    save,
)

# `import lightning` sets this (lightning/fabric/__init__.py), so that torch.cuda.is_available()
# asks NVML instead of initialising CUDA; without a GPU every such call tries to load
# libnvidia-ml, and torch's Adam.step asks once per step.
LIGHTNING_ENV = {"PYTORCH_NVML_BASED_CUDA_CHECK": "1"}
IS_AVAILABLE_US = (
    "import timeit, torch; "
    "print(1e6 * min(timeit.repeat(torch.cuda.is_available, number=200, repeat=5)) / 200)"
)
# How much to run: the full benchmark, and --quick (a smoke test: seconds, not representative).
# fmt: off
FULL = dict(tutorial_batches=None, epochs=6, train_size=None, width_size=6400, repeats=4,
            widths=(128, 512, 1024, 2048, 4096), batches=(16, 64, 256, 1024, 4096), tries=4,
            default_runs=2, overhead_epochs=6, overhead_rounds=2)
QUICK = FULL | dict(tutorial_batches=20, epochs=2, train_size=1280, width_size=1280, repeats=1,
                    widths=(128, 256), batches=(64, 256), tries=1, default_runs=0,
                    overhead_epochs=2, overhead_rounds=1)
# fmt: on


def plain_env(nvml_check: bool = False) -> dict[str, str]:
    """Our environment without Lightning's variable (pytest's conftest may have set it), or
    with it."""
    env = {k: v for k, v in os.environ.items() if k not in LIGHTNING_ENV}
    return env | (LIGHTNING_ENV if nvml_check else {})


def row(name: str, seconds: list[float], samples: int, rss: float, acc: float) -> dict:
    """One loop's figures: warm-up epoch, median of the rest scaled to a 55 000-image epoch."""
    median = statistics.median(seconds[1:])
    return {
        "loop": name,
        "images per epoch": samples,
        "warm-up epoch (s)": round(seconds[0], 2),
        "s per epoch": round(median, 3),
        "s per 55 000 images": round(median * TRAIN_IMAGES / samples, 3),
        "images/s": round(samples / median),
        "peak RSS (MB)": round(rss),
        "test acc": round(acc, 4),
        "epoch seconds": [round(s, 3) for s in seconds[1:]],
    }


@cache
def loop(
    kind: str,
    hidden=HIDDEN,
    batch=BATCH_SIZE,
    epochs=6,
    size=None,
    fused=False,
    nvml_check=False,
    tries=1,
    batches=None,
    repeat=0,
) -> dict:
    """`python -m benchmarks.loops <kind> ...` in its own process: (a) or (b)."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out = Path(tmp) / "result.json"
        args = ["--epochs", str(epochs), "--hidden", *map(str, hidden), "--batch-size", str(batch)]
        args += ["--train-size", str(size)] * bool(size) + ["--max-batches", str(batches)] * bool(
            batches
        )
        args += ["--fused"] * fused + ["--out", str(out)]
        cmd = [sys.executable, "-m", "benchmarks.loops", kind, *args]
        child = run_child(cmd, ROOT, plain_env(nvml_check), tries)
        r = json.loads(out.read_text())
    name = " ".join(
        ["(a) tutorial" if kind == "tutorial" else "(b) plain"]
        + ["fused Adam"] * fused
        + ["with Lightning's NVML variable"] * nvml_check
    )
    return row(name, r["epoch_seconds"], r["samples_per_epoch"], child.peak_rss_mb, r["test_acc"])


@cache
def train(hidden=HIDDEN, batch=BATCH_SIZE, epochs=6, size=None, tries=1, repeat=0) -> dict:
    """(c): mnist-train with the recipe and the passive epoch timer."""
    overrides = [o for o in RECIPE if not o.startswith("data.batch_size=")]
    overrides += [f"data.batch_size={batch}", f"trainer.max_epochs={epochs}"]
    overrides += [f"model.hidden_dims=[{','.join(map(str, hidden))}]"] * (hidden != HIDDEN)
    overrides += [f"data.train_subset={size}"] * bool(size)
    run = mnist_train(overrides, timer=True, tries=tries)
    seconds = [e["train_seconds"] for e in run.epochs]
    r = row(
        "(c) mnist-train", seconds, size or TRAIN_IMAGES, run.peak_rss_mb, run.metrics["test/acc"]
    )
    return r | {"command": " ".join(run.command), "nvml_check": run.epochs[0]["nvml_check"]}


def headline(s: dict) -> dict:
    """(a), the three (b)s and (c) at batch 64, (b) and (c) repeated and interleaved."""
    size = dict(epochs=s["epochs"], size=s["train_size"], tries=s["tries"])
    keys = {
        "b": {},
        "b fused": {"fused": True},
        "b fused nvml": {"fused": True, "nvml_check": True},
    }
    repeats = []
    for r in range(s["repeats"]):
        done = {key: loop("plain", **kw, **size, repeat=r) for key, kw in keys.items()}
        repeats.append(done | {"c": train(**size, repeat=r)})

    def ratio(a: str, b: str) -> float:
        return statistics.median(r[a]["s per epoch"] / r[b]["s per epoch"] for r in repeats)

    tutorial = loop("tutorial", epochs=4, batches=s["tutorial_batches"], tries=s["tries"])
    c_per_image = statistics.median(
        r["c"]["s per epoch"] / r["c"]["images per epoch"] for r in repeats
    )
    a_per_image = tutorial["s per epoch"] / tutorial["images per epoch"]
    return {
        "loops": [tutorial, *repeats[0].values()],
        "repeats": [{k: v["s per epoch"] for k, v in r.items()} for r in repeats],
        "ratios": {
            "c/b": ratio("c", "b"),
            "c/b fused": ratio("c", "b fused"),
            "c/b fused nvml": ratio("c", "b fused nvml"),
            "a/c per image": a_per_image / c_per_image,
        },
        "is_available_us": {
            f"variable {k}": float(
                run_child([sys.executable, "-c", IS_AVAILABLE_US], ROOT, plain_env(v)).output
            )
            for k, v in (("unset", False), ("set", True))
        },
        "import_peak_rss_mb": {
            m: round(run_child([sys.executable, "-c", f"import {m}"], ROOT).peak_rss_mb)
            for m in ("torch", "lightning")
        },
    }


def default_runs(s: dict) -> list[dict]:
    """(d): the default experiment, test accuracy after every epoch (clock paused)."""
    runs = []
    for _ in range(s["default_runs"]):
        run = mnist_train(
            ["trainer.accelerator=cpu"], timer=True, test_every_epoch=True, tries=s["tries"]
        )
        first = next((e for e in run.epochs if e["test_acc"] >= 0.98), None)
        runs.append(
            {
                "s to 98 % test acc": first and round(first["training_time"], 1),
                "after epoch": first and first["epoch"],
                "test/acc": run.metrics["test/acc"],
                "fit_seconds": run.metrics["fit_seconds"],
                "launch to exit (s)": round(run.seconds, 1),
                "peak RSS (MB)": round(run.peak_rss_mb),
                "epochs": run.epochs,
            }
        )
    return runs


def sweeps(s: dict) -> dict[str, list[dict]]:
    """(e): epoch time against width (784-W-W/2-10, batch 64, on a subset, scaled to a full
    epoch) and batch size (784-128-64-10). (b) uses fused Adam here, as mnist-train does."""
    out: dict[str, list[dict]] = {"width": [], "batch": []}
    for w in s["widths"]:
        size = dict(hidden=(w, w // 2), epochs=s["epochs"], size=s["width_size"], tries=s["tries"])
        b, c = loop("plain", fused=True, **size), train(**size)
        macs = sum(x * y for x, y in itertools.pairwise([784, w, w // 2, 10]))
        out["width"].append(
            {
                "hidden": f"{w}-{w // 2}",
                "MACs per image": macs,
                "plain (b), fused": b["s per 55 000 images"],
                "mnist-train (c)": c["s per 55 000 images"],
                "(c)/(b)": round(c["s per epoch"] / b["s per epoch"], 2),
                "plain GFLOP/s": round(6 * macs * b["images/s"] / 1e9),
            }
        )
    for batch in s["batches"]:
        size = dict(batch=batch, epochs=s["epochs"], size=s["train_size"], tries=s["tries"])
        b, c = loop("plain", fused=True, **size), train(**size)
        out["batch"].append(
            {
                "batch": batch,
                "plain (b), fused": b["s per 55 000 images"],
                "mnist-train (c)": c["s per 55 000 images"],
                "(c)/(b)": round(c["s per epoch"] / b["s per epoch"], 2),
            }
        )
    return out


def plot(scaling: dict[str, list[dict]], path: Path) -> None:
    """Seconds per 55 000-image epoch against width and against batch size, log-log."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    for ax, key, label in zip(
        fig.subplots(1, 2),
        ("width", "batch"),
        ("first hidden width W (784-W-W/2-10, batch 64)", "batch size (784-128-64-10)"),
        strict=True,
    ):
        xs = [
            int(r["hidden"].split("-")[0]) if key == "width" else r["batch"] for r in scaling[key]
        ]
        for column, style in (("plain (b), fused", "o-"), ("mnist-train (c)", "s-")):
            ax.plot(xs, [r[column] for r in scaling[key]], style, label=column)
        ax.set(yscale="log", xlabel=label, ylabel="seconds per 55 000-image epoch")
        ax.set_xscale("log", base=2)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=110)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="a few batches of each (~2 min)")
    parser.add_argument(
        "--out",
        type=Path,
        help="JSON (default: docs/benchmarks.json, or "
        "outputs/benchmarks-quick.json with --quick); the plot goes beside it",
    )


def main(args: argparse.Namespace) -> None:
    s = QUICK if args.quick else FULL
    out = args.out or (
        ROOT / "outputs/benchmarks-quick.json" if args.quick else DOCS / "benchmarks.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    started, busy = time.perf_counter(), busy_cpu_seconds()
    print("(a) (b) (c) side by side ...", flush=True)
    result = headline(s)
    print("(c) against (b) in one process ...", flush=True)
    subset = [f"data.train_subset={s['train_size']}"] if s["train_size"] else []
    result["overhead"] = overhead.measure(
        s["overhead_epochs"], s["overhead_rounds"], subset, s["tries"]
    )
    print("(d) the default experiment ...", flush=True)
    result["default_runs"] = default_runs(s)
    print("(e) width and batch-size sweeps ...", flush=True)
    result |= sweeps(s)
    result["minutes"] = round((time.perf_counter() - started) / 60, 1)
    result["others_cpu_seconds"] = round(busy_cpu_seconds() - busy)
    plot(result, out.with_name(out.stem + "_scaling.png"))
    save(out, (), result, args.command_line)
    print(f"wrote {out}")
