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
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from mnist_lightning.cli.predict import is_grid, write_grid
from mnist_lightning.data.datasets import raw_dir
from tests.helpers.synthetic import SMALL
from tests.helpers.tiers import one_of_each_kind
from tests.helpers.worlds import Command, last_ckpt, make_world, run_in_world

Setup = Callable[[Path], list[str]]  # prepares the world `w`, returns the command's arguments


def then(change: Callable[[Path], object], args: Setup) -> Setup:
    def setup(w: Path) -> list[str]:
        change(w)
        return args(w)

    return setup


def train(*overrides: str) -> Setup:
    return lambda w: [*SMALL, *(o.format(w=w, last=last_ckpt(w)) for o in overrides)]


def ckpt(make: Callable[[Path], Path]) -> Setup:
    return lambda w: [f"ckpt_path={make(w)}"]


def evaluate(*overrides: str) -> Setup:
    """mnist-eval of the run's last.ckpt with `overrides` ({w}: the world)."""
    return lambda w: (
        [f"ckpt_path={last_ckpt(w)}", "data_source=files", "device=cpu"]
        + [o.format(w=w) for o in overrides]
    )


def export(*overrides: str) -> Setup:
    """mnist-export of the run's last.ckpt to TorchScript at <world>/model.pt."""
    return lambda w: [
        f"ckpt_path={last_ckpt(w)}",
        "format=torchscript",
        "data_source=files",
        f"output={w / 'model.pt'}",
        *(o.format(w=w) for o in overrides),
    ]


def predict(*overrides: str) -> Setup:
    """mnist-predict on the world's good picture, with `overrides` ({w}: the world)."""
    return lambda w: (
        [f"ckpt_path={last_ckpt(w)}", f"inputs={w / 'pictures' / 'one.png'}"]
        + [o.format(w=w) for o in overrides]
    )


def picture(make: Callable[[Path], None]) -> Setup:
    """mnist-predict on one picture, x.png, that `make` writes."""
    return then(
        lambda w: make(w / "x.png"),
        lambda w: [f"ckpt_path={last_ckpt(w)}", f"inputs={w / 'x.png'}"],
    )


def damaged_copy(w: Path, name: str, keep: int) -> Path:
    """A copy of the run's last.ckpt cut to its first `keep` bytes (0: empty)."""
    (w / name).write_bytes(Path(last_ckpt(w)).read_bytes()[:keep])
    return w / name


def edited_ckpt(w: Path, **hyper_parameters: object) -> Path:
    checkpoint = torch.load(last_ckpt(w), weights_only=True)
    checkpoint["hyper_parameters"].update(hyper_parameters)
    torch.save(checkpoint, w / "edited.ckpt")
    return w / "edited.ckpt"


def idx(name: str, make: Callable[[Path], None]) -> Callable[[Path], None]:
    """Replace the IDX file `name` of the world's data by what `make` puts at its path."""

    def replace(w: Path) -> None:
        path = raw_dir(w / "data") / name
        path.unlink()
        make(path)

    return replace


def without_hydra(w: Path) -> list[str]:
    shutil.rmtree(w / "run" / ".hydra")
    return [f"resume={w / 'run'}"]


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


def special_pictures(w: Path) -> list[str]:
    """Among the pictures: a FIFO, a link to /dev/zero, a socket, a dangling link and names a
    terminal would act on, beside a good picture; another FIFO, a name that is nothing and a
    folder with no pictures given by name; the grid replaces an earlier grid."""
    pictures = w / "pictures"
    os.mkfifo(pictures / "fifo.png")
    (pictures / "zero.png").symlink_to("/dev/zero")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(pictures / "sock.png"))  # the socket file stays when the socket is closed
    (pictures / "gone.png").symlink_to(w / "no-such.png")
    (pictures / "new\nline.png").write_bytes(b"not a picture")
    (pictures / "title\x1b]0;pwned\x07\udcff.png").write_bytes(b"not a picture")
    os.mkfifo(w / "named.png")
    (w / "empty").mkdir()
    write_grid(
        w / "grid.png", [torch.ones(28, 28)], [{"file": "a.png", "digit": 1, "probability": 1}]
    )
    return [
        f"ckpt_path={last_ckpt(w)}",
        f"inputs=[{pictures},{w / 'named.png'},{w / 'nothing.png'},{w / 'empty'}]",
        f"grid={w / 'grid.png'}",
    ]


