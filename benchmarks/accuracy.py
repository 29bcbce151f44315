"""Train the literature presets with several seeds; write docs/accuracy.md and its pictures.

    .venv/bin/python -m benchmarks.accuracy [--presets best_cpu,...] [--seeds 3]
    .venv/bin/python -m benchmarks.accuracy --presets "" --candidates   # how best_cpu was chosen
    .venv/bin/python -m benchmarks.accuracy --presets ""                # redraw the page only

Each run is a real `mnist-train` subprocess on the CPU. Its figures are its own metrics.json
(test accuracy of the best-by-validation checkpoint, training time) and its TensorBoard
`val/acc` curve against wall time. Results accumulate in docs/accuracy.json, one entry per
preset, so presets can be (re)measured one at a time; the page is redrawn from all of them.
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import lightning
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from benchmarks.common import ROOT, mnist_train
from benchmarks.events import scalars

DOCS = ROOT / "docs"
RESULTS = DOCS / "accuracy.json"
CANDIDATE_RESULTS = DOCS / "accuracy_candidates.json"
# The recipes best_cpu was chosen from, on the validation split (seed 42, one run each).
WIDE = ["model=mlp", "model.hidden_dims=[1024,1024]", "model.label_smoothing=0.1"]
CANDIDATES = {
    "translate, 20 epochs": [*WIDE, "model.dropout=0.3", "data.augment=translate"],
    "affine, 20 epochs": [*WIDE, "model.dropout=0.3", "data.augment=affine"],
    "elastic, 20 epochs": [*WIDE, "model.dropout=0.3", "data.augment=elastic"],
    "affine, 80 epochs": [*WIDE, "model.dropout=0.3", "data.augment=affine"],
    "elastic σ 4 α 34, 80 epochs": [*WIDE, "model.dropout=0.2", "data.augment=elastic"],
    "elastic σ 6 α 36 + stronger affine, 90 epochs (= best_cpu)": ["experiment=best_cpu"],
}
CANDIDATE_EPOCHS = {"20 epochs": 20, "80 epochs": 80, "90 epochs": 90}
# preset -> the literature row it answers (None: ours only)
PRESETS = {
    "paper_simard2003": "Simard et al. 2003 | 784-800-10, cross-entropy, no augmentation | 1.6 %",
    "paper_srivastava2014": (
        "Srivastava et al. 2014 | 3×1024 ReLU, dropout + max-norm, no augmentation | 1.06 %"
    ),
    "best_cpu": None,
}
# Presets without a row of their own in the literature table: what they are.
OURS = {"best_cpu": "784-1024-1024-10, dropout 0.2, affine + elastic distortions, 90 epochs"}
LITERATURE = [
    "LeCun et al. 1998 | 784-300-10 / 784-500-150-10 | 4.7 % / 2.95 %",
    "Simard et al. 2003 | 784-800-10, cross-entropy, no augmentation | 1.6 %",
    "Simard et al. 2003 | same, affine / elastic distortions | 1.1 % / 0.7 %",
    "Srivastava et al. 2014 | 3×1024 ReLU, dropout + max-norm, no augmentation | 1.06 %",
    "Srivastava et al. 2014 | 2×8192 ReLU, dropout + max-norm | 0.95 %",
    "Ciresan et al. 2010 | 784-2500-2000-1500-1000-500-10, elastic + affine, GPU, ~800 epochs "
    "| 0.35 %",
]


def train(overrides: list[str], seed: int, workdir: Path) -> dict:
    """One `mnist-train <overrides> seed=<seed>`: its metrics and val/acc curve."""
    run = mnist_train([*overrides, f"seed={seed}"], workdir)
    metrics = json.loads((run / "metrics.json").read_text())
    return {
        "seed": seed,
        "test_acc": metrics["test/acc"],
        "val_acc_best": metrics["val/acc_best"],
        "fit_seconds": metrics["fit_seconds"],
        "epochs": metrics["epoch"],
        "curve": val_curve(run / "tensorboard"),
    }


def val_curve(tensorboard: Path) -> list[tuple[float, float]]:
    """(seconds since the logger started, val/acc) for every validation of the run."""
    return [(seconds, acc) for _, seconds, acc in scalars(tensorboard).get("val/acc", [])]


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return (
        f"{cpu}, {os.cpu_count()} cores, no GPU; torch {torch.__version__}, "
        f"lightning {lightning.__version__}"
    )


def error(runs: list[dict]) -> str:
    """Mean ± std test error in %."""
    errors = [100 * (1 - r["test_acc"]) for r in runs]
    spread = statistics.stdev(errors) if len(errors) > 1 else 0.0
    return f"{statistics.mean(errors):.2f} ± {spread:.2f} %"


def seconds(runs: list[dict]) -> str:
    times = [r["fit_seconds"] for r in runs]
    spread = statistics.stdev(times) if len(times) > 1 else 0.0
    return f"{statistics.mean(times):.0f} ± {spread:.0f} s"


def draw_curves(results: dict, path: Path) -> None:
    fig = Figure(figsize=(7, 4.2), dpi=110)
    ax = fig.subplots()
    colours = colormaps["tab10"].colors
    for (preset, entry), colour in zip(results.items(), colours, strict=False):
        for i, run in enumerate(entry["runs"]):
            x, y = zip(*run["curve"], strict=True) if run["curve"] else ((), ())
            ax.plot(
                [t / 60 for t in x],
                [100 * v for v in y],
                color=colour,
                alpha=0.9 if i == 0 else 0.35,
                label=preset if i == 0 else None,
            )
    ax.set_xlabel("minutes since the start of training (2-core CPU)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_ylim(97.5, 99.8)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("Validation accuracy against time, every seed")
    fig.tight_layout()
    fig.savefig(path)


def best_cpu_verdict(results: dict) -> list[str]:
    """best_cpu was built for >= 99.3 % test accuracy in <= 15 minutes here: did it get there?"""
    if "best_cpu" not in results:
        return []
    runs = results["best_cpu"]["runs"]
    acc = statistics.mean(100 * r["test_acc"] for r in runs)
    minutes = max(r["fit_seconds"] for r in runs) / 60
    met = acc >= 99.3 and minutes <= 15
    each = ", ".join(f"{100 * r['test_acc']:.2f} %" for r in runs)
    return [
        f"`best_cpu` was built for at least 99.3 % test accuracy in at most 15 minutes on this "
        f"2-core machine: it reached {acc:.2f} % on average (every seed: "
        f"{each}), the slowest seed training for "
        f"{minutes:.1f} minutes — {'met' if met else 'missed'}.",
        "",
    ]


def markdown(results: dict) -> str:
    ours = {PRESETS[p]: p for p in results if PRESETS.get(p)}
    rows = []
    for row in LITERATURE:
        preset = ours.get(row)
        cells = (
            f"{error(results[preset]['runs'])} | {seconds(results[preset]['runs'])} | "
            f"`mnist-train experiment={preset}`"
            if preset
            else "– | – | –"
        )
        rows.append(f"| {row} | {cells} |")
    for preset, entry in results.items():
        if not PRESETS.get(preset):
            rows.append(
                f"| **mnist-lightning `{preset}`** | {OURS[preset]} | – | "
                f"{error(entry['runs'])} | {seconds(entry['runs'])} | "
                f"`mnist-train experiment={preset}` |"
            )
    measured = "; ".join(
        f"`{p}` on {e['measured']} ({len(e['runs'])} seeds)" for p, e in results.items()
    )
    machines = sorted({e["machine"] for e in results.values()})
    return "\n".join(
        [
            "# Accuracy: the MLP literature on MNIST, reproduced and beaten on a CPU",
            "",
            "Plain MLPs only (no convolutions). Our column is the mean ± std test error over "
            "seeds 0, 1, 2 of the best-by-validation checkpoint on the official 10 000 test "
            "images; the model is chosen on the 5 000-image validation split, never on the "
            "test set. Time is `fit_seconds` from metrics.json: training plus the validation "
            "after each epoch, on one machine with both cores.",
            "",
            "| reference | MLP | paper's test error | ours | our training time | command |",
            "| --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
            "Where the papers spent far more than we do, we say so rather than claim a match: "
            "Srivastava et al. trained their dropout networks far longer than the 20 epochs "
            "of `paper_srivastava2014` (heavy dropout learns slowly; this budget does not reach "
            "their 1.06 %), and Ciresan et al.'s 0.35 % took a 12-million-weight MLP about "
            "800 epochs of distortions on a GPU. The Simard distortion rows, the 2×8192 row "
            "and the LeCun rows have no preset here.",
            "",
            *best_cpu_verdict(results),
            "No preset averages its weights (EMA or SWA). Lightning's `EMAWeightAveraging` "
            "averages and swaps every buffer of the model, including this project's "
            "bookkeeping (`val/acc_best`, the training-metric window), and after `fit` the "
            "test restores the raw weights; in a trial with the test fixed, it did not "
            "lower the test error of `paper_simard2003` (its one-cycle schedule already ends "
            "at a learning rate near zero), so it was left out.",
            "",
            "![validation accuracy against time](accuracy_curves.png)",
            "",
            f"Measured: {measured}. Machine: {'; '.join(machines)}.",
            "Made by `.venv/bin/python -m benchmarks.accuracy` (one preset at a time with "
            "`--presets NAME`); the raw figures and curves are in `docs/accuracy.json`.",
            "",
            *candidates_markdown(),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--candidates", action="store_true", help="also re-run CANDIDATES")
    args = parser.parse_args()
    if args.candidates:
        choose_best_cpu()
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    for preset in [p for p in args.presets.split(",") if p]:
        with tempfile.TemporaryDirectory() as tmp:
            runs = []
            for seed in range(args.seeds):
                runs.append(train([f"experiment={preset}"], seed, Path(tmp)))
                print(preset, {k: v for k, v in runs[-1].items() if k != "curve"}, flush=True)
        results[preset] = {
            "measured": time.strftime("%Y-%m-%d"),
            "machine": machine(),
            "runs": runs,
        }
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    draw_curves(results, DOCS / "accuracy_curves.png")
    (DOCS / "accuracy.md").write_text(markdown(results))
    print(f"wrote {DOCS / 'accuracy.md'}")


def candidate_command(name: str) -> list[str]:
    epochs = next(
        n for suffix, n in CANDIDATE_EPOCHS.items() if name.split(" (")[0].endswith(suffix)
    )
    extra = [] if "experiment=best_cpu" in CANDIDATES[name] else [f"trainer.max_epochs={epochs}"]
    return [*CANDIDATES[name], *extra]


def choose_best_cpu() -> None:
    """Each candidate once with seed 42; val/acc_best is what chose best_cpu."""
    chosen = {}
    for name in CANDIDATES:
        with tempfile.TemporaryDirectory() as tmp:
            run = train(candidate_command(name), 42, Path(tmp))
        chosen[name] = {k: run[k] for k in ("val_acc_best", "test_acc", "fit_seconds")}
        print(name, chosen[name], flush=True)
    CANDIDATE_RESULTS.write_text(json.dumps(chosen, indent=1) + "\n")


def candidates_markdown() -> list[str]:
    if not CANDIDATE_RESULTS.is_file():
        return []
    chosen = json.loads(CANDIDATE_RESULTS.read_text())
    rows = [
        f"| {name} | {100 * r['val_acc_best']:.2f} % | {100 * r['test_acc']:.2f} % | "
        f"`mnist-train {' '.join(candidate_command(name))}` |"
        for name, r in chosen.items()
    ]
    return [
        "## How best_cpu was chosen",
        "",
        "By `val/acc_best` on the 5 000 validation images, one run each with seed 42 (the test "
        "column is shown for completeness, it chose nothing; single runs differ by about "
        "0.1 % from seed to seed). All are 784-1024-1024-10 with "
        "AdamW 2e-3 one-cycle, label smoothing 0.1, batch 128; the shorter runs compare kinds "
        "of augmentation, the longer ones the budget.",
        "",
        "| recipe | val/acc_best | test/acc | command |",
        "| --- | --- | --- | --- |",
        *rows,
        "",
        'Re-run with `.venv/bin/python -m benchmarks.accuracy --presets "" --candidates`.',
        "",
    ]


if __name__ == "__main__":
    main()
