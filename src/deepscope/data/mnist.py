"""MNIST and Fashion-MNIST, split the book's way: 50,000 training, 10,000 validation and 10,000 test images.

    >>> from deepscope.data import load_mnist
    >>> mnist = load_mnist()
    >>> X, y = mnist.train            # X: float32 (50000, 1, 28, 28) in [0, 1]; y: int64 (50000,)
    >>> mnist.source                  # where the images came from

Where ``load_mnist`` looks, in order:

1. ``data_dir``, the folder given as argument;
2. the folder named by the environment variable ``DEEPSCOPE_DATA``;
3. the cache, ``$XDG_CACHE_HOME/deepscope/<dataset>`` (``~/.cache/deepscope/<dataset>`` by default);
4. the public mirrors, downloading into the cache (each file's checksum is verified);
5. a small sample of MNIST shipped inside the package (5,000 / 1,000 / 1,000 images), with a line saying so.

A folder in 1 or 2 may hold the four IDX files itself or in a subfolder named after the data set (``mnist/``,
``fashion/``); the files may be raw or gzipped (``train-images-idx3-ubyte`` or ``train-images-idx3-ubyte.gz``,
``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``). A folder holding the
book's own ``mnist.pkl.gz`` works too: it is read with an unpickler that builds NumPy arrays and nothing else.

The book's split: the first 50,000 training images train, the last 10,000 (a sixth) are the validation set,
and the 10,000 ``t10k`` images are the test set.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib
import os
import pickle
import sys
import urllib.request
import zlib
from pathlib import Path

import numpy

from .. import files
from ..errors import DataError
from . import idx
from .idx import parse_idx

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
SAMPLE_SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class _Spec:
    title: str
    mirrors: tuple          # base URLs, tried in order
    subdirs: tuple          # subfolder names a data folder may use for this data set
    classes: tuple
    sha256: dict | None = None   # SHA-256 of each DECOMPRESSED file
    md5_gz: dict | None = None   # MD5 of each .gz file as published by the authors


_DATASETS = {
    "mnist": _Spec(
        title="MNIST",
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        subdirs=("mnist",),
        classes=tuple("0123456789"),
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    ),
    # We could not obtain SHA-256 sums of the decompressed Fashion-MNIST files from a trustworthy source, so a
    # download is checked against the MD5 sums of the .gz files that Zalando Research publishes in the data set's
    # README, and every file's IDX structure (type, 28x28 images, matching counts) is checked as for MNIST.
    "fashion": _Spec(
        title="Fashion-MNIST",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        subdirs=("fashion", "fashion-mnist", "fashion_mnist"),
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        md5_gz={
            "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
}


@dataclasses.dataclass
class MNISTData:
    """The three splits of a data set, each a tuple ``(X, y)``: X float32 ``(N, 1, 28, 28)`` in [0, 1], y int64 ``(N,)``.

    Attributes:
        train, validation, test: the splits.
        name: ``"mnist"`` or ``"fashion"``.
        source: the folder or file the images came from, or ``"embedded sample"``.
        classes: the names of the ten classes.
    """
    name: str
    train: tuple
    validation: tuple
    test: tuple
    source: str
    classes: tuple

    def __repr__(self):
        sizes = "/".join(f"{len(s[1]):,}" for s in (self.train, self.validation, self.test))
        return f"MNISTData(name={self.name!r}, train/validation/test={sizes}, source={self.source!r})"


def load_mnist(dataset: str = "mnist", data_dir=None, download: bool = True, verbose: bool = True) -> MNISTData:
    """Load MNIST (``"mnist"``) or Fashion-MNIST (``"fashion"``) with the book's 50k/10k/10k split.

    Args:
        dataset: ``"mnist"`` or ``"fashion"``.
        data_dir: a folder holding the four IDX files (raw or .gz) or the book's ``mnist.pkl.gz``; optional.
        download: whether to fetch the files from the public mirrors when they are nowhere on this machine.
        verbose: print a line (on stderr) when downloading or when falling back to the embedded sample.

    Returns:
        an :class:`MNISTData` with ``.train``, ``.validation``, ``.test``, ``.source``, ``.name``.

    Raises:
        DataError: a file found is corrupt or incomplete, a download fails its checksum, or Fashion-MNIST is
            nowhere to be found (only MNIST has an embedded sample).
    """
    if dataset not in _DATASETS:
        raise DataError(f"unknown dataset {dataset!r}: expected one of {', '.join(map(repr, _DATASETS))}")
    spec = _DATASETS[dataset]

    for folder in _user_folders(spec, data_dir):
        files = _find_idx_files(folder)
        if files and len(files) < len(FILES):
            missing = ", ".join(f"{f}[.gz]" for f in FILES if f not in files)
            raise DataError(f"{folder}: has some {spec.title} files but lacks {missing}")
        if files:
            return _from_idx(spec, dataset, files, source=str(folder), verify=False)
        if dataset == "mnist" and (folder / "mnist.pkl.gz").is_file():
            return load_book_pickle(folder / "mnist.pkl.gz")

    if data_dir is not None:  # the user named a folder: never train on something else instead
        raise DataError(f"no {spec.title} files in {data_dir}: expected {', '.join(f + '[.gz]' for f in FILES)} "
                        f"(or mnist.pkl.gz), there or in a subfolder {'/ or '.join(spec.subdirs)}/")

    cache = cache_dir() / dataset
    files = _find_idx_files(cache)
    if len(files) == len(FILES):
        return _from_idx(spec, dataset, files, source=str(cache), verify=True)

    reason = "download=False"
    if download:
        try:
            for name in FILES:
                if name not in files:
                    files[name] = download_file(spec.mirrors, name + ".gz", cache, sha256=_get(spec.sha256, name),
                                                md5=_get(spec.md5_gz, name), progress=verbose)
            return _from_idx(spec, dataset, files, source=str(cache), verify=False)
        except _DownloadFailed as e:
            reason = f"download failed: {e}"

    if dataset != "mnist":
        raise DataError(f"{spec.title} not found ({reason}); put its four IDX files in $DEEPSCOPE_DATA/{dataset}/ "
                        f"or pass data_dir")
    data = load_sample()
    sizes = "/".join(f"{len(s[1]):,}" for s in (data.train, data.validation, data.test))
    _say(verbose, f"deepscope: MNIST not found ({reason}); using the embedded sample of {sizes} "
                  f"train/validation/test images, so accuracies will be below the book's")
    return data


def load_sample() -> MNISTData:
    """The MNIST sample shipped in the package (see ``scripts/build_mnist_sample.py``)."""
    splits = []
    for split in SAMPLE_SPLITS:
        images = _read(SAMPLE_DIR / f"{split}-images-idx3-ubyte.gz")
        labels = _read(SAMPLE_DIR / f"{split}-labels-idx1-ubyte.gz")
        splits.append(_pair(images, labels, SAMPLE_DIR / f"{split}-images-idx3-ubyte.gz"))
    return MNISTData("mnist", *splits, source="embedded sample", classes=_DATASETS["mnist"].classes)


def cache_dir() -> Path:
    """deepscope's cache folder: ``$XDG_CACHE_HOME/deepscope`` or ``~/.cache/deepscope``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "deepscope"


