"""Run directories and checkpoints are data, never code, and one process writes a run.

Each case is a run directory someone handed over, changed as an attacker or an accident would,
resumed through mnist-train's console entry (tests/helpers/hydra_jobs.py): it must be refused
with one line naming the key or file, run nothing, and change nothing that existed.
docs/reliability.md ("Security") lists them.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from mnist_lightning.errors import CheckpointError, ConfigError
from mnist_lightning.files import atomic_write_json, lock_run
from mnist_lightning.run.checkpoint import AtomicCheckpointIO, confine_paths, load_checkpoint
from mnist_lightning.run.resume import check_saved_config
from tests.helpers.commands import run_cli, train_command
from tests.helpers.worlds import Command, Outcome, make_world, run_cases, snapshot

TESTS = Path(__file__).resolve().parent
KILLABLE = "+callbacks.kill._target_=kill_at.KillAt"


class Evil:
    """Pickled, it makes whoever unpickles it create `marker`: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.mkdir, (str(self.marker),)


def edit_config(w: Path, change: Callable[[dict], None]) -> None:
    path = w / "run" / ".hydra" / "config.yaml"
    config = OmegaConf.to_container(OmegaConf.load(path))
    change(config)
    OmegaConf.save(OmegaConf.create(config), path)


def add_callback(node: object) -> Callable[[Path], None]:
    """A callback `evil` in the saved config; "{w}" in its strings is the world's folder."""
    at = lambda w: json.loads(json.dumps(node).replace("{w}", str(w)))  # noqa: E731
    return lambda w: edit_config(w, lambda c: c["callbacks"].update(evil=at(w)))


def set_in_config(group: str, name: str, **values: object) -> Callable[[Path], None]:
    return lambda w: edit_config(w, lambda c: c[group][name].update(values))


def checkpoint_naming(key: str, where: str, drop_dirpath: bool = False) -> Callable[[Path], None]:
    """last.ckpt's checkpoint states point `key` at `where` ("{w}": the world's folder), where
    a pickle that would run code lies (and a folder of someone's files, for a delete)."""

    def setup(w: Path) -> None:
        torch.save({"state_dict": Evil(w / "ran")}, w / "elsewhere.ckpt")
        (w / "someones").mkdir()
        (w / "someones" / "file.txt").write_text("theirs")
        last = w / "run" / "checkpoints" / "last.ckpt"
        checkpoint = torch.load(last, weights_only=True)
        for state in checkpoint["callbacks"].values():
            if drop_dirpath:
                state.pop("dirpath", None)
            if state.get(key):
                state[key] = where.format(w=w)
        torch.save(checkpoint, last)

    return setup


def tensorboard_link_out(w: Path) -> None:
    shutil.rmtree(w / "run" / "tensorboard")
    (w / "run" / "tensorboard").symlink_to(w / "data")


def fifo_log(w: Path) -> None:
    (w / "run" / "train.log").unlink()
    os.mkfifo(w / "run" / "train.log")


