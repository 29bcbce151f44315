"""The callbacks the benchmarks add to a real `mnist-train` run (by their Hydra `_target_`);
kept apart so that the benchmarks' own processes never import Lightning.

`EpochTimer` is passive: it reads the clock at hook boundaries only, never per step. Per epoch:
`train_seconds` (the training batches alone, comparable with a plain loop's epoch),
`training_time` (since `on_train_start`, less its own test evaluations), `val_acc`, with
`test_every_epoch` the test accuracy (clock paused), and `nvml_check`
(`PYTORCH_NVML_BASED_CUDA_CHECK` as the run trains: see benchmarks/tutorial.py).

`BareLoopAfterEachEpoch` runs, after each training epoch, one epoch of a bare PyTorch loop over
the same training tensors (on the same device, batches gathered the same way), with a twin of
the same network, the same fused optimizer and the same schedule: forward, loss, `zero_grad`,
`backward`, `step`, schedule step, and nothing else. The difference between the two epochs is
what Lightning and this project add per step. It also times mnist-train's epoch (from its
start to its validation), so that the measurement adds one callback, not two, to the hooks
Lightning calls at every step.
"""

import json
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F


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


class BareLoopAfterEachEpoch(L.Callback):
    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.seconds: dict[str, list[float]] = {"ours": [], "bare": []}
        self.started = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        twin = type(pl_module)(**pl_module.hparams).to(pl_module.device)
        self.net, self.optimizer = twin.net, twin.build_optimizer()
        self.label_smoothing = pl_module.hparams.label_smoothing
        self.schedule = None
        configs = trainer.lr_scheduler_configs
        if configs and configs[0].interval == "step":  # the same per-step schedule
            lr_lambda = configs[0].scheduler.lr_lambdas[0]
            self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda)
        self.images, self.labels = trainer.datamodule.splits["train"]
        self.batch_size = trainer.datamodule.batch_size
        self.generator = torch.Generator(self.labels.device).manual_seed(0)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._synchronize()
            self.seconds["ours"].append(time.perf_counter() - self.started)

    def _synchronize(self) -> None:
        if self.labels.is_cuda:
            torch.cuda.synchronize()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.net.train()
        start = time.perf_counter()
        order = torch.randperm(
            len(self.labels), device=self.labels.device, generator=self.generator
        )
        for index in order.split(self.batch_size):
            images = self.images.index_select(0, index).float().div_(255)
            labels = self.labels.index_select(0, index)
            loss = F.cross_entropy(self.net(images), labels, label_smoothing=self.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.schedule is not None:
                self.schedule.step()
        self._synchronize()
        self.seconds["bare"].append(time.perf_counter() - start)
        self.out.write_text(json.dumps(self.seconds))
