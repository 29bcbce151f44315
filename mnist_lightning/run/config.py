"""conf/, and checks on the command line and the composed config, run before any work starts.

Each value the code relies on is declared once below with its range or choices (a type alone: as
its class declares it, trainer.check_arguments); `check` refuses the first that does not fit in
one line naming key, value and what is allowed: a typo costs a second, not a crash twenty
minutes into a sweep. (Not structured configs: OmegaConf checks no ranges, lets NaN through and
reports over several lines.)"""

import difflib
import functools
import inspect
import math
import re
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from lightning.pytorch import Trainer
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from mnist_lightning.data.augment import AUGMENTS
from mnist_lightning.data.datasets import DATASETS, SOURCES
from mnist_lightning.errors import ConfigError, one_line
from mnist_lightning.model.classifier import (
    OPTIMIZERS,
    SCHEDULERS,
    STEP_SCHEDULERS,
    MNISTClassifier,
)
from mnist_lightning.model.mlp import ACTIVATIONS, size_problem

# The project's conf/ (the package is installed editable, from the clone): every command's config.
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")
# A rule: "int", "float", "bool" or "path", then "?" if null is allowed, then the interval of
# allowed numbers; or the collection of allowed choices. A key absent from the config (a run
# saved by an older version) gets the default of the class it configures.
Rule = str | Collection[str]
PROBABILITY = "float [0, 1)"
COUNT = "int [1, inf)"
TRAIN: dict[str, Rule] = {
    "ckpt_path": "path?",
    "seed": "int [0, 4294967295]",  # what numpy can seed
    "data.dataset": tuple(DATASETS),
    "data.batch_size": COUNT,
    "data.eval_batch_size": COUNT,
    "data.val_size": COUNT,  # the data module checks it against the number of images
    "data.train_subset": "int? [1, inf)",
    "data.augment": AUGMENTS,
    "data.max_shift": "float [0, 14]",
    "data.max_scale": PROBABILITY,
    "data.max_rotation": "float [0, 180]",
    "data.max_shear": "float [0, 60]",
    "data.elastic_alpha": "float [0, inf)",
    "data.elastic_sigma": "float (0, inf)",
    "data.max_stroke": "float [0, 1]",
    "model.activation": tuple(ACTIVATIONS),
    "model.optimizer": OPTIMIZERS,
    "model.lr": "float (0, inf)",
    "model.weight_decay": "float [0, inf)",
    "model.momentum": PROBABILITY,
    "model.scheduler": SCHEDULERS,
    "model.lr_step_epochs": COUNT,
    "model.lr_gamma": "float (0, 1]",
    "model.label_smoothing": PROBABILITY,
    "model.l1": "float [0, inf)",
    "model.input_dropout": PROBABILITY,
    "model.max_norm": "float? (0, inf)",
    # The Trainer's arguments that mnist-train relies on (checked before a SLURM sweep is
    # submitted, and where Lightning skips its own check: overfit_batches, fast_dev_run), and
    # those Lightning accepts but cannot use (0 batches of training, a negative clip it ignores)
    # or checks only inside fit.
    "trainer.max_steps": "int [-1, inf)",
    "trainer.max_epochs": "int? [-1, inf)",
    "trainer.log_every_n_steps": "int? [0, inf)",  # 0: no step-level logs; null: 50
    "trainer.accumulate_grad_batches": COUNT,
    "trainer.gradient_clip_val": "float? [0, inf)",  # 0: no clipping
    "trainer.limit_train_batches": "float? (0, inf)",
    "trainer.limit_val_batches": "float? [0, inf)",
    "trainer.limit_test_batches": "float? [0, inf)",
    "trainer.val_check_interval": "float? (0, inf)",  # or "DD:HH:MM:SS": Lightning's to check
    "trainer.check_val_every_n_epoch": "int? [1, inf)",
}
# Where Hydra writes inside a run (a `..` or `${...}` could lead a job's folder, its log or
# record of the config into another run), and the callback that claims a new run's directory.
HYDRA_WRITES = ("paths.output_dir", "hydra.sweep.subdir", "hydra.output_subdir", "hydra.job.name")
HYDRA_WRITES += ("hydra.job_logging.handlers", "hydra.hydra_logging.handlers")
HYDRA_WRITES += ("hydra.callbacks.run_directory",)
DEVICES = ("auto", "cpu", "cuda", "mps")
EXPORT_SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}  # mnist-export's format= and its file
EVAL: dict[str, Rule] = {
    "ckpt_path": "path?",
    "run_dir": "path?",
    "data_dir": "path",
    "data_source": SOURCES,
    "batch_size": COUNT,
    "device": DEVICES,
    "tensorboard": "bool",
}
PREDICT: dict[str, Rule] = {"ckpt_path": "path", "device": DEVICES, "json": "bool"}
EXPORT: dict[str, Rule] = {
    "ckpt_path": "path",
    "format": tuple(EXPORT_SUFFIXES),
    "output": "path?",
    "data_dir": "path",
    "data_source": SOURCES,
    "check_images": "int [1, 10000]",  # at most the official test set
}
_ABSENT = object()
_RULE = re.compile(r"(int|float|bool|path)(\??)(?: ([\[(])(\S+), (\S+)([\])]))?")
_NOUNS = {"int": "an integer", "float": "a number", "bool": "true or false"}


