"""Class 8 of issue 9: the Python API refuses what the CLI refuses, in one line, and never answers wrongly in
silence (integer input to pooling, NaN inputs to evaluate, uint8 pixels, an empty training set)."""
import math

import numpy as np
import pytest

import deepscope as ds
from deepscope import nn, optim
from deepscope.errors import ConfigError, DataError
from deepscope.train import evaluate, fit


def small_net():
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))


def data(n=12):
    rng = np.random.default_rng(0)
    return rng.random((n, 4), dtype=np.float32), rng.integers(0, 3, n)


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=float("nan")), "SGD: lr must be a positive number, got nan"),
    (dict(lr=0), "SGD: lr must be a positive number, got 0"),
    (dict(lr=-0.1), "SGD: lr must be a positive number, got -0.1"),
    (dict(lr=float("inf")), "SGD: lr must be a positive number, got inf"),
    (dict(lr="0.1x"), "SGD: lr must be a number, got '0.1x'"),
    (dict(lr=0.1, momentum=1.5), "SGD: momentum must be in [0, 1), got 1.5"),
    (dict(lr=0.1, momentum=1.0), "SGD: momentum must be in [0, 1), got 1.0"),
    (dict(lr=0.1, momentum=-0.5), "SGD: momentum must be in [0, 1), got -0.5"),
    (dict(lr=0.1, weight_decay=-1e-4), "SGD: weight_decay must be at least 0, got -0.0001"),
    (dict(lr=0.1, weight_decay=float("nan")), "SGD: weight_decay must be at least 0, got nan"),
    (dict(lr=0.1, clip_norm=0), "SGD: clip_norm must be a positive number (or None), got 0"),
    (dict(lr=0.1, momentum=0.9, momentum_form="keras"), "SGD: momentum_form must be one of 'pytorch', 'book', got 'keras'"),
])
def test_sgd_arguments(kwargs, message):
    with pytest.raises(ConfigError) as err:
        optim.SGD(small_net().parameters(), **kwargs)
    assert str(err.value) == message


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=float("nan")), "Adam: lr must be a positive number, got nan"),
    (dict(betas=(0.9, 1.0)), "Adam: betas[1] must be in [0, 1), got 1.0"),
    (dict(betas=0.9), "Adam: betas must be a pair (β₁, β₂), got 0.9"),
    (dict(eps=0), "Adam: eps must be a positive number, got 0"),
    (dict(weight_decay=-1), "Adam: weight_decay must be at least 0, got -1"),
])
def test_adam_arguments(kwargs, message):
    with pytest.raises(ConfigError) as err:
        optim.Adam(small_net().parameters(), **kwargs)
    assert str(err.value) == message


@pytest.mark.parametrize("epochs, batch_size, message", [
    (-3, 4, "fit: epochs must be a whole number >= 1, got -3"),
    (0, 4, "fit: epochs must be a whole number >= 1, got 0"),
    (2.5, 4, "fit: epochs must be a whole number >= 1, got 2.5"),
    (True, 4, "fit: epochs must be a whole number >= 1, got True"),
    (1, 0, "fit: batch_size must be a whole number >= 1, got 0"),
    (1, "8", "fit: batch_size must be a whole number >= 1, got '8'"),
])
def test_fit_arguments(epochs, batch_size, message):
    model = small_net()
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(ConfigError) as err:
        fit(model, nn.LogLikelihoodCost(), optim.SGD(model.parameters(), lr=0.1), data(), epochs=epochs,
            batch_size=batch_size, callbacks=[])
    assert str(err.value) == message
    assert all(np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))  # nothing trained


def test_fit_on_no_examples_is_refused_not_a_loss_of_zero():
    model = small_net()
    X, y = data()
    with pytest.raises(ConfigError) as err:
        fit(model, nn.LogLikelihoodCost(), optim.SGD(model.parameters(), lr=0.1), (X[:0], y[:0]), epochs=1,
            batch_size=4, callbacks=[])
    assert str(err.value) == "fit: no training examples (train holds 0 inputs)"


