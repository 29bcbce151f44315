"""Checks on the composed config, run before any work starts.

Hydra composes; it does not know that `model.dropout=1.5` is meaningless. `validate` checks
every value the code relies on and raises one `ConfigError` that names the key, the value and
what is allowed, so a typo costs a second, not a crash twenty minutes into a sweep.
"""

import math
from collections.abc import Collection
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from mnist_lightning.data.augment import AUGMENTS
from mnist_lightning.data.datasets import DATASETS, SOURCES, DataSet
from mnist_lightning.errors import ConfigError, one_line
from mnist_lightning.model.classifier import OPTIMIZERS, SCHEDULERS, STEP_SCHEDULERS
from mnist_lightning.model.mlp import ACTIVATIONS, size_problem


def _get(cfg: DictConfig, key: str) -> Any:
    """The value at `key`, a list as a plain list of its (resolved) items."""
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=True, default=_ABSENT)
        if isinstance(value, ListConfig):  # `[???]`, `[${nope}]` fail here, not in the model
            value = OmegaConf.to_container(value, resolve=True, throw_on_missing=True)
        return value
    except Exception as e:
        raise ConfigError(f"{key}: {one_line(e)}") from None


_ABSENT = object()


def check_number(
    cfg: DictConfig,
    key: str,
    kind: type,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
) -> None:
    value = _get(cfg, key)
    if value is _ABSENT:
        raise ConfigError(f"{key} is missing from the config.")
    if value is None and optional:
        return
    ok_type = isinstance(value, int | float) if kind is float else isinstance(value, int)
    if isinstance(value, bool) or not ok_type:
        noun = "a number" if kind is float else "an integer"
        raise ConfigError(f"{key}={value!r} must be {noun}.")
    if not math.isfinite(value):
        raise ConfigError(f"{key}={value!r} must be a finite number.")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        lo = "" if low is None else f"{'(' if low_open else '['}{low}"
        hi = "" if high is None else f"{high}{')' if high_open else ']'}"
        where = f"in {lo or '(-inf'}, {hi or 'inf)'}"
        raise ConfigError(f"{key}={value!r} is out of range: it must be {where}.")


def check_choice(cfg: DictConfig, key: str, choices: Collection[str]) -> None:
    value = _get(cfg, key)
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of: {', '.join(choices)}.")


def check_source(value: object, key: str, dataset: DataSet) -> None:
    """`key`=`value` must be one of `dataset`'s sources. mnist-eval and mnist-export check
    their data_source again with this once the checkpoint has said which data set it needs."""
    if value not in dataset.sources:
        raise ConfigError(f"{key}={value!r} is not one of: {', '.join(dataset.sources)}.")


def check_boolean(cfg: DictConfig, key: str) -> None:
    value = _get(cfg, key)
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} must be true or false.")


def check_finite(cfg: DictConfig) -> None:
    """No NaN or infinity anywhere: the keys checked one by one below, and every other number a
    callback, logger or the Trainer receives (`callbacks.progress_bar.refresh_rate=nan`)."""
    for key, value in _leaves(OmegaConf.to_container(cfg, resolve=False)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value!r} must be a finite number.")


def _leaves(tree: Any, key: str = "") -> list[tuple[str, Any]]:
    if isinstance(tree, dict):
        return [
            leaf for k, v in tree.items() for leaf in _leaves(v, f"{key}.{k}" if key else str(k))
        ]
    if isinstance(tree, list):
        return [leaf for i, v in enumerate(tree) for leaf in _leaves(v, f"{key}[{i}]")]
    return [(key, tree)]