def value_at(cfg: DictConfig, key: str) -> Any:
    """The value at `key` (`???` reads as null), a list as a plain list of resolved items."""
    try:
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=True, default=_ABSENT)
        except MissingMandatoryValue:
            return None
        if isinstance(value, ListConfig):  # `[???]`, `[${nope}]` fail here, not in the model
            value = OmegaConf.to_container(value, resolve=True, throw_on_missing=True)
        return value
    except Exception as e:
        raise ConfigError(f"{key}: {one_line(e)}") from None


def check_value(key: str, value: Any, rule: Rule) -> None:
    """`ConfigError` unless `value`, at `key`, follows `rule`."""
    if not isinstance(rule, str):
        if value not in rule:
            raise ConfigError(f"{key}={value!r} is not one of: {', '.join(rule)}.")
        return
    kind, nullable, left, low, high, right = _RULE.fullmatch(rule).groups()
    if nullable and (value is None or (kind == "path" and value == "")):
        return
    if kind == "path":
        if value in (None, ""):
            raise ConfigError(f"{key} is missing: give {key}=<path>.")
        if not isinstance(value, str):
            raise ConfigError(
                f"{key}={value!r} must be a file or directory path (quote a name Hydra would "
                f"read otherwise: {key}=\"'name'\")."
            )
        return
    if isinstance(value, float) and not math.isfinite(value) and kind != "bool":
        raise ConfigError(f"{key}={value!r} must be a finite number.")
    types = {"int": int, "float": int | float, "bool": bool}[kind]
    if not isinstance(value, types) or (kind != "bool" and isinstance(value, bool)):
        raise ConfigError(f"{key}={value!r} must be {_NOUNS[kind]}.")
    if left and not (
        (float(low) < value if left == "(" else float(low) <= value)
        and (value < float(high) if right == ")" else value <= float(high))
    ):
        raise ConfigError(
            f"{key}={value!r} is out of range: it must be in {rule.split(' ', 1)[1]}."
        )


def check(cfg: DictConfig, rules: Mapping[str, Rule]) -> None:
    """Every key of `rules` that the config has follows its rule; no NaN or infinity anywhere
    else either (a callback's, a logger's arguments too)."""
    for key, rule in rules.items():
        value = value_at(cfg, key)
        duration = key == "trainer.val_check_interval" and isinstance(value, str)  # Lightning's
        if value is not _ABSENT and not duration:
            check_value(key, value, rule)
    for key, value in leaves(OmegaConf.to_container(cfg, resolve=False)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value!r} must be a finite number.")


def nodes(tree: Any, key: str = "", lists: bool = True) -> Iterator[tuple[str, Any, Any]]:
    """(`model.dropout[1]`, name, value) of each node of nested dicts (and lists), parents first."""
    listed = tree if isinstance(tree, list) and lists else []
    for name, value in tree.items() if isinstance(tree, dict) else enumerate(listed):
        path = f"{key}[{name}]" if isinstance(tree, list) else f"{key}.{name}".lstrip(".")
        yield path, name, value
        yield from nodes(value, path, lists)


def leaves(tree: Any, lists: bool = True) -> list[tuple[str, Any]]:
    """(`model.dropout`, value) of each leaf of nested dicts (and lists, as `[i]`)."""
    inner = dict | list if lists else dict
    return [(k, v) for k, _, v in nodes(tree, lists=lists) if not isinstance(v, inner)]


