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

import codecs
import dataclasses
import gzip
import hashlib
import math
import os
import pickle
import struct
import sys
import urllib.request
import zlib
from pathlib import Path

import numpy

from .. import files
from ..errors import DataError
from . import idx

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
SAMPLE_SPLITS = ("train", "validation", "test")
MAX_IMAGES = 100_000   # per file; MNIST's largest holds 60,000. Checked on the header, before reading


@dataclasses.dataclass(frozen=True)
class _Spec:
    title: str
    mirrors: tuple          # base URLs, tried in order
    subdirs: tuple          # subfolder names a data folder may use for this data set
    classes: tuple
    sha256: dict | None = None   # SHA-256 of each DECOMPRESSED file (what identifies the data, whatever packed it)
    md5_gz: dict | None = None   # MD5 of the .gz files as published, for the files whose SHA-256 we lack


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
    # Fashion-MNIST: the SHA-256 of the two decompressed label files were computed from Zalando Research's own
    # files (github.com/zalandoresearch/fashion-mnist, data/fashion/, whose .gz match the MD5 sums published in
    # its README). We could not obtain its two image files, so they are identified by those published MD5 sums of
    # their .gz when downloaded (a re-compressed copy is checked for structure only, never deleted); the labels
    # alone tell Fashion-MNIST from MNIST.
    "fashion": _Spec(
        title="Fashion-MNIST",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        subdirs=("fashion", "fashion-mnist", "fashion_mnist"),
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        sha256={
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        md5_gz={
            "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
        },
    ),
}


@dataclasses.dataclass
class MNISTData:
    """The three splits of a data set, each a tuple ``(X, y)``: X float32 ``(N, 1, 28, 28)`` in [0, 1], y int64 ``(N,)``.

    Attributes:
        train, validation, test: the splits.
        name: ``"mnist"`` or ``"fashion"``.
        source: the absolute path of the folder or file the images came from, or ``"embedded sample"``.
        classes: the names of the ten classes.
        sha256: the SHA-256 of each file's decompressed bytes, by file name.
        verified: the files whose decompressed SHA-256 matched the data set's published files.
    """
    name: str
    train: tuple
    validation: tuple
    test: tuple
    source: str
    classes: tuple
    sha256: dict = dataclasses.field(default_factory=dict)
    verified: tuple = ()

    @property
    def identity(self) -> dict:
        """What a run records about its data, to find and check the same data again."""
        return {"dataset": self.name, "source": self.source, "sha256": dict(self.sha256),
                "verified": list(self.verified)}

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
            return _from_idx(spec, dataset, files, source=folder, verify=False)
        if dataset == "mnist" and (folder / "mnist.pkl.gz").is_file():
            return load_book_pickle(folder / "mnist.pkl.gz")

    if data_dir is not None:  # the user named a folder: never train on something else instead
        raise DataError(f"no {spec.title} files in {data_dir}: expected {', '.join(f + '[.gz]' for f in FILES)} "
                        f"(or mnist.pkl.gz), there or in a subfolder {'/ or '.join(spec.subdirs)}/")

    cache = cache_dir() / dataset
    files = _find_idx_files(cache)
    if len(files) == len(FILES):
        return _from_idx(spec, dataset, files, source=cache, verify=True)

    reason = "download=False"
    if download:
        try:
            for name in FILES:
                if name not in files:
                    files[name] = download_file(spec.mirrors, name + ".gz", cache, sha256=_get(spec.sha256, name),
                                                md5=_get(spec.md5_gz, name), progress=verbose)
            return _from_idx(spec, dataset, files, source=cache, verify=False)
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


