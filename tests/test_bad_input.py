"""Every console command against bad input (docs/reliability.md's cases), through its console
entry in the test process, in a user's world (tests/helpers/worlds.py): exit status 2 (or the
case's own) with one clear line naming the key, file or value, no traceback, and everything
that existed left as it was, but for a file the command may replace (an earlier grid).
Special files are skipped or refused by name, never opened (a FIFO hung mnist-predict; a link
to /dev/zero was read until memory ran out): each command runs under a 60 s alarm and a 4 GiB
address-space margin, so such a regression fails its case instead of the machine. The checks
themselves, value by value, are in test_predict.py, test_tool_arguments.py, test_config.py and
test_idx.py: here is one case of each way a command can fail."""

import fcntl
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from mnist_lightning.cli.predict import is_grid, write_grid
from mnist_lightning.data.datasets import raw_dir
from tests.helpers.synthetic import SMALL, merged
from tests.helpers.tiers import one_of_each_kind
from tests.helpers.worlds import last_ckpt, make_world, run_in_world, unix_socket

# What a command gets before a case's own arguments, which replace those of the same key.
BASE = {
    "train": SMALL,
    "eval": ["ckpt_path={last}", "data_source=files", "device=cpu"],
    "export": ["ckpt_path={last}", "format=torchscript", "data_source=files"],
    "predict": ["ckpt_path={last}", "inputs={w}/pictures/one.png"],
}


def stopped_at_epoch_3(w: Path) -> None:
    """The run as if interrupted after 3 epochs (as Lightning counts them: its loops' state)."""
    checkpoint = torch.load(last_ckpt(w), weights_only=True)
    checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] = 3
    checkpoint["epoch"] = 3
    torch.save(checkpoint, last_ckpt(w))
    (w / "run" / "metrics.json").unlink()


def idx(name: str, make: Callable[[Path], None]) -> Callable[[Path], None]:
    """Replace the IDX file `name` of the world's data by what `make` puts at its path."""

    def replace(w: Path) -> None:
        path = raw_dir(w / "data") / name
        path.unlink()
        make(path)

    return replace


def run_held_elsewhere(w: Path) -> None:
    """The run's lock taken as another mnist-train process holds it: flock on a file
    description of its own, the holder's name in the file (held until the tests end)."""
    fd = os.open(w / "run" / ".lock", os.O_RDWR | os.O_CREAT)
    os.write(fd, b"process 4242 (mnist-train)")
    fcntl.flock(fd, fcntl.LOCK_EX)


def eval_is_a_link(w: Path) -> None:
    (w / "elsewhere").mkdir()
    (w / "elsewhere" / "notes.txt").write_text("mine")
    (w / "run" / "eval").symlink_to(w / "elsewhere")


def special_pictures(w: Path) -> None:
    """Among the pictures: a FIFO, a link to /dev/zero, a socket, a dangling link and names a
    terminal would act on, beside a good picture; beside them a FIFO, a folder with no
    pictures, and an earlier grid."""
    pictures = w / "pictures"
    os.mkfifo(pictures / "fifo.png")
    (pictures / "zero.png").symlink_to("/dev/zero")
    unix_socket(pictures / "sock.png")
    (pictures / "gone.png").symlink_to(w / "no-such.png")
    (pictures / "new\nline.png").write_bytes(b"not a picture")
    (pictures / "title\x1b]0;pwned\x07\udcff.png").write_bytes(b"not a picture")
    os.mkfifo(w / "named.png")
    (w / "empty").mkdir()
    write_grid(
        w / "grid.png", [torch.ones(28, 28)], [{"file": "a.png", "digit": 1, "probability": 1}]
    )


@dataclass(frozen=True)
class Case:
    command: str
    args: str  # after BASE[command] (`alone`: instead of it); {w}: the world, {last}: last.ckpt
    words: str | tuple[str, ...]  # in stderr ({w}: the world)
    prepare: Callable[[Path], object] | None = None  # what it changes in the world first
    alone: bool = False
    status: int = 2
    replaced: str = ""  # a grid of the world mnist-predict may replace by a new one
    stdout: tuple[str, ...] = ()  # what was still done


