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


def read_bytes(path) -> bytes:
    """The contents of ``path``, decompressed if it is gzip (recognised by its magic bytes, whatever its name)."""
    return decompress(read_raw(path), path)


def read_raw(path) -> bytes:
    """The bytes of ``path`` as stored, or a DataError naming the file."""
    path = Path(path)
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None


def decompress(data: bytes, path) -> bytes:
    """``data`` (the bytes of ``path``) gunzipped if they are gzip; a ``.gz`` name on other data is an error."""
    path = Path(path)
    if data[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None
    if path.suffix == ".gz":
        raise DataError(f"{path}: named .gz but is not gzip data (starts with {data[:2].hex() or 'nothing'})")
    return data


def parse_idx(data: bytes, name="<bytes>") -> numpy.ndarray:
    """The array held in the (decompressed) IDX bytes ``data``; ``name`` is used in error messages."""
    if len(data) < 4:
        raise DataError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise DataError(f"{name}: not an IDX file (magic number 0x{data[:4].hex()} should start with 0000)")
    if code not in _DTYPES:
        raise DataError(f"{name}: unknown IDX type code 0x{code:02x} (expected one of "
                        f"{', '.join(f'0x{c:02x}' for c in _DTYPES)})")
    if ndim == 0:
        raise DataError(f"{name}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX header ({len(data)} bytes, {header} needed for {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = _DTYPES[code]
    expected = int(numpy.prod(shape, dtype=numpy.int64)) * dtype.itemsize
    actual = len(data) - header
    if actual != expected:
        what = "truncated" if actual < expected else "has trailing bytes"
        raise DataError(f"{name}: {what}: header says shape {tuple(shape)} of {dtype.newbyteorder('=').name} "
                        f"({expected} bytes) but the payload has {actual} bytes")
    array = numpy.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def read_idx(path) -> numpy.ndarray:
    """The array stored in the IDX file ``path`` (raw or gzip), in native byte order.

    Raises:
        DataError: the file is missing, not IDX, of an unknown type, or its payload does not match its header.
    """
    return parse_idx(read_bytes(path), name=str(path))


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