def validate(cfg: DictConfig) -> None:
    """mnist-train's config, or `ConfigError` naming the first value the code cannot use."""
    check(cfg, TRAIN)
    dataset = DATASETS.get(value_at(cfg, "data.dataset"), DATASETS["mnist"])  # older runs: MNIST
    source = value_at(cfg, "data.source")
    if source is not _ABSENT:  # deleted (~data.source): the data module's own default
        check_value("data.source", source, dataset.sources)
    hidden = value_at(cfg, "model.hidden_dims")
    if hidden is _ABSENT:  # deleted (~model.hidden_dims): the model's own default
        hidden = list(inspect.signature(MNISTClassifier).parameters["hidden_dims"].default)
    if not isinstance(hidden, list):
        raise ConfigError(
            f"model.hidden_dims={hidden!r} must be a list of layer widths, e.g. [512,256] "
            "([] gives a linear 784-10 model)."
        )
    if problem := size_problem(hidden):  # the network's bounds, a checkpoint's too
        raise ConfigError(f"model.{problem}.")
    dropout = value_at(cfg, "model.dropout")
    if isinstance(dropout, list):
        if len(dropout) != len(hidden):
            raise ConfigError(
                f"model.dropout={dropout} has {len(dropout)} values for {len(hidden)} hidden "
                f"layers (model.hidden_dims={hidden}); give one per layer or a single number."
            )
        for i, p in enumerate(dropout):
            check_value(f"model.dropout[{i}]", p, PROBABILITY)
    elif dropout is not _ABSENT:
        check_value("model.dropout", dropout, PROBABILITY)
    if value_at(cfg, "model.nesterov") is True and value_at(cfg, "model.optimizer") == "sgd":
        check_value("model.momentum", value_at(cfg, "model.momentum"), "float (0, 1)")
    check_loop_limits(cfg)
    profiler = value_at(cfg, "trainer.profiler")
    if not (profiler in (None, _ABSENT) or isinstance(profiler, str | DictConfig)):
        raise ConfigError(
            f"trainer.profiler={profiler!r} must be the name of one of Lightning's profilers "
            "(simple, advanced, pytorch) or a config with a _target_."
        )


def check_loop_limits(cfg: DictConfig) -> None:
    """max_epochs as Lightning takes it: a number, or -1 (no limit) when something else ends
    the run: max_steps, or max_time for a schedule that needs no horizon (the step-wise ones
    stretch over the run's estimated steps). 0 trains nothing; null: as `resume.limits` says."""
    epochs, steps = value_at(cfg, "trainer.max_epochs"), value_at(cfg, "trainer.max_steps")
    for key, value, more in (("steps", steps, ""), ("epochs", epochs, ", with trainer.max_steps")):
        if value == 0:
            raise ConfigError(
                f"trainer.max_{key}=0 trains nothing: give 1 or more (or -1, no limit{more})."
            )
    timed = value_at(cfg, "trainer.max_time") not in (None, _ABSENT)
    if epochs not in (-1, None) or (isinstance(steps, int) and steps > 0):
        return
    if epochs == -1 and not timed:
        raise ConfigError(
            "trainer.max_epochs=-1 (no limit on epochs) needs trainer.max_steps=<N> to end the "
            "run (or trainer.max_time, with model.scheduler=none, step or plateau)."
        )
    scheduler = value_at(cfg, "model.scheduler")
    if timed and scheduler in STEP_SCHEDULERS:
        raise ConfigError(
            f"trainer.max_epochs={'null' if epochs is None else epochs} with trainer.max_time: "
            f"model.scheduler={scheduler} stretches over the run's number of steps, which a "
            "time limit does not set. Give trainer.max_steps=<N>, or model.scheduler=none, step "
            "or plateau."
        )


def validate_eval(cfg: DictConfig) -> None:
    """mnist-eval's arguments, or `ConfigError` naming the first that cannot be used."""
    check(cfg, EVAL)
    if bool(value_at(cfg, "ckpt_path")) == bool(value_at(cfg, "run_dir")):
        raise ConfigError("Give exactly one of ckpt_path=<file> or run_dir=<run directory>.")


def validate_predict(cfg: DictConfig) -> tuple[list[str], Path | None]:
    """mnist-predict's input names and grid path, every argument checked (`ConfigError`)."""
    raw = value_at(cfg, "inputs")
    if raw in (None, _ABSENT) and OmegaConf.is_missing(cfg, "inputs"):
        raise ConfigError("inputs is required, e.g. inputs=my_digits/ or 'inputs=[a.png,b.jpg]'.")
    items = raw if isinstance(raw, list) else [raw]
    if not items or not all(isinstance(i, str) and i.strip() for i in items):
        raise ConfigError(
            f"inputs={raw!r} must name image files or directories: a path, or a non-empty list "
            "of paths (a name that looks like a number is given quoted: 'inputs=\"7\"')."
        )
    grid = value_at(cfg, "grid")
    if grid is not None and not (isinstance(grid, str) and Path(grid).suffix.lower() == ".png"):
        raise ConfigError(
            f"grid={grid!r} must be the path of a PNG file to write, ending in .png "
            "(or null for no grid)."
        )
    check(cfg, PREDICT)
    return items, None if grid is None else Path(grid)


