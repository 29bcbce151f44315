"""Each way a console command can fail on bad input (docs/reliability.md), one case each, in a
user's world (value by value: test_config.py, test_tool_arguments.py, test_predict.py). A 60 s
alarm and a 4 GiB memory margin make a hang or an endless read (a FIFO, /dev/zero) a failure."""

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from mnist_lightning.cli.predict import is_grid, write_grid
from mnist_lightning.data.datasets import raw_dir
from tests.helpers.synthetic import SMALL, merged
from tests.helpers.tiers import one_of_each_kind
from tests.helpers.worlds import hold_lock, last_ckpt, make_world, run_in_world, unix_socket

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


def linked_to_dev_zero(w: Path, name: str) -> None:
    (path := raw_dir(w / "data") / name).unlink()
    path.symlink_to("/dev/zero")


# What a case changes in the world first, by name (in the test's id).
SETUP: dict[str, Callable[[Path], object]] = {
    "outputs a file": lambda w: (w / "outputs").write_text("not a directory"),
    "a link in": lambda w: (w / "link").symlink_to(w / "run" / "checkpoints"),
    "an empty file": lambda w: (w / "empty.db").touch(),
    "an empty folder": lambda w: (w / "empty").mkdir(),
    "train to /dev/zero": lambda w: linked_to_dev_zero(w, "train-images-idx3-ubyte"),
    "no .hydra": lambda w: shutil.rmtree(w / "run" / ".hydra"),
    "stopped at epoch 3": stopped_at_epoch_3,
    "corrupt": lambda w: (w / "bad.ckpt").write_bytes(b"\x00garbage" * 100),
    "t10k to /dev/zero": lambda w: linked_to_dev_zero(w, "t10k-images-idx3-ubyte"),
    "held": lambda w: hold_lock(w / "run"),  # until the tests end
    "eval a link": lambda w: (w / "run" / "eval").symlink_to(w / "data"),  # the user's files
    "ckpt": lambda w: shutil.copy(last_ckpt(w), w / "model.pt"),
    "notes": lambda w: (w / "model.pt").write_text("my notes"),
    "a picture": lambda w: Image.new("L", (32, 32), 128).save(w / "p.png"),
    "a huge image": lambda w: Image.new("1", (14000, 14000), 1).save(w / "x.png"),
}
# (command, arguments after BASE[command] (a resume's: instead), words of its one line, what of
# SETUP is done first); {w} the world, {last} its last.ckpt; each command's first: the fast tier
CASES = [
    # mnist-train, refused before Hydra starts
    ("train", "model.dropuot=0.3", "model.dropuot is not a key of this config; did you mean model"),
    ("train", "-m model.dropout=0,1.5", "model.dropout=1.5 is out of range"),  # a sweep's 2nd job
    ("train", "logger=mlflow trainer.precision=17", "Precision 17 is invalid"),  # no MLflow store
    (  # a function named as a callback is not called: the command is refused
        "train",
        "+callbacks.x._target_=mnist_lightning.files.atomic_write_json "
        "+callbacks.x.path={w}/made.json +callbacks.x.obj=1 trainer.precision=17",
        "Precision 17 is invalid",
    ),
    ("train", "", "cannot write to {w}/outputs/runs/", "outputs a file"),
    ("train", "hydra.run.dir={w}/run/metrics.json/new", "json/new: cannot write to {w}/run/metri"),
    ("train", "hydra.run.dir=${{oc.env:NO_SUCH,{w}/run/metrics.json/x}}", "json/x: cannot write"),
    ("train", "hydra.sweep.dir={w}/run/metrics.json/s -m", "({w}/run/metrics.json is a regular f"),
    ("train", "hydra.run.dir={w}/run", "{w}/run already holds files; a new run needs a directory"),
    ("train", 'hydra.run.dir="{w}/run"', "hydra.run.dir={w}/run already holds files"),  # quoted
    ("train", "++hydra.run.dir={w}/run", "hydra.run.dir={w}/run already holds files"),
    ("train", "hydra.run.dir={w}/run/tensorboard/new", "lies in the run {w}/run; a new run needs"),
    ("train", "hydra.run.dir={w}/link/new", "/link/new lies in the run {w}/run", "a link in"),
    ("train", "hydra.run.dir={w}/new/../b", "hydra.run.dir={w}/new/../b goes down and up again"),
    (  # a new run's checkpoints into another run
        "train",
        "hydra.run.dir={w}/new callbacks.last_checkpoint.dirpath={w}/run/checkpoints",
        "would write to {w}/run/checkpoints/last.ckpt, outside the run {w}/new",
    ),
    (  # an Optuna study or an MLflow store added to a file of one's own
        "train",
        "hparams_search=optuna hydra.sweeper.storage=sqlite:///{w}/run/metrics.json -m",
        "metrics.json is not a store of this kind (no studies table)",
    ),
    (
        "train",
        "logger=mlflow logger.mlflow.tracking_uri=sqlite:///{w}/empty.db",
        "empty.db is not a store of this kind (no experiments table)",
        "an empty file",
    ),
    ("train", "ckpt_path={last} resume={w}/run", "ckpt_path= starts a new run from a checkpoint"),
    ("train", "ckpt_path={last} model.hidden_dims=[7]", "last.ckpt holds a different architecture"),
    ("train", "data.source=auto paths.data_dir={w}/run/metrics.json/d", "Cannot use the data dir"),
    # mnist-train, refused once it started: nothing left of the new run
    ("train", "logger=mlflow paths.data_dir={w}/new", "new/MNIST/raw/train-labels-idx1-ubyte: ca"),
    (
        "train",
        "hydra.run.dir={w}/empty paths.data_dir={w}/new",
        "new/MNIST/raw/train-labels-idx1-ubyte: ca",
        "an empty folder",
    ),
    (
        "train",
        "~logger +callbacks.lr._target_=lightning.pytorch.callbacks.LearningRateMonitor",
        "Cannot use `LearningRateMonitor` callback with `Trainer` that has no logger",
    ),
    (  # with the CSV logger's folder made
        "train",
        "logger=csv trainer.accumulate_grad_batches=2 +callbacks.acc.scheduling={{0:2}} "
        "+callbacks.acc._target_=lightning.pytorch.callbacks.GradientAccumulationScheduler",
        "The trainer config cannot be used: You have set `accumulate_grad_batches` and are using",
    ),
    ("train", "hparams_search=optuna hydra.sweeper.storage=bogus -m", "Optuna search cannot start"),
    # what Lightning checks only inside fit (test: after training), refused before MLflow writes
    ("train", "logger=mlflow trainer.val_check_interval=21", "(21) is more than the 2 training"),
    *(
        ("train", f"logger=mlflow trainer.limit_{s}_batches=0.01", f"0.01 of the `{s}_dataloader`")
        for s in ("train", "val", "test")
    ),
    # a launcher's setting it would refuse only once the jobs start
    ("train", "hydra/launcher=joblib hydra.launcher.n_jobs=0 -m", "n_jobs == 0"),
    ("train", "hydra/launcher=slurm_local hydra.launcher.submitit_folder=x/%j -m", "submitit_fold"),
    ("train", "", "train-images-idx3-ubyte: cannot read (a character dev", "train to /dev/zero"),
    # a resume
    ("train", "resume={w}/run model.lr=0.5", "and model.lr would change what it computes."),
    ("train", "resume={w}/run hydra.run.dir={w}/b", "in its own directory; drop hydra.run.dir"),
    ("train", "resume={w}/run hydra.mode=MULTIRUN", "drop hydra.sweep.dir={w}/run (a sweep is"),
    ("train", "resume={w}/run", "/run/.hydra/config.yaml is missing", "no .hydra"),
    ("train", "resume={w}/run trainer.max_epochs=3", "then run mnist-train again", "held"),
    (  # the Trainer refuses it, with its data to fetch
        "train",
        "resume={w}/run paths.data_dir={w}/new trainer.max_epochs=9 trainer.devices=abc",
        "`devices` selected with `CPUAccelerator` should be an int > 0.",
    ),
    (
        "train",
        "resume={w}/run trainer.max_epochs=2",
        "resume= continues a run at epoch 3; trainer.max_epochs=2 is below it.",
        "stopped at epoch 3",
    ),
    # mnist-eval: a checkpoint (each way: test_trust.py, test_model.py), its data, where it writes
    ("eval", "ckpt_path={w}/bad.ckpt", "bad.ckpt cannot be read: it is not a torch", "corrupt"),
    ("eval", "", "t10k-images-idx3-ubyte: cannot read (a character device", "t10k to /dev/zero"),
    ("eval", "", "process 4242 (mnist-train) is writing it.", "held"),
    ("eval", "", "run/eval is a symbolic link, not a directory", "eval a link"),
    # mnist-export: where it writes (the example: model.pt, by default exported over it)
    ("export", "ckpt_path={w}/model.pt", "(by default the checkpoint's path with .pt) is", "ckpt"),
    ("export", "output={w}/model.pt", "exists and is not an earlier mnist-export", "notes"),
    ("export", "", "lies in a run that process 4242 (mnist-train) is writing", "held"),
    # mnist-predict (special files among its pictures: the test below)
    ("predict", "grid={w}/p.png", "grid={w}/p.png exists and is not a grid", "a picture"),
    ("predict", "inputs={w}/x.png", "x.png: not a readable image (Image size", "a huge image"),
    *(
        (tool, "hydra.run.dir={w}/run/y", f"mnist-{tool} decides where Hydra writes; it makes no")
        for tool in ("predict", "eval", "export")
    ),
]


