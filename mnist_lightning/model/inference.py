"""Running a trained classifier outside Lightning's loops (mnist-eval, mnist-predict, the
figures mnist-train writes): where to run it and its logits for a stack of images."""

import torch
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator

from mnist_lightning.errors import ConfigError
from mnist_lightning.model.classifier import MNISTClassifier


def pick_device(name: str) -> torch.device:
    """`auto`: what Lightning's `accelerator=auto` picks (MPS on Apple silicon, else CUDA, else
    the CPU), so mnist-eval and mnist-predict run where mnist-train trained; otherwise the
    device named (one of run.config.DEVICES, checked before), if this machine has it."""
    available = {
        "mps": MPSAccelerator.is_available(),
        "cuda": CUDAAccelerator.is_available(),
        "cpu": True,
    }
    if name == "auto":
        return torch.device(next(kind for kind, present in available.items() if present))
    if not available[name]:
        raise ConfigError(f"device={name}: this machine has no {name} device; use device=cpu.")
    return torch.device(name)


@torch.no_grad()
def predict_all(model: MNISTClassifier, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits for uint8 `images`, in batches as mnist-train's test loop makes them."""
    return torch.cat(
        [
            model(images[i : i + batch_size].float().div_(255))
            for i in range(0, len(images), batch_size)
        ]
    )
