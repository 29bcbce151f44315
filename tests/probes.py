"""Callbacks the tests add by name (`+callbacks.kill._target_=probes.KillAt`). Lightning runs
checkpoint callbacks last: a kill or a full disk strikes before that step's checkpoint, for real."""

import errno
import hashlib
import json
import logging
import os
import signal
import time
from pathlib import Path

import lightning as L
import torch

from mnist_lightning.run import report


class KillAt(L.Callback):
    """At the optimizer step KILL_AT_STEP (once; nothing without it), SIGKILL or
    SIG<KILL_SIGNAL> (INT: Ctrl-C) to the process, or with KILL_GROUP to its whole group (a DDP
    run's crash); KILL_SIGNAL=ENOSPC: from then on every fsync and log line fails (a full disk).
    KILL_IN=validation (test): in the first validation (the test) after that step, after its
    first batch. STEP_SECONDS: each step takes at least that long."""

    def __init__(self) -> None:
        if os.environ.get("KILL_IN") == "report":  # Ctrl-C as the results' figures are drawn
            draw = report.predict_all
            report.predict_all = lambda *a: os.kill(os.getpid(), signal.SIGINT) or draw(*a)

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        time.sleep(float(os.environ.get("STEP_SECONDS", 0)))
        if os.environ.get("KILL_IN", "training") == "training":
            self.kill(trainer)

    def on_validation_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if os.environ.get("KILL_IN") == "validation" and not trainer.sanity_checking:
            self.kill(trainer)  # after its first batch: a validation half run

    def on_test_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if os.environ.get("KILL_IN") == "test":
            self.kill(trainer)

    def kill(self, trainer: L.Trainer) -> None:
        step = os.environ.get("KILL_AT_STEP")
        if step and trainer.global_step >= int(step):
            os.environ.pop("KILL_AT_STEP")  # once
            name = os.environ.get("KILL_SIGNAL", "KILL")
            if name == "ENOSPC":  # the checkpoint's fsync fails, and every line for train.log
                os.fsync = _no_space
                for handler in logging.getLogger().handlers:
                    if isinstance(handler, logging.FileHandler):
                        handler.setStream(open("/dev/full", "w")).close()  # noqa: SIM115
            elif os.environ.get("KILL_GROUP"):
                os.killpg(os.getpgrp(), signal.Signals[f"SIG{name}"])
            else:
                os.kill(os.getpid(), signal.Signals[f"SIG{name}"])


def _no_space(fd: int) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fingerprints(images: torch.Tensor) -> list[int]:
    """Each image's pixels weighted by position: distinct images, distinct keys."""
    pixels = (images.reshape(len(images), -1).double() * 255).round()
    return (pixels @ torch.arange(1, 785, dtype=torch.float64)).long().tolist()


class DDPProbe(L.Callback):
    """Each DDP process writes `<out>/probe-rank<r>.json`: per epoch the fingerprints of the
    training images it was given, and a sha256 of its final weights."""

    def __init__(self, out: str) -> None:
        self.out, self.seen = Path(out), {}

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch, i) -> None:
        images, _ = batch
        self.seen.setdefault(trainer.current_epoch, []).extend(fingerprints(images))

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        digest = hashlib.sha256()
        for tensor in module.state_dict().values():
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        report = {"seen": self.seen, "weights": digest.hexdigest()}
        (self.out / f"probe-rank{trainer.global_rank}.json").write_text(json.dumps(report))


class InterruptAtFitStart(L.Callback):
    """Ctrl-C as fit starts, before the first step (and checkpoint)."""

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        os.kill(os.getpid(), signal.SIGINT)
