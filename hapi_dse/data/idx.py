"""Reader for the IDX format of (Fashion-)MNIST, gzip-compressed or raw.

The format: a 4-byte magic (0x00 0x00, a type code, the number of dimensions), one big-endian
uint32 per dimension, then the data. Everything is checked before it is trusted: magic, type,
dimensions, and that the payload has exactly the announced number of bytes.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from hapi_dse.errors import DataError

_TYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (``.gz`` or raw) into a numpy array, validating its header."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a readable gzip file ({e}); the file is corrupt") from None
    return parse_idx(raw, source=str(path))


def parse_idx(raw: bytes, source: str = "<bytes>") -> np.ndarray:
    if len(raw) < 4:
        raise DataError(f"{source}: {len(raw)} bytes is too short for an IDX header")
    zero, dtype_code, ndim = raw[0:2], raw[2], raw[3]
    if zero != b"\x00\x00" or dtype_code not in _TYPES or not 1 <= ndim <= 4:
        raise DataError(
            f"{source}: bad IDX magic {raw[:4].hex()}: expected 0000 + type code "
            f"(08 for uint8) + 1..4 dimensions, e.g. 00000803 for images"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{source}: truncated IDX header ({len(raw)} of {header} bytes)")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = _TYPES[dtype_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    got = len(raw) - header
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        raise DataError(
            f"{source}: IDX payload {what}: header says shape {tuple(shape)} "
            f"({expected} bytes), file has {got}"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="), copy=False)
    )


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool | None = None) -> None:
    """Write an IDX file (gzip when the name ends in .gz). Used by tests and data tools."""
    path = Path(path)
    codes: dict[np.dtype[Any], int] = {
        v.newbyteorder(">") if v.itemsize > 1 else v: k for k, v in _TYPES.items()
    }
    dt = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    if dt not in codes:
        raise ValueError(f"dtype {array.dtype} has no IDX type code")
    body = struct.pack(">BBBB", 0, 0, codes[dt], array.ndim)
    body += struct.pack(f">{array.ndim}I", *array.shape) + array.astype(dt).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        body = gzip.compress(body)
    path.write_bytes(body)
