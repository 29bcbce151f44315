"""mnist-eval's and mnist-export's arguments and the places they write (docs/reliability.md),
check by check: each refusal names the key, value or file (console entries: test_bad_input)."""

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hydra import compose
from matplotlib.figure import Figure
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from mnist_lightning.cli.eval import prepare_run, write_results
from mnist_lightning.cli.export import check_output, export_torchscript, is_earlier_export
from mnist_lightning.cli.predict import is_grid
from mnist_lightning.errors import ConfigError, UserError
from mnist_lightning.run.config import EXPORT, check, validate_eval
from mnist_lightning.run.report import FIGURE_TAGS
from tests.helpers.commands import cli_env, train_command
from tests.helpers.tiers import one_of_each_kind

# A case per kind of refusal (the first of each command in the fast tier).
TOOL_VALUES = [
    ("eval", ["ckpt_path=[a]"], "ckpt_path=['a'] must be a file or directory path"),
    ("eval", ["ckpt_path=a", "run_dir=b"], "exactly one of"),
    ("eval", [], "exactly one of"),
    ("eval", ["ckpt_path=a", "data_dir=null"], "data_dir is missing"),
    ("eval", ["ckpt_path=a", "batch_size=0"], "batch_size=0 is out of range"),
    ("eval", ["ckpt_path=a", "batch_size=true"], "batch_size=True must be an integer"),
    ("eval", ["ckpt_path=a", "tensorboard=yes"], "tensorboard='yes' must be true or false"),
    ("eval", ["ckpt_path=a", "device=tpu"], "device='tpu' is not one of: auto, cpu"),
    ("eval", ["ckpt_path=a", "data_source=ftp"], "data_source='ftp' is not one of: auto"),
    ("export", [], "ckpt_path is missing"),
    ("export", ["ckpt_path=''"], "ckpt_path is missing"),
    ("export", ["ckpt_path=a", "output=[x]"], "output=['x'] must be a file or directory"),
    ("export", ["ckpt_path=a", "check_images=0"], "check_images=0 is out of range"),
    ("export", ["ckpt_path=a", "check_images=10001"], "check_images=10001 is out of range"),
    ("export", ["ckpt_path=a", "check_images=1e3"], "check_images=1000.0 must be an integer"),
    ("export", ["ckpt_path=a", "format=pickle"], "format='pickle' is not one of: onnx"),
]


@pytest.mark.usefixtures("hydra_on_conf")
@pytest.mark.parametrize(
    ("name", "overrides", "words"), one_of_each_kind(TOOL_VALUES, lambda case: case[0])
)
def test_tool_values_are_config_errors_naming_the_key(
    name: str, overrides: list[str], words: str
) -> None:
    cfg = compose(name, overrides=["data_dir=/d", *overrides])
    with pytest.raises(ConfigError, match=re.escape(words)):
        validate_eval(cfg) if name == "eval" else check(cfg, EXPORT)


def export_to(name: str) -> Callable[[Path], object]:
    return lambda t: check_output(t / name, True, t / "model.ckpt", t / "data", "torchscript")


def eval_after(make: Callable[[Path], object]) -> Callable[[Path], object]:
    """mnist-eval of a checkpoint outside a checkpoints/ folder: its folder is the run."""
    return lambda t: (make(t), prepare_run(t / "x.ckpt", tensorboard=True, key="ckpt_path=x.ckpt"))


# what only mnist-export and mnist-eval refuse of where they write -> the refusal (every kind of
# place any command refuses: test_predict.py's grid table; one check serves both)
PLACES = {
    "hard.pt is the checkpoint being exported": export_to("hard.pt"),  # a hard link to it
    "soft.pt is the checkpoint being exported": export_to("soft.pt"),  # a symbolic link to it
    "/dev/null is a character device": export_to("/dev/null"),
    "lies in the data directory": export_to("data/MNIST/raw/model.pt"),
    "eval is a regular file, not a directory": eval_after(lambda t: (t / "eval").write_text("x")),
    "metrics.json is a dir": eval_after(
        lambda t: (t / "eval" / "metrics.json").mkdir(parents=True)
    ),
    "tensorboard is a symbolic link": eval_after(lambda t: (t / "tensorboard").symlink_to(t)),
    "eval/metrics.json exists and is not a file mnist-eval wrote": eval_after(
        lambda t: ((t / "eval").mkdir(), (t / "eval" / "metrics.json").write_text('{"mine": 1}'))
    ),
    "ckpt_path=x: cannot write to /proc": lambda t: prepare_run(
        Path("/proc/x.ckpt"), tensorboard=False, key="ckpt_path=x"
    ),
}


