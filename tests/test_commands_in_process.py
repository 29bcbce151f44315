"""The fast tier's end-to-end check, in this process on the synthetic MNIST: the shared run and
what mnist-predict and mnist-export do with it (eval: test_fashion_mnist; resume: test_trust)."""

import json
import logging
import re
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from mnist_lightning.cli.export import is_earlier_export
from mnist_lightning.cli.export import main as mnist_export
from mnist_lightning.cli.predict import is_grid
from mnist_lightning.cli.predict import main as mnist_predict
from mnist_lightning.cli.train import train as mnist_train
from mnist_lightning.data.datasets import raw_dir, read_idx
from mnist_lightning.data.images import read_image
from mnist_lightning.run.checkpoint import load_classifier
from mnist_lightning.run.config import check_command_line
from mnist_lightning.run.trainer import setup_process
from tests.helpers.hydra_jobs import run_command, run_console
from tests.helpers.synthetic import SMALL, STEPS_PER_EPOCH, merged
from tests.helpers.tiers import one_of_each_kind

pytestmark = pytest.mark.usefixtures("hydra_on_conf")
STEPS = 2 * STEPS_PER_EPOCH  # of the trained run
SCALARS = {f"{split}/{name}" for split in ("train", "val", "test") for name in ("loss", "acc")}