def alias_bomb(w: Path) -> None:
    """A kilobyte of YAML aliases that would expand to billions of nodes."""
    levels = ["x0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    levels += [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = w / "run" / ".hydra" / "config.yaml"
    path.write_text("\n".join(levels) + "\n" + path.read_text())


EXTEND = ["trainer.max_epochs=3"]  # the run finished: extend it, so its checkpoint is read

# case: (how to spoil the run, extra command-line arguments, words the one-line error holds)
CASES: dict[str, tuple[Callable[[Path], None], list[str], list[str]]] = {
    "a callback made by an interpolation": (
        add_callback("${oc.create:{_target_: builtins.open, file: '{w}/data/keep.txt', mode: w}}"),
        [],
        ["callbacks.evil._target_='builtins.open'", "a run directory may choose values, not code"],
    ),
    "positional arguments": (
        set_in_config("callbacks", "last_checkpoint", _args_=["/tmp"]),
        [],
        ["callbacks.last_checkpoint._args_", "by name only"],
    ),
    "checkpoints written elsewhere": (
        lambda w: set_in_config("callbacks", "last_checkpoint", dirpath=str(w / "data"))(w),
        EXTEND,  # every place a resumed run writes is checked as built
        ["ModelCheckpoint(filename='last') write to", "/data/last.ckpt, outside the run"],
    ),
    "a checkpoint filename leading out": (
        set_in_config("callbacks", "last_checkpoint", filename="../../../escaped"),
        EXTEND,  # checked as built, after the finished run would have stopped
        ["ModelCheckpoint(filename='../../../escaped')", "outside the run"],
    ),
    "an exception checkpoint's filename leading out": (
        add_callback(
            {
                "_target_": "lightning.pytorch.callbacks.OnExceptionCheckpoint",
                "dirpath": "{w}/run/checkpoints",
                "filename": "../../../escaped",
            }
        ),
        EXTEND,
        ["OnExceptionCheckpoint(filename='../../../escaped')", "outside the run"],
    ),
    "a TensorBoard version leading out": (
        set_in_config("logger", "tensorboard", version="../../escaped"),
        EXTEND,  # checked as built, after the finished run would have stopped
        ["TensorBoardLogger write to", "outside the run"],
    ),
    "best_model_path elsewhere, forced pickle loading": (
        checkpoint_naming("best_model_path", "{w}/elsewhere.ckpt"),
        EXTEND,
        ["best_model_path", "elsewhere.ckpt", "outside its run"],
    ),
    "a path to delete, without dirpath": (  # Lightning would rm -r it when a better one comes
        checkpoint_naming("best_model_path", "{w}/run/checkpoints/../../someones", True),
        EXTEND,
        ["best_model_path", "someones", "outside its run"],
    ),
    "a pickle as last.ckpt, forced pickle loading": (
        lambda w: torch.save({"state_dict": Evil(w / "ran")}, w / "run/checkpoints/last.ckpt"),
        EXTEND,
        ["last.ckpt cannot be read", "run posix.mkdir", "nothing ran"],
    ),
    "tensorboard/ a link out of the run": (
        tensorboard_link_out,
        [],
        ["tensorboard is a symbolic link"],
    ),
    "train.log a FIFO": (fifo_log, [], ["train.log is a FIFO"]),
    "train.log hard-linked elsewhere": (
        lambda w: os.link(w / "run" / "train.log", w / "data" / "train.log"),
        [],
        ["train.log is a file with 2 hard links"],
    ),
    "saved config an alias bomb": (alias_bomb, [], ["config.yaml cannot be read", "aliases"]),
    "saved config not a config": (
        lambda w: (w / "run" / ".hydra" / "config.yaml").write_text("[1, 2]"),
        [],
        [".hydra/config.yaml is not a config mnist-train saved"],
    ),
    "an escaped interpolation, live again after resolving": (
        add_callback(
            {
                "_target_": "lightning.pytorch.callbacks.Timer",
                "duration": "\\${oc.create:{_target_: builtins.open, "
                "file: '{w}/data/keep.txt', mode: w}}",
            }
        ),
        [],
        ["callbacks.evil.duration", "an interpolation after resolving"],
    ),
    "a checkpoint file name that is absolute": (
        lambda w: set_in_config("callbacks", "last_checkpoint", filename=f"{w}/escaped")(w),
        EXTEND,
        ["ModelCheckpoint(filename=", "escaped.ckpt, outside the run"],
    ),
    "a checkpoint without a folder, written where the command runs": (
        set_in_config("callbacks", "best_checkpoint", dirpath="", filename="escaped"),
        EXTEND,
        ["ModelCheckpoint(filename='escaped') write to escaped.ckpt, outside the run"],
    ),
    "a checkpoint file name with a field in a field": (
        set_in_config("callbacks", "last_checkpoint", filename="{y{x.__class__:{c}}"),
        EXTEND,
        ["a metric and a number format only"],
    ),
    "a checkpoint file name that formats an attribute": (
        set_in_config("callbacks", "last_checkpoint", filename="{epoch.__class__}"),
        EXTEND,
        ["ModelCheckpoint the file name '{epoch.__class__}'", "a metric and a number format"],
    ),
    "a Lightning callback that writes where it is told": (
        add_callback(
            {
                "_target_": "lightning.pytorch.callbacks.SpikeDetection",
                "exclude_batches_path": "{w}/data/escaped.json",
            }
        ),
        [],
        ["callbacks.evil._target_='lightning.pytorch.callbacks.SpikeDetection', which conf/"],
    ),
    "a callback of one's own, not named again": (
        add_callback({"_target_": "kill_at.KillAt"}),
        [],
        ["callbacks.evil._target_='kill_at.KillAt'", "+callbacks.evil._target_=kill_at.KillAt"],
    ),
}


TEST_NAMES = ("test_a_spoiled_run_directory_is_refused_and_runs_nothing",)


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, trained_run: Path
) -> dict[str, Outcome]:
    """Every selected case resumed in a world of its own (tests/helpers/worlds.py), two at a
    time; with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, which makes torch unpickle anything unless
    the caller says weights_only=True."""

    def prepare(case: str, w: Path) -> Command:
        spoil, extra, _ = CASES[case]
        make_world(w, trained_run)
        (w / "data" / "keep.txt").write_text("mine")
        spoil(w)
        args = [f"resume={w / 'run'}", *(a.format(w=w) for a in extra)]
        env = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "PYTHONPATH": str(TESTS)}
        return Command("train", args, w, env)

    return run_cases(request, tmp_path_factory, TEST_NAMES, prepare, directory_times=True)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_a_spoiled_run_directory_is_refused_and_runs_nothing(
    case: str, outcomes: dict[str, Outcome]
) -> None:
    outcome = outcomes[case]
    done, before, after, w = outcome.done, outcome.before, outcome.after, outcome.world
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    for words in CASES[case][2]:
        assert words in done.stderr, done.stderr[-2000:]
    assert not (w / "ran").exists()  # no code from the run directory or checkpoint ran
    assert (w / "data" / "keep.txt").read_text() == "mine"
    assert not list(w.rglob("escaped*"))
    assert after == before  # nothing that existed changed, nothing was added


