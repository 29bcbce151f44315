"""The IDX file format MNIST ships in: a big-endian header, then the raw unsigned bytes.

Header: two zero bytes, a type byte (0x08 = unsigned byte, the only type MNIST uses), the number
of dimensions, then one 4-byte big-endian size per dimension. Everything the reader does not
like becomes a `DataError` naming the file, so a truncated download is reported, not crashed on.
"""

import math
import struct
from pathlib import Path

import torch

from mnist_lightning.errors import DataError
from mnist_lightning.files import atomic_write_bytes

UBYTE = 0x08
MAX_DIMS = 4


def parse_idx(data: bytes, name: str = "<bytes>") -> torch.Tensor:
    """Decode IDX bytes into a uint8 tensor shaped as the header says."""
    if len(data) < 4:
        raise DataError(f"{name}: {len(data)} bytes is too short for an IDX file (truncated?).")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != UBYTE or not 1 <= ndim <= MAX_DIMS:
        raise DataError(
            f"{name}: bad IDX magic number 0x{data[:4].hex()} (expected 0x000008 followed by "
            f"1-{MAX_DIMS} dimensions); this is not an MNIST IDX file of unsigned bytes."
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: the IDX header is cut short ({len(data)} bytes).")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(shape)
    if len(data) != expected:
        raise DataError(
            f"{name}: {len(data)} bytes, but its header promises shape {tuple(shape)} = "
            f"{expected} bytes; the file is truncated or corrupt. Delete it to fetch it again."
        )
    if expected == header:  # a dimension of size 0: torch.frombuffer refuses empty buffers
        return torch.empty(shape, dtype=torch.uint8)
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(shape)


def encode_idx(tensor: torch.Tensor) -> bytes:
    """Encode a uint8 tensor as IDX bytes (the inverse of `parse_idx`)."""
    if tensor.dtype != torch.uint8 or not 1 <= tensor.dim() <= MAX_DIMS:
        raise ValueError(f"IDX needs a uint8 tensor of 1-{MAX_DIMS} dims, got {tensor.dtype}")
    header = struct.pack(f">HBB{tensor.dim()}I", 0, UBYTE, tensor.dim(), *tensor.shape)
    return header + tensor.contiguous().cpu().numpy().tobytes()


def read_idx(path: Path) -> torch.Tensor:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror}).") from None
    return parse_idx(data, str(path))


def write_idx(path: Path, tensor: torch.Tensor) -> None:
    atomic_write_bytes(path, encode_idx(tensor))
