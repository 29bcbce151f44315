"""Every config in conf/ composes with Hydra and passes `validate`; every bad value is a
`ConfigError` that names its key."""

import re
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose
from hydra.utils import instantiate
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator
from omegaconf import DictConfig, OmegaConf

from mnist_lightning.cli import train as train_module
from mnist_lightning.cli.train import build_trainer
from mnist_lightning.errors import ConfigError, UserError
from mnist_lightning.model.classifier import MNISTClassifier
from mnist_lightning.model.inference import pick_device
from mnist_lightning.run.config import validate
from mnist_lightning.run.resume import run_dir
from tests.helpers.tiers import one_of_each_kind

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())
GROUP_OPTIONS = [f"{g}={p.stem}" for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


pytestmark = pytest.mark.usefixtures("hydra_on_conf")


def composed(overrides: list[str], name: str = "train", hydra_config: bool = False) -> DictConfig:
    return compose(name, overrides=overrides, return_hydra_config=hydra_config)


def test_the_config_groups_are_all_there() -> None:
    expected = {"callbacks", "data", "experiment", "hydra", "logger", "model", "paths", "trainer"}
    assert expected <= set(GROUPS)
    assert len(EXPERIMENTS) >= 4
    assert len(GROUP_OPTIONS) >= 20


def test_the_default_config_is_valid() -> None:
    cfg = composed([])
    validate(cfg)
    assert cfg.data.source == "auto" and cfg.data.val_size == 5000
    assert cfg.resume is None and cfg.ckpt_path is None


@pytest.mark.parametrize("override", one_of_each_kind(GROUP_OPTIONS, lambda o: o.split("=")[0]))
def test_every_option_of_every_group_composes_and_validates(override: str) -> None:
    cfg = composed([override], hydra_config=True)
    validate(cfg)
    group, option = override.split("=")
    assert OmegaConf.select(cfg, f"hydra.runtime.choices.{group}") == option


@pytest.mark.parametrize("preset", one_of_each_kind(EXPERIMENTS, lambda e: e.split("_")[0]))
def test_every_experiment_preset_composes_and_validates(preset: str) -> None:
    cfg = composed([f"experiment={preset}"])
    validate(cfg)
    assert cfg.model.hidden_dims != composed([]).model.hidden_dims  # it changed the model


def test_the_tutorial_presets_are_the_tutorial_networks() -> None:
    shapes = {
        "tutorial_mlp_128": [128],
        "tutorial_mlp_128_64": [128, 64],
        "tutorial_mlp_128_256": [128, 256],
        "tutorial_mlp_64_64_64": [64, 64, 64],
    }
    for preset, hidden in shapes.items():
        assert list(composed([f"experiment={preset}"]).model.hidden_dims) == hidden
    sgd = composed(["experiment=tutorial_mlp_128_256"])
    assert (sgd.model.optimizer, sgd.model.lr, sgd.model.dropout) == ("sgd", 0.1, 0.5)
    small = composed(["experiment=tutorial_mlp_64_64_64"])
    assert (small.data.batch_size, small.trainer.max_epochs) == (15, 2)


@pytest.mark.parametrize("option", sorted(p.stem for p in (CONF / "model").glob("*.yaml")))
def test_every_model_preset_builds_a_checkpointable_model(option: str) -> None:
    cfg = composed([f"model={option}"])
    model = instantiate(cfg.model, _convert_="all")
    assert isinstance(model, MNISTClassifier)
    widths = [m.out_features for m in model.net.modules() if hasattr(m, "out_features")]
    assert widths == [*cfg.model.hidden_dims, 10]
    plain = (int, float, str, bool, list, tuple, type(None))
    assert all(isinstance(v, plain) for v in model.hparams.values()), dict(model.hparams)


def test_the_hydra_group_names_a_fresh_run_directory() -> None:
    cfg = composed([], hydra_config=True)
    run_dir = cfg.hydra.run.dir
    assert run_dir.startswith("outputs/runs/20")
    assert cfg.hydra.sweep.dir.startswith("outputs/multiruns/20")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SLURM_JOB_ID": "812", "SLURM_NTASKS": "8", "SLURM_STEP_ID": "0"}, "slurm-812.0"),
        ({"SLURM_JOB_ID": "812", "SLURM_NTASKS": "8"}, "slurm-812"),
        ({"SLURM_JOB_ID": "812", "SLURM_NTASKS": "1"}, None),  # one task: a fresh name
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
    else:
        assert len(names) == 3


@pytest.mark.parametrize(
    ("overrides", "asks"),
    [
        (["trainer=default"], {"nodes": "1", "ntasks-per-node": "1"}),
        (["trainer=cpu"], {"nodes": "1", "ntasks-per-node": "1"}),
        (["trainer=ddp_cpu", "trainer.num_nodes=2"], {"nodes": "2", "ntasks-per-node": "2"}),
        (["trainer=gpu"], {"nodes": "1", "ntasks-per-node": "1", "gpus-per-node": "1"}),
        (
            ["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2"],
            {"nodes": "2", "ntasks-per-node": "4", "gpus-per-node": "4"},
        ),
    ],
)
def test_every_trainer_preset_makes_the_sbatch_request_it_needs(
    overrides: list[str], asks: dict[str, str]
) -> None:
    """The submission script hydra/launcher=slurm writes: one task per device on each node, a
    GPU per task only for the GPU presets, and the time-limit signal the jobs handle."""
    from hydra_plugins.mnist_lightning import SlurmLauncher

    launcher = composed(["hydra/launcher=slurm", *overrides], hydra_config=True).hydra.launcher
    params = OmegaConf.to_container(launcher, resolve=True)
    del params["_target_"]
    script = SlurmLauncher(**params).executor()._executor._make_submission_file_text("x", "u")
    asked = dict(re.findall(r"#SBATCH --([\w-]+)=(\S+)", script))
    assert asked["signal"] == "USR2@120"
    assert {key: asked.get(key) for key in asks} == asks
    assert asked.get("gpus-per-node", "0") == asks.get("gpus-per-node", "0")


def test_the_slurm_launcher_without_the_cluster_extra_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr("mnist_lightning.run.resume.find_spec", lambda name: None)
    monkeypatch.setattr(sys, "argv", ["mnist-train", "-m", "hydra/launcher=slurm"])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        train_module.main()
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "Error: hydra/launcher=slurm needs the cluster extra: pip install -e '.[cluster]'\n"
    )
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("eval", ["ckpt_path=x"]),
        ("predict", ["ckpt_path=x", "inputs=y"]),
        ("export", ["ckpt_path=x"]),
    ],
)
def test_the_other_commands_compose(name: str, overrides: list[str]) -> None:
    cfg = composed(overrides, name)
    assert cfg.ckpt_path == "x"


