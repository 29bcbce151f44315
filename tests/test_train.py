"""mnist-train (and mnist-eval, mnist-predict, mnist-export on its results) as a user runs them:
real subprocesses, on the synthetic MNIST, and end to end on the real one."""

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from mnist_lightning.data.datasets import raw_dir, read_idx
from tests.helpers.commands import run_cli, run_dirs, run_train
from tests.helpers.synthetic import STEPS_PER_EPOCH, SYNTHETIC_TEST

METRIC_KEYS = {"test/acc", "test/loss", "val/acc_best", "epoch", "global_step", "wall_seconds"}
SCALARS = {
    "train/loss",
    "train/acc",
    "val/loss",
    "val/acc",
    "val/acc_best",
    "test/loss",
    "test/acc",
}
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}")

# Every test runs a command as a subprocess (test_commands_in_process.py: the fast tier's).
pytestmark = pytest.mark.slow


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def events_of(run: Path, **size_guidance: int) -> EventAccumulator:
    events = EventAccumulator(str(run / "tensorboard"), size_guidance=size_guidance)
    events.Reload()
    return events


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line_error(done: subprocess.CompletedProcess) -> str:
    """The single line a failed command prints, checked to be one line without a traceback."""
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-3000:]
    return lines[0]


# (a) A run writes the documented layout -------------------------------------------------------


def test_a_run_writes_the_documented_layout(trained_run: Path) -> None:
    assert trained_run.parent.name == "runs" and trained_run.parent.parent.name == "outputs"
    assert STAMP.match(trained_run.name), trained_run.name
    config = (trained_run / ".hydra" / "config.yaml").read_text()
    assert "hidden_dims:\n  - 64\n" in config and "source: files" in config
    assert "1000 train, 200 val, 300 test images" in (trained_run / "train.log").read_text()

    checkpoints = sorted(p.name for p in (trained_run / "checkpoints").iterdir())
    best = [name for name in checkpoints if name.startswith("best-")]
    assert len(best) == 1 and best[0].endswith(".ckpt")
    assert checkpoints == sorted(["last.ckpt", *best])  # and no stray temporary files
    assert list((trained_run / "tensorboard").glob("events.out.tfevents.*"))

    metrics = metrics_of(trained_run)
    assert set(metrics) >= METRIC_KEYS
    assert metrics["epoch"] == 2 and metrics["global_step"] == 2 * STEPS_PER_EPOCH
    assert metrics["test/acc"] >= 0.9  # the synthetic classes are easy to learn
    assert 0 <= metrics["test/loss"] < 1 and 0.9 <= metrics["val/acc_best"] <= 1
    assert isinstance(metrics["wall_seconds"], int | float) and metrics["wall_seconds"] >= 0
    assert Path(metrics["best_checkpoint"]).name == best[0]


def test_the_last_checkpoint_loads_with_weights_only(trained_run: Path) -> None:
    checkpoint = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["hidden_dims"] == [64]
    assert checkpoint["global_step"] == 2 * STEPS_PER_EPOCH
    assert checkpoint["state_dict"]["net.layers.0.weight"].shape == (64, 784)
    best = next((trained_run / "checkpoints").glob("best-*.ckpt"))
    assert torch.load(best, weights_only=True)["hyper_parameters"]["hidden_dims"] == [64]


def test_tensorboard_has_the_curves_and_the_hparams(trained_run: Path) -> None:
    events = events_of(trained_run, images=0)
    assert set(events.Tags()["scalars"]) >= SCALARS
    # Lightning's x-axis: a point logged after optimizer step k (1, 2, ...) is at step k - 1.
    steps = [e.step for e in events.Scalars("val/acc")]
    assert steps == [STEPS_PER_EPOCH - 1, 2 * STEPS_PER_EPOCH - 1]
    # train/* once per 4-step window (trainer.log_every_n_steps=4 in SMALL), on that axis too.
    assert [e.step for e in events.Scalars("train/loss")] == list(range(3, 40, 4))
    metrics = metrics_of(trained_run)
    assert events.Scalars("test/acc")[-1].value == pytest.approx(metrics["test/acc"])
    assert events.Scalars("val/acc_best")[-1].value == pytest.approx(metrics["val/acc_best"])
    assert max(e.value for e in events.Scalars("val/acc")) == pytest.approx(metrics["val/acc_best"])
    losses = [e.value for e in events.Scalars("train/loss")]
    assert losses[-1] < losses[0]  # it learned
    assert {"test/confusion_matrix", "test/mistakes", "model/first_layer"} <= set(
        events.Tags()["images"]
    )

    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert {"model.dropout", "model.lr", "model.hidden_dims", "data.batch_size", "seed"} <= set(
        hparams
    )
    assert hparams["model.dropout"].number_value == pytest.approx(0.2)
    assert hparams["model.hidden_dims"].string_value == "[64]"
    assert hparams["data.batch_size"].number_value == 50
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    names = {m.name.tag for m in experiment.experiment.metric_infos}
    assert {"val/acc_best", "test/acc"} <= names  # their values are those real scalars