def validate(cfg: DictConfig) -> None:
    """Raise `ConfigError` on the first value the code cannot use."""
    check_finite(cfg)
    check_path(cfg, "ckpt_path", optional=True)
    check_number(cfg, "seed", int, low=0, high=2**32 - 1)  # what numpy can seed
    check_number(cfg, "data.batch_size", int, low=1)
    check_number(cfg, "data.eval_batch_size", int, low=1)
    check_number(cfg, "data.val_size", int, low=1)  # the data module: at most the images - 1
    check_number(cfg, "data.train_subset", int, low=1, optional=True)
    dataset = _get(cfg, "data.dataset")
    if dataset is not _ABSENT:  # a run saved before data.dataset existed is an MNIST run
        check_choice(cfg, "data.dataset", tuple(DATASETS))
    check_source(_get(cfg, "data.source"), "data.source", DATASETS.get(dataset, DATASETS["mnist"]))
    check_choice(cfg, "data.augment", AUGMENTS)
    check_number(cfg, "data.max_shift", float, low=0, high=14)
    check_number(cfg, "data.max_scale", float, low=0, high=1, high_open=True)
    check_number(cfg, "data.max_rotation", float, low=0, high=180)
    check_number(cfg, "data.max_shear", float, low=0, high=60)
    check_number(cfg, "data.elastic_alpha", float, low=0)
    check_number(cfg, "data.elastic_sigma", float, low=0, low_open=True)
    if _get(cfg, "data.max_stroke") is not _ABSENT:  # a run saved before it existed had none
        check_number(cfg, "data.max_stroke", float, low=0, high=1)

    hidden = _get(cfg, "model.hidden_dims")
    if not isinstance(hidden, ListConfig | list):
        raise ConfigError(
            f"model.hidden_dims={hidden!r} must be a list of layer widths, e.g. [512,256] "
            "([] gives a linear 784-10 model)."
        )
    # The network's own bounds, which also refuse a crafted checkpoint's hyper_parameters.
    if size_problem(hidden):
        shown = str(list(hidden))
        shown = shown[:60] + " ..." * (len(shown) > 60)
        raise ConfigError(f"model.hidden_dims={shown}: {size_problem(hidden)}.")
    check_choice(cfg, "model.activation", ACTIVATIONS)
    dropout = _get(cfg, "model.dropout")
    if isinstance(dropout, ListConfig | list):
        if len(dropout) != len(hidden):
            raise ConfigError(
                f"model.dropout={list(dropout)} has {len(dropout)} values for {len(hidden)} "
                f"hidden layers (model.hidden_dims={list(hidden)}); give one per layer or a "
                "single number."
            )
        for i in range(len(dropout)):
            check_number(cfg, f"model.dropout[{i}]", float, low=0, high=1, high_open=True)
    else:
        check_number(cfg, "model.dropout", float, low=0, high=1, high_open=True)
    check_boolean(cfg, "model.batch_norm")
    check_choice(cfg, "model.optimizer", OPTIMIZERS)
    check_number(cfg, "model.lr", float, low=0, low_open=True)
    check_number(cfg, "model.weight_decay", float, low=0)
    check_number(cfg, "model.momentum", float, low=0, high=1, high_open=True)
    check_boolean(cfg, "model.nesterov")
    check_choice(cfg, "model.scheduler", SCHEDULERS)
    check_number(cfg, "model.lr_step_epochs", int, low=1)
    check_number(cfg, "model.lr_gamma", float, low=0, high=1, low_open=True)
    check_number(cfg, "model.label_smoothing", float, low=0, high=1, high_open=True)
    check_number(cfg, "model.l1", float, low=0)
    check_number(cfg, "model.input_dropout", float, low=0, high=1, high_open=True)
    check_number(cfg, "model.max_norm", float, low=0, low_open=True, optional=True)
    check_boolean(cfg, "model.log_histograms")
    check_boolean(cfg, "model.log_grad_norms")
    check_boolean(cfg, "model.compile")
    if _get(cfg, "model.nesterov") and _get(cfg, "model.optimizer") == "sgd":
        check_number(cfg, "model.momentum", float, low=0, low_open=True, high=1, high_open=True)

    check_loop_limits(cfg)
    check_number(cfg, "trainer.log_every_n_steps", int, low=0)  # 0: no step-level logs
    # The Trainer's own arguments that Lightning accepts but mnist-train cannot use (0 batches
    # of training, a negative clip that Lightning silently ignores), or checks only inside fit.
    check_number(cfg, "trainer.accumulate_grad_batches", int, low=1)
    check_number(cfg, "trainer.gradient_clip_val", float, low=0, low_open=True, optional=True)
    check_number(cfg, "trainer.limit_train_batches", float, low=0, low_open=True, optional=True)
    for split in ("val", "test"):
        check_number(cfg, f"trainer.limit_{split}_batches", float, low=0, optional=True)
    check_number(cfg, "trainer.val_check_interval", float, low=0, low_open=True, optional=True)
    check_number(cfg, "trainer.check_val_every_n_epoch", int, low=1, optional=True)
    profiler = _get(cfg, "trainer.profiler")
    if not (profiler in (None, _ABSENT) or isinstance(profiler, str | DictConfig)):
        raise ConfigError(
            f"trainer.profiler={profiler!r} must be the name of one of Lightning's profilers "
            "(simple, advanced, pytorch) or a config with a _target_."
        )


