"""mnist-eval's and mnist-export's arguments and the places they write (docs/reliability.md's
cases): refused with exit status 2 and one line naming the key, value or file, no traceback,
nothing that existed changed; the console entries run in the test process."""

import fcntl
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose

from mnist_lightning.cli.eval import prepare_run
from mnist_lightning.cli.export import (
    check_output,
    export_onnx,
    export_torchscript,
    is_earlier_export,
)
from mnist_lightning.errors import ConfigError, UserError
from mnist_lightning.run.checkpoint import load_classifier
from mnist_lightning.run.config import validate_eval, validate_export
from tests.helpers.tiers import one_of_each_kind
from tests.helpers.worlds import Command, last_ckpt, make_world, run_in_world


def earlier_export(path: Path, w: Path) -> None:
    """An mnist-export TorchScript file at `path`, made by the exporter mnist-export runs."""
    model, _ = load_classifier(last_ckpt(w), torch.device("cpu"))
    export_torchscript(model.net.eval(), torch.rand(4, 28, 28), path)


def evaluate(*overrides: str) -> Callable[[Path], list[str]]:
    """mnist-eval of the run's last.ckpt with `overrides` ({w}: the world's directory)."""
    return lambda w: [
        f"ckpt_path={last_ckpt(w)}",
        "data_source=files",
        *(o.format(w=w) for o in overrides),
    ]


def export(*overrides: str) -> Callable[[Path], list[str]]:
    """mnist-export of the run's last.ckpt to TorchScript with `overrides`."""
    return lambda w: [
        f"ckpt_path={last_ckpt(w)}",
        "format=torchscript",
        "data_source=files",
        f"output={w / 'model.pt'}",
        *(o.format(w=w) for o in overrides),
    ]


def then(
    prepare: Callable[[Path], object], args: Callable[[Path], list[str]]
) -> Callable[[Path], list[str]]:
    """`args`, after `prepare` has set up the world."""

    def setup(w: Path) -> list[str]:
        prepare(w)
        return args(w)

    return setup


def run_held_elsewhere(w: Path) -> int:
    """The run's lock taken as another mnist-train process holds it: flock on a file
    description of its own, the holder's name in the file (held until the tests end)."""
    fd = os.open(w / "run" / ".lock", os.O_RDWR | os.O_CREAT)
    os.write(fd, b"process 4242 (mnist-train)")
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def eval_is_a_link(w: Path) -> None:
    (w / "elsewhere").mkdir()
    (w / "elsewhere" / "notes.txt").write_text("mine")
    (w / "run" / "eval").symlink_to(w / "elsewhere")


def checkpoint_named_model_pt(w: Path) -> None:
    shutil.copy(last_ckpt(w), w / "model.pt")


# Refused: (command, setup returning the arguments, words stderr must hold)
REFUSED: dict[str, tuple[str, Callable[[Path], list[str]], list[str]]] = {
    # where mnist-eval writes
    "eval while the run is being written": (
        "eval",
        then(run_held_elsewhere, evaluate()),
        ["is in use", "mnist-train", "run mnist-eval again"],
    ),
    "eval with <run>/eval a link": (
        "eval",
        then(eval_is_a_link, evaluate()),
        ["run/eval is a symbolic link, not a directory"],
    ),
    # where mnist-export writes
    # the example: a checkpoint named model.pt, exported to TorchScript (.pt)
    "export model.pt by default over itself": (
        "export",
        then(
            checkpoint_named_model_pt,
            lambda w: [f"ckpt_path={w / 'model.pt'}", "format=torchscript"],
        ),
        ["model.pt (by default the checkpoint's path with .pt) is the checkpoint"],
    ),
    "export over an unrelated file": (
        "export",
        then(lambda w: (w / "model.pt").write_text("my notes"), export()),
        ["model.pt exists and is not an earlier mnist-export torchscript file"],
    ),
}

# Allowed: an earlier export of the same format is replaced.
ALLOWED: dict[str, tuple[str, Callable[[Path], list[str]], list[str]]] = {
    "export over an earlier export": (
        "export",
        then(lambda w: earlier_export(w / "model.pt", w), export("check_images=50")),
        ["wrote", "model.pt", "same predictions"],
    ),
}
CASES = REFUSED | ALLOWED


