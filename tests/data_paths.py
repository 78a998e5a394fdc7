"""Where the tests find real data: $DEEPSCOPE_DATA (read when the tests start, as the product reads it: a
folder holding ``mnist/``, ``tinyshakespeare/``, …) if it holds MNIST, else ``../shared/data`` beside the
project. Tests that need real data skip cleanly without it; the product never depends on these folders."""
import os
from pathlib import Path

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
_ENV = os.environ.get("DEEPSCOPE_DATA")


def _root() -> Path:
    if _ENV and (Path(_ENV).expanduser() / "mnist" / "train-images-idx3-ubyte.gz").exists():
        return Path(_ENV).expanduser().resolve()
    return _SHARED.resolve()   # resolved, as runs record their data (a symlinked shared/ compares equal)


DATA = _root()
MNIST_DIR = DATA / "mnist"
