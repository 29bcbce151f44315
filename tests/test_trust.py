"""Run directories and checkpoints are data, never code, and one process writes a run: a run
spoiled as an attacker or an accident would, resumed, is refused in one line, changing nothing."""

import json
import math
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_lightning.errors import CheckpointError, ConfigError
from mnist_lightning.files import atomic_write_json
from mnist_lightning.run.checkpoint import AtomicCheckpointIO, confine_paths, load_checkpoint
from mnist_lightning.run.resume import check_saved_config, hydra_quoted
from mnist_lightning.run.trainer import lightning_errors
from tests.helpers.commands import TIMEOUT_S, cli_env, train_command
from tests.helpers.hydra_jobs import run_console
from tests.helpers.synthetic import STEPS_PER_EPOCH
from tests.helpers.worlds import hold_lock, make_world, run_in_world, snapshot

TESTS = Path(__file__).resolve().parent


class Evil:
    """Pickled, it makes whoever unpickles it create `marker`: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.mkdir, (str(self.marker),)


def in_config(key: str, value: object) -> Callable[[Path], None]:
    """The run's saved config with `key` set to `value` ("{w}" in its strings: the world)."""

    def spoil(w: Path) -> None:
        path = w / "run" / ".hydra" / "config.yaml"
        config = OmegaConf.load(path)
        OmegaConf.update(config, key, json.loads(json.dumps(value).replace("{w}", str(w))))
        OmegaConf.save(config, path)

    return spoil


def in_checkpoint(change: Callable[[dict, Path], object]) -> Callable[[Path], None]:
    def spoil(w: Path) -> None:
        last = w / "run" / "checkpoints" / "last.ckpt"
        checkpoint = torch.load(last, weights_only=True)
        change(checkpoint, w)
        torch.save(checkpoint, last)

    return spoil


def naming(key: str, where: str, drop_dirpath: bool = False) -> Callable[[Path], None]:
    """last.ckpt's checkpoint states point `key` at `where` ("{w}": the world), where a pickle
    that would run code lies (and a folder of someone's files, for a delete)."""

    def change(checkpoint: dict, w: Path) -> None:
        for state in checkpoint["callbacks"].values():
            if drop_dirpath:
                state.pop("dirpath", None)
            if state.get(key):
                state[key] = where.format(w=w)

    return in_checkpoint(change)


def tensorboard_link_out(w: Path) -> None:
    shutil.rmtree(w / "run" / "tensorboard")
    (w / "run" / "tensorboard").symlink_to(w / "data")


def fifo(name: str) -> Callable[[Path], None]:  # the run's file `name` replaced by a FIFO
    return lambda w: ((w / "run" / name).unlink(), os.mkfifo(w / "run" / name))


