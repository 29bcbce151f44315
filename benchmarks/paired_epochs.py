"""The child side of benchmarks/overhead.py: the bare loop, run inside an `mnist-train` run.

`BareLoopAfterEachEpoch` runs, after each training epoch, one epoch of a bare PyTorch loop over
the same training tensors (on the same device, batches gathered the same way), with a twin of
the same network, the same fused optimizer and the same schedule: forward, loss, `zero_grad`,
`backward`, `step`, schedule step, and nothing else. The difference between the two epochs is
what Lightning and this project add per step. It also times mnist-train's epoch (from its
start to its validation), so that the measurement adds one callback, not two, to the hooks
Lightning calls at every step. Kept apart from overhead.py so that the benchmark's own process
never imports Lightning.
"""

import json
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from mnist_lightning.model.classifier import MNISTClassifier


class BareLoopAfterEachEpoch(L.Callback):
    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.seconds: dict[str, list[float]] = {"ours": [], "bare": []}
        self.started = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: MNISTClassifier) -> None:
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
