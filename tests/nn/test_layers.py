"""Every layer and container through the one harness (tests/nn/harness.py): float64 finite differences,
PyTorch parity, CuPy against NumPy, float32 kept float32."""
import importlib.util

import numpy as np
import pytest

import deepscope as ds
from deepscope.gradcheck import check_module

from harness import CASES, forward_backward, torch_twin

IDS = [c.id for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_finite_differences(case):
    check_module(case.build(), *case.draw(), max_entries=case.max_entries)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_pytorch_parity(case):
    torch = pytest.importorskip("torch")
    if not case.torch:
        pytest.skip(case.notes.get("why", "no PyTorch equivalent"))
    ours = case.build()
    twin = torch_twin(ours, torch)
    xs = case.draw()
    out, g, grad_x, grads = forward_backward(ours, xs)
    txs = [torch.from_numpy(x.copy()).requires_grad_(x.dtype.kind == "f") for x in xs]
    tout = twin(*txs)
    tout.backward(torch.from_numpy(np.asarray(g)))
    assert tuple(out.shape) == tuple(tout.shape)
    fwd_rtol = case.rtol if case.fwd_rtol is None else case.fwd_rtol
    fwd_atol = case.atol if case.fwd_atol is None else case.fwd_atol
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=fwd_rtol, atol=fwd_atol, err_msg="forward")
    if txs[0].requires_grad:
        np.testing.assert_allclose(grad_x, txs[0].grad.numpy(), rtol=case.rtol, atol=case.atol, err_msg="input")
    else:
        assert grad_x is None
    tparams = dict(twin.named_parameters())
    assert list(grads) == list(tparams)              # the same names, in the same order
    for name, grad in grads.items():
        np.testing.assert_allclose(grad, tparams[name].grad.numpy(), rtol=case.rtol, atol=case.atol, err_msg=name)


@pytest.mark.skipif(importlib.util.find_spec("cupy") is None, reason="CuPy is not installed")
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_cupy_matches_numpy(case):  # pragma: no cover - needs CuPy and a GPU
    cupy = pytest.importorskip("cupy")
    ours = case.build()
    xs = case.draw()
    out, g, grad_x, grads = forward_backward(ours, xs)
    gpu = case.build().to("cuda")
    gout, _, ggrad_x, ggrads = forward_backward(gpu, [cupy.asarray(x) for x in xs], g=cupy.asarray(g))
    np.testing.assert_allclose(cupy.asnumpy(gout), out, rtol=1e-10, atol=1e-12)
    if grad_x is not None:
        np.testing.assert_allclose(cupy.asnumpy(ggrad_x), grad_x, rtol=1e-10, atol=1e-12)
    for name, grad in grads.items():
        np.testing.assert_allclose(cupy.asnumpy(ggrads[name]), grad, rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_float32_stays_float32(case):
    ours = case.build("float32")
    xs = case.draw("float32")
    out, _, grad_x, grads = forward_backward(ours, xs)
    assert out.dtype == np.float32
    assert grad_x is None or grad_x.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())


def test_every_layer_of_deepscope_nn_has_a_case():
    covered = set()
    for case in CASES:
        covered |= {type(m).__name__ for m in case.build().modules()}
    layers = {name for name, v in vars(ds.nn).items() if isinstance(v, type) and issubclass(v, ds.nn.Module)
              and v is not ds.nn.Module}
    # the recurrent layers keep their own finite-difference and parity tests (tests/test_rnn.py); a new
    # layer gets a Case in tests/nn/harness.py
    assert layers - covered <= {"Recurrent", "RNN", "LSTM", "GRU", "LastStep", "AllSteps"}, layers - covered