def load_recorded(config: dict, data_dir=None, verbose: bool = False) -> MNISTData:
    """The data a run was trained on, as its config recorded it (``"data"``: :attr:`MNISTData.identity`; runs
    written before it: ``"dataset"``, ``"data_source"``, ``"data_dir"``), never whatever else is found.

    Args:
        config: the run's config.
        data_dir: where the data is now, if it moved; its test files must be the ones the run recorded.

    Raises:
        DataError: the recorded folder is gone (pass ``data_dir``), or the files found are not the run's.
    """
    identity = config.get("data") if isinstance(config.get("data"), dict) else {}
    dataset = identity.get("dataset") or config.get("dataset") or "mnist"
    source = identity.get("source") or config.get("data_source")
    if data_dir is None and source == "embedded sample":
        data = load_sample()
    elif data_dir is None and (source or config.get("data_dir")):
        where = Path(source if source and Path(source).is_absolute() else config.get("data_dir") or source)
        where = where.parent if where.is_file() else where  # the book's mnist.pkl.gz
        if not where.is_absolute():
            raise DataError(f"the run does not record where its data was ({where}); give the data folder")
        if not where.exists():
            raise DataError(f"the run's data ({where}) is not there any more; give the folder where it is now")
        data = load_mnist(dataset, data_dir=where, download=False, verbose=verbose)
    else:
        data = load_mnist(dataset, data_dir=data_dir, verbose=verbose)
    recorded = identity.get("sha256") or {}
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        if recorded.get(name) and data.sha256.get(name) and recorded[name] != data.sha256[name]:
            raise DataError(f"{data.source} is not the data the run was trained on: its {name} has SHA-256 "
                            f"{data.sha256[name][:16]}..., the run recorded {recorded[name][:16]}...")
    return data


def class_names(dataset: str) -> tuple:
    """The names of the ten classes of ``"mnist"`` (the digits) or ``"fashion"`` (T-shirt/top ... Ankle boot)."""
    if dataset not in _DATASETS:
        raise DataError(f"unknown dataset {dataset!r}: expected one of {', '.join(map(repr, _DATASETS))}")
    return _DATASETS[dataset].classes


def load_sample() -> MNISTData:
    """The MNIST sample shipped in the package (see ``scripts/build_mnist_sample.py``)."""
    splits, sums = [], {}
    for split in SAMPLE_SPLITS:
        pair = []
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            pair.append(idx.load_idx(SAMPLE_DIR / f"{split}-{kind}.gz"))
            sums[f"{split}-{kind}"] = pair[-1][1]
        splits.append(_pair(pair[0][0], pair[1][0], SAMPLE_DIR / f"{split}-images-idx3-ubyte.gz"))
    return MNISTData("mnist", *splits, source="embedded sample", classes=_DATASETS["mnist"].classes, sha256=sums)


def write_sample_folder(folder) -> Path:
    """The shipped sample as a data folder (its training and test images as the four IDX files MNIST is
    published as), for what takes ``--data-dir``: a trial of a sweep on another machine, a test. The book's
    split then takes its validation images from the end of the training file. Returns ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train"), ("test", "t10k")):
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            target = folder / f"{name}-{kind}.gz"
            if target.exists():
                raise DataError(f"{target} exists; write the sample into an empty folder")
            files.atomic_write(target, (SAMPLE_DIR / f"{split}-{kind}.gz").read_bytes())
    return folder


def cache_dir() -> Path:
    """deepscope's cache folder: ``$XDG_CACHE_HOME/deepscope`` or ``~/.cache/deepscope``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "deepscope"


# ---------------------------------------------------------------------------------------------- finding files

def _user_folders(spec, data_dir):
    """The folders to search, absolute: ``data_dir``'s, then ``$DEEPSCOPE_DATA``'s. A path that does not exist is
    an error wherever it came from (a typo must not quietly train on the embedded sample)."""
    named = [(data_dir, "data_dir"), (os.environ.get("DEEPSCOPE_DATA"), "$DEEPSCOPE_DATA")]
    for root, by in named:
        if not root:
            continue
        root = Path(root).expanduser().resolve()
        if not root.is_dir():
            raise DataError(f"no such folder: {root} (named by {by})")
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
    return table.get(name) if table else None


# ---------------------------------------------------------------------------------------------- reading

def _mnist_shaped(shape, dtype):
    """What is wrong with an IDX header for MNIST's images ``(N, 28, 28)`` or labels ``(N,)``, or None."""
    if dtype != numpy.uint8 or not (len(shape) == 1 or (len(shape) == 3 and shape[1:] == (28, 28))):
        return f"expected uint8 images of shape (N, 28, 28) or labels (N,), got {dtype} {tuple(shape)}"
    if shape[0] > MAX_IMAGES:
        return f"header declares {shape[0]:,} items, more than the {MAX_IMAGES:,} an MNIST file may hold"
    return None


