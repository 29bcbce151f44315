"""The console commands through their own Hydra entry points, in the test process, on the
synthetic MNIST: mnist-train with trainer.fast_dev_run=true, then a tiny run that mnist-eval,
mnist-predict and mnist-export read and a resume continues.

The fast tier's end-to-end check of the package (`make test-fast`). test_train.py runs the
same commands as subprocesses, as a user does; tests/helpers/hydra_jobs.py says what
`run_command` does in their place.
"""

import json
import logging
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_lightning.cli.eval import main as mnist_eval
from mnist_lightning.cli.export import is_earlier_export
from mnist_lightning.cli.export import main as mnist_export
from mnist_lightning.cli.predict import is_grid
from mnist_lightning.cli.predict import main as mnist_predict
from mnist_lightning.cli.train import train as mnist_train
from mnist_lightning.data.datasets import raw_dir, read_idx
from mnist_lightning.data.images import read_image
from mnist_lightning.run.checkpoint import load_classifier
from tests.helpers.hydra_jobs import run_command
from tests.helpers.synthetic import SMALL, STEPS_PER_EPOCH, SYNTHETIC_TEST, merged
from tests.helpers.worlds import snapshot

pytestmark = pytest.mark.usefixtures("hydra_on_conf")


def train_line(run: Path, data_dir: Path, *overrides: str) -> list[str]:
    """mnist-train's command line for a new run in `run` on the synthetic data in `data_dir`:
    the SMALL settings, with `overrides` replacing them key by key."""
    return merged([*SMALL, f"paths.data_dir={data_dir}", f"hydra.run.dir={run}"], overrides)


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def tiny_run(
    hydra_on_conf: None, tmp_path_factory: pytest.TempPathFactory, synthetic_mnist: Path
) -> Path:
    """One epoch (20 steps) of 784-32-10, trained by mnist-train in this process. Read-only:
    tests that change it work on a copy."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    returned = run_command(
        mnist_train, "train", train_line(run, synthetic_mnist, "trainer.max_epochs=1")
    )
    assert returned == metrics_of(run)["val/acc_best"]  # what a sweeper optimises
    return run


def refused(
    main: Callable[..., Any],
    config_name: str,
    overrides: list[str],
    capsys: pytest.CaptureFixture[str],
) -> str:
    """The one line a command refused with, checked to be one line and exit status 2."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_status:
        run_command(main, config_name, overrides)
    assert exit_status.value.code == 2
    error = capsys.readouterr().err
    assert len(error.strip().splitlines()) == 1 and error.startswith("Error: "), error
    return error


