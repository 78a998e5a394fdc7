import pytest

import deepscope
from data_paths import MNIST_DIR


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
