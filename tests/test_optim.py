"""Optimisers and schedules: SGD (momentum, the book's L2 decay), Adam and gradient clipping against PyTorch."""
import numpy as np
import pytest

import deepscope as ds
from deepscope import nn, optim

RNG = np.random.default_rng(1)


def _net_pair(torch):
    ds.manual_seed(3)
    ours = nn.Sequential(nn.Linear(6, 5), nn.Sigmoid(), nn.Linear(5, 3)).double()
    theirs = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Sigmoid(), torch.nn.Linear(5, 3)).double()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    return ours, theirs


def _run_steps(torch, ours, theirs, opt, topt, steps=3):
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
    torch = pytest.importorskip("torch")
    ours, theirs = _net_pair(torch)
    opt = optim.SGD(ours.parameters(), lr=0.3, momentum=0.9)
    topt = torch.optim.SGD(theirs.parameters(), lr=0.3, momentum=0.9)
    _run_steps(torch, ours, theirs, opt, topt)


def test_sgd_weight_decay_matches_torch_on_weights():
    torch = pytest.importorskip("torch")
    ours, theirs = _net_pair(torch)
    opt = optim.SGD(ours.parameters(), lr=0.1, momentum=0.5, weight_decay=0.01)
    # the book decays weights, not biases: tell torch the same with parameter groups
    w = [p for n, p in theirs.named_parameters() if n.endswith("weight")]
    b = [p for n, p in theirs.named_parameters() if n.endswith("bias")]
    topt = torch.optim.SGD([{"params": w, "weight_decay": 0.01}, {"params": b, "weight_decay": 0.0}],
                           lr=0.1, momentum=0.5)
    _run_steps(torch, ours, theirs, opt, topt)


def test_adam_matches_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = _net_pair(torch)
    opt = optim.Adam(ours.parameters(), lr=0.01, betas=(0.8, 0.99), eps=1e-7)
    topt = torch.optim.Adam(theirs.parameters(), lr=0.01, betas=(0.8, 0.99), eps=1e-7)
    _run_steps(torch, ours, theirs, opt, topt, steps=4)


def test_clip_grad_norm_matches_torch():
    torch = pytest.importorskip("torch")
    ours, theirs = _net_pair(torch)
    for p, tp in zip(ours.parameters(), theirs.parameters()):
        g = RNG.standard_normal(p.shape)
        p.grad[...] = g
        tp.grad = torch.tensor(g)
    total = optim.clip_grad_norm(ours.parameters(), 0.5)
    ttotal = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.5)
    assert total == pytest.approx(float(ttotal), rel=1e-12)
    for p, tp in zip(ours.parameters(), theirs.parameters()):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-12)


def test_book_weight_decay_is_network2_update():
    """w <- (1 - eta*lmbda/n) w - eta * grad, exactly."""
    ds.manual_seed(0)
    lin = nn.Linear(3, 2).double()
    w0 = lin.weight.data.copy()
    lin.weight.grad[...] = 0.5
    eta, lmbda, n = 0.1, 5.0, 1000
    optim.SGD([lin.weight], lr=eta, weight_decay=optim.book_weight_decay(lmbda, n)).step()
    np.testing.assert_allclose(lin.weight.data, (1 - eta * lmbda / n) * w0 - eta * 0.5, rtol=1e-14)


def test_halve_on_plateau():
    lin = nn.Linear(2, 2)
    opt = optim.SGD(lin.parameters(), lr=0.8)
    sched = optim.HalveOnPlateau(opt, patience=2, min_lr=0.8 / 128)
    for acc in [0.5, 0.6, 0.6, 0.59]:
        sched.step({"val_acc": acc})
    assert opt.lr == pytest.approx(0.4)
    assert not sched.stop()
