import importlib.util
from pathlib import Path

import pytest

import deepscope
from data_paths import MNIST_DIR

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seed_and_dtype():
    """Every test starts from seed 0 and float32, whatever the previous test did."""
    deepscope.manual_seed(0)
    deepscope.backend.set_default_dtype("float32")
    yield
    deepscope.backend.set_default_dtype("float32")


@pytest.fixture
def mnist_dir():
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST not available ({MNIST_DIR}; set $DEEPSCOPE_DATA)")
    return MNIST_DIR


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Tests never touch the user's cache or download anything by accident."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("DEEPSCOPE_DATA", raising=False)


@pytest.fixture
def gpu_check(monkeypatch):
    """benchmarks/gpu_check.py as a module (its sections are called with CuPy or a stand-in)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
