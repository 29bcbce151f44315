"""The tutorial loop (a), a plain PyTorch loop (b) and `mnist-train` (c) side by side, (c)
against a bare loop in one process (overhead), the default experiment's time to 98 % (d), and
epoch time against width and batch size (e): docs/benchmarks.json and
docs/benchmarks_scaling.png (`make bench`; method and figures: docs/benchmarks.md).

(a) and (b) run in processes of their own (`python -m benchmarks.tutorial SPEC`): their peak
memory is their own and Lightning is never imported. This VM's speed drifts by tens of percent
from minute to minute, so (b) and (c) run interleaved, and a ratio is the median of repeats'.
"""

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from benchmarks.common import (
    DOCS,
    MLP_128_64_ADAM,
    RECIPE,
    ROOT,
    TRAIN_IMAGES,
    busy_cpu_seconds,
    data_dir,
    mnist_train,
    run_child,
    save,
)
from mnist_lightning.model.mlp import MNIST_MEAN, MNIST_STD  # the network's own normalisation

SEED, BATCH_SIZE, LR, HIDDEN = 42, 64, 1e-3, (128, 64)  # as MLP_128_64_ADAM
# `import lightning` sets this (lightning/fabric/__init__.py), so that torch.cuda.is_available()
# asks NVML instead of initialising CUDA; without a GPU every such call tries to load
# libnvidia-ml, and torch's Adam.step asks once per step.
LIGHTNING_ENV = {"PYTORCH_NVML_BASED_CUDA_CHECK": "1"}
EPOCHS, REPEATS, TRIES, WIDTH_SUBSET = 6, 4, 4, 6400  # the width sweep trains on a subset
WIDTHS, BATCHES = (128, 512, 1024, 2048, 4096), (16, 64, 256, 1024, 4096)
EXPERIMENTS = {"default experiment": [], "784-128-64-10, batch 64, Adam": MLP_128_64_ADAM}
LIGHTNING_ALONE = [f"~callbacks.{c}" for c in ("graceful_interrupt", "progress_bar")]
LIGHTNING_ALONE += [f"~callbacks.{c}_checkpoint" for c in ("best", "last", "periodic")]
LIGHTNING_ALONE += ["trainer.enable_model_summary=false", "trainer.enable_progress_bar=false"]
LIGHTNING_ALONE += ["logger=none"]
VARIANTS = {"as it is": [], "Lightning alone": LIGHTNING_ALONE}


def mlp(hidden=HIDDEN) -> nn.Sequential:
    """784 -> hidden -> 10 with ReLU, no dropout: the tutorial network."""
    widths = [28 * 28, *hidden]
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(widths[-1], 10))