def alias_bomb(w: Path) -> None:
    """A kilobyte of YAML aliases that would expand to billions of nodes."""
    levels = ["x0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    levels += [f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = w / "run" / ".hydra" / "config.yaml"
    path.write_text("\n".join(levels) + "\n" + path.read_text())


OPEN = "${oc.create:{_target_: builtins.open, file: '{w}/data/keep.txt', mode: w}}"
LAST = "{w}/run/checkpoints/last.ckpt"
CALLBACKS = "lightning.pytorch.callbacks"
ESCAPED = {"_target_": f"{CALLBACKS}.Timer", "duration": "\\" + OPEN}  # live after resolving
# a Lightning callback that writes where it is told
SPIKES = {"_target_": f"{CALLBACKS}.SpikeDetection", "exclude_batches_path": "{w}/data/x.json"}
# (how the run is spoiled, the words of its one-line refusal; {w}: the world)
CASES = [
    # code in its saved config: a node conf/ lacks may choose values, not code
    (
        in_config("callbacks.evil", OPEN),
        "callbacks.evil._target_='builtins.open', which conf/ lacks; a run directory may choose "
        "values, not code.",
    ),
    (in_config("callbacks.evil", ESCAPED), "an interpolation after resolving; a run directory"),
    (in_config("callbacks.last_checkpoint._args_", ["/tmp"]), "_args_, which mnist-train's conf"),
    (in_config("model.lr", "${nope}"), "config.yaml cannot be read (Interpolation key 'nope' not"),
    (in_config("callbacks.evil", SPIKES), "SpikeDetection', which conf/ lacks; a run directory"),
    (  # a callback of one's own, not named again
        in_config("callbacks.evil", {"_target_": "probes.KillAt"}),
        "If you trust it, name it on the command line: +callbacks.evil._target_=probes.KillAt",
    ),
    # every place a resumed run writes is checked as built
    (in_config("callbacks.last_checkpoint.dirpath", "{w}/data"), "to {w}/data/last.ckpt, outside"),
    (in_config("callbacks.last_checkpoint.dirpath", "~/escaped"), f"to {Path.home()}/escaped/last"),
    (  # a checkpoint file name leading out
        in_config("callbacks.last_checkpoint.filename", "../../../escaped"),
        "{w}/run/checkpoints/../../../escaped.ckpt, outside the run {w}/run: a run writes only",
    ),
    (  # a checkpoint without a folder: where the command runs
        in_config("callbacks.best_checkpoint", {"dirpath": "", "filename": "escaped"}),
        "ModelCheckpoint(filename='escaped') would write to escaped.ckpt, outside the run",
    ),
    (in_config("callbacks.last_checkpoint.filename", "{y{x.__class__:{c}}"), "a metric and a nu"),
    (in_config("callbacks.last_checkpoint.filename", "{epoch.__class__}"), "{epoch.__class__}': a"),
    (in_config("logger.tensorboard.version", "../../escaped"), "TensorBoardLogger would write to"),
    # the run's files
    (tensorboard_link_out, "{w}/run/tensorboard is a symbolic link; a run or sweep directory"),
    (fifo("train.log"), "train.log is a FIFO"),
    (lambda w: os.link(w / "run" / "train.log", w / "data" / "train.log"), "with 2 hard links"),
    (alias_bomb, "config.yaml cannot be read (it uses YAML aliases, which mnist-train never"),
    (lambda w: os.truncate(w / "run/.hydra/config.yaml", 10**6 + 1), "(larger than 1000000 bytes)"),
    (
        lambda w: (w / "run/.hydra/config.yaml").write_text("[1, 2]"),
        ".hydra/config.yaml is not a config mnist-train saved",
    ),
    (lambda w: shutil.rmtree(w / "run"), "resume={w}/run: there is no such run directory."),
    # its checkpoint (with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, torch would unpickle it)
    (lambda w: Path(LAST.format(w=w)).unlink(), "/run/checkpoints/last.ckpt is missing; the run"),
    (  # a pickle as last.ckpt
        lambda w: torch.save({"state_dict": Evil(w / "ran")}, LAST.format(w=w)),
        "last.ckpt cannot be read: it asks to run posix.mkdir as it is loaded (read as weights",
    ),
    (  # where a pickle that would run code lies
        naming("best_model_path", "{w}/elsewhere.ckpt"),
        "best_model_path={w}/elsewhere.ckpt, outside its run {w}/run",
    ),
    (  # a path Lightning would rm -r when a better checkpoint comes, without dirpath
        naming("best_model_path", "{w}/run/checkpoints/../../someones", True),
        "best_model_path={w}/run/checkpoints/../../someones, outside its run",
    ),
    (  # a buffer of the wrong shape, which Lightning's restore would refuse after the logs began
        in_checkpoint(lambda c, w: c["state_dict"].update(val_acc_best=torch.zeros(5))),
        "last.ckpt cannot be restored (Error(s) in loading state_dict for MNISTClassifier: size",
    ),
    (  # an optimizer state of the wrong shape (it segfaulted in the fused AdamW)
        in_checkpoint(
            lambda c, w: c["optimizer_states"][0]["state"][0].update(exp_avg=torch.zeros(3))
        ),
        "holds exp_avg of shape (3,), not a contiguous tensor of shape (64, 784)); the file is dam",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("spoil", "words"), CASES, ids=[words for _, words in CASES])
def test_a_spoiled_run_directory_is_refused_and_runs_nothing(
    spoil: Callable[[Path], None], words: str, trained_run: Path, tmp_path: Path
) -> None:
    w = make_world(tmp_path / "a b (c) ü", trained_run)  # Hydra reads it only quoted
    (w / "data" / "keep.txt").write_text("mine")
    torch.save({"state_dict": Evil(w / "ran")}, w / "elsewhere.ckpt")
    (w / "someones").mkdir()
    (w / "someones" / "file.txt").write_text("theirs")
    spoil(w)
    env = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "PYTHONPATH": str(TESTS)}
    args = [f"++resume={hydra_quoted(str(w / 'run'))}", "trainer.max_epochs=3"]  # 3rd epoch
    done, before, after = run_in_world("train", args, w, env, directory_times=True)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stdout + done.stderr, lines[-40:]
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert words.replace("{w}", str(w)) in lines[0], lines[0]
    assert not (w / "ran").exists()  # no code from the run directory or checkpoint ran
    assert after == before  # nothing that existed changed (keep.txt), nor added


UNTRUSTED = [
    "mnist_lightning.model.classifier.MNISTClassifier",  # at a key conf/ does not have
    "lightning.pytorch.callbacks.model_checkpoint.os.system",
    "lightning.pytorch.loggers.CometLogger",  # calls a server of the run's choosing
    "lightning.pytorch.loggers.MLFlowLogger",  # a tracker, but not as a logger.<name>
    ["os.system"],
]


def test_a_saved_config_takes_its_classes_from_the_command_or_a_short_list() -> None:
    """The same class by name is found where it moved since the run was saved."""
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


def checkpoint_state(folder: object) -> dict:
    """A ModelCheckpoint's state, its best checkpoint in `folder`."""
    best = f"{folder}/best-epoch001.ckpt"
    paths = {"best_model_path": best, "kth_best_model_path": best, "best_k_models": {best: 0.9}}
    return {"dirpath": str(folder), "last_model_path": "", **paths}


def test_a_runs_checkpoints_are_written_and_name_files_only_inside_it(tmp_path: Path) -> None:
    """Written where Lightning computed (a logger's `name` can lead out); a moved run's
    checkpoint state follows it (one that leads out of the run: the table above)."""
    (tmp_path / "run").mkdir()
    inside = AtomicCheckpointIO(tmp_path / "run")
    inside.save_checkpoint({"x": 1}, tmp_path / "run" / "checkpoints" / "last.ckpt")
    for outside in (tmp_path / "escaped.ckpt", tmp_path / "run" / ".." / "escaped.ckpt"):
        with pytest.raises(CheckpointError, match=r"outside the run .* Nothing was written"):
            inside.save_checkpoint({"x": 1}, outside)
    assert not (tmp_path / "escaped.ckpt").exists()
    moved = {"callbacks": {"ModelCheckpoint": checkpoint_state("/elsewhere/run/checkpoints")}}
    checkpoint = confine_paths(moved, tmp_path / "copy" / "checkpoints" / "x")
    here = (tmp_path / "copy" / "checkpoints").resolve()
    assert checkpoint["callbacks"]["ModelCheckpoint"] == checkpoint_state(here)


def test_metrics_files_are_strict_json(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "m.json", {"test/loss": math.nan, "curve": [math.inf, 1.0]})
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text, parse_constant=pytest.fail) == {"test/loss": None, "curve": [None, 1.0]}


