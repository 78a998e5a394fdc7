"""The layer contract (nn/module.py): the public backward runs the hooks, the input-gradient skip, state, modes."""
import numpy as np
import pytest

import deepscope as ds
from deepscope import arch, nn, optim
from deepscope.train import DetectAnomaly, fit

from test_train import blobs


def test_backward_hook_fires_on_a_bare_layer():
    ds.manual_seed(0)
    layer = nn.Linear(3, 2)
    seen = []
    layer.register_backward_hook(lambda m, gi, go: seen.append((m, gi, go)))
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    g = np.ones((4, 2), np.float32)
    layer(x)
    grad_x = layer.backward(g)
    assert len(seen) == 1
    m, gi, go = seen[0]
    assert m is layer and gi is grad_x and go is g
    np.testing.assert_allclose(grad_x, g @ layer.weight.data, rtol=1e-6)


def test_backward_hook_fires_once_through_super_and_in_a_container():
    class Scaled(nn.Linear):                  # a subclass whose backward calls the parent's
        def backward(self, grad_output):
            return 2 * super().backward(grad_output)

    ds.manual_seed(0)
    model = nn.Sequential(Scaled(3, 2), nn.Tanh())
    calls = []
    for m in model.modules():
        m.register_backward_hook(lambda mod, gi, go: calls.append(type(mod).__name__))
    model(np.ones((2, 3), np.float32))
    model.backward(np.ones((2, 2), np.float32))
    assert calls == ["Tanh", "Scaled", "Sequential"]
    assert not hasattr(nn.Module, "backward_with_hooks")


def test_detector_catches_a_nan_on_a_bare_layer():
    from deepscope.scope import AnomalyDetector
    layer = nn.Tanh()
    det = AnomalyDetector(layer)
    layer(np.ones((2, 2)))
    with pytest.raises(ds.NonFiniteError, match="gradient arriving at Tanh"):
        layer.backward(np.array([[np.nan, 0.0], [0.0, 0.0]]))
    det.remove()


@pytest.mark.parametrize("make", [lambda: nn.Linear(4, 3), lambda: nn.Conv2d(2, 3, 2)])
def test_a_layer_with_parameters_that_needs_no_input_grad_returns_none(make):
    ds.manual_seed(0)
    layer = make()
    x = np.random.default_rng(0).standard_normal((2, 4) if isinstance(layer, nn.Linear) else (2, 2, 4, 4))
    layer.to("float64")
    g = np.random.default_rng(1).standard_normal(layer(x).shape)
    layer.backward(g)
    full = [p.grad.copy() for p in layer.parameters()]
    layer.zero_grad()
    layer.needs_input_grad = False
    assert layer.backward(g) is None
    for p, want in zip(layer.parameters(), full):
        np.testing.assert_array_equal(p.grad, want)


def test_a_parameter_free_layer_that_needs_no_input_grad_is_not_run():
    class Loud(nn.Tanh):
        def backward(self, grad_output):
            raise AssertionError("ran")
    layer = Loud()
    layer(np.ones((2, 2)))
    layer.needs_input_grad = False
    assert layer.backward(np.ones((2, 2))) is None


def test_sequential_passes_the_flag_to_its_leading_children():
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 2))
    model.needs_input_grad = False
    assert [m.needs_input_grad for m in model] == [False, False, False, True, True]
    model.needs_input_grad = True
    assert all(m.needs_input_grad for m in model)


def test_fit_skips_the_first_conv_layers_input_gradient_and_restores_the_flags():
    ds.manual_seed(0)
    model = arch.build("conv2x3-maxpool2-fc8-softmax3", input_shape=(1, 8, 8))
    returned = []
    model[0].register_backward_hook(lambda m, gi, go: returned.append(gi))
    X = np.random.default_rng(0).random((40, 1, 8, 8)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, 40)
    fit(model, nn.LogLikelihoodCost(), optim.SGD(model.parameters(), lr=0.1), (X, y), epochs=1, batch_size=20,
        callbacks=[])
    assert returned == [None, None]
    assert all(m.needs_input_grad for m in model.modules())


