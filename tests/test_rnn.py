"""RNN, Embedding and the sequence cost: finite differences in float64 and parity with PyTorch."""
import numpy as np
import pytest

import deepscope
from deepscope import nn
from deepscope.errors import DataError, ShapeError
from deepscope.gradcheck import check_loss, check_module, numerical_grad

from test_lstm_gru import _Both

torch = pytest.importorskip("torch")


def _rnn64(**kw):
    deepscope.manual_seed(1)
    return nn.RNN(**kw).to("float64")


CASES = [(layers, bidir, f) for layers in (1, 2) for bidir in (False, True)
         for f in ("tanh", "relu", "sigmoid", "identity")]


@pytest.mark.parametrize("layers,bidir,f", CASES)
def test_rnn_gradcheck_nonzero_h0(layers, bidir, f):
    I, H, N, T = 3, 4, 2, 5
    D = 2 if bidir else 1
    rnn = _rnn64(input_size=I, hidden_size=H, num_layers=layers, nonlinearity=f, bidirectional=bidir)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, T, I))
    h0 = rng.standard_normal((layers * D, N, H)) * 0.5
    wrapped = _Both(rnn)
    check_module(wrapped, x, h0, max_entries=60)
    # ∂C/∂h0, against finite differences of the same weighted sum
    r = np.random.default_rng(5).standard_normal(wrapped(x, h0).shape)
    wrapped.zero_grad()
    wrapped(x, h0)
    wrapped.backward(r)
    numeric = numerical_grad(lambda: float((wrapped(x, h0) * r).sum()), h0)
    np.testing.assert_allclose(rnn.grad_h0, numeric, rtol=1e-6, atol=1e-8)


def test_rnn_gradcheck_batch_first_false():
    rnn = _rnn64(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, batch_first=False)
    x = np.random.default_rng(0).standard_normal((5, 2, 3))  # (T, N, I)
    h0 = np.random.default_rng(1).standard_normal((4, 2, 4))
    check_module(_Both(rnn), x, h0, max_entries=60)


def _torch_parity(layers, bidir, f, batch_first=True, bias=True):
    I, H, N, T = 5, 6, 3, 7
    D = 2 if bidir else 1
    ours = _rnn64(input_size=I, hidden_size=H, num_layers=layers, nonlinearity=f, bidirectional=bidir,
                  batch_first=batch_first, bias=bias)
    theirs = torch.nn.RNN(I, H, num_layers=layers, nonlinearity=f, bidirectional=bidir,
                          batch_first=batch_first, bias=bias).double()
    assert list(theirs.state_dict()) == list(ours.state_dict())
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    rng = np.random.default_rng(2)
    x = rng.standard_normal((N, T, I) if batch_first else (T, N, I))
    h0 = rng.standard_normal((layers * D, N, H))
    g_out = rng.standard_normal((N, T, D * H) if batch_first else (T, N, D * H))
    g_hn = rng.standard_normal((layers * D, N, H))

    out = ours(x, h0)
    h_n = ours.h_n
    ours.zero_grad()
    gx = ours.backward(g_out, g_hn)

    tx = torch.tensor(x, requires_grad=True)
    th0 = torch.tensor(h0, requires_grad=True)
    tout, thn = theirs(tx, th0)
    ((tout * torch.from_numpy(g_out)).sum() + (thn * torch.from_numpy(g_hn)).sum()).backward()

    tol = dict(rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out, tout.detach().numpy(), **tol)
    np.testing.assert_allclose(h_n, thn.detach().numpy(), **tol)
    np.testing.assert_allclose(gx, tx.grad.numpy(), **tol)
    np.testing.assert_allclose(ours.grad_h0, th0.grad.numpy(), **tol)
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, dict(theirs.named_parameters())[name].grad.numpy(), **tol,
                                   err_msg=name)


@pytest.mark.parametrize("layers,bidir,f", [(1, False, "tanh"), (2, True, "tanh"), (2, False, "relu"),
                                            (1, True, "relu")])
def test_rnn_matches_pytorch(layers, bidir, f):
    _torch_parity(layers, bidir, f)


def test_rnn_matches_pytorch_time_major_no_bias():
    _torch_parity(2, True, "tanh", batch_first=False, bias=False)


