"""`mnist-export`: turn a checkpoint into a model that runs without this project.

    mnist-export ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt format=onnx
    mnist-export ckpt_path=... format=torchscript output=model.pt

The exported network takes images as float in [0, 1], shape (batch, 28, 28), and returns the
ten logits: it normalises its input itself. Before it is kept, it must give the checkpoint's
predictions on `check_images` test images (ONNX through onnxruntime, TorchScript through
`torch.jit.load`), else nothing is written.
"""

import logging
import tempfile
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig

from mnist_lightning.checkpoint import load_classifier
from mnist_lightning.config import CONFIG_DIR
from mnist_lightning.data import load_pair
from mnist_lightning.download import ensure_mnist
from mnist_lightning.errors import ConfigError, UserError, exit_on_user_error

log = logging.getLogger(__name__)

SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}


def export_onnx(net: torch.nn.Module, example: torch.Tensor, path: Path) -> np.ndarray:
    """Write `net` as ONNX with a free batch size; return its logits for `example`."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(
            'format=onnx needs onnx, onnxscript and onnxruntime: pip install -e ".[export]"'
        ) from None
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(
        net,
        (example[:2],),
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes={"images": {0: batch}},
        verbose=False,
    )
    program.save(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": example.numpy()})[0]


def export_torchscript(net: torch.nn.Module, example: torch.Tensor, path: Path) -> np.ndarray:
    torch.jit.save(torch.jit.trace(net, example[:2]), str(path))
    return torch.jit.load(str(path))(example).detach().numpy()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    if cfg.format not in SUFFIXES:
        raise ConfigError(f"format={cfg.format!r} is not one of {', '.join(SUFFIXES)}.")
    ckpt = Path(cfg.ckpt_path)
    output = Path(cfg.output) if cfg.output else ckpt.with_suffix(SUFFIXES[cfg.format])
    model, _ = load_classifier(ckpt, torch.device("cpu"))
    net = model.net.eval()
    images, _ = load_pair(ensure_mnist(cfg.data_dir, cfg.data_source), "t10k")
    example = images[: cfg.check_images].float() / 255
    with torch.no_grad():
        expected = net(example).numpy()

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent) as tmp:  # kept only if it agrees
        candidate = Path(tmp) / output.name
        exporter = export_onnx if cfg.format == "onnx" else export_torchscript
        got = exporter(net, example, candidate)
        disagree = int((got.argmax(1) != expected.argmax(1)).sum())
        largest = float(np.abs(got - expected).max())
        if disagree:
            raise UserError(
                f"The {cfg.format} export predicts differently from {ckpt} on {disagree} of "
                f"{len(example)} test images (largest logit difference {largest:.2e}); not kept."
            )
        candidate.replace(output)
    print(
        f"wrote {output}: same predictions as the checkpoint on {len(example)} test images "
        f"(largest logit difference {largest:.1e})"
    )


if __name__ == "__main__":
    main()
