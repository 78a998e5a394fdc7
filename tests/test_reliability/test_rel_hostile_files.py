"""Class 10 of issue 9: tiny hostile files. Each declares far more than it holds (or inflates without bound);
each is refused in one line, and the peak memory of a fresh process that loads it stays under 200 MB
(measured with resource.getrusage in a subprocess)."""
import gzip
import json
import pickle
import struct
import zlib

import numpy as np
import pytest
from safetensors.numpy import save_file

from rel_helpers import run_measured

LIMIT_MB = 200
ZEROS_16M = gzip.compress(bytes(1 << 24), compresslevel=9, mtime=0)  # one gzip member: 16 MiB of zeros, 16 KB


def idx_header(code, shape):
    return struct.pack(f">HBB{len(shape)}I", 0, code, len(shape), *shape)


def gzip_bomb(path, header: bytes, gigabytes: float):
    """A .gz whose decompressed bytes are ``header`` then ``gigabytes`` GB of zeros (gzip members, concatenated)."""
    with open(path, "wb") as f:
        f.write(gzip.compress(header, mtime=0))
        for _ in range(int(gigabytes * 1e9) >> 24):
            f.write(ZEROS_16M)
    return path


def load_and_measure(call: str, path) -> dict:
    code = f"""
from pathlib import Path
def main():
    import deepscope, deepscope.data
    path = Path({str(path)!r})
    {call}
    return {{"error": None}}
"""
    result = run_measured(code)
    print(f"{path.name}: {path.stat().st_size:,} bytes, peak RSS {result['peak_mb']:.0f} MB, {result['message'] if result['error'] else 'loaded'}")
    return result


def refused(result, message):
    assert result["error"] == "DataError", result
    assert result["message"] == message
    assert result["peak_mb"] < LIMIT_MB


def test_gz_bomb_behind_an_mnist_header_stops_at_the_declared_size(tmp_path):
    path = gzip_bomb(tmp_path / "train-images-idx3-ubyte.gz", idx_header(8, (60000, 28, 28)), 13)
    assert path.stat().st_size < 14_000_000
    result = load_and_measure("deepscope.data.read_idx(path)", path)
    refused(result, f"{path}: has trailing bytes: header says shape (60000, 28, 28) of uint8 (47,040,000 bytes) "
                    f"but the payload is longer")


