"""A run killed (SIGKILL, Ctrl-C, SIGTERM: real processes) or stopped by a full disk, and resumed,
ends bit for bit as the uninterrupted one; a damaged optimizer state is refused in one line
(damaged runs: test_trust)."""

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from mnist_lightning import files
from mnist_lightning.errors import CheckpointError, UserError
from mnist_lightning.model.classifier import MNISTClassifier
from mnist_lightning.run import resume
from mnist_lightning.run.checkpoint import check_resumable
from mnist_lightning.run.resume import GracefulInterrupt, finished
from tests.helpers.commands import run_cli, run_dirs
from tests.helpers.synthetic import SMALL

# 1 000 training images in batches of 25, one step per call: 40 optimizer steps per epoch.
EXACT = [*SMALL, "trainer.max_epochs=3", "trainer.deterministic=true", "data.batch_size=25"]
EXACT += ["model.dropout=0.3"]
KILLABLE = ["+callbacks.kill._target_=probes.KillAt"]


def train(cwd: Path, data: Path, args: list[str], **env: str) -> Path:
    """mnist-train in a process of its own; `env`: tests/probes.py's settings."""
    done = run_cli("train", args, cwd, data, env=env)
    kill = env.get("KILL_SIGNAL") if "KILL_AT_STEP" in env else None
    status = {None: 0, "KILL": -signal.SIGKILL, "ENOSPC": 2}.get(kill, 130)
    assert done.returncode == status and "Traceback" not in done.stderr, done.stderr
    if kill in ("INT", "TERM", "ENOSPC"):
        assert f"mnist-train resume={run_dirs(cwd)[-1]}" in done.stderr
    assert kill != "ENOSPC" or "No space left on device" in done.stderr
    return run_dirs(cwd)[-1]


STOPS = [  # (signal, sent at step, where, the steps last.ckpt may then hold)
    ("KILL", 30, "training", range(30 - 11, 30)),  # lost: the steps since the periodic save
    ("INT", 57, "training", [58]),  # Ctrl-C, sent from a later hook of step 57: after 58
    ("TERM", 70, "validation", [80]),  # the validation finishes: it stops at that epoch's end
    ("ENOSPC", 90, "training", range(80, 91)),  # the next save fails: the last good one is kept
    ("TERM", 1, "test", [120]),  # in the test after training: last.ckpt as training ended
    ("INT", 1, "report", [120]),  # writing the results: resume= tests again and writes them
]


@pytest.mark.slow
def test_a_run_stopped_every_way_and_resumed_ends_as_the_uninterrupted_one(
    tmp_path: Path, synthetic_mnist: Path
) -> None:
    """One run takes each stop in turn, resumed in its own directory after each. SIGKILL loses
    the steps since callbacks.periodic_checkpoint's last save: at 0.1 s, with every step slowed
    to at least 10 ms, at most ~10. The reference is left alone (a checkpoint changes nothing)."""
    (tmp_path / "reference").mkdir()
    alone = [*EXACT, "~callbacks.periodic_checkpoint", *KILLABLE]
    reference = train(tmp_path / "reference", synthetic_mnist, alone)
    args = [*EXACT, "callbacks.periodic_checkpoint.train_time_interval.seconds=0.1", *KILLABLE]
    for kill, step, where, saved in STOPS:
        slow = {"STEP_SECONDS": "0.01"} if kill == "KILL" else {}
        stop = {"KILL_AT_STEP": str(step), "KILL_SIGNAL": kill, "KILL_IN": where}
        run = train(tmp_path, synthetic_mnist, args, **stop, **slow)
        assert not (run / "metrics.json").exists() and not list(run.rglob("*.tmp"))
        held = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
        assert held in saved, (kill, held)
        args = [f"resume={run}", *KILLABLE]
    assert train(tmp_path, synthetic_mnist, args) == run
    assert run_dirs(tmp_path) == [run]  # same directory, no new run
    log = (run / "train.log").read_text()
    assert log.count(f"Training stopped; {run / 'checkpoints' / 'last.ckpt'} holds") == 4
    assert log.count(f"Resuming {run} from") == len(STOPS)
    keep = ("test/acc", "test/loss", "val/acc_best", "epoch", "global_step")
    ref, got = (json.loads((r / "metrics.json").read_text()) for r in (reference, run))
    assert {k: got[k] for k in keep} == {k: ref[k] for k in keep}
    weights = [torch.load(r / "checkpoints/last.ckpt")["state_dict"] for r in (reference, run)]
    torch.testing.assert_close(*weights, rtol=0, atol=0)  # the same keys, bit for bit