# ---------------------------------------------------------------------------------------------- finding files

def _user_folders(spec, data_dir):
    roots = [Path(r).expanduser() for r in (data_dir, os.environ.get("DEEPSCOPE_DATA")) if r]
    for root in roots:
        for sub in spec.subdirs:
            yield root / sub
        yield root


def _find_idx_files(folder: Path) -> dict:
    """{name: path} of the IDX files present in ``folder`` (raw preferred over .gz)."""
    found = {}
    for name in FILES:
        for candidate in (folder / name, folder / (name + ".gz")):
            if candidate.is_file():
                found[name] = candidate
                break
    return found


def _get(table, name):
    return table[name] if table else None


# ---------------------------------------------------------------------------------------------- reading

def _read(path: Path, sha256=None, md5=None) -> numpy.ndarray:
    """The array in the IDX file ``path``; with ``sha256``/``md5`` given, also verify the checksum (and delete
    the file on a mismatch)."""
    raw = idx.read_raw(path)
    if md5 is not None and raw[:2] == b"\x1f\x8b":
        _verify(path, "MD5", hashlib.md5(raw).hexdigest(), md5)
    data = idx.decompress(raw, path)
    if sha256 is not None:
        _verify(path, "SHA-256", hashlib.sha256(data).hexdigest(), sha256)
    return parse_idx(data, name=str(path))


def _verify(path: Path, kind: str, actual: str, expected: str) -> None:
    if actual != expected:
        path.unlink(missing_ok=True)
        raise DataError(f"{path}: {kind} checksum mismatch (expected {expected}, got {actual}); the file was deleted")


