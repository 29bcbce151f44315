"""Presets trained with several seeds, and the candidate recipes a preset was chosen from:
docs/accuracy.json (MNIST) or docs/fashion.json (`--data fashion_mnist`), with the validation
curves of every seed (docs/accuracy_curves.png, docs/images/fashion_curves.png).

    python -m benchmarks accuracy --presets best_cpu,paper_simard2003 [--seeds 3]
    python -m benchmarks accuracy --presets default,tutorial_mlp_128 --data fashion_mnist
    python -m benchmarks accuracy --presets "" --candidates   # how best_cpu was chosen

Each run is a real `mnist-train` on the CPU; its figures are its metrics.json and its
TensorBoard `val/acc` curve. Presets are (re)measured one at a time; the others stay.
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
# The recipes a preset was chosen from on the validation split, one run each with seed 42.
WIDE = "model=mlp model.hidden_dims=[1024,1024] model.label_smoothing=0.1"
CANDIDATES = {
    "mnist": {
        "translate, 20 epochs": f"{WIDE} model.dropout=0.3 data.augment=translate",
        "affine, 20 epochs": f"{WIDE} model.dropout=0.3 data.augment=affine",
        "elastic, 20 epochs": f"{WIDE} model.dropout=0.3 data.augment=elastic",
        "affine, 80 epochs": f"{WIDE} model.dropout=0.3 data.augment=affine",
        "elastic σ 4 α 34, 80 epochs": f"{WIDE} model.dropout=0.2 data.augment=elastic",
        "elastic σ 6 α 36 + stronger affine, 90 epochs (= best_cpu)": "experiment=best_cpu",
    },
    "fashion_mnist": {
        "no augmentation, 25 epochs": f"{WIDE} model.dropout=0.3",
        "translate ±2 px, 25 epochs": f"{WIDE} model.dropout=0.3 data.augment=translate",
        "mild affine (rotation 5°, scale 5 %, shear 5°, shift 2 px), 25 epochs": f"{WIDE} "
        "model.dropout=0.3 data.augment=affine data.max_rotation=5 data.max_scale=0.05 "
        "data.max_shear=5",
    },
}
EPOCHS = {"20 epochs": 20, "25 epochs": 25, "80 epochs": 80}  # the name says how many


def train(overrides: list[str], seed: int) -> dict:
    """One `mnist-train <overrides> seed=<seed>`: its figures and its val/acc curve."""
    with tempfile.TemporaryDirectory(prefix="bench-accuracy-") as tmp:
        run = mnist_train([*overrides, f"seed={seed}", *QUIET_CPU], Path(tmp))
        curve = scalars(run.dir / "tensorboard").get("val/acc", [])
    m = run.metrics
    result = {"seed": seed, "test_acc": m["test/acc"], "val_acc_best": m["val/acc_best"]}
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
        runs = {}
        for name, recipe in CANDIDATES[args.data].items():
            epochs = [f"trainer.max_epochs={n}" for end, n in EPOCHS.items() if name.endswith(end)]
            overrides = [*recipe.split(), *epochs]
            run = train([*data, *overrides], 42)
            runs[name] = {k: run[k] for k in ("val_acc_best", "test_acc", "fit_seconds")}
            runs[name]["train"] = " ".join(["mnist-train", *data, *overrides, "seed=42"])
        save(out, ("candidates",), {"runs": runs}, args.command_line)
    for preset in filter(None, args.presets.split(",")):
        overrides = [*data] + ([] if preset == "default" else [f"experiment={preset}"])
        runs = [train(overrides, seed) for seed in range(args.seeds)]
        train_command = " ".join(["mnist-train", *overrides])
        save(out, ("presets", preset), {"train": train_command, "runs": runs}, args.command_line)
    draw_curves(json.loads(out.read_text())["presets"], CURVES[args.data])
    print(f"wrote {out}")
