"""Presets trained with several seeds, as tables of accuracy and training time: the literature
presets on docs/accuracy.md (with its curves), the tutorial presets on docs/presets.md.

    python -m benchmarks accuracy [--presets best_cpu,...] [--seeds 3]
    python -m benchmarks accuracy --presets "" --candidates   # how best_cpu was chosen
    python -m benchmarks accuracy --presets ""                # redraw the page only
    python -m benchmarks accuracy --page presets [--seeds 3]  # docs/presets.md

Each run is a real `mnist-train` subprocess on the CPU. Its figures are its own metrics.json
(test accuracy of the best-by-validation checkpoint, training time) and its TensorBoard
`val/acc` curve against wall time. The literature presets accumulate in docs/accuracy.json, one
entry per preset, so they can be (re)measured one at a time; the page is redrawn from all of
them. docs/presets.md is measured whole.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

from matplotlib import colormaps
from matplotlib.figure import Figure

from benchmarks.common import QUIET_CPU, ROOT, machine, machine_line, mnist_train

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
# docs/presets.md: the tutorial networks this project grew out of, and the default.
TUTORIALS = {
    "default (784-512-256-10, dropout 0.2, AdamW, one-cycle, batch 128, 12 epochs)": [],
    "tutorial 784-128-10 (Adam, batch 64, 5 epochs)": ["experiment=tutorial_mlp_128"],
    "tutorial 784-128-64-10 (Adam, batch 64, 5 epochs)": ["experiment=tutorial_mlp_128_64"],
    "tutorial 784-128-256-10 dropout 0.5 (SGD 0.1, batch 64, 5 epochs)": [
        "experiment=tutorial_mlp_128_256"
    ],
    "tutorial 784-64-64-64-10 (Adam, batch 15, 2 epochs)": ["experiment=tutorial_mlp_64_64_64"],
}
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


def train(overrides: list[str], seed: int) -> dict:
    """One `mnist-train <overrides> seed=<seed>`: its figures and its val/acc curve."""
    run = mnist_train([*overrides, f"seed={seed}", *QUIET_CPU])
    result = {
        "seed": seed,
        "test_acc": run.metrics["test/acc"],
        "val_acc_best": run.metrics["val/acc_best"],
        "fit_seconds": run.metrics["fit_seconds"],
        "epochs": run.metrics["epoch"],
        "curve": [(seconds, acc) for _, seconds, acc in run.curves.get("val/acc", [])],
    }
    print(" ".join(run.command), {k: v for k, v in result.items() if k != "curve"}, flush=True)
    return result


def with_seeds(overrides: list[str], seeds: int) -> dict:
    """One preset trained with seeds 0, 1, ...: when, where, and each run's figures."""
    return {
        "measured": time.strftime("%Y-%m-%d"),
        "machine": machine_line(machine()),
        "runs": [train(overrides, seed) for seed in range(seeds)],
    }


def mean_std(values: list[float], digits: int = 2) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


def error(runs: list[dict]) -> str:
    """Mean ± std test error in %."""
    return mean_std([100 * (1 - r["test_acc"]) for r in runs]) + " %"


def seconds(runs: list[dict]) -> str:
    return mean_std([r["fit_seconds"] for r in runs], digits=0) + " s"


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
            "Made by `.venv/bin/python -m benchmarks accuracy` (one preset at a time with "
            "`--presets NAME`); the raw figures and curves are in `docs/accuracy.json`.",
            "",
            *candidates_markdown(),
        ]
    )


def presets_page(entries: dict[str, dict], seeds: int) -> str:
    """docs/presets.md: one row per tutorial preset."""
    rows = []
    for name, entry in entries.items():
        runs = entry["runs"]
        command = " ".join(["mnist-train", *TUTORIALS[name]])
        rows.append(
            f"| {name} | {mean_std([100 * r['test_acc'] for r in runs])} | "
            f"{mean_std([r['fit_seconds'] for r in runs])} | `{command}` |"
        )
    first = next(iter(entries.values()))
    return "\n".join(
        [
            "# Presets: accuracy and training time",
            "",
            f"Measured on {first['measured']}: {first['machine']}. "
            f"Mean ± std over seeds 0-{seeds - 1}. Test accuracy is the best-by-validation "
            "checkpoint on the official 10 000 test images; time is `fit_seconds` from "
            "metrics.json (training and per-epoch validation, not start-up or testing).",
            "",
            "| preset | test accuracy (%) | training time (s) | command |",
            "| --- | --- | --- | --- |",
            *rows,
            "",
            "Made by `.venv/bin/python -m benchmarks accuracy --page presets` "
            f"(`--seeds {seeds}`).",
            "",
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--page", choices=("accuracy", "presets"), default="accuracy", help="which page to make"
    )
    parser.add_argument(
        "--presets", default=",".join(PRESETS), help="accuracy: the presets to (re)measure"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--candidates", action="store_true", help="accuracy: re-run CANDIDATES")
    parser.add_argument("--out", type=Path, default=None, help="default: docs/<page>.md")


def main(args: argparse.Namespace) -> None:
    out = args.out or DOCS / f"{args.page}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.page == "presets":
        entries = {name: with_seeds(overrides, args.seeds) for name, overrides in TUTORIALS.items()}
        out.write_text(presets_page(entries, args.seeds))
        print(f"wrote {out}")
        return
    if args.candidates:
        choose_best_cpu()
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    for preset in [p for p in args.presets.split(",") if p]:
        results[preset] = with_seeds([f"experiment={preset}"], args.seeds)
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    draw_curves(results, out.with_name("accuracy_curves.png"))
    out.write_text(markdown(results))
    print(f"wrote {out}")


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
        run = train(candidate_command(name), 42)
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
        'Re-run with `.venv/bin/python -m benchmarks accuracy --presets "" --candidates`.',
        "",
    ]
