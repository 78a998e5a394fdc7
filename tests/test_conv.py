"""Conv2d: float64 finite-difference gradient checks, PyTorch parity (forward, input, weight and bias
gradients) and clear errors for bad input."""
import numpy as np
import pytest
import torch

import deepscope as ds
from deepscope import nn
from deepscope.errors import ShapeError
from deepscope.gradcheck import check_module

# (in, out, kernel, stride, padding, input (N, H, W))
CASES = [
    (1, 3, 3, 1, 0, (2, 7, 7)),
    (1, 4, 5, 2, 2, (2, 9, 11)),          # stride 2, padding 2, non-square input
    (3, 2, (2, 3), 1, 2, (2, 6, 5)),      # 3 channels, non-square kernel
    (3, 5, (3, 2), (2, 1), (0, 1), (3, 8, 7)),   # tuple stride and padding
    (1, 2, 4, 3, 0, (1, 10, 10)),         # stride 3: some input rows unused
    (2, 3, 1, 1, 0, (2, 4, 3)),           # 1x1 kernel
]


def _torch_conv(m):
    t = torch.nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                        bias=m.bias is not None).double()
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(np.asarray(m.weight.data, dtype=np.float64)))
        if m.bias is not None:
            t.bias.copy_(torch.from_numpy(np.asarray(m.bias.data, dtype=np.float64)))
    return t


@pytest.mark.parametrize("case", CASES)
def test_conv_gradcheck(case):
    cin, cout, k, s, p, (n, h, w) = case
    ds.manual_seed(0)
    x = np.random.default_rng(1).standard_normal((n, cin, h, w))
    check_module(nn.Conv2d(cin, cout, k, stride=s, padding=p), x, max_entries=60)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_conv_matches_pytorch(case, bias):
    cin, cout, k, s, p, (n, h, w) = case
    ds.manual_seed(2)
    m = nn.Conv2d(cin, cout, k, stride=s, padding=p, bias=bias).to("float64")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, cin, h, w))
    y = m(x)
    g = rng.standard_normal(y.shape)
    m.zero_grad()
    dx = m.backward(g)

    t = _torch_conv(m)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = t(tx)
    ty.backward(torch.from_numpy(g))
    assert y.shape == tuple(ty.shape)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(m.weight.grad, t.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
    if bias:
        np.testing.assert_allclose(m.bias.grad, t.bias.grad.numpy(), rtol=1e-10, atol=1e-12)


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


def test_conv_in_sequential_with_pooling_matches_pytorch():
    """A small conv net, end to end, against the same net in PyTorch (channel-major views included)."""
    ds.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1),
                        nn.Sigmoid(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(6 * 3 * 3, 5)).to("float64")
    t = torch.nn.Sequential(_torch_conv(net[0]), torch.nn.MaxPool2d(2), torch.nn.ReLU(), _torch_conv(net[3]),
                            torch.nn.Sigmoid(), torch.nn.AvgPool2d(2), torch.nn.Flatten(),
                            torch.nn.Linear(54, 5).double())
    with torch.no_grad():
        t[7].weight.copy_(torch.from_numpy(net[7].weight.data))
        t[7].bias.copy_(torch.from_numpy(net[7].bias.data))
    x = np.random.default_rng(1).standard_normal((3, 1, 14, 14))
    y = net(x)
    g = np.random.default_rng(2).standard_normal(y.shape)
    net.zero_grad()
    dx = net.backward(g)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = t(tx)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    for (name, p), tp in zip(net.named_parameters(), t.parameters()):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


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


# -- deepscope show (filters / errors of a saved run) ------------------------------------------------------
DATA = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared/data"


def _saved_run(tmp_path):
    ds.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 12 * 12, 10))
    run = tmp_path / "run"
    run.mkdir()
    ds.save(model, run)
    return run


def test_show_filters_writes_png(tmp_path, capsys):
    from deepscope.cli import main
    run = _saved_run(tmp_path)
    assert main(["show", "filters", str(run)]) == 0
    png = run / "filters.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(png) in capsys.readouterr().out


def test_show_filters_without_conv_is_one_line_error(tmp_path, capsys):
    from deepscope.cli import main
    model = nn.Sequential(nn.Linear(5, 3))
    ds.save(model, tmp_path / "m")
    assert main(["show", "filters", str(tmp_path / "m")]) == 1
    assert "no Conv2d layer" in capsys.readouterr().err


@pytest.mark.skipif(not (DATA / "mnist").is_dir(), reason="shared MNIST data not present")
def test_show_errors_writes_png(tmp_path, capsys):
    from deepscope.cli import main
    run = _saved_run(tmp_path)              # an untrained net: most test images are misclassified
    out = tmp_path / "errors.png"
    assert main(["show", "errors", str(run), "--data-dir", str(DATA / "mnist"), "--out", str(out),
                 "--max", "12"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert "misclassified" in capsys.readouterr().out