def test_gz_bomb_with_an_honest_header_is_refused_before_decompressing(tmp_path):
    path = gzip_bomb(tmp_path / "big-idx1-ubyte.gz", idx_header(8, (13_000_000_000 // 4, 4)), 1)
    result = load_and_measure("deepscope.data.read_idx(path)", path)
    refused(result, f"{path}: header declares shape (3250000000, 4) of uint8 (13,000,000,000 bytes), more than "
                    f"the 4,294,967,296 bytes deepscope reads from one IDX file")


@pytest.mark.parametrize("shape", [(65536, 65536, 65536, 65536), (2**32 - 1, 2**32 - 1)])
def test_idx_dimensions_that_overflow_are_refused(tmp_path, shape):
    path = tmp_path / "overflow-idx"
    path.write_bytes(idx_header(8, shape))  # the product wraps to 0 in 64-bit arithmetic
    result = load_and_measure("deepscope.data.read_idx(path)", path)
    n = int(np.prod(np.array(shape, dtype=object)))
    refused(result, f"{path}: header declares shape {shape} of uint8 ({n:,} bytes), more than the "
                    f"4,294,967,296 bytes deepscope reads from one IDX file")


def test_mnist_loader_refuses_an_oversized_header_before_reading(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    gzip_bomb(folder / "train-images-idx3-ubyte.gz", idx_header(8, (1_000_000, 28, 28)), 1)
    for name, shape in (("train-labels-idx1-ubyte", (1_000_000,)), ("t10k-images-idx3-ubyte", (10, 28, 28)),
                        ("t10k-labels-idx1-ubyte", (10,))):
        (folder / name).write_bytes(idx_header(8, shape) + bytes(int(np.prod(shape))))
    result = load_and_measure("deepscope.data.load_mnist(data_dir=path, download=False)", folder)
    refused(result, f"{folder / 'train-images-idx3-ubyte.gz'}: header declares 1,000,000 items, more than the "
                    f"100,000 an MNIST file may hold")


def test_tiny_model_json_declaring_a_huge_layer(tmp_path):
    save_file({"weight": np.zeros((10, 784), np.float32), "bias": np.zeros(10, np.float32)},
              str(tmp_path / "model.safetensors"))
    desc = {"format": "deepscope-model-1",
            "model": {"type": "Linear", "args": {"in_features": 100000, "out_features": 100000}}}
    (tmp_path / "model.json").write_text(json.dumps(desc))
    assert (tmp_path / "model.json").stat().st_size < 150
    result = load_and_measure("deepscope.load(path)", tmp_path)
    refused(result, f"{tmp_path / 'model.json'}: model description declares Linear(in_features=100000, "
                    f"out_features=100000), far larger than the weights saved with it")


def test_model_json_without_weights_declaring_a_huge_conv(tmp_path):
    desc = {"format": "deepscope-model-1", "model": {"type": "Sequential", "modules": [
        {"type": "Conv2d", "args": {"in_channels": 5000, "out_channels": 5000, "kernel_size": 9}}]}}
    (tmp_path / "model.json").write_text(json.dumps(desc))
    result = load_and_measure("deepscope.load(path)", tmp_path)
    refused(result, f"{tmp_path / 'model.json'}: model description declares Conv2d(in_channels=5000, "
                    f"out_channels=5000, kernel_size=9), far larger than the weights saved with it")


def png_bomb(path, width, height):
    """A valid grey PNG of ``width`` x ``height`` black pixels: rows of zeros compress ~1000:1."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = bytes(width + 1)  # filter byte + pixels
    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    path.write_bytes(png)
    return path


@pytest.mark.parametrize("side", [5000, 30000])
def test_png_bomb_is_refused_from_its_header(tmp_path, side):
    path = png_bomb(tmp_path / "digit.png", side, side)
    assert path.stat().st_size < 1_000_000
    result = load_and_measure("from deepscope.data.images import load_images; load_images([path])", path)
    size = "5000x5000 pixels" if side == 5000 else "over 178,956,970 pixels"
    refused(result, f"{path}: {size}, more than the 16,777,216 deepscope reads; scale it down first")


def reduce_pickle(global_module, global_name, args_pickle: bytes) -> bytes:
    """A protocol-2 pickle calling ``global_module.global_name(*args)``."""
    return (b"\x80\x02c" + global_module.encode() + b"\n" + global_name.encode() + b"\n" + args_pickle + b"R.")


@pytest.mark.parametrize("kind", ["reconstruct", "ndarray", "setstate", "binbytes8"])
def test_pickle_asking_for_a_huge_array(tmp_path, kind):
    shape = (10**6, 10**6)
    if kind == "reconstruct":
        data = reduce_pickle("numpy.core.multiarray", "_reconstruct",
                             b"cnumpy\nndarray\n" + pickle.dumps(shape, 2)[2:-1] + b"C\x01b\x87")
        message = f"refused to build an array of shape {shape!r} from nothing in this pickle"
    elif kind == "ndarray":
        data = reduce_pickle("numpy", "ndarray", pickle.dumps((shape,), 2)[2:-1])
        message = f"refused to build an array of shape {shape!r} from nothing in this pickle"
    elif kind == "setstate":
        good = pickle.dumps(np.zeros(3, np.uint8), protocol=2)
        huge = b"J" + struct.pack("<i", 10**6) + b"J" + struct.pack("<i", 10**6) + b"\x86"
        data = good.replace(b"K\x03\x85", huge, 1)  # the state's shape (3,) becomes (10**6, 10**6)
        assert data != good
        message = f"an array in this pickle declares shape {shape!r} of uint8 but holds 3 bytes"
    else:  # a bytes object declared 2**40 long in a file of a few bytes
        data = b"\x80\x04\x8e" + struct.pack("<Q", 1 << 40) + b"abc"
        message = "declares 1,099,511,627,776 more bytes than the 1,073,741,824 deepscope reads from a pickle"
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(data))
    result = load_and_measure("from deepscope.data.mnist import load_pickle; load_pickle(path)", path)
    assert result["error"] == "DataError" and result["peak_mb"] < LIMIT_MB, result
    assert result["message"] == f"{path}: {message}"


@pytest.mark.parametrize("opcode", [b"\x8e", b"\x96"])  # BINBYTES8, BYTEARRAY8
def test_pickle_gzip_bomb_is_refused_before_inflating(tmp_path, opcode):
    path = tmp_path / "mnist.pkl.gz"
    with open(path, "wb") as f:  # an object declared 2 GiB long, and 2 GiB of zeros to fill it: 2 MB on disk
        f.write(gzip.compress(b"\x80\x05" + opcode + struct.pack("<Q", 2 << 30)))
        for _ in range((2 << 30) >> 24):
            f.write(ZEROS_16M)
    result = load_and_measure("from deepscope.data.mnist import load_pickle; load_pickle(path)", path)
    refused(result, f"{path}: declares 2,147,483,648 more bytes than the 1,073,741,824 deepscope reads from a pickle")
