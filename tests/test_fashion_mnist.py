"""`data=fashion_mnist`: the same data module on Zalando's clothes, the class names wherever
MNIST shows digits, the data set a checkpoint learned carried to mnist-eval, mnist-export and
mnist-predict. Getting the files (Debian's package): test_download.py."""

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose
from omegaconf import OmegaConf
from PIL import Image

from mnist_lightning.cli.eval import main as mnist_eval
from mnist_lightning.cli.export import main as mnist_export
from mnist_lightning.cli.predict import main as mnist_predict
from mnist_lightning.cli.train import train as mnist_train
from mnist_lightning.data import datasets
from mnist_lightning.data.datamodule import MNISTDataModule, trained_on
from mnist_lightning.data.datasets import FASHION_CLASSES, raw_dir, read_idx
from mnist_lightning.errors import CheckpointError
from mnist_lightning.run.report import confusion_figure, mistakes_figure
from tests.helpers.hydra_jobs import run_command
from tests.helpers.synthetic import SMALL, STEPS_PER_EPOCH, SYNTHETIC_TEST, merged

pytestmark = pytest.mark.usefixtures("hydra_on_conf")


@pytest.fixture(scope="module")
def synthetic_fashion(tmp_path_factory: pytest.TempPathFactory, synthetic_mnist: Path) -> Path:
    data_dir = tmp_path_factory.mktemp("fashion")  # the synthetic MNIST as Fashion-MNIST only
    shutil.copytree(raw_dir(synthetic_mnist), raw_dir(data_dir, "fashion_mnist"))
    return data_dir


def test_fashion_mnist_is_one_override_and_mnist_stays_the_default() -> None:
    mnist = compose("train", overrides=[])
    fashion = compose("train", overrides=["data=fashion_mnist"])
    assert mnist.data.dataset == "mnist" and fashion.data.dataset == "fashion_mnist"
    data = {name: OmegaConf.to_container(cfg.data) for name, cfg in (("m", mnist), ("f", fashion))}
    assert data["f"] == data["m"] | {"dataset": "fashion_mnist"}  # one data module
    assert raw_dir("d", "fashion_mnist") == Path("d/FashionMNIST/raw")  # torchvision's layout


def test_a_checkpoint_says_which_data_set_it_learned() -> None:
    key = MNISTDataModule.CHECKPOINT_HYPER_PARAMS_KEY
    assert trained_on({}, "old.ckpt") is datasets.MNIST  # saved before there was a choice
    assert trained_on({key: {"dataset": "fashion_mnist"}}, "f.ckpt") is datasets.FASHION_MNIST
    for value in ("cifar10", ["mnist"], "x" * 100_000):
        with pytest.raises(CheckpointError) as info:
            trained_on({key: {"dataset": value}}, "x.ckpt")
        message = str(info.value)
        assert message.startswith("x.ckpt says its model was trained on the data set ")
        assert message.endswith(", which this version does not know (mnist, fashion_mnist).")
        assert len(message) < 300 and (len(value) > 80 or repr(value) in message)


def test_figures_name_the_classes() -> None:
    counts = torch.eye(10, dtype=torch.long) * 5
    counts[6, 0] = 2  # shirts taken for T-shirts
    axes = confusion_figure(counts, FASHION_CLASSES).axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == list(FASHION_CLASSES)
    assert [t.get_text() for t in axes.get_yticklabels()] == list(FASHION_CLASSES)
    digits = confusion_figure(counts).axes[0]  # MNIST's: the digits, as before
    assert [t.get_text() for t in digits.get_xticklabels()] == [str(d) for d in range(10)]

    probs = torch.full((2, 10), 0.01)
    probs[0, 0], probs[1, 9] = 0.91, 0.91
    labels = torch.tensor([6, 7])
    figure = mistakes_figure(torch.zeros(2, 28, 28), probs, labels, classes=FASHION_CLASSES)
    captions = [t.get_text() for t in figure.axes[0].texts]
    assert captions == ["pred T-shirt/top (91%)\ntrue Shirt", "pred Ankle boot (91%)\ntrue Sneaker"]


@pytest.fixture(scope="module")
def fashion_run(
    hydra_on_conf: None, tmp_path_factory: pytest.TempPathFactory, synthetic_fashion: Path
) -> Path:
    run = tmp_path_factory.mktemp("fashion-run") / "run"
    line = [*SMALL, "data=fashion_mnist", f"paths.data_dir={synthetic_fashion}"]
    run_command(
        mnist_train, "train", merged(line, [f"hydra.run.dir={run}", "trainer.max_epochs=1"])
    )
    return run