def check_loop_limits(cfg: DictConfig) -> None:
    """trainer.max_steps: a number of steps, or -1 for no limit (Lightning's default).
    trainer.max_epochs as Lightning takes it: a number of epochs, or -1 for no limit, when
    something else ends the run: max_steps, or max_time for a schedule that needs no horizon
    (the step-wise ones stretch over the run's estimated steps). 0 trains nothing. null is
    Lightning's default: no limit when max_steps or max_time ends the run, else 1000 epochs."""
    check_number(cfg, "trainer.max_steps", int, low=-1)
    check_number(cfg, "trainer.max_epochs", int, low=-1, optional=True)
    epochs, steps = _get(cfg, "trainer.max_epochs"), _get(cfg, "trainer.max_steps")
    if steps == 0:
        raise ConfigError("trainer.max_steps=0 trains nothing: give 1 or more (or -1, no limit).")
    ended = (isinstance(steps, int) and steps > 0) or _get(cfg, "trainer.max_time") is not None
    if epochs is None and not ended:
        return
    if epochs == 0:
        raise ConfigError(
            "trainer.max_epochs=0 trains nothing: give 1 or more (or -1, no limit, with "
            "trainer.max_steps)."
        )
    if epochs not in (-1, None) or (isinstance(steps, int) and steps > 0):
        return
    scheduler, shown = _get(cfg, "model.scheduler"), "null" if epochs is None else epochs
    if _get(cfg, "trainer.max_time") in (None, _ABSENT):
        raise ConfigError(
            "trainer.max_epochs=-1 (no limit on epochs) needs trainer.max_steps=<N> to end the "
            "run (or trainer.max_time, with model.scheduler=none, step or plateau)."
        )
    if scheduler in STEP_SCHEDULERS:
        raise ConfigError(
            f"trainer.max_epochs={shown} with trainer.max_time: model.scheduler={scheduler} "
            "stretches over the run's number of steps, which a time limit does not set. Give "
            "trainer.max_steps=<N>, or model.scheduler=none, step or plateau."
        )


# The other console scripts' arguments: mnist-eval (conf/eval.yaml) and mnist-export
# (conf/export.yaml), checked as `validate` checks mnist-train's, before any work starts.

DEVICES = ("auto", "cpu", "cuda", "mps")
EXPORT_SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}  # mnist-export's format= and its file
EXPORT_FORMATS = tuple(EXPORT_SUFFIXES)
MAX_CHECK_IMAGES = 10_000  # the official test set


