"""Every entry point against bad input (docs/reliability.md's cases), through its console
entry in the test process: exit status 2 (Hydra's own errors: 1) with one clear line naming
the key, file or value, no traceback, and everything that existed left as it was."""

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from mnist_lightning.data.datasets import raw_dir, write_idx
from tests.helpers.synthetic import SMALL
from tests.helpers.tiers import one_of_each_kind
from tests.helpers.worlds import Command, last_ckpt, make_world, run_in_world


def damaged_copy(w: Path, name: str, keep: int) -> Path:
    """A copy of the run's last.ckpt cut to its first `keep` bytes (0: empty)."""
    path = w / name
    path.write_bytes(Path(last_ckpt(w)).read_bytes()[:keep])
    return path


def corrupt_ckpt(w: Path) -> Path:
    bad = w / "bad.ckpt"
    bad.write_bytes(b"\x00garbage" * 100)
    return bad


def future_ckpt(w: Path) -> Path:
    checkpoint = torch.load(last_ckpt(w), weights_only=True)
    checkpoint["hyper_parameters"]["attention_heads"] = 8  # a key this version does not know
    torch.save(checkpoint, w / "future.ckpt")
    return w / "future.ckpt"


def truncated_idx(w: Path) -> list[str]:
    path = raw_dir(w / "data") / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:5000])
    return SMALL


def empty_test_split(w: Path) -> list[str]:
    write_idx(
        raw_dir(w / "data") / "t10k-images-idx3-ubyte", torch.zeros(0, 28, 28, dtype=torch.uint8)
    )
    write_idx(raw_dir(w / "data") / "t10k-labels-idx1-ubyte", torch.zeros(0, dtype=torch.uint8))
    return SMALL


def wrong_magic(w: Path) -> list[str]:
    (raw_dir(w / "data") / "train-labels-idx1-ubyte").write_bytes(b"\x12\x34" * 20)
    return SMALL


def without_hydra(w: Path) -> list[str]:
    shutil.rmtree(w / "run" / ".hydra")
    return [f"resume={w / 'run'}"]


def outputs_a_file(w: Path) -> list[str]:
    (w / "outputs").write_text("not a directory")
    return SMALL


def predict(make: Callable[[Path], None], name: str = "x.png") -> Callable[[Path], list[str]]:
    """Setup for mnist-predict on one picture that `make` writes."""

    def setup(w: Path) -> list[str]:
        make(w / "pictures" / name)
        return [f"ckpt_path={last_ckpt(w)}", f"inputs={w / 'pictures' / name}"]

    return setup


