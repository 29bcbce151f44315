import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mnist_lightning.errors import DataError
from mnist_lightning.idx import encode_idx, parse_idx, read_idx, write_idx


@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 28, 28)])
def test_round_trip(shape: tuple[int, ...], tmp_path) -> None:
    tensor = torch.randint(0, 256, shape, dtype=torch.uint8)
    assert torch.equal(parse_idx(encode_idx(tensor)), tensor)
    write_idx(tmp_path / "x", tensor)
    assert torch.equal(read_idx(tmp_path / "x"), tensor)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\x00\x00", "too short"),
        (b"\x00\x00\x0d\x01" + b"\x00\x00\x00\x01" + b"\x00" * 4, "magic"),  # float type
        (b"\x12\x34\x08\x01" + b"\x00\x00\x00\x01" + b"\x00", "magic"),
        (b"\x00\x00\x08\x03" + b"\x00\x00\x00\x01", "header"),
        (b"\x00\x00\x08\x01" + b"\x00\x00\x00\x05" + b"\x00\x00", "truncated"),
        (b"\x00\x00\x08\x01" + b"\x00\x00\x00\x01" + b"\x00\x00", "truncated"),
    ],
)
def test_bad_files_name_the_file(data: bytes, words: str, tmp_path) -> None:
    path = tmp_path / "bad-idx"
    path.write_bytes(data)
    with pytest.raises(DataError, match=words) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_missing_file_is_a_data_error(tmp_path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        read_idx(tmp_path / "nope")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_parse_or_raise_data_error(data: bytes) -> None:
    try:
        tensor = parse_idx(data)
    except DataError:
        return
    assert tensor.dtype == torch.uint8


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=3), st.integers(0, 8))
def test_truncations_of_valid_files_are_reported(shape: list[int], cut: int) -> None:
    data = encode_idx(torch.zeros(shape, dtype=torch.uint8))
    if cut == 0:
        assert parse_idx(data).shape == tuple(shape)
    else:
        with pytest.raises(DataError):
            parse_idx(data[:-cut])