def test_uint8_images_are_refused_with_the_fix():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    X = np.random.default_rng(0).integers(0, 256, (8, 1, 28, 28), dtype=np.uint8)
    y = np.zeros(8, np.int64)
    expected = ("the inputs are uint8 (raw pixel values 0..255?): scale them to floats in [0, 1] first, "
                "e.g. X.astype('float32') / 255")
    with pytest.raises(DataError) as err:
        fit(model, nn.LogLikelihoodCost(), optim.SGD(model.parameters(), lr=0.1), (X, y), epochs=1, batch_size=4,
            callbacks=[])
    assert str(err.value) == "fit: " + expected
    with pytest.raises(DataError) as err:
        evaluate(model, X, y)
    assert str(err.value) == "evaluate: " + expected
    assert 0 <= evaluate(model, X.astype(np.float32) / 255, y) <= 1  # the documented fix works


def test_evaluate_refuses_nan_inputs_instead_of_scoring_them_class_0():
    model = small_net()
    X = np.full((10, 4), np.nan, np.float32)
    y = np.zeros(10, np.int64)  # all-NaN images labelled 0 scored 100%
    with pytest.raises(DataError) as err:
        evaluate(model, X, y)
    assert str(err.value) == "evaluate: 10 of 10 inputs hold NaN or infinity (the first is input 0)"
    X2, y2 = data(10)
    X2[7, 2] = np.inf
    with pytest.raises(DataError, match=r"^evaluate: 1 of 10 inputs hold NaN or infinity \(the first is input 7\)$"):
        evaluate(model, X2, y2)


def test_fit_refuses_nan_inputs_before_training():
    model = small_net()
    X, y = data()
    X[3, 0] = np.nan
    with pytest.raises(DataError, match=r"^fit: 1 of 12 inputs hold NaN or infinity \(the first is input 3\)$"):
        fit(model, nn.LogLikelihoodCost(), optim.SGD(model.parameters(), lr=0.1), (X, y), epochs=1, batch_size=4,
            callbacks=[])


@pytest.mark.parametrize("pool", [nn.AvgPool2d(2), nn.L2Pool2d(2), nn.MaxPool2d(2)])
def test_pooling_converts_integer_input_like_conv(pool):
    x = np.full((1, 1, 2, 2), 200, np.uint8)
    out = pool(x)
    expected = {"AvgPool2d": 200.0, "L2Pool2d": 400.0, "MaxPool2d": 200.0}[type(pool).__name__]
    assert out.dtype == np.float32 and float(out[0, 0, 0, 0]) == expected  # uint8 arithmetic gave 8.0 (avg)
    conv = nn.Conv2d(1, 1, 2)
    assert conv(x).dtype == np.float32


@pytest.mark.parametrize("value", [1e-4, 200.0])
def test_l2_pooling_in_float16_neither_underflows_nor_overflows(value):
    x = np.full((1, 1, 2, 2), value, np.float16)
    out = nn.L2Pool2d(2)(x)
    assert out.dtype == np.float16
    assert math.isclose(float(out[0, 0, 0, 0]), 2 * value, rel_tol=1e-3)  # was 0.0 (1e-4²) / inf (4·200²)


def test_l2_pooling_float16_backward_matches_float64():
    rng = np.random.default_rng(3)
    x = (rng.random((2, 3, 4, 4)) * 1e-3).astype(np.float16)
    g = rng.random((2, 3, 2, 2)).astype(np.float16)
    p16, p64 = nn.L2Pool2d(2), nn.L2Pool2d(2)
    p16(x)
    p64(x.astype(np.float64))
    np.testing.assert_allclose(p16.backward(g).astype(np.float64), p64.backward(g.astype(np.float64)), rtol=2e-2)
