"""Writing and reading checkpoints safely.

Lightning's own writer opens the destination and streams into it, so a kill or a full disk
mid-write leaves a truncated `last.ckpt` where a good one was. `AtomicCheckpointIO` writes a
temporary file and renames it over the old one. `load_checkpoint` reads with
`weights_only=True` (no code runs from a checkpoint, whatever `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`
says), only from a regular file, and turns every failure into a `CheckpointError` that names the
file. Lightning's own reads (resume, the test of the best checkpoint, the tuners' restores) go
through `AtomicCheckpointIO.load_checkpoint`, so they are the same reads.
"""

import re
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mnist_lightning.errors import CheckpointError, one_line
from mnist_lightning.files import atomic_open, open_regular
from mnist_lightning.model.classifier import MNISTClassifier
from mnist_lightning.run.trust import confine_paths, network_weights, run_dir_of


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        try:
            with atomic_open(path, "wb") as f:
                torch.save(checkpoint, f)
        except OSError as e:  # a full disk, a quota, a vanished mount: stop, and say so
            raise CheckpointError(
                f"Cannot write checkpoint {path}: {e.strerror or e}. Training stopped; the "
                "checkpoints already there are unchanged. Free some space, then continue "
                f"with: mnist-train resume={run_dir_of(Path(path))}"
            ) from None

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Lightning's reads: weights only, whatever the caller asks, and paths kept in the run."""
        return confine_paths(load_checkpoint(path, map_location), Path(path))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a Lightning checkpoint of this project, or explain why it cannot be used."""
    path = Path(path)
    try:
        file = open_regular(path)
    except OSError as e:
        raise CheckpointError(
            f"Checkpoint {path} does not exist or is not a file ({e.strerror})."
        ) from None
    try:
        with file:
            checkpoint = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as e:  # whatever a damaged file makes torch.load raise
        code = re.search(r"(?:unsupported|Unsupported global:)\s+GLOBAL\s+([\w.]+)", str(e))
        if code:
            raise CheckpointError(
                f"Checkpoint {path} cannot be read: it asks to run {code[1]} as it is loaded. "
                "Checkpoints are read as weights only, so nothing ran; use one mnist-train wrote."
            ) from None
        # torch's refusal of a pickle opens with paragraphs of advice; its reason comes last.
        reason = one_line(str(e).rsplit("WeightsUnpickler error:", 1)[-1] or e, 200)
        raise CheckpointError(
            f"Checkpoint {path} cannot be read ({reason}); it is truncated, corrupt or not a "
            "torch checkpoint. Use another one, e.g. the run's checkpoints/last.ckpt."
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict in it).")
    if "hyper_parameters" not in checkpoint:
        raise CheckpointError(f"{path} has no hyper_parameters: it was not made by mnist-train.")
    return checkpoint


def load_classifier(
    path: str | Path, device: torch.device
) -> tuple[MNISTClassifier, dict[str, Any]]:
    """An `MNISTClassifier` in eval mode on `device`, rebuilt from a checkpoint's hparams."""
    checkpoint = load_checkpoint(path)
    try:  # crafted sizes are refused by the model; whatever else torch makes of them, too
        model = MNISTClassifier(**checkpoint["hyper_parameters"])
    except (TypeError, KeyError, ValueError, AttributeError, RuntimeError, MemoryError) as e:
        reason = one_line(e, 300)
        raise CheckpointError(
            f"{path}: its hyper_parameters do not describe a model of this version ({reason})."
        ) from None
    try:
        model.net.load_state_dict(network_weights(model, checkpoint, path))
    except (TypeError, KeyError, ValueError, AttributeError, RuntimeError, MemoryError) as e:
        reason = one_line(e, 300)
        raise CheckpointError(
            f"{path}: its weights cannot be loaded ({reason}); the file is damaged or was "
            "edited. Use another checkpoint."
        ) from None
    return model.eval().to(device), checkpoint
