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

from mnist_lightning.errors import CheckpointError
from mnist_lightning.files import atomic_open, open_regular
from mnist_lightning.model import MNISTClassifier

# Where ModelCheckpoint's saved state names checkpoint files: Lightning tests the best one it
# restores and deletes the ones that drop out of the top k.
STATE_PATHS = ("best_model_path", "last_model_path", "kth_best_model_path")


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


def run_dir_of(checkpoint: Path) -> Path:
    """The run a checkpoint belongs to: `<run>/checkpoints/x.ckpt`, or `<run>/x.ckpt` (SLURM's
    hpc_ckpt files, or a checkpoint somewhere else)."""
    folder = checkpoint.parent
    return folder.parent if folder.name == "checkpoints" else folder


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
        reason = " ".join(str(e).split())
        code = re.search(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)", reason)
        if code:
            raise CheckpointError(
                f"Checkpoint {path} cannot be read: it asks to run {code[1]} as it is loaded. "
                "Checkpoints are read as weights only, so nothing ran; use one mnist-train wrote."
            ) from None
        reason = reason[:200]
        raise CheckpointError(
            f"Checkpoint {path} cannot be read ({reason}); it is truncated, corrupt or not a "
            "torch checkpoint. Use another one, e.g. the run's checkpoints/last.ckpt."
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict in it).")
    if "hyper_parameters" not in checkpoint:
        raise CheckpointError(f"{path} has no hyper_parameters: it was not made by mnist-train.")
    return checkpoint


def confine_paths(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    """`checkpoint` with its ModelCheckpoint states naming files of its own run only (else a
    `CheckpointError`): a checkpoint must not make Lightning read or delete a file elsewhere.
    A run that was moved or copied keeps its state: a path in the state's old `dirpath` is
    mapped to the same file name in the run's folder of that name (`.../checkpoints/x.ckpt` to
    `<run>/checkpoints/x.ckpt`)."""
    run = run_dir_of(path.resolve())
    for callback, state in (checkpoint.get("callbacks") or {}).items():
        if not isinstance(state, dict) or not isinstance(state.get("dirpath"), str):
            continue
        old = Path(state["dirpath"])
        new = old if old.resolve().is_relative_to(run) else run / old.name
        state["dirpath"] = str(new)
        best_k = state.get("best_k_models") if isinstance(state.get("best_k_models"), dict) else {}
        named = [(key, state[key]) for key in STATE_PATHS if state.get(key)]
        for key, name in [*named, *(("best_k_models", name) for name in best_k)]:
            file = Path(str(name))
            if file.parent == old:
                file = new / file.name
            if not file.resolve().is_relative_to(run):
                raise CheckpointError(
                    f"{path}: its {callback.split('{')[0]} state sets {key}={name}, outside its "
                    f"run {run}; a checkpoint may name only files of its own run. Use another "
                    "checkpoint."
                )
            if key == "best_k_models":
                best_k[str(file)] = best_k.pop(name)
            else:
                state[key] = str(file)
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
    run made by an older version may group them differently), and it may name only files of
    its own run."""
    confine_paths(checkpoint, Path(path))
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
