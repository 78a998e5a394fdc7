"""Tests of deepscope.data: IDX files, MNIST loading (folders, cache, download, sample), the safe unpickler,
and the book's one-pixel augmentation. No test touches the network: downloads come from file:// URLs."""
import dataclasses
import gzip
import hashlib
import os
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from deepscope.data import expand_one_pixel, load_mnist, read_idx, shift, write_idx
from deepscope.data import mnist as mnist_module
from deepscope.data.augment import ONE_PIXEL_SHIFTS
from deepscope.errors import DataError, ShapeError

from data_paths import DATA as SHARED, write_fake_mnist as fake_mnist
REAL_MNIST = SHARED / "mnist"
needs_mnist = pytest.mark.skipif(not (REAL_MNIST / "train-labels-idx1-ubyte.gz").is_file(),
                                 reason="no MNIST in ../shared/data")


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """An empty cache and no DEEPSCOPE_DATA, so nothing on this machine is found by accident."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DEEPSCOPE_DATA", raising=False)
    return tmp_path


def sha256_of_idx(path):
    return hashlib.sha256(gzip.decompress(Path(path).read_bytes())).hexdigest()


def one_line_naming(err, path):
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


# ---------------------------------------------------------------------------------------------- IDX

@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
def test_idx_round_trip(tmp_path, suffix, dtype):
    rng = np.random.default_rng(1)
    a = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    path = tmp_path / ("a-idx3" + suffix)
    write_idx(path, a)
    b = read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative and b.shape == a.shape
    np.testing.assert_array_equal(a, b)
    b[0] = 0  # a writable array
    raw = gzip.decompress(path.read_bytes()) if suffix else path.read_bytes()
    assert raw[:4] == bytes([0, 0, {"uint8": 8, "int8": 9, "int16": 11, "int32": 12, "float32": 13, "float64": 14}[dtype], 3])
    assert raw[4:8] == (3).to_bytes(4, "big")


def test_idx_gzip_recognised_by_magic_and_reproducible(tmp_path):
    a = np.arange(10, dtype=np.uint8)
    write_idx(tmp_path / "a.gz", a)
    first = (tmp_path / "a.gz").read_bytes()
    write_idx(tmp_path / "a.gz", a)
    assert (tmp_path / "a.gz").read_bytes() == first  # no time stamp in the gzip header
    os.replace(tmp_path / "a.gz", tmp_path / "no-suffix")
    np.testing.assert_array_equal(read_idx(tmp_path / "no-suffix"), a)


def test_write_idx_refuses_unsupported_dtype(tmp_path):
    with pytest.raises(DataError, match="int64"):
        write_idx(tmp_path / "a", np.arange(3))


def _idx(code, shape, payload_len=None):
    head = bytes([0, 0, code, len(shape)]) + b"".join(int(s).to_bytes(4, "big") for s in shape)
    n = int(np.prod(shape)) if payload_len is None else payload_len
    return head + bytes(n)


@pytest.mark.parametrize("data, fault", [
    (b"\x00\x00", "too short"),
    (b"\x12\x34" + _idx(8, (2,))[2:], "not an IDX file"),
    (_idx(0x0A, (2,)), "unknown IDX type code 0x0a"),
    (bytes([0, 0, 8, 0]), "0 dimensions"),
    (_idx(8, (2, 3))[:9], "truncated IDX header"),
    (_idx(8, (4, 28, 28), payload_len=3 * 784), "truncated"),
    (_idx(8, (4,), payload_len=5), "trailing bytes"),
    (_idx(0x0C, (3,), payload_len=11), "truncated"),
])
@pytest.mark.parametrize("gz", [False, True])
def test_corrupt_idx_raises_data_error_naming_the_file(tmp_path, data, fault, gz):
    path = tmp_path / ("bad-idx" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert fault in one_line_naming(err, path)


def test_truncated_or_fake_gzip_raises_data_error(tmp_path):
    path = tmp_path / "t-idx1-ubyte.gz"
    write_idx(path, np.arange(200, dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert "gzip" in one_line_naming(err, path)
    path.write_bytes(_idx(8, (2,)))  # raw IDX named .gz
    with pytest.raises(DataError) as err:
        read_idx(path)
    assert "not gzip" in one_line_naming(err, path)
    with pytest.raises(DataError) as err:
        read_idx(tmp_path / "missing")
    one_line_naming(err, tmp_path / "missing")


# ---------------------------------------------------------------------------------------------- loading MNIST

@needs_mnist
def test_real_mnist_label_counts_and_book_split(isolated):
    data = load_mnist(data_dir=SHARED, download=False)
    assert data.source == str(REAL_MNIST) and data.name == "mnist"
    (X, y), (Xv, yv), (Xt, yt) = data.train, data.validation, data.test
    assert X.shape == (50000, 1, 28, 28) and Xv.shape == (10000, 1, 28, 28) and Xt.shape == (10000, 1, 28, 28)
    assert X.dtype == np.float32 and y.dtype == np.int64 and yt.shape == (10000,)
    assert X.min() == 0.0 and X.max() == 1.0
    counts = np.bincount(np.concatenate([y, yv]), minlength=10)
    assert counts.tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    # the book's split is positional: validation is the last 10,000 of the training file
    raw = read_idx(REAL_MNIST / "train-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(Xv[-1, 0], raw[-1] / np.float32(255))
    np.testing.assert_array_equal(X[0, 0] * 255, raw[0].astype(np.float32))


@needs_mnist
def test_download_verifies_real_checksums(isolated, monkeypatch):
    spec = dataclasses.replace(mnist_module._DATASETS["mnist"], mirrors=(REAL_MNIST.as_uri() + "/",))
    monkeypatch.setitem(mnist_module._DATASETS, "mnist", spec)
    data = load_mnist(verbose=False)
    cache = isolated / "cache/deepscope/mnist"
    assert data.source == str(cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted(f + ".gz" for f in mnist_module.FILES)
    assert len(data.train[1]) == 50000 and len(data.test[1]) == 10000
    again = load_mnist(download=False, verbose=False)  # from the cache now, checksums verified again
    assert again.source == str(cache)


def test_data_dir_raw_or_gz_directly_or_in_subfolder(isolated, monkeypatch):
    arrays = fake_mnist(isolated / "raw", gz=False)
    fake_mnist(isolated / "root/mnist", gz=True, seed=1)
    data = load_mnist(data_dir=isolated / "raw", download=False)
    assert data.source == str(isolated / "raw")
    assert [len(s[1]) for s in (data.train, data.validation, data.test)] == [50, 10, 12]
    np.testing.assert_array_equal(data.train[0][:, 0] * 255, arrays["train-images-idx3-ubyte"][:50])
    np.testing.assert_array_equal(data.validation[1], arrays["train-labels-idx1-ubyte"][50:])
    np.testing.assert_array_equal(data.test[1], arrays["t10k-labels-idx1-ubyte"])
    monkeypatch.setenv("DEEPSCOPE_DATA", str(isolated / "root"))
    assert load_mnist(download=False).source == str(isolated / "root/mnist")
    assert load_mnist(data_dir=isolated / "raw", download=False).source == str(isolated / "raw")  # argument first


def test_incomplete_or_inconsistent_folder_raises(isolated):
    fake_mnist(isolated / "d")
    (isolated / "d/t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="lacks t10k-labels-idx1-ubyte"):
        load_mnist(data_dir=isolated / "d", download=False)
    write_idx(isolated / "d/t10k-labels-idx1-ubyte.gz", np.zeros(11, np.uint8))
    with pytest.raises(DataError, match="12 images but the labels file has shape"):
        load_mnist(data_dir=isolated / "d", download=False)
    write_idx(isolated / "d/t10k-labels-idx1-ubyte.gz", np.full(12, 10, np.uint8))
    with pytest.raises(DataError, match="labels must lie in 0..9"):
        load_mnist(data_dir=isolated / "d", download=False)
    write_idx(isolated / "d/t10k-images-idx3-ubyte.gz", np.zeros((12, 20, 20), np.uint8))
    with pytest.raises(DataError, match=r"shape \(N, 28, 28\)"):
        load_mnist(data_dir=isolated / "d", download=False)


def test_sample_fallback(isolated, monkeypatch, capsys):
    (isolated / "empty").mkdir()
    monkeypatch.setenv("DEEPSCOPE_DATA", str(isolated / "empty"))
    data = load_mnist(download=False)
    assert data.source == "embedded sample" and data.name == "mnist"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "embedded sample" in err and "download=False" in err
    sizes = [len(s[1]) for s in (data.train, data.validation, data.test)]
    assert sizes == [5000, 1000, 1000]
    for X, y in (data.train, data.validation, data.test):
        assert X.dtype == np.float32 and X.shape[1:] == (1, 28, 28) and y.dtype == np.int64
        assert 0 <= X.min() and X.max() == 1.0
        assert np.bincount(y, minlength=10).min() >= 0.08 * len(y)  # stratified: every digit well represented
    load_mnist(download=False, verbose=False)
    assert capsys.readouterr().err == ""
    total = sum(p.stat().st_size for p in mnist_module.SAMPLE_DIR.glob("*.gz"))
    assert total < 2_000_000


@needs_mnist
def test_sample_is_drawn_from_the_right_parts_of_mnist():
    sample = mnist_module.load_sample()
    train = read_idx(REAL_MNIST / "train-images-idx3-ubyte.gz").reshape(60000, -1)
    test = read_idx(REAL_MNIST / "t10k-images-idx3-ubyte.gz").reshape(10000, -1)
    lookup = {}
    for i, row in enumerate(train):
        lookup.setdefault(row.tobytes(), i)
    positions = [lookup[(x.reshape(-1) * 255).round().astype(np.uint8).tobytes()] for x in sample.train[0][:200]]
    assert max(positions) < 50000
    positions = [lookup[(x.reshape(-1) * 255).round().astype(np.uint8).tobytes()] for x in sample.validation[0][:200]]
    assert min(positions) >= 50000
    test_rows = {row.tobytes() for row in test}
    assert all((x.reshape(-1) * 255).round().astype(np.uint8).tobytes() in test_rows for x in sample.test[0][:200])


def _fake_mirror(tmp_path, monkeypatch, with_true_hashes):
    mirror = tmp_path / "mirror"
    fake_mnist(mirror)
    spec = mnist_module._DATASETS["mnist"]
    sha = {f: sha256_of_idx(mirror / (f + ".gz")) for f in mnist_module.FILES} if with_true_hashes else spec.sha256
    monkeypatch.setitem(mnist_module._DATASETS, "mnist",
                        dataclasses.replace(spec, mirrors=("file:///nonexistent/deepscope-mirror/", mirror.as_uri() + "/"),
                                            sha256=sha))
    return mirror


def test_download_from_second_mirror_into_cache(isolated, monkeypatch):
    _fake_mirror(isolated, monkeypatch, with_true_hashes=True)
    data = load_mnist(verbose=False)
    cache = isolated / "cache/deepscope/mnist"
    assert data.source == str(cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted(f + ".gz" for f in mnist_module.FILES)  # no .part left
    assert [len(s[1]) for s in (data.train, data.validation, data.test)] == [50, 10, 12]


def test_download_checksum_mismatch_deletes_file_and_names_both_hashes(isolated, monkeypatch):
    mirror = _fake_mirror(isolated, monkeypatch, with_true_hashes=False)  # the real MNIST hashes: no match
    with pytest.raises(DataError) as err:
        load_mnist(verbose=False)
    msg = str(err.value)
    assert "\n" not in msg and "train-images-idx3-ubyte.gz" in msg and "SHA-256 checksum mismatch" in msg
    assert mnist_module._DATASETS["mnist"].sha256["train-images-idx3-ubyte"] in msg
    assert sha256_of_idx(mirror / "train-images-idx3-ubyte.gz") in msg
    cache = isolated / "cache/deepscope/mnist"
    assert list(cache.iterdir()) == []


def test_corrupt_cache_file_is_named_and_kept(isolated):
    cache = isolated / "cache/deepscope/mnist"
    fake_mnist(cache)
    with pytest.raises(DataError) as err:
        load_mnist(download=False)
    msg = str(err.value)
    assert "SHA-256 checksum mismatch" in msg and "remove it to download it again" in msg
    assert len(list(cache.iterdir())) == 4  # nothing a user put there is deleted


def test_unreachable_mirrors_fall_back_to_sample(isolated, monkeypatch, capsys):
    def offline(url, timeout=None):
        raise urllib.error.URLError("Temporary failure in name resolution")
    monkeypatch.setattr(mnist_module.urllib.request, "urlopen", offline)
    data = load_mnist()
    assert data.source == "embedded sample"
    err = capsys.readouterr().err
    assert "Temporary failure in name resolution" in err and "embedded sample" in err
    assert list((isolated / "cache/deepscope/mnist").glob("*")) == []


def test_fashion_and_unknown_dataset(isolated, monkeypatch):
    with pytest.raises(DataError, match="Fashion-MNIST not found"):
        load_mnist("fashion", download=False)
    with pytest.raises(DataError, match="unknown dataset 'emnist'"):
        load_mnist("emnist")
    fake_mnist(isolated / "root/fashion")
    data = load_mnist("fashion", data_dir=isolated / "root", download=False)
    assert data.name == "fashion" and data.classes[9] == "Ankle boot" and len(data.train[1]) == 50


def test_fashion_download_checks_md5_of_gz(isolated, monkeypatch):
    mirror = isolated / "mirror"
    fake_mnist(mirror)
    spec = dataclasses.replace(mnist_module._DATASETS["fashion"], mirrors=(mirror.as_uri() + "/",))
    monkeypatch.setitem(mnist_module._DATASETS, "fashion", spec)
    with pytest.raises(DataError, match="MD5 checksum mismatch") as err:
        load_mnist("fashion", verbose=False)
    assert hashlib.md5((mirror / "train-images-idx3-ubyte.gz").read_bytes()).hexdigest() in str(err.value)
    good = {f: hashlib.md5((mirror / (f + ".gz")).read_bytes()).hexdigest() for f in mnist_module.FILES}
    with pytest.raises(DataError, match="MD5 checksum mismatch"):  # images are checked by MD5 of the .gz ...
        load_mnist("fashion", verbose=False)
    monkeypatch.setitem(mnist_module._DATASETS, "fashion", dataclasses.replace(spec, md5_gz=good))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz .*SHA-256 checksum mismatch"):
        load_mnist("fashion", verbose=False)  # ... labels by the SHA-256 of the real files' bytes
    sha = {f: sha256_of_idx(mirror / (f + ".gz")) for f in mnist_module.FILES if "labels" in f}
    monkeypatch.setitem(mnist_module._DATASETS, "fashion", dataclasses.replace(spec, md5_gz=good, sha256=sha))
    assert load_mnist("fashion", verbose=False).source == str(isolated / "cache/deepscope/fashion")


# ---------------------------------------------------------------------------------------------- the book's pickle

def _book_pickle(path, protocol):
    rng = np.random.default_rng(2)
    splits = tuple((rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)) for n in (7, 3, 4))
    with gzip.open(path, "wb") as f:
        pickle.dump(splits, f, protocol=protocol)
    return splits


@pytest.mark.parametrize("protocol", [2, 5])
def test_book_pickle_is_read(isolated, protocol):
    splits = _book_pickle(isolated / "mnist.pkl.gz", protocol)
    data = load_mnist(data_dir=isolated, download=False)
    assert data.source == str(isolated / "mnist.pkl.gz")
    for (X, y), (X0, y0) in zip((data.train, data.validation, data.test), splits):
        assert X.shape == (len(X0), 1, 28, 28) and X.dtype == np.float32 and y.dtype == np.int64
        np.testing.assert_array_equal(X.reshape(len(X0), 784), X0)
        np.testing.assert_array_equal(y, y0)


class _Evil:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


@pytest.mark.parametrize("payload", ["system", "eval"])
def test_malicious_pickle_is_refused(isolated, payload):
    marker = isolated / "pwned"
    evil = _Evil(f"touch {marker}") if payload == "system" else _EvalEvil()
    X = np.zeros((2, 784), np.float32)
    with gzip.open(isolated / "mnist.pkl.gz", "wb") as f:
        pickle.dump(((X, evil), (X, np.zeros(2)), (X, np.zeros(2))), f, protocol=2)
    with pytest.raises(DataError) as err:
        load_mnist(data_dir=isolated, download=False)
    msg = one_line_naming(err, isolated / "mnist.pkl.gz")
    assert "refused" in msg and ("system" in msg or "eval" in msg)
    assert not marker.exists()


def test_pickle_of_wrong_structure(isolated):
    with gzip.open(isolated / "mnist.pkl.gz", "wb") as f:
        pickle.dump((np.zeros(3), np.zeros(3)), f)
    with pytest.raises(DataError, match="expected \\(train, validation, test\\)"):
        load_mnist(data_dir=isolated, download=False)


# ---------------------------------------------------------------------------------------------- augmentation

def test_shift_moves_pixels_exactly():
    X = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5) + 1
    for dy in range(-5, 6):
        for dx in range(-6, 7):
            out = shift(X, dy, dx)
            assert out.shape == X.shape and out.dtype == X.dtype
            for i in range(4):
                for j in range(5):
                    si, sj = i - dy, j - dx
                    expected = X[..., si, sj] if 0 <= si < 4 and 0 <= sj < 5 else 0
                    np.testing.assert_array_equal(out[..., i, j], expected)
    down = shift(X, 1, 0)
    np.testing.assert_array_equal(down[..., 1:, :], X[..., :-1, :])
    assert not down[..., 0, :].any()
    left = shift(X, 0, -1)
    np.testing.assert_array_equal(left[..., :, :-1], X[..., :, 1:])
    assert not left[..., :, -1].any()


def _book_expand(images_784, labels):
    """network3's expand_mnist.py, without its final shuffle: the oracle for expand_one_pixel."""
    out_x, out_y = [], []
    for x, y in zip(images_784, labels):
        out_x.append(x)
        out_y.append(y)
        image = np.reshape(x, (-1, 28))
        for d, axis, index_position, index in [(1, 0, "first", 0), (-1, 0, "first", 27),
                                               (1, 1, "last", 0), (-1, 1, "last", 27)]:
            new_img = np.roll(image, d, axis)
            if index_position == "first":
                new_img[index, :] = np.zeros(28)
            else:
                new_img[:, index] = np.zeros(28)
            out_x.append(np.reshape(new_img, 784))
            out_y.append(y)
    return np.array(out_x), np.array(out_y)