def test_fit_restores_needs_input_grad_as_it_found_it():
    X, y = blobs(300)
    model = arch.build("8-16-3")
    model[1].needs_input_grad = False
    fit(model, nn.CrossEntropyCost(), optim.SGD(model.parameters(), lr=0.1), (X, y), epochs=1, batch_size=50,
        callbacks=[])
    assert model[1].needs_input_grad is False
    model[1].needs_input_grad = True
    fit(model, nn.CrossEntropyCost(), optim.SGD(model.parameters(), lr=0.1), (X, y), epochs=1, batch_size=50,
        callbacks=[])
    assert model[1].needs_input_grad is True


@pytest.mark.parametrize("first", ["linear", "embedding", "rnn"])
def test_fit_skips_the_input_gradient_only_where_it_is_safe(first):
    rng = np.random.default_rng(0)
    ds.manual_seed(0)
    if first == "linear":
        X, y = blobs(60)
        model = nn.Sequential(nn.Dropout(0.1), nn.Linear(8, 3))
    elif first == "embedding":
        X = rng.integers(0, 7, (60, 5))
        y = X[:, -1] % 3
        model = nn.Sequential(nn.Embedding(7, 4), nn.RNN(4, 6), nn.LastStep(), nn.Linear(6, 3))
    else:
        X, y = rng.random((60, 4, 5)).astype(np.float32), rng.integers(0, 3, 60)
        model = nn.Sequential(nn.RNN(5, 6, batch_first=True), nn.LastStep(), nn.Linear(6, 3))
    seen = []
    for m in model.modules():
        if not m._modules:
            m.register_backward_hook(lambda mod, gi, go: seen.append(type(mod).__name__))
    fit(model, nn.LogLikelihoodCost(), optim.Adam(model.parameters()), (X, y), epochs=1, batch_size=20,
        callbacks=[DetectAnomaly()])
    assert seen and seen[-1] in ("Linear", "Embedding", "RNN")


def test_fit_trains_a_custom_module_registered_out_of_data_order():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(16, 3)      # registered first, but it is not the layer that reads the data
            self.body = nn.Linear(8, 16)
            self.act = nn.Sigmoid()

        def forward(self, x):
            return self.head(self.act(self.body(x)))

        def backward(self, g):
            g = self.head.backward(g)
            g = self.act.backward(g)
            return self.body.backward(g)

    X, y = blobs(300)
    ds.manual_seed(0)
    model = Net()
    hist = fit(model, nn.CrossEntropyCost(), optim.SGD(model.parameters(), lr=0.5), (X, y), epochs=2,
               batch_size=20, callbacks=[])
    assert hist.records[-1]["train_acc"] > 0.8


def test_state_dict_round_trip_and_errors():
    a, b = nn.Sequential(nn.Linear(3, 4)), nn.Sequential(nn.Linear(3, 4))
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a[0].weight.data, b[0].weight.data)
    with pytest.raises(ds.ShapeError, match=r"0.weight has shape \(4, 3\), the model expects \(5, 3\)"):
        nn.Sequential(nn.Linear(3, 5)).load_state_dict(a.state_dict())
    with pytest.raises(KeyError, match="missing keys"):
        nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).load_state_dict(a.state_dict())


def test_train_eval_and_zero_grad():
    m = nn.Sequential(nn.Linear(3, 4), nn.Tanh())
    m.eval()
    assert not any(x.training for x in m.modules())
    m.train()
    m(np.ones((2, 3), np.float32))
    m.backward(np.ones((2, 4), np.float32))
    assert np.any(m[0].weight.grad != 0)
    m.zero_grad()
    assert all(np.all(p.grad == 0) for p in m.parameters())


def test_hooks_observe_without_changing_results():
    m = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x = np.ones((2, 3), np.float32)
    seen = []
    h1 = m[0].register_forward_hook(lambda mod, inp, out: seen.append(("f", out.shape)))
    h2 = m[2].register_backward_hook(lambda mod, gi, go: seen.append(("b", gi.shape)))
    out = m(x)
    m.backward(np.ones_like(out))
    assert seen == [("f", (2, 4)), ("b", (2, 4))]
    h1.remove(), h2.remove()
    m(x)
    assert len(seen) == 2
