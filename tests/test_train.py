"""Real processes pin the console contract (exit status, one line, nothing changed) and runs side
by side; training outcomes, ONNX and the real MNIST run the console entries in this process."""

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from PIL import Image

from mnist_lightning.data.datasets import raw_dir, read_idx
from mnist_lightning.files import read_json
from mnist_lightning.run.trainer import CHATTER
from tests.helpers.commands import ROOT, TRAINED_RUN, run_cli, run_dirs
from tests.helpers.hydra_jobs import run_console
from tests.helpers.synthetic import SMALL, STEPS_PER_EPOCH, merged
from tests.helpers.worlds import last_ckpt, make_world, snapshot

pytestmark = pytest.mark.slow  # every test starts a process or trains


# One refusal of each command as a process ({w}: the world); the others: test_bad_input.py.
REFUSED = [
    ("train", [*SMALL, "model.dropout=1.5"], "model.dropout=1.5 is out of range"),
    ("eval", ["run_dir={w}/no/such/run"], "no such directory"),
    ("predict", ["ckpt_path={ckpt}", "inputs={w}/data"], "holds no pictures"),
    ("export", ["ckpt_path={ckpt}", "format=tflite"], "format='tflite' is not one of"),
]


@pytest.mark.parametrize(("command", "args", "words"), REFUSED)
def test_a_refused_command_exits_with_one_line_and_changes_nothing(
    command: str, args: list[str], words: str, trained_run: Path, tmp_path: Path
) -> None:
    w = make_world(tmp_path, trained_run)
    before = snapshot(w)
    done = run_cli(command, [arg.format(w=w, ckpt=last_ckpt(w)) for arg in args], w, w / "data")
    assert done.returncode == 2 and "Traceback" not in done.stderr + done.stdout, done.stderr
    assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert snapshot(w) == before  # nothing changed, nothing added


def test_help_into_a_pipe_its_reader_closed_ends_quietly(tmp_path: Path) -> None:
    """`mnist-train --help | head -1`."""
    read, write = os.pipe()
    os.close(read)
    command = [sys.executable, "-m", "mnist_lightning.cli.train", "--help"]
    done = subprocess.run(command, stdout=write, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    os.close(write)
    assert (done.returncode, done.stderr) == (1, "")


def test_runs_started_at_the_same_moment_get_their_own_directories_and_print_only_theirs(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """Output to pipes: the progress bar, left as configured, is shown on a terminal only."""
    args = merged(SMALL, [*TRAINED_RUN, "callbacks.progress_bar.refresh_rate=1"])
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda _: run_cli("train", args, tmp_path, synthetic_mnist), [0, 0]))
    assert [p.returncode for p in done] == [0, 0], [p.stderr[-2000:] for p in done]
    runs = run_dirs(tmp_path)
    steps = [read_json(r / "metrics.json")["global_step"] for r in runs]
    assert steps == [2 * STEPS_PER_EPOCH] * 2
    reported = sorted(re.search(r"run directory\s+(\S+)", p.stdout)[1] for p in done)
    assert reported == sorted(str(run) for run in runs)  # each process reported its own
    for output in (p.stdout + p.stderr for p in done):  # nothing meant for another setting
        assert "MNIST on cpu: " in output and "Total FLOPs: " in output and "test/acc" in output
        for noise in (*CHATTER, "srun", "Total FLOPs: 0", "\x1b[", "\r"):  # a colour, a bar
            assert noise not in output, output


LR_HUGE = "model.optimizer=sgd model.lr=1e8 model.scheduler=none"
# overrides, words of the one line that stops the run, and what of the run stays: None, no
# directory; False, its train.log (with the line) but no checkpoint; True, checkpoints too
STOPPED = [
    # diverged, caught by the check of the first 4-step window
    (f"{LR_HUGE} trainer.log_every_n_steps=4", ["loss became nan by step 4 ", "model.lr"], False),
    # diverged, caught by the checkpoint at the end of epoch 0 (a 50-step window)
    (f"{LR_HUGE} trainer.log_every_n_steps=50", ["loss became nan by step 20 ", "model.lr"], False),
    # learned nothing in 100 steps, the fewest it judges (an epoch of batches of 10)
    (
        "model.lr=1e-12 model.scheduler=none data.batch_size=10 trainer.max_epochs=1",
        ["train/acc ended at ", "chance level"],
        True,
    ),
    # a metric to monitor that the model does not log, which Lightning finds after an epoch
    (
        "+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping "
        "+callbacks.stop.monitor=val/ac",
        ["The trainer config cannot be used: Early stopping conditioned on metric `val/ac`"],
        None,
    ),
]


