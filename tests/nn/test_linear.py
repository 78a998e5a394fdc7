"""Linear: initialisation schemes, seeding, clear errors (gradients: tests/nn/test_layers.py)."""
import numpy as np
import pytest

import deepscope as ds
from deepscope import nn


def test_init_schemes_have_their_variances():
    ds.manual_seed(0)
    for scheme, wstd, bstd in [("book", 1 / 20, 1.0), ("large", 1.0, 1.0), ("he", np.sqrt(2 / 400), 0.0),
                               ("xavier", np.sqrt(2 / 800), 0.0)]:
        lin = nn.Linear(400, 400, init=scheme)
        assert lin.weight.data.std() == pytest.approx(wstd, rel=0.02)
        assert lin.bias.data.std() == pytest.approx(bstd, abs=0.1)
    with pytest.raises(ValueError, match="unknown initialisation"):
        nn.Linear(2, 2, init="nope")


def test_manual_seed_reproduces():
    ds.manual_seed(7)
    a = nn.Linear(5, 5).weight.data.copy()
    ds.manual_seed(7)
    np.testing.assert_array_equal(a, nn.Linear(5, 5).weight.data)


def test_wrong_input_shape_names_layer_and_shapes():
    model = nn.Sequential(nn.Linear(784, 30), nn.Sigmoid(), nn.Linear(30, 10))
    with pytest.raises(ds.ShapeError, match=r"Linear\(784, 30\) \[layer 0\]: expected input of shape "
                                            r"\(N, 784\), got \(5, 783\)"):
        model(np.zeros((5, 783), np.float32))


def test_layers_with_no_features_are_a_value_error():
    with pytest.raises(ValueError, match=r"Linear: in_features and out_features must be positive"):
        nn.Linear(0, 3)
    with pytest.raises(ValueError, match=r"Conv2d: in_channels and out_channels must be positive"):
        nn.Conv2d(1, 0, 3)
