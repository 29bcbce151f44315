"""The networks (`MLP`) and the LightningModule that trains them (`MNISTClassifier`)."""

import math
from collections.abc import Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from mnist_lightning.errors import UserError


class DivergedError(UserError):
    """The training loss became NaN or infinite."""


MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
}
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "onecycle", "step", "plateau")
STEP_SCHEDULERS = ("cosine", "onecycle")  # updated every optimizer step; the others per epoch


class MLP(nn.Module):
    """784 -> hidden_dims -> 10, on images in [0, 1] of shape (B, 28, 28), (B, 1, 28, 28) or
    (B, 784).

    The network normalises its own input with MNIST's mean and std, so a checkpoint or an
    exported model takes plain pixels and nobody has to remember the constants. An empty
    `hidden_dims` is a linear (multinomial logistic regression) model. `input_dropout` drops
    pixels (sets them to black) before anything else, as Srivastava et al. 2014 did.
    """

    def __init__(
        self,
        hidden_dims: Sequence[int] = (512, 256),
        activation: str = "relu",
        dropout: float | Sequence[float] = 0.0,
        batch_norm: bool = False,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.input_dropout = nn.Dropout(input_dropout) if input_dropout > 0 else nn.Identity()
        dropouts = [dropout] * len(hidden_dims) if isinstance(dropout, float | int) else dropout
        layers: list[nn.Module] = []
        width = 28 * 28
        for hidden, p in zip(hidden_dims, dropouts, strict=True):
            layers.append(nn.Linear(width, hidden, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(ACTIVATIONS[activation]())
            if p > 0:
                layers.append(nn.Dropout(p))
            width = hidden
        layers.append(nn.Linear(width, 10))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (self.input_dropout(images.flatten(1)) - MNIST_MEAN) / MNIST_STD
        return self.layers(x)

    def hidden_weights(self) -> list[torch.Tensor]:
        """The weight matrices that feed hidden units (all but the output layer's)."""
        return [layer.weight for layer in self.layers if isinstance(layer, nn.Linear)][:-1]


class MNISTClassifier(L.LightningModule):
    """Cross-entropy training of an `MLP`, with the optimizer and schedule from the config.

    Training metrics are accumulated on the device and logged once every
    `trainer.log_every_n_steps` steps as the mean over that window: logging every step would
    cost as much as the step itself for a small MLP and force a host sync on a GPU.
    """

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
        self.automatic_optimization = False  # see training_step
        self.net = MLP(hidden_dims, activation, dropout, batch_norm, input_dropout)
        # Saved in checkpoints, so a resumed run remembers its best validation accuracy and
        # its half-filled logging window (loss sum, correct, seen): curves resume exactly.
        self.register_buffer("val_acc_best", torch.tensor(0.0))
        self.register_buffer("train_window", torch.zeros(3))
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        self.val_acc = MulticlassAccuracy(num_classes=10, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=10, average="micro")
        self._total_steps = 1  # set in on_train_start, once the trainer knows the data

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def _weights(self) -> list[nn.Parameter]:
        """The matrices of the linear layers: what weight decay and L1 act on."""
        return [p for p in self.net.parameters() if p.dim() > 1]

    def training_step(self, batches: list[tuple[torch.Tensor, torch.Tensor]], batch_idx: int):
        """One optimizer step per mini-batch in `batches` (`data.steps_per_call` of them).

        Manual optimization, so that one call can take several steps: Lightning's per-call
        bookkeeping then costs a fraction of a step instead of as much as the arithmetic. The
        train loss and accuracy of the call's steps are summed once, when the call ends (or a
        log is due): a handful of tensor operations per call instead of per step.
        """
        optimizer = self.optimizers()
        per_step = self.hparams.scheduler in STEP_SCHEDULERS
        step = self.global_step  # counted here: Lightning's property is a chain of lookups
        done: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # not yet in the window
        for images, labels in batches:
            logits = self(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
            if self.hparams.l1 > 0:
                loss = loss + self.hparams.l1 * sum(w.abs().sum() for w in self._weights())
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            optimizer.step()
            step += 1
            if self.hparams.max_norm is not None:
                self._apply_max_norm()
            if per_step:
                self.lr_schedulers().step()
            done.append((loss.detach() * len(labels), logits.detach(), labels))
            if step % self.trainer.log_every_n_steps == 0:
                self._add_to_window(done)
                done = []
                self._log_train_window()
            if step == self.trainer.max_steps:
                break  # the rest of this call's mini-batches would overshoot it
        self._add_to_window(done)
        if self.hparams.log_histograms and self.trainer.is_last_batch:
            self._log_histograms()  # once per epoch, while the last gradients are there

    @torch.no_grad()
    def _add_to_window(self, done: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
        """Add (loss x batch size, logits, labels) of finished steps to the logging window."""
        if not done:
            return
        loss_sums, logits, labels = zip(*done, strict=True)
        targets = torch.cat(labels)
        correct = (torch.cat(logits).argmax(1) == targets).sum()
        seen = torch.full_like(correct, len(targets))  # a fill, not a copy from the host: no sync
        self.train_window.add_(torch.stack([torch.stack(loss_sums).sum(), correct, seen]))

    @torch.no_grad()
    def _apply_max_norm(self) -> None:
        """Scale down every hidden unit's incoming weight vector whose L2 norm exceeds
        `max_norm` (Srivastava et al. 2014): with dropout it lets large learning rates run
        without the weights blowing up."""
        for weight in self.net.hidden_weights():
            weight.renorm_(2, 0, self.hparams.max_norm)

    def _log_train_window(self) -> None:
        """Log the mean loss and accuracy since the last log, and stop if the loss diverged."""
        window = self.train_window
        if self.trainer.world_size > 1:  # under DDP: the sums over every process
            window = self.trainer.strategy.reduce(window.clone(), reduce_op="sum")
        loss_sum, correct, seen = window.tolist()  # the one host sync per window
        if not math.isfinite(loss_sum):
            raise DivergedError(
                f"train/loss became {loss_sum / seen} by step {self.global_step} (epoch "
                f"{self.current_epoch}): training diverged. Try a smaller model.lr (now "
                f"{self.hparams.lr}), model.batch_norm=true or a different model.optimizer."
            )
        lr = self.optimizers().param_groups[0]["lr"]
        self.log_to_step(
            {"train/loss": loss_sum / seen, "train/acc": correct / seen, "train/lr": lr},
            prog_bar=True,
        )
        if self.hparams.log_grad_norms:
            self.log_to_step(self._grad_norms())
        self.train_window.zero_()

    def log_to_step(self, metrics: dict[str, float | torch.Tensor], prog_bar: bool = False) -> None:
        """`self.log` for the progress bar and callbacks; the loggers get the optimizer step.

        Lightning's loggers count `training_step` calls, and each call takes
        `data.steps_per_call` optimizer steps, so every curve is written at `global_step`
        here: train, validation and test curves then share one x-axis.
        """
        self.log_dict(metrics, prog_bar=prog_bar, logger=False)
        if self.trainer.sanity_checking:
            return  # the pre-training check of the validation loop is not a result
        values = {name: float(value) for name, value in metrics.items()}
        for logger in self.loggers:
            logger.log_metrics(values, step=self.global_step)

    def on_fit_start(self) -> None:
        if self.hparams.compile:  # in place: the state_dict keys, so checkpoints, stay the same
            self.net.compile()

    def on_train_epoch_start(self) -> None:
        self.train_window.zero_()  # a window never spans two epochs

    def on_train_epoch_end(self) -> None:
        if self.hparams.scheduler == "step":
            self.lr_schedulers().step()
        elif self.hparams.scheduler == "plateau" and "val/acc" in self.trainer.callback_metrics:
            self.lr_schedulers().step(self.trainer.callback_metrics["val/acc"])

    def _grad_norms(self) -> dict[str, float]:
        """The L2 norm of each linear layer's last weight gradient, input layer first: in a deep
        sigmoid network the first layers' norms are orders of magnitude below the last's."""
        weights = [m.weight for m in self.net.layers if isinstance(m, nn.Linear)]
        norms = torch.stack([w.grad.norm() for w in weights]).tolist()  # one host sync
        return {f"grad_norm/layer{i}": norm for i, norm in enumerate(norms, 1)}

    def _weight_sparsity(self) -> float:
        """The share of weights below 1 % of the largest in their layer: near zero, prunable.
        L1 drives many weights there; L2 (weight decay) shrinks them all but few that far."""
        small = [(w.abs() < 0.01 * w.abs().max()).float().mean() for w in self._weights()]
        return float(torch.stack(small).mean()) if small else 0.0

    def _log_histograms(self) -> None:
        """Each layer's weights and last gradients, to TensorBoard's HISTOGRAMS tab: how the
        weights spread as training goes on, and whether gradients vanish in deep nets."""
        self.log_to_step({"weights/sparsity": self._weight_sparsity()})
        for logger in self.loggers:
            if isinstance(logger, L.pytorch.loggers.TensorBoardLogger):
                for name, param in self.net.named_parameters():
                    logger.experiment.add_histogram(f"weights/{name}", param, self.global_step)
                    if param.grad is not None:
                        logger.experiment.add_histogram(
                            f"gradients/{name}", param.grad, self.global_step
                        )

    def _eval_step(self, batch, loss_metric: MeanMetric, acc_metric: MulticlassAccuracy) -> None:
        images, labels = batch
        logits = self(images)
        loss_metric.update(F.cross_entropy(logits, labels), weight=len(labels))
        acc_metric.update(logits, labels)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_loss, self.val_acc)

    def on_validation_epoch_end(self) -> None:
        acc = self.val_acc.compute()
        if not self.trainer.sanity_checking:
            self.val_acc_best.copy_(torch.maximum(self.val_acc_best, acc))
        self.log_to_step(
            {
                "val/loss": self.val_loss.compute(),
                "val/acc": acc,
                "val/acc_best": self.val_acc_best,
            },
            prog_bar=True,
        )
        self.val_loss.reset()
        self.val_acc.reset()

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_loss, self.test_acc)

    def on_test_epoch_end(self) -> None:
        self.log_to_step(
            {"test/loss": self.test_loss.compute(), "test/acc": self.test_acc.compute()}
        )
        self.test_loss.reset()
        self.test_acc.reset()

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        images = batch[0] if isinstance(batch, list | tuple) else batch
        return self(images).softmax(1)

    def configure_optimizers(self):
        """Weight decay on the weight matrices only, never on biases or batch-norm parameters.

        With `adamw` it is decoupled (Loshchilov & Hutter); with `adam` and `sgd` it is the
        classic L2 penalty added to the gradient.
        """
        hp = self.hparams
        if hp.weight_decay == 0:  # one group: each group is one more optimizer call per step
            groups = [{"params": list(self.parameters()), "weight_decay": 0.0}]
        else:
            weights = {id(p) for p in self._weights()}
            groups = [
                {
                    "params": [p for p in self.parameters() if id(p) in weights],
                    "weight_decay": hp.weight_decay,
                },
                {
                    "params": [p for p in self.parameters() if id(p) not in weights],
                    "weight_decay": 0.0,
                },
            ]
        # One fused kernel for the whole update instead of a Python loop over parameters:
        # on a CPU this halves the time of a small MLP's step (docs/benchmarks.md).
        fused = self.device.type in ("cpu", "cuda")
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(
                groups, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov, fused=fused
            )
        else:
            cls = torch.optim.AdamW if hp.optimizer == "adamw" else torch.optim.Adam
            optimizer = cls(groups, lr=hp.lr, fused=fused)
        if hp.scheduler == "none":
            return optimizer
        # training_step and on_train_epoch_end step these; Lightning saves and restores them.
        if hp.scheduler in STEP_SCHEDULERS:
            schedule = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: lr_factor(hp.scheduler, step, self._total_steps)
            )
        elif hp.scheduler == "step":
            schedule = torch.optim.lr_scheduler.StepLR(optimizer, hp.lr_step_epochs, hp.lr_gamma)
        else:  # plateau: cut the rate when validation accuracy stops improving for 2 epochs
            schedule = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=hp.lr_gamma, patience=2
            )
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Save the random generators too (dropout draws from them): with them, a resumed run
        computes bit for bit what the uninterrupted run would have."""
        checkpoint["rng_states"] = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng_states"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        states = checkpoint.get("rng_states", {})
        if "cpu" in states:
            torch.set_rng_state(states["cpu"])
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])

    def on_train_start(self) -> None:
        # Read after a checkpoint is restored: a run resumed with more epochs (or steps)
        # stretches its schedule to the new horizon (torch's OneCycleLR would stop with an
        # error instead).
        trainer = self.trainer
        self._total_steps = trainer.max_epochs * trainer.train_dataloader.steps_per_epoch
        if trainer.max_steps >= 0:  # whichever limit comes first ends the schedule
            self._total_steps = min(self._total_steps, trainer.max_steps)


def lr_factor(schedule: str, step: int, total: int) -> float:
    """The learning-rate multiplier at `step` of `total` for `onecycle` or `cosine`.

    `onecycle` follows torch's OneCycleLR: 30 % warm-up from lr/25 to lr, then cosine
    annealing to lr/250 000. `cosine` anneals from lr to 0.
    """
    progress = min(step / max(total, 1), 1.0)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    start, end, warm = 1 / 25, 1 / 250_000, 0.3
    if progress < warm:
        return end_points(start, 1.0, progress / warm)
    return end_points(1.0, end, (progress - warm) / (1 - warm))


def end_points(first: float, last: float, fraction: float) -> float:
    """Cosine interpolation from `first` (fraction 0) to `last` (fraction 1)."""
    return last + (first - last) * 0.5 * (1 + math.cos(math.pi * fraction))
