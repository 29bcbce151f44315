"""Every config in conf/ composes with Hydra and passes `validate`; every bad value is one
`ConfigError` line naming the key, the value and what is allowed."""

import importlib.util
import re
from importlib.util import find_spec
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mnist_lightning.errors import ConfigError, UserError
from mnist_lightning.model.classifier import MNISTClassifier
from mnist_lightning.run.config import check_command_line, validate
from mnist_lightning.run.resume import register_resolvers, run_dir
from mnist_lightning.run.trainer import check_before_training
from tests.helpers.hydra_jobs import run_console
from tests.helpers.tiers import one_of_each_kind

register_resolvers()  # conf/hydra/'s, as mnist-train registers them on import
CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())
GROUP_OPTIONS = [f"{g}={p.stem}" for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


pytestmark = pytest.mark.usefixtures("hydra_on_conf")


# What README and docs/lightning.md say of presets (debug's win over an experiment preset's)
PROMISED = {
    "experiment=tutorial_mlp_128": "model.hidden_dims=[128]",
    "experiment=tutorial_mlp_128_64": "model.hidden_dims=[128,64]",
    "experiment=tutorial_mlp_128_256": "model.hidden_dims=[128,256] model.optimizer=sgd "
    "model.lr=0.1 model.dropout=0.5",
    "experiment=tutorial_mlp_64_64_64": "model.hidden_dims=[64,64,64] data.batch_size=15 "
    "trainer.max_epochs=2",
    "debug=fdr": "trainer.fast_dev_run=true",
    "debug=limit": "trainer.max_epochs=3 trainer.limit_train_batches=10 "
    "trainer.limit_val_batches=2 trainer.limit_test_batches=2",
    "debug=overfit": "trainer.overfit_batches=3 trainer.max_epochs=20",
    "debug=profiler": "trainer.profiler=simple trainer.max_epochs=2",
}


@pytest.mark.parametrize(
    "override", one_of_each_kind(GROUP_OPTIONS, lambda o: (o.split("=")[0], "study_" in o))
)
def test_every_option_of_every_group_composes_validates_and_builds_a_checkpointable_model(
    override: str,
) -> None:
    """A study (`-m experiment=study_*`) sweeps what it lists, each job passing the checks."""
    group, option = override.split("=")
    after = ["experiment=best_cpu"] if group == "debug" else []
    cfg = compose("train", [*after, override], return_hydra_config=True)
    validate(cfg)
    assert OmegaConf.select(cfg, f"hydra.runtime.choices.{group}") == option
    if option.startswith("study_"):
        params = cfg.hydra.sweeper.params
        assert params and all(len(str(v).split(",")) >= 2 for v in params.values()), params
        check_command_line(["-m", override], "train")
    if group == "experiment":  # a preset changes the network
        assert cfg.model.hidden_dims != compose("train").model.hidden_dims
    assert group != "debug" or override in PROMISED
    for key, value in (kv.split("=") for kv in PROMISED.get(override, "").split()):
        assert OmegaConf.select(cfg, key) == yaml.safe_load(value), key
    model = instantiate(cfg.model, _convert_="all")
    widths = [m.out_features for m in model.net.modules() if hasattr(m, "out_features")]
    assert isinstance(model, MNISTClassifier) and widths == [*cfg.model.hidden_dims, 10]
    plain = (int, float, str, bool, list, tuple, type(None))
    assert all(isinstance(v, plain) for v in model.hparams.values()), dict(model.hparams)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SLURM_JOB_ID": "812", "SLURM_NTASKS": "8", "SLURM_STEP_ID": "0"}, "slurm-812.0"),
        ({"SLURM_JOB_ID": "812", "SLURM_NTASKS": "8"}, "slurm-812"),
        ({"SLURM_JOB_ID": "812", "SLURM_NTASKS": "1"}, None),  # one task: a fresh name
        ({}, None),
    ],
)
def test_the_tasks_of_a_slurm_step_share_one_run_directory(
    env: dict[str, str], expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    names = {run_dir(None) for _ in range(3)}
    if expected:
        assert names == {f"outputs/runs/{expected}"}
    else:  # the start time and a random suffix
        assert len(names) == 3 and all(n.startswith("outputs/runs/20") for n in names)


@pytest.mark.parametrize(
    ("overrides", "asks"),  # nodes, tasks per node, GPUs per node (0: none asked)
    [
        ("trainer=default", ("1", "1", "0")),
        ("trainer=cpu", ("1", "1", "0")),
        ("trainer=ddp_cpu trainer.num_nodes=2", ("2", "2", "0")),
        ("trainer=gpu", ("1", "1", "1")),
        ("trainer=ddp trainer.devices=4 trainer.num_nodes=2", ("2", "4", "4")),
    ],
)
def test_every_trainer_preset_makes_the_sbatch_request_it_needs(
    overrides: str, asks: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The submission script hydra/launcher=slurm writes: one task per device on each node, a
    GPU per task only for the GPU presets, and the time-limit signal the jobs handle."""
    from submitit.slurm.slurm import SlurmExecutor

    from hydra_plugins.mnist_lightning import SlurmLauncher

    monkeypatch.setattr(SlurmExecutor, "affinity", lambda *_: 2)  # srun: not needed to write it
    line = ["hydra/launcher=slurm", *overrides.split()]
    launcher = compose("train", line, return_hydra_config=True).hydra.launcher
    params = OmegaConf.to_container(launcher, resolve=True)
    del params["_target_"]
    script = SlurmLauncher(**params).executor()._executor._make_submission_file_text("x", "u")
    asked = dict(re.findall(r"#SBATCH --([\w-]+)=(\S+)", script))
    assert asked["signal"] == "USR2@120"
    assert tuple(asked.get(k, "0") for k in ("nodes", "ntasks-per-node", "gpus-per-node")) == asks


# command line -> its one line when the extra it needs is not installed
MISSING = {
    "train -m hydra/launcher=slurm": "hydra/launcher=slurm needs the cluster extra: "
    "pip install -e '.[cluster]'",
    "export ckpt_path=/no/such.ckpt format=onnx": "format=onnx needs onnx, onnxscript, "
    'onnxruntime (onnxruntime not installed): pip install -e ".[export]"',
}


@pytest.mark.parametrize("line", MISSING)
def test_a_missing_extra_is_one_line_before_anything_is_made_or_loaded(
    line: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def absent(name: str) -> object:
        return None if name.endswith(("submitit_launcher", "onnxruntime")) else find_spec(name)

    monkeypatch.setattr(importlib.util, "find_spec", absent)
    monkeypatch.setattr("mnist_lightning.run.config.find_spec", absent)
    command, *args = line.split()
    done = run_console(command, args, tmp_path)
    assert (done.returncode, done.stderr) == (2, f"Error: {MISSING[line]}\n")
    assert not list(tmp_path.iterdir())


# override(s) -> the one line naming key, value and what is allowed (None: valid), per kind
VALUES = {
    "trainer.gradient_clip_val=-1": "trainer.gradient_clip_val=-1 is out of range",
    "trainer.limit_train_batches=nan": "trainer.limit_train_batches=nan must be a finite",
    "trainer.check_val_every_n_epoch=0": "check_val_every_n_epoch=0 is out of range",
    "trainer.max_steps=-2": "trainer.max_steps=-2 is out of range: it must be in [-1, inf)",
    "trainer.max_steps=0": "trainer.max_steps=0 trains nothing",
    "trainer.max_steps=null": "trainer.max_steps=None must be an integer",
    "debug=overfit trainer.limit_val_batches=-1": "limit_val_batches=-1 is out of range",
    "trainer.max_epochs=0": "trainer.max_epochs=0 trains nothing",
    "trainer.max_epochs=-1": "needs trainer.max_steps=<N> to end the run",
    "trainer.max_epochs=-1 trainer.max_time=00:00:01:00": "model.scheduler=onecycle stretches",
    "trainer.max_epochs=null trainer.max_time=00:00:01:00": "max_epochs=null with trainer.max_time",
    "trainer.profiler=1": "trainer.profiler=1 must be the name of one of Lightning's profilers",
    "model.lr=inf": "model.lr=inf must be a finite number.",
    "model.lr=0": "model.lr=0 is out of range: it must be in (0, inf).",
    "data.batch_size=abc": "data.batch_size='abc' must be an integer.",
    "data.batch_size=0": "data.batch_size=0 is out of range: it must be in [1, inf).",
    "data.batch_size=1.5": "data.batch_size=1.5 must be an integer.",
    "data.source=web": "data.source='web' is not one of: auto, files, torchvision, pypi.",
    "data=fashion_mnist data.source=pypi": "data.source='pypi' is not one of: auto, files, torchv",
    "data.dataset=cifar10": "data.dataset='cifar10' is not one of: mnist, fashion_mnist.",
    "data.augment=wobble": "data.augment='wobble' is not one of: none, translate, affine, elastic",
    "data.max_scale=1": "data.max_scale=1 is out of range: it must be in [0, 1).",
    "data.elastic_sigma=0": "data.elastic_sigma=0 is out of range: it must be in (0, inf).",
    "data.max_stroke=nan": "data.max_stroke=nan must be a finite number.",
    "model.hidden_dims=[2.5]": "model.hidden_dims=[2.5]",
    "model.hidden_dims=[64,-1]": "model.hidden_dims=[64, -1]",
    "model.hidden_dims=abc": "model.hidden_dims='abc' must be a list of layer widths",
    "model.hidden_dims=[???]": "model.hidden_dims: Missing mandatory value",
    "model.hidden_dims=[${nope}]": "model.hidden_dims: Interpolation key 'nope' not found",
    "model.dropout=1.5": "model.dropout=1.5 is out of range: it must be in [0, 1).",
    "model.dropout=high": "model.dropout='high' must be a number.",
    "model.dropout=[0.1] model.hidden_dims=[64,32]": "model.dropout=[0.1] has 1 values for 2",
    "model.dropout=[0.1,1.0] model.hidden_dims=[64,32]": "model.dropout[1]=1.0 is out of range",
    "model.activation=foo": "model.activation='foo' is not one of: relu, gelu, silu, tanh",
    "model.optimizer=foo": "model.optimizer='foo' is not one of: adam, adamw, sgd.",
    "model.optimizer=sgd model.nesterov=true model.momentum=0": "model.momentum=0 is out of range",
    "model.max_norm=0": "model.max_norm=0 is out of range: it must be in (0, inf).",
    "seed=4294967296": "seed=4294967296 is out of range",  # numpy seeds 32 bits
    "ckpt_path=5": "ckpt_path=5 must be a file or directory path",
    "callbacks.periodic_checkpoint.train_time_interval.seconds=nan": ".seconds=nan must be a",
    "callbacks.progress_bar.refresh_rate=inf": "callbacks.progress_bar.refresh_rate=inf must",
    # edge values that are valid (the default: run on real MNIST in test_train.py)
    "model.hidden_dims=[]": None,
    "model.hidden_dims=[] model.dropout=[]": None,
    "model.dropout=[0.1,0.0] model.hidden_dims=[64,32]": None,
    "model.dropout=0": None,
    "data.train_subset=100": None,
    "data.val_size=59999": None,
    "trainer.max_epochs=-1 trainer.max_time=00:00:01:00 model.scheduler=none": None,
    "trainer.max_epochs=null": None,  # Lightning's default: 1000 epochs
    "model.optimizer=sgd model.nesterov=true model.momentum=0.5": None,
}


# command line -> its one line (None: accepted) before Hydra makes anything
KEYS = {
    "resume=x ~resume": "~resume: mnist-train reads it; give it a value instead.",
    "sed=1": "sed is not a key of this config; did you mean seed?",
    "max_epochs=3": "max_epochs is not a key of this config; did you mean trainer.max_epochs?",
    "lr=0.1": "lr is not a key of this config; did you mean model.lr?",  # a Hydra user's habit
    "+max_epochs=3": "+max_epochs: mnist-train reads no such key; did you mean trainer.max_epo",
    "-m data.batchsize=1,2": "did you mean data.batch_size?",
    "trainer.foo=1": "A Trainer argument that conf/ lacks: +trainer.foo=...",
    "trainer.detect_anomoly=1": "A Trainer argument that conf/ lacks: +trainer.detect_anomaly=",
    "nope.x=1": "nope.x is not a key of this config.",
    "~hydra.callbacks.run_directory": "mnist-train decides where Hydra writes; choose the run's",
    "resume=x hydra.output_subdir=.hydra": "decides where Hydra writes",
    "+hydra.job_logging.handlers.file.mode=w": "decides where Hydra writes",
    "+hydra.job_logging.handlers.f={class:logging.FileHandler,filename:x}": "job_logging.handl",
    "paths.output_dir=x": "decides where Hydra writes",
    "-m hydra.sweep.subdir=${hydra.job.num}/${oc.env:NO_SUCH_VARIABLE,.}/..": "sweep.subdir: mnist",
    "hydra.job_logging.root.level=WARNING paths=default": None,
    "hydra/job_logging=stdout hydra/hydra_logging=disabled": None,  # no file
    "+hydra.hydra_logging.handlers.f={class:logging.FileHandler,filename:x}": "hydra_logging.han",
    "-cd /tmp": "composes the project's conf/ only",
    "--config-name nope": "composes the project's conf/ only",
    "-m model.dropout=0,0.5 --cfg job": "Give only one of --run, --multirun, --cfg, --info, --",
    "callbacks.zzz.patience=1": "A callback that conf/ lacks: +callbacks.zzz._target_=<its class>",
    "callbacks.model_checkpoint.filenam=x": "filenam is not a key of this config; did you mean "
    "callbacks.last_checkpoint?",
    "trainer.profiler.dirpath=x": "trainer.profiler.dirpath is not a key of this config.",
    "-m hparams_search=optuna hydra.sweeper.params.model.lr=interval(0.001,0.1)": None,
    "hydra/launcher=slurm hydra.launcher.partiton=x": "did you mean hydra.launcher.partition?",
    "model=nope": "model=nope is not a preset of conf/model/; one of mlp, mlp_128,",
    "model=MLP_128_6": "not a preset of conf/model/; did you mean model=mlp_128_64?",
    "+trainer=gpus": "trainer=gpus is not a preset of conf/trainer/; did you mean trainer=gpu?",
    "+trainer.max_time=00:00:01:00 model=mlp_128 debug=fdr": None,
    "experiment=tutorial_mlp_128 model.dropout=0.1 data.data_dir=/x": None,
    "-m model.dropout=0,0.5 hparams_search=optuna hydra.sweeper.n_trials=2": None,
    "-m model=choice(mlp_128,mlp_128_64) model.dropout=0.1": None,
    "-m model=glob(mlp_128*)": None,
    "hydra/launcher=slurm hydra.launcher.partition=x hydra.job.chdir=false": None,
    "hydra.run.dri=x": "hydra.run.dri is not a key of this config; did you mean hydra.run.dir?",
    "logger.tensorbord.name=x": "did you mean logger.tensorboard.name?",
    "-m model=mlp_128,mlp_64_64_64 model.dropuot=0.1": "did you mean model.dropout?",
    "model.hidden_dims=[512,256": "model.hidden_dims=[512,256: Hydra cannot read it (",
    "hydra.sweeper.params={model.dropout:'0,1.5'} -m": "Hydra cannot compose",
    "hparams_search=optuna hydra.sweeper.n_trials=abc": "hydra.sweeper.n_trials: Value 'abc'",
    "-m hparams_search=optuna model.lr=interval(1,0)": "model.lr=interval(1,0): Optuna cannot",
    "-m hparams_search=optuna model.lr=interval(0,inf)": "Optuna searches between finite bounds",
    "-m hparams_search=optuna model.dropout=interval(0.5,1.5)": "a trial may take 1.5: model.dr",
    "-m hparams_search=optuna hydra.sweeper.params={model.dropout:1.5}": "a trial may take 1.5",
    "-m hparams_search=optuna model.dropout=0 hydra.sweeper.params.model.dropout=range(2,4)": None,
    "+width=64 model.hidden_dims=[${width}]": None,  # a variable of the user's, interpolated
    "-m hparams_search=optuna hydra.sweeper.params.data.batch_size=choice(0,8)": "may take 0: da",
    "-m hparams_search=optuna hydra.sweeper.n_trials=0": "sweeper.n_trials=0 must be 1 or more.",
    "-m hparams_search=optuna hydra.sweeper.max_failure_rate=2": "must be from 0 to 1.",
    "-m hparams_search=optuna hydra.sweeper.direction=[maximize,minimize]": "maximize or minim",
    "-m hparams_search=optuna hydra.sweeper.n_jobs=0": "hydra.sweeper.n_jobs=0 must be 1 or more",
    "-m model.lr=range(1,0)": "model.lr=range(1,0): the sweep holds no value, so no job.",
    "-m model.lr=range(0,10,0)": "model.lr=range(0,10,0): Hydra cannot sweep it: range() arg 3",
    "model=null": "model=null: mnist-train needs a preset of conf/model/ here.",
    "logger=null": "logger=null: to go without conf/logger/, delete it: ~logger",
}


@pytest.mark.parametrize("command", one_of_each_kind(["eval", "predict", "export"]))
def test_every_command_checks_its_keys(command: str) -> None:
    with pytest.raises(ConfigError, match="did you mean ckpt_path"):
        check_command_line(["ckpt_pth=x"], command)
    with pytest.raises(ConfigError, match=r"data\.batch_size is not a key"):  # data_dir not read
        check_command_line(["data.batch_size=0"], command)
    with pytest.raises(ConfigError, match=rf"\+trainer= is not for mnist-{command}"):
        check_command_line(["+trainer=gpu"], command)
    check_command_line(["ckpt_path=x"], command)


# command line -> what check_command_line, with the checks before training, refuses it with
# (None: accepted), before Hydra makes anything; paths.data_dir=/proc/nope: before the data
GPU, DROPOUT = "it has no gpu", "model.dropout=1.5 is out of range"
JOBS = {
    "trainer=gpu": GPU,  # this machine has no GPU (CI's neither: a GPU machine skips this case)
    "-m trainer=gpu model.dropout=0.1,0.2": GPU,
    "trainer=gpu --cfg job": None,  # Hydra shows the config and runs nothing
    "-m hydra/launcher=slurm trainer=gpu model.dropout=0.1,0.2": None,  # the nodes' GPUs
    "--cfg=job ckpt_path=/no/such.ckpt": None,
    "-m hparams_search=optuna model.dropout=1.5": DROPOUT,  # Optuna: the fixed values
    "resume=null model.dropout=1.5": DROPOUT,  # no run to resume: a new one, checked
    "+trainer.enable_checkpointing=false ~callbacks.best_checkpoint ~callbacks.last_checkpoint "
    "~callbacks.periodic_checkpoint ~callbacks.graceful_interrupt": None,  # deleted: not checked
    "-m experiment=study_regularization hydra.sweeper.params={model.dropout:'0,1.5'}": DROPOUT,
    "-m model.dropout=0,0.5 ckpt_path=/no/such.ckpt": "Checkpoint /no/such.ckpt does not exist",
    "-m model.dropout=0,0.5 paths.data_dir=/proc/nope": "/proc/nope/MNIST/raw",
    "-m model.dropout=0,0.5 data.val_size=60000": "data.val_size=60000 must be between 1 and",
    "+model.dropuot=0.3": "MNISTClassifier takes no argument dropuot. Did you mean model.dropout?",
    "+callbacks.zzz.patience=1 paths.data_dir=/proc/nope": "callbacks.zzz names no class to build",
    "+trainer.gradient_clip_vall=1": "Did you mean trainer.gradient_clip_val?",
    "trainer.val_check_interval=00:00:01:00": None,  # Lightning's time-based validation
    "trainer.val_check_interval=abc": "Invalid time format for `val_check_interval`: 'abc'.",
    "+logger.tensorboard.log_dir=x": "logger.tensorboard.log_dir: ",  # TensorBoard sets it
    "+logger.tensorboard.kwargs=1": "TensorBoardLogger takes no argument kwargs",  # (its **)
    "logger=many +logger.wandb.foo=1": "logger.wandb.foo: ",  # what W&B hands on to wandb.init
    "callbacks.best_checkpoint.mode=foo paths.data_dir=/proc/nope": "`mode` can be min, max but",
    # a type as the class declares it (a model's, a callback's argument)
    "model.batch_norm=maybe": "model.batch_norm='maybe' must be true or false.",
    "callbacks.best_checkpoint.save_top_k=abc": "best_checkpoint.save_top_k='abc' must be an int",
    "+trainer.enable_checkpointing=false paths.data_dir=/proc/nope": "`ModelCheckpoint` in callb",
    "logger.tensorboard.save_dir=/dev/null/tb paths.data_dir=/proc/nope": "save_dir: cannot write",
    "callbacks.best_checkpoint.dirpath=/dev/null/c": "best_checkpoint.dirpath: cannot write to",
    "logger=mlflow logger.mlflow.tracking_uri=sqlite:////dev/null/m.db": "m.db: cannot write to",
    # MLflow itself retries such a store for minutes, printing warnings
    "logger=mlflow logger.mlflow.tracking_uri=sqlite:////tmp": "/tmp is a directory, not an SQLite",
}


def kind(case: tuple[str, str | None]) -> tuple:
    """The fast tier's: one of each table, refused or not; of VALUES each key's group, of KEYS
    with a suggestion or not, of JOBS a sweep or not."""
    line, says = case
    extra = line.split(".")[0] if line in VALUES else "did you mean" in str(says) or "-m" in line
    return line in VALUES, line in JOBS, says is None, extra


@pytest.mark.parametrize(
    ("line", "says"),
    one_of_each_kind((VALUES | KEYS | JOBS).items(), kind),
    ids=list(VALUES | KEYS | JOBS),
)
def test_a_command_line_is_checked_before_hydra_starts_and_refused_in_one_line_naming_why(
    line: str, says: str | None
) -> None:
    """Each job validated; JOBS also with the checks before training, of the jobs run here."""
    then = check_before_training if line in JOBS else lambda cfg: None
    if then is check_before_training and "gpu" in line and torch.cuda.is_available():
        pytest.skip("a GPU here: the GPU cases pass")
    if says is None:
        check_command_line(line.split(), "train", then=then)
        return
    with pytest.raises(UserError if line in JOBS else ConfigError) as info:  # or a DataError...
        check_command_line(line.split(), "train", then=then)
    assert says in str(info.value) and "\n" not in str(info.value)
