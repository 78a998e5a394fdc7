"""BatchNorm1d / BatchNorm2d: finite differences in float64 (training and evaluation mode) and parity with
torch.nn.BatchNorm1d/2d (outputs, all gradients, running statistics after several steps, state-dict keys)."""
import numpy as np
import pytest

import deepscope
from deepscope import nn
from deepscope.errors import ShapeError
from deepscope.gradcheck import check_module

try:
    import torch
except ImportError:  # the finite-difference checks run without torch; the parity tests skip
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch (the test oracle) is not installed")

CASES = [("BatchNorm1d", (8, 5)), ("BatchNorm1d", (6, 5, 4)), ("BatchNorm2d", (4, 5, 3, 3))]


def _layer(cls, affine=True, momentum=0.1, seed=0):
    layer = getattr(nn, cls)(5, affine=affine, momentum=momentum).to("float64")
    if affine:
        rng = np.random.default_rng(seed)
        layer.weight.data[:] = rng.standard_normal(5)
        layer.bias.data[:] = rng.standard_normal(5)
    return layer


@pytest.mark.parametrize("cls,shape", CASES)
@pytest.mark.parametrize("affine", [True, False])
def test_gradcheck_training_mode(cls, shape, affine):
    x = np.random.default_rng(1).standard_normal(shape) * 2 + 0.5
    check_module(_layer(cls, affine), x)


@pytest.mark.parametrize("cls,shape", CASES)
def test_gradcheck_evaluation_mode(cls, shape):
    layer = _layer(cls)
    rng = np.random.default_rng(1)
    for _ in range(3):
        layer(rng.standard_normal(shape) * 2 + 0.5)   # some running statistics
    layer.eval()
    check_module(layer, rng.standard_normal(shape))


@needs_torch
@pytest.mark.parametrize("cls,shape", CASES)
@pytest.mark.parametrize("affine,momentum", [(True, 0.1), (False, 0.1), (True, None)])
def test_matches_pytorch_over_several_steps_then_in_evaluation(cls, shape, affine, momentum):
    ours = _layer(cls, affine, momentum)
    theirs = getattr(torch.nn, cls)(5, affine=affine, momentum=momentum).double()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in ours.state_dict().items()})
    rng = np.random.default_rng(2)
    tol = dict(rtol=1e-10, atol=1e-12)

    def step(x, g):
        ours.zero_grad()
        y = ours(x)
        gx = ours.backward(g)
        tx = torch.tensor(x, requires_grad=True)
        ty = theirs(tx)
        (ty * torch.from_numpy(g)).sum().backward()
        np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
        np.testing.assert_allclose(gx, tx.grad.numpy(), **tol)
        if affine:
            np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), **tol)
            np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), **tol)
            theirs.weight.grad = theirs.bias.grad = None

    for _ in range(5):
        step(rng.standard_normal(shape) * 3 + 1, rng.standard_normal(shape))
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    for k in ours_sd:                                     # running statistics and num_batches_tracked
        np.testing.assert_allclose(ours_sd[k], theirs_sd[k].numpy(), **tol, err_msg=k)
    assert int(ours_sd["num_batches_tracked"]) == 5 and ours_sd["num_batches_tracked"].dtype == np.int64
    ours.eval()
    theirs.eval()
    step(rng.standard_normal(shape), rng.standard_normal(shape))


def test_running_statistics_by_hand():
    layer = nn.BatchNorm1d(3, momentum=0.5).to("float64")
    x = np.random.default_rng(0).standard_normal((10, 3))
    layer(x)
    np.testing.assert_allclose(layer.running_mean, 0.5 * x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, 0.5 + 0.5 * x.var(0, ddof=1), rtol=1e-12)
    layer.eval()
    layer(x)                                               # evaluation leaves the statistics alone
    assert int(layer.num_batches_tracked) == 1