def check_command_line(
    args: list[str], config_name: str, then: Callable[[DictConfig], None] = lambda cfg: None
) -> None:
    """Before Hydra makes anything, the command line is composed as Hydra will: a mistyped key or
    preset is one line naming the closest (Hydra's own spans lines and advises `+key=`). For
    mnist-train every job's config is checked too, a run's or each of a grid sweep's, so that
    `-m model.dropout=0,1.5` is refused whole, not after job 0 trained; `then` checks what else
    would refuse a job (not where SLURM runs it). A resumed run's config is checked as it is
    read; Optuna's trials as they start (the command line's fixed values here)."""
    slurm = any(arg.startswith("hydra/launcher=slurm") for arg in args)
    if slurm and not find_spec("hydra_plugins.hydra_submitit_launcher"):
        raise ConfigError(
            "hydra/launcher=slurm needs the cluster extra: pip install -e '.[cluster]'"
        )
    flags = get_args_parser().parse_known_args(args)[0]
    chosen = [flags.run, flags.multirun, flags.cfg, flags.info, flags.shell_completion]
    if sum(c not in (None, False) for c in chosen) > 1:  # (Hydra's own refusal: a traceback)
        raise ConfigError("Give only one of --run, --multirun, --cfg, --info, --shell-completion.")
    if flags.shell_completion:  # `-sc install=bash`: an instruction to Hydra, not an override
        return
    if flags.config_dir or flags.config_name or flags.config_path or flags.experimental_rerun:
        raise ConfigError(  # (else Hydra's words over lines, or a run of what was not checked)
            f"--config-dir, --config-name, --config-path, --experimental-rerun: mnist-"
            f"{config_name} composes the project's conf/ only; add a preset there instead."
        )
    for arg in flags.overrides:
        try:  # Hydra's own message spans lines and exits 1
            OverridesParser.create().parse_override(arg)
        except HydraException as e:
            reason = one_line(e).split(" See https://")[0]  # its link names an older Hydra
            raise ConfigError(f"{arg}: Hydra cannot read it ({reason}).") from None
    groups = {p.name for p in Path(CONFIG_DIR).iterdir() if p.is_dir()}
    for key in (a.split("=")[0] for a in flags.overrides if config_name != "train"):
        added = key.startswith("+") and not key.startswith("++")  # (++: only where it is)
        if key.lstrip("+") in groups or (added and not key.lstrip("+").startswith("hydra")):
            raise ConfigError(
                f"{key}= is not for mnist-{config_name}: it has no groups and takes no added "
                f"keys (its keys: mnist-{config_name} --help)."
            )
    # Going without a group: `~logger` (Hydra's `logger=null` is a traceback), not `~model`.
    for arg in args:
        group = arg.removeprefix("~").removesuffix("=null")
        if group in groups and arg in (f"~{group}", f"{group}=null") and config_name == "train":
            if group in ("data", "model", "trainer", "paths", "hydra"):
                raise ConfigError(f"{arg}: mnist-train needs a preset of conf/{group}/ here.")
            if arg.endswith("=null"):
                raise ConfigError(f"{arg}: to go without conf/{group}/, delete it: ~{group}")
    given = [a for a in args if a.startswith("~") or ("=" in a and not a.startswith("-"))]
    with _hydra():  # (a glob of presets needs its config loader)
        parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
        overrides = parser.parse_overrides(given)
        constant = [o.input_line for o in overrides if not o.is_sweep_override()]
        # One job, so that every key and preset is composed: each swept value's first (an
        # interval's: null), not Hydra's own sweeps (its sweeper's params).
        job = list(constant)
        for o in (o for o in overrides if o.is_sweep_override() and not o.is_hydra_override()):
            try:  # `range(1, 0)`, a glob that matches nothing: no job; `range(0, 9, 0)`
                first = next(o.sweep_string_iterator(), None) if o.is_discrete_sweep() else "null"
            except Exception as e:
                raise ConfigError(f"{o.input_line}: Hydra cannot sweep it: {one_line(e)}") from None
            if first is None:
                raise ConfigError(f"{o.input_line}: the sweep holds no value, so no job.")
            job.append(f"{o.get_key_element()}={first}")
        cfg = _compose(config_name, job)
        added = sorted(set(cfg) - set(_compose_cached(config_name)))  # `+max_epochs=3`, not
        added = [k for k in added if f"${{{k}" not in OmegaConf.to_yaml(cfg)]  # `${width}`'s
        if added:
            raise ConfigError(
                f"+{added[0]}: mnist-{config_name} reads no such key{_meant(cfg, added[0])}"
            )
        # A key the code reads, deleted after it was set (`resume=x ~resume`): not a group.
        if gone := sorted(set(_compose_cached(config_name)) - set(cfg) - groups):
            raise ConfigError(f"~{gone[0]}: mnist-{config_name} reads it; give it a value instead.")
        _check_where_hydra_writes(cfg, config_name)
        shows = flags.cfg or flags.info or flags.help or flags.hydra_help
        if config_name != "train" or shows or resume_arg(args):  # shown, or the run's own config
            return
        if not flags.multirun:  # (given with a sweep in it: Hydra's refusal, composing it)
            return _check_job(cfg if job == given else _compose(config_name, given), then)
        sweeper = cfg.hydra.sweeper
        if sweeper.get("_target_") != f"{BasicSweeper.__module__}.{BasicSweeper.__name__}":
            _check_job(_compose(config_name, constant), then)  # (first: a value of its own)
            if "OptunaSweeper" in str(sweeper.get("_target_")):
                from hydra_plugins.mnist_lightning._optuna import check_search_space

                fixed = {o.key_or_group for o in overrides if not o.is_sweep_override()}
                swept = [o.input_line for o in overrides if o.is_sweep_override()]
                check_search_space(
                    sweeper,
                    [o.removeprefix("hydra.sweeper.params.") for o in swept],  # (its params.x: x)
                    lambda key, value: (
                        key in fixed  # (Hydra's sweeper then drops it from the search)
                        or validate(_compose(config_name, [*constant, f"{key}={value}"]))
                    ),
                )
            return
        params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
        grid = parser.parse_overrides(params + given)
        try:  # `interval()`: not a grid
            jobs = BasicSweeper.split_arguments(grid, None)[0]
        except HydraException as e:
            raise ConfigError(one_line(e)) from None
        for job in jobs:
            _check_job(_compose(config_name, job), then)