def _from_idx(spec, dataset, files, source, verify) -> MNISTData:
    arrays = {}
    for name, path in files.items():
        sums = dict(sha256=_get(spec.sha256, name), md5=_get(spec.md5_gz, name)) if verify else {}
        arrays[name] = _read(path, **sums)
    X, y = _pair(arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"],
                 files["train-images-idx3-ubyte"])
    test = _pair(arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"], files["t10k-images-idx3-ubyte"])
    if len(y) < 2:
        raise DataError(f"{files['train-images-idx3-ubyte']}: {len(y)} training images are too few to split")
    n_val = round(len(y) / 6)  # MNIST: the last 10,000 of 60,000
    n_train = len(y) - n_val
    return MNISTData(dataset, (X[:n_train], y[:n_train]), (X[n_train:], y[n_train:]), test, source=source,
                     classes=spec.classes)


def _pair(images, labels, path):
    """Check shapes and label range, and turn uint8 images into float32 ``(N, 1, 28, 28)`` in [0, 1]."""
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != numpy.uint8:
        raise DataError(f"{path}: expected uint8 images of shape (N, 28, 28), got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{path}: {len(images)} images but the labels file has shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: labels must lie in 0..9, found {labels.min()}..{labels.max()}")
    X = numpy.divide(images, numpy.float32(255), dtype=numpy.float32).reshape(-1, 1, 28, 28)
    return X, labels.astype(numpy.int64)


# ---------------------------------------------------------------------------------------------- the book's pickle

class _ArraysOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can build NumPy arrays, tuples and lists, and refuses every other global.

    A pickle can name any importable callable (``os.system``, ``builtins.eval``...) and have it called while
    loading; this one only admits what ``ndarray.__reduce__`` produces: ``_reconstruct`` / ``_frombuffer``,
    ``ndarray``, ``dtype``, and ``_codecs.encode`` (how Python 3 writes bytes in a protocol-2 pickle; it only
    turns a string into bytes).
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    }

    def __init__(self, file, name):
        super().__init__(file, encoding="latin1")  # the book's pickle was written by Python 2
        self.name = name

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise DataError(f"{self.name}: refused to load {module}.{name} (only NumPy arrays are allowed in this pickle)")
        if module == "numpy":
            return getattr(numpy, name)
        if module == "_codecs":
            import _codecs
            return _codecs.encode
        submodule = module.rsplit(".", 1)[1]
        try:
            return getattr(importlib.import_module("numpy._core." + submodule), name)
        except ImportError:  # NumPy 1.x
            return getattr(importlib.import_module("numpy.core." + submodule), name)


def load_pickle(path):
    """The object in the (optionally gzipped) pickle ``path``, if it is built only of NumPy arrays and tuples."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            opener = gzip.open if f.read(2) == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            return _ArraysOnlyUnpickler(f, str(path)).load()
    except DataError:
        raise
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as e:
        raise DataError(f"{path}: cannot read this pickle ({type(e).__name__}: {e})") from None


def load_book_pickle(path: Path) -> MNISTData:
    """The book's ``mnist.pkl.gz``: ((X, y) train, (X, y) validation, (X, y) test), X float32 (N, 784) in [0, 1)."""
    content = load_pickle(path)
    ok = isinstance(content, (tuple, list)) and len(content) == 3 and all(
        isinstance(s, (tuple, list)) and len(s) == 2 and all(isinstance(a, numpy.ndarray) for a in s)
        for s in content)
    if not ok:
        raise DataError(f"{path}: expected (train, validation, test), each a pair (images, labels) of arrays")
    splits = []
    for X, y in content:
        if X.ndim != 2 or X.shape[1] != 784 or y.shape != (len(X),):
            raise DataError(f"{path}: expected images (N, 784) and labels (N,), got {X.shape} and {y.shape}")
        if len(y) and (y.min() < 0 or y.max() > 9):
            raise DataError(f"{path}: labels must lie in 0..9, found {y.min()}..{y.max()}")
        splits.append((X.astype(numpy.float32).reshape(-1, 1, 28, 28), y.astype(numpy.int64)))
    return MNISTData("mnist", *splits, source=str(path), classes=_DATASETS["mnist"].classes)


# ---------------------------------------------------------------------------------------------- downloading

class _DownloadFailed(Exception):
    """No mirror could be reached (the caller falls back to the sample); a checksum mismatch is a DataError."""


def download_file(mirrors, filename, folder, sha256=None, md5=None, progress=True, timeout=30) -> Path:
    """Download ``filename`` from the first mirror that answers into ``folder``, verify it, and return its path.

    The file is written to a temporary name and moved into place (:func:`deepscope.files.atomic_write`) only once its checksums
    (``sha256`` of the decompressed bytes, ``md5`` of the .gz bytes) and its IDX structure check out.

    Raises:
        DataError: the checksum does not match (the download is deleted; the message gives both hashes).
        _DownloadFailed: no mirror could be reached.
    """
    from tqdm.auto import tqdm

    folder = Path(folder)
    errors = []
    for base in mirrors:
        url = base + filename

        def fetch(tmp, url=url):
            with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                _say(progress, f"deepscope: downloading {url} into {folder}")
                with tqdm(total=total, unit="B", unit_scale=True, desc=filename, disable=not progress,
                          file=sys.stderr) as bar:
                    while chunk := response.read(1 << 16):
                        out.write(chunk)
                        bar.update(len(chunk))
            try:
                _read(tmp, sha256=sha256, md5=md5)
            except DataError as e:
                raise DataError(str(e).replace(str(tmp), f"{url} (downloaded as {tmp})")) from None

        try:  # written to a temporary file, moved into place only once verified; removed on any failure
            return files.atomic_write(folder / filename, fetch)
        except OSError as e:  # URLError, HTTPError, timeouts, connection resets, a folder we cannot write to
            errors.append(f"{url}: {getattr(e, 'reason', None) or e.strerror or e}")
    raise _DownloadFailed("; ".join(errors) or "no mirror given")


def _say(verbose, line):
    if verbose:
        print(line, file=sys.stderr, flush=True)