SKIPPED = "skipped: {w}/pictures/"
CASES: dict[str, Case] = {
    # config
    "unknown key": Case("train", "model.dropuot=0.3", "did you mean model.dropout?"),
    "a sweep's second job": Case("train", "-m model.dropout=0,1.5", "dropout=1.5"),
    "a Trainer value Lightning refuses (no MLflow store made)": Case(
        "train", "logger=mlflow trainer.precision=17", "Precision 17 is invalid"
    ),
    "a tracker's run whose data is missing": Case(
        "train", "logger=mlflow paths.data_dir={w}/new", "new/MNIST/raw/train-labels-idx1-ubyte: ca"
    ),
    "a function named as a callback, the command refused": Case(
        "train",
        "+callbacks.x._target_=mnist_lightning.files.atomic_write_json "
        "+callbacks.x.path={w}/made.json +callbacks.x.obj=1 trainer.precision=17",
        "Precision 17 is invalid",
    ),
    "outputs/ a file": Case(
        "train",
        "",
        ("hydra.run.dir", "outputs/runs"),
        prepare=lambda w: (w / "outputs").write_text("not a directory"),
    ),
    "run dir under a file": Case(
        "train",
        "hydra.run.dir={w}/run/metrics.json/new",
        ("hydra.run.dir=", "metrics.json/new", "metrics.json is a regular file"),
    ),
    "a new run into an existing one": Case(
        "train", "hydra.run.dir={w}/run", ("hydra.run.dir=", "already holds files", "resume=")
    ),
    "a resume the Trainer refuses, its data to be fetched": Case(
        "train",
        "resume={w}/run paths.data_dir={w}/new trainer.max_epochs=9 trainer.devices=abc",
        "`devices` selected with",
        alone=True,
    ),
    "resume with an override that changes the run": Case(
        "train", "resume={w}/run model.lr=0.5", ("resume= continues a run", "model.lr"), alone=True
    ),
    "an existing empty directory, refused in the run": Case(
        "train",
        "hydra.run.dir={w}/empty paths.data_dir={w}/new",
        "new/MNIST/raw/train-labels-idx1-ubyte: ca",
        prepare=lambda w: (w / "empty").mkdir(),
    ),
    "a new run into an existing one, quoted": Case(
        "train", 'hydra.run.dir="{w}/run"', ("hydra.run.dir=", "already holds files")
    ),
    "down and up again": Case("train", "hydra.run.dir={w}/new/../b", "goes down and up again"),
    "a run directory through an interpolation": Case(
        "train",
        "hydra.run.dir=${{oc.env:NO_SUCH_VARIABLE,{w}/run/metrics.json/x}}",
        ("cannot write to", "metrics.json is a regular file"),
    ),
    "a callback Lightning refuses in fit": Case(
        "train",
        "~logger +callbacks.lr._target_=lightning.pytorch.callbacks.LearningRateMonitor",
        "Cannot use `LearningRateMonitor` callback with `Trainer` that has no logger",
    ),
    "a resume to fewer epochs than the run has": Case(
        "train",
        "resume={w}/run trainer.max_epochs=2",
        "resume= continues a run at epoch 3; trainer.max_epochs=2 is below it.",
        prepare=stopped_at_epoch_3,
        alone=True,
    ),
    "an Optuna study added to a file of one's own": Case(
        "train",
        "hparams_search=optuna hydra.sweeper.storage=sqlite:///{w}/run/metrics.json -m",
        "is not a store of this kind (no studies table)",
    ),
    "an MLflow store added to an empty file": Case(
        "train",
        "logger=mlflow logger.mlflow.tracking_uri=sqlite:///{w}/empty.db",
        "empty.db is not a store of this kind (no experiments table)",
        prepare=lambda w: (w / "empty.db").touch(),
    ),
    "a new run's checkpoints into another run": Case(
        "train",
        "hydra.run.dir={w}/new callbacks.last_checkpoint.dirpath={w}/run/checkpoints",
        ("ModelCheckpoint(filename='last') would write to", "outside the run {w}/new"),
    ),
    "a new run inside another through a link": Case(
        "train",
        "hydra.run.dir={w}/link/new",
        "lies in the run {w}/run",
        prepare=lambda w: (w / "link").symlink_to(w / "run" / "checkpoints"),
    ),
    "a new run inside another": Case(
        "train", "hydra.run.dir={w}/run/tensorboard/new", ("lies in the run {w}/run", "resume=")
    ),
    "a new run into an existing one by ++": Case(
        "train", "++hydra.run.dir={w}/run", ("hydra.run.dir=", "already holds files")
    ),
    "resume into another directory": Case(
        "train",
        "resume={w}/run hydra.run.dir={w}/b",
        ("continues", "drop hydra.run.dir="),
        alone=True,
    ),
    "an Optuna setting refused as the search starts": Case(
        "train",
        "hparams_search=optuna hydra.sweeper.storage=bogus -m",
        "Optuna search cannot start",
    ),
    "resume and ckpt_path": Case(
        "train", "resume={w}/run ckpt_path={last}", ("resume=", "ckpt_path=", "not both")
    ),
    "run without .hydra": Case(
        "train",
        "resume={w}/run",
        ".hydra/config.yaml",
        prepare=lambda w: shutil.rmtree(w / "run" / ".hydra"),
        alone=True,
    ),
    "other architecture": Case(
        "train", "ckpt_path={last} model.hidden_dims=[7]", ("last.ckpt", "different architecture")
    ),
    # data
    "data dir not writable": Case(
        "train",
        "data.source=auto paths.data_dir={w}/run/metrics.json/d",
        ("metrics.json/d", "MNIST_DATA_DIR"),
    ),
    "idx link to /dev/zero": Case(
        "train",
        "",
        "train-images-idx3-ubyte: cannot read (a character device, not a regular file)",
        prepare=idx("train-images-idx3-ubyte", lambda p: p.symlink_to("/dev/zero")),
    ),
    # mnist-eval: checkpoints, its data, where it writes
    # (each way a checkpoint is refused, by load_checkpoint and load_classifier: test_trust.py,
    # test_model.py, test_layout.py)
    "corrupt checkpoint": Case(
        "eval",
        "ckpt_path={w}/bad.ckpt",
        "bad.ckpt cannot be read: it is not a torch checkpoint",
        prepare=lambda w: (w / "bad.ckpt").write_bytes(b"\x00garbage" * 100),
    ),
    "eval idx link to /dev/zero": Case(
        "eval",
        "",
        "t10k-images-idx3-ubyte: cannot read (a character device, not a regular file)",
        prepare=idx("t10k-images-idx3-ubyte", lambda p: p.symlink_to("/dev/zero")),
    ),
    "eval while the run is being written": Case(
        "eval", "", ("is in use", "mnist-train", "run mnist-eval again"), prepare=run_held_elsewhere
    ),
    "eval with <run>/eval a link": Case(
        "eval", "", "run/eval is a symbolic link, not a directory", prepare=eval_is_a_link
    ),
    # mnist-export: where it writes (the example: a checkpoint named model.pt, exported
    # to TorchScript, by default over itself)
    "export model.pt by default over itself": Case(
        "export",
        "ckpt_path={w}/model.pt",
        "model.pt (by default the checkpoint's path with .pt) is the checkpoint",
        prepare=lambda w: shutil.copy(last_ckpt(w), w / "model.pt"),
    ),
    "export over an unrelated file": Case(
        "export",
        "output={w}/model.pt",
        "model.pt exists and is not an earlier mnist-export torchscript file",
        prepare=lambda w: (w / "model.pt").write_text("my notes"),
    ),
    # mnist-predict: the grid (first: the fast tier's case), pictures, special files among them
    "grid over a picture": Case(
        "predict",
        "grid={w}/p.png",
        "grid={w}/p.png exists and is not a grid mnist-predict wrote",
        prepare=lambda w: Image.new("L", (32, 32), 128).save(w / "p.png"),
    ),
    "huge image": Case(
        "predict",
        "inputs={w}/x.png",
        "x.png: not a readable image (Image size",
        prepare=lambda w: Image.new("1", (14000, 14000), 1).save(w / "x.png"),
    ),
    "special files as pictures": Case(
        "predict",
        "inputs=[{w}/pictures,{w}/named.png,{w}/nothing.png,{w}/empty] grid={w}/grid.png",
        (
            SKIPPED + "fifo.png: a FIFO, not a regular file",
            SKIPPED + "zero.png: a character device, not a regular file",
            SKIPPED + "sock.png: a socket, not a regular file",
            SKIPPED + "gone.png: a dangling symbolic link",
            SKIPPED + "new\\nline.png: not a readable image",
            SKIPPED + "title\\x1b]0;pwned\\x07\\udcff.png: not a readable image",
            "skipped: {w}/named.png: a FIFO, not a regular file",
            "skipped: {w}/nothing.png: no such file or directory.",
            "skipped: {w}/empty: the directory holds no pictures (",
            "wrote {w}/grid.png",
        ),
        prepare=special_pictures,
        status=1,
        replaced="grid.png",
        stdout=("pictures/one.png",),
    ),
    **{
        f"hydra.run.dir of mnist-{tool}": Case(
            tool, "hydra.run.dir={w}/run/metrics.json/y", "decides where Hydra writes; it makes no"
        )
        for tool in ("predict", "eval", "export")
    },
    "hydra.sweep.dir unwritable": Case(
        "train",
        "model.dropout=0,0.5 hydra.sweep.dir={w}/run/metrics.json/s -m",
        ("hydra.sweep.dir=", "cannot write to"),
    ),
}


