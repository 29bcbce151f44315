"""What a step of mnist-train costs beyond a bare PyTorch step, measured in one process.

(b) and (c) in `make bench` are separate processes minutes apart, and this VM's speed drifts
by tens of percent over minutes. Here every training epoch of `mnist-train` (the issue's
recipe: 784-128-64-10, batch 64, Adam 1e-3) is followed, in the same process, by an epoch of
the bare loop (b) with torch's default Adam and one with fused Adam, on the same 55 000 images
(benchmarks/paired_epochs.py), so the epochs compared share the machine's state; the medians of
their ratios are steady where the ratio of separate runs is not. Three ways of running
mnist-train, alternated:

- as it is (logging, metrics, progress bar, checkpoints);
- without the TensorBoard logger and the progress bar;
- with `BareSteps`: the same model whose backward and optimizer step bypass Lightning's
  `manual_backward` and `LightningOptimizer.step` (their hooks, precision plugin and DDP
  hooks). Not a way to train: only a measurement of what those two wrappers cost.

    .venv/bin/python -m benchmarks.overhead [--epochs 8] [--rounds 2]
"""

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from benchmarks.common import BATCH_SIZE, TRAIN_IMAGES
from benchmarks.mnist_train import RECIPE, run_mnist_train
from benchmarks.report import overhead_table

VARIANTS = {
    "mnist-train as it is": [],
    "without TensorBoard and the progress bar": [
        "logger=none",
        "trainer.enable_progress_bar=false",
    ],
    "with `BareSteps`: Lightning's backward and step wrappers bypassed": [
        "model._target_=benchmarks.paired_epochs.BareSteps"
    ],
}


def paired_run(overrides: list[str], epochs: int, train_size: int | None) -> list[tuple]:
    """(mnist-train's epoch, the bare loop's with default Adam, with fused Adam) for each
    epoch after the warm-up."""
    with tempfile.TemporaryDirectory() as tmp:
        plain_out = Path(tmp) / "plain.json"
        extra = [
            "+callbacks.plain._target_=benchmarks.paired_epochs.PlainEpochAfterEach",
            f"+callbacks.plain.out={plain_out}",
            f"+callbacks.plain.train_size={train_size or 'null'}",
        ]
        if train_size:
            extra.append(f"data.train_subset={train_size}")
        run = run_mnist_train([*RECIPE, f"trainer.max_epochs={epochs}", *overrides, *extra])
        plain = json.loads(plain_out.read_text())
    ours = [e["train_seconds"] for e in run.epochs]
    return list(zip(ours, plain["default"], plain["fused"], strict=True))[1:]


def measure(epochs: int = 8, rounds: int = 2, train_size: int | None = None) -> list[dict]:
    """One row per variant: median epochs, the medians of the epochs' ratios to the bare
    loop (default and fused Adam), and the median extra time per step over the fused one."""
    triples: dict[str, list[tuple]] = {name: [] for name in VARIANTS}
    for _ in range(rounds):
        for name, overrides in VARIANTS.items():
            triples[name] += paired_run(overrides, epochs, train_size)
    steps = -(-(train_size or TRAIN_IMAGES) // BATCH_SIZE)
    rows = []
    for name, got in triples.items():
        ours, default, fused = (statistics.median(x) for x in zip(*got, strict=True))
        rows.append(
            {
                "name": name,
                "ours": ours,
                "plain_default": default,
                "plain": fused,
                "ratio_default": statistics.median(c / d for c, d, _ in got),
                "ratio": statistics.median(c / f for c, _, f in got),
                "extra_us": statistics.median(c - f for c, _, f in got) / steps * 1e6,
                "pairs": len(got),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=8, help="per run; the first is a warm-up")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each variant, alternated")
    args = parser.parse_args()
    rows = measure(args.epochs, args.rounds)
    print("\n".join(overhead_table(rows)))
    print(f"\nMedians over {rows[0]['pairs']} pairs of epochs per row (one process each).")


if __name__ == "__main__":
    main()
