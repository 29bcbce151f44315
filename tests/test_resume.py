"""Resume: a run killed (SIGKILL, Ctrl-C, SIGTERM: real processes) and resumed ends bit for bit
where the uninterrupted run ends; damaged runs and checkpoints are refused in one line."""

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from mnist_lightning.errors import CheckpointError, UserError
from mnist_lightning.model.classifier import MNISTClassifier
from mnist_lightning.run.resume import GracefulInterrupt, reached_limit
from mnist_lightning.run.trust import check_resumable
from tests.helpers.commands import run_cli, run_dirs
from tests.helpers.hydra_jobs import run_console
from tests.helpers.synthetic import SMALL
from tests.helpers.tiers import one_of_each_kind
from tests.helpers.worlds import snapshot

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
    kill_in: str = "training",
) -> Path:
    env = {"PYTHONPATH": str(TESTS) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if kill_step:
        env |= {"KILL_AT_STEP": str(kill_step), "KILL_SIGNAL": kill, "KILL_IN": kill_in}
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


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, synthetic_mnist: Path) -> Path:
    """The run left alone, which every killed and resumed one must equal (checkpoints are
    written when they are: saving one changes nothing of the training)."""
    cwd = tmp_path_factory.mktemp("reference")
    return train(cwd, synthetic_mnist, [*EXACT, "~callbacks.periodic_checkpoint", *KILLABLE])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kill", "kill_step", "resumed_from", "kill_in"),
    [
        ("KILL", 150, 100, "training"),
        ("INT", 143, 144, "training"),  # sent from a later hook of step 143: after 144
        ("TERM", 143, 200, "validation"),
        ("TERM", 1, 300, "test"),
    ],
    ids=["sigkill-epoch-boundary", "ctrl-c", "sigterm-mid-validation", "sigterm-in-test"],
)
def test_killed_and_resumed_equals_uninterrupted(
    reference: Path,
    tmp_path: Path,
    synthetic_mnist: Path,
    kill: str,
    kill_step: int,
    resumed_from: int,
    kill_in: str,
) -> None:
    """SIGKILL loses the steps since the last epoch-end checkpoint; Ctrl-C saves where it
    stopped, mid-epoch; SIGTERM during a validation lets it finish and stops at the end of
    that epoch (step 200's validation: step 200); SIGTERM during the test after training
    leaves last.ckpt as training ended. (SIGKILL after a mid-epoch checkpoint: the next test.)"""
    args = [*EXACT, "~callbacks.periodic_checkpoint", *KILLABLE]
    killed = train(tmp_path / "b", synthetic_mnist, args, kill_step, kill, kill_in=kill_in)
    assert not (killed / "metrics.json").exists()
    last = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == resumed_from
    stopped = f"Training stopped; {killed / 'checkpoints' / 'last.ckpt'} holds the state"
    assert (stopped in (killed / "train.log").read_text()) == (kill != "KILL")  # its story

    assert train(tmp_path / "b", synthetic_mnist, [f"resume={killed}", *KILLABLE]) == killed
    assert run_dirs(tmp_path / "b") == [killed]  # same directory, no new run
    assert f"Resuming {killed} from" in (killed / "train.log").read_text()

    (weights_a, metrics_a), (weights_b, metrics_b) = final_state(reference), final_state(killed)
    assert metrics_a == metrics_b
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


@pytest.mark.slow
def test_the_time_based_checkpoint_writes_mid_epoch_and_resumes_bit_for_bit(
    reference: Path, tmp_path: Path, synthetic_mnist: Path
) -> None:
    """callbacks.periodic_checkpoint (Lightning's ModelCheckpoint with train_time_interval,
    5 minutes by default) really writes last.ckpt within an epoch: at 0.1 s, with every step
    slowed to at least 10 ms, a SIGKILL at step 130 loses at most the ~10 steps of one
    interval, and the resumed run ends where the uninterrupted one does."""
    args = [*EXACT, *EVERY_TENTH_OF_A_SECOND, *KILLABLE]
    killed = train(tmp_path / "b", synthetic_mnist, args, kill_step=130, step_seconds=0.01)
    step = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 130 - 11 <= step < 130 and step % 100  # mid-epoch (epochs are 100 steps)

    assert train(tmp_path / "b", synthetic_mnist, [f"resume={killed}", *KILLABLE]) == killed
    (weights_a, metrics_a), (weights_b, metrics_b) = final_state(reference), final_state(killed)
    assert metrics_a == metrics_b
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def resume_in_process(
    run: Path, tmp_path: Path, data: Path, *args: str
) -> subprocess.CompletedProcess:
    env = {"MNIST_DATA_DIR": str(data)}
    return run_console("train", [f"resume={run}", *args], tmp_path, env, timeout_s=600)


