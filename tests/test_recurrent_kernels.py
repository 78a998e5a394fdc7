"""The recurrent cells' fast path (deepscope._kernels, the LSTM's and GRU's per-step loops): each kernel equals the
plain NumPy expression of the cell's equations, and a whole layer (1-2 layers, uni/bidirectional, batch 1,
initial states and final-state gradients, a batch cut into blocks) gives exactly the numbers of its NumPy
reference (``cpu.reference()``), forward and backward, in float32 and float64; the blocks of the batch that the
LSTM and the GRU run on the threads depend on the batch size alone, and so the numbers are the same at 1, 2 and
3 threads. (The float64 finite-difference and PyTorch parity tests of
tests/test_lstm_gru.py and tests/test_rnn.py run through the fast path too: it is the default.)"""
import numpy as np
import pytest

import deepscope
from deepscope import cpu, nn
from deepscope.nn import recurrent

pytestmark = pytest.mark.skipif(cpu.kernels() is None, reason="numba is not installed")
K = cpu.kernels()

DTYPES = (np.float32, np.float64)
SHAPES = [(1, 1), (1, 7), (4, 6), (5, 33)]          # (N, H): batch 1, odd sizes, a size past one vector


def _rand(rng, dtype, *shape, low=-1.0, high=1.0):
    return rng.uniform(low, high, shape).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,H", SHAPES)
def test_lstm_cell_forward(dtype, N, H):
    rng = np.random.default_rng(N * H)
    a = np.tanh(_rand(rng, dtype, N, 4 * H, low=-4, high=4))   # tanh of [a_i/2, a_f/2, a_g, a_o/2]
    c_prev = _rand(rng, dtype, N, H, low=-3, high=3)
    c = np.empty_like(c_prev)
    want = a.copy()
    for k in (0, 1, 3):                                          # σ(u) = (1 + tanh(u/2)) / 2
        want[:, k * H:(k + 1) * H] = want[:, k * H:(k + 1) * H] * dtype(0.5) + dtype(0.5)
    i, f, g = want[:, :H], want[:, H:2 * H], want[:, 2 * H:3 * H]
    K.lstm_cell_forward(a, c_prev, c)
    np.testing.assert_array_equal(a, want)
    np.testing.assert_array_equal(c, f * c_prev + i * g)          # c_t = f ⊙ c_{t-1} + i ⊙ g


