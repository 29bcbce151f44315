"""Writing and reading checkpoints safely.

Lightning's own writer opens the destination and streams into it, so a kill or a full disk
mid-write leaves a truncated `last.ckpt` where a good one was. `AtomicCheckpointIO` writes a
temporary file and renames it over the old one. `load_checkpoint` reads with
`weights_only=True` (no code runs from a checkpoint) and turns every failure into a
`CheckpointError` that names the file.
"""

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mnist_lightning.errors import CheckpointError
from mnist_lightning.files import atomic_open
from mnist_lightning.model import MNISTClassifier


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


def run_dir_of(checkpoint: Path) -> Path:
    """The run a checkpoint belongs to: `<run>/checkpoints/x.ckpt`, or `<run>/x.ckpt` (SLURM's
    hpc_ckpt files, or a checkpoint somewhere else)."""
    folder = checkpoint.parent
    return folder.parent if folder.name == "checkpoints" else folder


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a Lightning checkpoint of this project, or explain why it cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist (or is not a file).")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # whatever a damaged file makes torch.load raise
        reason = " ".join(str(e).split())[:200]
        raise CheckpointError(
            f"Checkpoint {path} cannot be read ({reason}); it is truncated, corrupt or not a "
            "torch checkpoint. Use another one, e.g. the run's checkpoints/last.ckpt."
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict in it).")
    if "hyper_parameters" not in checkpoint:
        raise CheckpointError(f"{path} has no hyper_parameters: it was not made by mnist-train.")
    return checkpoint


def network_weights(
    model: MNISTClassifier, checkpoint: dict[str, Any], path: str | Path
) -> dict[str, torch.Tensor]:
    """The checkpoint's network weights (`net.*`), if they fit `model.net` exactly; else say
    what differs. Training bookkeeping beside them is Lightning's to restore, not ours."""
    state = {k[4:]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    mine = model.net.state_dict()
    differs = sorted(
        {k for k in mine if k not in state or state[k].shape != mine[k].shape}
        | (set(state) - set(mine))
    )
    if differs:
        shapes = {k: tuple(v.shape) for k, v in state.items() if k.endswith("weight")}
        raise CheckpointError(
            f"{path} holds a different architecture than the config asks for (its weight shapes: "
            f"{shapes}; differing entries: {', '.join(differs[:6])}). Use the model.* settings "
            "it was trained with, or another checkpoint."
        )
    return state


def check_resumable(model: MNISTClassifier, checkpoint: dict[str, Any], path: str | Path) -> None:
    """Fail before training if `checkpoint` cannot continue `model`'s run: its network must fit,
    and its optimizer state must hold the parameter groups this version's optimizer has (a
    run made by an older version may group them differently)."""
    network_weights(model, checkpoint, path)
    mine = [len(group["params"]) for group in model.build_optimizer().param_groups]
    states = checkpoint.get("optimizer_states") or [{}]
    saved = [len(group["params"]) for group in states[0].get("param_groups", [])]
    if saved and saved != mine:
        raise CheckpointError(
            f"{path}: its optimizer state has parameter groups of {saved} tensors, the "
            f"optimizer of this mnist-train version {mine}, so it cannot continue that run. "
            f"Start a new run from its weights instead: mnist-train ckpt_path={path}"
        )


def load_classifier(
    path: str | Path, device: torch.device
) -> tuple[MNISTClassifier, dict[str, Any]]:
    """An `MNISTClassifier` in eval mode on `device`, rebuilt from a checkpoint's hparams."""
    checkpoint = load_checkpoint(path)
    try:
        model = MNISTClassifier(**checkpoint["hyper_parameters"])
    except (TypeError, KeyError, ValueError) as e:
        raise CheckpointError(
            f"{path}: its hyper_parameters do not describe a model of this version ({e})."
        ) from None
    model.net.load_state_dict(network_weights(model, checkpoint, path))
    return model.eval().to(device), checkpoint
