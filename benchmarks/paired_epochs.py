"""The child side of benchmarks/overhead.py: what it adds to an `mnist-train` run.

`PlainEpochAfterEach` runs epochs of the bare loop (b) after each training epoch;
`BareSteps` is the model with Lightning's backward and step wrappers bypassed. Kept apart from
overhead.py so that the benchmark's own process never imports Lightning (see bench.py).
"""

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from benchmarks.common import BATCH_SIZE, LR, SEED, mlp
from benchmarks.loop_plain import train_epoch, train_split
from mnist_lightning.model import MNISTClassifier


class PlainEpochAfterEach(L.Callback):
    """After each training epoch (and its validation), one epoch of the bare loop (b) with
    torch's default Adam and one with fused Adam, each with its own network."""

    def __init__(self, out: str, train_size: int | None = None) -> None:
        self.out = Path(out)
        self.data = train_split(train_size)
        torch.manual_seed(SEED)
        self.loops = {}
        for name, fused in (("default", None), ("fused", True)):
            net = mlp()
            self.loops[name] = (net, torch.optim.Adam(net.parameters(), lr=LR, fused=fused))
        self.generator = torch.Generator().manual_seed(SEED)
        self.seconds: dict[str, list[float]] = {name: [] for name in self.loops}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for name, (net, optimizer) in self.loops.items():
            start = time.perf_counter()
            train_epoch(net, optimizer, self.data, BATCH_SIZE, self.generator)
            self.seconds[name].append(time.perf_counter() - start)
        self.out.write_text(json.dumps(self.seconds))


class _BareOptimizer:
    """The bare optimizer, counting its steps where Lightning's wrapper would."""

    def __init__(self, optimizer: torch.optim.Optimizer, trainer: L.Trainer) -> None:
        self.optimizer = optimizer
        self.progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress

    def step(self) -> None:
        self.progress.increment_ready()
        self.optimizer.step()
        self.progress.increment_completed()  # trainer.global_step counts these

    def __getattr__(self, name: str) -> Any:
        return getattr(self.optimizer, name)


class BareSteps(MNISTClassifier):
    """`MNISTClassifier` with `loss.backward()` and the bare optimizer's `step()`."""

    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None:
        loss.backward()

    def optimizers(self, use_pl_optimizer: bool = True) -> Any:
        return _BareOptimizer(super().optimizers(use_pl_optimizer=False), self.trainer)
