"""Train every preset with a few seeds and write their accuracy and time to docs/presets.md.

    .venv/bin/python benchmarks/presets.py [--seeds 3] [--out docs/presets.md]

Each run is a real `mnist-train` subprocess on the CPU; the figures are its own metrics.json
(test accuracy of the best-by-validation checkpoint, training wall time).
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

from benchmarks.common import ROOT, mnist_train

PRESETS = {
    "default (784-512-256-10, dropout 0.2, AdamW, one-cycle, batch 128, 12 epochs)": [],
    "tutorial 784-128-10 (Adam, batch 64, 5 epochs)": ["experiment=tutorial_mlp_128"],
    "tutorial 784-128-64-10 (Adam, batch 64, 5 epochs)": ["experiment=tutorial_mlp_128_64"],
    "tutorial 784-128-256-10 dropout 0.5 (SGD 0.1, batch 64, 5 epochs)": [
        "experiment=tutorial_mlp_128_256"
    ],
    "tutorial 784-64-64-64-10 (Adam, batch 15, 2 epochs)": ["experiment=tutorial_mlp_64_64_64"],
}


def train(overrides: list[str], seed: int, workdir: Path) -> dict:
    latest = mnist_train([*overrides, f"seed={seed}"], workdir)
    return json.loads((latest / "metrics.json").read_text())


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {spread:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "presets.md")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in PRESETS.items():
            runs = [train(overrides, seed, Path(tmp)) for seed in range(args.seeds)]
            accuracy = mean_std([100 * r["test/acc"] for r in runs])
            seconds = mean_std([r["fit_seconds"] for r in runs])
            command = " ".join(["mnist-train", *overrides]) if overrides else "mnist-train"
            rows.append(f"| {name} | {accuracy} | {seconds} | `{command}` |")
            print(rows[-1], flush=True)
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    text = "\n".join(
        [
            "# Presets: accuracy and training time",
            "",
            f"Measured on {time.strftime('%Y-%m-%d')}: {cpu}, {os.cpu_count()} cores, no GPU; "
            f"torch {torch.__version__}, lightning {lightning.__version__}. "
            f"Mean ± std over seeds 0-{args.seeds - 1}. Test accuracy is the best-by-validation "
            "checkpoint on the official 10 000 test images; time is `fit_seconds` from "
            "metrics.json (training and per-epoch validation, not start-up or testing).",
            "",
            "| preset | test accuracy (%) | training time (s) | command |",
            "| --- | --- | --- | --- |",
            *rows,
            "",
            f"Made by `.venv/bin/python benchmarks/presets.py` (`--seeds {args.seeds}`).",
            "",
        ]
    )
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