def test_rnn_default_h0_is_zero_and_call_with_h0():
    rnn = _rnn64(input_size=3, hidden_size=4)
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    out1, h1 = rnn(x), rnn.h_n
    out2 = rnn(x, np.zeros((1, 2, 4)))
    np.testing.assert_array_equal(out1, out2)
    np.testing.assert_array_equal(out1[:, -1], h1[0])


def test_grad_states_are_total_state_gradients():
    rnn = _rnn64(input_size=3, hidden_size=4, nonlinearity="tanh")
    x = np.random.default_rng(0).standard_normal((2, 6, 3))
    out = rnn(x)
    g = np.zeros_like(out)
    g[:, -1] = 1.0  # cost depends on the last step only
    rnn.backward(g)
    gs = rnn.grad_states[0]
    assert gs.shape == (2, 6, 4)
    np.testing.assert_allclose(gs[:, -1], 1.0)
    # ∂C/∂s_{t-1} = W^T (∂C/∂s_t ⊙ f'(net_t)) (the one-step recursion)
    W = rnn.weight_hh_l0.data
    s = out
    expected = (gs[:, 3] * (1 - s[:, 3] ** 2)) @ W
    np.testing.assert_allclose(gs[:, 2], expected, rtol=1e-12)


def test_irnn_init_and_identity_recurrence():
    deepscope.manual_seed(0)
    rnn = nn.RNN(2, 5, nonlinearity="relu", init="irnn")
    np.testing.assert_array_equal(rnn.weight_hh_l0.data, np.eye(5))
    np.testing.assert_array_equal(rnn.bias_ih_l0.data, 0)


def test_orthogonal_init():
    deepscope.manual_seed(0)
    W = nn.RNN(2, 8, init="orthogonal").to("float64").weight_hh_l0.data
    np.testing.assert_allclose(W @ W.T, np.eye(8), atol=1e-6)


def test_pytorch_like_default_init_is_seeded_and_bounded():
    deepscope.manual_seed(3)
    a = nn.RNN(4, 16).state_dict()
    deepscope.manual_seed(3)
    b = nn.RNN(4, 16).state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        assert np.abs(a[k]).max() <= 0.25 and a[k].dtype == np.float32


def test_stateful_truncated_bptt_carries_state_without_gradient():
    rnn = _rnn64(input_size=3, hidden_size=4)
    x = np.random.default_rng(0).standard_normal((2, 10, 3))
    full, h_full = rnn(x), rnn.h_n
    rnn.stateful = True
    rnn.reset_state()
    a = rnn(x[:, :4])
    b, h_b = rnn(x[:, 4:]), rnn.h_n
    np.testing.assert_allclose(np.concatenate([a, b], axis=1), full, rtol=1e-12)
    np.testing.assert_allclose(h_b, h_full, rtol=1e-12)
    # backward of the second chunk stops at its first step: only the second chunk's inputs are involved
    rnn.zero_grad()
    gx = rnn.backward(np.ones_like(b))
    assert gx.shape == (2, 6, 3)
    # same as an explicit h0 = previous h_n (no gradient flows into the earlier chunk)
    rnn2 = _rnn64(input_size=3, hidden_size=4)
    rnn2(x[:, :4])
    b2 = rnn2(x[:, 4:], rnn2.h_n)
    rnn2.zero_grad()
    rnn2.backward(np.ones_like(b2))
    np.testing.assert_allclose(rnn.weight_hh_l0.grad, rnn2.weight_hh_l0.grad, rtol=1e-12)


def test_rnn_in_sequential_classifier():
    deepscope.manual_seed(0)
    model = nn.Sequential(nn.RNN(3, 4), nn.LastStep(), nn.Linear(4, 2)).to("float64")
    x = np.random.default_rng(0).standard_normal((5, 6, 3))
    check_module(model, x, max_entries=40)


def test_rnn_in_sequential_per_step_head():
    deepscope.manual_seed(0)
    model = nn.Sequential(nn.RNN(3, 4, num_layers=2), nn.Linear(4, 7)).to("float64")
    x = np.random.default_rng(0).standard_normal((2, 6, 3))
    assert model(x).shape == (2, 6, 7)
    check_module(model, x, max_entries=40)


