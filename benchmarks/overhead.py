"""What a training step of `mnist-train` costs beyond a bare PyTorch step, in one process.

This VM's speed drifts by tens of percent over minutes, so separate runs cannot be compared.
Here every training epoch of `mnist-train` is followed, in the same process, by an epoch of
the bare loop over the same tensors with a twin of the same network, fused optimizer and
schedule (benchmarks/paired_epochs.py), and the median of their ratios is steady. Each
experiment runs as it is (every default callback; TensorBoard) and as Lightning alone (none of
them, no logger), which splits the extra time between Lightning's loop and this project.
"""

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from benchmarks.common import MLP_128_64_ADAM, markdown, mnist_train

EXPERIMENTS = {"default experiment": [], "784-128-64-10, batch 64, Adam": MLP_128_64_ADAM}
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


def paired_run(overrides: list[str], epochs: int, tries: int) -> tuple[list, int]:
    """(mnist-train's epoch, the bare loop's) for each epoch after the warm-up; steps/epoch."""
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "bare.json"
        extra = [
            "+callbacks.bare._target_=benchmarks.paired_epochs.BareLoopAfterEachEpoch",
            f"+callbacks.bare.out={bare}",
        ]
        run = mnist_train([f"trainer.max_epochs={epochs}", *overrides, *extra], tries=tries)
        seconds = json.loads(bare.read_text())
    steps = run.metrics["global_step"] // run.metrics["epoch"]
    return list(zip(seconds["ours"], seconds["bare"], strict=True))[1:], steps


def measure(epochs: int, rounds: int, extra: list[str], tries: int = 1) -> list[dict]:
    """One record per experiment and variant: median epochs, the median ratio of paired
    epochs, and the median extra time per optimizer step."""
    pairs: dict[tuple[str, str], list] = {}
    steps: dict[str, int] = {}
    for _ in range(rounds):
        for experiment, overrides in EXPERIMENTS.items():
            for variant, switches in VARIANTS.items():
                got, steps[experiment] = paired_run([*overrides, *switches, *extra], epochs, tries)
                pairs.setdefault((experiment, variant), []).extend(got)
    return [
        {
            "experiment": experiment,
            "mnist-train": variant,
            "its epoch (s)": round(statistics.median(c for c, _ in got), 2),
            "bare loop (s)": round(statistics.median(b for _, b in got), 2),
            "ratio": round(statistics.median(c / b for c, b in got), 2),
            "µs per step more": round(
                1e6 * statistics.median(c - b for c, b in got) / steps[experiment]
            ),
            "pairs": len(got),
        }
        for (experiment, variant), got in pairs.items()
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=6, help="per run; the first is a warm-up")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each, alternated")
    parser.add_argument("--train-subset", type=int, default=None, help="images per epoch")


def main(args: argparse.Namespace) -> None:
    extra = [f"data.train_subset={args.train_subset}"] if args.train_subset else []
    print(markdown(measure(args.epochs, args.rounds, extra)))
