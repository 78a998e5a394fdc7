"""Reading and writing IDX files, the format of the MNIST database (raw or gzip-compressed).

An IDX file is a header followed by the array's bytes, big-endian, in C order:

    bytes 0-1    0x00 0x00
    byte  2      the element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64
    byte  3      the number of dimensions d
    4*d bytes    each dimension's size, a big-endian uint32
    the rest     prod(sizes) elements

    >>> write_idx("labels-idx1-ubyte.gz", numpy.array([5, 0, 4], dtype=numpy.uint8))
    >>> read_idx("labels-idx1-ubyte.gz")
    array([5, 0, 4], dtype=uint8)

A damaged file raises :class:`deepscope.errors.DataError` with one line naming the file and the fault.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import struct
import zlib
from pathlib import Path

import numpy

from .. import files
from ..errors import DataError

# IDX type code -> big-endian NumPy dtype
_DTYPES = {
    0x08: numpy.dtype("u1"),
    0x09: numpy.dtype("i1"),
    0x0B: numpy.dtype(">i2"),
    0x0C: numpy.dtype(">i4"),
    0x0D: numpy.dtype(">f4"),
    0x0E: numpy.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in _DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


# The largest payload an IDX file may declare (4 GiB; MNIST's training images are 47 MB). The size a header
# declares is checked against this limit, and against the file's length, before anything is allocated.
MAX_IDX_BYTES = 1 << 32
_CHUNK = 1 << 22


def read_idx(path, max_bytes: int = MAX_IDX_BYTES) -> numpy.ndarray:
    """The array stored in the IDX file ``path`` (raw or gzip), in native byte order.

    The header is read first and the declared size (computed exactly, so dimensions whose product overflows
    32 or 64 bits are caught) checked before any allocation; a gzip file is decompressed as a stream that
    stops at the declared size, so a small file that inflates to gigabytes costs no more than its header says.

    Raises:
        DataError: the file is missing, not IDX, of an unknown type, declares more than ``max_bytes``, or its
            payload does not match its header.
    """
    return load_idx(path, max_bytes)[0]


def load_idx(path, max_bytes: int = MAX_IDX_BYTES, expect=None):
    """``(array, sha256)``: the array in the IDX file ``path`` and the SHA-256 of its decompressed bytes
    (what identifies a data set whatever compressor packed it). ``expect(shape, dtype)``, if given, is called
    on the header before anything is allocated and returns what is wrong with it (a string) or None."""
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            magic = raw.read(2)
            raw.seek(0)
            if magic == _GZIP_MAGIC:
                with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                    return _read_stream(stream, str(path), max_bytes, None, expect)
            if path.suffix == ".gz":
                raise DataError(f"{path}: named .gz but is not gzip data (starts with {magic.hex() or 'nothing'})")
            return _read_stream(raw, str(path), max_bytes, os.fstat(raw.fileno()).st_size, expect)
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def parse_idx(data: bytes, name="<bytes>", max_bytes: int = MAX_IDX_BYTES) -> numpy.ndarray:
    """The array held in the (decompressed) IDX bytes ``data``; ``name`` is used in error messages."""
    return _read_stream(io.BytesIO(data), name, max_bytes, len(data))[0]


def _read_exactly(stream, n: int) -> bytes:
    """Up to ``n`` bytes of ``stream`` (fewer only at its end)."""
    parts, got = [], 0
    while got < n:
        part = stream.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def _read_stream(stream, name: str, max_bytes: int, stored, expect=None):
    """Header, checks, then the payload read into an array of exactly the declared size (see read_idx).
    ``stored``: the total length when known in advance (raw files), so a wrong size fails before reading."""
    head = _read_exactly(stream, 4)
    if len(head) < 4:
        raise DataError(f"{name}: too short for an IDX header ({len(head)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", head)
    if zero != 0:
        raise DataError(f"{name}: not an IDX file (magic number 0x{head.hex()} should start with 0000)")
    if code not in _DTYPES:
        raise DataError(f"{name}: unknown IDX type code 0x{code:02x} (expected one of "
                        f"{', '.join(f'0x{c:02x}' for c in _DTYPES)})")
    if ndim == 0:
        raise DataError(f"{name}: IDX header declares 0 dimensions")
    dims = _read_exactly(stream, 4 * ndim)
    header = 4 + 4 * ndim
    if len(dims) < 4 * ndim:
        raise DataError(f"{name}: truncated IDX header ({4 + len(dims)} bytes, {header} needed for {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", dims)
    dtype = _DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize  # Python integers: no overflow
    described = f"shape {tuple(shape)} of {dtype.newbyteorder('=').name} ({expected:,} bytes)"
    if expected > max_bytes:
        raise DataError(f"{name}: header declares {described}, more than the {max_bytes:,} bytes deepscope reads "
                        f"from one IDX file")
    fault = expect(shape, dtype.newbyteorder("=")) if expect is not None else None
    if fault:
        raise DataError(f"{name}: {fault}")
    if stored is not None and stored - header != expected:
        what = "truncated" if stored - header < expected else "has trailing bytes"
        raise DataError(f"{name}: {what}: header says {described} but the payload has {stored - header:,} bytes")
    payload = numpy.empty(expected, dtype=numpy.uint8)
    view, got = memoryview(payload), 0
    while got < expected:
        part = stream.read(min(_CHUNK, expected - got))
        if not part:
            raise DataError(f"{name}: truncated: header says {described} but the payload has {got:,} bytes")
        view[got:got + len(part)] = part
        got += len(part)
    if stream.read(1):
        raise DataError(f"{name}: has trailing bytes: header says {described} but the payload is longer")
    digest = hashlib.sha256(head + dims)
    digest.update(view)
    array = payload.view(dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False), digest.hexdigest()  # native byte order, writable


def idx_bytes(array) -> bytes:
    """``array`` encoded as IDX bytes (uncompressed)."""
    array = numpy.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _CODES:
        raise DataError(f"IDX cannot store dtype {array.dtype} (supported: uint8, int8, int16, int32, float32, float64)")
    if array.ndim == 0 or array.ndim > 255:
        raise DataError(f"IDX stores arrays of 1 to 255 dimensions, got {array.ndim}")
    code = _CODES[native]
    header = struct.pack(f">HBB{array.ndim}I", 0, code, array.ndim, *array.shape)
    return header + numpy.ascontiguousarray(array, dtype=_DTYPES[code]).tobytes()


def write_idx(path, array) -> None:
    """Write ``array`` to ``path`` as IDX, gzip-compressed if the name ends in ``.gz``.

    The write is atomic (a temporary file renamed into place), and the gzip header carries no time stamp,
    so the same array always gives the same bytes.
    """
    path = Path(path)
    data = idx_bytes(array)
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=9, mtime=0)
    files.atomic_write(path, data)
