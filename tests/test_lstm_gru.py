"""LSTM and GRU: finite differences in float64 (outputs, final states, every parameter, x, h0, c0) and parity
with torch.nn.LSTM / torch.nn.GRU (same weights: outputs, final states and all gradients)."""
import numpy as np
import pytest

import deepscope
from deepscope import nn
from deepscope.errors import ShapeError
from deepscope.gradcheck import check_module, numerical_grad

try:
    import torch
except ImportError:  # the finite-difference checks run without torch; the parity tests skip
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch (the test oracle) is not installed")

class _Both(nn.Module):
    """Wraps a recurrent layer so the checked output holds `output`, `h_n` (and `c_n`), every element
    weighted by r; `forward(x, *hx)`."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x, *hx):
        hx = None if not hx else (hx[0] if len(hx) == 1 else tuple(hx))
        out = self.rnn(x, hx)
        self._shapes = [out.shape] + [a.shape for a in self._finals()]
        return np.concatenate([out.ravel()] + [a.ravel() for a in self._finals()])

    def _finals(self):
        return [self.rnn.h_n, self.rnn.c_n] if isinstance(self.rnn, nn.LSTM) else [self.rnn.h_n]

    def backward(self, g):
        parts, at = [], 0
        for shape in self._shapes:
            n = int(np.prod(shape))
            parts.append(g[at:at + n].reshape(shape))
            at += n
        return self.rnn.backward(*parts)


CELLS = ("LSTM", "GRU")
GRID = [(cell, layers, bidir) for cell in CELLS for layers in (1, 2) for bidir in (False, True)]


def _make(cell, **kw):
    deepscope.manual_seed(1)
    return getattr(nn, cell)(**kw).to("float64")


def _hx(cell, rng, shape):
    h0 = rng.standard_normal(shape) * 0.5
    return [h0, rng.standard_normal(shape) * 0.5] if cell == "LSTM" else [h0]


@pytest.mark.parametrize("cell,layers,bidir", GRID)
def test_gradcheck_with_initial_states(cell, layers, bidir):
    I, H, N, T = 3, 4, 2, 5
    D = 2 if bidir else 1
    layer = _make(cell, input_size=I, hidden_size=H, num_layers=layers, bidirectional=bidir)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, T, I))
    hx = _hx(cell, rng, (layers * D, N, H))
    wrapped = _Both(layer)
    check_module(wrapped, x, *hx, max_entries=60)        # ∂C/∂x and every parameter
    r = np.random.default_rng(5).standard_normal(wrapped(x, *hx).shape)
    wrapped.zero_grad()
    wrapped(x, *hx)
    wrapped.backward(r)
    for name, state in zip(("grad_h0", "grad_c0"), hx):   # ∂C/∂h0 and ∂C/∂c0
        numeric = numerical_grad(lambda: float((wrapped(x, *hx) * r).sum()), state)
        np.testing.assert_allclose(getattr(layer, name), numeric, rtol=1e-6, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_time_major_without_bias(cell):
    layer = _make(cell, input_size=3, hidden_size=4, num_layers=2, bidirectional=True, batch_first=False,
                  bias=False)
    rng = np.random.default_rng(0)
    check_module(_Both(layer), rng.standard_normal((5, 2, 3)), *_hx(cell, rng, (4, 2, 4)), max_entries=60)


def _parity(cell, layers, bidir, batch_first=True, bias=True, N=3):
    I, H, T = 5, 6, 7
    D = 2 if bidir else 1
    ours = _make(cell, input_size=I, hidden_size=H, num_layers=layers, bidirectional=bidir,
                 batch_first=batch_first, bias=bias)
    theirs = getattr(torch.nn, cell)(I, H, num_layers=layers, bidirectional=bidir, batch_first=batch_first,
                                     bias=bias).double()
    assert list(theirs.state_dict()) == list(ours.state_dict())
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    rng = np.random.default_rng(2)
    x = rng.standard_normal((N, T, I) if batch_first else (T, N, I))
    hx = _hx(cell, rng, (layers * D, N, H))
    g_out = rng.standard_normal((N, T, D * H) if batch_first else (T, N, D * H))
    g_fin = [rng.standard_normal(h.shape) for h in hx]

    out = ours(x, tuple(hx) if cell == "LSTM" else hx[0])
    ours.zero_grad()
    gx = ours.backward(g_out, *g_fin)

    tx = torch.tensor(x, requires_grad=True)
    thx = [torch.tensor(h, requires_grad=True) for h in hx]
    tout, tfin = theirs(tx, tuple(thx) if cell == "LSTM" else thx[0])
    tfin = list(tfin) if cell == "LSTM" else [tfin]
    loss = (tout * torch.from_numpy(g_out)).sum()
    for t, g in zip(tfin, g_fin):
        loss = loss + (t * torch.from_numpy(g)).sum()
    loss.backward()

    tol = dict(rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out, tout.detach().numpy(), **tol)
    finals = [ours.h_n, ours.c_n] if cell == "LSTM" else [ours.h_n]
    grads0 = [ours.grad_h0, ours.grad_c0] if cell == "LSTM" else [ours.grad_h0]
    for a, t in zip(finals, tfin):
        np.testing.assert_allclose(a, t.detach().numpy(), **tol)
    np.testing.assert_allclose(gx, tx.grad.numpy(), **tol)
    for a, t in zip(grads0, thx):
        np.testing.assert_allclose(a, t.grad.numpy(), **tol)
    tp = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, tp[name].grad.numpy(), **tol, err_msg=name)


@needs_torch
@pytest.mark.parametrize("cell,layers,bidir", GRID)
def test_matches_pytorch(cell, layers, bidir):
    _parity(cell, layers, bidir)


@needs_torch
@pytest.mark.parametrize("cell", CELLS)
def test_matches_pytorch_time_major_no_bias(cell):
    _parity(cell, 2, True, batch_first=False, bias=False)


@needs_torch
@pytest.mark.parametrize("cell", CELLS)
def test_matches_pytorch_with_the_batch_in_blocks(cell):
    """35 samples: the recurrence runs in two blocks of the batch (nn.recurrent._batch_blocks)."""
    _parity(cell, 2, True, N=35)


@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_with_the_batch_in_blocks(cell):
    layer = _make(cell, input_size=2, hidden_size=3, bidirectional=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((33, 3, 2))
    check_module(_Both(layer), x, *_hx(cell, rng, (2, 33, 3)), max_entries=60)


@needs_torch
@pytest.mark.parametrize("cell", CELLS)
def test_float32_matches_pytorch_float32(cell):
    deepscope.manual_seed(0)
    ours = getattr(nn, cell)(8, 16)
    theirs = getattr(torch.nn, cell)(8, 16, batch_first=True).float()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((4, 30, 8)).astype(np.float32)
    out = ours(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, theirs(torch.from_numpy(x))[0].detach().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_stateful_chunks_equal_one_pass(cell):
    layer = _make(cell, input_size=3, hidden_size=4)
    x = np.random.default_rng(0).standard_normal((2, 10, 3))
    full = layer(x)
    h_full = layer.h_n
    layer.stateful = True
    layer.reset_state()
    a = layer(x[:, :4])
    b = layer(x[:, 4:])
    np.testing.assert_allclose(np.concatenate([a, b], axis=1), full, rtol=1e-12)
    np.testing.assert_allclose(layer.h_n, h_full, rtol=1e-12)
    # backward of the second chunk stops at its first step: the same as an explicit hx = the first chunk's
    # final states, which carry no gradient
    layer.zero_grad()
    gx = layer.backward(np.ones_like(b))
    assert gx.shape == (2, 6, 3)
    other = _make(cell, input_size=3, hidden_size=4)
    other(x[:, :4])
    hx = (other.h_n, other.c_n) if cell == "LSTM" else other.h_n
    b2 = other(x[:, 4:], hx)
    other.zero_grad()
    other.backward(np.ones_like(b2))
    np.testing.assert_allclose(layer.weight_hh_l0.grad, other.weight_hh_l0.grad, rtol=1e-12)


@pytest.mark.parametrize("cell", CELLS + ("RNN",))
def test_no_input_gradient_skips_dx_only(cell):
    a, b = _make(cell, input_size=3, hidden_size=4, num_layers=2), _make(cell, input_size=3, hidden_size=4,
                                                                         num_layers=2)
    b.needs_input_grad = False
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    g = np.random.default_rng(1).standard_normal((2, 5, 4))
    for m in (a, b):
        m(x)
        m.zero_grad()
    assert a.backward(g).shape == x.shape
    assert b.backward(g) is None
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_array_equal(p.grad, q.grad, err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
def test_classifier_and_per_step_head_in_sequential(cell):
    deepscope.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((3, 6, 3))
    check_module(nn.Sequential(getattr(nn, cell)(3, 4), nn.LastStep(), nn.Linear(4, 2)), x, max_entries=40)
    per_step = nn.Sequential(getattr(nn, cell)(3, 4, bidirectional=True), nn.Linear(8, 5))
    assert per_step(x).shape == (3, 6, 5)
    check_module(per_step, x, max_entries=40)


@pytest.mark.parametrize("cell", CELLS)
def test_orthogonal_init_and_seeded_pytorch_init(cell):
    deepscope.manual_seed(0)
    W = getattr(nn, cell)(2, 8, init="orthogonal").to("float64").weight_hh_l0.data
    for block in np.split(W, W.shape[0] // 8):
        np.testing.assert_allclose(block @ block.T, np.eye(8), atol=1e-6)
    deepscope.manual_seed(3)
    a = getattr(nn, cell)(4, 16).state_dict()
    deepscope.manual_seed(3)
    b = getattr(nn, cell)(4, 16).state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        assert np.abs(a[k]).max() <= 0.25 and a[k].dtype == np.float32


def test_gates_are_the_forward_activations():
    layer = _make("LSTM", input_size=3, hidden_size=4)
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    out = layer(x)
    gates = layer.gates[0]
    assert set(gates) == {"i", "f", "g", "o"}
    for name in ("i", "f", "o"):
        assert gates[name].min() > 0 and gates[name].max() < 1
    # h_t = o_t ⊙ tanh(c_t), c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t (time-major inside, batch-first outside)
    c = np.zeros((2, 4))
    for t in range(5):
        c = gates["f"][t] * c + gates["i"][t] * gates["g"][t]
        np.testing.assert_allclose(out[:, t], gates["o"][t] * np.tanh(c), rtol=1e-12)
    gru = _make("GRU", input_size=3, hidden_size=4)
    gru(x)
    assert set(gru.gates[0]) == {"r", "z", "n"}


def test_bad_input_messages():
    lstm = nn.LSTM(3, 4, num_layers=2)
    with pytest.raises(ShapeError, match=r"LSTM\(3, 4, num_layers=2\).*\(N, T, 3\).*\(2, 5, 7\)"):
        lstm(np.zeros((2, 5, 7), np.float32))
    with pytest.raises(ShapeError, match=r"hx = \(h0, c0\)"):
        lstm(np.zeros((2, 5, 3), np.float32), np.zeros((2, 2, 4), np.float32))
    with pytest.raises(ShapeError, match=r"c0 of shape \(2, 2, 4\).*\(1, 2, 4\)"):
        lstm(np.zeros((2, 5, 3), np.float32), (np.zeros((2, 2, 4)), np.zeros((1, 2, 4))))
    gru = nn.GRU(3, 4)
    with pytest.raises(ShapeError, match=r"GRU\(3, 4\).*h0 of shape \(1, 2, 4\)"):
        gru(np.zeros((2, 5, 3), np.float32), np.zeros((2, 2, 4), np.float32))
    gru(np.zeros((2, 5, 3), np.float32))
    with pytest.raises(ShapeError, match=r"grad_output of shape \(2, 5, 4\)"):
        gru.backward(np.zeros((2, 5, 3), np.float32))
    with pytest.raises(ValueError, match="init"):
        nn.LSTM(3, 4, init="irnn")


@pytest.mark.parametrize("cell", CELLS)
def test_save_and_load_round_trip(cell, tmp_path):
    deepscope.manual_seed(0)
    model = nn.Sequential(getattr(nn, cell)(3, 5, num_layers=2, bidirectional=True), nn.LastStep(),
                          nn.Linear(10, 2))
    x = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
    deepscope.save(model, tmp_path / "m")
    again = deepscope.load(tmp_path / "m")
    np.testing.assert_array_equal(again(x), model(x))