UNTRUSTED = [
    "mnist_lightning.model.classifier.MNISTClassifier",  # at a key conf/ does not have
    "mnist_lightning.cli.train.os.system",
    "lightning.pytorch.callbacks.model_checkpoint.os.system",
    "lightning.pytorch.callbacks.os",
    "lightning.pytorch.callbacks.SpikeDetection",  # writes where it is told
    "lightning.pytorch.loggers.CometLogger",  # calls a server of the run's choosing
    "lightning.pytorch.loggers.MLFlowLogger",  # a tracker, but not as a logger.<name>
    "subprocess.Popen",
    ["os.system"],
]


def test_a_saved_config_takes_its_classes_from_the_command_or_a_short_list() -> None:
    """A node that the command's config has takes its class from there when it is the same
    class by name (one that moved since the run was saved is found); another class there, or a
    node only the run has naming a class outside `ADDABLE`, is refused in one line."""
    composed = OmegaConf.create({"model": {"_target_": "mnist_lightning.model.classifier.X"}})
    early = "lightning.pytorch.callbacks.EarlyStopping"
    mlflow = {"_target_": "lightning.pytorch.loggers.MLFlowLogger"}  # replaced as conf/'s later
    config = {"model": {"_target_": "old.place.X"}, "callbacks": {"x": {"_target_": early}}}
    check_saved_config({**config, "logger": {"mlflow": mlflow}}, composed, Path("run"))
    assert config["model"]["_target_"] == composed.model._target_
    with pytest.raises(ConfigError, match=r"model\._target_='mine.Y', where conf/ has .*: model"):
        check_saved_config({"model": {"_target_": "mine.Y"}}, composed, Path("run"))
    for target in UNTRUSTED:
        with pytest.raises(ConfigError, match=r"callbacks\.x\._target_=.*not code"):
            check_saved_config({"callbacks": {"x": {"_target_": target}}}, composed, Path("run"))
    with pytest.raises(ConfigError, match=r"model\.hidden_dims\._target_='os.system'"):
        composed.model.hidden_dims = [1]  # a node where the command's config has a list
        check_saved_config({"model": {"hidden_dims": {"_target_": "os.system"}}}, composed, "r")


def test_a_resumed_runs_checkpoints_are_written_only_inside_it(tmp_path: Path) -> None:
    """Where a checkpoint lands, as Lightning computed it (a `dirpath: null` leads to a
    logger's folder, which a crafted `name` can lead out of), is checked as it is written."""
    (tmp_path / "run").mkdir()
    inside = AtomicCheckpointIO(tmp_path / "run")
    inside.save_checkpoint({"x": 1}, tmp_path / "run" / "checkpoints" / "last.ckpt")
    for outside in (tmp_path / "escaped.ckpt", tmp_path / "run" / ".." / "escaped.ckpt"):
        with pytest.raises(CheckpointError, match=r"outside the run; .* Nothing was written"):
            inside.save_checkpoint({"x": 1}, outside)
    assert not (tmp_path / "escaped.ckpt").exists()


def test_a_moved_run_keeps_its_checkpoint_state_inside_it(tmp_path: Path) -> None:
    """A copied run's ModelCheckpoint state names the old place: mapped onto the new one."""
    run = tmp_path / "copy"
    old = "/elsewhere/run/checkpoints"
    state = {
        "dirpath": old,
        "best_model_path": f"{old}/best-epoch001.ckpt",
        "kth_best_model_path": f"{old}/best-epoch001.ckpt",
        "last_model_path": "",
        "best_k_models": {f"{old}/best-epoch001.ckpt": 0.9},
    }
    checkpoint = confine_paths({"callbacks": {"ModelCheckpoint": state}}, run / "checkpoints/x")
    here = (run / "checkpoints").resolve()
    assert state["dirpath"] == str(here)
    assert state["best_model_path"] == state["kth_best_model_path"] == f"{here}/best-epoch001.ckpt"
    assert checkpoint["callbacks"]["ModelCheckpoint"]["best_k_models"] == {
        f"{here}/best-epoch001.ckpt": 0.9
    }
    state["best_model_path"] = f"{run}/../other/best.ckpt"
    with pytest.raises(CheckpointError, match=r"best_model_path=.*outside its run"):
        confine_paths(checkpoint, run / "checkpoints" / "x")


