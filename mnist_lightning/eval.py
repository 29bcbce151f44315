"""`mnist-eval`: a checkpoint's test loss and accuracy, per class, and its confusion matrix.

    mnist-eval run_dir=outputs/runs/<run>     # the run's best checkpoint
    mnist-eval ckpt_path=path/to/file.ckpt    # any checkpoint, from any device

Results go to the console, to `eval/` in the checkpoint's run (metrics.json and the figures as
PNG) and, as scalars and figures, to that run's TensorBoard. The test accuracy equals the one
`mnist-train` recorded for the same checkpoint: same images, same batches, same arithmetic.
"""

from pathlib import Path
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator
from omegaconf import DictConfig

from mnist_lightning.checkpoint import load_classifier, run_dir_of
from mnist_lightning.config import CONFIG_DIR
from mnist_lightning.data import load_pair
from mnist_lightning.download import ensure_mnist
from mnist_lightning.errors import CheckpointError, ConfigError, exit_on_user_error
from mnist_lightning.figures import (
    confusion_figure,
    confusion_matrix,
    first_layer_figure,
    mistakes_figure,
)
from mnist_lightning.files import atomic_open, atomic_write_json
from mnist_lightning.model import MNISTClassifier


def pick_device(name: str) -> torch.device:
    """`auto`: what Lightning's `accelerator=auto` picks (MPS on Apple silicon, else CUDA, else
    the CPU), so mnist-eval and mnist-predict run where mnist-train trained; otherwise the
    device named, if this machine has it."""
    available = {
        "mps": MPSAccelerator.is_available(),
        "cuda": CUDAAccelerator.is_available(),
        "cpu": True,
    }
    if name == "auto":
        return torch.device(next(kind for kind, present in available.items() if present))
    if name not in available:
        raise ConfigError(f"device={name!r} is not one of auto, cpu, cuda, mps.")
    if not available[name]:
        raise ConfigError(f"device={name}: this machine has no {name} device; use device=cpu.")
    return torch.device(name)


def best_checkpoint(run_dir: Path) -> Path:
    """The run's best checkpoint by val/acc (the one mnist-train tested), else last.ckpt."""
    if not run_dir.is_dir():
        raise CheckpointError(f"run_dir={run_dir}: there is no such directory.")
    best = sorted((run_dir / "checkpoints").glob("best-*.ckpt"))
    if best:
        return best[-1]
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        return last
    raise CheckpointError(f"run_dir={run_dir}: no checkpoints/best-*.ckpt or last.ckpt in it.")


@torch.no_grad()
def predict_all(model: MNISTClassifier, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits for uint8 `images`, in batches as mnist-train's test loop makes them."""
    return torch.cat(
        [
            model(images[i : i + batch_size].float().div_(255))
            for i in range(0, len(images), batch_size)
        ]
    )


def evaluate(
    model: MNISTClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int
) -> dict[str, Any]:
    logits = predict_all(model, images, batch_size)
    preds = logits.argmax(1)
    counts = confusion_matrix(preds, labels)
    per_class = counts.diag().float() / counts.sum(1).float()
    return {
        "test/acc": float((preds == labels).float().mean()),
        "test/loss": float(F.cross_entropy(logits, labels)),
        "per_class_acc": {str(d): round(float(a), 4) for d, a in enumerate(per_class)},
        "confusion_matrix": counts.tolist(),
        "logits": logits,
    }


def report(ckpt: Path, results: dict[str, Any]) -> str:
    counts = results["confusion_matrix"]
    lines = [
        f"checkpoint  {ckpt}",
        f"test/acc    {results['test/acc']:.4f}",
        f"test/loss   {results['test/loss']:.4f}",
        "",
        "true \\ predicted " + "".join(f"{d:>6}" for d in range(10)) + "   accuracy",
    ]
    for digit in range(10):
        row = "".join(f"{n:>6}" for n in counts[digit])
        lines.append(f"{digit:>16} {row}   {results['per_class_acc'][str(digit)]:.4f}")
    return "\n".join(lines)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    if bool(cfg.ckpt_path) == bool(cfg.run_dir):
        raise ConfigError("Give exactly one of ckpt_path=<file> or run_dir=<run directory>.")
    ckpt = Path(cfg.ckpt_path) if cfg.ckpt_path else best_checkpoint(Path(cfg.run_dir))
    device = pick_device(cfg.device)
    model, checkpoint = load_classifier(ckpt, device)
    raw = ensure_mnist(cfg.data_dir, cfg.data_source)
    images, labels = (t.to(device) for t in load_pair(raw, "t10k"))
    results = evaluate(model, images, labels, cfg.batch_size)
    logits = results.pop("logits")
    print(report(ckpt, results))

    run = run_dir_of(ckpt)
    results |= {"checkpoint": str(ckpt), "global_step": checkpoint.get("global_step", 0)}
    atomic_write_json(run / "eval" / "metrics.json", results)
    figures = {
        "confusion_matrix": confusion_figure(torch.tensor(results["confusion_matrix"])),
        "mistakes": mistakes_figure(images.float() / 255, logits.softmax(1), labels),
        "first_layer": first_layer_figure(model.net.layers[0].weight),
    }
    for name, figure in figures.items():
        with atomic_open(run / "eval" / f"{name}.png", "wb") as f:
            figure.savefig(f, format="png", dpi=100)
    if cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        step = results["global_step"]
        with SummaryWriter(run / "tensorboard") as writer:
            writer.add_scalar("eval/acc", results["test/acc"], step)
            writer.add_scalar("eval/loss", results["test/loss"], step)
            for name, figure in figures.items():
                writer.add_figure(f"eval/{name}", figure, step)
    print(f"\nwritten: {run / 'eval'}/metrics.json and {', '.join(f'{n}.png' for n in figures)}")


if __name__ == "__main__":
    main()