def test_no_running_stats_uses_batch_statistics_in_evaluation():
    layer = nn.BatchNorm2d(2, track_running_stats=False).eval()
    x = np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(np.float32)
    y = layer(x)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-6)
    assert list(layer.state_dict()) == ["weight", "bias"]


def test_buffers_saved_loaded_and_cast(tmp_path):
    deepscope.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))
    x = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    for _ in range(3):
        model(x)
    model.eval()
    assert list(model.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                                        "1.running_var", "1.num_batches_tracked", "3.weight", "3.bias"]
    deepscope.save(model, tmp_path / "m")
    again = deepscope.load(tmp_path / "m").eval()
    np.testing.assert_array_equal(again(x), model(x))
    assert int(again[1].num_batches_tracked) == 3
    model.to("float64")
    assert model[1].running_var.dtype == np.float64 and model[1].num_batches_tracked.dtype == np.int64


def test_no_input_gradient_still_trains_gamma_and_beta():
    a, b = _layer("BatchNorm2d"), _layer("BatchNorm2d")
    b.needs_input_grad = False
    x = np.random.default_rng(0).standard_normal((4, 5, 3, 3))
    g = np.random.default_rng(1).standard_normal((4, 5, 3, 3))
    a(x), b(x)
    assert a.backward(g) is not None and b.backward(g) is None
    np.testing.assert_array_equal(a.weight.grad, b.weight.grad)


def test_bad_input_messages():
    with pytest.raises(ShapeError, match=r"BatchNorm2d\(4\).*\(N, 4, H, W\).*\(2, 3, 5, 5\)"):
        nn.BatchNorm2d(4)(np.zeros((2, 3, 5, 5), np.float32))
    with pytest.raises(ShapeError, match=r"BatchNorm1d\(4\).*\(N, 4\) or \(N, 4, L\)"):
        nn.BatchNorm1d(4)(np.zeros((2, 4, 5, 5), np.float32))
    with pytest.raises(ShapeError, match="more than one value per feature"):
        nn.BatchNorm1d(4)(np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="momentum"):
        nn.BatchNorm1d(4, momentum=2)


def test_learning_speed_recorder_reads_a_batch_normalised_layer_through_beta():
    from deepscope.scope import LearningSpeedRecorder
    deepscope.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Sigmoid(), nn.Linear(5, 3), nn.BatchNorm1d(3),
                          nn.ReLU(), nn.Linear(3, 2)).to("float64")
    rec = LearningSpeedRecorder(model)
    cost = nn.LogLikelihoodCost()
    x, y = np.random.default_rng(0).standard_normal((16, 4)), np.arange(16) % 2
    cost(model(x), y)
    model.zero_grad()
    model.backward(cost.backward())
    rec.after_step()
    layers = rec.history[0]["layers"]
    assert layers["0"]["bias_grad"] < 1e-12                         # batch norm removes the Linear's bias
    assert layers["0"]["speed"] == pytest.approx(np.linalg.norm(model[1].bias.grad))
    assert layers["0"]["speed"] > 0
    assert layers["1"]["speed"] is None and layers["6"]["speed"] == layers["6"]["bias_grad"]


def test_learning_speed_recorder_reports_gate_saturation_of_an_lstm():
    from deepscope.scope import LearningSpeedRecorder
    deepscope.manual_seed(0)
    model = nn.Sequential(nn.LSTM(3, 4), nn.LastStep(), nn.Linear(4, 2))
    rec = LearningSpeedRecorder(model)
    cost = nn.LogLikelihoodCost()
    cost(model(np.random.default_rng(0).standard_normal((5, 6, 3)).astype(np.float32)), np.arange(5) % 2)
    model.zero_grad()
    model.backward(cost.backward())
    rec.after_step()
    gates = rec.history[0]["layers"]["0"]["gates"]
    assert set(gates) == {"i", "f", "g", "o"} and all(0 <= v <= 1 for v in gates.values())