@pytest.mark.parametrize("words", PLACES)  # (the checkpoint's own path: test_bad_input.py)
def test_export_and_eval_refuse_places_that_are_not_theirs(words: str, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "model.ckpt").write_bytes(b"checkpoint")  # any bytes: nothing here reads it
    os.link(tmp_path / "model.ckpt", tmp_path / "hard.pt")
    (tmp_path / "soft.pt").symlink_to(tmp_path / "model.ckpt")
    with pytest.raises(UserError, match=re.escape(words)):
        PLACES[words](tmp_path)


def test_eval_replaces_its_own_earlier_results_and_no_other_file(tmp_path: Path) -> None:
    figures = {name: Figure() for name in FIGURE_TAGS}
    write_results(tmp_path, {"per_class_acc": {"0": 1.0}}, figures, tensorboard=False)
    prepare_run(tmp_path / "x.ckpt", tensorboard=False, key="ckpt_path=x.ckpt")  # its own
    refused = r"\.png exists and is not a file mnist-eval wrote"
    Image.new("L", (4, 4)).save(tmp_path / "eval" / "mistakes.png")  # a user's, beside marked
    with pytest.raises(UserError, match=refused):
        prepare_run(tmp_path / "x.ckpt", tensorboard=False, key="ckpt_path=x.ckpt")
    for name in FIGURE_TAGS:  # an earlier version's figures: none marked
        Image.new("L", (4, 4)).save(tmp_path / "eval" / f"{name}.png")
    prepare_run(tmp_path / "x.ckpt", tensorboard=False, key="ckpt_path=x.ckpt")
    (tmp_path / "eval" / "metrics.json").unlink()  # now a folder of the user's
    with pytest.raises(UserError, match=refused):
        prepare_run(tmp_path / "x.ckpt", tensorboard=False, key="ckpt_path=x.ckpt")


def test_a_file_that_only_holds_a_commands_mark_is_not_the_commands_own(tmp_path: Path) -> None:
    """A user's archive holding an export, or a grid with text added, is theirs: not replaced."""
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    (tmp_path / "m.pt").write_bytes(export_torchscript(net, torch.rand(2, 28, 28))[0])
    assert is_earlier_export(tmp_path / "m.pt", "torchscript")
    torch.save(
        {"notes": torch.ones(3), "blob": (tmp_path / "m.pt").read_bytes()}, tmp_path / "a.pt"
    )
    assert not is_earlier_export(tmp_path / "a.pt", "torchscript")
    (tmp_path / "o.onnx").write_bytes(b"\x08\x07" * 100)  # ONNX's first field, not our mark
    assert not is_earlier_export(tmp_path / "o.onnx", "onnx")
    text = PngInfo()
    text.add_text("Software", "mnist-predict-fork 0.1")
    Image.new("L", (4, 4)).save(tmp_path / "fork.png", pnginfo=text)
    assert not is_grid(tmp_path / "fork.png")


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["loading", "checks", "fit"])
def test_ctrl_c_before_the_first_checkpoint_ends_quietly_keeping_no_run(
    stage: str, tmp_path: Path, synthetic_mnist: Path
) -> None:
    """A newcomer's first Ctrl-C, a second after starting (torch and Lightning still loading:
    nothing printed); once Hydra made the run's directory (before Lightning's fit handles Ctrl-C);
    as fit starts: 130, no traceback, no resume= advice, its directory undone."""
    run = tmp_path / "run"
    probe = ["+callbacks.c._target_=probes.InterruptAtFitStart"] if stage == "fit" else []
    terminal = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731  (a `&` job's)
    with subprocess.Popen(
        train_command(f"hydra.run.dir={run}", *probe),
        cwd=tmp_path,
        env=cli_env(synthetic_mnist),
        preexec_fn=terminal,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        time.sleep(1 if stage == "loading" else 0)
        while stage == "checks" and not (run / ".hydra").exists() and process.poll() is None:
            time.sleep(0.01)
        if not probe:  # the probe sends it as fit starts
            process.send_signal(signal.SIGINT)
        error = process.communicate(timeout=120)[1]
    assert process.returncode == 130 and "Traceback" not in error, error[-3000:]
    assert "resume=" not in error and not run.exists()
    assert stage != "loading" or (error, list(tmp_path.iterdir())) == ("", [])
