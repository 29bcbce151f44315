"""What a run directory or a checkpoint someone handed you may contain.

A run directory is data, never code. Its files must be regular files and directories of its
own (no links out of it, no FIFOs); its saved config may choose values, but may name only the
classes this project and Lightning provide, and only places inside the run to write to; a
checkpoint (read with weights_only=True: no code) may name only files of its own run, and its
optimizer state must fit the optimizer that will read it (the fused optimizers read it
unchecked: a tensor of the wrong shape crashes the process).
"""

import importlib
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from mnist_lightning.errors import CheckpointError, ConfigError, one_line
from mnist_lightning.files import kind_of, open_regular
from mnist_lightning.model.classifier import MNISTClassifier


def check_run_files(run: Path) -> Path:
    """`run` if everything in it is a regular file with one name or a directory: a link could
    send a write (train.log, last.ckpt, event files) anywhere, and a FIFO would block the run.
    W&B's link to its own log (`wandb/<run-*>/logs/debug-core.log`) is never written through:
    a resumed W&B run opens a folder of its own."""
    walked = (Path(top) / name for top, dirs, files in os.walk(run) for name in dirs + files)
    for path in [run, *walked]:
        info = path.lstat()
        kind = kind_of(info.st_mode)
        if kind == "a regular file" and info.st_nlink > 1:  # a write would change the others
            kind = f"a file with {info.st_nlink} hard links (a run copied with cp -l?)"
        wandb_log = path.parts[-4::2] == ("wandb", "logs") and path.name == "debug-core.log"
        if kind not in ("a regular file", "a directory") and not (
            wandb_log and kind == "a symbolic link"
        ):
            raise CheckpointError(
                f"resume={run}: {path} is {kind}; a run or sweep directory holds only its own "
                "regular files and directories. Remove it, or start afresh (a single run from "
                "its weights with ckpt_path=<checkpoint>)."
            )
    return run


MAX_CONFIG_BYTES = 1_000_000  # a saved config is a few kilobytes


def saved_config(run: Path) -> DictConfig:
    """The config a run was made with (`.hydra/config.yaml`), if it is one."""
    path = run / ".hydra" / "config.yaml"
    try:
        with open_regular(path) as file:
            text = file.read(MAX_CONFIG_BYTES + 1).decode()
        if len(text) > MAX_CONFIG_BYTES:
            raise ValueError(f"larger than {MAX_CONFIG_BYTES} bytes")
        # Aliases are refused unexpanded: a few hundred bytes of them expand to gigabytes.
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text)):
            raise ValueError("it uses YAML aliases, which mnist-train never writes")
        saved = OmegaConf.create(text)
    except Exception as e:  # not YAML, not text, or not readable
        reason = one_line(e, 200)
        raise CheckpointError(f"resume={run}: {path} cannot be read ({reason}).") from None
    if not isinstance(saved, DictConfig) or not all(
        isinstance(saved.get(group), DictConfig) for group in ("data", "model", "trainer")
    ):
        raise CheckpointError(
            f"resume={run}: {path} is not a config mnist-train saved (no data, model and "
            "trainer sections). Start a new run from its weights with ckpt_path=<checkpoint>."
        )
    return saved


# What a saved config may instantiate without the command line naming it: a public class of
# this project (where it is defined), a public class of Lightning's callbacks, loggers,
# profilers or strategies (the config groups' own kinds), the Trainer, and the periodic
# checkpoint's time interval.
TRUSTED_MODULES = tuple(
    f"lightning.pytorch.{m}" for m in ("callbacks", "loggers", "profilers", "strategies")
)
TRUSTED_TARGETS = ("lightning.pytorch.Trainer", "lightning.Trainer", "datetime.timedelta")
# Classes that moved since a run saved its config (the package got its folders).
MOVED_TARGETS = {
    "mnist_lightning.resume.GracefulInterrupt": "mnist_lightning.run.resume.GracefulInterrupt",
    "mnist_lightning.model.MNISTClassifier": "mnist_lightning.model.classifier.MNISTClassifier",
    "mnist_lightning.data.MNISTDataModule": "mnist_lightning.data.datamodule.MNISTDataModule",
}
# Config keys that name where a callback, logger or the Trainer writes (`dir`: WandbLogger's).
WRITE_KEYS = ("dirpath", "save_dir", "default_root_dir", "dir")


def trusted_target(target: object) -> bool:
    """Whether `target` names a trusted class by its public name (not, say,
    `lightning.pytorch.callbacks.model_checkpoint.os.system`)."""
    if not isinstance(target, str):
        return False
    module_name, _, name = target.rpartition(".")
    if target in TRUSTED_TARGETS or module_name in TRUSTED_MODULES:
        return target in TRUSTED_TARGETS or name in importlib.import_module(module_name).__all__
    if not re.fullmatch(r"mnist_lightning(\.\w+)+", module_name):
        return False
    try:
        found = getattr(importlib.import_module(module_name), name, None)
    except ImportError:
        return False
    return isinstance(found, type) and found.__module__ == module_name