def state(key: str, *value: object) -> Callable[[dict], None]:
    """Parameter 0's optimizer state with `key` set to `value` (no value: removed)."""
    moments = lambda c: c["optimizer_states"][0]["state"][0]  # noqa: E731
    return lambda c: moments(c).update({key: value[0]}) if value else moments(c).pop(key)


def group(index: int, **values: object) -> Callable[[dict], None]:
    return lambda c: c["optimizer_states"][0]["param_groups"][index].update(values)


def regroup(checkpoint: dict) -> None:
    """The optimizer state as older versions grouped the parameters with weight_decay=0."""
    groups = checkpoint["optimizer_states"][0]["param_groups"]
    groups[:] = [{**groups[0], "params": [0, 1, 2, 3]}]


SHAPE = r"for parameter 0 \(net\.layers\.0\.weight\) it holds"
NO_STEP, NO_SCHEDULE = (
    rf"{what} state cannot take a step \(" for what in ("optimizer", "learning-rate schedule")
)
# how the checkpoint is changed -> its one line (one through mnist-train: test_trust.py)
CRAFTED = {
    "an older version's grouping": (
        regroup,
        r"optimizer state has parameter groups of \[4\] tensors, the optimizer of this "
        r"mnist-train version \[2, 2\], so it cannot continue that run",
    ),
    "a moment over too few numbers": (  # the fused kernel would read past them
        state("exp_avg", torch.zeros(784).expand(8, 784)),
        rf"{SHAPE} exp_avg of shape \(8, 784\), not a contiguous tensor",
    ),
    "an empty step": (state("step", torch.zeros(0)), rf"{SHAPE} step of shape \(0,\), not a"),
    "a missing moment": (state("exp_avg_sq"), NO_STEP + r"KeyError: 'exp_avg_sq'\)"),
    "a rate that is not a number": (group(0, lr="fast"), NO_STEP + "TypeError: "),
    "a negative second moment": (
        state("exp_avg_sq", torch.full((8, 784), -1.0)),
        NO_STEP + "a step with it makes the weights infinite or NaN",
    ),
    "a setting the fused step refuses": (
        group(1, differentiable=True),
        NO_STEP + "it sets differentiable or capturable",
    ),
    "an integer step": (  # torch's Adam would compute beta**(2**40) in Python: a hang
        state("step", torch.tensor(2**40)),
        rf"{SHAPE} step=1099511627776, not a count of steps as torch saves it",
    ),
    "a schedule count too large": (
        lambda c: c.update(lr_schedulers=[{"base_lrs": [0.1, 0.1], "last_epoch": 10**400}]),
        NO_SCHEDULE + "it sets last_epoch=1000",
    ),
    "schedule rates not numbers": (
        lambda c: c.update(lr_schedulers=[{"base_lrs": ["x", "y"]}]),
        NO_SCHEDULE + "TypeError: can't multiply",
    ),
}


@pytest.mark.parametrize("crafted", CRAFTED)
def test_a_checkpoint_whose_optimizer_state_does_not_fit_is_refused_before_training(
    crafted: str,
) -> None:
    """Stepped once on torch's single-tensor path, which raises where the fused one segfaulted."""
    change, words = CRAFTED[crafted]
    model = MNISTClassifier(hidden_dims=[8])
    optimizer = model.build_optimizer()  # two groups of two tensors
    for param in model.parameters():
        param.grad = torch.ones_like(param)
    optimizer.step()  # so that it holds state
    checkpoint = {"state_dict": model.state_dict(), "optimizer_states": [optimizer.state_dict()]}
    check_resumable(MNISTClassifier(hidden_dims=[8]), checkpoint, "old/last.ckpt")  # it fits
    change(checkpoint)
    remedy = r"Start a new run from its weights instead: mnist-train ckpt_path=old/last\.ckpt$"
    with pytest.raises(CheckpointError, match=rf"^old/last\.ckpt: its .*{words}.*{remedy}"):
        check_resumable(MNISTClassifier(hidden_dims=[8]), checkpoint, "old/last.ckpt")