@pytest.mark.parametrize("add_carry", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,H", SHAPES)
def test_lstm_cell_backward(dtype, N, H, add_carry):
    rng = np.random.default_rng(N * H + add_carry)
    a = _rand(rng, dtype, N, 4 * H, low=0, high=1)
    a[:, 2 * H:3 * H] = _rand(rng, dtype, N, H)                  # [i, f, g, o]: g in (-1, 1)
    c_prev, tc = _rand(rng, dtype, N, H, low=-3, high=3), _rand(rng, dtype, N, H)
    gh, carry, dc = (_rand(rng, dtype, N, H) for _ in range(3))
    i, f, g, o = (a[:, k * H:(k + 1) * H] for k in range(4))
    dh = gh + carry if add_carry else gh.copy()                  # ∂C/∂h_t
    dct = dh * (o * (1 - tc * tc)) + dc                          # ∂C/∂c_t
    want = np.concatenate([(g * (i * (1 - i))) * dct, (c_prev * (f * (1 - f))) * dct, (i * (1 - g * g)) * dct,
                           (tc * (o * (1 - o))) * dh], axis=1)
    want_dc = dct * f
    da = np.empty_like(a)
    K.lstm_cell_backward(gh, carry, add_carry, a, c_prev, tc, dc, da)
    np.testing.assert_array_equal(gh, dh)
    np.testing.assert_array_equal(da, want)
    np.testing.assert_array_equal(dc, want_dc)


@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,H", SHAPES)
def test_gru_cell_forward(dtype, N, H, has_bias):
    rng = np.random.default_rng(N * H + has_bias)
    gi, gh = _rand(rng, dtype, N, 3 * H), _rand(rng, dtype, N, 3 * H)
    bh = _rand(rng, dtype, 3 * H) if has_bias else np.empty(0, dtype)
    h_prev = _rand(rng, dtype, N, H)
    want_gh = gh + bh if has_bias else gh.copy()
    rz, n, h = np.empty((N, 2 * H), dtype), np.empty((N, H), dtype), np.empty((N, H), dtype)
    K.gru_cell_gates(gi, gh, bh, has_bias, rz)
    np.testing.assert_array_equal(gh, want_gh)
    np.testing.assert_array_equal(rz, gi[:, :2 * H] + want_gh[:, :2 * H])
    np.tanh(rz, out=rz)
    want_rz = rz * dtype(0.5) + dtype(0.5)                       # r, z = σ(...) = (1 + tanh(·/2)) / 2
    K.gru_cell_candidate(rz, gh, gi, n)
    np.testing.assert_array_equal(rz, want_rz)
    np.testing.assert_array_equal(n, want_rz[:, :H] * want_gh[:, 2 * H:] + gi[:, 2 * H:])   # r ⊙ m + U_n x + b_in
    np.tanh(n, out=n)
    K.gru_cell_state(h_prev, n, rz, h)
    np.testing.assert_array_equal(h, (h_prev - n) * want_rz[:, H:] + n)                     # n + z ⊙ (h_{t-1} - n)


@pytest.mark.parametrize("add_carry", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,H", SHAPES)
def test_gru_cell_backward(dtype, N, H, add_carry):
    rng = np.random.default_rng(N * H + add_carry)
    gh, carry, dh_next, h_prev, n = (_rand(rng, dtype, N, H) for _ in range(5))
    rz, rz_next = _rand(rng, dtype, N, 2 * H, low=0, high=1), _rand(rng, dtype, N, 2 * H, low=0, high=1)
    ghs = _rand(rng, dtype, N, 3 * H)
    r, z, m, z_next = rz[:, :H], rz[:, H:], ghs[:, 2 * H:], rz_next[:, H:]
    dh = gh + (carry + dh_next * z_next) if add_carry else gh.copy()      # ∂C/∂h_t
    dan = dh * ((1 - z) * (1 - n * n))
    daz = dh * (((h_prev - n) * z) * (1 - z))
    dar = dan * ((m * r) * (1 - r))
    di, dhid = np.empty((N, 3 * H), dtype), np.empty((N, 3 * H), dtype)
    K.gru_cell_backward(gh, carry, dh_next, rz_next, add_carry, rz, n, ghs, h_prev, di, dhid)
    np.testing.assert_array_equal(gh, dh)
    np.testing.assert_array_equal(di, np.concatenate([dar, daz, dan], axis=1))
    np.testing.assert_array_equal(dhid, np.concatenate([dar, daz, dan * r], axis=1))


def _run_layer(layer, x, hx, g, g_fin):
    layer.zero_grad()
    out = layer(x, hx)
    gx = layer.backward(g, *g_fin)
    finals = [layer.h_n] + ([layer.c_n] if isinstance(layer, nn.LSTM) else [])
    grads0 = [layer.grad_h0] + ([layer.grad_c0] if isinstance(layer, nn.LSTM) else [])
    gates = [v for d in layer.gates for v in d.values()]
    return [out, gx, *finals, *grads0, *layer.grad_states, *gates] + [p.grad for p in layer.parameters()]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell,N,layers,bidir,bias", [
    ("LSTM", 1, 1, False, True), ("LSTM", 3, 2, True, True), ("LSTM", 2, 2, False, False),
    ("LSTM", 37, 2, True, True),                                   # 2 blocks of the batch (18 + 19 samples)
    ("GRU", 1, 1, False, True), ("GRU", 3, 2, True, True), ("GRU", 2, 2, True, False), ("GRU", 37, 2, True, True)])