def _read(path: Path, sha256=None, md5=None):
    """``(array, sha256)`` of the IDX file ``path``; with ``sha256`` (of the decompressed bytes) or, for a file
    whose SHA-256 we lack, ``md5`` (of the .gz as published) given, verify it (a mismatch is a DataError; the
    file is left where it is). The array is read-only: it may be this process's cached copy."""
    array, actual = _load_idx_cached(Path(path))
    if sha256 is not None and actual != sha256:
        raise DataError(f"{path}: SHA-256 checksum mismatch (expected {sha256}, got {actual})")
    if sha256 is None and md5 is not None:
        got = _md5(path)
        if got != md5:
            raise DataError(f"{path}: MD5 checksum mismatch (expected {md5}, got {got})")
    return array, actual


# Decompressing MNIST takes most of a second; a process that loads it many times (a sweep's worker runs one
# trial after another, the ch6 ladder, the tests) reads each file once. The key holds the file's identity on
# disk (inode, size, modification time), so a file replaced or rewritten is read again.
_IDX_CACHE: dict = {}
_IDX_CACHE_FILES = 8          # the four files of two data sets (MNIST's decompressed: 55 MB)


def _load_idx_cached(path: Path):
    """``idx.load_idx(path)``, once per process per version of the file; the array comes back read-only
    (``_pair`` copies it into the float32 images each loader returns, so no caller can change the cache)."""
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError:
        key = None                       # load_idx says what is wrong with it
    if key is not None and key in _IDX_CACHE:
        return _IDX_CACHE[key]
    array, actual = idx.load_idx(path, expect=_mnist_shaped)
    array.flags.writeable = False
    if key is not None:
        while len(_IDX_CACHE) >= _IDX_CACHE_FILES:
            _IDX_CACHE.pop(next(iter(_IDX_CACHE)))      # the oldest first
        _IDX_CACHE[key] = (array, actual)
    return array, actual