BAD_VALUES = [
    # (override(s), key the message must name)
    (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val"),
    (["trainer.limit_train_batches=0"], "trainer.limit_train_batches"),
    (["trainer.limit_train_batches=nan"], "trainer.limit_train_batches"),
    (["trainer.limit_val_batches=-1"], "trainer.limit_val_batches"),
    (["trainer.val_check_interval=0"], "trainer.val_check_interval"),
    (["model.lr=inf"], "model.lr"),
    (["data.batch_size=abc"], "data.batch_size"),
    (["data.batch_size=0"], "data.batch_size"),
    (["data.batch_size=1.5"], "data.batch_size"),
    (["data.eval_batch_size=0"], "data.eval_batch_size"),
    (["data.val_size=0"], "data.val_size"),
    (["data.val_size=-5"], "data.val_size"),
    (["data.train_subset=0"], "data.train_subset"),
    (["model.hidden_dims=[2.5]"], "model.hidden_dims"),
    (["data.source=web"], "data.source"),
    (["model.dropout=1.5"], "model.dropout"),
    (["model.dropout=-0.1"], "model.dropout"),
    (["model.dropout=1"], "model.dropout"),
    (["model.dropout=[0.1]", "model.hidden_dims=[64,32]"], "model.dropout"),
    (["model.dropout=[0.1,1.0]", "model.hidden_dims=[64,32]"], "model.dropout[1]"),
    (["model.hidden_dims=[0]"], "model.hidden_dims"),
    (["model.hidden_dims=[64,-1]"], "model.hidden_dims"),
    (["model.hidden_dims=abc"], "model.hidden_dims"),
    (["model.hidden_dims=64"], "model.hidden_dims"),
    (["model.lr=0"], "model.lr"),
    (["model.lr=-1"], "model.lr"),
    (["model.activation=foo"], "model.activation"),
    (["model.optimizer=foo"], "model.optimizer"),
    (["model.scheduler=foo"], "model.scheduler"),
    (["model.batch_norm=maybe"], "model.batch_norm"),
    (["model.label_smoothing=1"], "model.label_smoothing"),
    (["model.weight_decay=-0.1"], "model.weight_decay"),
    (["model.momentum=1"], "model.momentum"),
    (["model.l1=-1"], "model.l1"),
    (["trainer.max_epochs=0"], "trainer.max_epochs"),
    (["seed=-1"], "seed"),
    (["seed=4294967296"], "seed"),  # numpy seeds 32 bits
    (["ckpt_path=5"], "ckpt_path"),
    (["trainer.profiler=1"], "trainer.profiler"),
    (["callbacks.periodic_checkpoint.train_time_interval.seconds=nan"], "callbacks.periodic"),
    (["callbacks.progress_bar.refresh_rate=inf"], "callbacks.progress_bar.refresh_rate"),
    (["trainer.check_val_every_n_epoch=0"], "trainer.check_val_every_n_epoch"),
    (["trainer.max_steps=-2"], "trainer.max_steps"),
    (["trainer.max_steps=0"], "trainer.max_steps"),
    (["data.augment=wobble"], "data.augment"),
    (["data.max_shift=-1"], "data.max_shift"),
    (["data.max_scale=1"], "data.max_scale"),
    (["data.max_rotation=500"], "data.max_rotation"),
    (["data.elastic_sigma=0"], "data.elastic_sigma"),
    (["data.elastic_alpha=-3"], "data.elastic_alpha"),
    (["data.max_stroke=3"], "data.max_stroke"),
    (["data.max_stroke=nan"], "data.max_stroke"),
    (["model.input_dropout=1"], "model.input_dropout"),
    (["model.max_norm=0"], "model.max_norm"),
    (["model.log_grad_norms=sometimes"], "model.log_grad_norms"),
    (["model.compile=maybe"], "model.compile"),
]


@pytest.mark.parametrize(
    ("overrides", "key"),
    one_of_each_kind(BAD_VALUES, lambda case: case[1].split(".")[0]),  # trainer, model, ...
    ids=[" ".join(o) for o, _ in BAD_VALUES],
)
def test_bad_values_are_config_errors_naming_the_key(overrides: list[str], key: str) -> None:
    cfg = composed(overrides)
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    message = str(info.value)
    assert key in message
    value = overrides[0].split("=", 1)[1].strip("[]").split(",")[-1]
    assert value in message  # and the offending value
    assert isinstance(info.value, UserError)  # printed as one line, exit status 2


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("trainer.max_steps=null", "trainer.max_steps=None must be an integer"),
        ("model.hidden_dims=[???]", "model.hidden_dims: Missing mandatory value"),
        ("model.hidden_dims=[${nope}]", "model.hidden_dims: Interpolation key 'nope' not found"),
    ],
)
def test_values_that_do_not_resolve_are_config_errors(override: str, says: str) -> None:
    """They used to reach the model (or Lightning) and end in a traceback."""
    with pytest.raises(ConfigError, match=re.escape(says)):
        validate(composed([override]))


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.hidden_dims=[]"],
        ["model.hidden_dims=[]", "model.dropout=[]"],
        ["model.dropout=[0.1,0.0]", "model.hidden_dims=[64,32]"],
        ["model.dropout=0"],
        ["data.train_subset=100"],
        ["data.val_size=59999"],
        ["data.source=files"],
        ["trainer.max_epochs=-1", "trainer.max_steps=30"],  # Lightning's "no limit on epochs"
        ["trainer.max_epochs=-1", "trainer.max_time=00:00:01:00", "model.scheduler=none"],
        ["trainer.max_epochs=null"],  # Lightning's default: 1000 epochs
        ["trainer.max_epochs=null", "trainer.max_steps=30"],  # and no limit with max_steps
    ],
    ids=lambda o: " ".join(o),
)
def test_edge_values_are_valid(overrides: list[str]) -> None:
    validate(composed(overrides))


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["trainer.max_epochs=-1"], "needs trainer.max_steps=<N> to end the run"),
        (
            ["trainer.max_epochs=-1", "trainer.max_time=00:00:01:00"],
            "model.scheduler=onecycle stretches over the run's number of steps",
        ),
        (["trainer.max_epochs=-1", "trainer.max_steps=-1"], "needs trainer.max_steps=<N>"),
        (
            ["trainer.max_epochs=null", "trainer.max_time=00:00:01:00"],
            "trainer.max_epochs=null with trainer.max_time: model.scheduler=onecycle",
        ),
        (["trainer.max_epochs=0"], "trainer.max_epochs=0 trains nothing"),
    ],
    ids=lambda o: " ".join(o) if isinstance(o, list) else "",
)
def test_no_limit_on_epochs_needs_something_else_to_end_the_run(
    overrides: list[str], says: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        validate(composed(overrides))


def test_an_empty_hidden_dims_builds_a_linear_model() -> None:
    cfg = composed(["model.hidden_dims=[]"])
    validate(cfg)
    model = instantiate(cfg.model, _convert_="all")
    assert [type(m).__name__ for m in model.net.layers] == ["Linear"]


@pytest.mark.parametrize(
    "study", one_of_each_kind(e for e in EXPERIMENTS if e.startswith("study_"))
)
def test_every_study_is_a_sweep_of_valid_jobs(study: str) -> None:
    """`mnist-train -m experiment=<study>` sweeps what the preset lists; every job is valid."""
    cfg = composed([f"experiment={study}"], hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert params, f"{study} lists no sweep"
    values = {key: str(value).split(",") for key, value in params.items()}
    assert all(len(v) >= 2 for v in values.values())
    for key, options in values.items():
        for option in options:
            validate(composed([f"experiment={study}", f"{key}={option}"]))


def test_auto_is_lightnings_choice_for_training_and_evaluation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """trainer.accelerator=auto is passed to Lightning as it is; mnist-eval's and
    mnist-predict's device=auto follow Lightning's order (MPS, CUDA, CPU)."""
    trainer = build_trainer(composed([f"paths.output_dir={tmp_path}", "logger=none"]))
    lightnings = L.Trainer(accelerator="auto", devices=1, logger=False).accelerator
    assert type(trainer.accelerator) is type(lightnings)
    assert pick_device("auto").type == type(lightnings).name()
    monkeypatch.setattr(MPSAccelerator, "is_available", staticmethod(lambda: False))
    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: True))
    assert pick_device("auto") == torch.device("cuda")
    monkeypatch.setattr(MPSAccelerator, "is_available", staticmethod(lambda: True))
    assert pick_device("auto") == torch.device("mps")