def test_layer_fast_path_equals_reference(cell, N, layers, bidir, bias, dtype, monkeypatch):
    I, H, T = 5, 6, 7
    D = 2 if bidir else 1
    deepscope.manual_seed(0)
    layer = getattr(nn, cell)(I, H, num_layers=layers, bidirectional=bidir, bias=bias).to(np.dtype(dtype).name)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, T, I)).astype(dtype)
    states = [rng.standard_normal((layers * D, N, H)).astype(dtype) for _ in range(2 if cell == "LSTM" else 1)]
    hx = tuple(states) if cell == "LSTM" else states[0]
    g = rng.standard_normal((N, T, D * H)).astype(dtype)
    g_fin = [rng.standard_normal(s.shape).astype(dtype) for s in states]

    calls = []
    for name in [n for n in dir(K) if n.startswith(cell.lower() + "_cell_")]:
        kernel = getattr(K, name)
        monkeypatch.setattr(K, name, lambda *a, _k=kernel, _n=name: calls.append(_n) or _k(*a))
    fast = [v.copy() for v in _run_layer(layer, x, hx, g, g_fin)]
    kinds = {"LSTM": 2, "GRU": 4}[cell]
    blocks = len(recurrent._batch_blocks(N))
    steps = layers * D * T * kinds * blocks
    assert len(set(calls)) == kinds and len(calls) == steps                     # every step took the fast path
    with cpu.reference():
        ref = _run_layer(layer, x, hx, g, g_fin)
    assert len(calls) == steps                                                  # and the reference did not
    assert len(fast) == len(ref)
    for a, b in zip(fast, ref):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)                                     # to the last bit


def test_batch_blocks_depend_on_the_batch_size_alone():
    for threads in (1, 2, 3):
        deepscope.set_num_threads(threads)
        assert recurrent._batch_blocks(1) == [(0, 1)]
        assert recurrent._batch_blocks(2 * recurrent.BLOCK_ROWS - 1) == [(0, 2 * recurrent.BLOCK_ROWS - 1)]
        assert recurrent._batch_blocks(32) == [(0, 16), (16, 32)]
        assert recurrent._batch_blocks(65) == [(0, 32), (32, 65)]
    deepscope.set_num_threads(cpu.default_num_threads())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_numbers_do_not_depend_on_the_thread_count(cell, dtype, monkeypatch):
    """The blocks of the batch run on the threads (a spy on cpu.parallel), and 1, 2 and 3 threads give the same
    numbers to the last bit: outputs, final states, ∂C/∂x, ∂C/∂h0 (∂C/∂c0), ∂C/∂h_t, the gates, every gradient."""
    N, I, H, T, layers = 40, 5, 6, 9, 2
    deepscope.manual_seed(3)
    layer = getattr(nn, cell)(I, H, num_layers=layers, bidirectional=True).to(np.dtype(dtype).name)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((N, T, I)).astype(dtype)
    states = [rng.standard_normal((2 * layers, N, H)).astype(dtype) for _ in range(2 if cell == "LSTM" else 1)]
    g = rng.standard_normal((N, T, 2 * H)).astype(dtype)
    g_fin = [rng.standard_normal(s.shape).astype(dtype) for s in states]
    shards = []
    parallel = cpu.parallel
    monkeypatch.setattr(cpu, "parallel", lambda fn, n, *a: shards.append(n) or parallel(fn, n, *a))
    results = {}
    for threads in (1, 2, 3):
        deepscope.set_num_threads(threads)
        hx = tuple(states) if cell == "LSTM" else states[0]
        results[threads] = [v.copy() for v in _run_layer(layer, x, hx, g, g_fin)]
    deepscope.set_num_threads(cpu.default_num_threads())
    assert shards == [2] * (3 * layers * 2 * 2)     # forward and backward, every layer and direction, each run
    for threads in (2, 3):
        assert len(results[threads]) == len(results[1])
        for a, b in zip(results[threads], results[1]):
            np.testing.assert_array_equal(a, b)
