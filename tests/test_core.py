"""Linear, activations, costs, optimisers: float64 gradient checks and PyTorch parity."""
import warnings

import numpy as np
import pytest
import torch

import deepscope as ds
from deepscope import nn, optim
from deepscope.gradcheck import check_loss, check_module

torch.set_default_dtype(torch.float64)
RNG = np.random.default_rng(1)
ACTS = [(nn.Sigmoid, torch.nn.Sigmoid), (nn.Tanh, torch.nn.Tanh), (nn.ReLU, torch.nn.ReLU),
        (nn.Identity, torch.nn.Identity), (lambda: nn.Softmax(), lambda: torch.nn.Softmax(dim=-1)),
        (lambda: nn.LogSoftmax(), lambda: torch.nn.LogSoftmax(dim=-1))]


@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 5, 3), (4, 13, 9)])
def test_linear_gradcheck(shape):
    n, i, o = shape
    check_module(nn.Linear(i, o), RNG.standard_normal((n, i)))


def test_linear_gradcheck_3d_input():
    check_module(nn.Linear(4, 3), RNG.standard_normal((2, 5, 4)))


@pytest.mark.parametrize("make", [a for a, _ in ACTS])
def test_activation_gradcheck(make):
    x = RNG.standard_normal((6, 5)) * 3
    x[np.abs(x) < 1e-3] = 0.5  # keep ReLU away from its kink
    check_module(make(), x)


def test_flatten_gradcheck():
    check_module(nn.Flatten(), RNG.standard_normal((3, 2, 4, 5)))


def _torch_linear(lin):
    t = torch.nn.Linear(lin.in_features, lin.out_features)
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(lin.weight.data))
        t.bias.copy_(torch.from_numpy(lin.bias.data))
    return t


