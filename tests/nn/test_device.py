"""A model owns its device: Module.to(device), Module.to(dtype), Module.xp, Module.device, optimizer state."""
import importlib.util

import numpy as np
import pytest

import deepscope as ds
from deepscope import nn, optim

HAS_CUPY = importlib.util.find_spec("cupy") is not None


def _net():
    ds.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))


def test_cpu_model_reports_numpy_and_cpu():
    model = _net()
    assert model.xp is np and model.device == "cpu"
    assert model.to("cpu") is model and model.device == "cpu"
    assert nn.ReLU().xp is ds.backend.xp()        # no parameters: the backend's module


def test_to_dtype_still_casts_parameters_and_gradients():
    model = _net().to("float64")
    assert all(p.data.dtype == np.float64 and p.grad.dtype == np.float64 for p in model.parameters())
    assert model.to(np.float32).dtype == np.float32


@pytest.mark.skipif(HAS_CUPY, reason="CuPy is installed: the GPU path is tested below")
def test_to_cuda_without_cupy_is_one_clear_line():
    with pytest.raises(ds.ConfigError, match=r"^device 'cuda' needs CuPy and an NVIDIA GPU \(pip install"):
        _net().to("cuda")


def test_to_something_else_is_a_value_error():
    with pytest.raises(ValueError, match="expected a device .cpu, cuda. or a float dtype"):
        _net().to("tpu")


@pytest.mark.parametrize("make_opt", [lambda ps: optim.Adam(ps, lr=0.01),
                                      lambda ps: optim.SGD(ps, lr=0.01, momentum=0.9)])
def test_optimizer_state_follows_the_parameters_dtype(make_opt):
    ds.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = make_opt(model.parameters())
    model.to("float64")
    model(np.ones((2, 3)))
    model.backward(np.full((2, 2), 1e-9))
    opt.step()
    state = opt.m + opt.v if isinstance(opt, optim.Adam) else opt.velocity
    assert all(a.dtype == np.float64 for a in state)


@pytest.mark.skipif(not HAS_CUPY, reason="needs CuPy and a GPU")
def test_to_cuda_moves_parameters_and_optimizer_state():  # pragma: no cover - needs a GPU
    import cupy
    model = _net()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.to("cuda")
    assert model.xp is cupy and model.device == "cuda"
    x = cupy.asarray(np.random.default_rng(0).random((2, 1, 6, 6)), dtype=cupy.float32)
    model(x)
    model.backward(cupy.ones((2, 3), dtype=cupy.float32))
    opt.step()
    assert all(isinstance(v, cupy.ndarray) for v in opt.velocity)
    assert model.to("cpu").xp is np