def test_expand_one_pixel_matches_the_book():
    rng = np.random.default_rng(3)
    X = rng.random((6, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 6)
    X5, y5 = expand_one_pixel(X, y)
    assert X5.shape == (30, 1, 28, 28) and X5.dtype == np.float32 and y5.shape == (30,)
    bx, by = _book_expand(X.reshape(6, 784), y)
    np.testing.assert_array_equal(X5.reshape(30, 784), bx)
    np.testing.assert_array_equal(y5, by)
    for k, (dy, dx) in enumerate(ONE_PIXEL_SHIFTS):
        np.testing.assert_array_equal(X5[k::5], shift(X, dy, dx))
    flat5, _ = expand_one_pixel(X.reshape(6, 784), y)  # the book's flattened vectors work too
    np.testing.assert_array_equal(flat5, bx)
    with pytest.raises(ShapeError):
        expand_one_pixel(X, y[:5])
    with pytest.raises(ShapeError):
        expand_one_pixel(np.zeros((4, 10)), np.zeros(4))


def test_interrupted_download_leaves_no_partial_file(isolated, monkeypatch):
    class Response:
        headers = {"Content-Length": "100"}

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, n):
            raise KeyboardInterrupt

    monkeypatch.setattr(mnist_module.urllib.request, "urlopen", lambda url, timeout=None: Response())
    with pytest.raises(KeyboardInterrupt):
        load_mnist(verbose=False)
    assert list((isolated / "cache/deepscope/mnist").iterdir()) == []


