"""What a run reports: its hyper-parameters to the loggers, its figures (the same for
mnist-train's TensorBoard and mnist-eval's PNGs), metrics.json and the results table."""

import itertools
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger
from matplotlib.figure import Figure  # the object API: no pyplot state, no screen needed
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard.summary import hparams
from torchmetrics.functional.classification import multiclass_confusion_matrix
from torchvision.utils import make_grid

from mnist_lightning.data.augment import Augment
from mnist_lightning.data.datamodule import MNISTDataModule
from mnist_lightning.data.datasets import DIGITS
from mnist_lightning.files import atomic_write_json, to_run_log
from mnist_lightning.model.classifier import MNISTClassifier, predict_all
from mnist_lightning.run.config import leaves
from mnist_lightning.run.resume import is_rank_zero
from mnist_lightning.run.trainer import finish_wandb_run

log = logging.getLogger(__name__)


def confusion_figure(counts: torch.Tensor, classes: tuple[str, ...] = DIGITS) -> Figure:
    """Row-normalised confusion matrix, the counts written in (zeros left blank), the axes
    named by the classes. (torchmetrics' `plot` colours and writes one matrix: rates or counts.)"""
    rates = counts.float() / counts.sum(1, keepdim=True).clamp(min=1)
    named = classes != DIGITS
    fig = Figure(figsize=(6.5, 6) if named else (5.5, 5))
    ax = fig.subplots()
    ax.imshow(rates.sqrt().numpy(), cmap="Blues", vmin=0, vmax=1)  # sqrt: rare ones stay visible
    for true, pred in itertools.product(range(10), range(10)):
        if n := int(counts[true, pred]):
            color = "white" if rates[true, pred] > 0.5 else "black"
            ax.text(pred, true, str(n), ha="center", va="center", fontsize=7, color=color)
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true")
    rotation = {"rotation": 45, "ha": "right", "rotation_mode": "anchor"} if named else {}
    ax.set_xticklabels(classes, **rotation)
    ax.set_yticklabels(classes)
    accuracy = counts.diag().sum() / counts.sum().clamp(min=1)
    ax.set_title(f"Confusion matrix (accuracy {accuracy:.2%})")
    fig.tight_layout()
    return fig