def read_split(prefix: str, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(b)'s data from the IDX files: normalised float rows (N, 784) and int64 labels, only
    `rows` if given (selected first, converted in place: no copies)."""
    raw = data_dir() / "MNIST" / "raw"
    images = np.fromfile(raw / f"{prefix}-images-idx3-ubyte", dtype=np.uint8, offset=16)
    labels = np.fromfile(raw / f"{prefix}-labels-idx1-ubyte", dtype=np.uint8, offset=8)
    x, y = torch.from_numpy(images).view(-1, 784), torch.from_numpy(labels).long()
    if rows is not None:
        x, y = x[rows], y[rows]
    return x.float().div_(255).sub_(MNIST_MEAN).div_(MNIST_STD), y


def tutorial_batches(train: bool, batch_size: int) -> DataLoader:
    from torchvision import datasets, transforms  # only in (a)'s process

    normalise = transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))
    transform = transforms.Compose([transforms.ToTensor(), normalise])
    dataset = datasets.MNIST(root=data_dir(), train=train, download=False, transform=transform)
    return DataLoader(dataset, batch_size=batch_size, shuffle=train)


def run_loop(kind: str, hidden, batch, epochs, size, fused) -> dict:
    """(a) or (b) in this process: seconds of each epoch, images per epoch, test accuracy."""
    torch.manual_seed(SEED)
    model = mlp(hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, fused=fused or None)
    if kind == "tutorial":
        train, test = tutorial_batches(True, BATCH_SIZE), tutorial_batches(False, 1000)
    else:  # mnist-train's training split: its seeded permutation, the first 5 000 held out
        order = torch.randperm(60_000, generator=torch.Generator().manual_seed(SEED))[5000:]
        x, y = read_split("train", order[:size])
        generator = torch.Generator().manual_seed(SEED)
        test = [read_split("t10k")]
    seconds, samples = [], 0
    for _ in range(epochs):
        model.train()
        start, samples = time.perf_counter(), 0
        if kind == "tutorial":
            epoch = train
        else:
            epoch = ((x[i], y[i]) for i in torch.randperm(len(y), generator=generator).split(batch))
        for images, labels in epoch:
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            samples += len(labels)
        seconds.append(time.perf_counter() - start)
    model.eval()
    with torch.no_grad():
        right = sum(int((model(images).argmax(1) == labels).sum()) for images, labels in test)
    return {"epoch_seconds": seconds, "samples_per_epoch": samples, "test_acc": right / 10_000}


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
def loop(kind, hidden=HIDDEN, batch=BATCH_SIZE, epochs=EPOCHS, size=None, fused=False,
         nvml_check=False, repeat=0) -> dict:  # fmt: skip
    """(a) or (b) in its own process (`repeat` only tells repeats apart for the cache)."""
    spec = dict(kind=kind, hidden=hidden, batch=batch, epochs=epochs, size=size, fused=fused)
    cmd = [sys.executable, "-m", "benchmarks.tutorial", json.dumps(spec)]
    env = {k: v for k, v in os.environ.items() if k not in LIGHTNING_ENV}  # pytest may set it
    _, rss, output = run_child(cmd, ROOT, env | (LIGHTNING_ENV if nvml_check else {}), TRIES)
    r = json.loads(output.splitlines()[-1])  # the loop's last line of output
    name = ["(a) tutorial" if kind == "tutorial" else "(b) plain"] + ["fused Adam"] * fused
    name += ["with Lightning's NVML variable"] * nvml_check
    seconds, samples = r["epoch_seconds"], r["samples_per_epoch"]
    return row(" ".join(name), seconds, samples, rss, r["test_acc"])


@cache
def train(hidden=HIDDEN, batch=BATCH_SIZE, epochs=EPOCHS, size=None, repeat=0) -> dict:
    """(c): mnist-train with the recipe and the passive epoch timer."""
    overrides = [o for o in RECIPE if not o.startswith("data.batch_size=")]
    overrides += [f"data.batch_size={batch}", f"trainer.max_epochs={epochs}"]
    overrides += [f"model.hidden_dims=[{','.join(map(str, hidden))}]"] * (hidden != HIDDEN)
    overrides += [f"data.train_subset={size}"] * bool(size)
    run = mnist_train(overrides, timer={}, tries=TRIES)
    seconds, acc = [e["train_seconds"] for e in run.epochs], run.metrics["test/acc"]
    return row("(c) mnist-train", seconds, size or TRAIN_IMAGES, run.peak_rss_mb, acc) | {
        "command": " ".join(run.command),
        "nvml_check": run.epochs[0]["nvml_check"],
    }


def headline() -> dict:
    """(a), the three (b)s and (c) at batch 64, (b) and (c) repeated and interleaved."""
    fused = {"fused": True}
    keys = {"b": {}, "b fused": fused, "b fused nvml": fused | {"nvml_check": True}}
    repeats = []
    for r in range(REPEATS):
        done = {key: loop("plain", **kw, repeat=r) for key, kw in keys.items()}
        repeats.append(done | {"c": train(repeat=r)})

    def ratio(a: str, b: str) -> float:
        return statistics.median(r[a]["s per epoch"] / r[b]["s per epoch"] for r in repeats)

    def per_image(r: dict) -> float:
        return r["s per epoch"] / r["images per epoch"]

    tutorial = loop("tutorial", epochs=4)
    c_per_image = statistics.median(per_image(r["c"]) for r in repeats)
    return {
        "loops": [tutorial, *repeats[0].values()],
        "repeats": [{k: v["s per epoch"] for k, v in r.items()} for r in repeats],
        "ratios": {f"c/{b}": ratio("c", b) for b in keys}
        | {"a/c per image": per_image(tutorial) / c_per_image},
    }


def overhead(rounds: int = 2) -> list[dict]:
    """Per experiment and variant: median epochs, the median ratio of paired epochs, and the
    median extra time per optimizer step."""
    pairs: dict[tuple[str, str], list] = {}
    for _, (experiment, overrides), (variant, switches) in itertools.product(
        range(rounds), EXPERIMENTS.items(), VARIANTS.items()
    ):
        cmd = [*overrides, *switches, f"trainer.max_epochs={EPOCHS}"]
        run = mnist_train(cmd, timer={"bare_loop": True}, tries=TRIES)
        got = [(e["train_seconds"], e["bare_seconds"], e["steps"]) for e in run.epochs[1:]]
        pairs.setdefault((experiment, variant), []).extend(got)  # after the warm-up epoch
    return [
        {
            "experiment": experiment,
            "mnist-train": variant,
            "its epoch (s)": round(statistics.median(c for c, _, _ in got), 2),
            "bare loop (s)": round(statistics.median(b for _, b, _ in got), 2),
            "ratio": round(statistics.median(c / b for c, b, _ in got), 2),
            "µs per step more": round(1e6 * statistics.median((c - b) / n for c, b, n in got)),
            "pairs": len(got),
        }
        for (experiment, variant), got in pairs.items()
    ]


def default_runs(count: int = 2) -> list[dict]:
    """(d): the default experiment, test accuracy after every epoch (clock paused)."""
    runs = []
    for _ in range(count):
        timer = {"test_every_epoch": True}
        run = mnist_train(["trainer.accelerator=cpu"], timer=timer, tries=TRIES)
        first, m = next((e for e in run.epochs if e["test_acc"] >= 0.98), None), run.metrics
        row = {"s to 98 % test acc": first and round(first["training_time"], 1)}
        row |= {"after epoch": first and first["epoch"], "test/acc": m["test/acc"]}
        row |= {"fit_seconds": m["fit_seconds"], "launch to exit (s)": round(run.seconds, 1)}
        runs.append(row | {"peak RSS (MB)": round(run.peak_rss_mb), "epochs": run.epochs})
    return runs


def sweeps() -> dict[str, list[dict]]:
    """(e): epoch time against width (784-W-W/2-10, batch 64, on a subset, scaled to a full
    epoch) and batch size (784-128-64-10). (b) uses fused Adam here, as mnist-train does."""
    out: dict[str, list[dict]] = {"width": [], "batch": []}
    points = [("width", w, dict(hidden=(w, w // 2), size=WIDTH_SUBSET)) for w in WIDTHS]
    points += [("batch", n, dict(batch=n)) for n in BATCHES]
    for key, x, kw in points:
        b, c = loop("plain", fused=True, **kw), train(**kw)
        r = {"hidden": f"{x}-{x // 2}"} if key == "width" else {"batch": x}
        r["plain (b), fused"] = b["s per 55 000 images"]
        r["mnist-train (c)"] = c["s per 55 000 images"]
        out[key].append(r | {"(c)/(b)": round(c["s per epoch"] / b["s per epoch"], 2)})
    return out


def plot(scaling: dict[str, list[dict]], path: Path) -> None:
    """Seconds per 55 000-image epoch against width and against batch size, log-log."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    labels = ("first hidden width W (784-W-W/2-10, batch 64)", "batch size (784-128-64-10)")
    for ax, key, label in zip(fig.subplots(1, 2), ("width", "batch"), labels, strict=True):
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


def main(args: argparse.Namespace) -> None:
    out = DOCS / "benchmarks.json"
    started, busy = time.perf_counter(), busy_cpu_seconds()
    print("(a) (b) (c) side by side ...", flush=True)
    result = headline()
    print("(c) against a bare loop in one process ...", flush=True)
    result["overhead"] = overhead()
    print("(d) the default experiment ...", flush=True)
    result["default_runs"] = default_runs()
    print("(e) width and batch-size sweeps ...", flush=True)
    result |= sweeps()
    result["minutes"] = round((time.perf_counter() - started) / 60, 1)
    result["others_cpu_seconds"] = round(busy_cpu_seconds() - busy)
    plot(result, out.with_name(out.stem + "_scaling.png"))
    save(out, (), result, args.command_line)
    print(f"wrote {out}")


if __name__ == "__main__":  # a loop's own process: python -m benchmarks.tutorial SPEC
    print(json.dumps(run_loop(**json.loads(sys.argv[1]))))