def _python2_array(a):
    """Pickle opcodes for ndarray ``a`` as Python 2's NumPy wrote them (the form of the book's mnist.pkl.gz):
    numpy.core.multiarray._reconstruct, and the raw data as a py2 str (BINSTRING)."""
    def short_str(b):
        return b"U" + bytes([len(b)]) + b

    def int4(n):
        return b"J" + n.to_bytes(4, "little", signed=True)

    dtype = (b"cnumpy\ndtype\n" + short_str(a.dtype.str[1:].encode()) + b"K\x00K\x01\x87R"
             + b"(K\x03" + short_str(b"<") + b"NNN" + int4(-1) + int4(-1) + b"K\x00tb")
    shape = b"(" + b"".join(int4(n) for n in a.shape) + b"t"
    data = a.tobytes()
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + short_str(b"b") + b"\x87R"
            + b"(K\x01" + shape + dtype + b"\x89T" + len(data).to_bytes(4, "little") + data + b"tb")


def test_python2_book_pickle_is_read(isolated):
    rng = np.random.default_rng(4)
    splits = [(rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n).astype("<i8")) for n in (5, 2, 3)]
    body = b"".join(_python2_array(X) + _python2_array(y) + b"\x86" for X, y in splits)
    (isolated / "mnist.pkl.gz").write_bytes(gzip.compress(b"\x80\x02" + body + b"\x87."))
    data = load_mnist(data_dir=isolated, download=False)
    for (X, y), (X0, y0) in zip((data.train, data.validation, data.test), splits):
        np.testing.assert_array_equal(X.reshape(len(X0), 784), X0)
        np.testing.assert_array_equal(y, y0)
