"""`EpochTimer`, added to a real `mnist-train` run by its Hydra `_target_` (kept apart: the
benchmarks' own processes never import Lightning). Passive: it reads the clock at hook
boundaries only. Per epoch: `train_seconds` (the training batches alone), `training_time`
(since `on_train_start`, less its own extra work), `val_acc`, `nvml_check` (see tutorial.py);
with the clock paused, `test_every_epoch` adds the test accuracy and `bare_loop` the seconds of
one epoch of a bare PyTorch loop over the same tensors, batches, network twin, fused optimizer
and schedule: what Lightning and this project add per step is the difference.
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
    def __init__(self, out: str, test_every_epoch: bool = False, bare_loop: bool = False) -> None:
        self.out, self.test_every_epoch, self.bare_loop = Path(out), test_every_epoch, bare_loop
        self.epochs: list[dict[str, Any]] = []
        self.paused = 0.0  # seconds of our own extra work after each epoch, not training

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.train_start = time.perf_counter()
        if self.bare_loop:
            twin = type(pl_module)(**pl_module.hparams).to(pl_module.device)
            self.net, self.optimizer = twin.net, twin.build_optimizer()
            self.schedule = None
            configs = trainer.lr_scheduler_configs
            if configs and configs[0].interval == "step":  # the same per-step schedule
                lr_lambda = configs[0].scheduler.lr_lambdas[0]
                self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_start = time.perf_counter()
        self.steps_at_start = trainer.global_step

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            torch.cuda.synchronize() if pl_module.device.type == "cuda" else None
            self.val_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self.epochs.append(
            {
                "epoch": trainer.current_epoch,
                "steps": trainer.global_step - self.steps_at_start,
                "train_seconds": self.val_start - self.epoch_start,
                "training_time": time.perf_counter() - self.train_start - self.paused,
                "val_acc": float(trainer.callback_metrics["val/acc"]),
                "nvml_check": os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK"),
            }
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The extra work, after validation (Lightning validates before this hook)."""
        start = time.perf_counter()
        if self.test_every_epoch:
            self.epochs[-1]["test_acc"] = test_accuracy(trainer, pl_module)
        if self.bare_loop:
            self.epochs[-1]["bare_seconds"] = self.bare_epoch(trainer)
        self.paused += time.perf_counter() - start
        self.out.write_text(json.dumps(self.epochs, indent=1))

    def bare_epoch(self, trainer: L.Trainer) -> float:
        images, labels = trainer.datamodule.splits["train"]
        generator = torch.Generator(labels.device).manual_seed(trainer.current_epoch)
        label_smoothing = trainer.lightning_module.hparams.label_smoothing
        self.net.train()
        start = time.perf_counter()
        order = torch.randperm(len(labels), device=labels.device, generator=generator)
        for index in order.split(trainer.datamodule.batch_size):
            x = images.index_select(0, index).float().div_(255)
            loss = F.cross_entropy(
                self.net(x), labels.index_select(0, index), label_smoothing=label_smoothing
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.schedule is not None:
                self.schedule.step()
        torch.cuda.synchronize() if labels.device.type == "cuda" else None
        return time.perf_counter() - start


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
