"""Costs: float64 finite differences of δ^L, PyTorch parity, stability, clear errors, one name per cost."""
import warnings

import numpy as np
import pytest

import deepscope as ds
from deepscope import nn
from deepscope.gradcheck import check_loss

RNG = np.random.default_rng(1)
COSTS = [nn.QuadraticCost(), nn.QuadraticCost("linear"), nn.CrossEntropyCost(), nn.LogLikelihoodCost()]


@pytest.mark.parametrize("cost", COSTS, ids=lambda c: f"{type(c).__name__}")
@pytest.mark.parametrize("n,k", [(1, 2), (6, 10), (3, 4)])
def test_cost_gradcheck(cost, n, k):
    rng = np.random.default_rng([n, k])   # each case its own draws (independent of the order tests run in)
    z = rng.standard_normal((n, k)) * 3
    labels = rng.integers(0, k, n)
    check_loss(cost, z, labels)
    if not isinstance(cost, nn.LogLikelihoodCost):
        check_loss(cost, z, rng.random((n, k)))  # dense targets


def _torch_cost(torch, cost, zt, labels):
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
    torch = pytest.importorskip("torch")
    z = RNG.standard_normal((8, 10)) * 5
    labels = RNG.integers(0, 10, 8)
    c = cost(z, labels)
    d = cost.backward()
    zt = torch.tensor(z, requires_grad=True)
    ct = _torch_cost(torch, cost, zt, labels)
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


def test_labels_out_of_range_are_one_clear_error():
    with pytest.raises(ds.DataError, match="label 10 is out of range for 10 classes"):
        nn.LogLikelihoodCost()(np.zeros((2, 10)), np.array([3, 10]))
    with pytest.raises(ds.DataError, match="label -1 is out of range"):
        nn.CrossEntropyCost()(np.zeros((2, 10)), np.array([-1, 0]))
    with pytest.raises(ds.DataError, match="must be integers"):
        nn.LogLikelihoodCost()(np.zeros((2, 10)), np.array([0.5, 1.0]))


def test_cross_entropy_names_are_unambiguous():
    z = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, -0.3]])
    y = np.array([0, 2])
    book = nn.CrossEntropyCost()(z, y)           # sigmoid outputs
    softmax = nn.LogLikelihoodCost()(z, y)       # PyTorch's CrossEntropyLoss
    assert abs(book - softmax) > 0.1
    with pytest.raises(AttributeError, match="PyTorch's CrossEntropyLoss .* is LogLikelihoodCost"):
        nn.CrossEntropyLoss
    with pytest.raises(AttributeError, match="has no attribute 'Nothing'"):
        nn.Nothing
