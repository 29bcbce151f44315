"""Writing and reading checkpoints safely.

Lightning's own writer opens the destination and streams into it, so a kill or a full disk
mid-write leaves a truncated `last.ckpt` where a good one was. `AtomicCheckpointIO` writes a
temporary file and renames it over the old one. `load_checkpoint` reads with
`weights_only=True` (no code runs from a checkpoint, whatever `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`
says), only from a regular file, and turns every failure into a `CheckpointError` that names the
file. Lightning's own reads (resume, the test of the best checkpoint, the tuners' restores) go
through `AtomicCheckpointIO.load_checkpoint`, so they are the same reads.
"""

import math
import re
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mnist_lightning.errors import CheckpointError
from mnist_lightning.files import atomic_open, open_regular
from mnist_lightning.model.classifier import MNISTClassifier

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
    """`checkpoint` with its callbacks' saved states naming files of its own run only (else a
    `CheckpointError`): a checkpoint must not make Lightning read or delete a file elsewhere
    (ModelCheckpoint tests the `best_model_path` it restores and deletes the files that drop out
    of its top k, recursively). A run that was moved or copied keeps its state: a path in the
    state's old `dirpath` is mapped to the same file name in the run's folder of that name
    (`.../checkpoints/x.ckpt` to `<run>/checkpoints/x.ckpt`)."""
    run = run_dir_of(path.resolve())
    callbacks = checkpoint.get("callbacks") or {}
    if not isinstance(callbacks, dict):
        raise CheckpointError(f"{path}: its callbacks state is not one Lightning wrote.")
    for callback, state in callbacks.items():
        if not isinstance(state, dict):
            continue
        where = f"{path}: its {str(callback).split('{')[0]} state"
        best_k = state.get("best_k_models") or {}
        old = state.get("dirpath")
        if not isinstance(best_k, dict) or not isinstance(old, str | None):
            raise CheckpointError(f"{where} is not one Lightning wrote. Use another checkpoint.")
        new = None
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
    its own run. Every tensor of its optimizer state must fit the parameter it belongs to: the
    fused optimizers read them unchecked, and one of a wrong shape crashes the process."""
    weights = checkpoint["state_dict"]
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise CheckpointError(
            f"{path}: its state_dict does not map names to tensors; the file is damaged or was "
            "edited. Use another checkpoint."
        )
    confine_paths(checkpoint, Path(path))
    network_weights(model, checkpoint, path)
    optimizer = model.build_optimizer()
    mine = [len(group["params"]) for group in optimizer.param_groups]
    states = checkpoint.get("optimizer_states") or [{}]
    damaged = (
        "the file is damaged or was edited. Start a new run from its weights instead: "
        f"mnist-train ckpt_path={path}"
    )
    if not isinstance(states, list | tuple) or not _is_optimizer_state(states[0]):
        raise CheckpointError(
            f"{path}: its optimizer state is not one torch saves (a dict of state and "
            f"param_groups, each group listing its parameters by index); {damaged}"
        )
    saved = [len(group["params"]) for group in states[0].get("param_groups", [])]
    if saved and saved != mine:
        raise CheckpointError(
            f"{path}: its optimizer state has parameter groups of {saved} tensors, the "
            f"optimizer of this mnist-train version {mine}, so it cannot continue that run. "
            f"Start a new run from its weights instead: mnist-train ckpt_path={path}"
        )
    problem = _optimizer_state_problem(model, optimizer, states[0])
    if problem:
        raise CheckpointError(f"{path}: its optimizer state {problem}; {damaged}")
    for state in checkpoint.get("lr_schedulers") or []:
        problem = _schedule_state_problem(state, len(mine))
        if problem:
            raise CheckpointError(f"{path}: its learning-rate schedule state {problem}; {damaged}")


def _schedule_state_problem(state: Any, groups: int) -> str | None:
    """What the scheduler would trip over at the first step, in words (None: nothing): the
    rates and counters it computes with must be numbers, one rate per parameter group."""
    if not isinstance(state, dict):
        return f"is a {type(state).__name__}, not a dict"
    for key in ("base_lrs", "_last_lr"):
        rates = state.get(key, [0.0] * groups)
        if not isinstance(rates, list) or len(rates) != groups or not all(map(_is_number, rates)):
            return f"sets {key}={rates!r:.60}, not {groups} numbers"
    for key in ("last_epoch", "_step_count"):
        value = state.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or not -1 <= value < 2**62:
            return f"sets {key}={value!r:.40}, not a count"
    return None


def _is_optimizer_state(state: Any) -> bool:
    """Whether `state` has the layout of `Optimizer.state_dict()` (an empty dict: no state)."""
    if not isinstance(state, dict):
        return False
    if not state:
        return True
    groups = state.get("param_groups")
    return (
        isinstance(state.get("state"), dict)
        and isinstance(groups, list)
        and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups)
    )


def _is_number(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63


def _optimizer_state_problem(
    model: MNISTClassifier, optimizer: torch.optim.Optimizer, saved: dict[str, Any]
) -> str | None:
    """What in `saved` (an optimizer state of the same parameter groups) does not fit
    `optimizer`, in words; None if it all fits. The settings of each group must be of the types
    torch's own are, and each parameter's state must hold what the optimizer reads: tensors of
    the parameter's shape, contiguous and of a floating dtype, and a scalar step count."""
    if not saved:
        return None
    names = {id(p): name for name, p in model.named_parameters()}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    indices = [i for group in saved["param_groups"] for i in group["params"]]
    if indices != list(range(len(params))):
        shown = ", ".join(map(repr, indices[:8])) + (", ..." if len(indices) > 8 else "")
        return f"lists its parameters as [{shown}], not as 0 to {len(params) - 1} in order"
    needed: list[set[Any]] = []  # what each group's state holds, once it has stepped
    for number, (mine, group) in enumerate(
        zip(optimizer.param_groups, saved["param_groups"], strict=True)
    ):
        for key, default in mine.items():
            value = group.get(key)
            if default is None or isinstance(default, bool):  # torch fills in a missing one
                fits = value is None or isinstance(value, bool)
            elif isinstance(default, tuple):
                fits = isinstance(value, tuple | list) and len(value) == len(default)
                fits = fits and all(_is_number(v) for v in value)
            elif isinstance(default, int | float):
                fits = _is_number(value)
            else:  # the parameters
                continue
            if key not in group and not fits:
                return f"lacks {key} for parameter group {number}"
            if not fits:
                return (
                    f"sets {key}={value!r:.60} for parameter group {number}, where torch has a "
                    f"value like {default!r}"
                )
        probe = torch.zeros(1, requires_grad=True)
        settings = {k: v for k, v in group.items() if k in mine and k != "params"}
        try:
            trial = type(optimizer)([{**mine, **settings, "params": [probe]}])
            probe.grad = torch.zeros(1)
            trial.step()
        except Exception as e:  # settings that torch refuses together
            reason = " ".join(str(e).split())[:200]
            return f"has settings for parameter group {number} that torch refuses ({reason})"
        needed += [set(trial.state[probe])] * len(group["params"])
    for index, entry in saved["state"].items():
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(params):
            return (
                f"holds an entry for parameter {index!r:.40}; the optimizer has parameters 0 "
                f"to {len(params) - 1}"
            )
        param = params[index]
        where = f"for parameter {index} ({names.get(id(param), '?')})"
        if not isinstance(entry, dict):
            return f"{where} is a {type(entry).__name__}, not a dict"
        missing = sorted(map(str, needed[index] - set(entry))) if entry else []
        if missing:
            return f"{where} lacks {', '.join(missing)}"
        for key, value in entry.items():
            if not isinstance(value, torch.Tensor):
                if key in needed[index]:
                    return f"{where} holds {key} of type {type(value).__name__}, not a tensor"
                continue
            if value.layout != torch.strided or value.is_meta or not value.is_contiguous():
                return f"{where} holds {key} that is not a dense, contiguous tensor"
            if key == "step":
                real = value.is_floating_point() or value.dtype in (torch.int32, torch.int64)
                if value.shape != () or not real:
                    return f"{where} holds a step of shape {tuple(value.shape)} and {value.dtype}"
                if not 1 <= float(value) < math.inf:
                    return f"{where} holds step={float(value):g}, not a count of steps (1 or more)"
            elif value.shape != param.shape:
                return (
                    f"{where} holds {key} of shape {tuple(value.shape)}, not {tuple(param.shape)}"
                )
            elif not value.is_floating_point():
                return f"{where} holds {key} of dtype {value.dtype}, not a floating-point one"
    return None


def load_classifier(
    path: str | Path, device: torch.device
) -> tuple[MNISTClassifier, dict[str, Any]]:
    """An `MNISTClassifier` in eval mode on `device`, rebuilt from a checkpoint's hparams."""
    checkpoint = load_checkpoint(path)
    try:  # crafted sizes are refused by the model; whatever else torch makes of them, too
        model = MNISTClassifier(**checkpoint["hyper_parameters"])
    except (TypeError, KeyError, ValueError, AttributeError, RuntimeError, MemoryError) as e:
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        raise CheckpointError(
            f"{path}: its hyper_parameters do not describe a model of this version ({reason})."
        ) from None
    try:
        model.net.load_state_dict(network_weights(model, checkpoint, path))
    except (TypeError, KeyError, ValueError, AttributeError, RuntimeError, MemoryError) as e:
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        raise CheckpointError(
            f"{path}: its weights cannot be loaded ({reason}); the file is damaged or was "
            "edited. Use another checkpoint."
        ) from None
    return model.eval().to(device), checkpoint
