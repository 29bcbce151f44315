"""Resume: a run killed with SIGKILL and resumed ends bit for bit where the uninterrupted run
ends, whether the last checkpoint was written at an epoch end or in the middle of an epoch."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch
from conftest import SMALL, run_cli, run_dirs

from mnist_lightning.checkpoint import check_resumable
from mnist_lightning.errors import CheckpointError
from mnist_lightning.model import MNISTClassifier

TESTS = Path(__file__).resolve().parent
# 1 000 training images in batches of 10, one step per call: 100 optimizer steps per epoch.
EXACT = [
    *SMALL,
    "trainer.max_epochs=3",
    "trainer.deterministic=true",
    "data.batch_size=10",
    "model.dropout=0.3",
]
# The default periodic checkpoint (train_time_interval), every 0.1 s instead of 5 minutes.
EVERY_TENTH_OF_A_SECOND = ["callbacks.periodic_checkpoint.train_time_interval.seconds=0.1"]


KILLABLE = ["+callbacks.kill._target_=kill_at.KillAt"]


def train(
    cwd: Path,
    data: Path,
    args: list[str],
    kill_step: int | None = None,
    kill: str = "KILL",
    step_seconds: float = 0.0,
) -> Path:
    env = {"PYTHONPATH": str(TESTS) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if kill_step:
        env |= {"KILL_AT_STEP": str(kill_step), "KILL_SIGNAL": kill}
    if step_seconds:
        env |= {"STEP_SECONDS": str(step_seconds)}
    done = run_cli("train", args, cwd, data, env=env)
    expected = {"KILL": -signal.SIGKILL, "INT": 130, "TERM": 130}[kill] if kill_step else 0
    assert done.returncode == expected, done.stderr[-3000:]
    if kill_step and kill != "KILL":
        assert f"mnist-train resume={run_dirs(cwd)[-1]}" in done.stderr
    return run_dirs(cwd)[-1]


def final_state(run: Path) -> tuple[dict, dict]:
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    metrics = json.loads((run / "metrics.json").read_text())
    keep = ("test/acc", "test/loss", "val/acc_best", "epoch", "global_step")
    return checkpoint["state_dict"], {k: metrics[k] for k in keep}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kill", "kill_step", "resumed_from"),
    [("KILL", 150, 100), ("INT", 143, 143)],
    ids=["sigkill-epoch-boundary", "ctrl-c"],
)
def test_killed_and_resumed_equals_uninterrupted(
    tmp_path: Path, synthetic_mnist: Path, kill: str, kill_step: int, resumed_from: int
) -> None:
    """SIGKILL loses the steps since the last epoch-end checkpoint; Ctrl-C saves where it
    stopped, mid-epoch. (A SIGKILL after a mid-epoch checkpoint: the next test.)"""
    periodic = ["~callbacks.periodic_checkpoint"]
    reference = train(tmp_path / "a", synthetic_mnist, [*EXACT, *periodic, *KILLABLE])
    killed = train(tmp_path / "b", synthetic_mnist, [*EXACT, *periodic, *KILLABLE], kill_step, kill)
    assert not (killed / "metrics.json").exists()
    last = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == resumed_from

    assert train(tmp_path / "b", synthetic_mnist, [f"resume={killed}", *KILLABLE]) == killed
    assert run_dirs(tmp_path / "b") == [killed]  # same directory, no new run

    (weights_a, metrics_a), (weights_b, metrics_b) = final_state(reference), final_state(killed)
    assert metrics_a == metrics_b
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


@pytest.mark.slow
def test_the_time_based_checkpoint_writes_mid_epoch_and_resumes_bit_for_bit(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """callbacks.periodic_checkpoint (Lightning's ModelCheckpoint with train_time_interval,
    5 minutes by default) really writes last.ckpt within an epoch: at 0.1 s, with every step
    slowed to at least 10 ms, a SIGKILL at step 130 loses at most the ~10 steps of one
    interval, and the resumed run ends where the uninterrupted one does."""
    args = [*EXACT, *EVERY_TENTH_OF_A_SECOND, *KILLABLE]
    reference = train(tmp_path / "a", synthetic_mnist, args)
    killed = train(tmp_path / "b", synthetic_mnist, args, kill_step=130, step_seconds=0.01)
    step = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 130 - 11 <= step < 130 and step % 100  # mid-epoch (epochs are 100 steps)

    assert train(tmp_path / "b", synthetic_mnist, [f"resume={killed}", *KILLABLE]) == killed
    (weights_a, metrics_a), (weights_b, metrics_b) = final_state(reference), final_state(killed)
    assert metrics_a == metrics_b
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_resume_refuses_overrides_that_change_the_run(
    trained_run: Path, tmp_path: Path, synthetic_mnist: Path
) -> None:
    before = {p: p.stat().st_mtime_ns for p in trained_run.rglob("*")}
    done = run_cli("train", [f"resume={trained_run}", "model.lr=0.5"], tmp_path, synthetic_mnist)
    assert done.returncode == 2
    assert "model.lr" in done.stderr and "Traceback" not in done.stderr
    assert {p: p.stat().st_mtime_ns for p in trained_run.rglob("*")} == before


@pytest.mark.parametrize("damage", ["missing", "no-config", "no-checkpoint", "corrupt"])
def test_bad_resume_targets_get_one_clear_error(
    damage: str, trained_run: Path, tmp_path: Path, synthetic_mnist: Path
) -> None:
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(trained_run, run)
    if damage == "missing":
        run = tmp_path / "nowhere"
    elif damage == "no-config":
        shutil.rmtree(run / ".hydra")
    elif damage == "no-checkpoint":
        (run / "checkpoints" / "last.ckpt").unlink()
    else:
        last = run / "checkpoints" / "last.ckpt"
        last.write_bytes(last.read_bytes()[:1000])
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")} if run.exists() else {}
    done = run_cli("train", [f"resume={run}"], tmp_path, synthetic_mnist)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert str(run) in done.stderr
    after = {p: p.stat().st_mtime_ns for p in run.rglob("*")} if run.exists() else {}
    assert after == before
    assert not (tmp_path / "outputs").exists() or damage == "corrupt"


def test_a_full_disk_stops_the_run_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """Epoch 0's checkpoints are written; at the end of epoch 1 the disk is full: one clear
    message, exit 2, last.ckpt still epoch 0's, no temporary files, no metrics.json."""
    args = [*SMALL, "trainer.max_epochs=3", "+callbacks.disk_full._target_=disk_full.DiskFullAt"]
    env = {"PYTHONPATH": str(TESTS), "DISK_FULL_AT_EPOCH": "1"}
    done = run_cli("train", args, tmp_path, synthetic_mnist, env=env)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    (run,) = run_dirs(tmp_path)
    assert "No space left on device" in done.stderr and f"mnist-train resume={run}" in done.stderr
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0 and last["global_step"] == 20
    assert not list(run.rglob("*.tmp")) and not (run / "metrics.json").exists()


def test_a_checkpoint_whose_optimizer_groups_differ_is_refused_before_training() -> None:
    """A run whose optimizer grouped the parameters differently (as older versions did with
    weight_decay=0) cannot be continued; the message offers a new run from its weights."""
    model = MNISTClassifier(hidden_dims=[8], weight_decay=0.0)  # one group of 4 tensors
    two_groups = MNISTClassifier(hidden_dims=[8], weight_decay=0.01).build_optimizer()
    checkpoint = {"state_dict": model.state_dict(), "optimizer_states": [two_groups.state_dict()]}
    words = r"groups of \[2, 2\] tensors.*\[4\].*mnist-train ckpt_path=old/last.ckpt"
    with pytest.raises(CheckpointError, match=words):
        check_resumable(model, checkpoint, "old/last.ckpt")
    checkpoint["optimizer_states"] = [model.build_optimizer().state_dict()]
    check_resumable(model, checkpoint, "old/last.ckpt")  # its own layout fits