@pytest.mark.parametrize("case", one_of_each_kind(CASES, lambda case: CASES[case][0]))
def test_bad_tool_arguments_get_one_clear_line_and_change_nothing(
    case: str, trained_run: Path, tmp_path: Path
) -> None:
    command, setup, words = CASES[case]
    world = make_world(tmp_path, trained_run)
    outcome = run_in_world(Command(command, setup(world), world))
    done, before, after = outcome.done, outcome.before, outcome.after
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    if case in ALLOWED:  # an earlier export, replaced by a new one, nothing else changed
        assert done.returncode == 0, done.stderr[-3000:]
        assert all(word in done.stdout for word in words), done.stdout[-2000:]
        output = world / "model.pt"
        assert after[output] != before[output] and is_earlier_export(output, "torchscript")
        assert torch.jit.load(str(output))(torch.rand(3, 28, 28)).shape == (3, 10)
        before.pop(output)
    else:
        assert done.returncode == 2, done.stderr[-3000:]
        (error,) = done.stderr.strip().splitlines()
        assert error.startswith("Error: ") and all(word in error for word in words), error
    assert {p: after.get(p) for p in before} == before
    assert set(after) - set(before) <= {world / "model.pt"}  # no temporary files left


# The checks themselves, on every value a console case above does not try.


@pytest.mark.usefixtures("hydra_on_conf")
@pytest.mark.parametrize(
    ("name", "overrides", "words"),
    one_of_each_kind(
        [
            ("eval", ["ckpt_path=[a]"], "ckpt_path=['a'] must be a file or directory path"),
            ("eval", ["ckpt_path=a", "batch_size=inf"], "batch_size=inf must be a finite number"),
            ("eval", ["ckpt_path=a", "batch_size=0"], "batch_size=0 is out of range"),
            ("eval", ["ckpt_path=a", "batch_size=abc"], "batch_size='abc' must be an integer"),
            ("eval", ["ckpt_path=a", "batch_size=true"], "batch_size=True must be an integer"),
            ("export", ["ckpt_path=a", "check_images=0"], "check_images=0 is out of range"),
            ("export", ["ckpt_path=a", "check_images=1e9"], "check_images=1000000000.0 must be"),
            ("eval", ["ckpt_path=1"], "ckpt_path=1 must be a file or directory path"),
            ("eval", ["ckpt_path=a", "run_dir=b"], "exactly one of"),
            ("eval", [], "exactly one of"),
            ("eval", ["ckpt_path=a", "data_dir=null"], "data_dir is missing"),
            ("eval", ["ckpt_path=a", "batch_size=-inf"], "batch_size=-inf must be a finite number"),
            ("eval", ["ckpt_path=a", "batch_size=2.5"], "batch_size=2.5 must be an integer"),
            ("eval", ["ckpt_path=a", "tensorboard=yes"], "tensorboard='yes' must be true or false"),
            ("eval", ["ckpt_path=a", "device=[cpu]"], "device=['cpu'] is not one of"),
            ("export", [], "ckpt_path is missing"),
            ("export", ["ckpt_path=''"], "ckpt_path is missing"),
            ("export", ["ckpt_path=a", "output=[x]"], "output=['x'] must be a file or directory"),
            ("export", ["ckpt_path=a", "check_images=10001"], "check_images=10001 is out of range"),
            (
                "export",
                ["ckpt_path=a", "check_images=1e3"],
                "check_images=1000.0 must be an integer",
            ),
            (
                "export",
                ["ckpt_path=a", "data_source=[files]"],
                "data_source=['files'] is not one of",
            ),
            ("export", ["ckpt_path=a", "format=null"], "format=None is not one of"),
            ("eval", ["ckpt_path=a", "batch_size=nan"], "batch_size=nan must be a finite"),
            ("eval", ["ckpt_path=a", "device=tpu"], "device='tpu' is not one of: auto, cpu"),
            ("eval", ["ckpt_path=a", "tensorboard=1"], "tensorboard=1 must be true or false"),
            ("eval", ["ckpt_path=a", "data_source=ftp"], "data_source='ftp' is not one of"),
            ("export", ["ckpt_path=a", "check_images=inf"], "check_images=inf must be a finite"),
            ("export", ["ckpt_path=a", "format=pickle"], "format='pickle' is not one of: onnx"),
        ],
        lambda case: case[0],
    ),
)
def test_tool_values_are_config_errors_naming_the_key(
    name: str, overrides: list[str], words: str
) -> None:
    cfg = compose(name, overrides=["data_dir=/d", *overrides])
    with pytest.raises(ConfigError, match=re.escape(words)):
        (validate_eval if name == "eval" else validate_export)(cfg)


