"""Dropout: mask statistics, evaluation behaviour, reproducibility, gradient with the same mask, PyTorch given
the mask."""
import numpy as np
import pytest

import deepscope as ds
from deepscope import nn
from deepscope.gradcheck import check_module


def test_inverted_dropout_statistics():
    ds.manual_seed(0)
    d = nn.Dropout(0.3)
    x = np.ones((400, 500), dtype=np.float32)
    y = d(x)
    assert y.dtype == np.float32
    dropped = np.mean(y == 0)
    assert abs(dropped - 0.3) < 0.005                       # 200k draws: sd of the fraction ≈ 0.001
    np.testing.assert_allclose(y[y != 0], 1 / 0.7, rtol=1e-6)  # survivors scaled by 1/(1-p)
    assert abs(y.mean() - 1.0) < 0.01                      # expectation preserved


def test_network3_dropout_scales_at_test():
    ds.manual_seed(0)
    d = nn.Dropout(0.25, scale_at_test=True)
    x = np.full((200, 500), 2.0)
    y = d(x)
    assert abs(np.mean(y == 0) - 0.25) < 0.01
    assert set(np.unique(y)) == {0.0, 2.0}                 # no scaling while training
    d.eval()
    np.testing.assert_allclose(d(x), 1.5)                  # (1 - p) x at test time
    np.testing.assert_allclose(d.backward(np.ones_like(x)), 0.75)


def test_eval_is_identity():
    d = nn.Dropout(0.5).eval()
    x = np.random.default_rng(0).standard_normal((4, 7))
    np.testing.assert_array_equal(d(x), x)
    np.testing.assert_array_equal(d.backward(x), x)


def test_same_seed_same_mask_and_fresh_mask_each_call():
    x = np.ones((20, 30))
    ds.manual_seed(7)
    d = nn.Dropout(0.5)
    a, b = d(x), d(x)
    ds.manual_seed(7)
    np.testing.assert_array_equal(nn.Dropout(0.5)(x), a)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("scale_at_test", [False, True])
def test_gradient_uses_the_forward_mask(scale_at_test):
    ds.manual_seed(3)
    d = nn.Dropout(0.4, scale_at_test=scale_at_test)
    x = np.random.default_rng(0).standard_normal((6, 9)) + 5.0
    y = d(x)
    g = np.random.default_rng(1).standard_normal(y.shape)
    np.testing.assert_allclose(d.backward(g), g * y / x, rtol=1e-12)


def test_gradcheck_with_a_fixed_mask():
    """Finite differences need the same mask for every forward, so re-seed before each one."""
    d = nn.Dropout(0.5)

    class Seeded(nn.Module):
        def __init__(self):
            super().__init__()
            self.d = d

        def forward(self, x):
            ds.manual_seed(11)
            return self.d(x)

        def backward(self, g):
            return self.d.backward(g)

    check_module(Seeded(), np.random.default_rng(0).standard_normal((5, 8)))


def test_matches_pytorch_given_the_mask():
    torch = pytest.importorskip("torch")
    ds.manual_seed(1)
    d = nn.Dropout(0.2)
    x = np.random.default_rng(0).standard_normal((8, 16))
    y = d(x)
    mask = torch.from_numpy((y != 0).astype(np.float64))
    tx = torch.from_numpy(x).requires_grad_()
    ty = tx * mask / 0.8                                   # what torch.nn.Dropout(0.2) computes for that mask
    g = np.random.default_rng(1).standard_normal(y.shape)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(d.backward(g), tx.grad.numpy(), rtol=1e-12)


def test_p_zero_is_identity():
    x = np.random.default_rng(0).standard_normal((3, 4))
    np.testing.assert_array_equal(nn.Dropout(0.0)(x), x)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_bad_p(p):
    with pytest.raises(ValueError, match="0 <= p < 1"):
        nn.Dropout(p)


def test_config_round_trips():
    assert nn.Dropout(0.3, scale_at_test=True).config()["args"] == {"p": 0.3, "scale_at_test": True}