def test_rnn_bad_input_messages():
    rnn = nn.RNN(3, 4, num_layers=2)
    with pytest.raises(ShapeError, match=r"RNN\(3, 4, num_layers=2\).*\(N, T, 3\).*\(2, 5, 7\)"):
        rnn(np.zeros((2, 5, 7), np.float32))
    with pytest.raises(ShapeError, match=r"RNN\(3, 4, num_layers=2\).*h0.*\(2, 2, 4\).*\(1, 2, 4\)"):
        rnn(np.zeros((2, 5, 3), np.float32), np.zeros((1, 2, 4), np.float32))
    with pytest.raises(ShapeError, match="RNN"):
        rnn(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="nonlinearity"):
        nn.RNN(3, 4, nonlinearity="softsign")
    model = nn.Sequential(nn.Linear(2, 2), nn.RNN(3, 4))
    with pytest.raises(ShapeError, match=r"\[layer 1\]"):
        model[1](np.zeros((1, 2, 5), np.float32))


def test_rnn_float32_default_and_config():
    rnn = nn.RNN(3, 4, bidirectional=True)
    out, h = rnn(np.zeros((2, 5, 3))), rnn.h_n
    assert out.dtype == np.float32 and out.shape == (2, 5, 8) and h.shape == (2, 2, 4)
    cfg = rnn.config()
    assert cfg["type"] == "RNN" and cfg["args"]["bidirectional"] is True


# -- Embedding -------------------------------------------------------------------------------------

def test_embedding_gradient_with_repeated_indices():
    deepscope.manual_seed(0)
    emb = nn.Embedding(6, 3).to("float64")
    idx = np.array([[0, 2, 2, 5], [5, 5, 1, 0]])
    r = np.random.default_rng(0).standard_normal((2, 4, 3))
    emb.zero_grad()
    out = emb(idx)
    assert out.shape == (2, 4, 3)
    assert emb.backward(r) is None
    numeric = numerical_grad(lambda: float((emb(idx) * r).sum()), emb.weight.data)
    np.testing.assert_allclose(emb.weight.grad, numeric, rtol=1e-6, atol=1e-9)
    assert np.all(emb.weight.grad[[3, 4]] == 0)


def test_embedding_matches_pytorch():
    deepscope.manual_seed(0)
    emb = nn.Embedding(10, 4).to("float64")
    theirs = torch.nn.Embedding(10, 4).double()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in emb.state_dict().items()})
    idx = np.random.default_rng(1).integers(0, 10, (3, 8))
    g = np.random.default_rng(2).standard_normal((3, 8, 4))
    out = emb(idx)
    emb.zero_grad()
    emb.backward(g)
    tout = theirs(torch.from_numpy(idx))
    (tout * torch.from_numpy(g)).sum().backward()
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(emb.weight.grad, theirs.weight.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_embedding_bad_input():
    emb = nn.Embedding(5, 2)
    with pytest.raises(DataError, match=r"Embedding\(5, 2\).*index 7.*5 embeddings"):
        emb(np.array([[1, 7]]))
    with pytest.raises(DataError, match="integer"):
        emb(np.array([[1.0]]))


def test_embedding_rnn_language_model_gradcheck():
    deepscope.manual_seed(0)
    model = nn.Sequential(nn.Embedding(7, 3), nn.RNN(3, 4), nn.Linear(4, 7)).to("float64")
    idx = np.random.default_rng(0).integers(0, 7, (2, 5))
    y = np.random.default_rng(1).integers(0, 7, (2, 5))
    cost = nn.SequenceLogLikelihood()

    def loss():
        return cost(model(idx), y)

    loss()
    model.zero_grad()
    model.backward(cost.backward())
    for name, p in model.named_parameters():
        numeric = numerical_grad(loss, p.data, max_entries=40)
        m = ~np.isnan(numeric)
        np.testing.assert_allclose(p.grad[m], numeric[m], rtol=1e-6, atol=1e-9, err_msg=name)


# -- Sequence cost -----------------------------------------------------------------------------------

def test_sequence_log_likelihood_gradcheck_and_pytorch():
    z = np.random.default_rng(0).standard_normal((3, 4, 5))
    y = np.random.default_rng(1).integers(0, 5, (3, 4))
    cost = nn.SequenceLogLikelihood()
    check_loss(cost, z, y)
    tz = torch.tensor(z, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(tz.reshape(-1, 5), torch.from_numpy(y).reshape(-1))
    tl.backward()
    assert cost(z, y) == pytest.approx(tl.item(), rel=1e-12)
    np.testing.assert_allclose(cost.backward(), tz.grad.numpy(), rtol=1e-10, atol=1e-14)
    with pytest.raises(ShapeError, match="SequenceLogLikelihood"):
        cost(z, y[:, :3])