def _check_where_hydra_writes(cfg: DictConfig, config_name: str) -> None:
    """`HYDRA_WRITES` as conf/ has them, however set (the command line, a preset); the tools
    write no directory at all."""
    train = config_name == "train"
    for key in HYDRA_WRITES if train else (*HYDRA_WRITES, "hydra.run.dir", "hydra.sweep.dir"):
        parent, name = key.rsplit(".", 1)
        given, own = (
            OmegaConf.to_container(OmegaConf.select(c, parent) or DictConfig({})).get(name)
            for c in (cfg, _compose_cached(config_name))
        )
        differs = given != own
        if key.endswith(".handlers"):  # each log handler: conf/'s, or a plain stream (a preset's)
            plain = {"class": "logging.StreamHandler"}.items()
            differs = any(
                h != (own or {}).get(n)
                and not (isinstance(h, dict) and plain <= h.items() and "()" not in h)
                for n, h in (given or {}).items()
            )
        if differs:
            choose = "choose the run's directory with hydra.run.dir (a sweep's: hydra.sweep.dir)"
            where = choose if train else "it makes no directory"
            raise ConfigError(f"{key}: mnist-{config_name} decides where Hydra writes; {where}.")


def _check_job(cfg: DictConfig, then: Callable[[DictConfig], None]) -> None:
    validate(cfg)
    if "SlurmLauncher" in str(cfg.hydra.launcher.get("_target_")):  # runs on the nodes
        return
    outer = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)  # `${hydra:runtime.cwd}` in paths
    try:
        then(cfg)
    finally:
        HydraConfig.instance().cfg = outer


def is_resume(arg: str) -> bool:
    return arg.lstrip("+").startswith("resume=")  # (`++resume=` too: one way to name a run)


def resume_arg(args: list[str]) -> str:
    """The run the command line's (last) `resume=` names, as Hydra reads it (quoted, escaped);
    "" for none (`resume=`, `resume=null`)."""
    override = OverridesParser.create().parse_override(
        next((a for a in reversed(args) if is_resume(a)), "resume=")
    )
    value = override.value()  # (a run named `0` or `true`: as written, not 0 or True)
    return "" if value is None else value if isinstance(value, str) else override.get_value_string()


