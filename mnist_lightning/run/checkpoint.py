"""Writing, finding and reading checkpoints safely.

`AtomicCheckpointIO` writes beside the checkpoint and renames (files.atomic_open). Every read,
ours and Lightning's, is `load_checkpoint`: weights only, from a regular file, any failure one
line naming the file. A checkpoint someone handed you may name only files of its own run, and
before a run resumes from it, its optimizer state must take a step (`check_resumable`).
"""

import copy
import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mnist_lightning.errors import CheckpointError, one_line
from mnist_lightning.files import atomic_open, check_place, open_regular
from mnist_lightning.model.classifier import MNISTClassifier
from mnist_lightning.run.resume import results

NEW_RUN = "Start a new run from its weights instead: mnist-train ckpt_path="


class AtomicCheckpointIO(TorchCheckpointIO):
    def __init__(self, inside: Path) -> None:
        self.inside = inside  # the run's directory: every checkpoint is written in it

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        if not Path(path).resolve().is_relative_to(self.inside.resolve()):
            raise CheckpointError(
                f"A checkpoint would go to {path}, outside the run {self.inside}: a run writes "
                "only into its own directory. Nothing was written."
            )
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
    except FileNotFoundError:
        raise CheckpointError(f"Checkpoint {path} does not exist.") from None
    except OSError as e:  # a directory, a FIFO: `open_regular` names it
        raise CheckpointError(f"Checkpoint {path} cannot be read: it is {e.strerror}.") from None
    try:
        with file:
            zipped = file.read(4) == b"PK\x03\x04"  # what torch.save writes: a zip archive
            file.seek(0)
            with warnings.catch_warnings():  # its warning names our line: a refusal instead
                warnings.filterwarnings("error", ".*looks like a TorchScript archive")
                checkpoint = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as e:  # whatever a damaged file makes torch.load raise
        # torch's refusal of a pickle opens with paragraphs of advice; its reason comes last.
        _, crafted, reason = str(e).rpartition("WeightsUnpickler error:")
        what = f"is damaged ({one_line(reason, 200)})" if crafted else "is truncated or damaged"
        what = what if zipped else "is not a torch checkpoint"
        if isinstance(e, UserWarning):  # the TorchScript warning, as an error
            what = "is a TorchScript export (mnist-export's), not a checkpoint"
        if code := re.search(r"(?:unsupported|Unsupported global:)\s+GLOBAL\s+([\w.]+)", str(e)):
            what = f"asks to run {code[1]} as it is loaded (read as weights only: nothing ran)"
        raise CheckpointError(
            f"Checkpoint {path} cannot be read: it {what}. Use another one (a run keeps "
            "last.ckpt and its best in checkpoints/)."
        ) from None
    weights = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise CheckpointError(
            f"{path}: its weights cannot be loaded (no state_dict of named tensors in it). Use "
            "another checkpoint."
        )
    if "hyper_parameters" not in checkpoint:
        raise CheckpointError(f"{path} has no hyper_parameters: it was not made by mnist-train.")
    return checkpoint


def load_classifier(
    path: str | Path, device: torch.device
) -> tuple[MNISTClassifier, dict[str, Any]]:
    """An `MNISTClassifier` in eval mode on `device`, rebuilt from a checkpoint's hparams."""
    checkpoint = load_checkpoint(path)
    what, remedy = "its hyper_parameters do not describe a model of this version", ""
    try:  # crafted sizes are refused by the model; whatever else torch makes of them, too
        model = MNISTClassifier(**checkpoint["hyper_parameters"])
        what, remedy = "its weights cannot be loaded", "; the file is damaged or was edited"
        model.net.load_state_dict(network_weights(model, checkpoint, path))
    except (TypeError, KeyError, ValueError, AttributeError, RuntimeError, MemoryError) as e:
        reason = f"({one_line(e, 300)}){remedy}"
        raise CheckpointError(f"{path}: {what} {reason}. Use another checkpoint.") from None
    return model.eval().to(device), checkpoint