@dataclass(frozen=True)
class Case:
    command: str
    setup: Setup
    words: tuple[str, ...]  # in stderr; {w} is the world
    status: int = 2
    replaced: str = ""  # a grid of the world mnist-predict may replace by a new one
    stdout: tuple[str, ...] = ()  # what was still done


SKIPPED = "skipped: {w}/pictures/"
CASES: dict[str, Case] = {
    # config
    "unknown key": Case("train", train("model.dropuot=0.3"), ("did you mean model.dropout?",)),
    "dropout out of range": Case("train", train("model.dropout=1.5"), ("model.dropout=1.5",)),
    "a key added that the model lacks": Case(
        "train",
        train("+model.dropuot=0.3"),
        ("MNISTClassifier takes no argument dropuot. Did you mean model.dropout?",),
    ),
    "a callback without its class": Case(
        "train",
        train("+callbacks.zzz.patience=1", "paths.data_dir={w}/new"),
        ("callbacks.zzz names no class to build",),
    ),
    "an override Hydra cannot read": Case(
        "train", train("model.hidden_dims=[512,256"), ("Hydra cannot read it",)
    ),
    "hydra key misspelt": Case("train", train("hydra.run.dri=x"), ("did you mean hydra.run.dir?",)),
    "a sweep's second job": Case("train", train("-m", "model.dropout=0,1.5"), ("dropout=1.5",)),
    "a key misspelt in a sweep over presets": Case(
        "train",
        train("-m", "model=mlp_128,mlp_64_64_64", "model.dropuot=0.1"),
        ("did you mean model.dropout?",),
    ),
    "unknown activation": Case("train", train("model.activation=swish"), ("swish",)),
    "unknown preset": Case("train", train("model=mlp_9000"), ("model=mlp_9000 is not a preset",)),
    "no gpu here": Case("train", train("trainer.accelerator=gpu"), ("trainer.accelerator=gpu",)),
    "no gpu here, a sweep": Case(
        "train", train("-m", "model.dropout=0,0.5", "trainer.accelerator=gpu"), ("accelerator=gpu",)
    ),
    "a sweep's checkpoint missing": Case(
        "train", train("-m", "model.dropout=0,0.5", "ckpt_path={w}/nope.ckpt"), ("nope.ckpt",)
    ),
    "a sweep's data directory unusable": Case(
        "train", train("-m", "model.dropout=0,0.5", "paths.data_dir=/proc/nope"), ("/proc/nope",)
    ),
    "a sweep's params merged into a null": Case(
        "train", train("hydra.sweeper.params={{model.dropout:'0,1.5'}}", "-m"), ("cannot compose",)
    ),
    "a sweep's data too small": Case(
        "train", train("-m", "model.dropout=0,0.5", "data.val_size=300"), ("data.val_size=300",)
    ),
    "data directory unusable": Case("train", train("paths.data_dir=/proc/nope"), ("/proc/nope",)),
    "data files missing in a new folder": Case(
        "train",
        train("paths.data_dir={w}/new"),
        ("new/MNIST/raw/train-labels-idx1-ubyte: cannot read",),
    ),
    "a needed group set to null": Case("train", train("model=null"), ("needs a preset of conf/",)),
    "a key misspelt above its level": Case(
        "train", train("logger.tensorbord.name=x"), ("did you mean logger.tensorboard.name?",)
    ),
    "a Trainer argument added misspelt (no MLflow store made)": Case(
        "train",
        train("logger=mlflow", "+trainer.gradient_clip_vall=1"),
        ("Did you mean trainer.gradient_clip_val?",),
    ),
    "a Trainer value Lightning refuses (no MLflow store made)": Case(
        "train", train("logger=mlflow", "trainer.precision=17"), ("Precision 17 is invalid",)
    ),
    "a keyword TensorBoard's logger sets itself": Case(
        "train", train("+logger.tensorboard.log_dir={w}/x"), ("logger.tensorboard.log_dir: ",)
    ),
    "a keyword a logger hands on to what refuses it": Case(
        "train",
        train("logger=many", "+logger.wandb.foo=1", "paths.data_dir={w}/new"),
        ("logger.wandb.foo: ", "no argument"),
    ),
    "a tracker's run whose data is missing": Case(
        "train", train("logger=mlflow", "paths.data_dir={w}/none"), ("none/MNIST/raw/train-",)
    ),
    "a training group given to mnist-eval": Case(
        "eval", evaluate("+trainer=gpu"), ("+trainer= is not for mnist-eval",)
    ),
    "an optional group set to null": Case("train", train("logger=null"), ("delete it: ~logger",)),
    "checkpoint missing": Case("train", train("ckpt_path={w}/nope.ckpt"), ("nope.ckpt",)),
    "a callback refuses its value, its data to be fetched": Case(
        "train",
        train("callbacks.best_checkpoint.mode=foo", "paths.data_dir={w}/new"),
        ("callbacks.best_checkpoint cannot be built", "foo"),
    ),
    "a logger's folder unwritable, its data to be fetched": Case(
        "train",
        train("logger.tensorboard.save_dir={w}/run/metrics.json/tb", "paths.data_dir={w}/new"),
        ("logger.tensorboard.save_dir: cannot write to",),
    ),
    "a checkpoint folder unwritable, its data to be fetched": Case(
        "train",
        train("callbacks.best_checkpoint.dirpath={w}/run/metrics.json/c", "paths.data_dir={w}/new"),
        ("callbacks.best_checkpoint.dirpath: cannot write to",),
    ),
    "an MLflow store in no folder, its data to be fetched": Case(
        "train",
        train(
            "logger=mlflow",
            "logger.mlflow.tracking_uri=sqlite:///{w}/no/m.db",
            "paths.data_dir={w}/new",
        ),
        ("no is not a directory; MLflow keeps its store",),
    ),
    "a function named as a callback, the command refused": Case(
        "train",
        train(
            "+callbacks.x._target_=mnist_lightning.files.atomic_write_json",
            "+callbacks.x.path={w}/made.json",
            "+callbacks.x.obj=1",
            "trainer.precision=17",
        ),
        ("Precision 17 is invalid",),
    ),
    "Lightning refuses the Trainer with the callbacks, its data to be fetched": Case(
        "train",
        train("+trainer.enable_checkpointing=false", "paths.data_dir={w}/new"),
        ("enable_checkpointing=False", "ModelCheckpoint"),
    ),
    "outputs/ a file": Case(
        "train",
        then(lambda w: (w / "outputs").write_text("not a directory"), train()),
        ("hydra.run.dir", "outputs/runs"),
    ),
    "run dir under a file": Case(
        "train",
        train("hydra.run.dir={w}/run/metrics.json/new"),
        ("hydra.run.dir=", "metrics.json/new", "metrics.json is a regular file"),
    ),
    "a new run into an existing one": Case(
        "train",
        train("hydra.run.dir={w}/run"),
        ("hydra.run.dir=", "already holds files", "resume="),
    ),
    "a resume the Trainer refuses, its data to be fetched": Case(
        "train",
        lambda w: [
            f"resume={w / 'run'}",
            f"paths.data_dir={w}/new",
            "trainer.max_epochs=9",
            "trainer.devices=abc",
        ],
        ("`devices` selected with",),
    ),
    "a sweep's Trainer value": Case(
        "train", train("-m", "model.dropout=0,0.5", "trainer.precision=17"), ("Precision 17",)
    ),
    "resume and ckpt_path": Case(
        "train",
        lambda w: [f"resume={w / 'run'}", f"ckpt_path={last_ckpt(w)}"],
        ("resume=", "ckpt_path=", "not both"),
    ),
    "run without .hydra": Case("train", without_hydra, (".hydra/config.yaml",)),
    "other architecture": Case(
        "train",
        train("ckpt_path={last}", "model.hidden_dims=[7]"),
        ("last.ckpt", "different architecture"),
    ),
    # data
    "data dir not writable": Case(
        "train",
        train("data.source=auto", "paths.data_dir={w}/run/metrics.json/d"),
        ("metrics.json/d", "MNIST_DATA_DIR"),
    ),
    "idx link to /dev/zero": Case(
        "train",
        then(idx("train-images-idx3-ubyte", lambda p: p.symlink_to("/dev/zero")), train()),
        ("train-images-idx3-ubyte: cannot read (a character device, not a regular file)",),
    ),
    # mnist-eval: checkpoints, its data, where it writes
    "missing checkpoint": Case("eval", lambda w: ["ckpt_path=/no/such.ckpt"], ("/no/such.ckpt",)),
    "empty checkpoint": Case(
        "eval",
        ckpt(lambda w: damaged_copy(w, "e.ckpt", 0)),
        ("e.ckpt cannot be read: it is not a torch checkpoint",),
    ),
    "truncated checkpoint": Case(
        "eval",
        ckpt(lambda w: damaged_copy(w, "t.ckpt", 5000)),
        ("t.ckpt cannot be read: it is truncated or damaged",),
    ),
    "corrupt checkpoint": Case(
        "eval",
        then(
            lambda w: (w / "bad.ckpt").write_bytes(b"\x00garbage" * 100),
            ckpt(lambda w: w / "bad.ckpt"),
        ),
        ("bad.ckpt cannot be read: it is not a torch checkpoint",),
    ),
    "future checkpoint": Case(  # a key this version does not know
        "eval",
        ckpt(lambda w: edited_ckpt(w, attention_heads=8)),
        ("edited.ckpt", "attention_heads"),
    ),
    "weights unlike its hyper_parameters": Case(
        "eval", ckpt(lambda w: edited_ckpt(w, hidden_dims=[7])), ("its weight shapes:",)
    ),
    "eval idx link to /dev/zero": Case(
        "eval",
        then(idx("t10k-images-idx3-ubyte", lambda p: p.symlink_to("/dev/zero")), evaluate()),
        ("t10k-images-idx3-ubyte: cannot read (a character device, not a regular file)",),
    ),
    "eval while the run is being written": Case(
        "eval",
        then(run_held_elsewhere, evaluate()),
        ("is in use", "mnist-train", "run mnist-eval again"),
    ),
    "eval with <run>/eval a link": Case(
        "eval", then(eval_is_a_link, evaluate()), ("run/eval is a symbolic link, not a directory",)
    ),
    # mnist-export: where it writes (the example: a checkpoint named model.pt, exported
    # to TorchScript, by default over itself)
    "export model.pt by default over itself": Case(
        "export",
        then(
            lambda w: shutil.copy(last_ckpt(w), w / "model.pt"),
            lambda w: [f"ckpt_path={w / 'model.pt'}", "format=torchscript"],
        ),
        ("model.pt (by default the checkpoint's path with .pt) is the checkpoint",),
    ),
    "export over an unrelated file": Case(
        "export",
        then(lambda w: (w / "model.pt").write_text("my notes"), export()),
        ("model.pt exists and is not an earlier mnist-export torchscript file",),
    ),
    # mnist-predict: pictures, special files among them, the grid
    "blank image": Case(
        "predict", picture(lambda p: Image.new("L", (64, 64), 255).save(p)), ("x.png", "blank")
    ),
    "huge image": Case(
        "predict",
        picture(lambda p: Image.new("1", (14000, 14000), 1).save(p)),
        ("x.png: not a readable image (Image size",),
    ),
    "special files as pictures": Case(
        "predict",
        special_pictures,
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
        status=1,
        replaced="grid.png",
        stdout=("pictures/one.png",),
    ),
    "grid over a picture": Case(
        "predict",
        then(lambda w: Image.new("L", (32, 32), 128).save(w / "p.png"), predict("grid={w}/p.png")),
        ("grid={w}/p.png exists and is not a grid mnist-predict wrote",),
    ),
    **{
        f"hydra.run.dir of mnist-{tool} unwritable": Case(
            tool,
            args("hydra.run.dir={w}/run/metrics.json/y"),
            ("hydra.run.dir=", "cannot write to"),
        )
        for tool, args in (("predict", predict), ("eval", evaluate), ("export", export))
    },
    "hydra.sweep.dir unwritable": Case(
        "train",
        train("model.dropout=0,0.5", "hydra.sweep.dir={w}/run/metrics.json/s", "-m"),
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
    args, times = expected.setup(w), w.stat().st_mtime_ns
    train = expected.command == "train"  # a refused mnist-train leaves even the folders' times
    outcome = run_in_world(
        Command(expected.command, args, w, timeout_s=60, memory_gib=4), directory_times=train
    )
    assert not train or w.stat().st_mtime_ns == times
    done = outcome.done
    assert done.returncode == expected.status, done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    if expected.status == 2:  # one line, `Error: ` (after Lightning's start-up lines, if it got
        # that far) or mnist-predict's `skipped: `
        errors = [line for line in lines if line.startswith(("Error: ", "skipped: "))]
        assert errors == lines[-1:] and (expected.command != "predict" or len(lines) == 1), lines
    for words in expected.words:
        assert words.format(w=w) in done.stderr, done.stderr[-3000:]
    for words in expected.stdout:
        assert words in done.stdout, done.stdout
    before, after = outcome.before, outcome.after
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
    done = run_in_world(Command("train", args, w)).done
    out = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in out and "float-castable" not in out, out
    assert "Job 0 failed: trainer cannot be built from its config: Precision 17" in out
    assert "| failed: trainer cannot be built" in out and "1 of 1 jobs failed." in out
    assert not (w / "outputs" / "mlflow.db").exists()