def copy_of(run: Path, tmp_path: Path) -> Path:
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def test_mnist_train_with_fast_dev_run_runs_one_batch_of_each_loop_and_keeps_no_checkpoint(
    tmp_path: Path, synthetic_mnist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    line = train_line(run, synthetic_mnist, "trainer.fast_dev_run=true")
    returned = run_command(mnist_train, "train", line)
    metrics = metrics_of(run)
    assert metrics["global_step"] == 1 and returned == metrics["val/acc_best"]
    assert 0 <= metrics["test/acc"] <= 1 and metrics["best_checkpoint"] == ""
    assert not (run / "checkpoints").exists() and not (run / "tensorboard").exists()
    saved = (run / ".hydra" / "config.yaml").read_text()  # Hydra's copy, as on the command line
    assert "fast_dev_run: true" in saved and f"data_dir: {synthetic_mnist}" in saved
    assert str(run) in capsys.readouterr().out  # the results table names the run


def test_a_tiny_run_keeps_its_checkpoints_results_and_config(tiny_run: Path) -> None:
    metrics = metrics_of(tiny_run)
    assert metrics["epoch"] == 1 and metrics["global_step"] == STEPS_PER_EPOCH
    assert metrics["test/acc"] >= 0.9  # the synthetic digits are learned in one epoch
    last = torch.load(tiny_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == STEPS_PER_EPOCH
    assert last["hyper_parameters"]["hidden_dims"] == [32]
    assert Path(metrics["best_checkpoint"]).parent == tiny_run / "checkpoints"
    assert list((tiny_run / "tensorboard").glob("events.out.tfevents.*"))
    assert "max_epochs: 1" in (tiny_run / ".hydra" / "config.yaml").read_text()


def test_mnist_eval_reproduces_the_recorded_test_accuracy(
    tiny_run: Path, tmp_path: Path, synthetic_mnist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_of(tiny_run, tmp_path)
    line = [f"run_dir={run}", "data_source=files", f"data_dir={synthetic_mnist}", "device=cpu"]
    run_command(mnist_eval, "eval", line)
    evaluated = json.loads((run / "eval" / "metrics.json").read_text())
    assert evaluated["test/acc"] == pytest.approx(metrics_of(run)["test/acc"], abs=1e-6)
    assert sum(map(sum, evaluated["confusion_matrix"])) == SYNTHETIC_TEST
    assert evaluated["global_step"] == STEPS_PER_EPOCH
    assert "true \\ predicted" in capsys.readouterr().out
    for name in ("confusion_matrix", "mistakes", "first_layer"):
        assert (run / "eval" / f"{name}.png").stat().st_size > 1000


def test_mnist_predict_classifies_pictures_as_the_network_does(
    tiny_run: Path, tmp_path: Path, synthetic_mnist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two test images saved as PNGs: one JSON line each, in order, with the network's own
    answer for the prepared picture, and a grid of them."""
    images = read_idx(raw_dir(synthetic_mnist) / "t10k-images-idx3-ubyte")
    pictures = [tmp_path / "a.png", tmp_path / "b.png"]
    for image, path in zip(images, pictures, strict=False):
        Image.fromarray(image.numpy()).resize((56, 56)).save(path)
    last = tiny_run / "checkpoints" / "last.ckpt"
    grid = tmp_path / "grid.png"
    line = [f"ckpt_path={last}", f"inputs=[{pictures[0]},{pictures[1]}]", "json=true"]
    run_command(mnist_predict, "predict", [*line, f"grid={grid}", "device=cpu"])
    rows = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert [row["file"] for row in rows] == [str(path) for path in pictures]
    model, _ = load_classifier(last, torch.device("cpu"))
    for row, path in zip(rows, pictures, strict=True):
        with torch.no_grad():
            probs = model(read_image(path)[None]).softmax(1)[0]
        assert row["digit"] == int(probs.argmax()) != row["runner_up"]
        assert row["probability"] == pytest.approx(float(probs.max()), abs=1e-4)
    assert is_grid(grid)


def test_the_readme_example_folder_is_predicted(
    tiny_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mnist-predict ... inputs=docs/images/digits/` as README shows it: every picture there
    is read and predicted (how well is docs/'s business, not a test's)."""
    folder = Path(__file__).resolve().parents[1] / "docs" / "images" / "digits"
    line = [f"ckpt_path={tiny_run / 'checkpoints' / 'last.ckpt'}", f"inputs={folder}"]
    run_command(mnist_predict, "predict", [*line, "json=true", "device=cpu"])
    rows = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert [Path(row["file"]).name for row in rows] == sorted(p.name for p in folder.glob("*.png"))
    assert len(rows) == 4 and all(0 <= row["digit"] <= 9 for row in rows)


def test_mnist_export_writes_torchscript_that_predicts_as_the_checkpoint(
    tiny_run: Path,
    tmp_path: Path,
    synthetic_mnist: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    output = tmp_path / "model.pt"
    last = tiny_run / "checkpoints" / "last.ckpt"
    line = [f"ckpt_path={last}", "format=torchscript", f"output={output}", "check_images=50"]
    with warnings.catch_warnings(record=True) as heard:
        warnings.simplefilter("always")
        run_command(
            mnist_export, "export", [*line, "data_source=files", f"data_dir={synthetic_mnist}"]
        )
    # torch's four deprecation warnings are one line of ours, not a wall of FutureWarnings
    assert not [w for w in heard if issubclass(w.category, FutureWarning)]
    assert "TorchScript is deprecated by torch" in caplog.text
    assert "same predictions as the checkpoint on 50 test images" in capsys.readouterr().out
    assert is_earlier_export(output, "torchscript")
    images = read_idx(raw_dir(synthetic_mnist) / "t10k-images-idx3-ubyte")[:20].float() / 255
    model, _ = load_classifier(last, torch.device("cpu"))
    with torch.no_grad():
        assert torch.equal(torch.jit.load(str(output))(images).argmax(1), model(images).argmax(1))


def test_resume_continues_a_tiny_run_in_its_own_directory(
    tiny_run: Path, tmp_path: Path, synthetic_mnist: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = copy_of(tiny_run, tmp_path)
    config = (run / ".hydra" / "config.yaml").read_text()
    line = [f"resume={run}", "trainer.max_epochs=2", f"paths.data_dir={synthetic_mnist}"]
    with caplog.at_level(logging.INFO):
        run_command(mnist_train, "train", line)
    assert f"Resuming {run} from {run / 'checkpoints' / 'last.ckpt'}" in caplog.text
    assert (run / ".hydra" / "config.yaml").read_text() == config  # the run's own config
    metrics = metrics_of(run)
    assert metrics["epoch"] == 2 and metrics["global_step"] == 2 * STEPS_PER_EPOCH
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2 * STEPS_PER_EPOCH
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no new run beside it


def test_resume_refuses_overrides_that_change_the_run(
    tiny_run: Path, tmp_path: Path, synthetic_mnist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy_of(tiny_run, tmp_path)
    before = snapshot(run, directory_times=True)
    line = [f"resume={run}", "model.lr=0.5", f"paths.data_dir={synthetic_mnist}"]
    error = refused(mnist_train, "train", line, capsys)
    assert error.startswith("Error: resume= continues a run") and "model.lr" in error
    assert snapshot(run, directory_times=True) == before


# Refused arguments: exit status 2 and one line. test_train.py, test_bad_input.py and
# test_tool_arguments.py run cases like these as subprocesses.


@pytest.mark.parametrize(
    ("args", "words"),
    [([], "exactly one of"), (["ckpt_path=x", "device=tpu"], "device='tpu'")],
    ids=["no-checkpoint-given", "unknown-device"],
)
def test_mnist_eval_refuses_a_bad_argument_in_one_line(
    args: list[str],
    words: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert words in refused(mnist_eval, "eval", [*args, f"data_dir={tmp_path}"], capsys)
    assert not any(tmp_path.iterdir())


def test_mnist_export_refuses_an_unknown_format_in_one_line(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    last = tiny_run / "checkpoints" / "last.ckpt"
    line = [f"ckpt_path={last}", "format=tflite", f"output={tmp_path / 'm.tflite'}"]
    assert "format='tflite'" in refused(mnist_export, "export", line, capsys)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("epochs", ["-1", "null"])
def test_no_limit_on_epochs_trains_until_max_steps(
    epochs: str, tmp_path: Path, synthetic_mnist: Path
) -> None:
    """trainer.max_epochs=-1, and null (Lightning's default) with max_steps, mean what
    Lightning says: max_steps ends the run, mid-epoch."""
    run = tmp_path / "run"
    steps = STEPS_PER_EPOCH + 5
    line = train_line(
        run, synthetic_mnist, f"trainer.max_epochs={epochs}", f"trainer.max_steps={steps}"
    )
    run_command(mnist_train, "train", line)
    assert metrics_of(run)["global_step"] == steps


def test_log_every_n_steps_0_logs_the_training_curves_once_an_epoch(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """As in Lightning, 0 means no step-level logs: train/* get their epoch-end points only."""
    run = tmp_path / "run"
    line = train_line(run, synthetic_mnist, "trainer.max_epochs=2", "trainer.log_every_n_steps=0")
    run_command(mnist_train, "train", line)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    steps = [event.step for event in events.Scalars("train/loss")]
    assert steps == [STEPS_PER_EPOCH - 1, 2 * STEPS_PER_EPOCH - 1]
