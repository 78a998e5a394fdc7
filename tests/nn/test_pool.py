"""Pooling: max-pool ties, L2 pooling against lp_pool2d and at an all-zero window, float32 and channel-major
input, bad input (finite differences and PyTorch parity: tests/nn/test_layers.py)."""
import warnings

import numpy as np
import pytest

from deepscope import nn
from deepscope.errors import ShapeError

LAYERS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d, "l2": nn.L2Pool2d}


def test_lp_pool2d_with_p2_is_root_of_sum_of_squares():
    """What the L2 parity test relies on: PyTorch's lp_pool2d(x, 2) = √(Σ x²) over the window."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = torch.tensor([[[[1.0, 2.0], [3.0, -4.0]]]], dtype=torch.float64)
    assert F.lp_pool2d(x, 2, 2).item() == pytest.approx(np.sqrt(1 + 4 + 9 + 16), rel=1e-14)
    assert nn.L2Pool2d(2)(x.numpy()).item() == pytest.approx(np.sqrt(30), rel=1e-14)


@pytest.mark.parametrize("k, s", [(2, None), (3, 1)])
def test_max_pool_ties_route_to_first_max_like_pytorch(k, s):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = np.zeros((1, 2, 6, 6))
    x[0, 1, ::2, ::3] = 1.0  # some windows all-equal, some with several equal maxima
    m = nn.MaxPool2d(k, s)
    y = m(x)
    g = np.random.default_rng(0).standard_normal(y.shape)
    dx = m.backward(g)
    tx = torch.from_numpy(x).requires_grad_()
    F.max_pool2d(tx, k, k if s is None else s).backward(torch.from_numpy(g))
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-15)  # sums may round differently
    # every window routes its gradient to exactly one element
    assert np.count_nonzero(m.backward(np.ones_like(y))) <= y.size


def test_l2_pool_zero_window_gradient_is_zero_without_warnings():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 0, 0] = 3.0                       # one window non-zero, three all-zero
    m = nn.L2Pool2d(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            y = m(x)
            dx = m.backward(np.ones_like(y))
    assert np.all(np.isfinite(dx))
    expected = np.zeros_like(x)
    expected[0, 0, 0, 0] = 1.0                # ∂√(x²)/∂x = x/|x| = 1; 0 on all-zero windows
    np.testing.assert_array_equal(dx, expected)
    np.testing.assert_array_equal(y, [[[[3.0, 0.0], [0.0, 0.0]]]])


@pytest.mark.parametrize("kind", list(LAYERS))
def test_pool_float32_and_channel_major_input(kind):
    """Works on float32 and on non-contiguous (channel-major) views like Conv2d's outputs."""
    cls = LAYERS[kind]
    x = np.random.default_rng(0).standard_normal((3, 2, 8, 8)).astype(np.float32)
    cm = np.ascontiguousarray(x.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)
    a, b = cls(2), cls(2)
    ya, yb = a(x), b(cm)
    assert ya.dtype == np.float32 and ya.shape == (3, 2, 4, 4)
    np.testing.assert_array_equal(ya, yb)
    g = np.ones_like(ya)
    np.testing.assert_array_equal(a.backward(g), b.backward(g))


@pytest.mark.parametrize("kind", list(LAYERS))
def test_pool_bad_input(kind):
    cls = LAYERS[kind]
    with pytest.raises(ShapeError, match=r"Pool2d\(2\).*\(3, 8, 8\)"):
        cls(2)(np.zeros((3, 8, 8)))
    with pytest.raises(ShapeError, match=r"H >= 3.*\(1, 1, 2, 8\)"):
        cls(3)(np.zeros((1, 1, 2, 8)))
    with pytest.raises(ValueError):
        cls(0)
    with pytest.raises(ValueError):
        cls(2, stride=0)


def test_pool_repr_and_config():
    assert repr(nn.MaxPool2d(2)) == "MaxPool2d(2)"
    assert repr(nn.L2Pool2d(3, 1)) == "L2Pool2d(3, stride=1)"
    assert nn.AvgPool2d(2).config() == {"type": "AvgPool2d", "args": {"kernel_size": 2, "stride": None}}