def test_a_run_writes_the_documented_layout_and_tensorboard_curves(trained_run: Path) -> None:
    assert re.match(r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}", trained_run.name)
    config = (trained_run / ".hydra" / "config.yaml").read_text()
    assert "hidden_dims:\n  - 64\n" in config and "source: files" in config
    log = (trained_run / "train.log").read_text()  # the run's story
    assert "1000 train, 200 val, 300 test images" in log
    assert "epoch 0, step " in log and "epoch 1, step " in log and "val/acc " in log
    assert "`Trainer.fit` stopped" in log and "run.report][INFO] - Results:\n  test/acc " in log
    checkpoints = sorted(p.name for p in (trained_run / "checkpoints").iterdir())
    assert checkpoints[0].startswith("best-") and checkpoints[1:] == ["last.ckpt"]  # no .tmp
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["epoch"] == 2 and metrics["global_step"] == STEPS
    assert metrics["test/acc"] >= 0.9 and 0 <= metrics["test/loss"] < 1  # easy digits
    assert metrics["wall_seconds"] >= 0 and Path(metrics["best_checkpoint"]).name == checkpoints[0]
    # TensorBoard: the curves and the hparams
    events = EventAccumulator(str(trained_run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert set(events.Tags()["scalars"]) >= SCALARS | {"val/acc_best"}
    # Lightning's x-axis: a point logged after optimizer step k (1, 2, ...) is at step k - 1.
    assert [e.step for e in events.Scalars("val/acc")] == [STEPS_PER_EPOCH - 1, STEPS - 1]
    assert [e.step for e in events.Scalars("train/loss")] == list(range(3, STEPS, 4))
    for name in ("test/acc", "val/acc_best"):
        assert events.Scalars(name)[-1].value == pytest.approx(metrics[name])
    assert max(e.value for e in events.Scalars("val/acc")) == pytest.approx(metrics["val/acc_best"])
    images = {"test/confusion_matrix", "test/mistakes", "model/first_layer"}
    assert images <= set(events.Tags()["images"])
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["model.dropout"].number_value == pytest.approx(0.2)
    assert hparams["model.hidden_dims"].string_value == "[64]"
    assert hparams["data.batch_size"].number_value == 50 and "seed" in hparams
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    names = {m.name.tag for m in experiment.experiment.metric_infos}
    assert {"val/acc_best", "test/acc"} <= names


def test_a_warning_shown_also_reaches_the_run_log_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_log = logging.FileHandler(tmp_path / "train.log")
    monkeypatch.setattr(logging.getLogger(), "handlers", [run_log])
    with warnings.catch_warnings():  # puts back warnings.showwarning after
        warnings.simplefilter("always")
        setup_process()
        setup_process()  # again in a launcher's job: still one line per warning
        warnings.warn("a warning we keep", UserWarning, stacklevel=1)
    run_log.close()
    assert (tmp_path / "train.log").read_text() == "UserWarning: a warning we keep\n"


def test_mnist_train_debug_fdr_runs_one_batch_of_each_loop_and_keeps_no_checkpoint(
    tmp_path: Path, synthetic_mnist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Gradient clipping given without `+` (conf/trainer/ has the key), no logger (`~logger`)."""
    run, clip = tmp_path / "run", ["trainer.gradient_clip_val=0.5", "debug=fdr", "~logger"]
    check_command_line(clip, "train")
    check_command_line(["-sc", "install=bash"], "train")  # Hydra's, not overrides
    line = merged([*SMALL, f"paths.data_dir={synthetic_mnist}", f"hydra.run.dir={run}"], clip)
    returned = run_command(mnist_train, "train", line)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 1 and returned == metrics["val/acc_best"]  # for sweepers
    assert 0 <= metrics["test/acc"] <= 1 and metrics["best_checkpoint"] == ""
    assert not (run / "checkpoints").exists() and not (run / "tensorboard").exists()
    saved = (run / ".hydra" / "config.yaml").read_text()  # Hydra's copy, as on the command line
    assert "fast_dev_run: true" in saved and "gradient_clip_val: 0.5" in saved
    assert str(run) in capsys.readouterr().out  # the results table names the run


def test_mnist_predict_classifies_pictures_as_the_network_does(
    trained_run: Path, tmp_path: Path, synthetic_mnist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two test images and README's folder: a JSON line each, in order, the network's answer."""
    images = read_idx(raw_dir(synthetic_mnist) / "t10k-images-idx3-ubyte")
    pictures = [tmp_path / "a.png", tmp_path / "b.png"]
    for image, path in zip(images, pictures, strict=False):
        Image.fromarray(image.numpy()).resize((56, 56)).save(path)
    readme = sorted((Path(__file__).resolve().parents[1] / "docs" / "images" / "digits").iterdir())
    last, grid = trained_run / "checkpoints" / "last.ckpt", tmp_path / "grid.png"
    inputs = ",".join(map(str, [*pictures, readme[0].parent]))
    line = [f"ckpt_path={last}", f"inputs=[{inputs}]", "json=true", f"grid={grid}", "device=cpu"]
    run_command(mnist_predict, "predict", line)
    rows = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert [row["file"] for row in rows] == [str(path) for path in [*pictures, *readme]]
    model, _ = load_classifier(last, torch.device("cpu"))
    for row in rows:
        with torch.no_grad():
            probs = model(read_image(Path(row["file"]))[None]).softmax(1)[0]
        assert row["digit"] == int(probs.argmax()) != row["runner_up"]
        assert row["probability"] == pytest.approx(float(probs.max()), abs=1e-4)
    assert is_grid(grid)


@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("onnx", marks=pytest.mark.slow)])
def test_mnist_export_predicts_as_the_checkpoint_and_replaces_only_its_own_earlier_export(
    fmt: str,
    trained_run: Path,
    tmp_path: Path,
    synthetic_mnist: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The file as docs/tools.md says: images in [0, 1], run by onnxruntime or torch.jit.load."""
    if fmt == "onnx":
        onnxruntime = pytest.importorskip("onnxruntime", reason='pip install -e ".[export]"')
    output, last = tmp_path / f"model.{fmt}", trained_run / "checkpoints" / "last.ckpt"
    line = [f"ckpt_path={last}", f"format={fmt}", f"output={output}", "check_images=50"]
    line += ["data_source=files", f"data_dir={synthetic_mnist}"]
    run_command(mnist_export, "export", line)
    earlier = output.stat()
    with warnings.catch_warnings(record=True) as heard:
        warnings.simplefilter("always")
        run_command(mnist_export, "export", line)  # over the earlier export: replaced
    # torch's four deprecation warnings are one line of ours, not a wall of FutureWarnings
    assert not [w for w in heard if issubclass(w.category, FutureWarning)]
    assert ("TorchScript is deprecated by torch" in caplog.text) == (fmt == "torchscript")
    said = "same predictions as the checkpoint on 50 test images"
    out, err = capsys.readouterr()
    assert [said in s for s in out.splitlines()] == [True, True] and not err, out + err
    assert output.stat().st_ino != earlier.st_ino and [*tmp_path.iterdir()] == [output]
    other = "onnx" if fmt == "torchscript" else "torchscript"
    assert is_earlier_export(output, fmt) and not is_earlier_export(output, other)
    images = read_idx(raw_dir(synthetic_mnist) / "t10k-images-idx3-ubyte")[:20].float() / 255
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
        logits = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    else:
        logits = torch.jit.load(str(output))(images)
    model, _ = load_classifier(last, torch.device("cpu"))
    with torch.no_grad():
        assert torch.equal(logits.argmax(1), model(images).argmax(1))


@pytest.mark.parametrize("command", one_of_each_kind(["eval", "predict", "export", "train"]))
def test_a_commands_help_says_what_it_is_and_lists_its_own_keys(
    command: str, tmp_path: Path
) -> None:
    """mnist-train's lists its presets; a checkpoint command's, not mnist-train's groups."""
    done = run_console(command, ["--help"], tmp_path)
    assert done.returncode == 0 and done.stdout.startswith(f"mnist-{command}: "), done.stderr
    assert "ckpt_path: " in done.stdout
    train = ["Presets (group=name):\n", "\nexperiment: best_cpu, ", "trainer:\n  _target_: "]
    assert all((words in done.stdout) == (command == "train") for words in train), done.stdout
    if command == "train":  # and Hydra's own config, resolved (the run's directory named)
        done = run_console(command, ["--cfg", "hydra", "--resolve"], tmp_path)
        assert "    dir: outputs/runs/20" in done.stdout and not list(tmp_path.iterdir())