@pytest.mark.parametrize(("overrides", "words", "stays"), STOPPED)
def test_a_run_stopped_in_training_says_why_in_one_line_and_reports_no_result(
    overrides: str, words: list[str], stays: bool | None, tmp_path: Path, synthetic_mnist: Path
) -> None:
    env = {"MNIST_DATA_DIR": str(synthetic_mnist)}
    done = run_console("train", [*SMALL, *overrides.split()], tmp_path, env, 600)
    assert done.returncode == 2 and "Traceback" not in done.stderr + done.stdout, done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: ") and all(w in error for w in words), error
    runs = run_dirs(tmp_path)
    assert len(runs) == (stays is not None) and not list(tmp_path.rglob("metrics.json"))
    for run in runs:  # the failed run's log says why
        assert error in (run / "train.log").read_text()
        assert stays or not list((run / "checkpoints").glob("*.ckpt"))


def test_ckpt_path_starts_a_new_run_from_the_weights_which_compiled_load_anywhere(
    trained_run: Path, tmp_path: Path, synthetic_mnist: Path
) -> None:
    """A learning rate so small that the test accuracy shows where the weights came from (fresh:
    about 0.1); model.compile=true compiles for training only."""
    last = tmp_path / "start.ckpt"  # named from where the command runs, which Hydra leaves
    weights = shutil.copy(trained_run / "checkpoints" / "last.ckpt", last).read_bytes()
    args = ["ckpt_path=start.ckpt", "hydra.job.chdir=true", "model.hidden_dims=[64]"]
    args += ["model.lr=1e-12", "model.scheduler=none", "trainer.max_epochs=1"]
    args += ["model.log_histograms=true", "model.compile=true"]
    env = {"MNIST_DATA_DIR": str(synthetic_mnist)}
    done = run_console("train", [*SMALL, *args], tmp_path, env, 600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = run_dirs(tmp_path)
    assert f"Starting from the weights of {last}" in (run / "train.log").read_text()
    metrics = read_json(run / "metrics.json")
    assert metrics["test/acc"] >= 0.9 and metrics["global_step"] == STEPS_PER_EPOCH
    assert last.read_bytes() == weights  # the source is untouched
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    histograms = EventAccumulator(str(run / "tensorboard")).Reload().Tags()["histograms"]
    assert {"weights/layers.0.weight", "gradients/layers.0.weight"} <= set(histograms)
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert "net.layers.0.weight" in state and not any("_orig_mod" in k for k in state)
    done = run_console("eval", [f"run_dir={run}", "data_source=files"], tmp_path, env)
    assert done.returncode == 0, done.stderr[-3000:]
    evaluated = json.loads((run / "eval" / "metrics.json").read_text())
    # Compiled kernels may round differently: one of the 300 test images may flip.
    assert evaluated["test/acc"] == pytest.approx(metrics["test/acc"], abs=1 / 300 + 1e-6)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory, real_mnist_dir: Path) -> Path:
    cwd = tmp_path_factory.mktemp("real")
    overrides = ["trainer.max_epochs=1", "callbacks.progress_bar.refresh_rate=0"]
    done = run_console("train", overrides, cwd, {"MNIST_DATA_DIR": str(real_mnist_dir)}, 600)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = run_dirs(cwd)
    return run


@pytest.mark.e2e
def test_end_to_end_on_real_mnist(real_run: Path) -> None:
    metrics = read_json(real_run / "metrics.json")
    assert metrics["test/acc"] >= 0.95 and metrics["epoch"] == 1  # (the layout: on synthetic data)
    config = (real_run / ".hydra" / "config.yaml").read_text()
    assert "hidden_dims:\n  - 512\n  - 256\n" in config and "source: auto" in config
    assert "55000 train, 5000 val, 10000 test images" in (real_run / "train.log").read_text()


@pytest.mark.e2e
def test_predict_reads_real_pictures(real_run: Path, tmp_path: Path, real_mnist_dir: Path) -> None:
    """Test digits saved as dark-on-light PNGs 4x larger, and README's pen-drawn digits."""
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    raw = raw_dir(real_mnist_dir)
    images = read_idx(raw / "t10k-images-idx3-ubyte")
    labels = read_idx(raw / "t10k-labels-idx1-ubyte")
    for i in range(20):
        picture = Image.fromarray(255 - images[i].numpy()).resize((112, 112))
        picture.save(pictures / f"test{i:02d}_label{int(labels[i])}.png")
    last, drawn = real_run / "checkpoints" / "last.ckpt", ROOT / "docs" / "images" / "digits"
    args = [f"ckpt_path={last}", f"inputs=[{pictures},{drawn}]", "json=true", "grid=g.png"]
    done = run_console("predict", args, tmp_path, {"MNIST_DATA_DIR": str(real_mnist_dir)})
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 20 + len(list(drawn.iterdir()))
    assert sum(row["digit"] == int(Path(row["file"]).stem[-1]) for row in rows) >= len(rows) - 2
    pen = [row for row in rows if "drawn" in row["file"]]
    assert all(row["digit"] == int(Path(row["file"]).stem[-1]) for row in pen), pen
    assert (tmp_path / "g.png").stat().st_size > 1000
