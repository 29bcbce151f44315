"""A passive callback that times the epochs of a real `mnist-train` run (added by
`benchmarks.common.mnist_train(timer=True)`). It reads the clock at hook boundaries only, never
per step. Per epoch: `train_seconds` (the training batches alone, comparable with a plain
loop's epoch), `training_time` (since `on_train_start`, less its own test evaluations),
`val_acc`, with `test_every_epoch` the test accuracy (clock paused), and `nvml_check`
(`PYTORCH_NVML_BASED_CUDA_CHECK` as the run trains: see benchmarks/tutorial.py).
"""

import json
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch


class EpochTimer(L.Callback):
    def __init__(self, out: str = "bench_epochs.json", test_every_epoch: bool = False) -> None:
        self.out = Path(out)
        self.test_every_epoch = test_every_epoch
        self.epochs: list[dict[str, Any]] = []
        self.paused = 0.0  # seconds spent on our own test evaluations, not training
        self.train_start = self.epoch_start = self.val_start = 0.0
        self.steps_at_start = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.train_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_start = time.perf_counter()
        self.steps_at_start = trainer.global_step

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.val_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        now = time.perf_counter()
        record = {
            "epoch": trainer.current_epoch,
            "steps": trainer.global_step - self.steps_at_start,
            "train_seconds": self.val_start - self.epoch_start,
            "training_time": now - self.train_start - self.paused,
            "val_acc": float(trainer.callback_metrics["val/acc"]),
            "nvml_check": os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK"),
        }
        if self.test_every_epoch:
            record["test_acc"] = test_accuracy(trainer, pl_module)
            self.paused += time.perf_counter() - now
        self.epochs.append(record)
        self.out.write_text(json.dumps(self.epochs, indent=1))


@torch.no_grad()
def test_accuracy(trainer: L.Trainer, pl_module: L.LightningModule) -> float:
    """Accuracy on the data module's test split, in eval mode; no random numbers are drawn,
    so the training that follows is the one it would have been without this."""
    was_training = pl_module.training
    pl_module.eval()
    correct = total = 0
    for images, labels in trainer.datamodule.test_dataloader():
        correct += int((pl_module(images).argmax(1) == labels).sum())
        total += len(labels)
    pl_module.train(was_training)
    return correct / total
