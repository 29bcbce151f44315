from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from mnist_lightning.config import CONFIG_DIR, validate
from mnist_lightning.errors import ConfigError

GROUPS = ["data", "model", "trainer", "logger", "callbacks", "paths", "hydra", "experiment"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def composed(overrides: list[str], name: str = "train") -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(name, overrides=overrides)


def test_the_default_config_is_valid() -> None:
    validate(composed([]))


@pytest.mark.parametrize(
    "override", [f"{g}={o}" for g in GROUPS if g != "hydra" for o in options(g)]
)
def test_every_group_option_composes_and_validates(override: str) -> None:
    validate(composed([override]))


def test_tutorial_presets_are_the_tutorial_networks() -> None:
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


@pytest.mark.parametrize("name", ["eval", "predict"])
def test_the_other_commands_compose(name: str) -> None:
    assert "ckpt_path" in composed(["ckpt_path=x", "inputs=y"] if name == "predict" else [], name)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.batch_size=abc", "data.batch_size"),
        ("data.batch_size=0", "data.batch_size"),
        ("data.val_size=60000", "data.val_size"),
        ("data.train_subset=0", "data.train_subset"),
        ("data.source=web", "data.source"),
        ("model.dropout=1.5", "model.dropout"),
        ("model.dropout=[0.1]", "model.dropout"),
        ("model.hidden_dims=[0]", "model.hidden_dims"),
        ("model.hidden_dims=abc", "model.hidden_dims"),
        ("model.lr=0", "model.lr"),
        ("model.lr=-1", "model.lr"),
        ("model.activation=swish", "model.activation"),
        ("model.optimizer=lbfgs", "model.optimizer"),
        ("model.scheduler=linear", "model.scheduler"),
        ("model.batch_norm=maybe", "model.batch_norm"),
        ("model.label_smoothing=1", "model.label_smoothing"),
        ("model.weight_decay=-0.1", "model.weight_decay"),
        ("trainer.max_epochs=0", "trainer.max_epochs"),
        ("seed=-1", "seed"),
    ],
)
def test_bad_values_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(composed([override]))
    assert key in str(info.value)
    assert override.split("=", 1)[1].strip("[]") in str(info.value)


def test_an_empty_hidden_dims_is_a_linear_model() -> None:
    validate(composed(["model.hidden_dims=[]", "model.dropout=0.0"]))
