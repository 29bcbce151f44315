"""A callback for the DDP tests: each process writes what it trained on and where it ended.

`<out>/probe-rank<r>.json` holds, per epoch, a fingerprint of every training image the process
was given (sum of its pixels weighted by position: distinct images, distinct keys), and a
sha256 of its final weights.
"""

import hashlib
import json
from pathlib import Path

import lightning as L
import torch

WEIGHTS = torch.arange(1, 785, dtype=torch.float64)


def fingerprints(images: torch.Tensor) -> list[int]:
    pixels = (images.reshape(len(images), -1).double() * 255).round()
    return (pixels @ WEIGHTS).long().tolist()


class DDPProbe(L.Callback):
    def __init__(self, out: str) -> None:
        self.out, self.seen = Path(out), {}

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch, i) -> None:
        images, _ = batch
        self.seen.setdefault(trainer.current_epoch, []).extend(fingerprints(images))

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        digest = hashlib.sha256()
        for tensor in module.state_dict().values():
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        report = {"seen": self.seen, "weights": digest.hexdigest(), "world": trainer.world_size}
        (self.out / f"probe-rank{trainer.global_rank}.json").write_text(json.dumps(report))
