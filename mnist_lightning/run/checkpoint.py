"""Writing, finding and reading checkpoints safely.

`AtomicCheckpointIO` writes a temporary file beside the checkpoint and renames it over the old
one, so a kill or a full disk never leaves a truncated `last.ckpt`. (Lightning's own atomic
save writes through $TMPDIR: across filesystems, such as a cluster's run directory, a plain
copy.) Every read, ours and Lightning's (resume, the test of the best checkpoint), is
`load_checkpoint`: weights only, from a regular file, any failure one line naming the file.
"""

import os
import re
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mnist_lightning.errors import CheckpointError, one_line
from mnist_lightning.files import atomic_open, kind_of, open_regular
from mnist_lightning.model.classifier import MNISTClassifier
from mnist_lightning.run.resume import last_checkpoint, results
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


def best_checkpoint(run_dir: Path) -> Path:
    """The checkpoint mnist-train tested (metrics.json's best_checkpoint); else the best by
    val/acc that its ModelCheckpoint recorded in last.ckpt (file names alone do not rank
    them); else last.ckpt itself. Looked up by name in the run's checkpoints/, so a moved run
    still finds them, and only as the run's own regular files: a link there is refused."""
    if not run_dir.is_dir():
        raise CheckpointError(f"run_dir={run_dir}: there is no such directory.")
    last = last_checkpoint(run_dir)
    tested = (results(run_dir) or {}).get("best_checkpoint")
    found = own_checkpoint(run_dir, tested) if isinstance(tested, str) else None
    if found:
        return found
    if not own_checkpoint(run_dir, last.name):
        raise CheckpointError(
            f"run_dir={run_dir}: no checkpoint of its best epoch or last.ckpt in it."
        )
    for state in (confine_paths(load_checkpoint(last), last).get("callbacks") or {}).values():
        if not isinstance(state, dict):
            continue
        best = state.get("best_model_path")
        if state.get("monitor") == "val/acc" and isinstance(best, str) and best:
            found = own_checkpoint(run_dir, best)
            if found:
                return found
    return last


def own_checkpoint(run_dir: Path, name: str) -> Path | None:
    """`<run>/checkpoints/<file name of name>` if it is a regular file there; None if there is
    nothing; a `CheckpointError` for anything else (a link could lead out of the run)."""
    if Path(name).name in ("", ".", ".."):
        return None
    path = run_dir / "checkpoints" / Path(name).name
    try:
        kind = kind_of(os.lstat(path).st_mode)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise CheckpointError(f"run_dir={run_dir}: {path} cannot be read ({e.strerror}).") from None
    if kind != "a regular file":
        raise CheckpointError(
            f"run_dir={run_dir}: {path} is {kind}, not a regular file; a run directory holds "
            "only its own files."
        )
    return path
