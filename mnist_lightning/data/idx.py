"""The IDX file format MNIST ships in: a big-endian header, then the raw unsigned bytes.

Header: two zero bytes, a type byte (0x08 = unsigned byte, the only type MNIST uses), the number
of dimensions, then one 4-byte big-endian size per dimension. Everything the reader does not
like becomes a `DataError` naming the file, so a truncated download is reported, not crashed on.
Only regular files are read, and a file's size is checked against its header before its body is
read: a header promising terabytes is refused at once, not allocated.
"""

import math
import os
import struct
from pathlib import Path

import torch

from mnist_lightning.errors import DataError
from mnist_lightning.files import atomic_write_bytes, open_regular

UBYTE = 0x08
MAX_DIMS = 4
MAX_HEADER = 4 + 4 * MAX_DIMS  # magic number and the sizes of MAX_DIMS dimensions


def parse_idx(data: bytes, name: str = "<bytes>") -> torch.Tensor:
    """Decode IDX bytes into a uint8 tensor shaped as the header says."""
    header, shape = _check_header(data[:MAX_HEADER], len(data), name)
    return _tensor(bytearray(data[header:]), shape)


def _check_header(head: bytes, size: int, name: str) -> tuple[int, tuple[int, ...]]:
    """The header's length and the shape it promises, given the file's first `MAX_HEADER`
    bytes (all of them, if it is shorter) and its total `size`; a `DataError` unless the size
    is exactly what the header promises. Nothing of the body is needed, so a file's size can be
    checked before its body is read."""
    if size < 4:
        raise DataError(f"{name}: {size} bytes is too short for an IDX file (truncated?).")
    zero, dtype, ndim = struct.unpack(">HBB", head[:4])
    if zero != 0 or dtype != UBYTE or not 1 <= ndim <= MAX_DIMS:
        raise DataError(
            f"{name}: bad IDX magic number 0x{head[:4].hex()} (expected 0x000008 followed by "
            f"1-{MAX_DIMS} dimensions); this is not an MNIST IDX file of unsigned bytes."
        )
    header = 4 + 4 * ndim
    if size < header:
        raise DataError(f"{name}: the IDX header is cut short ({size} bytes).")
    shape = struct.unpack(f">{ndim}I", head[4:header])
    expected = header + math.prod(shape)
    if size != expected:
        raise DataError(
            f"{name}: {size} bytes, but its header promises shape {tuple(shape)} = "
            f"{expected} bytes; the file is truncated or corrupt. Delete it to fetch it again."
        )
    return header, shape


def _tensor(body: bytearray, shape: tuple[int, ...]) -> torch.Tensor:
    if not body:  # a dimension of size 0: torch.frombuffer refuses empty buffers
        return torch.empty(shape, dtype=torch.uint8)
    return torch.frombuffer(body, dtype=torch.uint8).reshape(shape)


def encode_idx(tensor: torch.Tensor) -> bytes:
    """Encode a uint8 tensor as IDX bytes (the inverse of `parse_idx`)."""
    if tensor.dtype != torch.uint8 or not 1 <= tensor.dim() <= MAX_DIMS:
        raise ValueError(f"IDX needs a uint8 tensor of 1-{MAX_DIMS} dims, got {tensor.dtype}")
    header = struct.pack(f">HBB{tensor.dim()}I", 0, UBYTE, tensor.dim(), *tensor.shape)
    return header + tensor.contiguous().cpu().numpy().tobytes()


def read_idx(path: Path) -> torch.Tensor:
    """Read an IDX file: only a regular file (a FIFO would block, a link to /dev/zero would be
    read until memory runs out), and only after its size matches what its header promises."""
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(MAX_HEADER)
            if len(head) < min(size, MAX_HEADER):
                raise DataError(f"{path}: the file changed while it was read; try again.")
            header, shape = _check_header(head, size, str(path))
            f.seek(header)
            body = bytearray(size - header)
            done = 0
            with memoryview(body) as view:
                while done < len(body) and (n := f.readinto(view[done:])):
                    done += n
            if done != len(body) or f.read(1):
                raise DataError(f"{path}: the file changed while it was read; try again.")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e}).") from None
    except MemoryError:
        raise DataError(f"{path}: {size} bytes do not fit in this machine's memory.") from None
    return _tensor(body, shape)


def write_idx(path: Path, tensor: torch.Tensor) -> None:
    atomic_write_bytes(path, encode_idx(tensor))