@pytest.mark.slow
def test_one_process_writes_a_run(tmp_path: Path, synthetic_mnist: Path, trained_run: Path) -> None:
    """resume=latest passes over a live lock (resume=, mnist-eval, mnist-export: test_bad_input);
    a dead holder's blocks nothing: of two resumes at once one runs, the other names it, and the
    one continues the finished run in its own directory, its own config, one curve."""
    runs = tmp_path / "outputs" / "runs"
    finished, live = runs / "0-finished", runs / "1-live"
    for run in (finished, live):
        shutil.copytree(trained_run, run)
    holder = hold_lock(live)
    untouched = [snapshot(run, directory_times=True) for run in (finished, live)]
    latest = run_console(
        "train", ["resume=latest"], tmp_path, {"MNIST_DATA_DIR": str(synthetic_mnist)}
    )
    os.close(holder)  # its process died
    assert latest.returncode == 0, latest.stderr[-3000:]
    assert f"passing over {Path('outputs/runs') / live.name}" in latest.stderr
    assert "finished before" in latest.stdout and "nothing to do" in latest.stdout
    assert "raise trainer.max_epochs above 2" in latest.stdout  # how to train it further
    assert [snapshot(run, directory_times=True) for run in (finished, live)] == untouched

    resume = train_command(f"resume={live}", "trainer.max_epochs=10", synthetic=False)
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    both = [
        subprocess.Popen(resume, cwd=tmp_path, env=cli_env(synthetic_mnist), **pipes)
        for _ in range(2)
    ]
    said = [p.communicate(timeout=TIMEOUT_S)[0] for p in both]
    assert sorted(p.returncode for p in both) == [0, 2], said
    (winner,) = [p for p in both if p.returncode == 0]
    assert any(f"process {winner.pid} (mnist-train) is writing it" in s for s in said), said
    assert " s since the resume\n" in said[both.index(winner)]  # the results table's time
    last = live / "checkpoints" / "last.ckpt"
    assert f"Resuming {live} from {last}" in (live / "train.log").read_text()
    assert len({(r / ".hydra/config.yaml").read_text() for r in (trained_run, live)}) == 1
    assert json.loads((live / "metrics.json").read_text())["global_step"] == 10 * STEPS_PER_EPOCH
    assert torch.load(last, weights_only=True)["global_step"] == 10 * STEPS_PER_EPOCH
    # One curve, nothing repeated, at Lightning's steps; no new run beside.
    curve = EventAccumulator(str(live / "tensorboard")).Reload().Scalars("val/acc")
    assert [e.step + 1 for e in curve] == [STEPS_PER_EPOCH * k for k in range(1, 11)]
    assert sorted(runs.iterdir()) == [finished, live]