def test_linear_torch_parity():
    lin = nn.Linear(9, 4).double()
    t = _torch_linear(lin)
    x = RNG.standard_normal((6, 9))
    g = RNG.standard_normal((6, 4))
    out = lin(x)
    gx = lin.backward(g)
    xt = torch.tensor(x, requires_grad=True)
    ot = t(xt)
    ot.backward(torch.tensor(g))
    np.testing.assert_allclose(out, ot.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(lin.weight.grad, t.weight.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(lin.bias.grad, t.bias.grad.numpy(), rtol=1e-10)
    # state dict keys and layout are PyTorch's
    assert list(lin.state_dict()) == list(t.state_dict())


@pytest.mark.parametrize("ours,theirs", ACTS)
def test_activation_torch_parity(ours, theirs):
    x = RNG.standard_normal((5, 7)) * 4
    g = RNG.standard_normal((5, 7))
    m = ours()
    out, gx = m(x), m.backward(g)
    xt = torch.tensor(x, requires_grad=True)
    ot = theirs()(xt)
    ot.backward(torch.tensor(g))
    np.testing.assert_allclose(out, ot.detach().numpy(), rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_sigmoid_is_stable_for_any_input():
    z = np.array([-1e4, -800.0, -50.0, 0.0, 50.0, 800.0, 1e4], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = nn.Sigmoid()(z.reshape(1, -1))
    assert np.all(np.isfinite(a)) and a[0, 0] == 0.0 and a[0, -1] == 1.0
    # far tails keep their relative precision, as torch's does
    z64 = np.array([[-100.0, -30.0, 30.0]])
    np.testing.assert_allclose(nn.Sigmoid()(z64), torch.sigmoid(torch.tensor(z64)).numpy(), rtol=1e-12)


COSTS = [nn.QuadraticCost(), nn.QuadraticCost("linear"), nn.CrossEntropyCost(), nn.LogLikelihoodCost()]


@pytest.mark.parametrize("cost", COSTS, ids=lambda c: f"{type(c).__name__}")
@pytest.mark.parametrize("n,k", [(1, 2), (6, 10), (3, 4)])
def test_cost_gradcheck(cost, n, k):
    z = RNG.standard_normal((n, k)) * 3
    labels = RNG.integers(0, k, n)
    check_loss(cost, z, labels)
    if not isinstance(cost, nn.LogLikelihoodCost):
        check_loss(cost, z, RNG.random((n, k)))  # dense targets


def _torch_cost(cost, zt, labels):
    k = zt.shape[1]
    y = torch.nn.functional.one_hot(torch.tensor(labels), k).double()
    n = zt.shape[0]
    if isinstance(cost, nn.QuadraticCost):
        a = torch.sigmoid(zt) if cost.output == "sigmoid" else zt
        return 0.5 * ((a - y) ** 2).sum() / n
    if isinstance(cost, nn.CrossEntropyCost):
        return torch.nn.functional.binary_cross_entropy_with_logits(zt, y, reduction="sum") / n
    return torch.nn.functional.cross_entropy(zt, torch.tensor(labels))


@pytest.mark.parametrize("cost", COSTS, ids=lambda c: f"{type(c).__name__}")
def test_cost_torch_parity(cost):
    z = RNG.standard_normal((8, 10)) * 5
    labels = RNG.integers(0, 10, 8)
    c = cost(z, labels)
    d = cost.backward()
    zt = torch.tensor(z, requires_grad=True)
    ct = _torch_cost(cost, zt, labels)
    ct.backward()
    np.testing.assert_allclose(c, ct.item(), rtol=1e-12)
    np.testing.assert_allclose(d, zt.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_costs_stable_for_huge_logits():
    z = np.array([[1e4, -1e4, 0.0]], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for cost in COSTS:
            assert np.isfinite(cost(z, np.array([1])))
            assert np.all(np.isfinite(cost.backward()))


def _net_pair():
    ds.manual_seed(3)
    ours = nn.Sequential(nn.Linear(6, 5), nn.Sigmoid(), nn.Linear(5, 3)).double()
    theirs = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Sigmoid(), torch.nn.Linear(5, 3))
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    return ours, theirs


def _run_steps(ours, theirs, opt, topt, steps=3):
    x, y = RNG.standard_normal((4, 6)), RNG.integers(0, 3, 4)
    cost = nn.LogLikelihoodCost()
    for _ in range(steps):
        cost(ours(x), y)
        ours.zero_grad()
        ours.backward(cost.backward())
        opt.step()
        topt.zero_grad()
        torch.nn.functional.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y)).backward()
        topt.step()
    for k, v in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[k], v.numpy(), rtol=1e-10, atol=1e-14)


def test_sgd_momentum_matches_torch():
    ours, theirs = _net_pair()
    opt = optim.SGD(ours.parameters(), lr=0.3, momentum=0.9)
    topt = torch.optim.SGD(theirs.parameters(), lr=0.3, momentum=0.9)
    _run_steps(ours, theirs, opt, topt)


def test_sgd_weight_decay_matches_torch_on_weights():
    ours, theirs = _net_pair()
    opt = optim.SGD(ours.parameters(), lr=0.1, momentum=0.5, weight_decay=0.01)
    # the book decays weights, not biases: tell torch the same with parameter groups
    w = [p for n, p in theirs.named_parameters() if n.endswith("weight")]
    b = [p for n, p in theirs.named_parameters() if n.endswith("bias")]
    topt = torch.optim.SGD([{"params": w, "weight_decay": 0.01}, {"params": b, "weight_decay": 0.0}],
                           lr=0.1, momentum=0.5)
    _run_steps(ours, theirs, opt, topt)


def test_adam_matches_torch():
    ours, theirs = _net_pair()
    opt = optim.Adam(ours.parameters(), lr=0.01, betas=(0.8, 0.99), eps=1e-7)
    topt = torch.optim.Adam(theirs.parameters(), lr=0.01, betas=(0.8, 0.99), eps=1e-7)
    _run_steps(ours, theirs, opt, topt, steps=4)


def test_book_weight_decay_is_network2_update():
    """w <- (1 - eta*lmbda/n) w - eta * grad, exactly."""
    ds.manual_seed(0)
    lin = nn.Linear(3, 2).double()
    w0 = lin.weight.data.copy()
    lin.weight.grad[...] = 0.5
    eta, lmbda, n = 0.1, 5.0, 1000
    optim.SGD([lin.weight], lr=eta, weight_decay=optim.book_weight_decay(lmbda, n)).step()
    np.testing.assert_allclose(lin.weight.data, (1 - eta * lmbda / n) * w0 - eta * 0.5, rtol=1e-14)


def test_clip_grad_norm_matches_torch():
    ours, theirs = _net_pair()
    for p, tp in zip(ours.parameters(), theirs.parameters()):
        g = RNG.standard_normal(p.shape)
        p.grad[...] = g
        tp.grad = torch.tensor(g)
    total = optim.clip_grad_norm(ours.parameters(), 0.5)
    ttotal = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.5)
    assert total == pytest.approx(float(ttotal), rel=1e-12)
    for p, tp in zip(ours.parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-12)


def test_halve_on_plateau():
    lin = nn.Linear(2, 2)
    opt = optim.SGD(lin.parameters(), lr=0.8)
    sched = optim.HalveOnPlateau(opt, patience=2, min_lr=0.8 / 128)
    for acc in [0.5, 0.6, 0.6, 0.59]:
        sched.step({"val_acc": acc})
    assert opt.lr == pytest.approx(0.4)
    assert not sched.stop()


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


def test_labels_out_of_range_are_one_clear_error():
    with pytest.raises(ds.DataError, match="label 10 is out of range for 10 classes"):
        nn.LogLikelihoodCost()(np.zeros((2, 10)), np.array([3, 10]))
    with pytest.raises(ds.DataError, match="label -1 is out of range"):
        nn.CrossEntropyCost()(np.zeros((2, 10)), np.array([-1, 0]))
    with pytest.raises(ds.DataError, match="must be integers"):
        nn.LogLikelihoodCost()(np.zeros((2, 10)), np.array([0.5, 1.0]))


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