@pytest.mark.parametrize("case", one_of_each_kind(CASES, lambda case: CASES[case].command))
def test_bad_input_gets_one_clear_message_and_changes_nothing(
    case: str, trained_run: Path, tmp_path: Path
) -> None:
    expected, w = CASES[case], make_world(tmp_path, trained_run)
    drawn = Image.new("L", (64, 64), 255)
    ImageDraw.Draw(drawn).line((32, 8, 32, 56), fill=0, width=6)
    drawn.save(w / "pictures" / "one.png")
    if expected.prepare:
        expected.prepare(w)
    base = [] if expected.alone else BASE[expected.command]
    line = merged(base, expected.args.split())
    args, times = [a.format(w=w, last=last_ckpt(w)) for a in line], w.stat().st_mtime_ns
    train = expected.command == "train"  # a refused mnist-train leaves even the folders' times
    done, before, after = run_in_world(
        expected.command, args, w, directory_times=train, timeout_s=60, memory_gib=4
    )
    assert not train or w.stat().st_mtime_ns == times
    assert done.returncode == expected.status, done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    if expected.status == 2:  # one line, `Error: ` (after Lightning's start-up lines, if it got
        # that far) or mnist-predict's `skipped: `
        errors = [line for line in lines if line.startswith(("Error: ", "skipped: "))]
        assert errors == lines[-1:] and (expected.command != "predict" or len(lines) == 1), lines
    said = expected.words
    for words in (said,) if isinstance(said, str) else said:
        assert words.format(w=w) in done.stderr, done.stderr[-3000:]
    for words in expected.stdout:
        assert words in done.stdout, done.stdout
    for folder in (before, after):  # (but where the data set's lock file came and went)
        folder.pop(w / "data" / "MNIST" / "raw", None)
    if expected.replaced:  # by a regular file of the command's own
        path = w / expected.replaced
        assert after[path] != before.pop(path) and after[path][0] == "-" and is_grid(path)
    assert {p: after.get(p) for p in before} == before
    assert set(after) - set(before) <= {w / expected.replaced}  # no temporary files left


@pytest.mark.slow
def test_a_trial_lightning_refuses_fails_before_mlflow_makes_its_store(
    trained_run: Path, tmp_path: Path
) -> None:
    """Optuna picks a trial's values after Hydra started: the job checks them as the command
    line's were, before the data or a tracker's store. No trial completed: the summary says
    why, not Optuna's traceback."""
    w = make_world(tmp_path, trained_run)
    args = ["-m", *SMALL, "hparams_search=optuna", "hydra.sweeper.n_trials=1", "logger=mlflow"]
    args += ["+hydra.sweeper.params={trainer.precision:'choice(17)'}"]  # no trial completes
    done, _, _ = run_in_world("train", args, w)
    out = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in out and "float-castable" not in out, out
    assert "Job 0 failed: trainer cannot be built from its config: Precision 17" in out
    assert "| failed: trainer cannot be built" in out and "1 of 1 jobs failed." in out
    assert not (w / "outputs" / "mlflow.db").exists()