@pytest.mark.parametrize(
    ("command", "args", "said", "setup"),
    one_of_each_kind([(*case, "")[:4] for case in CASES], lambda case: case[0]),
)
def test_bad_input_gets_one_clear_message_and_changes_nothing(
    command: str, args: str, said: str, setup: str, trained_run: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # conf/'s store, in the world
    w = make_world(tmp_path, trained_run)
    if setup:
        SETUP[setup](w)
    base = [] if args.startswith("resume=") else BASE[command]
    args, times = [a.format(w=w, last=last_ckpt(w)) for a in merged(base, args.split())], w.stat()
    train = command == "train"  # a refused mnist-train leaves even the folders' times
    done, before, after = run_in_world(
        command, args, w, directory_times=train, timeout_s=60, memory_gib=4
    )
    assert not train or w.stat().st_mtime_ns == times.st_mtime_ns
    assert done.returncode == 2 and "Traceback" not in done.stderr + done.stdout, done.stderr
    # one line, `Error: ` (after Lightning's start-up lines, if it got that far) or `skipped: `
    lines = done.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith(("Error: ", "skipped: "))]
    assert errors == lines[-1:] and (command != "predict" or len(lines) == 1), lines
    assert said.format(w=w) in lines[-1], lines[-1]
    for folder in (before, after):  # (but where the data set's lock file came and went)
        folder.pop(w / "data" / "MNIST" / "raw", None)
    assert after == before  # nothing changed, no temporary file left