def test_mnist_eval_tests_on_the_checkpoints_data_set_with_class_names(
    fashion_run: Path, tmp_path: Path, synthetic_fashion: Path, capsys: pytest.CaptureFixture
) -> None:
    run = Path(shutil.copytree(fashion_run, tmp_path / "run"))
    line = [f"run_dir={run}", f"data_dir={synthetic_fashion}", "device=cpu"]
    capsys.readouterr()
    with pytest.raises(SystemExit, match=r"^2$"):  # a source the data set does not have
        run_command(mnist_eval, "eval", [*line, "data_source=pypi"])
    said = "Error: data_source='pypi' is not one of: auto, files, torchvision, debian.\n"
    assert capsys.readouterr().err == said and not (run / "eval").exists()
    run_command(mnist_eval, "eval", [*line, "data_source=files"])
    evaluated = json.loads((run / "eval" / "metrics.json").read_text())
    recorded = json.loads((run / "metrics.json").read_text())
    assert recorded["global_step"] == STEPS_PER_EPOCH and recorded["test/acc"] >= 0.9
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["datamodule_hyper_parameters"] == {"dataset": "fashion_mnist"}  # it says so
    assert evaluated["test/acc"] == pytest.approx(recorded["test/acc"], abs=1e-6)
    assert evaluated["dataset"] == "fashion_mnist"
    assert sorted(evaluated["per_class_acc"]) == sorted(FASHION_CLASSES)
    assert sum(map(sum, evaluated["confusion_matrix"])) == SYNTHETIC_TEST
    out = capsys.readouterr().out
    assert "data set    Fashion-MNIST" in out and "0 T-shirt/top" in out and "9 Ankle boot" in out
    for name in ("confusion_matrix", "mistakes", "first_layer"):
        assert (run / "eval" / f"{name}.png").stat().st_size > 1000


def test_mnist_predict_answers_with_class_names_and_export_checks_on_its_data_set(
    fashion_run: Path, tmp_path: Path, synthetic_fashion: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = read_idx(raw_dir(synthetic_fashion, "fashion_mnist") / "t10k-images-idx3-ubyte")
    pictures = [tmp_path / "a.png", tmp_path / "b.png"]
    for image, path in zip(images, pictures, strict=False):
        Image.fromarray(image.numpy()).resize((56, 56)).save(path)
    last = fashion_run / "checkpoints" / "last.ckpt"
    line = [f"ckpt_path={last}", f"inputs=[{pictures[0]},{pictures[1]}]", "device=cpu"]
    run_command(mnist_predict, "predict", [*line, "json=true"])
    rows = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert [row["file"] for row in rows] == [str(p) for p in pictures]
    keys = "class file name probability runner_up runner_up_name runner_up_probability"
    for row in rows:
        assert sorted(row) == keys.split() and row["name"] == FASHION_CLASSES[row["class"]]
        assert row["runner_up_name"] == FASHION_CLASSES[row["runner_up"]]
    run_command(mnist_predict, "predict", line)  # the table
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["file", "class", "probability", "runner-up"]
    assert all(rows[i]["name"] in table[i + 1] for i in range(2))

    output = tmp_path / "model.pt"  # synthetic_fashion holds no MNIST: its test images are read
    line = [f"ckpt_path={last}", "format=torchscript", f"output={output}", "check_images=50"]
    run_command(
        mnist_export, "export", [*line, "data_source=files", f"data_dir={synthetic_fashion}"]
    )
    assert "same predictions as the checkpoint on 50 test images" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.e2e
def test_the_real_fashion_mnist_from_debian_trains_above_chance(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As on a machine where torchvision's download fails; then one short epoch on it."""
    data_dir = tmp_path / "data"
    raw = datasets.ensure_mnist(data_dir, "debian", "fashion_mnist")  # by the official sha256
    for split, count in (("train", 6000), ("t10k", 1000)):
        labels = read_idx(raw / f"{split}-labels-idx1-ubyte").long()
        assert torch.bincount(labels).tolist() == [count] * 10
    images = read_idx(raw / "train-images-idx3-ubyte").float() / 255
    assert float(images.mean()) == pytest.approx(0.2860, abs=5e-4)  # Fashion-MNIST's, not MNIST's

    overrides = ["data=fashion_mnist", "data.train_subset=10000", "model.hidden_dims=[128]"]
    overrides += ["trainer.max_epochs=1", "trainer.accelerator=cpu", f"paths.data_dir={data_dir}"]
    overrides += ["callbacks.progress_bar.refresh_rate=0", f"hydra.run.dir={tmp_path / 'run'}"]
    with caplog.at_level(logging.INFO, logger="mnist_lightning.data.datamodule"):
        run_command(mnist_train, "train", overrides)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test/acc"] >= 0.7, metrics  # chance is 0.1
    assert "Fashion-MNIST on cpu: 10000 train, 5000 val, 10000 test images" in caplog.messages
    assert not (data_dir / "MNIST").exists()