@contextmanager
def _hydra() -> Iterator[None]:
    """Hydra's compose API on conf/, put back as it was after (a test's, a caller's)."""
    outer = GlobalHydra.instance().hydra
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
            yield
    finally:
        GlobalHydra.instance().hydra = outer


@functools.cache
def _compose_cached(config_name: str) -> DictConfig:
    return _compose(config_name, [])


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    try:  # with hydra's own keys: the launcher, the sweeper, `${hydra:...}` in paths
        return compose(config_name, overrides=overrides, return_hydra_config=True)
    except MissingConfigException as e:  # a preset conf/ lacks, and those it has
        if e.options is None:
            raise ConfigError(one_line(e)) from None
        group, _, name = str(e.missing_cfg_file).rpartition("/")
        close = difflib.get_close_matches(name.lower(), e.options, 1)
        hint = f"did you mean {group}={close[0]}?" if close else f"one of {', '.join(e.options)}"
        raise ConfigError(f"{group}={name} is not a preset of conf/{group}/; {hint}") from None
    except HydraException as e:
        cause = e.__cause__
        if isinstance(cause, ConfigAttributeError | ConfigKeyError):  # a key it lacks
            raise ConfigError(_unknown_key(cause, overrides, config_name)) from None
        if isinstance(cause, OmegaConfBaseException) and cause.full_key:  # `n_trials=abc`
            reason = str(cause).splitlines()[0].rstrip(".")  # (then its full_key again)
            raise ConfigError(f"{cause.full_key}: {reason}.") from None
        raise ConfigError(one_line(e)) from None
    except (OmegaConfBaseException, AttributeError, ValueError) as e:  # a dict merged into a null
        raise ConfigError(f"Hydra cannot compose {' '.join(overrides)}: {one_line(e)}") from None


def _unknown_key(error: OmegaConfBaseException, overrides: list[str], config_name: str) -> str:
    """`model.dropuot is not a key of this config; did you mean model.dropout?`, from the
    first part of the key that OmegaConf did not find and the names beside it."""
    full, depth = error.full_key, error.full_key.count(".")
    keys = (o.split("=")[0].lstrip("+") for o in overrides)
    key = next((k for k in keys if k == full or k.startswith(f"{full}.")), full)
    parts, node = key.split("."), error.parent_node
    names = list(node) if isinstance(node, DictConfig) else []  # with `???` keys
    close = difflib.get_close_matches(parts[depth], names, 1)
    if depth < len(parts) - 1 and parts[-1] in names:  # `data.batch_size` for `batch_size`
        close = [parts[-1]]
    elif close:  # the whole key as meant, if the config has it
        meant = ".".join([close[0], *parts[depth + 1 :]])
        found = OmegaConf.select(node, meant, default=_ABSENT, throw_on_resolution_failure=False)
        close = [meant] if found is not _ABSENT else close
    close = [".".join([*parts[:depth], c]) for c in close]
    hint = f"; did you mean {close[0]}?" if close else "."
    if not close and depth == 0:  # `max_epochs=3`
        hint = _meant(node, parts[0])
    train = config_name == "train"  # (mnist-eval, -predict, -export build no Trainer)
    if not close and train and depth == 1 and key.startswith("trainer."):  # as it spells it
        spelt = difflib.get_close_matches(parts[1], inspect.signature(Trainer).parameters, 1)
        hint += f" A Trainer argument that conf/ lacks: +trainer.{(spelt or [parts[1]])[0]}=..."
    if not close and train and key.startswith("callbacks."):
        new = ".".join(parts[:2])
        hint += f" A callback that conf/ lacks: +{new}._target_=<its class>, then its arguments"
    return f"{key} is not a key of this config{hint}"


def _meant(cfg: DictConfig, name: str) -> str:
    """`; did you mean trainer.max_epochs?` for `max_epochs`: the closest name of a key deeper in
    the config (a Hydra user's habit is a top-level key)."""
    tree = OmegaConf.to_container(cfg, resolve=False)
    nested = (k for k, _ in leaves(tree, lists=False) if "." in k and not k.startswith("hydra."))
    keys = {k.rpartition(".")[2]: k for k in nested}
    close = difflib.get_close_matches(name, keys, 1)
    return f"; did you mean {keys[close[0]]}?" if close else "."
