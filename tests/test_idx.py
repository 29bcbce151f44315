"""The IDX reader and writer: exact round trips, and a `DataError` naming the file for
anything that is not a complete IDX file of unsigned bytes, or not a regular file."""

import math
import os
import socket
import struct
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mnist_lightning.data.idx import encode_idx, parse_idx, read_idx, write_idx
from mnist_lightning.errors import DataError


def header(*shape: int, dtype: int = 0x08) -> bytes:
    return struct.pack(f">HBB{len(shape)}I", 0, dtype, len(shape), *shape)


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 4), (1, 1), (2, 28, 28), (5, 3, 2)])
def test_round_trip(shape: tuple[int, ...], tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(len(shape))
    tensor = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    data = encode_idx(tensor)
    assert data[:4] == bytes([0, 0, 0x08, len(shape)])  # the documented magic number
    assert len(data) == 4 + 4 * len(shape) + tensor.numel()
    parsed = parse_idx(data)
    assert parsed.dtype == torch.uint8 and parsed.shape == shape
    assert torch.equal(parsed, tensor)

    write_idx(tmp_path / "x-idx", tensor)
    assert (tmp_path / "x-idx").read_bytes() == data
    assert torch.equal(read_idx(tmp_path / "x-idx"), tensor)
    assert [p.name for p in tmp_path.iterdir()] == ["x-idx"]  # no temporary file left


def test_the_header_is_big_endian() -> None:
    """MNIST's own header for 60 000 images of 28x28 (bytes from the IDX spec)."""
    assert header(60000, 28, 28) == bytes.fromhex("000008030000ea600000001c0000001c")
    parsed = parse_idx(header(2, 300) + bytes(600))
    assert parsed.shape == (2, 300)


GOOD = header(2, 3) + bytes(range(6))


@pytest.mark.parametrize(
    ("data", "words"),
    [
        pytest.param(b"", "too short", id="empty"),
        pytest.param(b"\x00\x00\x08", "too short", id="shorter-than-magic"),
        pytest.param(b"\x12\x34" + GOOD[2:], "magic", id="wrong-magic"),
        pytest.param(header(2, 3, dtype=0x0D) + bytes(24), "magic", id="float-type"),
        pytest.param(header() + b"\x00", "magic", id="zero-dimensions"),
        pytest.param(b"\x00\x00\x08\x05" + bytes(30), "magic", id="five-dimensions"),
        pytest.param(GOOD[:6], "header", id="short-header"),
        pytest.param(GOOD[:11], "header", id="short-header-last-byte"),
        pytest.param(GOOD[:-1], "truncated", id="truncated-data"),
        pytest.param(GOOD[:12], "truncated", id="header-only"),
        pytest.param(GOOD + b"\x00", "truncated or corrupt", id="extra-bytes"),
    ],
)
def test_bad_files_are_data_errors_naming_the_file(data: bytes, words: str, tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(DataError, match=words) as info:
        read_idx(path)
    assert str(path) in str(info.value)
    with pytest.raises(DataError) as info:
        parse_idx(data, "some-name")
    assert "some-name" in str(info.value)


def test_a_missing_file_is_a_data_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read") as info:
        read_idx(tmp_path / "t10k-labels-idx1-ubyte")
    assert "t10k-labels-idx1-ubyte" in str(info.value)


@pytest.mark.parametrize("shape", [(0,), (0, 28, 28), (3, 0)])
def test_zero_sized_dimensions_round_trip(shape: tuple[int, ...]) -> None:
    tensor = torch.zeros(shape, dtype=torch.uint8)
    assert parse_idx(encode_idx(tensor)).shape == shape


@st.composite
def idx_like(draw: st.DrawFn) -> bytes:
    """Bytes that start like an IDX file (valid magic, 1-3 dimensions of size 1-4; size 0 is
    the test above), then a payload of the right length or any length, maybe cut."""
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    payload = draw(st.one_of(st.just(bytes(math.prod(shape))), st.binary(max_size=80)))
    data = header(*shape) + payload
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=64), idx_like()))
@example(GOOD)
@example(header(4) + b"\x01\x02\x03\x04")
def test_any_bytes_parse_to_uint8_or_raise_data_error(data: bytes) -> None:
    try:
        tensor = parse_idx(data, "fuzz")
    except DataError as e:
        assert "fuzz" in str(e)
        return
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.uint8
    ndim = data[3]
    assert tensor.dim() == ndim
    assert tensor.numel() == len(data) - 4 - 4 * ndim
    assert encode_idx(tensor) == data  # whatever parses is exactly what it encodes


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=3), st.integers(1, 8))
def test_every_truncation_of_a_valid_file_is_reported(shape: list[int], cut: int) -> None:
    data = encode_idx(torch.ones(shape, dtype=torch.uint8))
    with pytest.raises(DataError):
        parse_idx(data[:-cut])


def make_special(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "link to /dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    elif kind == "dangling link":
        path.symlink_to(path.with_name("gone"))
    else:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(path))


@pytest.mark.usefixtures("no_hang")
@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("fifo", "a FIFO, not a regular file"),
        ("link to /dev/zero", "a character device, not a regular file"),
        ("directory", "a directory, not a regular file"),
        ("socket", "a socket, not a regular file"),
        ("dangling link", "No such file or directory"),
    ],
)
def test_only_regular_files_are_read(kind: str, words: str, tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    make_special(path, kind)
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert str(info.value) == f"{path}: cannot read ({words})."


def test_a_header_promising_more_than_the_file_holds_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(header(2**32 - 1, 2**32 - 1) + bytes(88))  # 100 bytes
    with pytest.raises(DataError, match="100 bytes, but its header promises shape") as info:
        read_idx(path)
    assert "truncated or corrupt" in str(info.value)


def test_the_size_is_checked_before_the_body_is_read(tmp_path: Path) -> None:
    """A 64 GiB file (sparse: it takes no disk) whose header promises 6 bytes: refused from its
    size alone. Reading it first, as before, ran out of memory."""
    path = tmp_path / "train-images-idx3-ubyte"
    with path.open("wb") as f:
        f.write(GOOD)
        f.truncate(2**36)
    started = time.monotonic()
    with pytest.raises(DataError, match=f"{2**36} bytes, but its header promises shape"):
        read_idx(path)
    assert time.monotonic() - started < 1


def test_read_idx_reads_what_parse_idx_parses(tmp_path: Path) -> None:
    tensor = torch.arange(2 * 28 * 28, dtype=torch.int64).remainder(256).to(torch.uint8)
    path = tmp_path / "x-idx"
    write_idx(path, tensor.reshape(2, 28, 28))
    assert torch.equal(read_idx(path), parse_idx(path.read_bytes()))
