"""Composition: Residual, Concat, a user's own Module trained by fit, registered, saved and loaded."""
import json

import numpy as np
import pytest

import deepscope as ds
from deepscope import nn, optim
from deepscope.gradcheck import check_module
from deepscope.train import fit

from test_train import blobs


@ds.register
class SkipNet(nn.Module):
    """A user's module with a skip connection: out = head(x + fc2(tanh(fc1(x))))."""

    def __init__(self, features: int = 8, hidden: int = 16, classes: int = 3):
        super().__init__()
        self.fc1 = nn.Linear(features, hidden)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(hidden, features)
        self.head = nn.Linear(features, classes)

    def forward(self, x):
        return self.head(x + self.fc2(self.act(self.fc1(x))))

    def backward(self, grad_output):
        g = self.head.backward(grad_output)                        # ∂C/∂(x + f(x))
        g_f = self.fc1.backward(self.act.backward(self.fc2.backward(g)))
        return g + g_f                                             # through the skip and through f


def _torch_skipnet(model):
    torch = pytest.importorskip("torch")

    class TorchSkipNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.head = torch.nn.Linear(8, 16), torch.nn.Linear(16, 8), torch.nn.Linear(8, 3)

        def forward(self, x):
            return self.head(x + self.fc2(torch.tanh(self.fc1(x))))

    net = TorchSkipNet().double()
    net.load_state_dict({k: torch.from_numpy(v.astype(np.float64)) for k, v in model.state_dict().items()})
    return torch, net


def test_a_users_skip_connection_module_trains_saves_loads_and_matches_pytorch(tmp_path):
    X, y = blobs(300)
    ds.manual_seed(0)
    model = SkipNet()
    hist = fit(model, nn.LogLikelihoodCost(), optim.SGD(model.parameters(), lr=0.2), (X, y), epochs=3,
               batch_size=20, callbacks=[])
    assert hist.records[-1]["train_acc"] > 0.9
    ds.save(model, tmp_path / "skip")
    loaded = ds.load(tmp_path / "skip")
    assert type(loaded) is SkipNet and loaded.config() == model.config()
    np.testing.assert_array_equal(loaded(X[:50]), model.eval()(X[:50]))

    # gradients of the loaded model against PyTorch's equivalent block, same weights, float64
    loaded.to("float64").train()
    torch, net = _torch_skipnet(loaded)
    xb, yb = X[:32].astype(np.float64), y[:32]
    cost = nn.LogLikelihoodCost()
    loaded.zero_grad()
    loss = cost(loaded(xb), yb)
    grad_x = loaded.backward(cost.backward())
    tx = torch.tensor(xb, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(net(tx), torch.from_numpy(yb))
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-12)
    np.testing.assert_allclose(grad_x, tx.grad.numpy(), rtol=1e-10, atol=1e-14)
    tparams = dict(net.named_parameters())
    for name, p in loaded.named_parameters():
        np.testing.assert_allclose(p.grad, tparams[name].grad.numpy(), rtol=1e-10, atol=1e-14, err_msg=name)


def test_a_users_skip_connection_module_passes_finite_differences():
    ds.manual_seed(0)
    check_module(SkipNet(), np.random.default_rng(0).standard_normal((4, 8)))


def test_residual_and_concat_train_save_and_load(tmp_path):
    X, y = blobs(300)
    ds.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 12), nn.ReLU(),
                          nn.Residual(nn.Sequential(nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 12))),
                          nn.Concat(nn.Linear(12, 4), nn.Sequential(nn.Linear(12, 5), nn.Sigmoid())),
                          nn.Residual(nn.Linear(9, 3), shortcut=nn.Linear(9, 3, bias=False)))
    hist = fit(model, nn.LogLikelihoodCost(), optim.SGD(model.parameters(), lr=0.1), (X, y), epochs=3,
               batch_size=20, callbacks=[])
    assert hist.records[-1]["train_acc"] > 0.9
    ds.save(model, tmp_path / "m")
    loaded = ds.load(tmp_path / "m")
    assert loaded.config() == model.config()
    assert list(loaded.state_dict()) == list(model.state_dict())
    np.testing.assert_array_equal(loaded(X[:20]), model.eval()(X[:20]))


def test_residual_with_mismatched_shapes_is_one_clear_line():
    with pytest.raises(ds.ShapeError, match=r"the block gives \(2, 3\) but the shortcut gives \(2, 4\)"):
        nn.Residual(nn.Linear(4, 3))(np.ones((2, 4)))
    with pytest.raises(ds.ShapeError, match="cannot be joined"):
        nn.Concat(nn.Linear(4, 3), nn.Flatten(), dim=0)(np.ones((2, 4)))
    with pytest.raises(TypeError, match="Concat: branch 1 is a int, not a Module"):
        nn.Concat(nn.Linear(4, 3), 3)


def test_an_unregistered_module_is_refused_at_save_not_at_load(tmp_path):
    class Mine(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

    with pytest.raises(ds.ConfigError, match=r"save: Mine is not a deepscope layer, .* deepscope.register\(Mine\)"):
        ds.save(nn.Sequential(Mine()), tmp_path / "m")
    assert not list(tmp_path.iterdir())


def test_load_builds_only_deepscope_and_registered_classes(tmp_path):
    ds.save(nn.Linear(2, 2), tmp_path / "m")
    for name in ["Mine", "os.system", "Loss", "object", "Parameter"]:
        (tmp_path / "m.json").write_text(json.dumps({"format": "deepscope-model-1",
                                                     "model": {"type": name, "args": {}}}))
        with pytest.raises(ds.DataError, match="unknown layer type"):
            ds.load(tmp_path / "m")


def test_register_checks_its_argument_and_names():
    assert ds.register(SkipNet) is SkipNet                    # registering again is harmless
    with pytest.raises(ds.ConfigError, match="expected a subclass of deepscope.nn.Module"):
        ds.register(int)

    class Linear(nn.Module):
        pass
    with pytest.raises(ds.ConfigError, match="'Linear' is already taken by deepscope.nn.linear.Linear"):
        ds.register(Linear)


def test_a_module_given_as_a_constructor_argument_is_saved_and_rebuilt(tmp_path):
    @ds.register
    class Wrap(nn.Module):
        def __init__(self, inner, scale=2.0):
            super().__init__()
            self.inner, self.scale = inner, scale

        def forward(self, x):
            return self.scale * self.inner(x)

        def backward(self, g):
            return self.inner.backward(self.scale * g)

    ds.manual_seed(0)
    model = Wrap(nn.Sequential(nn.Linear(3, 2), nn.Tanh()), scale=3.0)
    ds.save(model, tmp_path / "w")
    loaded = ds.load(tmp_path / "w")
    assert loaded.scale == 3.0 and isinstance(loaded.inner, nn.Sequential)
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(loaded(x), model(x))
