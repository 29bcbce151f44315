"""mnist-train, mnist-eval and mnist-predict as a user runs them: real subprocesses."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SMALL, run_cli, run_dirs
from PIL import Image, ImageDraw
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from mnist_lightning.idx import read_idx

CURVES = ("train/loss", "train/acc", "train/lr", "val/loss", "val/acc", "val/acc_best")


def test_a_run_writes_the_documented_layout(trained_run: Path) -> None:
    assert (trained_run / ".hydra" / "config.yaml").is_file()
    assert (trained_run / "train.log").is_file()
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()
    assert len(list((trained_run / "checkpoints").glob("best-epoch*.ckpt"))) == 1
    metrics = json.loads((trained_run / "metrics.json").read_text())
    keys = {"test/acc", "test/loss", "val/acc_best", "epoch", "global_step", "wall_seconds"}
    assert keys <= set(metrics)
    assert metrics["epoch"] == 2 and metrics["global_step"] == 2 * 20  # 1000 images / 50
    assert metrics["test/acc"] > 0.9  # the synthetic classes are easy
    checkpoint = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["hidden_dims"] == [32]


def test_tensorboard_has_curves_hparams_and_figures(trained_run: Path) -> None:
    events = EventAccumulator(str(trained_run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert set(CURVES) | {"test/acc", "test/loss"} <= set(scalars)
    assert [e.step for e in events.Scalars("val/acc")] == [20, 40]  # optimizer steps
    assert [e.step for e in events.Scalars("train/loss")] == [4, 8, 12, 16, 20, 24, 28, 32, 36, 40]
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert events.Scalars("test/acc")[-1].value == pytest.approx(metrics["test/acc"])
    assert {"test/confusion_matrix", "test/mistakes", "model/first_layer"} <= set(
        events.Tags()["images"]
    )
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["model.hidden_dims"].string_value == "[32]"
    assert hparams["model.dropout"].number_value == pytest.approx(0.2)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    names = {m.name.tag for m in experiment.experiment.metric_infos}
    assert {"val/acc_best", "test/acc"} <= names  # values come from those scalars: real ones


def test_bad_config_exits_2_with_one_line(tmp_path: Path, synthetic_mnist: Path) -> None:
    done = run_cli("train", [*SMALL, "model.dropout=1.5"], tmp_path, synthetic_mnist)
    assert done.returncode == 2
    assert done.stderr.strip() == "Error: model.dropout=1.5 is out of range: it must be in [0, 1)."


def test_a_diverged_run_stops_with_advice_and_keeps_no_broken_checkpoint(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    args = [*SMALL, "model.optimizer=sgd", "model.lr=1e8", "model.scheduler=none"]
    done = run_cli("train", args, tmp_path, synthetic_mnist)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "train/loss became nan by step 4" in done.stderr and "model.lr" in done.stderr
    assert not list(tmp_path.glob("outputs/runs/*/checkpoints/last.ckpt"))


def test_runs_started_together_get_their_own_directories(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    import os

    env = os.environ | {"MNIST_DATA_DIR": str(synthetic_mnist)}
    cmd = [sys.executable, "-m", "mnist_lightning.train", *SMALL, "trainer.max_epochs=1"]
    procs = [
        subprocess.Popen(
            cmd, cwd=tmp_path, env=env, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        for _ in range(2)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    runs = run_dirs(tmp_path)
    assert len(runs) == 2
    assert all((run / "metrics.json").is_file() for run in runs)


def test_ckpt_path_starts_a_new_run_from_the_weights(
    trained_run: Path, tmp_path: Path, synthetic_mnist: Path
) -> None:
    last = trained_run / "checkpoints" / "last.ckpt"
    args = [*SMALL, f"ckpt_path={last}", "trainer.max_epochs=1", "model.log_histograms=true"]
    done = run_cli("train", args, tmp_path, synthetic_mnist)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    assert "Starting from the weights" in (run / "train.log").read_text()
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"histograms": 0})
    events.Reload()
    histograms = set(events.Tags()["histograms"])
    assert {"weights/layers.0.weight", "gradients/layers.0.weight"} <= histograms

    other = [*SMALL, f"ckpt_path={last}", "model.hidden_dims=[16]"]
    done = run_cli("train", other, tmp_path / "other", synthetic_mnist)
    assert done.returncode == 2
    assert "different architecture" in done.stderr and "Traceback" not in done.stderr


def test_resume_continues_in_the_same_directory(
    trained_run: Path, tmp_path: Path, synthetic_mnist: Path
) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    config = (run / ".hydra" / "config.yaml").read_text()
    done = run_cli("train", [f"resume={run}", "trainer.max_epochs=3"], tmp_path, synthetic_mnist)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / ".hydra" / "config.yaml").read_text() == config  # the run's own config
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 60
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("val/acc")] == [20, 40, 60]  # one curve, no repeat
    assert not (tmp_path / "outputs").exists()


def test_eval_reproduces_the_recorded_test_accuracy(
    trained_run: Path, tmp_path: Path, synthetic_mnist: Path
) -> None:
    done = run_cli(
        "eval", [f"run_dir={trained_run}", "data_source=files"], tmp_path, synthetic_mnist
    )
    assert done.returncode == 0, done.stderr[-3000:]
    recorded = json.loads((trained_run / "metrics.json").read_text())
    evaluated = json.loads((trained_run / "eval" / "metrics.json").read_text())
    assert evaluated["test/acc"] == pytest.approx(recorded["test/acc"], abs=1e-6)
    assert sum(map(sum, evaluated["confusion_matrix"])) == 300
    assert "true \\ predicted" in done.stdout
    for name in ("confusion_matrix", "mistakes", "first_layer"):
        assert (trained_run / "eval" / f"{name}.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["ckpt_path=/no/such.ckpt"], "does not exist"),
        (["run_dir=/no/such/run"], "no such directory"),
        ([], "exactly one of"),
        (["ckpt_path=x", "device=tpu"], "device='tpu'"),
    ],
)
def test_eval_bad_input(args: list[str], words: str, tmp_path: Path, synthetic_mnist: Path) -> None:
    done = run_cli("eval", args, tmp_path, synthetic_mnist)
    assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr


def draw_digit(path: Path, strokes: list, ellipse: bool = False) -> None:
    """Dark ink on a white 200x200 canvas, like a photo of paper."""
    image = Image.new("L", (200, 200), 255)
    draw = ImageDraw.Draw(image)
    if ellipse:
        draw.ellipse(strokes, outline=0, width=16)
    else:
        draw.line(strokes, fill=0, width=16)
    image.save(path)


@pytest.mark.e2e
def test_end_to_end_on_real_mnist(tmp_path: Path, real_mnist: Path) -> None:
    """The default experiment for one epoch on the real data, then predictions on real
    pictures: test digits saved as PNG and digits drawn like a person would."""
    done = run_cli(
        "train",
        ["trainer.max_epochs=1", "callbacks.progress_bar.refresh_rate=0"],
        tmp_path,
        real_mnist,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test/acc"] >= 0.95
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    raw = real_mnist / "MNIST" / "raw"
    images, labels = (
        read_idx(raw / "t10k-images-idx3-ubyte"),
        read_idx(raw / "t10k-labels-idx1-ubyte"),
    )
    for i in range(20):  # dark on light and 4x larger, as a scan would be
        picture = Image.fromarray(255 - images[i].numpy()).resize((112, 112))
        picture.save(pictures / f"test{i:02d}_label{int(labels[i])}.png")
    draw_digit(pictures / "drawn_label1.png", [(100, 30), (100, 170)])
    draw_digit(pictures / "drawn_label7.png", [(50, 40), (150, 40), (90, 170)])
    draw_digit(pictures / "drawn_label0.png", [(55, 30), (145, 170)], ellipse=True)
    (pictures / "broken.png").write_bytes(b"not an image")
    Image.new("L", (50, 50), 255).save(pictures / "blank.png")

    args = [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", f"inputs={pictures}", "json=true"]
    done = run_cli("predict", [*args, f"grid={tmp_path / 'grid.png'}"], tmp_path, real_mnist)
    assert done.returncode == 1  # some inputs could not be read; the rest were predicted
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 23
    right = [row["digit"] == int(Path(row["file"]).stem[-1]) for row in rows]
    assert sum(right) >= 21, rows
    assert all(
        row["digit"] == int(Path(row["file"]).stem[-1]) for row in rows if "drawn" in row["file"]
    )
    assert "broken.png" in done.stderr and "blank.png" in done.stderr
    assert (tmp_path / "grid.png").stat().st_size > 1000


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_agrees_with_the_checkpoint(
    fmt: str, trained_run: Path, tmp_path: Path, synthetic_mnist: Path
) -> None:
    output = tmp_path / f"model.{fmt}"
    args = [
        f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}",
        f"format={fmt}",
        f"output={output}",
        "data_source=files",
        "check_images=300",
    ]
    done = run_cli("export", args, tmp_path, synthetic_mnist)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "same predictions as the checkpoint on 300 test images" in done.stdout
    images = read_idx(synthetic_mnist / "MNIST" / "raw" / "t10k-images-idx3-ubyte")[:5] / 255
    if fmt == "torchscript":
        logits = torch.jit.load(str(output))(images.float())
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
        logits = torch.from_numpy(session.run(None, {"images": images.float().numpy()})[0])
    assert logits.shape == (5, 10)


def test_export_bad_format(trained_run: Path, tmp_path: Path, synthetic_mnist: Path) -> None:
    args = [f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}", "format=tflite"]
    done = run_cli("export", args, tmp_path, synthetic_mnist)
    assert done.returncode == 2 and "format='tflite'" in done.stderr