def check_path(cfg: DictConfig, key: str, optional: bool = False) -> None:
    """A file or directory name: a non-empty string (or, if `optional`, null or empty).
    Hydra reads `x=1` as a number and `x=[a]` as a list; a name like that must be quoted."""
    try:
        value = OmegaConf.select(cfg, key, throw_on_missing=False, default=_ABSENT)
    except Exception as e:
        raise ConfigError(f"{key}: {one_line(e)}") from None
    if value is _ABSENT or (not optional and value in (None, "")):
        raise ConfigError(f"{key} is missing: give {key}=<path>.")
    if optional and value in (None, ""):
        return
    if not isinstance(value, str) or "\0" in value:
        raise ConfigError(
            f"{key}={value!r} must be a file or directory path (quote a name Hydra would read "
            f"otherwise: {key}=\"'name'\")."
        )


def validate_eval(cfg: DictConfig) -> None:
    """mnist-eval's arguments, or `ConfigError` naming the first that cannot be used."""
    check_finite(cfg)
    check_path(cfg, "ckpt_path", optional=True)
    check_path(cfg, "run_dir", optional=True)
    if bool(_get(cfg, "ckpt_path")) == bool(_get(cfg, "run_dir")):
        raise ConfigError("Give exactly one of ckpt_path=<file> or run_dir=<run directory>.")
    check_path(cfg, "data_dir")
    check_choice(cfg, "data_source", SOURCES)
    check_number(cfg, "batch_size", int, low=1)
    check_choice(cfg, "device", DEVICES)
    check_boolean(cfg, "tensorboard")


def validate_export(cfg: DictConfig) -> None:
    """mnist-export's arguments, or `ConfigError` naming the first that cannot be used."""
    check_finite(cfg)
    check_path(cfg, "ckpt_path")
    check_choice(cfg, "format", EXPORT_FORMATS)
    check_path(cfg, "output", optional=True)
    check_path(cfg, "data_dir")
    check_choice(cfg, "data_source", SOURCES)
    check_number(cfg, "check_images", int, low=1, high=MAX_CHECK_IMAGES)


def _required(cfg: DictConfig, key: str, example: str) -> Any:
    try:
        return OmegaConf.select(cfg, key, throw_on_missing=True)
    except MissingMandatoryValue:
        raise ConfigError(f"{key} is required, e.g. {example}") from None
    except Exception as e:  # an interpolation that does not resolve
        raise ConfigError(f"{key}: {one_line(e)}") from None


def validate_predict(cfg: DictConfig) -> tuple[str, list[str], Path | None]:
    """mnist-predict's ckpt_path, input names and grid path, once every argument is known to be
    usable; else a `ConfigError` naming the key. Non-finite numbers are refused like any other."""
    example = "ckpt_path=outputs/runs/<run>/checkpoints/last.ckpt."
    ckpt = _required(cfg, "ckpt_path", example)
    if ckpt is None:
        raise ConfigError(f"ckpt_path is required, e.g. {example}")
    if not isinstance(ckpt, str) or not ckpt.strip():
        raise ConfigError(f"ckpt_path={ckpt!r} must be the path of a checkpoint, e.g. {example}")
    raw = _required(cfg, "inputs", "inputs=my_digits/ or 'inputs=[a.png,b.jpg]'.")
    items = list(raw) if isinstance(raw, ListConfig | list) else [raw]
    if not items or not all(isinstance(i, str) and i.strip() for i in items):
        shown = OmegaConf.to_container(raw) if isinstance(raw, ListConfig) else raw
        raise ConfigError(
            f"inputs={shown!r} must name image files or directories: a path, or a non-empty list "
            "of paths (a name that looks like a number is given quoted: 'inputs=\"7\"')."
        )
    check_choice(cfg, "device", DEVICES)
    check_boolean(cfg, "json")
    grid = _required(cfg, "grid", "grid=predictions.png.")
    if grid is None:
        return ckpt, items, None
    if not isinstance(grid, str) or Path(grid).suffix.lower() != ".png":
        raise ConfigError(
            f"grid={grid!r} must be the path of a PNG file to write, ending in .png "
            "(or null for no grid)."
        )
    return ckpt, items, Path(grid)