@pytest.mark.slow
def test_onnx_exports_are_marked_and_recognised(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason='the ONNX tools: pip install -e ".[export]"')
    pytest.importorskip("onnxscript", reason='the ONNX tools: pip install -e ".[export]"')

    class Net(torch.nn.Module):  # its forward's argument named `images`, as the project's
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(784, 10)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.linear(images.flatten(1))

    export_onnx(Net().eval(), torch.rand(4, 28, 28), tmp_path / "m.onnx")
    assert is_earlier_export(tmp_path / "m.onnx", "onnx")
    assert not is_earlier_export(tmp_path / "m.onnx", "torchscript")
    (tmp_path / "other.onnx").write_bytes(b"\x08\x07" * 100)
    assert not is_earlier_export(tmp_path / "other.onnx", "onnx")


def make_places(tmp: Path) -> Path:
    """A checkpoint (any bytes: nothing here reads it), a data directory and odd places."""
    (tmp / "data").mkdir()
    (tmp / "model.ckpt").write_bytes(b"checkpoint")
    (tmp / "folder").mkdir()
    (tmp / "notes.txt").write_text("mine")
    os.mkfifo(tmp / "fifo.pt")
    (tmp / "link.pt").symlink_to(tmp / "notes.txt")
    os.link(tmp / "model.ckpt", tmp / "hard.pt")
    (tmp / "soft.pt").symlink_to(tmp / "model.ckpt")
    return tmp


@pytest.mark.parametrize(
    ("output", "words"),
    [
        ("model.ckpt", "model.ckpt is the checkpoint being exported"),
        ("hard.pt", "hard.pt is the checkpoint being exported"),  # a hard link to it
        ("soft.pt", "soft.pt is the checkpoint being exported"),  # a symbolic link to it
        ("folder", "folder is a directory, not a regular file"),
        ("fifo.pt", "fifo.pt is a FIFO, not a regular file"),
        ("link.pt", "link.pt is a symbolic link, not a regular file"),
        ("/dev/null", "/dev/null is a character device"),
        ("/proc/mnist/model.pt", "/proc/mnist/model.pt: cannot write to /proc"),
        ("notes.txt/model.pt", "notes.txt is a regular file)"),
        ("data/MNIST/raw/model.pt", "lies in the data directory"),
    ],
)
def test_export_refuses_outputs_that_are_not_its_own(
    output: str, words: str, tmp_path: Path
) -> None:
    tmp = make_places(tmp_path)
    with pytest.raises(UserError, match=re.escape(words)):
        check_output(tmp / output, True, tmp / "model.ckpt", tmp / "data", "torchscript")


def test_export_may_write_a_new_file_in_a_new_folder(tmp_path: Path) -> None:
    tmp = make_places(tmp_path)
    check_output(tmp / "new" / "model.pt", True, tmp / "model.ckpt", tmp / "data", "torchscript")
    assert not (tmp / "new").exists()  # checked, not made: that waits for the export


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda run: (run / "eval").write_text("x"), "eval is a regular file, not a directory"),
        (lambda run: (run / "eval" / "metrics.json").mkdir(parents=True), "metrics.json is a dir"),
        (lambda run: (run / "tensorboard").symlink_to(run), "tensorboard is a symbolic link"),
    ],
)
def test_eval_refuses_odd_places_in_the_run(
    make: Callable[[Path], object], words: str, tmp_path: Path
) -> None:
    make(tmp_path)  # a checkpoint outside a checkpoints/ folder: its folder is the run
    with pytest.raises(UserError, match=re.escape(words)):
        prepare_run(tmp_path / "x.ckpt", tensorboard=True, key="ckpt_path=x.ckpt")


def test_eval_checks_that_the_run_can_be_written() -> None:
    with pytest.raises(UserError, match=re.escape("ckpt_path=x: cannot write to /proc")):
        prepare_run(Path("/proc/x.ckpt"), tensorboard=False, key="ckpt_path=x")