# (b) A bad config is one line and exit status 2 ------------------------------------------------


def test_a_bad_config_exits_2_with_one_line_naming_the_key(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    done = run_train(tmp_path, synthetic_mnist, "model.dropout=1.5")
    assert done.returncode == 2
    line = one_line_error(done)
    assert "model.dropout=1.5" in line and "[0, 1)" in line
    assert not list(tmp_path.glob("outputs/runs/*/checkpoints"))


def test_a_trainer_flag_lightning_refuses_in_fit_is_one_line_too(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """Lightning checks some flags against the data only inside fit (here: validating every
    500 steps in a 20-step epoch); its message comes through as one line, exit status 2."""
    done = run_train(tmp_path, synthetic_mnist, "trainer.val_check_interval=500")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]  # after Lightning's own start-up lines
    assert last.startswith("Error: The trainer config cannot be used: `val_check_interval` (500)")


# (c) Runs started together get their own directories -----------------------------------------


def test_runs_started_at_the_same_moment_get_different_directories(
    concurrent_runs: tuple[Path, list[subprocess.CompletedProcess]],
) -> None:
    cwd, done = concurrent_runs
    assert [p.returncode for p in done] == [0, 0], [p.stderr[-2000:] for p in done]
    runs = run_dirs(cwd)
    assert len(runs) == 2 and runs[0] != runs[1]
    for run in runs:
        assert metrics_of(run)["global_step"] == 2 * STEPS_PER_EPOCH
        assert (run / "checkpoints" / "last.ckpt").is_file()
        assert len(list((run / "checkpoints").glob("best-*.ckpt"))) == 1
    # Each process reported its own directory.
    reported = sorted(re.search(r"run directory\s+(\S+)", p.stdout)[1] for p in done)
    assert reported == sorted(str(run) for run in runs)


# (d) ckpt_path= starts a new run from a checkpoint's weights ---------------------------------


def test_ckpt_path_starts_a_new_run_from_the_weights(
    trained_run: Path, tmp_path: Path, synthetic_mnist: Path
) -> None:
    last = trained_run / "checkpoints" / "last.ckpt"
    digest = sha256_of(last)
    # A learning rate so small that the test accuracy shows where the weights came from:
    # the trained ones score >= 0.9, a fresh network about 0.1.
    done = run_train(
        tmp_path,
        synthetic_mnist,
        f"ckpt_path={last}",
        "model.hidden_dims=[64]",
        "model.lr=1e-12",
        "model.scheduler=none",
        "trainer.max_epochs=1",
        "model.log_histograms=true",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    assert run != trained_run
    assert f"Starting from the weights of {last}" in (run / "train.log").read_text()
    metrics = metrics_of(run)
    assert metrics["test/acc"] >= 0.9
    assert metrics["global_step"] == STEPS_PER_EPOCH  # a new run: its own step count
    assert sha256_of(last) == digest  # the source run is untouched
    histograms = set(events_of(run, histograms=0).Tags()["histograms"])
    assert {"weights/layers.0.weight", "gradients/layers.0.weight"} <= histograms


def test_ckpt_path_of_another_architecture_is_refused(
    trained_run: Path, tmp_path: Path, synthetic_mnist: Path
) -> None:
    last = trained_run / "checkpoints" / "last.ckpt"
    done = run_train(tmp_path, synthetic_mnist, f"ckpt_path={last}", "model.hidden_dims=[32]")
    assert done.returncode == 2
    line = one_line_error(done)
    assert "architecture" in line and str(last) in line
    assert not list(tmp_path.glob("outputs/runs/*/checkpoints"))


# More of mnist-train: divergence, resume of a finished run ------------------------------------


@pytest.mark.parametrize(("window", "step"), [(4, 4), (50, 20)])
def test_a_diverged_run_stops_with_advice_and_keeps_no_broken_checkpoint(
    window: int, step: int, tmp_path: Path, synthetic_mnist: Path
) -> None:
    """Whatever the logging window: with 4 steps the first window's check stops it; with 50
    (longer than the 20-step epoch) the checkpoint at the end of epoch 0 refuses to save it."""
    args = ["model.optimizer=sgd", "model.lr=1e8", "model.scheduler=none"]
    done = run_train(tmp_path, synthetic_mnist, *args, f"trainer.log_every_n_steps={window}")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]  # after Lightning's own start-up lines
    assert last.startswith(f"Error: train/loss became nan by step {step} ") and "model.lr" in last
    assert not list(tmp_path.glob("outputs/runs/*/checkpoints/*.ckpt"))


def test_a_run_that_learns_nothing_is_not_reported_as_a_result(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """Five epochs (100 steps) at a learning rate too small to move the weights: the loss is
    finite, the accuracy stays at chance, and the run ends as a failure saying so."""
    args = ["model.lr=1e-12", "model.scheduler=none", "trainer.max_epochs=5"]
    done = run_train(tmp_path, synthetic_mnist, *args)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: train/acc ended at ") and "chance level" in last
    assert not list(tmp_path.glob("outputs/runs/*/metrics.json"))


def test_resume_of_a_finished_run_continues_in_its_directory(
    trained_run: Path, tmp_path: Path, synthetic_mnist: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    config = (run / ".hydra" / "config.yaml").read_text()
    done = run_cli("train", [f"resume={run}", "trainer.max_epochs=3"], tmp_path, synthetic_mnist)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / ".hydra" / "config.yaml").read_text() == config  # the run's own config
    assert metrics_of(run)["global_step"] == 3 * STEPS_PER_EPOCH
    steps = [e.step for e in events_of(run).Scalars("val/acc")]
    # One curve, nothing repeated; Lightning logs an epoch's validation at the step index of
    # its last optimizer step (global_step - 1).
    assert steps == [STEPS_PER_EPOCH * k - 1 for k in (1, 2, 3)]
    assert not (tmp_path / "outputs").exists()


# mnist-eval and mnist-export on the trained run ----------------------------------------------


def test_eval_reproduces_the_recorded_test_accuracy(
    trained_run: Path, tmp_path: Path, synthetic_mnist: Path
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    done = run_cli("eval", [f"run_dir={run}", "data_source=files"], tmp_path, synthetic_mnist)
    assert done.returncode == 0, done.stderr[-3000:]
    evaluated = json.loads((run / "eval" / "metrics.json").read_text())
    assert evaluated["test/acc"] == pytest.approx(metrics_of(run)["test/acc"], abs=1e-6)
    assert sum(map(sum, evaluated["confusion_matrix"])) == SYNTHETIC_TEST
    assert "true \\ predicted" in done.stdout
    for name in ("confusion_matrix", "mistakes", "first_layer"):
        assert (run / "eval" / f"{name}.png").stat().st_size > 1000


def test_the_progress_bar_can_be_switched_off(tmp_path: Path, synthetic_mnist: Path) -> None:
    """trainer.enable_progress_bar=false, Lightning's own switch, drops the bar callback
    (Lightning refuses the two together) instead of failing."""
    done = run_train(tmp_path, synthetic_mnist, "trainer.enable_progress_bar=false")
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_compiled_network_trains_and_its_checkpoints_load_anywhere(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """model.compile=true: torch.compile for training only; the checkpoint's keys are those of
    the plain network, so mnist-eval (uncompiled) reproduces the recorded test accuracy."""
    done = run_train(tmp_path, synthetic_mnist, "model.compile=true", "trainer.max_epochs=1")
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert "net.layers.0.weight" in state and not any("_orig_mod" in k for k in state)
    done = run_cli("eval", [f"run_dir={run}", "data_source=files"], tmp_path, synthetic_mnist)
    assert done.returncode == 0, done.stderr[-3000:]
    evaluated = json.loads((run / "eval" / "metrics.json").read_text())
    # Compiled kernels may round differently: allow one of the 300 test images to flip.
    assert evaluated["test/acc"] == pytest.approx(metrics_of(run)["test/acc"], abs=1 / 300 + 1e-6)


# One case as a subprocess; the others are in-process in test_commands_in_process.py.
@pytest.mark.parametrize(
    ("args", "words"),
    [(["run_dir=/no/such/run"], "no such directory")],
    ids=["missing-run-dir"],
)
def test_eval_bad_input(args: list[str], words: str, tmp_path: Path, synthetic_mnist: Path) -> None:
    done = run_cli("eval", args, tmp_path, synthetic_mnist)
    assert done.returncode == 2
    assert words in one_line_error(done)


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
        f"check_images={SYNTHETIC_TEST}",
    ]
    done = run_cli("export", args, tmp_path, synthetic_mnist)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"same predictions as the checkpoint on {SYNTHETIC_TEST} test images" in done.stdout
    images = read_idx(raw_dir(synthetic_mnist) / "t10k-images-idx3-ubyte")[:5].float() / 255
    if fmt == "torchscript":
        logits = torch.jit.load(str(output))(images)
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
        logits = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    assert logits.shape == (5, 10)
    labels = read_idx(raw_dir(synthetic_mnist) / "t10k-labels-idx1-ubyte")[:5].long()
    assert torch.equal(logits.argmax(1), labels)  # the synthetic digits are learned perfectly


# (e) End to end on the real MNIST ------------------------------------------------------------


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory, real_mnist_dir: Path) -> Path:
    """One epoch of the default experiment on the real MNIST (data.source=auto)."""
    cwd = tmp_path_factory.mktemp("real")
    done = run_train(
        cwd,
        real_mnist_dir,
        "trainer.max_epochs=1",
        "callbacks.progress_bar.refresh_rate=0",
        synthetic=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = run_dirs(cwd)
    return run


@pytest.mark.e2e
def test_end_to_end_on_real_mnist(real_run: Path) -> None:
    metrics = metrics_of(real_run)
    assert metrics["test/acc"] >= 0.95
    assert metrics["epoch"] == 1
    assert (real_run / "checkpoints" / "last.ckpt").is_file()
    assert list((real_run / "tensorboard").glob("events.out.tfevents.*"))
    config = (real_run / ".hydra" / "config.yaml").read_text()
    assert "hidden_dims:\n  - 512\n  - 256\n" in config and "source: auto" in config
    log = (real_run / "train.log").read_text()
    assert "55000 train, 5000 val, 10000 test images" in log


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
def test_predict_reads_real_pictures(real_run: Path, tmp_path: Path, real_mnist_dir: Path) -> None:
    """Test digits saved as dark-on-light PNGs 4x larger, and digits drawn as a person would."""
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    raw = raw_dir(real_mnist_dir)
    images = read_idx(raw / "t10k-images-idx3-ubyte")
    labels = read_idx(raw / "t10k-labels-idx1-ubyte")
    for i in range(20):
        picture = Image.fromarray(255 - images[i].numpy()).resize((112, 112))
        picture.save(pictures / f"test{i:02d}_label{int(labels[i])}.png")
    draw_digit(pictures / "drawn_label1.png", [(100, 30), (100, 170)])
    draw_digit(pictures / "drawn_label7.png", [(50, 40), (150, 40), (90, 170)])
    draw_digit(pictures / "drawn_label0.png", [(55, 30), (145, 170)], ellipse=True)
    (pictures / "broken.png").write_bytes(b"not an image")
    Image.new("L", (50, 50), 255).save(pictures / "blank.png")

    last = real_run / "checkpoints" / "last.ckpt"
    args = [f"ckpt_path={last}", f"inputs={pictures}", "json=true", f"grid={tmp_path / 'g.png'}"]
    done = run_cli("predict", args, tmp_path, real_mnist_dir)
    assert done.returncode == 1  # some inputs could not be read; the rest were predicted
    assert "Traceback" not in done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 23
    right = [row["digit"] == int(Path(row["file"]).stem[-1]) for row in rows]
    assert sum(right) >= 21, rows
    drawn = [row for row in rows if "drawn" in row["file"]]
    assert all(row["digit"] == int(Path(row["file"]).stem[-1]) for row in drawn), drawn
    assert "broken.png" in done.stderr and "blank.png" in done.stderr
    assert (tmp_path / "g.png").stat().st_size > 1000
