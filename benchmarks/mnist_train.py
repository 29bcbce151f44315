"""(c) and (d): the real `mnist-train`, run as a user runs it, timed from the outside.

Each run is a subprocess in a fresh temporary directory (its own `outputs/`), with MNIST from
`$MNIST_DATA_DIR`, its default logging, metrics, checkpoints and progress bar, plus the passive
`EpochTimer` callback (benchmarks/epoch_timer.py). Per-epoch times come from that callback; the
TensorBoard event file's `val/acc` wall times give a second, independent figure per epoch (one
event per epoch end, so the gap between two of them is a whole epoch cycle: training, the
validation pass over 5 000 images, and the checkpoint writes).
"""

import itertools
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, data_dir, run_alone

# The tutorial network on mnist-train: 784-128-64-10, batch 64, Adam 1e-3, no weight decay,
# no schedule. Everything else (logging, metrics, progress bar, checkpoints) is default.
MLP_128_64_ADAM = [
    "model=mlp_128_64",
    "data.batch_size=64",
    "model.optimizer=adam",
    "model.lr=0.001",
    "model.weight_decay=0",
    "model.scheduler=none",
]
RECIPE = [*MLP_128_64_ADAM, "trainer.accelerator=cpu"]  # issue 3's recipe: on the CPU


@dataclass
class TrainRun:
    """What one `mnist-train` run measured."""

    epochs: list[dict[str, Any]]  # EpochTimer's records
    val_event_seconds: list[float]  # gaps between consecutive val/acc events
    metrics: dict[str, Any]  # the run's metrics.json
    peak_rss_mb: float
    process_seconds: float  # launch to exit: imports, data, training, test, figures
    command: list[str]


def run_mnist_train(
    overrides: list[str], test_every_epoch: bool = False, timer: bool = True
) -> TrainRun:
    """Run `python -m mnist_lightning.cli.train <overrides>`, with the timer callback unless
    `timer` is false (then `epochs` is empty)."""
    command = [sys.executable, "-m", "mnist_lightning.cli.train", *overrides]
    timing = [
        "+callbacks.bench_timer._target_=benchmarks.epoch_timer.EpochTimer",
        "+callbacks.bench_timer.out=bench_epochs.json",
        f"+callbacks.bench_timer.test_every_epoch={str(test_every_epoch).lower()}",
    ]
    env = os.environ | {"MNIST_DATA_DIR": str(data_dir()), "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory(prefix="bench-mnist-train-") as tmp:
        work = Path(tmp)
        child = run_alone([*command, *(timing if timer else [])], cwd=work, env=env)
        (run_dir,) = sorted((work / "outputs" / "runs").iterdir())[-1:]
        return TrainRun(
            epochs=json.loads((work / "bench_epochs.json").read_text()) if timer else [],
            val_event_seconds=val_acc_gaps(run_dir / "tensorboard"),
            metrics=json.loads((run_dir / "metrics.json").read_text()),
            peak_rss_mb=child.peak_rss_mb,
            process_seconds=child.seconds,
            command=["mnist-train", *overrides],
        )


def val_acc_gaps(event_dir: Path) -> list[float]:
    """Seconds between consecutive `val/acc` scalar events (wall_time is set when logged);
    none when the run had no TensorBoard logger."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not event_dir.is_dir():
        return []
    events = EventAccumulator(str(event_dir), size_guidance={"scalars": 0}).Reload()
    times = [event.wall_time for event in events.Scalars("val/acc")]
    return [b - a for a, b in itertools.pairwise(times)]