TIMED = {"max_epochs": -1, "max_time": "00:00:00:10"}
NULL, NULL_30 = {"max_epochs": None}, {"max_epochs": None, "max_steps": 30}


@pytest.mark.parametrize(
    ("saved", "reached", "asked", "advice"),  # advice None: not finished, it trains on
    [
        ({"max_epochs": 1}, (1, 40), {"max_epochs": 1}, "raise trainer.max_epochs above 1"),
        ({"max_epochs": 1}, (1, 40), {"max_epochs": 2}, None),  # extended
        ({"max_epochs": 1}, (2, 80), {"max_epochs": 2}, "above 2"),  # extended once before
        ({"max_epochs": 1}, (2, 80), {"max_epochs": 3}, None),  # extended again
        ({"max_epochs": 5}, (3, 120), {"max_epochs": 5}, "stopped before its limits"),  # early
        (TIMED, (3, 120), {**TIMED, "max_epochs": 9}, "stopped before"),  # its clock is saved
        # max_epochs=null is Lightning's 1000 epochs unless max_steps or max_time ends the run
        (NULL, (1000, 9), NULL, "raise trainer.max_epochs above 1000"),
        (NULL, (999, 9), NULL, "stopped before its limits"),
        (NULL_30, (1000, 30), NULL_30, "raise trainer.max_steps above 30"),
        (NULL_30, (1000, 29), NULL_30, "stopped before its limits"),
        ({"max_epochs": 5, "max_steps": 25}, (2, 25), {"max_epochs": 5, "max_steps": 25}, "25"),
        ({"max_epochs": 1}, None, {"max_epochs": 1}, None),  # metrics.json not JSON: not finished
    ],
)
def test_a_finished_run_is_one_the_command_takes_no_further_and_says_how_to(
    tmp_path: Path, saved: dict, reached: tuple[int, int] | None, asked: dict, advice: str | None
) -> None:
    """`saved`: the trainer limits the run trained with; `reached`: (epoch, global_step)."""
    (tmp_path / ".hydra").mkdir()
    config = {"data": {}, "model": {}, "trainer": {"max_steps": -1, **saved}}
    (tmp_path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = reached and {"val/acc_best": 0.9, "epoch": reached[0], "global_step": reached[1]}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics) if metrics else '{"val/acc_best')
    got = finished(tmp_path, OmegaConf.create({"max_steps": -1, **asked}))
    assert got is None if advice is None else advice in got


def test_a_job_out_of_requeues_fails_with_one_line(tmp_path: Path) -> None:
    """GracefulInterrupt hands SIGUSR2 to submitit's handler after its save: not its traceback."""
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


def test_a_refused_run_removes_only_what_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A new run claimed before Hydra goes, with the folders made above it; a folder nobody
    claimed keeps all it holds, and so does a claimed one where another process wrote."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(resume, "BEFORE_HYDRA", {})
    monkeypatch.setattr(files, "_held_locks", {})  # (no run of this process's is put back)
    resume.claim_new(OmegaConf.create({"resume": None}), "hydra.run.dir", "outputs/runs/new")
    runs = [tmp_path / "outputs/runs/new", tmp_path / "elsewhere/new", tmp_path / "user"]
    resume.claim_new(OmegaConf.create({"resume": None}), "hydra.run.dir", "user")
    for run in runs:
        (run / ".hydra").mkdir(parents=True)
        (run / "train.log").write_text("")
    (tmp_path / "user" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as ended:
        resume.refuse(status=130)  # as Ctrl-C before fit: quietly, all this command claimed
    assert ended.value.code == 130 and not capsys.readouterr().err and resume.BEFORE_HYDRA == {}
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "elsewhere", "elsewhere/new", "elsewhere/new/.hydra", "elsewhere/new/train.log",
        "user", "user/.hydra", "user/notes.txt", "user/train.log",
    ]  # fmt: skip
    assert not (tmp_path / "outputs").exists()