def _md5(path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def identify(sha256: dict) -> dict:
    """``{dataset: [file names]}``: which known data sets the files with these decompressed SHA-256 sums
    belong to (a file matches when its hash is the published file's)."""
    return {name: [f for f in FILES if spec.sha256 and spec.sha256.get(f) == sha256.get(f)]
            for name, spec in _DATASETS.items()}


def _from_idx(spec, dataset, files, source: Path, verify: bool) -> MNISTData:
    """The data set in ``files``; refused if its files are another known data set's. With ``verify``
    (the cache), every file whose SHA-256 is published must match it."""
    arrays, sums = {}, {}
    for name, path in files.items():
        try:
            arrays[name], sums[name] = _read(path, sha256=_get(spec.sha256, name) if verify else None)
        except DataError as e:
            if not verify:
                raise
            raise DataError(f"{e}: not the published file; remove it to download it again") from None
    matches = identify(sums)
    for other, hits in matches.items():
        if other != dataset and hits:
            title = _DATASETS[other].title
            raise DataError(f"{source} holds {title}, not {spec.title} (its {hits[0]} is {title}'s, by SHA-256); "
                            f"ask for dataset {other!r}, or give a folder of {spec.title}")
    verified = tuple(matches[dataset])
    X, y = _pair(arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"],
                 files["train-images-idx3-ubyte"])
    test = _pair(arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"], files["t10k-images-idx3-ubyte"])
    if len(y) < 2:
        raise DataError(f"{files['train-images-idx3-ubyte']}: {len(y)} training images are too few to split")
    n_val = round(len(y) / 6)  # MNIST: the last 10,000 of 60,000
    n_train = len(y) - n_val
    return MNISTData(dataset, (X[:n_train], y[:n_train]), (X[n_train:], y[n_train:]), test, source=str(source),
                     classes=spec.classes, sha256=sums, verified=verified)


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

# The most decompressed bytes a pickle may hold (the book's mnist.pkl.gz holds 220 MB).
MAX_PICKLE_BYTES = 1 << 30


class _CheckedArray(numpy.ndarray):
    """An array being unpickled: its state (shape, dtype, bytes) is checked before NumPy allocates anything."""

    def __new__(cls, *args, **kwargs):  # ndarray(shape) named by a pickle would allocate what the file lacks
        raise DataError(f"refused to build an array of shape {args[0] if args else '?'!r} from nothing in this pickle")

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise DataError("malformed array state in this pickle")
        shape, dtype, _, data = state[-4:]
        dtype = numpy.dtype(dtype)
        if dtype.hasobject:
            raise DataError("refused an array of Python objects in this pickle (only numbers are allowed)")
        if not isinstance(data, (bytes, str)):
            raise DataError(f"malformed array data in this pickle ({type(data).__name__})")
        if not (isinstance(shape, tuple) and all(isinstance(d, int) and d >= 0 for d in shape)) \
                or math.prod(shape) * dtype.itemsize != len(data):
            raise DataError(f"an array in this pickle declares shape {shape!r} of {dtype} but holds {len(data):,} bytes")
        super().__setstate__(state)


def _new_array(subtype, shape, dtype):
    """``numpy.core.multiarray._reconstruct``, which NumPy's pickles call with an empty shape before filling the
    array from its state: any other shape would allocate memory the file does not hold."""
    if subtype not in (numpy.ndarray, _CheckedArray) or tuple(shape) not in ((0,), ()):
        raise DataError(f"refused to build an array of shape {shape!r} from nothing in this pickle")
    return numpy.ndarray.__new__(_CheckedArray, (0,), dtype)


def _frombuffer(buffer, dtype, shape, order):
    """``numpy.core.numeric._frombuffer`` (protocol 5 pickles): an array over bytes the file holds."""
    return numpy.frombuffer(buffer, dtype=numpy.dtype(dtype)).reshape(shape, order=order)


def _scalar(dtype, data=None):
    """``numpy.core.multiarray.scalar``: one number of ``dtype`` from its bytes (how a pickle holds a NumPy
    scalar, e.g. each label in the book's ``mnist_expanded.pkl.gz``)."""
    dtype = _dtype(dtype)
    if isinstance(data, str):   # written by Python 2, read with encoding="latin1"
        data = data.encode("latin1")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise DataError(f"malformed {dtype} scalar in this pickle")
    return numpy.frombuffer(data, dtype=dtype)[0]


def _dtype(*args):
    dtype = numpy.dtype(*args)
    if dtype.hasobject:
        raise DataError("refused an array of Python objects in this pickle (only numbers are allowed)")
    return dtype


class _ArraysOnlyUnpickler(pickle._Unpickler):
    """An unpickler that can build NumPy arrays, tuples and lists, and refuses every other global.

    A pickle can name any importable callable (``os.system``, ``builtins.eval``...) and have it called while
    loading; this one only admits what ``ndarray.__reduce__`` produces: ``_reconstruct`` / ``_frombuffer``,
    ``ndarray``, ``dtype``, ``scalar`` (a NumPy number), and ``_codecs.encode`` (how Python 3 writes bytes in a protocol-2 pickle; it only
    turns a string into bytes). Each is replaced by a checked version, so that a small file cannot ask for a
    huge array: an array's declared size must equal the bytes the file holds for it.

    It is Python's pure-Python unpickler (``pickle._Unpickler``): that one asks its file for each
    length-prefixed object (bytes, strings) before building it, so :class:`_Bounded` refuses a declared length
    the file cannot hold; the C unpickler allocates first.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _new_array, ("numpy._core.multiarray", "_reconstruct"): _new_array,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer, ("numpy._core.numeric", "_frombuffer"): _frombuffer,
        ("numpy", "ndarray"): _CheckedArray, ("numpy", "dtype"): _dtype, ("_codecs", "encode"): codecs.encode,
        ("numpy.core.multiarray", "scalar"): _scalar, ("numpy._core.multiarray", "scalar"): _scalar,
    }

    def __init__(self, file, name):
        super().__init__(file, encoding="latin1")  # the book's pickle was written by Python 2
        self.name = name

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise DataError(f"{self.name}: refused to load {module}.{name} (only NumPy arrays are allowed in this pickle)")
        return self._ALLOWED[(module, name)]

    def _load_bytearray8(self):  # pickle's own allocates the declared length before reading it
        (n,) = struct.unpack("<Q", self.read(8))
        self.append(bytearray(self.read(n)))

    dispatch = {**pickle._Unpickler.dispatch, pickle.BYTEARRAY8[0]: _load_bytearray8}


class _Bounded:
    """The file an unpickler reads: refuses any read that would take it past ``limit`` decompressed bytes in
    all, before reading (so before anything of that size is allocated)."""

    def __init__(self, stream, limit: int, name: str):
        self.stream, self.left, self.name = stream, limit, name

    def _refuse(self, n):
        raise DataError(f"{self.name}: declares {n:,} more bytes than the {MAX_PICKLE_BYTES:,} deepscope reads "
                        f"from a pickle")

    def read(self, n=-1):
        if n is None or n < 0:
            n = self.left + 1
        elif n > self.left:
            self._refuse(n)
        parts, got = [], 0
        while got < n:
            part = self.stream.read(min(n - got, 1 << 24))
            if not part:
                break
            parts.append(part)
            got += len(part)
        if got > self.left:
            self._refuse(got)
        self.left -= got
        return b"".join(parts)

    def readline(self):
        line = self.stream.readline(self.left + 1)
        if len(line) > self.left:
            self._refuse(len(line))
        self.left -= len(line)
        return line


def load_pickle(path):
    """The object in the (optionally gzipped) pickle ``path``, if it is built only of NumPy arrays and tuples
    (each returned as a plain ``numpy.ndarray``)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            opener = gzip.open if f.read(2) == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            content = _ArraysOnlyUnpickler(_Bounded(f, MAX_PICKLE_BYTES, str(path)), str(path)).load()
    except DataError as e:
        raise DataError(str(e) if str(e).startswith(str(path)) else f"{path}: {e}") from None
    except (OSError, EOFError, zlib.error, pickle.UnpicklingError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, MemoryError, RecursionError) as e:
        raise DataError(f"{path}: cannot read this pickle ({type(e).__name__}: {e})") from None
    return _plain(content)


def _plain(obj):
    """``obj`` with every checked array turned back into a plain ndarray (tuples and lists kept)."""
    if isinstance(obj, numpy.ndarray):
        return obj.view(numpy.ndarray)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_plain(o) for o in obj)
    return obj


def load_book_pickle(path: Path) -> MNISTData:
    """The book's ``mnist.pkl.gz``: ((X, y) train, (X, y) validation, (X, y) test), X float32 (N, 784) in [0, 1).
    Also the book's ``mnist_expanded.pkl.gz`` (written by its ``expand_mnist.py``), whose training split is a
    pair of lists: 250,000 image arrays and their labels (NumPy scalars)."""
    content = load_pickle(path)
    ok = isinstance(content, (tuple, list)) and len(content) == 3 and all(
        isinstance(s, (tuple, list)) and len(s) == 2 and all(_array_like(a) for a in s) for s in content)
    if not ok:
        raise DataError(f"{path}: expected (train, validation, test), each a pair (images, labels) of arrays")
    splits = []
    for X, y in content:
        X, y = _as_array(X, path), _as_array(y, path)
        if X.ndim != 2 or X.shape[1] != 784 or y.shape != (len(X),):
            raise DataError(f"{path}: expected images (N, 784) and labels (N,), got {X.shape} and {y.shape}")
        if len(y) and (y.min() < 0 or y.max() > 9):
            raise DataError(f"{path}: labels must lie in 0..9, found {y.min()}..{y.max()}")
        splits.append((X.astype(numpy.float32).reshape(-1, 1, 28, 28), y.astype(numpy.int64)))
    return MNISTData("mnist", *splits, source=str(path), classes=_DATASETS["mnist"].classes)


def _array_like(a) -> bool:
    """An array, or a list of arrays / numbers (how ``expand_mnist.py`` wrote its training split)."""
    return isinstance(a, numpy.ndarray) or (
        isinstance(a, list) and all(isinstance(v, (numpy.ndarray, numpy.number, int, float)) for v in a))


def _as_array(a, path):
    if isinstance(a, numpy.ndarray):
        return a
    if a and len({numpy.shape(v) for v in a}) != 1:
        raise DataError(f"{path}: the items of a list in this pickle differ in shape")
    return numpy.array(a)


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
                raise DataError(str(e).replace(str(tmp), f"{url} (downloaded as {tmp})")
                                + "; the download was deleted") from None

        try:  # written to a temporary file, moved into place only once verified; removed on any failure
            return files.atomic_write(folder / filename, fetch)
        except OSError as e:  # URLError, HTTPError, timeouts, connection resets, a folder we cannot write to
            errors.append(f"{url}: {getattr(e, 'reason', None) or e.strerror or e}")
    raise _DownloadFailed("; ".join(errors) or "no mirror given")


def _say(verbose, line):
    if verbose:
        print(line, file=sys.stderr, flush=True)
