"""Presets over seeds (`--presets`), and the candidate recipes a preset was chosen from
(`--candidates`: the JSON file's `train` commands, run again), into docs/accuracy.json (or
docs/fashion.json) with every seed's validation curve; a preset measured again replaces its own.
"""

import argparse
import json
import tempfile
from pathlib import Path

from matplotlib.figure import Figure

from benchmarks.common import DOCS, QUIET_CPU, mnist_train, save, scalars

OUT = {"mnist": DOCS / "accuracy.json", "fashion_mnist": DOCS / "fashion.json"}
CURVES = {
    "mnist": DOCS / "accuracy_curves.png",
    "fashion_mnist": DOCS / "images/fashion_curves.png",
}


def train(overrides: list[str]) -> dict:
    """One `mnist-train <overrides>`: its figures and its val/acc curve."""
    with tempfile.TemporaryDirectory(prefix="bench-accuracy-") as tmp:
        run = mnist_train([*overrides, *QUIET_CPU], Path(tmp))
        curve = scalars(run.dir / "tensorboard").get("val/acc", [])
    m = run.metrics
    result = {"test_acc": m["test/acc"], "val_acc_best": m["val/acc_best"]}
    result |= {"fit_seconds": m["fit_seconds"], "epochs": m["epoch"]}
    print(" ".join(run.command), result, flush=True)
    return result | {"curve": [(seconds, acc) for _, seconds, acc in curve]}


def draw_curves(presets: dict, path: Path) -> None:
    fig = Figure(figsize=(7, 4.2), dpi=110, layout="tight")
    ax = fig.subplots()
    for preset, entry in presets.items():
        for i, run in enumerate(entry["runs"]):
            x, y = zip(*run["curve"], strict=True) if run["curve"] else ((), ())
            line = ax.plot([t / 60 for t in x], [100 * v for v in y], alpha=1 if i else 0.4)
            line[0].set(label=None if i else preset, color=f"C{list(presets).index(preset)}")
    ax.set(xlabel="minutes of training (2-core CPU)", ylabel="validation accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.savefig(path)


def main(args: argparse.Namespace) -> None:
    data = [] if args.data == "mnist" else [f"data={args.data}"]
    out = OUT[args.data]
    if args.candidates:
        runs = json.loads(out.read_text())["candidates"]["runs"]
        for name, run in runs.items():
            got = train(run["train"].split()[1:])
            runs[name] = {k: got[k] for k in ("val_acc_best", "test_acc", "fit_seconds")}
            runs[name]["train"] = run["train"]
        save(out, ("candidates",), {"runs": runs}, args.command_line)
    for preset in filter(None, args.presets.split(",")):
        overrides = [*data] + ([] if preset == "default" else [f"experiment={preset}"])
        runs = [{"seed": seed} | train([*overrides, f"seed={seed}"]) for seed in range(args.seeds)]
        train_command = " ".join(["mnist-train", *overrides])
        save(out, ("presets", preset), {"train": train_command, "runs": runs}, args.command_line)
    draw_curves(json.loads(out.read_text())["presets"], CURVES[args.data])
    print(f"wrote {out}")
