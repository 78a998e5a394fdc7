"""Conv2d: gradient accumulation, evaluation mode, dtype and layout, initialisation, clear errors
(finite differences and PyTorch parity: tests/nn/test_layers.py)."""
import numpy as np
import pytest

import deepscope as ds
from deepscope import nn
from deepscope.errors import ShapeError


def test_conv_accumulates_parameter_grads():
    m = nn.Conv2d(2, 3, 3).to("float64")
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5))
    g = np.ones((2, 3, 3, 3))
    m.zero_grad()
    m(x)
    m.backward(g)
    once = m.weight.grad.copy(), m.bias.grad.copy()
    m(x)
    m.backward(g)
    np.testing.assert_allclose(m.weight.grad, 2 * once[0])
    np.testing.assert_allclose(m.bias.grad, 2 * once[1])


def test_conv_backward_after_eval_forward():
    """In eval mode the columns are not cached; backward rebuilds them and gives the same gradients."""
    m = nn.Conv2d(2, 3, 3, padding=1).to("float64")
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 6))
    g = np.random.default_rng(1).standard_normal((2, 3, 5, 6))
    m.zero_grad()
    m(x)
    dx_train = m.backward(g)
    w_train = m.weight.grad.copy()
    m.eval()
    m.zero_grad()
    m(x)
    np.testing.assert_allclose(m.backward(g), dx_train)
    np.testing.assert_allclose(m.weight.grad, w_train)


def test_conv_float32_default_and_layout():
    ds.manual_seed(0)
    m = nn.Conv2d(1, 4, 5)
    assert m.weight.data.dtype == np.float32 and m.weight.shape == (4, 1, 5, 5) and m.bias.shape == (4,)
    assert list(m.state_dict()) == ["weight", "bias"]
    y = m(np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32))
    assert y.dtype == np.float32 and y.shape == (3, 4, 24, 24)


def test_conv_book_init_uses_fan_in():
    ds.manual_seed(0)
    m = nn.Conv2d(20, 40, 5)
    std = float(np.std(m.weight.data))
    assert abs(std - 1 / np.sqrt(20 * 25)) < 0.05 / np.sqrt(20 * 25)
    assert abs(float(np.std(m.bias.data)) - 1.0) < 0.5  # N(0, 1) biases (40 of them)


def test_conv_same_seed_same_weights():
    ds.manual_seed(5)
    a = nn.Conv2d(3, 4, 3).weight.data.copy()
    ds.manual_seed(5)
    np.testing.assert_array_equal(a, nn.Conv2d(3, 4, 3).weight.data)


@pytest.mark.parametrize("shape, words", [
    ((1, 28, 28), "(1, 28, 28)"),               # not 4-D
    ((2, 3, 28, 28), "(2, 3, 28, 28)"),         # wrong channel count
    ((2, 1, 4, 9), "(2, 1, 4, 9)"),             # kernel taller than the input
])
def test_conv_bad_input_is_one_clear_line(shape, words):
    m = nn.Conv2d(1, 2, 5)
    with pytest.raises(ShapeError) as e:
        m(np.zeros(shape, dtype=np.float32))
    msg = str(e.value)
    assert "\n" not in msg and "Conv2d(1, 2" in msg and words in msg


def test_conv_error_names_its_place_in_a_model():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(3, 4, 3))
    with pytest.raises(ShapeError, match=r"layer 1.*\(N, 3, H, W\).*\(1, 2, 6, 6\)"):
        net(np.zeros((1, 1, 8, 8), dtype=np.float32))


def test_conv_padding_lets_a_large_kernel_fit():
    m = nn.Conv2d(1, 1, 5, padding=2)
    assert m(np.zeros((1, 1, 1, 1), dtype=np.float32)).shape == (1, 1, 1, 1)


@pytest.mark.parametrize("kwargs", [dict(kernel_size=0), dict(kernel_size=3, stride=0),
                                    dict(kernel_size=3, padding=-1), dict(kernel_size=(1, 2, 3))])


def test_conv_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        nn.Conv2d(1, 1, **kwargs)


def test_conv_config_is_json():
    import json
    cfg = nn.Conv2d(1, 20, 5, stride=(1, 2), padding=1).config()
    assert json.loads(json.dumps(cfg))["args"]["kernel_size"] == 5
