"""What a training step of `mnist-train` costs beyond a bare PyTorch step, in one process.

This VM's speed drifts by tens of percent over minutes, so separate runs cannot be compared.
Here every training epoch of `mnist-train` is followed, in the same process, by an epoch of the
bare loop over the same tensors with a twin of the same network, fused optimizer and schedule
(benchmarks/paired_epochs.py): the epochs compared share the machine's state, and the median
of their ratios is steady. Each experiment runs as it is (every default callback: three
ModelCheckpoints, the interrupt handler, the progress bar, the model summary; TensorBoard) and
as Lightning alone (none of those, no logger), which splits the extra time between Lightning's
loop and what this project adds. A table for docs/benchmarks.md (also part of `tutorial`).
"""

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from benchmarks.common import MLP_128_64_ADAM, TRIES, mnist_train, verdict

# Issue 14's targets: mnist-train's epoch over the bare loop's, every default callback on.
EXPERIMENTS = {
    "default experiment": ([], 1.25),
    "784-128-64-10, batch 64, Adam": (MLP_128_64_ADAM, 1.60),
}
VARIANTS = {
    "as it is": [],
    "Lightning alone": [
        "~callbacks.best_checkpoint",
        "~callbacks.last_checkpoint",
        "~callbacks.periodic_checkpoint",
        "~callbacks.graceful_interrupt",
        "~callbacks.progress_bar",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "logger=none",
    ],
}


def paired_run(
    overrides: list[str], epochs: int, tries: int
) -> tuple[list[tuple[float, float]], int]:
    """(mnist-train's epoch, the bare loop's) for each epoch after the warm-up, and the steps
    per epoch."""
    with tempfile.TemporaryDirectory() as tmp:
        bare_out = Path(tmp) / "bare.json"
        extra = [
            "+callbacks.bare._target_=benchmarks.paired_epochs.BareLoopAfterEachEpoch",
            f"+callbacks.bare.out={bare_out}",
        ]
        run = mnist_train([f"trainer.max_epochs={epochs}", *overrides, *extra], tries=tries)
        seconds = json.loads(bare_out.read_text())
    steps = run.metrics["global_step"] // run.metrics["epoch"]
    return list(zip(seconds["ours"], seconds["bare"], strict=True))[1:], steps


def measure(
    epochs: int = 6,
    rounds: int = 2,
    extra: list[str] | None = None,
    quick: bool = False,
    tries: int = TRIES,
) -> list[dict]:
    """One row per experiment and variant: median epochs, the median of the epochs' ratios to
    the bare loop, and the median extra time per step. `quick`: the first experiment as it
    is, only (a smoke test)."""
    pairs: dict[tuple[str, str], list[tuple[float, float]]] = {}
    steps: dict[str, int] = {}
    experiments = list(EXPERIMENTS.items())[: 1 if quick else None]
    variants = list(VARIANTS.items())[: 1 if quick else None]
    for _ in range(rounds):
        for experiment, (overrides, _) in experiments:
            for variant, switches in variants:
                got, steps[experiment] = paired_run(
                    [*overrides, *switches, *(extra or [])], epochs, tries
                )
                pairs.setdefault((experiment, variant), []).extend(got)
    rows = []
    for (experiment, variant), got in pairs.items():
        ours, bare = (statistics.median(x) for x in zip(*got, strict=True))
        rows.append(
            {
                "experiment": experiment,
                "variant": variant,
                "target": EXPERIMENTS[experiment][1],
                "ours": ours,
                "bare": bare,
                "ratio": statistics.median(c / b for c, b in got),
                "extra_us": statistics.median(c - b for c, b in got) / steps[experiment] * 1e6,
                "pairs": len(got),
            }
        )
    return rows


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| experiment | mnist-train | its epoch (s) | bare loop (s) | ratio | target "
        "| µs per step more |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        target = ""
        if r["variant"] == "as it is":
            target = f"≤ {r['target']:.2f}: {verdict(r['ratio'], r['target'], True)}"
        lines.append(
            f"| {r['experiment']} | {r['variant']} | {r['ours']:.2f} | {r['bare']:.2f} | "
            f"{r['ratio']:.2f} | {target} | {r['extra_us']:.0f} |"
        )
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=6, help="per run; the first is a warm-up")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each, alternated")
    parser.add_argument("--train-subset", type=int, default=None, help="images per epoch")


def main(args: argparse.Namespace) -> None:
    extra = [f"data.train_subset={args.train_subset}"] if args.train_subset else []
    rows = measure(args.epochs, args.rounds, extra)
    print("\n".join(table(rows)))
    print(f"\nMedians over {rows[0]['pairs']} pairs of epochs per row (one process each).")
