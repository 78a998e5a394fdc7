"""Activations: stability in the tails and the one registry (gradients: tests/nn/test_layers.py)."""
import warnings

import numpy as np
import pytest

from deepscope import arch, nn


def test_sigmoid_is_stable_for_any_input():
    torch = pytest.importorskip("torch")
    z = np.array([-1e4, -800.0, -50.0, 0.0, 50.0, 800.0, 1e4], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = nn.Sigmoid()(z.reshape(1, -1))
    assert np.all(np.isfinite(a)) and a[0, 0] == 0.0 and a[0, -1] == 1.0
    # far tails keep their relative precision, as torch's does
    z64 = np.array([[-100.0, -30.0, 30.0]])
    np.testing.assert_allclose(nn.Sigmoid()(z64), torch.sigmoid(torch.tensor(z64)).numpy(), rtol=1e-12)


def test_one_activation_registry():
    assert set(nn.ACTIVATIONS) == {"sigmoid", "tanh", "relu", "linear"}
    assert isinstance(nn.activation("ReLU"), nn.ReLU) and isinstance(nn.activation("identity"), nn.Identity)
    assert [nn.activation_name(nn.activation(n)) for n in nn.ACTIVATIONS] == list(nn.ACTIVATIONS)
    assert nn.activation_name(nn.Linear(2, 2)) is None
    with pytest.raises(ValueError, match="unknown activation 'swish': expected one of sigmoid, tanh, relu, linear"):
        nn.activation("swish")
    assert arch._ACTS == tuple(nn.ACTIVATIONS)
