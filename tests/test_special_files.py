"""Files as they really are, and mnist-predict's arguments (docs/reliability.md's cases), through
the console entries in the test process. FIFOs, devices, sockets and dangling links among the
pictures are skipped by name, never opened (a FIFO hung mnist-predict); an IDX file that is not
a regular file, or promises more than it holds, is refused before it is read (a link to
/dev/zero was read until memory ran out); `grid=` never overwrites an input or a file that is
not an earlier grid. Each command runs under a 60 s alarm and a 4 GiB address-space margin, so
such a regression fails its case instead of hanging the suite or the machine.
"""

import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from mnist_lightning.cli.predict import GRID_SOFTWARE, is_grid, write_grid
from mnist_lightning.data.datasets import raw_dir
from tests.helpers.synthetic import SMALL
from tests.helpers.tiers import one_of_each_kind
from tests.helpers.worlds import Command, last_ckpt, make_world, run_in_world


def world_with_a_picture(directory: Path, trained_run: Path) -> Path:
    """A user's world (tests/helpers/worlds.py) with one good picture among the pictures."""
    make_world(directory, trained_run)
    drawn = Image.new("L", (64, 64), 255)
    ImageDraw.Draw(drawn).line((32, 8, 32, 56), fill=0, width=6)
    drawn.save(directory / "pictures" / "one.png")
    return directory


def make_socket(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))  # the socket file stays when the socket is closed


def earlier_grid(path: Path) -> None:
    """A grid as an earlier mnist-predict run wrote it, by its own writer."""
    image = torch.zeros(28, 28)
    image[4:24, 13:15] = 1
    row = {"file": "seven.png", "digit": 1, "probability": 0.9}
    write_grid(path, [image], [row])


def special_pictures(w: Path) -> list[str]:
    """Among the pictures: a FIFO, a link to /dev/zero, a socket, a dangling link and names a
    terminal would act on, beside a good picture; another FIFO, a name that is nothing and a
    folder with no pictures given by name; the grid replaces an earlier grid."""
    pictures = w / "pictures"
    os.mkfifo(pictures / "fifo.png")
    (pictures / "zero.png").symlink_to("/dev/zero")
    make_socket(pictures / "sock.png")
    (pictures / "gone.png").symlink_to(w / "no-such.png")
    (pictures / "new\nline.png").write_bytes(b"not a picture")
    (pictures / "title\x1b]0;pwned\x07\udcff.png").write_bytes(b"not a picture")
    os.mkfifo(w / "named.png")
    (w / "empty").mkdir()
    earlier_grid(w / "grid.png")
    return [
        f"ckpt_path={last_ckpt(w)}",
        f"inputs=[{pictures},{w / 'named.png'},{w / 'nothing.png'},{w / 'empty'}]",
        f"grid={w / 'grid.png'}",
    ]


def predict(*overrides: str) -> Callable[[Path], list[str]]:
    """mnist-predict on the good picture, with `overrides` ({w}: the world)."""

    def setup(w: Path) -> list[str]:
        Image.new("L", (32, 32), 128).save(w / "pictures.png")  # a picture that is not a grid
        base = [f"ckpt_path={last_ckpt(w)}", f"inputs={w / 'pictures' / 'one.png'}"]
        return base + [o.format(w=w) for o in overrides]

    return setup


def idx_header(*shape: int) -> bytes:
    return struct.pack(f">HBB{len(shape)}I", 0, 8, len(shape), *shape)


def bad_idx(name: str, make: Callable[[Path], None]) -> Callable[[Path], Path]:
    """Replace the IDX file `name` of the world's data by what `make` puts at its path."""

    def replace(w: Path) -> Path:
        path = raw_dir(w / "data") / name
        path.unlink()
        make(path)
        return path

    return replace