def ckpt(make: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    return lambda w: [f"ckpt_path={make(w)}"]


def train(*overrides: str) -> Callable[[Path], list[str]]:
    return lambda w: [*SMALL, *(o.format(w=w, last=last_ckpt(w)) for o in overrides)]


CASES: dict[str, tuple[str, Callable[[Path], list[str]], list[str]]] = {
    # config
    "unknown key": ("train", train("model.dropuot=0.3"), ["did you mean model.dropout?"]),
    "a key added that the model lacks": (
        "train",
        train("+model.dropuot=0.3"),
        ["model cannot be built", "dropuot"],
    ),
    "hydra key misspelt": ("train", train("hydra.run.dri=x"), ["did you mean hydra.run.dir?"]),
    "wrong type": ("train", train("data.batch_size=abc"), ["data.batch_size", "abc"]),
    "dropout out of range": ("train", train("model.dropout=1.5"), ["model.dropout=1.5"]),
    "a sweep's second job": ("train", train("-m", "model.dropout=0,1.5"), ["model.dropout=1.5"]),
    "a key misspelt in a sweep over presets": (
        "train",
        train("-m", "model=mlp_128,mlp_64_64_64", "model.dropuot=0.1"),
        ["did you mean model.dropout?"],
    ),
    "unknown activation": ("train", train("model.activation=swish"), ["swish"]),
    "unknown preset": ("train", train("model=mlp_9000"), ["model/mlp_9000"]),
    "no gpu here": ("train", train("trainer.accelerator=gpu"), ["trainer.accelerator=gpu"]),
    "data directory unusable": ("train", train("paths.data_dir=/proc/nope"), ["/proc/nope"]),
    "checkpoint missing": ("train", train("ckpt_path={w}/nope.ckpt"), ["nope.ckpt"]),
    "a callback refuses its value": (
        "train",
        train("callbacks.best_checkpoint.mode=foo"),
        ["callbacks.best_checkpoint cannot be built", "foo"],
    ),
    "outputs/ a file": ("train", outputs_a_file, ["hydra.run.dir", "outputs/runs"]),
    "run dir under a file": (
        "train",
        train("hydra.run.dir={w}/run/metrics.json/new"),
        ["hydra.run.dir=", "metrics.json/new", "metrics.json is a regular file"],
    ),
    "a new run into an existing one": (
        "train",
        train("hydra.run.dir={w}/run"),
        ["hydra.run.dir=", "already holds files", "resume="],
    ),
    "resume and ckpt_path": (
        "train",
        lambda w: [f"resume={w / 'run'}", f"ckpt_path={last_ckpt(w)}"],
        ["resume=", "ckpt_path=", "not both"],
    ),
    # data
    "data dir not writable": (
        "train",
        train("data.source=auto", "paths.data_dir={w}/run/metrics.json/d"),
        ["metrics.json/d", "MNIST_DATA_DIR"],
    ),
    "truncated idx": ("train", truncated_idx, ["t10k-images-idx3-ubyte", "truncated"]),
    "empty test split": ("train", empty_test_split, ["t10k-images-idx3-ubyte", "no images"]),
    "wrong magic": ("train", wrong_magic, ["train-labels-idx1-ubyte", "magic"]),
    # checkpoints and run directories
    "missing checkpoint": ("eval", lambda w: ["ckpt_path=/no/such.ckpt"], ["/no/such.ckpt"]),
    "empty checkpoint": ("eval", ckpt(lambda w: damaged_copy(w, "e.ckpt", 0)), ["e.ckpt"]),
    "truncated checkpoint": ("eval", ckpt(lambda w: damaged_copy(w, "t.ckpt", 5000)), ["t.ckpt"]),
    "corrupt checkpoint": ("eval", ckpt(corrupt_ckpt), ["bad.ckpt"]),
    "future checkpoint": ("eval", ckpt(future_ckpt), ["future.ckpt", "attention_heads"]),
    "other architecture": (
        "train",
        train("ckpt_path={last}", "model.hidden_dims=[7]"),
        ["last.ckpt", "different architecture"],
    ),
    "run without .hydra": ("train", without_hydra, [".hydra/config.yaml"]),
    # predict inputs
    "not an image": ("predict", predict(lambda p: p.write_text("hi")), ["x.png", "not a readable"]),
    "empty image file": ("predict", predict(lambda p: p.write_bytes(b"")), ["x.png"]),
    "blank image": (
        "predict",
        predict(lambda p: Image.new("L", (64, 64), 255).save(p)),
        ["x.png", "blank"],
    ),
    "huge image": (
        "predict",
        predict(lambda p: Image.new("1", (14000, 14000), 1).save(p)),
        ["x.png"],
    ),
    "hydra.run.dir of a tool unwritable": (
        "predict",
        lambda w: [
            f"ckpt_path={last_ckpt(w)}",
            f"inputs={w}",
            f"hydra.run.dir={w}/run/metrics.json/y",
        ],
        ["hydra.run.dir=", "cannot write to"],
    ),
    "no images in directory": (
        "predict",
        lambda w: [f"ckpt_path={last_ckpt(w)}", f"inputs={w / 'pictures'}"],
        ["pictures: the directory holds no pictures ("],
    ),
}


@pytest.mark.parametrize("case", one_of_each_kind(CASES, lambda case: CASES[case][0]))
def test_bad_input_gets_one_clear_message_and_changes_nothing(
    case: str, trained_run: Path, tmp_path: Path
) -> None:
    command, setup, words = CASES[case]
    world = make_world(tmp_path, trained_run)
    outcome = run_in_world(Command(command, setup(world), world))
    done = outcome.done
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    if command == "predict":  # one input: one `skipped:` (or `Error:`) line
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    else:  # after Lightning's start-up lines, if it got that far
        errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1 and done.stderr.strip().endswith(errors[0]), done.stderr
    for word in words:
        assert word in done.stderr, done.stderr[-2000:]
    assert outcome.after == outcome.before  # no new run directory either
