"""What a run directory or a checkpoint someone handed you may contain.

A run directory is data, never code. Its files must be regular files and directories of its
own (no links out of it, no FIFOs); its saved config may choose values, but may name only the
classes this project and Lightning provide for its config groups, and only places inside the
run to write to; a checkpoint's saved callback state may name only files of its own run, and
its optimizer state must fit the optimizer that will read it (the fused optimizers read it
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
    """`run` if everything in it is a regular file or a directory of its own: a link could send
    a write (train.log, last.ckpt, event files) anywhere, and a FIFO would block the run."""
    for path in [run, *walk(run)]:
        info = path.lstat()
        kind = kind_of(info.st_mode)
        if kind == "a regular file" and info.st_nlink > 1:  # a write would change the others
            kind = f"a file with {info.st_nlink} hard links (a run copied with cp -l?)"
        if kind == "a symbolic link" and wandb_log_link(run, path):
            continue
        if kind not in ("a regular file", "a directory"):
            raise CheckpointError(
                f"resume={run}: {path} is {kind}; a run or sweep directory holds only its own "
                "regular files and directories. Remove it, or start afresh (a single run from "
                "its weights with ckpt_path=<checkpoint>)."
            )
    return run


def wandb_log_link(run: Path, path: Path) -> bool:
    """Whether `path` is the link W&B's service makes in each of its run folders to its own
    log (`[<job>/]wandb/<offline-run-*|run-*>/logs/debug-core.log`, into W&B's cache): nothing
    writes through it later, as a resumed W&B run opens a folder of its own."""
    parts = path.relative_to(run).parts
    return (
        len(parts) in (4, 5)  # in a run, or in a job of a sweep
        and parts[-4] == "wandb"
        and parts[-3].startswith(("offline-run-", "run-"))
        and parts[-2:] == ("logs", "debug-core.log")
    )


def walk(top: Path) -> Iterator[Path]:
    """Everything under `top`, links not followed."""
    for folder, dirs, files in os.walk(top):
        yield from (Path(folder) / name for name in sorted(dirs + files))


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


# What a saved config may instantiate without the command line naming it: this project's
# classes and Lightning's public callbacks, loggers, profilers and strategies (the config
# groups' own kinds), the Trainer, and the time interval of the periodic checkpoint.
TRUSTED_MODULES = (
    "lightning.pytorch.callbacks",
    "lightning.pytorch.loggers",
    "lightning.pytorch.profilers",
    "lightning.pytorch.strategies",
)


TRUSTED_TARGETS = ("lightning.pytorch.Trainer", "lightning.Trainer", "datetime.timedelta")


# Config keys that name where a callback, logger or the Trainer writes (`dir`: WandbLogger's
# other name for save_dir).
WRITE_KEYS = ("dirpath", "save_dir", "default_root_dir", "dir")


def trusted_target(target: object) -> bool:
    """Whether `target` names a class of a trusted module by its public name (not, say,
    `lightning.pytorch.callbacks.model_checkpoint.os.system`)."""
    if not isinstance(target, str):
        return False
    if target in TRUSTED_TARGETS:
        return True
    module_name, _, name = target.rpartition(".")
    if module_name in TRUSTED_MODULES:
        return name in importlib.import_module(module_name).__all__
    if re.fullmatch(r"mnist_lightning(\.\w+)+", module_name):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return False
        found = getattr(module, name, None)
        return isinstance(found, type) and found.__module__ == module_name
    return False


def nodes(tree: object, key: str = "") -> Iterator[tuple[str, object, object]]:
    """`(dotted key, name, value)` of every node of a plain config tree."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return
    for name, value in items:
        path = f"{key}.{name}" if key else str(name)
        yield path, name, value
        yield from nodes(value, path)


def to_tree(cfg: DictConfig, resolve: bool = False) -> object:
    try:
        return OmegaConf.to_container(cfg, resolve=resolve)
    except Exception as e:  # an interpolation that does not resolve
        raise ConfigError(f"The resumed run's config cannot be read: {e}") from None


def check_saved_config(saved: dict, composed: DictConfig, run: Path) -> None:
    """Refuse a saved config (resolved: an interpolation such as `${oc.create:...}` can make a
    node) that names code or a place outside the run (module docstring). A target the command
    line's own config names (`composed`: conf/ and the overrides given) is the user's choice,
    so a run made with a callback of one's own resumes when the command repeats it
    (`+callbacks.mine._target_=my_module.Mine`)."""
    chosen = {value for _, name, value in nodes(to_tree(composed)) if name == "_target_"}
    for key, name, target in nodes(saved):
        if name in ("_args_", "_partial_"):  # our configs never use them; they hide arguments
            raise ConfigError(
                f"resume={run}: its .hydra/config.yaml sets {key}, which mnist-train's configs "
                "never use; a run directory may choose values by name only."
            )
        if name == "_target_" and target not in chosen and not trusted_target(target):
            raise ConfigError(
                f"resume={run}: its .hydra/config.yaml sets {key}={target!r}, which is not a "
                "class of mnist_lightning or one of Lightning's callbacks, loggers, profilers "
                "or strategies; a run directory may choose values, not code. If you trust it, "
                f"name it on the command line: +{key}={target}"
            )
    for key, name, place in nodes(saved):
        if name in WRITE_KEYS and not Path(str(place)).resolve().is_relative_to(run.resolve()):
            raise ConfigError(
                f"resume={run}: its .hydra/config.yaml sets {key}={place!r}, outside the run; "
                "a resumed run writes only into its own directory."
            )


# Classes that moved since a run saved its config (the package got its folders).
MOVED_TARGETS = {
    f"mnist_lightning.{old}": f"mnist_lightning.{new}"
    for old, new in [
        ("resume.GracefulInterrupt", "run.resume.GracefulInterrupt"),
        ("model.MNISTClassifier", "model.classifier.MNISTClassifier"),
        ("data.MNISTDataModule", "data.datamodule.MNISTDataModule"),
    ]
}


def renamed_targets(tree: object) -> object:
    """`tree` with each `_target_` that names a moved class naming it where it is now."""
    if isinstance(tree, dict):
        return {
            k: MOVED_TARGETS.get(v, v) if k == "_target_" else renamed_targets(v)
            for k, v in tree.items()
        }
    if isinstance(tree, list):
        return [renamed_targets(v) for v in tree]
    return tree


def run_dir_of(checkpoint: Path) -> Path:
    """The run a checkpoint belongs to: `<run>/checkpoints/x.ckpt`, or `<run>/x.ckpt` (SLURM's
    hpc_ckpt files, or a checkpoint somewhere else)."""
    folder = checkpoint.parent
    return folder.parent if folder.name == "checkpoints" else folder


# Where ModelCheckpoint's saved state names checkpoint files: Lightning tests the best one it
# restores and deletes the ones that drop out of the top k.
STATE_PATHS = ("best_model_path", "last_model_path", "kth_best_model_path")


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
    saved = checkpoint.get("hyper_parameters") or {}
    if differs and isinstance(saved, dict):
        keys = ("hidden_dims", "batch_norm")  # what decides the shapes of the weights
        theirs = " ".join(f"model.{k}={model_value(saved.get(k))}" for k in keys)
        asked = " ".join(f"model.{k}={model_value(model.hparams[k])}" for k in keys)
        if theirs != asked:
            raise CheckpointError(
                f"{path} holds a different architecture than the config asks for: it was "
                f"trained with {theirs}, the config has {asked}. Give its values on the command "
                "line, or use another checkpoint."
            )
    if differs:
        shapes = {k: tuple(v.shape) for k, v in state.items() if k.endswith("weight")}
        raise CheckpointError(
            f"{path} holds a different architecture than the config asks for (its weight shapes: "
            f"{shapes}; differing entries: {', '.join(differs[:6])}). Use the model.* settings "
            "it was trained with, or another checkpoint."
        )
    return state


def model_value(value: object) -> str:
    """A config value as one types it on the command line: `[512,256]`, `true`."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return f"[{','.join(map(str, value))}]"
    return str(value)[:60]


def check_resumable(model: MNISTClassifier, checkpoint: dict[str, Any], path: Path) -> None:
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
    if not isinstance(states, list | tuple) or not is_optimizer_state(states[0]):
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
    problem = optimizer_state_problem(model, optimizer, states[0])
    if problem:
        raise CheckpointError(f"{path}: its optimizer state {problem}; {damaged}")
    for state in checkpoint.get("lr_schedulers") or []:
        problem = schedule_state_problem(state, len(mine))
        if problem:
            raise CheckpointError(f"{path}: its learning-rate schedule state {problem}; {damaged}")


def is_optimizer_state(state: Any) -> bool:
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


def optimizer_state_problem(
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
            reason = one_line(e, 200)
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