def digits_figure(
    images: torch.Tensor, captions: list[str], title: str, columns: int = 8, signed: bool = False
) -> Figure:
    """A grid of 28x28 images with a caption above each: values in [0, 1], ink bright, or
    (`signed`) in [-1, 1], positive red and negative blue."""
    columns = max(1, min(columns, len(images)))
    tiles = images.detach().cpu().reshape(-1, 1, 28, 28)
    tiles = tiles if len(tiles) else torch.zeros(1, 1, 28, 28)  # no mistakes: a blank grid
    pad = 14 if captions else 2  # a 14-pixel margin for each caption
    grid = make_grid(tiles, nrow=columns, padding=pad)[0]
    fig = Figure(figsize=(columns * 1.1, grid.shape[0] / (28 + pad) * 1.1 + 0.4))
    ax = fig.subplots()
    ax.imshow(grid.numpy(), cmap="RdBu_r" if signed else "gray_r", vmin=-1 if signed else 0, vmax=1)
    for i, caption in enumerate(captions):
        x, y = (i % columns) * 42 + 28, (i // columns) * 42 + 13
        ax.text(x, y, caption, ha="center", va="bottom", fontsize=6)
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def mistakes_figure(
    images: torch.Tensor, probs: torch.Tensor, labels: torch.Tensor, classes: tuple[str, ...]
) -> Figure:
    """The 24 wrong predictions the model was most sure of, captioned with class names."""
    confidence, preds = probs.max(1)
    wrong = (preds != labels).nonzero().flatten()
    worst = wrong[confidence[wrong].argsort(descending=True)[:24]].tolist()
    captions = [
        f"pred {classes[preds[i]]} ({float(confidence[i]):.0%})\ntrue {classes[labels[i]]}"
        for i in worst
    ]
    title = f"Most confident mistakes ({len(wrong)} of {len(labels)} wrong)"
    return digits_figure(images[worst], captions, title, columns=8 if classes == DIGITS else 6)


def augmentation_figure(images: torch.Tensor, augment: Augment) -> Figure:
    """Training images as stored (top row) and three random distortions of each below."""
    images = images[:8].float().cpu() / 255
    rows = [images] + [augment(images, torch.Generator().manual_seed(k)) for k in range(3)]
    captions = ["stored"] * len(images) + [f"draw {k}" for k in range(3) for _ in images]
    return digits_figure(torch.cat(rows), captions, "Training images and their distortions")


def result_figures(
    model: MNISTClassifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    logits: torch.Tensor,
    classes: tuple[str, ...] = DIGITS,
) -> dict[str, Figure]:
    """The tested model's confusion matrix, most confident mistakes and first-layer weights
    (red excites a unit, blue inhibits it): mnist-train's TensorBoard, mnist-eval's PNGs."""
    counts = multiclass_confusion_matrix(logits.argmax(1), labels, 10).cpu()  # [true, predicted]
    weight = model.net.layers[0].weight.detach()
    tiles = weight[:64] / weight[:64].abs().amax(1, keepdim=True).clamp(min=1e-12)
    title = f"First-layer weights ({len(tiles)} of {len(weight)} units)"
    return {
        "confusion_matrix": confusion_figure(counts, classes),
        "mistakes": mistakes_figure(images.float() / 255, logits.softmax(1), labels, classes),
        "first_layer": digits_figure(tiles, [], title, signed=True),
    }


# Where mnist-train puts each figure in TensorBoard (mnist-eval: under eval/).
FIGURE_TAGS = {
    "confusion_matrix": "test/confusion_matrix",
    "mistakes": "test/mistakes",
    "first_layer": "model/first_layer",
}


def log_hparams(trainer: L.Trainer, cfg: DictConfig) -> None:
    """The config keys a sweep varies, flattened (`model.dropout`), to each logger of the first
    process: TensorBoard's HPARAMS tab, MLflow's params, W&B's config. (CSVLogger keeps the
    model's in hparams.yaml; .hydra/config.yaml has all.) Not `log_hyperparams(metrics=...)`:
    that writes placeholder points into the curves; TensorBoard reads the results from the
    curves of their name."""
    if not trainer.loggers or not is_rank_zero():
        return
    wanted = {"seed": cfg.seed} | {  # (each resolved alone: paths may need Hydra's runtime)
        key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("data", "model", "trainer")
    }
    params = {
        key: value if isinstance(value, int | float | str | bool) else str(value)
        for key, value in leaves(wanted, lists=False)
        if not key.endswith(("_target_", "_dir"))
    }
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):  # HPARAMS shows these beside the params:
            shown = dict.fromkeys(("val/acc_best", "val/acc", "test/acc", "test/loss"), 0.0)
            for summary in hparams(params, shown):
                logger.experiment.file_writer.add_summary(summary)
        elif isinstance(logger, MLFlowLogger):  # it keeps a param's first value: a resumed run
            # that changed one (trainer.max_epochs) logs the new value as tag `resumed.<key>`
            logged = logger.experiment.get_run(logger.run_id).data.params
            changed = {k for k, v in params.items() if k in logged and logged[k] != str(v)[:250]}
            logger.log_hyperparams({k: v for k, v in params.items() if k not in changed})
            for key in changed:
                logger.experiment.set_tag(logger.run_id, f"resumed.{key}", str(params[key]))
        elif not isinstance(logger, CSVLogger):
            logger.log_hyperparams(params)
        if isinstance(logger, WandbLogger):  # silent (conf/logger/wandb.yaml): where its run is
            run = logger.experiment
            log.info("W&B run: %s", run.settings.sync_dir if run.offline else run.url)


def report_run(
    trainer: L.Trainer,
    datamodule: MNISTDataModule,
    run_dir: Path,
    metrics: dict[str, Any],
    resumed: bool,
) -> None:
    """The tested model's figures (and what the augmentation does to training images) to
    TensorBoard, metrics.json, and the results table (its time is this process's)."""
    model, step = trainer.lightning_module, trainer.global_step
    for writer in (lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)):
        images, labels = datamodule.splits["test"]
        logits = predict_all(model.eval(), images, datamodule.eval_batch_size)
        figures = result_figures(model, images, labels, logits, datamodule.dataset.classes)
        for name, figure in figures.items():
            writer.add_figure(FIGURE_TAGS[name], figure, step)
        if datamodule.augment.enabled:
            figure = augmentation_figure(datamodule.splits["train"][0], datamodule.augment)
            writer.add_figure("data/augmented", figure, step)
        writer.flush()
    finish_wandb_run()
    atomic_write_json(run_dir / "metrics.json", metrics)
    rows = {key: f"{metrics[key]:.4f}" for key in ("test/acc", "test/loss", "val/acc_best")}
    rows |= {
        "epochs": metrics["epoch"],
        "training time": f"{metrics['fit_seconds']:.1f} s{' since the resume' * resumed}",
        "run directory": run_dir,
    }
    table = "\n".join(f"  {name:<13}  {value}" for name, value in rows.items())
    print(f"\n{table}\n")
    to_run_log(log, f"Results:\n{table}")


class EpochSummary(L.Callback):
    """A line per validation (what the progress bar shows, gone once it moves on): the story
    of the run in train.log and in a job's log, where there is no progress bar."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        shown = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        values = ", ".join(f"{name} {float(value):.4f}" for name, value in sorted(shown.items()))
        log.info("epoch %d, step %d: %s", trainer.current_epoch, trainer.global_step, values)
