"""Where the tests find real data: $DEEPSCOPE_DATA (read when the tests start, as the product reads it: a
folder holding ``mnist/``, ``tinyshakespeare/``, …) if it holds MNIST, else ``../shared/data`` beside the
project. Tests that need real data skip cleanly without it; the product never depends on these folders.
Also the one maker of fake MNIST folders the tests share."""
import os
from pathlib import Path

import numpy as np

from deepscope.data import write_idx

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
_ENV = os.environ.get("DEEPSCOPE_DATA")


def _root() -> Path:
    if _ENV and (Path(_ENV).expanduser() / "mnist" / "train-images-idx3-ubyte.gz").exists():
        return Path(_ENV).expanduser().resolve()
    return _SHARED.resolve()   # resolved, as runs record their data (a symlinked shared/ compares equal)


DATA = _root()
MNIST_DIR = DATA / "mnist"


def write_fake_mnist(folder, n_train=60, n_test=12, seed=0, gz=True):
    """Four small MNIST-shaped IDX files (random pixels and labels) in ``folder``; their arrays by file name."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    for name, a in arrays.items():
        write_idx(Path(folder) / (name + (".gz" if gz else "")), a)
    return arrays