def nodes(tree: object, key: str = "") -> Iterator[tuple[str, object, object]]:
    """`(dotted key, name, value)` of every node of a plain config tree."""
    items = (
        tree.items()
        if isinstance(tree, dict)
        else enumerate(tree if isinstance(tree, list) else [])
    )
    for name, value in items:
        path = f"{key}.{name}" if key else str(name)
        yield path, name, value
        yield from nodes(value, path)


def to_tree(cfg: DictConfig, resolve: bool = False) -> object:
    try:
        return OmegaConf.to_container(cfg, resolve=resolve)
    except Exception as e:  # an interpolation that does not resolve
        raise ConfigError(f"The resumed run's config cannot be read: {e}") from None


def renamed_targets(tree: object) -> object:
    """`tree` with each `_target_` that names a moved class naming it where it is now."""
    for _, _, value in list(nodes(tree)):
        if isinstance(value, dict) and value.get("_target_") in MOVED_TARGETS:
            value["_target_"] = MOVED_TARGETS[value["_target_"]]
    return tree


def check_saved_config(saved: dict, composed: DictConfig, run: Path) -> None:
    """Refuse a saved config (resolved: an interpolation such as `${oc.create:...}` can make a
    node) that names code or a place outside the run (module docstring). A target the command
    line's own config names (`composed`: conf/ and the overrides given) is the user's choice,
    so a run made with a callback of one's own resumes when the command repeats it."""
    chosen = {value for _, name, value in nodes(to_tree(composed)) if name == "_target_"}
    for key, name, value in nodes(saved):
        if name in ("_args_", "_partial_"):  # our configs never use them; they hide arguments
            raise ConfigError(
                f"resume={run}: its .hydra/config.yaml sets {key}, which mnist-train's configs "
                "never use; a run directory may choose values by name only."
            )
        if name == "_target_" and value not in chosen and not trusted_target(value):
            raise ConfigError(
                f"resume={run}: its .hydra/config.yaml sets {key}={value!r}, which is not a "
                "class of mnist_lightning or one of Lightning's callbacks, loggers, profilers "
                "or strategies; a run directory may choose values, not code. If you trust it, "
                f"name it on the command line: +{key}={value}"
            )
        if name in WRITE_KEYS and not Path(str(value)).resolve().is_relative_to(run.resolve()):
            raise ConfigError(
                f"resume={run}: its .hydra/config.yaml sets {key}={value!r}, outside the run; "
                "a resumed run writes only into its own directory."
            )


def run_dir_of(checkpoint: Path) -> Path:
    """The run a checkpoint belongs to: `<run>/checkpoints/x.ckpt`, or `<run>/x.ckpt` (SLURM's
    hpc_ckpt files, or a checkpoint somewhere else)."""
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
    what differs: the settings that shape the network, or, if they do not tell, the shapes."""
    state = {k[4:]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    mine = model.net.state_dict()
    if {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in mine.items()}:
        return state
    saved = checkpoint.get("hyper_parameters") or {}
    keys = ("hidden_dims", "batch_norm")  # what decides the shapes of the weights
    asked = " ".join(f"model.{k}={model_value(model.hparams[k])}" for k in keys)
    theirs = isinstance(saved, dict) and " ".join(
        f"model.{k}={model_value(saved.get(k))}" for k in keys
    )
    if theirs and theirs != asked:
        raise CheckpointError(
            f"{path} holds a different architecture than the config asks for: it was trained "
            f"with {theirs}, the config has {asked}. Give its values on the command line, or "
            "use another checkpoint."
        )
    differs = sorted(
        set(state) ^ set(mine) | {k for k in mine if k in state and state[k].shape != mine[k].shape}
    )
    shapes = {k: tuple(v.shape) for k, v in state.items() if k.endswith("weight")}
    raise CheckpointError(
        f"{path} holds a different architecture than the config asks for (its weight shapes: "
        f"{shapes}; differing entries: {', '.join(differs[:6])}). Use the model.* settings it "
        "was trained with, or another checkpoint."
    )


def model_value(value: object) -> str:
    """A config value as one types it on the command line: `[512,256]`, `true`."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return f"[{','.join(map(str, value))}]"
    return str(value)[:60]


