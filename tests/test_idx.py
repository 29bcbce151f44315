"""The IDX reader and writer: exact round trips, and one `DataError` naming the file for anything
that is not a complete IDX file of unsigned bytes, or not a regular file."""

import math
import os
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mnist_lightning.data.datasets import encode_idx, read_idx
from mnist_lightning.errors import DataError
from tests.helpers.worlds import unix_socket


def header(*shape: int, dtype: int = 0x08) -> bytes:
    return struct.pack(f">HBB{len(shape)}I", 0, dtype, len(shape), *shape)


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 4), (2, 28, 28), (5, 3, 2), (0,), (0, 28, 28)])
def test_round_trip(shape: tuple[int, ...], tmp_path: Path) -> None:
    tensor = torch.randint(0, 256, shape, dtype=torch.uint8)
    data = encode_idx(tensor)
    assert data[: 4 + 4 * len(shape)] == header(*shape)  # the documented magic number, big-endian
    assert header(60000, 28, 28) == bytes.fromhex("000008030000ea600000001c0000001c")  # MNIST's
    (tmp_path / "x-idx").write_bytes(data)
    parsed = read_idx(tmp_path / "x-idx")
    assert parsed.dtype == torch.uint8 and torch.equal(parsed, tensor)


GOOD = header(2, 3) + bytes(range(6))


NOT_REGULAR = "cannot read (a %s, not a regular file)."
GONE = "cannot read (No such file or directory)."
# what stands where the file is (bytes, or made at its path) -> the words of its DataError
BAD_FILES = {
    "empty": (b"", "0 bytes, too short for an IDX header; the file is"),
    "shorter-than-magic": (b"\x00\x00\x08", "too short"),
    "magic": (b"\x12\x34" + GOOD[2:], "bad IDX magic number 0x12340802"),
    "float-type": (header(2, 3, dtype=0x0D) + bytes(24), "magic"),
    "zero-dimensions": (header() + b"\x00", "magic"),
    "five-dimensions": (b"\x00\x00\x08\x05" + bytes(30), "magic"),
    "short-header": (GOOD[:6], "6 bytes, too short for an IDX header"),
    "truncated-data": (GOOD[:-1], "truncated or corrupt"),
    "header-only": (GOOD[:12], "truncated or corrupt"),
    "extra-bytes": (GOOD + b"\x00", "truncated or corrupt"),
    "promises-terabytes": (  # from the header and the size alone: nothing that size is allocated
        header(2**32 - 1, 2**32 - 1) + bytes(88),
        "100 bytes, but its header promises shape (4294967295, 4294967295)",
    ),
    # 64 GiB (taking no disk) whose header promises 6 bytes: reading it ran out of memory
    "sparse-64-GiB": (
        lambda p: (p.write_bytes(GOOD), os.truncate(p, 2**36)),
        f"{2**36} bytes, but its header promises shape",
    ),
    # only regular files are opened
    "fifo": (os.mkfifo, NOT_REGULAR % "FIFO"),
    "link-to-dev-zero": (lambda p: p.symlink_to("/dev/zero"), NOT_REGULAR % "character device"),
    "directory": (Path.mkdir, NOT_REGULAR % "directory"),
    "socket": (unix_socket, NOT_REGULAR % "socket"),
    "dangling-link": (lambda p: p.symlink_to(p.with_name("gone")), GONE),
    "missing": (lambda p: None, GONE),
}


@pytest.mark.usefixtures("no_hang")
@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_are_one_data_error_naming_the_file(case: str, tmp_path: Path) -> None:
    make, words = BAD_FILES[case]
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(make) if isinstance(make, bytes) else make(path)
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert str(info.value).startswith(f"{path}: ") and words in str(info.value)
    damaged = "truncated or corrupt; replace it (data.source=auto" in str(info.value)
    assert damaged == ("magic" not in words and "cannot read" not in words)  # a size is damage


@st.composite
def idx_like(draw: st.DrawFn) -> bytes:
    """Bytes that start like an IDX file, then a payload of the right or any length, maybe cut."""
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    payload = draw(st.one_of(st.just(bytes(math.prod(shape))), st.binary(max_size=80)))
    data = header(*shape) + payload
    return data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=64), idx_like()))
@example(GOOD)
def test_any_bytes_parse_exactly_or_raise_a_data_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (path := Path(tmp) / "fuzz").write_bytes(data)
        try:
            tensor = read_idx(path)
        except DataError as e:
            assert str(e).startswith(f"{path}: ")
            return
    assert encode_idx(tensor) == data  # whatever parses is exactly what it encodes