def test_a_file_torch_will_not_read_as_weights_says_why(
    tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    """torch's refusal opens with paragraphs of advice (a TorchScript export: with a warning)."""
    torch.save({"state_dict": {}}, tmp_path / "p4.ckpt", pickle_protocol=4)  # framing it refuses
    torch.save({"state_dict": {"net.w": 1}, "hyper_parameters": {}}, tmp_path / "int.ckpt")
    torch.jit.save(torch.jit.script(torch.nn.Linear(1, 1)), tmp_path / "model.pt")
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "int.ckpt").read_bytes()[:300])
    (tmp_path / "empty.ckpt").touch()
    recwarn.clear()
    for name, words in [
        ("p4.ckpt", "(Unsupported operand 149"),
        ("cut.ckpt", "cut.ckpt cannot be read: it is truncated or damaged."),
        ("empty.ckpt", "empty.ckpt cannot be read: it is not a torch checkpoint."),
        ("model.pt", "TorchScript export"),
        ("int.ckpt", "int.ckpt: its weights cannot be loaded (no state_dict of named tensors"),
        (".", "cannot be read: it is a directory, not a regular file."),
    ]:
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(tmp_path / name)
        assert words in str(info.value) and "In PyTorch 2.6" not in str(info.value)
    assert not [w for w in recwarn if "TorchScript" in str(w.message)]


@pytest.mark.parametrize(
    ("raised", "says"),
    [
        ("MisconfigurationException('You restored a checkpoint with current_epoch=34')", "trainer"),
        ("RuntimeError('size mismatch for val_acc_best')", "the file is damaged or was edited"),
    ],
)
def test_what_lightnings_restore_refuses_is_the_checkpoints_fault_unless_it_is_the_configs(
    raised: str, says: str
) -> None:
    """Raised where Lightning restores a resumed run's state (checkpoint_connector.py)."""
    where = "lightning/pytorch/trainer/connectors/checkpoint_connector.py"
    restore = compile(f"raise {raised}", where, "exec")
    trainer = type("Trainer", (), {"interrupted": False})()
    refused = pytest.raises((ConfigError, CheckpointError), match=says)
    with refused, lightning_errors(trainer, Path("run"), "run/checkpoints/last.ckpt"):
        exec(restore, {"MisconfigurationException": MisconfigurationException})
