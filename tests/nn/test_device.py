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


def test_recorded_gemm_cuts_large_products_into_wide_tiles_and_small_ones_into_16x16(monkeypatch):
    from deepscope import device
    monkeypatch.setattr(device, "_multiprocessors", lambda: 132)      # an H100
    assert device._tiles(1024, 1000, 1) == (4, 4)                     # the dropout net at m=1024
    assert device._tiles(256, 1000, 1) == (1, 4)                      # 64-row tiles would give 64 blocks
    assert device._tiles(40, 500, 32) == (1, 4)                       # a conv's ∂C/∂W, K split in 32
    assert device._tiles(1024, 10, 1) == (1, 1)                       # 16 blocks of 64 rows: too few
    assert device._tiles(10, 100, 1) == (1, 1)                        # m=10: launch-bound, most blocks
    assert device._slices(640) == (1, 640)
    assert device._slices(4200) == (2, 2112)                          # multiples of 16 that cover K
    assert device._slices(65536) == (32, 2048)


@pytest.mark.skipif(not HAS_CUPY, reason="needs CuPy and a GPU")
@pytest.mark.parametrize("tiles", [(1, 1), (4, 4), (1, 4), (4, 1)])
@pytest.mark.parametrize("dtype,rtol", [("float32", 1e-6), ("float64", 1e-14)])
def test_recorded_gemm_equals_cublas_for_every_tile_shape(tiles, dtype, rtol):  # pragma: no cover - needs a GPU
    import cupy
    from deepscope import device
    rng = np.random.default_rng(0)
    for ta, tb in ((False, False), (True, True), (True, False)):     # transposed views read in place
        a = cupy.asarray(rng.standard_normal((4200, 100) if ta else (100, 4200)).astype(dtype))
        b = cupy.asarray(rng.standard_normal((130, 4200) if tb else (4200, 130)).astype(dtype))
        a, b = (a.T if ta else a), (b.T if tb else b)
        got = device._launch(a, b, 2, 2112, *tiles)                   # sides no multiple of a tile, K in 2 slices
        bound = float((cupy.abs(a) @ cupy.abs(b)).max())
        assert float(cupy.abs(got - a @ b).max()) <= rtol * bound