@pytest.mark.parametrize(
    "damage", one_of_each_kind(["missing", "no-config", "no-checkpoint", "corrupt"])
)
def test_bad_resume_targets_get_one_clear_error(
    damage: str, trained_run: Path, tmp_path: Path, synthetic_mnist: Path
) -> None:
    run = tmp_path / "copy"
    shutil.copytree(trained_run, run)
    last = run / "checkpoints" / "last.ckpt"
    if damage == "missing":
        run = tmp_path / "nowhere"
    elif damage == "no-config":
        shutil.rmtree(run / ".hydra")
    elif damage == "no-checkpoint":
        last.unlink()
    else:
        last.write_bytes(last.read_bytes()[:1000])
    before = snapshot(tmp_path)
    extend = ["trainer.max_epochs=3"] if damage == "corrupt" else []  # else: finished, done
    done = resume_in_process(run, tmp_path, synthetic_mnist, *extend)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    (error,) = done.stderr.strip().splitlines()
    assert str(run) in error
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_a_full_disk_stops_the_run_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """Epoch 0's checkpoints are written; at the end of epoch 1 the disk is full: one clear
    message, exit 2, last.ckpt still epoch 0's, no temporary files, no metrics.json."""
    args = [*SMALL, "trainer.max_epochs=3", "+callbacks.disk_full._target_=disk_full.DiskFullAt"]
    env = {"PYTHONPATH": str(TESTS), "DISK_FULL_AT_EPOCH": "1"}  # a process: fsync stays broken
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


def stepped_checkpoint(model: MNISTClassifier) -> dict:
    """A checkpoint of `model` whose optimizer has taken one step (so it holds state)."""
    optimizer = model.build_optimizer()
    for param in model.parameters():
        param.grad = torch.ones_like(param)
    optimizer.step()
    return {"state_dict": model.state_dict(), "optimizer_states": [optimizer.state_dict()]}


def _set_state(key: str, value: object) -> object:
    return lambda opt: opt["state"][0].__setitem__(key, value)


OPTIMIZER_DAMAGE = {
    "wrong-shape": (
        _set_state("exp_avg", torch.zeros(3)),
        r"parameter 0 \(net\.layers\.0\.weight\) holds exp_avg of shape \(3,\), not \(8, 784\)",
    ),
    "wrong-dtype": (
        _set_state("exp_avg_sq", torch.zeros(8, 784, dtype=torch.int64)),
        r"holds exp_avg_sq of dtype torch\.int64, not a floating-point one",
    ),
    "expanded": (  # the right shape over 784 numbers: the fused kernel would read past them
        _set_state("exp_avg", torch.zeros(784).expand(8, 784)),
        r"holds exp_avg that is not a dense, contiguous tensor",
    ),
    "empty-step": (_set_state("step", torch.zeros(0)), r"holds a step of shape \(0,\)"),
    "missing-entry": (
        lambda opt: opt["state"][0].pop("exp_avg_sq"),
        r"parameter 0 \(net\.layers\.0\.weight\) lacks exp_avg_sq",
    ),
    "index-out-of-range": (
        lambda opt: opt["state"].__setitem__(7, opt["state"][0]),
        r"holds an entry for parameter 7; the optimizer has parameters 0 to 3",
    ),
    "entry-not-a-dict": (
        lambda opt: opt["state"].__setitem__(1, [0.0]),
        r"for parameter 1 \(net\.layers\.3\.weight\) is a list, not a dict",
    ),
    "state-not-a-dict": (
        lambda opt: opt.__setitem__("state", [1, 2]),
        r"its optimizer state is not one torch saves",
    ),
    "lr-not-a-number": (
        lambda opt: opt["param_groups"][0].__setitem__("lr", "fast"),
        r"sets lr='fast' for parameter group 0",
    ),
}