def best_checkpoint(run_dir: Path) -> Path:
    """The checkpoint mnist-train tested (metrics.json's best_checkpoint); else the best by
    val/acc that its ModelCheckpoint recorded in last.ckpt (file names alone do not rank
    them); else last.ckpt itself. Looked up by name in the run's checkpoints/, so a moved run
    still finds them, and only as the run's own regular files: a link there is refused."""
    if not run_dir.is_dir():
        raise CheckpointError(f"run_dir={run_dir}: there is no such directory.")

    def names() -> Iterator[Any]:  # each looked at only if the one before is not there
        yield (results(run_dir) or {}).get("best_checkpoint")
        if last := own_checkpoint(run_dir, "last.ckpt"):
            states = (confine_paths(load_checkpoint(last), last).get("callbacks") or {}).values()
            for state in states:
                if isinstance(state, dict) and state.get("monitor") == "val/acc":
                    yield state.get("best_model_path")
            yield last.name

    for name in names():
        if isinstance(name, str) and (found := own_checkpoint(run_dir, name)):
            return found
    raise CheckpointError(f"run_dir={run_dir}: no checkpoint of its best epoch or last.ckpt in it.")


def own_checkpoint(run_dir: Path, name: str) -> Path | None:
    """`<run>/checkpoints/<name's file name>` if a regular file is there, in the run's own
    folder (not a link to one); None if nothing is."""
    folder, file = run_dir / "checkpoints", Path(name).name  # ("" and "..": not a file)
    key = f"run_dir={run_dir}: {folder}"
    if file in ("", "..") or not check_place(folder, key, "a directory", CheckpointError):
        return None
    found = check_place(folder / file, f"{key}/{file}", error=CheckpointError)
    return folder / file if found else None


def run_dir_of(checkpoint: Path) -> Path:
    """The run of `<run>/checkpoints/x.ckpt`, or of `<run>/x.ckpt` (SLURM's hpc_ckpt files)."""
    folder = checkpoint.parent
    return folder.parent if folder.name == "checkpoints" else folder


# Where ModelCheckpoint's saved state names checkpoint files: Lightning tests the best one it
# restores and deletes (recursively) the ones that drop out of the top k.
STATE_PATHS = ("best_model_path", "last_model_path", "kth_best_model_path")