def train(change: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    def setup(w: Path) -> list[str]:
        change(w)
        return list(SMALL)  # data.source=files: the files as they are

    return setup


def evaluate(change: Callable[[Path], Path]) -> Callable[[Path], list[str]]:
    def setup(w: Path) -> list[str]:
        change(w)
        return [f"ckpt_path={last_ckpt(w)}", "data_source=files", "device=cpu"]

    return setup


def link_to_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def huge_header(path: Path) -> None:
    path.write_bytes(idx_header(2**32 - 1, 2**32 - 1, 28) + bytes(84))  # 100 bytes


@dataclass(frozen=True)
class Case:
    command: str
    setup: Callable[[Path], list[str]]
    words: tuple[str, ...]  # in stderr; {w} is the world
    status: int | None = None  # the exit status, if a particular one; else any but 0
    replaced: tuple[str, ...] = ()  # files, relative to the world, that may be replaced
    stdout: tuple[str, ...] = ()  # what was still predicted


SKIPPED = "skipped: {w}/pictures/"
CASES: dict[str, Case] = {
    # special files among mnist-predict's inputs: skipped by name; the good picture is read
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
        replaced=("grid.png",),
        stdout=("pictures/one.png",),
    ),
    # grid=: checked before any work
    "grid is an input": Case(
        "predict",
        predict("grid={w}/pictures/one.png"),
        ("grid={w}/pictures/one.png is also an input",),
    ),
    "grid over a picture": Case(
        "predict",
        predict("grid={w}/pictures.png"),
        ("grid={w}/pictures.png exists and is not a grid mnist-predict wrote",),
    ),
    "grid under a file": Case(
        "predict",
        predict("grid={w}/run/metrics.json/figures/grid.png"),
        ("grid={w}/run/metrics.json/figures/grid.png", "metrics.json is a regular file"),
    ),
    "grid not a png": Case("predict", predict("grid={w}/grid.txt"), ("grid=", "grid.txt", ".png")),
    # mnist-predict's other arguments
    "device nan": Case("predict", predict("device=nan"), ("device=nan", "auto, cpu, cuda, mps")),
    "json a number": Case("predict", predict("json=2"), ("json=2 must be true or false",)),
    "inputs empty": Case("predict", predict("inputs=[]"), ("inputs=[] must name",)),
    # IDX files that are not regular files, or promise more than they hold
    "idx link to /dev/zero": Case(
        "train",
        train(bad_idx("train-images-idx3-ubyte", link_to_zero)),
        ("train-images-idx3-ubyte: cannot read (a character device, not a regular file)",),
    ),
    "idx fifo": Case(
        "train",
        train(bad_idx("train-labels-idx1-ubyte", os.mkfifo)),
        ("train-labels-idx1-ubyte: cannot read (a FIFO, not a regular file)",),
    ),
    "idx huge header": Case(
        "train",
        train(bad_idx("train-images-idx3-ubyte", huge_header)),
        ("train-images-idx3-ubyte: 100 bytes, but its header promises", "truncated"),
    ),
    "eval idx link to /dev/zero": Case(
        "eval",
        evaluate(bad_idx("t10k-images-idx3-ubyte", link_to_zero)),
        ("t10k-images-idx3-ubyte: cannot read (a character device, not a regular file)",),
    ),
}


@pytest.mark.parametrize("case", one_of_each_kind(CASES, lambda case: CASES[case].command))
def test_special_file_or_argument_gets_one_clear_message_and_changes_nothing(
    case: str, trained_run: Path, tmp_path: Path
) -> None:
    expected, w = CASES[case], tmp_path
    args = expected.setup(world_with_a_picture(w, trained_run))
    outcome = run_in_world(Command(expected.command, args, w, timeout_s=60, memory_gib=4))
    done = outcome.done
    assert done.returncode == (expected.status or 2), done.stderr[-3000:]
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    for words in expected.words:
        assert words.format(w=w) in done.stderr, done.stderr[-3000:]
    for words in expected.stdout:
        assert words in done.stdout, done.stdout
    replaced = {w / name for name in expected.replaced}
    unchanged = {p: v for p, v in outcome.before.items() if p not in replaced}
    assert {p: outcome.after.get(p) for p in unchanged} == unchanged
    for path in replaced:  # replaced by a new grid, a regular file marked as ours
        assert outcome.after[path] != outcome.before[path]
        assert outcome.after[path][0] == "-" and is_grid(path)
        with Image.open(path) as grid:
            assert grid.info["Software"] == GRID_SOFTWARE
