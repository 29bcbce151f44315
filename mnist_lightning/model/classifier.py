"""The LightningModule that trains an `MLP` on MNIST: loss, metrics, optimizer and schedule."""

import functools
import math
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau, StepLR

from mnist_lightning.errors import TrainingFailedError
from mnist_lightning.model.mlp import MLP

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "onecycle", "step", "plateau")
STEP_SCHEDULERS = ("cosine", "onecycle")  # updated every optimizer step; the others per epoch


class MNISTClassifier(L.LightningModule):
    """Cross-entropy training of an `MLP`; Lightning optimizes, steps the schedule and logs.

    The train loss and accuracy are summed on the device every step and logged once every
    `trainer.log_every_n_steps` steps as the window's mean (and what is left of it at each
    epoch's end): logging every step costs a small MLP as much as the step, and a host sync."""

    def __init__(
        self,
        hidden_dims: Sequence[int] = (512, 256),
        activation: str = "relu",
        dropout: float | Sequence[float] = 0.2,
        batch_norm: bool = False,
        optimizer: str = "adamw",
        lr: float = 2e-3,
        weight_decay: float = 1e-2,
        momentum: float = 0.9,
        nesterov: bool = False,
        scheduler: str = "onecycle",
        lr_step_epochs: int = 5,
        lr_gamma: float = 0.1,
        label_smoothing: float = 0.0,
        l1: float = 0.0,
        input_dropout: float = 0.0,
        max_norm: float | None = None,
        log_histograms: bool = False,
        log_grad_norms: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = MLP(hidden_dims, activation, dropout, batch_norm, input_dropout)
        self.example_input_array = torch.zeros(1, 28, 28)  # the model summary's true FLOPs
        # Buffers, saved in checkpoints: a resumed run keeps its best validation accuracy
        # (torchmetrics' MaxMetric is not saved unless made persistent, under another key than
        # earlier checkpoints hold) and its half-filled logging window (loss sum, correct, seen).
        self.register_buffer("val_acc_best", torch.tensor(0.0))
        self.register_buffer("train_window", torch.zeros(3))
        # Each process's own (DDP would copy the first one's over it before every step).
        self._ddp_params_and_buffers_to_ignore = ["train_window"]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        if self.hparams.l1 > 0:
            loss = loss + self.hparams.l1 * sum(w.abs().sum() for w in self.net.weights())
        _count(self.train_window, loss, logits, labels)
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.hparams.max_norm is not None:  # max-norm (Srivastava et al. 2014): each hidden
            with torch.no_grad():  # unit's incoming weights scaled down to that L2 norm
                for weight in self.net.weights()[:-1]:
                    weight.renorm_(2, 0, self.hparams.max_norm)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Called once per optimizer step (after gradient accumulation), before it: the step
        # Lightning writes its step-level logs at, the last of every log_every_n_steps.
        every = self.trainer.log_every_n_steps  # 0: no step-level logs, as in Lightning
        if every and (self.global_step + 1) % every == 0:
            self._log_train_window(on_step=True)
            if self.hparams.log_grad_norms:  # each linear layer's, input layer first
                norms = torch.stack([w.grad.norm() for w in self.net.weights()]).cpu()  # one sync
                self.log_dict({f"grad_norm/layer{i}": n for i, n in enumerate(norms, 1)})

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Once per epoch, while the last step's gradients are there (Lightning zeroes them
        # before validation).
        if self.hparams.log_histograms and self.trainer.is_last_batch:
            self._log_histograms()

    def on_train_epoch_end(self) -> None:
        # What is left of the window (all of an epoch shorter than it): every epoch has points.
        self._log_train_window(on_step=False)

    def _window_of_all_processes(self, window: torch.Tensor) -> torch.Tensor:
        """A window's sums (over every process under DDP), copied to the host: the one
        host sync per window. Logged from the host, the values also spare the progress bar,
        which reads the logged values at every later step, a sync per step."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            window = window.clone()
            torch.distributed.all_reduce(window)  # a sum over the processes
        return window.to("cpu", copy=True)

    def _log_train_window(self, on_step: bool) -> None:
        loss_sum, correct, seen = self._window_of_all_processes(self.train_window)
        self.train_window.zero_()
        if seen == 0:
            return
        self._stop_if_diverged(loss_sum, self.global_step + on_step)  # + the step being taken
        metrics = {"train/loss": loss_sum / seen, "train/acc": correct / seen}
        self.log_dict(metrics, prog_bar=True, on_step=on_step, on_epoch=not on_step)
        lr = self.optimizers().param_groups[0]["lr"]
        self.log("train/lr", torch.tensor(lr), on_step=on_step, on_epoch=not on_step)

    def _stop_if_diverged(self, loss_sum: torch.Tensor, steps: int, weights_finite=True) -> None:
        if torch.isfinite(loss_sum) and weights_finite:
            return
        what = "the weights became NaN or infinite"
        if not torch.isfinite(loss_sum):
            what = f"train/loss became {float(loss_sum)}"
        raise TrainingFailedError(
            f"{what} by step {steps} (epoch {self.current_epoch}): training diverged. Try a "
            f"smaller model.lr (now {self.hparams.lr}), model.batch_norm=true or a different "
            "model.optimizer."
        )

    def _log_histograms(self) -> None:
        """Each layer's weights and last gradients, to TensorBoard's HISTOGRAMS tab, and the
        share of weights below 1 % of their layer's largest (prunable: L1 drives many there)."""
        small = [(w.abs() < 0.01 * w.abs().max()).float().mean() for w in self.net.weights()]
        self.log("weights/sparsity", torch.stack(small).mean(), on_step=False, on_epoch=True)
        step = self.global_step - 1  # where Lightning writes this epoch's scalars
        for logger in self.loggers:
            if isinstance(logger, L.pytorch.loggers.TensorBoardLogger):
                for name, param in self.net.named_parameters():
                    logger.experiment.add_histogram(f"weights/{name}", param, step)
                    if param.grad is not None:
                        logger.experiment.add_histogram(f"gradients/{name}", param.grad, step)

    def on_validation_epoch_start(self) -> None:
        # train_window's sums for validation and test: not a module or a buffer, so the model
        # summary lists only the network and bf16-true precision leaves it float32.
        self.eval_window = torch.zeros(3, device=self.device)

    on_test_epoch_start = on_validation_epoch_start

    def validation_step(self, batch, batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        _count(self.eval_window, F.cross_entropy(logits, labels), logits, labels)

    test_step = validation_step

    def _eval_means(self) -> tuple[torch.Tensor, torch.Tensor]:  # over every process's images
        loss_sum, correct, seen = self._window_of_all_processes(self.eval_window)
        return loss_sum / seen, correct / seen

    def on_validation_epoch_end(self) -> None:
        loss, acc = self._eval_means()
        if not self.trainer.sanity_checking:
            self.val_acc_best.copy_(torch.maximum(self.val_acc_best, acc))
        metrics = {"val/loss": loss, "val/acc": acc, "val/acc_best": self.val_acc_best}
        self.log_dict(metrics, prog_bar=True)

    def on_test_epoch_end(self) -> None:
        loss, acc = self._eval_means()
        self.log_dict({"test/loss": loss, "test/acc": acc})

    def build_optimizer(self) -> torch.optim.Optimizer:
        """Weight decay on the weight matrices only, never on biases or batch-norm parameters
        (`adamw`: decoupled, Loshchilov & Hutter; `adam`, `sgd`: the L2 penalty)."""
        hp = self.hparams
        # Without weight decay one group: each group is one more optimizer call per step.
        decayed = {id(p) for p in self.net.weights()} if hp.weight_decay != 0 else set()
        groups = [
            {"params": ps, "weight_decay": hp.weight_decay if decay else 0.0}
            for decay in (True, False)
            if (ps := [p for p in self.parameters() if (id(p) in decayed) == decay])
        ]
        # One fused kernel for the whole update instead of a Python loop over parameters:
        # on a CPU this halves the time of a small MLP's step (docs/benchmarks.md). Not where
        # Lightning clips under mixed precision: it must unscale first, which fused cannot.
        t = self._trainer
        clipped = t is not None and t.gradient_clip_val and "mixed" in str(t.precision)
        fused = self.device.type in ("cpu", "cuda") and not clipped
        if hp.optimizer == "sgd":
            return torch.optim.SGD(
                groups, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov, fused=fused
            )
        cls = torch.optim.AdamW if hp.optimizer == "adamw" else torch.optim.Adam
        return cls(groups, lr=hp.lr, fused=fused)

    def configure_optimizers(self):
        optimizer, hp = self.build_optimizer(), self.hparams
        if hp.scheduler in STEP_SCHEDULERS:
            # Lightning's count of optimizer steps in this fit: max_epochs or max_steps,
            # limit_train_batches and accumulate_grad_batches included. A LambdaLR, not torch's
            # OneCycleLR, because that saves its horizon in the checkpoint: a run resumed with
            # more epochs stretches this schedule to its new end instead of stopping.
            total = self.trainer.estimated_stepping_batches
            factor = functools.partial(lr_factor, hp.scheduler, total=total)
            config = {"scheduler": LambdaLR(optimizer, factor), "interval": "step"}
        elif hp.scheduler == "step":  # Lightning's default interval: per epoch
            config = {"scheduler": StepLR(optimizer, hp.lr_step_epochs, hp.lr_gamma)}
        elif hp.scheduler == "plateau":
            # Cut the rate when val/acc stops improving for 2 epochs; strict=False: an epoch
            # without validation (check_val_every_n_epoch) skips the step.
            schedule = ReduceLROnPlateau(optimizer, mode="max", factor=hp.lr_gamma, patience=2)
            config = {"scheduler": schedule, "monitor": "val/acc", "strict": False}
        else:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": config}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Save the random generators too (dropout draws from them): with them, a resumed run
        computes bit for bit what the uninterrupted run would have. A run whose loss diverged
        since its last log is stopped here, before its weights replace a good checkpoint."""
        window = self._window_of_all_processes(self.train_window)  # every process saves
        weights = torch.stack([p.isfinite().all() for p in self.parameters()]).all()
        self._stop_if_diverged(window[0], self.global_step, weights_finite=bool(weights))
        checkpoint["state_dict"]["train_window"] = window  # the first process resumes it all
        checkpoint["rng_states"] = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_states"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if self.global_rank > 0 and "train_window" in checkpoint.get("state_dict", {}):
            checkpoint["state_dict"]["train_window"] = torch.zeros(3)
        states = checkpoint.get("rng_states", {})
        if "cpu" in states:
            torch.set_rng_state(states["cpu"])
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])

    def on_fit_start(self) -> None:
        # precision=bf16-true or 16-true converts every float buffer; sums and counts in half
        # precision would be wrong past 256, so these stay float32.
        self.train_window.data = self.train_window.float()
        self.val_acc_best.data = self.val_acc_best.float()
        if self.hparams.compile:  # in place: the state_dict keys, so checkpoints, stay the same
            self.net.compile()
        # Lightning's tuner callbacks run after configure_optimizers and may change model.lr or
        # the batch size (so the schedule's horizon): build the optimizer and schedule again
        # from what they chose. (A resumed run's states are loaded after this.)
        tuners = (L.pytorch.callbacks.LearningRateFinder, L.pytorch.callbacks.BatchSizeFinder)
        if any(isinstance(callback, tuners) for callback in self.trainer.callbacks):
            self.trainer.strategy.setup_optimizers(self.trainer)


def _count(window: torch.Tensor, loss: torch.Tensor, logits, labels: torch.Tensor) -> None:
    """Add a batch's loss sum, correct predictions and images to `window` on the device."""
    with torch.no_grad():
        correct = (logits.argmax(1) == labels).sum()
        seen = torch.full_like(correct, len(labels))  # a fill, not a copy from the host
        window.add_(torch.stack((loss.float() * len(labels), correct, seen)))


def lr_factor(schedule: str, step: int, total: int) -> float:
    """The learning-rate multiplier at `step` of `total`: `cosine` anneals from lr to 0;
    `onecycle` is torch's OneCycleLR (30 % warm-up from lr/25, cosine down to lr/250 000)."""
    progress = min(step / max(total, 1), 1.0)
    first, last, fraction = 1.0, 0.0, progress  # cosine
    if schedule == "onecycle" and progress < 0.3:
        first, last, fraction = 1 / 25, 1.0, progress / 0.3
    elif schedule == "onecycle":
        first, last, fraction = 1.0, 1 / 250_000, (progress - 0.3) / 0.7
    return last + (first - last) * 0.5 * (1 + math.cos(math.pi * fraction))


@torch.no_grad()
def predict_all(model: MNISTClassifier, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits for uint8 `images`, in batches as mnist-train's test loop makes them."""
    return torch.cat([model(batch.float().div_(255)) for batch in images.split(batch_size)])