@pytest.mark.slow
def test_special_files_among_pictures_are_skipped_by_name_never_opened(
    trained_run: Path, tmp_path: Path
) -> None:
    """Special files, names a terminal would act on and names that give no picture, beside a
    good picture, among inputs and as inputs; an earlier grid, the one file replaced."""
    w, skipped = make_world(tmp_path, trained_run), "skipped: {w}/pictures/"
    (w / "a.txt").touch()
    pictures = w / "pictures"
    os.mkfifo(pictures / "fifo.png")
    (pictures / "zero.png").symlink_to("/dev/zero")
    unix_socket(pictures / "sock.png")
    (pictures / "gone.png").symlink_to(w / "no-such.png")
    (pictures / "new\nline.png").write_bytes(b"not a picture")
    (pictures / "title\x1b]0;pwned\x07\udcff.png").touch()
    os.mkfifo(w / "named.png")
    (w / "empty").mkdir()
    grid = w / "grid.png"
    write_grid(grid, [torch.ones(28, 28)], [{"file": "a.png", "digit": 1, "probability": 1}])
    names = [pictures, "named.png", "nothing.png", "empty", "a.txt/x.png", f"{'x' * 300}.png"]
    inputs = ",".join(str(w / name) for name in [*names, "empty/../pictures/one.png"])  # respelled
    args = [f"ckpt_path={last_ckpt(w)}", f"inputs=[{inputs}]", f"grid={grid}"]
    done, before, after = run_in_world("predict", args, w, timeout_s=60, memory_gib=4)
    assert done.returncode == 1 and "Traceback" not in done.stderr + done.stdout, done.stderr
    for words in (
        skipped + "fifo.png: a FIFO, not a regular file",
        skipped + "zero.png: a character device, not a regular file",
        skipped + "sock.png: a socket, not a regular file",
        skipped + "gone.png: a dangling symbolic link",
        skipped + "new\\nline.png: not a readable image",
        skipped + "title\\x1b]0;pwned\\x07\\udcff.png: not a readable image (no picture format",
        "skipped: {w}/named.png: a FIFO, not a regular file",
        "skipped: {w}/nothing.png: no such file or directory.",
        "skipped: {w}/empty: the directory holds no pictures (",
        "skipped: {w}/a.txt/x.png: not a directory.",
        "skipped: {w}/" + "x" * 300 + ".png: file name too long.",
        "wrote {w}/grid.png",
    ):
        assert words.format(w=w) in done.stderr, done.stderr
    assert done.stdout.count("pictures/one.png") == 1, done.stdout  # named twice, read once
    replaced = after.pop(grid)  # by a regular file of mnist-predict's own
    assert replaced != before.pop(grid) and replaced[0] == "-" and is_grid(grid)
    assert after == before


@pytest.mark.slow
def test_a_trial_lightning_refuses_fails_before_mlflow_makes_its_store(
    trained_run: Path, tmp_path: Path
) -> None:
    """Optuna picks a trial's values after Hydra started: the job checks them before the data
    or a tracker's store; the summary says why no trial completed, not Optuna's traceback."""
    w = make_world(tmp_path, trained_run)
    args = ["-m", *SMALL, "hparams_search=optuna", "hydra.sweeper.n_trials=1", "logger=mlflow"]
    args += ["+hydra.sweeper.params={trainer.precision:'choice(17)'}"]  # no trial completes
    done, _, _ = run_in_world("train", args, w)
    out = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in out and "float-castable" not in out, out
    assert "Job 0 failed: trainer cannot be built from its config: Precision 17" in out
    assert "| failed: trainer cannot be built" in out and "1 of 1 jobs failed." in out
    assert not (w / "outputs" / "mlflow.db").exists()