@pytest.mark.parametrize("damage", OPTIMIZER_DAMAGE)
def test_a_checkpoint_whose_optimizer_state_does_not_fit_is_refused_before_training(
    damage: str,
) -> None:
    """The fused optimizers read their state unchecked: a tensor of another shape crashed the
    process (a segfault) when training went on. Each damage gets one message naming it."""
    change, words = OPTIMIZER_DAMAGE[damage]
    checkpoint = stepped_checkpoint(MNISTClassifier(hidden_dims=[8]))
    check_resumable(MNISTClassifier(hidden_dims=[8]), checkpoint, "old/last.ckpt")  # it fits
    change(checkpoint["optimizer_states"][0])
    advice = r"damaged or was edited\. Start a new run from its weights instead: mnist-train "
    with pytest.raises(CheckpointError, match=rf"^old/last\.ckpt: .*{words}.*{advice}"):
        check_resumable(MNISTClassifier(hidden_dims=[8]), checkpoint, "old/last.ckpt")


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("base_lrs", ["x", "y"], r"sets base_lrs=\['x', 'y'\], not 2 numbers"),
        ("_last_lr", [0.1], r"sets _last_lr=\[0\.1\], not 2 numbers"),
        ("last_epoch", "12", r"sets last_epoch='12', not a count"),
    ],
)
def test_a_damaged_schedule_state_is_refused_before_training(
    key: str, value: object, words: str
) -> None:
    """The scheduler computes with these at the first step (a traceback there, before)."""
    checkpoint = stepped_checkpoint(MNISTClassifier(hidden_dims=[8]))
    checkpoint["lr_schedulers"] = [{"base_lrs": [0.1, 0.1], "_last_lr": [0.1, 0.1], key: value}]
    with pytest.raises(CheckpointError, match=rf"learning-rate schedule state {words}"):
        check_resumable(MNISTClassifier(hidden_dims=[8]), checkpoint, "old/last.ckpt")


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["exp_avg", "val_acc_best"])
def test_resuming_a_crafted_checkpoint_is_one_clear_error_not_a_crash(
    damage: str, trained_run: Path, tmp_path: Path, synthetic_mnist: Path
) -> None:
    """An optimizer state of the wrong shape is refused before training (it segfaulted in the
    fused AdamW); a buffer of the wrong shape is what Lightning's restore refuses, reworded."""
    run = tmp_path / "copy"
    shutil.copytree(trained_run, run)
    last = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    if damage == "exp_avg":
        checkpoint["optimizer_states"][0]["state"][0]["exp_avg"] = torch.zeros(3)
    else:
        checkpoint["state_dict"]["val_acc_best"] = torch.zeros(5)
    torch.save(checkpoint, last)
    done = resume_in_process(run, tmp_path, synthetic_mnist, "trainer.max_epochs=3")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith(f"Error: {last}") and f"mnist-train ckpt_path={last}" in error
    if damage == "exp_avg":  # refused before Lightning starts: nothing else is printed
        assert done.stderr.strip() == error
        assert "holds exp_avg of shape (3,), not (64, 784)" in error
    else:
        assert "cannot be restored" in error and "val_acc_best" in error


@pytest.mark.parametrize(
    ("trainer", "done", "reached"),
    [
        ({"max_epochs": None, "max_steps": -1}, {"epoch": 1000, "global_step": 9}, "max_epochs"),
        ({"max_epochs": None, "max_steps": -1}, {"epoch": 999, "global_step": 9}, None),
        ({"max_epochs": None, "max_steps": 30}, {"epoch": 1000, "global_step": 30}, "max_steps"),
        ({"max_epochs": None, "max_steps": 30}, {"epoch": 1000, "global_step": 29}, None),
        ({"max_epochs": -1, "max_steps": 30}, {"epoch": 5, "global_step": 30}, "max_steps"),
        ({"max_epochs": 2, "max_steps": -1}, {"epoch": 2, "global_step": 30}, "max_epochs"),
    ],
)
def test_a_finished_run_names_the_limit_it_reached_as_lightning_reads_it(
    trainer: dict, done: dict, reached: str | None
) -> None:
    """max_epochs=null is Lightning's 1000 epochs unless max_steps or max_time ends the run."""
    assert reached_limit(OmegaConf.create(trainer), done) == reached


def test_a_job_out_of_requeues_fails_with_one_line(tmp_path: Path) -> None:
    """At a SLURM job's time limit GracefulInterrupt hands SIGUSR2 to submitit's own handler
    after its save; when submitit will not requeue the job again, that is the job's one line
    (recorded in the sweep's summary), not submitit's traceback."""
    from submitit.core.job_environment import SignalHandler
    from submitit.core.utils import DelayedSubmission, JobPaths
    from submitit.slurm.slurm import SlurmJobEnvironment

    delayed = DelayedSubmission(print)  # nothing to checkpoint, and past its time limit:
    delayed._timeout_min = 0  # submitit will not requeue it
    submitits = SignalHandler(SlurmJobEnvironment(), JobPaths(tmp_path, "1"), delayed)
    interrupt = GracefulInterrupt(str(tmp_path))
    interrupt.signal = signal.SIGUSR2
    previous = signal.signal(signal.SIGUSR2, submitits.checkpoint_and_try_requeue)
    try:
        with pytest.raises(UserError, match=r"not requeued \(Job not requeued because: timed-out"):
            interrupt.hand_back()
    finally:
        signal.signal(signal.SIGUSR2, previous)
