"""`mnist-eval run_dir=<run>` (or `ckpt_path=<file>`): a checkpoint's test loss and accuracy,
per class, and its confusion matrix, to the console, `<run>/eval/` and the run's TensorBoard.
Same images, batches and arithmetic as mnist-train's test: the same accuracy."""

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torchmetrics.functional.classification import multiclass_confusion_matrix

from mnist_lightning.cli import (
    carries,
    check_overwrite,
    check_place,
    command,
    held_out,
    open_checkpoint,
    png_mark,
    writing,
)
from mnist_lightning.data.datasets import DataSet
from mnist_lightning.files import atomic_open, atomic_write_json, check_writable, lock_run
from mnist_lightning.model.classifier import predict_all
from mnist_lightning.run.checkpoint import best_checkpoint, run_dir_of
from mnist_lightning.run.config import validate_eval
from mnist_lightning.run.report import FIGURE_TAGS, result_figures

# What mnist-eval writes into <run>/eval/, each with what marks it as mnist-eval's own, which
# alone it writes over: a key only its metrics.json has, the figures' PNG text `Software`.
EVAL_FILES = {
    "metrics.json": (b"{", b'\n  "per_class_acc": {'),
    **{f"{name}.png": png_mark("mnist-eval") for name in FIGURE_TAGS},
}


def prepare_run(ckpt: Path, tensorboard: bool, key: str) -> Path:
    """The run `ckpt` belongs to, its `eval/` (and `tensorboard/`) ours or absent and writable,
    then locked if it is a run (a refused place leaves it as it was)."""
    run = run_dir_of(ckpt)
    folders = [run / "eval", *([run / "tensorboard"] if tensorboard else [])]
    for folder in folders:
        check_place(folder, str(folder), "a directory")
        check_writable(folder, key)
    own = {name: carries(run / "eval" / name, mark) for name, mark in EVAL_FILES.items()}
    # Figures of a version before their mark: any PNG beside its own metrics.json, if none has it.
    earlier = own["metrics.json"] and not any(v for n, v in own.items() if n.endswith(".png"))
    for name, ours in own.items():
        path = run / "eval" / name
        ours = ours or (earlier and name.endswith(".png") and carries(path, (b"\x89PNG", b"")))
        check_overwrite(
            path, str(path), {}, "mnist-eval", lambda _, o=ours: o, "a file mnist-eval wrote"
        )
    if ckpt.parent.name == "checkpoints":
        lock_run(run, "mnist-eval")
    return run


def evaluate(logits: torch.Tensor, labels: torch.Tensor, classes: tuple[str, ...]) -> dict:
    """Test loss and accuracy, and each class's accuracy keyed by its name (MNIST's: "0"-"9")."""
    preds = logits.argmax(1)
    counts = multiclass_confusion_matrix(preds, labels, 10).cpu()  # [true, predicted]
    # Not MulticlassAccuracy(average=None): it says 0 for a class with no images, this NaN (null).
    per_class = counts.diag().float() / counts.sum(1).float()
    return {
        "test/acc": float((preds == labels).float().mean()),
        "test/loss": float(F.cross_entropy(logits, labels)),
        "per_class_acc": {classes[c]: round(float(a), 4) for c, a in enumerate(per_class)},
        "confusion_matrix": counts.tolist(),
    }


def report(ckpt: Path, results: dict[str, Any], dataset: DataSet) -> str:
    """The console table: a row per true class, by number and name where it has one."""
    counts = results["confusion_matrix"]
    lines = [
        f"checkpoint  {ckpt}",
        *([f"data set    {dataset.title}"] if dataset.named else []),
        f"test/acc    {results['test/acc']:.4f}",
        f"test/loss   {results['test/loss']:.4f}",
        "",
        "true \\ predicted " + "".join(f"{d:>6}" for d in range(10)) + "   accuracy",
    ]
    for c, name in enumerate(dataset.classes):
        row = "".join(f"{n:>6}" for n in counts[c])
        label = f"{f'{c} {name}':<16}" if dataset.named else f"{name:>16}"
        lines.append(f"{label} {row}   {results['per_class_acc'][name]:.4f}")
    return "\n".join(lines)


def write_results(run: Path, results: dict[str, Any], figures: dict, tensorboard: bool) -> None:
    atomic_write_json(run / "eval" / "metrics.json", results)
    for name, figure in figures.items():
        with atomic_open(run / "eval" / f"{name}.png", "wb") as f:
            figure.savefig(f, format="png", dpi=100, metadata={"Software": "mnist-eval"})
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        step = results["global_step"]
        with SummaryWriter(run / "tensorboard") as writer:
            writer.add_scalar("eval/acc", results["test/acc"], step)
            writer.add_scalar("eval/loss", results["test/loss"], step)
            for name, figure in figures.items():
                writer.add_figure(f"eval/{name}", figure, step)


@command("eval")
def main(cfg: DictConfig) -> None:
    validate_eval(cfg)
    ckpt = Path(cfg.ckpt_path) if cfg.ckpt_path else best_checkpoint(Path(cfg.run_dir))
    model, checkpoint, dataset = open_checkpoint(ckpt, cfg.device)  # before its run is locked
    key = f"ckpt_path={cfg.ckpt_path}" if cfg.ckpt_path else f"run_dir={cfg.run_dir}"
    run = prepare_run(ckpt, cfg.tensorboard, key)
    images, labels = (t.to(model.device) for t in held_out(cfg, dataset))
    logits = predict_all(model, images, cfg.batch_size)
    results = evaluate(logits, labels, dataset.classes)
    print(report(ckpt, results, dataset))

    step = checkpoint.get("global_step")  # TensorBoard takes a count of steps, nothing else
    step = step if type(step) is int and 0 <= step < 2**63 else 0
    results |= {"checkpoint": str(ckpt), "dataset": dataset.name, "global_step": step}
    figures = result_figures(model, images, labels, logits, dataset.classes)
    with writing(f"the results into {run / 'eval'}"):
        write_results(run, results, figures, cfg.tensorboard)
    print(f"\nwritten: {run / 'eval'}/metrics.json and {', '.join(f'{n}.png' for n in figures)}")


if __name__ == "__main__":
    main()
