"""--device on the command line: "cuda" without CuPy or a GPU is one line and writes nothing."""
import importlib.util

import pytest

from deepscope import backend
from deepscope.cli import main

pytestmark = pytest.mark.skipif(importlib.util.find_spec("cupy") is not None,
                                reason="CuPy is installed: the GPU path is checked by scripts/gpu_check.sh")


@pytest.fixture(autouse=True)
def _restore_backend():
    yield
    backend.use("numpy")


@pytest.mark.parametrize("argv", [
    ["train", "--device", "cuda", "--epochs", "1"],
    ["rnn", "mnist", "--device", "cuda", "--epochs", "1"],
    ["book", "ch6", "shallow", "--device", "cuda", "--epochs", "1"],
])
def test_device_cuda_without_a_gpu_is_one_line_and_no_run(argv, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(argv + ["--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deepscope: error: device 'cuda' needs CuPy and an NVIDIA GPU")
    assert not out.exists()


def test_device_choices_are_checked(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--device", "tpu"])
    assert e.value.code == 2
    assert "argument --device: invalid choice: 'tpu'" in capsys.readouterr().err


def test_rng_for_numpy_is_the_global_generator():
    import numpy
    backend.manual_seed(3)
    a = backend.rng_for(numpy).random(4)
    backend.manual_seed(3)
    assert (backend.rng().random(4) == a).all()