def test_a_lock_file_that_is_not_a_file_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / ".lock")
    with pytest.raises(Exception, match=r"its \.lock is a FIFO"):
        lock_run(tmp_path, "mnist-train")


def test_metrics_files_are_strict_json(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "m.json", {"test/loss": math.nan, "curve": [math.inf, 1.0]})
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text, parse_constant=pytest.fail) == {"test/loss": None, "curve": [None, 1.0]}


@pytest.mark.slow
def test_one_process_writes_a_run(tmp_path: Path, synthetic_mnist: Path, trained_run: Path) -> None:
    """While a run trains, resuming it is refused with the training process named,
    `resume=latest` passes over it (to a finished run: nothing to do, nothing changed), and
    mnist-eval will not write into it. SIGKILLed, it leaves a lock that blocks nothing: of
    two resumes started at once, one continues it and the other is refused. (A finished run
    resumed changes nothing and says how to train it further.)"""
    shutil.copytree(trained_run, tmp_path / "outputs" / "runs" / "0-finished")
    finished = tmp_path / "outputs" / "runs" / "0-finished"
    untouched = snapshot(finished, directory_times=True)
    env = os.environ | {"MNIST_DATA_DIR": str(synthetic_mnist), "PYTHONPATH": str(TESTS)}
    live = subprocess.Popen(
        train_command("trainer.max_epochs=12", KILLABLE),  # killed long before its end
        cwd=tmp_path,
        env=env | {"STEP_SECONDS": "0.25"},  # 20 steps an epoch: 5 s an epoch
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        runs = tmp_path / "outputs" / "runs"
        while not list(runs.glob("2*/checkpoints/last.ckpt")):  # its first epoch's end
            assert time.monotonic() < deadline and live.poll() is None
            time.sleep(0.2)
        (run,) = [p for p in runs.iterdir() if p.name != "0-finished"]
        with ThreadPoolExecutor(max_workers=2) as pool:
            busy, latest = pool.map(
                lambda args: run_cli("train", args, tmp_path, synthetic_mnist),
                [[f"resume={run}", KILLABLE], ["resume=latest"]],
            )
        assert live.poll() is None, "the run ended before the checks; slow it down further"
        eval_busy = run_cli(
            "eval", [f"run_dir={run}", "data_source=files"], tmp_path, synthetic_mnist
        )
        export_busy = run_cli(  # it would write last.pt into the run
            "export",
            [f"ckpt_path={run}/checkpoints/last.ckpt", "format=torchscript"],
            tmp_path,
            synthetic_mnist,
        )
    finally:
        live.send_signal(signal.SIGKILL)
        live.wait()
    for refused, command in ((busy, "mnist-train"), (eval_busy, "mnist-eval")):
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert f"process {live.pid} (mnist-train) is writing it" in refused.stderr
        assert command in refused.stderr and "Traceback" not in refused.stderr
    assert export_busy.returncode == 2 and not (run / "checkpoints" / "last.pt").exists()
    assert f"process {live.pid} (mnist-train) is writing: wait" in export_busy.stderr
    assert latest.returncode == 0, latest.stderr[-3000:]
    assert f"passing over {Path('outputs/runs') / run.name}" in latest.stderr
    assert "finished before" in latest.stdout and "nothing to do" in latest.stdout
    assert "raise trainer.max_epochs above 2" in latest.stdout  # how to train it further
    assert snapshot(finished, directory_times=True) == untouched

    if not (run / "checkpoints" / "last.ckpt").is_file():
        pytest.skip("killed before its first checkpoint")  # not expected with 30 s of training
    resume = train_command(f"resume={run}", KILLABLE, synthetic=False)
    both = [subprocess.Popen(resume, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)]
    both.append(subprocess.Popen(resume, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True))
    errors = [p.communicate(timeout=300)[1] for p in both]
    assert sorted(p.returncode for p in both) == [0, 2], errors
    assert any("is writing it" in e for e in errors) and (run / "metrics.json").is_file()


def test_a_pickle_torch_will_not_read_says_why(tmp_path: Path) -> None:
    """torch's refusal opens with paragraphs of advice; the message quotes its reason."""
    path = tmp_path / "p4.ckpt"
    torch.save({"state_dict": {}}, path, pickle_protocol=4)  # framing torch's loader refuses
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "(Unsupported operand 149" in str(info.value)
    assert "In PyTorch 2.6" not in str(info.value)