def confine_paths(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    """`checkpoint` with its callbacks' saved states naming files of its own run only (else a
    `CheckpointError`). A run that was moved or copied keeps its state: a path in the state's
    old `dirpath` is mapped to the same file name in the run's folder of that name."""
    run = run_dir_of(path.resolve())
    callbacks = checkpoint.get("callbacks") or {}
    if not isinstance(callbacks, dict):
        raise CheckpointError(f"{path}: its callbacks state is not one Lightning wrote.")
    for callback, state in callbacks.items():
        if not isinstance(state, dict):
            continue
        where = f"{path}: its {str(callback).split('{')[0]} state"
        best_k, old = state.get("best_k_models") or {}, state.get("dirpath")
        if not isinstance(best_k, dict) or not isinstance(old, str | None):
            raise CheckpointError(f"{where} is not one Lightning wrote. Use another checkpoint.")
        if old is not None:
            new = Path(old) if Path(old).resolve().is_relative_to(run) else run / Path(old).name
            state["dirpath"] = str(new)
        named = [(key, state[key]) for key in STATE_PATHS if state.get(key)]
        for key, name in [*named, *(("best_k_models", name) for name in list(best_k))]:
            if not isinstance(name, str):
                raise CheckpointError(f"{where} sets {key}={name!r}, not a path.")
            file = new / Path(name).name if old and Path(name).parent == Path(old) else Path(name)
            if not file.resolve().is_relative_to(run):
                raise CheckpointError(
                    f"{where} sets {key}={name}, outside its run {run}; a checkpoint may name "
                    "only files of its own run. Use another checkpoint."
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
    what differs: the settings that shape the network, or its weights' shapes if they do not."""
    state = {k[4:]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    if shapes == {k: tuple(v.shape) for k, v in model.net.state_dict().items()}:
        return state

    def values(hparams: Any) -> str:  # what decides the weights' shapes, as one types it
        return " ".join(
            f"model.{k}={json.dumps(hparams.get(k), separators=(',', ':'), default=str):.60}"
            for k in ("hidden_dims", "batch_norm")
        )

    saved, asked = checkpoint.get("hyper_parameters"), values(model.hparams)
    theirs = values(saved) if isinstance(saved, dict) else asked
    what = (
        f": it was trained with {theirs}" if theirs != asked else f" (its weight shapes: {shapes})"
    )
    raise CheckpointError(
        f"{path} holds a different architecture than the config asks for{what:.400}, the config "
        f"has {asked}. Give its values on the command line, or use another checkpoint."
    )


def unrestorable(
    path: str | Path, error: BaseException | str, what: str = " cannot be restored"
) -> CheckpointError:
    """The one line for a checkpoint whose state a resumed run cannot take."""
    return CheckpointError(
        f"{path}{what} ({one_line(error, 300)}); the file is damaged or was edited. {NEW_RUN}{path}"
    )


def check_resumable(model: MNISTClassifier, checkpoint: dict[str, Any], path: Path) -> None:
    """Fail before training if `checkpoint` cannot continue `model`'s run: its weights must fit,
    it may name only files of its own run, and its optimizer and schedule states must take a
    step. The fused optimizers read their state unchecked (a tensor of the wrong shape crashes
    the process): so it is stepped once on copies of the weights, on torch's single-tensor path,
    which raises where a fused kernel would crash."""
    confine_paths(checkpoint, Path(path))
    network_weights(model, checkpoint, path)
    trial = copy.deepcopy(model)  # its copies of the weights take the trial step
    try:  # its buffers too (val_acc_best, the logging window), before the loggers write
        trial.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as e:
        raise unrestorable(path, e) from None
    states = checkpoint.get("optimizer_states")
    saved = states[0] if isinstance(states, list) and states else None
    if saved is None:  # Lightning's restore says what is missing
        return
    optimizer = trial.build_optimizer()
    mine = [len(group["params"]) for group in optimizer.param_groups]
    try:
        theirs = [len(group["params"]) for group in saved["param_groups"]]
    except Exception:  # the trial below says what is wrong
        theirs = mine
    if theirs != mine:
        raise CheckpointError(
            f"{path}: its optimizer state has parameter groups of {theirs} tensors, the "
            f"optimizer of this mnist-train version {mine}, so it cannot continue that run. "
            f"{NEW_RUN}{path}"
        )
    names = {id(p): name for name, p in trial.named_parameters()}
    named = [(names[id(p)], p) for group in optimizer.param_groups for p in group["params"]]
    part = "optimizer"
    try:
        if any(g.get(k) for g in saved["param_groups"] for k in ("differentiable", "capturable")):
            raise ValueError("it sets differentiable or capturable, which the fused step refuses")
        # Checked as saved, before torch's load casts them (a broadcast tensor would be made whole).
        for number, entry in saved["state"].items():
            if not isinstance(number, int) or not 0 <= number < len(named):
                raise ValueError(f"it holds an entry for a parameter {number!r:.40} it lacks")
            name, param = named[number]
            for key, value in entry.items():
                shape = () if key == "step" else param.shape
                tensor = isinstance(value, torch.Tensor)
                if not (tensor and value.shape == shape and value.is_contiguous()):
                    got = f"of shape {tuple(value.shape)}" if tensor else f"{value!r:.40}"
                    raise ValueError(
                        f"for parameter {number} ({name}) it holds {key} {got}, not a "
                        f"contiguous tensor of shape {tuple(shape)}"
                    )
                if key == "step" and not (value.is_floating_point() and 1 <= value < 2**53):
                    raise ValueError(  # an integer step makes torch's Adam compute beta**step
                        f"for parameter {number} ({name}) it holds step={value.item()!r:.40}, "
                        "not a count of steps as torch saves it"
                    )
        optimizer.load_state_dict(copy.deepcopy(saved))  # torch steps the saved tensors in place
        for group in optimizer.param_groups:
            group.update(fused=False, foreach=False)
        for _, param in named:
            param.grad = torch.zeros_like(param)
        optimizer.step()
        if not all(param.isfinite().all() for _, param in named):
            raise ValueError("a step with it makes the weights infinite or NaN")
        part = "learning-rate schedule"  # its rates and counts, as every torch scheduler's
        for state in checkpoint.get("lr_schedulers") or []:
            for key in ("last_epoch", "_step_count"):  # what the schedule computes with
                count = state.get(key, 0)
                if not isinstance(count, int) or isinstance(count, bool) or not -1 <= count < 2**62:
                    raise ValueError(f"it sets {key}={count!r:.40}, not a count")
            probe = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
            probe.load_state_dict({**state, "lr_lambdas": [None] * len(mine)})
            optimizer.step()  # a scheduler steps after its optimizer
            probe.step()
    except Exception as e:  # what torch, or the check above, refuses
        reason = e if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
        what = f": its {part} state cannot take a step"
        raise unrestorable(path, one_line(reason, 200), what) from None