def check_resumable(model: MNISTClassifier, checkpoint: dict[str, Any], path: Path) -> None:
    """Fail before training if `checkpoint` cannot continue `model`'s run: its weights must fit,
    it may name only files of its own run, and its optimizer and schedule states must be what
    this version's optimizer and scheduler read (a run made by an older version may group the
    parameters differently; the fused optimizers crash on a tensor of the wrong shape)."""
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
    damaged = (
        "the file is damaged or was edited. Start a new run from its weights instead: "
        f"mnist-train ckpt_path={path}"
    )
    states = checkpoint.get("optimizer_states") or [{}]
    saved = states[0] if isinstance(states, list | tuple) else None
    groups = saved.get("param_groups") if isinstance(saved, dict) else None
    if not (
        saved == {}
        or (
            isinstance(saved, dict)
            and isinstance(saved.get("state"), dict)
            and isinstance(groups, list)
            and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups)
        )
    ):
        raise CheckpointError(
            f"{path}: its optimizer state is not one torch saves (a dict of state and "
            f"param_groups, each group listing its parameters by index); {damaged}"
        )
    if saved and [len(group["params"]) for group in groups] != mine:
        raise CheckpointError(
            f"{path}: its optimizer state has parameter groups of "
            f"{[len(group['params']) for group in groups]} tensors, the optimizer of this "
            f"mnist-train version {mine}, so it cannot continue that run. Start a new run from "
            f"its weights instead: mnist-train ckpt_path={path}"
        )
    problem = saved and optimizer_state_problem(model, optimizer, saved)
    if problem:
        raise CheckpointError(f"{path}: its optimizer state {problem}; {damaged}")
    for state in checkpoint.get("lr_schedulers") or []:
        problem = schedule_state_problem(state, len(mine))
        if problem:
            raise CheckpointError(f"{path}: its learning-rate schedule state {problem}; {damaged}")


def _is_number(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**63


def _fits(value: Any, like: Any) -> bool:
    """Whether a saved setting of a parameter group is of the kind torch's own `like` is."""
    if like is None or isinstance(like, bool):  # torch fills in a missing one
        return value is None or isinstance(value, bool)
    if isinstance(like, tuple):
        return (
            isinstance(value, tuple | list)
            and len(value) == len(like)
            and all(map(_is_number, value))
        )
    return _is_number(value) if isinstance(like, int | float) else True


def optimizer_state_problem(
    model: MNISTClassifier, optimizer: torch.optim.Optimizer, saved: dict[str, Any]
) -> str | None:
    """What in `saved` (an optimizer state of the same parameter groups) does not fit
    `optimizer`, in words; None if it all fits. Each group's settings must be of the kinds
    torch's are, and each parameter's state must hold what the optimizer reads, as one step of
    the same optimizer on a probe makes it: tensors of the parameter's shape, contiguous and
    of a floating dtype, and a scalar step count."""
    names = {id(p): name for name, p in model.named_parameters()}
    params = [p for group in optimizer.param_groups for p in group["params"]]
    indices = [i for group in saved["param_groups"] for i in group["params"]]
    if indices != list(range(len(params))):
        shown = ", ".join(map(repr, indices[:8])) + (", ..." if len(indices) > 8 else "")
        return f"lists its parameters as [{shown}], not as 0 to {len(params) - 1} in order"
    needed: list[set[Any]] = []  # what each parameter's state holds, once it has stepped
    for number, (mine, group) in enumerate(
        zip(optimizer.param_groups, saved["param_groups"], strict=True)
    ):
        settings = {k: group.get(k) for k in mine if k != "params"}
        for key, value in settings.items():
            if not _fits(value, mine[key]):
                if key not in group:
                    return f"lacks {key} for parameter group {number}"
                return (
                    f"sets {key}={value!r:.60} for parameter group {number}, where torch has a "
                    f"value like {mine[key]!r}"
                )
        probe = torch.zeros(1, requires_grad=True)
        try:
            trial = type(optimizer)(
                [{**mine, **{k: v for k, v in group.items() if k in settings}, "params": [probe]}]
            )
            probe.grad = torch.zeros(1)
            trial.step()
        except Exception as e:  # settings that torch refuses together
            return (
                f"has settings for parameter group {number} that torch refuses ({one_line(e, 200)})"
            )
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
            shape = () if key == "step" else param.shape
            if value.shape != shape:
                what = "a step" if key == "step" else key
                return f"{where} holds {what} of shape {tuple(value.shape)}, not {tuple(shape)}"
            if not (
                value.is_floating_point()
                or (key == "step" and value.dtype in (torch.int32, torch.int64))
            ):
                return f"{where} holds {key} of dtype {value.dtype}, not a floating-point one"
            if key == "step" and not 1 <= float(value) < math.inf:
                return f"{where} holds step={float(value):g}, not a count of steps (1 or more)"
    return None


def schedule_state_problem(state: Any, groups: int) -> str | None:
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
