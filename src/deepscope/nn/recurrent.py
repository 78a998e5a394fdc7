"""Recurrent layers — the Elman RNN, the LSTM and the GRU — trained by backpropagation through time.

A recurrent layer reads a sequence x_1 … x_T one step at a time and keeps a state h_t that summarises
what it has seen. Unrolled in time it is a deep feedforward net with one layer per step, all steps
sharing the same weights, so everything the book says about deep nets (ch. 5) holds here too: in the
plain RNN the gradient reaching step k from step t is multiplied by W^T diag f'(net_i) once for every
step in between, and it vanishes (or explodes) geometrically. The LSTM (Hochreiter & Schmidhuber 1997)
and the GRU (Cho et al. 2014) are the cures: their state is carried by an *additive* path
(c_t = f_t ⊙ c_{t-1} + …, h_t = z_t ⊙ h_{t-1} + …) whose factor per step is a gate the net learns to hold
near 1, so δ can travel many steps without shrinking. The equations of each cell are in its class.

What the three share (:class:`Recurrent`):

* Stacked layers feed the states of layer k-1 as the inputs x_t of layer k. A bidirectional layer runs a
  second, independent network from t = T down to 1 and concatenates the two states, [h_t^→, h_t^←].
* The input part of every step, U x_t + b, is one GEMM over all steps; only the recurrent part W h_{t-1}
  is left for the loop. In backward, ∂C/∂U, ∂C/∂W, ∂C/∂b and ∂C/∂x are one GEMM each over all steps; the
  loop carries only ∂C/∂h_{t-1} (and the LSTM's ∂C/∂c_{t-1}). The LSTM instead joins the input part to the
  step's GEMM, a_t = [W | U | b] [h_{t-1}; x_t; 1], and takes [∂C/∂W | ∂C/∂U | ∂C/∂b] as one GEMM over all
  steps (row-MNIST's LSTM(28, 128): 3 products become 1 and 2 passes go, ~6% of a training step).
* Besides that GEMM a step is elementwise. For NumPy float32/float64 the LSTM's and GRU's elementwise lines
  between the GEMM and the tanh passes run as compiled loops (``deepscope._kernels``; an LSTM step is then 6
  calls instead of 12 forward, 3 instead of 7 backward); the NumPy lines stay beside each call as the
  reference (``cpu.reference()`` runs them, CuPy and float16 always do), with the same numbers to the last bit.
* The LSTM holds a sample per column inside, as the book writes a layer (a_t = U x_t + W h_{t-1} + b with
  x_t, h_{t-1} columns): the step's GEMM is W h_{t-1}, which OpenBLAS runs faster than the same product as
  rows, h_{t-1} W^T (the char LM's (1024×256)·(256×32): 89 µs against 153 with its AVX-512 kernels).
* Every sample's recurrence is its own, so the LSTM and the GRU cut a batch of 32 or more into 2 blocks and run
  each through all T steps, forward and backward, on its own thread (``cpu.parallel``); the blocks' parameter
  gradients are added in block order. The blocks depend on the batch size alone, never on the thread count,
  so neither do the numbers (a GEMM's last bits depend on its shape).
* PyTorch's names, layouts, gate order and initialisation (``weight_ih_l{k}[_reverse]`` of shape
  ``(G·H, I)``, ``weight_hh_l{k}[_reverse]`` ``(G·H, H)``, ``bias_ih_…``, ``bias_hh_…``; G = 1, 4, 3
  for RNN, LSTM, GRU), so a state dict moves between deepscope and ``torch.nn.RNN/LSTM/GRU`` unchanged.

The one difference from PyTorch, by design: **the layer returns one array**, the output sequence, so it
composes in ``Sequential`` like any other layer. The final states are attributes — ``h_n`` (and, for the
LSTM, ``c_n``) — and their gradients, if the cost uses them, are extra arguments of ``backward``:

    PyTorch                                   deepscope
    out, h_n = rnn(x, h0)                     out = rnn(x, h0);           h_n = rnn.h_n
    out, (h_n, c_n) = lstm(x, (h0, c0))       out = lstm(x, (h0, c0));    h_n, c_n = lstm.h_n, lstm.c_n
    (autograd)                                gx = lstm.backward(g_out, grad_h_n, grad_c_n);  lstm.grad_h0, lstm.grad_c0

To classify a sequence from its last step put :class:`LastStep` after the layer
(``Sequential(LSTM(28, 128), LastStep(), Linear(128, 10))``); a per-step head follows it directly
(``Sequential(Embedding(65, 32), LSTM(32, 256), Linear(256, 65))``, with :class:`SequenceLogLikelihood`).

Truncated BPTT: with ``stateful=True`` a forward without an initial state starts from the previous call's
final state (carrying no gradient: backward stops at the chunk's first step), so a long text can be read in
consecutive chunks; ``reset_state()`` starts over from zeros, and a change of batch size does too.
Clipping is the optimiser's ``clip_norm`` (the global gradient norm, as ``torch.nn.utils.clip_grad_norm_``).
"""
from __future__ import annotations

import math

import numpy

from .. import backend, cpu
from ..errors import ShapeError
from .activation import sigmoid
from .loss import LogLikelihoodCost, Loss
from .module import Module, Parameter

NONLINEARITIES = ("tanh", "relu", "sigmoid", "identity")


def _f(name, net, out):
    """s = f(net), written into ``out``."""
    xp = backend.xp_of(net)
    if name == "tanh":
        xp.tanh(net, out=out)
    elif name == "relu":
        xp.maximum(net, 0, out=out)
    elif name == "sigmoid":
        out[...] = sigmoid(net)
    else:
        out[...] = net


def _f_prime(name, s):
    """f'(net) written in terms of s = f(net), for every step at once."""
    if name == "tanh":
        return 1.0 - s * s
    if name == "relu":
        return (s > 0).astype(s.dtype)
    if name == "sigmoid":
        return s * (1.0 - s)
    return None  # identity: f' = 1


def _sigmoid_from_tanh(a):
    """σ in place on ``a``, which holds tanh(u/2): σ(u) = (1 + tanh(u/2)) / 2 (two passes, no overflow)."""
    a *= 0.5
    a += 0.5


BLOCK_ROWS = 16      # the fewest samples a block of the batch has (a GEMM with fewer columns runs much slower)
MAX_BLOCKS = 2       # the most blocks a batch is cut into


def _batch_blocks(N):
    """The batch's samples cut into contiguous blocks, each run through all T steps on its own (every sample's
    recurrence is independent of the others'): 2 blocks from 2·BLOCK_ROWS samples on, else 1. The blocks depend
    on N alone, not on the thread count, and so do the numbers (a GEMM's last bits depend on its shape)."""
    return cpu.split(N, min(MAX_BLOCKS, max(1, N // BLOCK_ROWS)))


def _each_block(fn, count, threaded):
    """``[fn(0), …, fn(count - 1)]``, the blocks shared by the CPU's threads when ``threaded``, else in turn."""
    if not threaded:
        return [fn(j) for j in range(count)]
    return [r for part in cpu.parallel(lambda s, e: [fn(j) for j in range(s, e)], count) for r in part]


class Recurrent(Module):
    """The machinery RNN, LSTM and GRU share: parameters, layers, directions, batch_first, initial and
    final states, stateful reading, and the loop over layers and directions in forward and backward.

    A subclass sets ``GATES`` (G: weight rows per hidden unit), ``STATES`` (("h",) or ("h", "c")) and
    ``GATE_NAMES`` (with each gate's nonlinearity), and writes the cell: ``_run`` (one layer and direction
    forward over all steps) and ``_bptt`` (the same, backward).
    """

    GATES = 1
    STATES = ("h",)
    GATE_NAMES: tuple = ()
    INITS = ("pytorch", "orthogonal")

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = True, bidirectional: bool = False, init: str = "pytorch",
                 stateful: bool = False):
        super().__init__()
        name = type(self).__name__
        if init not in self.INITS:
            raise ValueError(f"{name}: init must be one of {', '.join(self.INITS)}, got {init!r}")
        if int(num_layers) < 1 or int(hidden_size) < 1 or int(input_size) < 1:
            raise ValueError(f"{name}: input_size, hidden_size and num_layers must be positive")
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.bias, self.batch_first = bool(bias), bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        self.stateful = bool(stateful)
        self.init = init
        self._state = None
        self._grad_states_tm = self._grad_states = None
        self._gate_parts = self._gates = None
        self._init_parameters()

    def _init_parameters(self):
        """PyTorch's initialisation, drawn in PyTorch's order (per layer, per direction: w_ih, w_hh, b_ih,
        b_hh), every entry ~ U(-1/√H, 1/√H). With ``init="orthogonal"`` each gate's H×H block of W is then a
        random orthogonal matrix (all singular values 1: W^T neither shrinks nor grows δ; Saxe et al. 2014)."""
        H, G, dtype, rng = self.hidden_size, self.GATES, backend.default_dtype(), backend.rng()
        k = 1.0 / math.sqrt(H)
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else H * self.num_directions
            for suffix in self._suffixes(layer):
                if self.init == "irnn":  # RNN only: W = identity, biases 0, U ~ N(0, 0.001²)
                    w_ih = rng.standard_normal((H, in_size)) * 0.001
                    w_hh = numpy.eye(H)
                    b_ih = b_hh = numpy.zeros(H)
                else:
                    w_ih = rng.uniform(-k, k, (G * H, in_size))
                    w_hh = rng.uniform(-k, k, (G * H, H))
                    b_ih, b_hh = rng.uniform(-k, k, G * H), rng.uniform(-k, k, G * H)
                if self.init == "orthogonal":
                    w_hh = numpy.concatenate([_orthogonal(rng, H) for _ in range(G)])
                setattr(self, "weight_ih" + suffix, Parameter(backend.asarray(w_ih, dtype=dtype)))
                setattr(self, "weight_hh" + suffix, Parameter(backend.asarray(w_hh, dtype=dtype)))
                if self.bias:
                    setattr(self, "bias_ih" + suffix, Parameter(backend.asarray(b_ih, dtype=dtype)))
                    setattr(self, "bias_hh" + suffix, Parameter(backend.asarray(b_hh, dtype=dtype)))

    def _suffixes(self, layer):
        return [f"_l{layer}", f"_l{layer}_reverse"][: self.num_directions]

    def _p(self, name, suffix):
        return getattr(self, name + suffix)

    def reset_state(self) -> None:
        """Forget the carried state (stateful mode): the next forward starts from zeros."""
        self._state = None

    # -- forward -----------------------------------------------------------------------------------
    def _initial_states(self, hx, N, xp, dtype):
        """The initial states as a list (h0, or h0 and c0), each ``(L*D, N, H)``, checked."""
        shape = (self.num_layers * self.num_directions, N, self.hidden_size)
        if hx is None and self.stateful and self._state is not None and self._state[0].shape[1] == N:
            return self._state
        if hx is None:
            return [xp.zeros(shape, dtype=dtype) for _ in self.STATES]
        if len(self.STATES) == 1:
            parts = [hx]
        elif isinstance(hx, (tuple, list)):
            parts = list(hx)
        else:
            raise ShapeError(f"{self.describe()}: expected hx = (h0, c0), got one array")
        if len(parts) != len(self.STATES):
            raise ShapeError(f"{self.describe()}: expected hx = ({', '.join(s + '0' for s in self.STATES)}), "
                             f"got {len(parts)} arrays")
        for s, p in zip(self.STATES, parts):
            if tuple(p.shape) != shape:
                raise ShapeError(f"{self.describe()}: expected {s}0 of shape {shape}, got {tuple(p.shape)}")
        return [p.astype(dtype, copy=False) for p in parts]

    def forward(self, x, hx=None):
        """Run the sequence ``x`` from the initial state ``hx`` (h0, or (h0, c0) for the LSTM; zeros by
        default). Returns the last layer's states at every step; sets ``h_n`` (and ``c_n``)."""
        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise self.shape_error("(N, T, %d)" % self.input_size if self.batch_first
                                   else "(T, N, %d)" % self.input_size, x.shape)
        xp = backend.xp_of(x)
        dtype = self.weight_ih_l0.data.dtype
        x = x.astype(dtype, copy=False)
        xt = x.transpose(1, 0, 2) if self.batch_first else x   # time-major (T, N, I) inside
        T, N = xt.shape[0], xt.shape[1]
        if T == 0:
            raise self.shape_error("a sequence of at least one step", x.shape)
        init = self._initial_states(hx, N, xp, dtype)

        # Cached for backward, per layer and direction (index k = layer*D + d): the input in that
        # direction's reading order as one (T*N, I_k) matrix, and what the cell keeps (``_run``'s cache).
        self._seqs, self._caches, self._gate_parts, self._gates = [], [], [], None
        finals = [xp.empty((L * D, N, H), dtype=dtype) for _ in self.STATES]
        layer_in = xt
        for layer in range(L):
            outs = []
            for d, suffix in enumerate(self._suffixes(layer)):
                k = layer * D + d
                seq = layer_in if d == 0 else layer_in[::-1]      # the order this direction reads in
                seq2 = seq.reshape(T * N, -1)                     # (a copy unless already contiguous)
                cache, hs, last, gates = self._run(seq2, [s[k] for s in init], suffix)
                self._seqs.append(seq2)
                self._caches.append(cache)
                self._gate_parts.append(gates)
                for f, v in zip(finals, last):
                    f[k] = v
                outs.append(hs if d == 0 else hs[::-1])          # back in time order
            layer_in = outs[0] if D == 1 else xp.concatenate(outs, axis=2)
        output = layer_in.transpose(1, 0, 2) if self.batch_first else layer_in
        self.h_n = finals[0]
        if len(finals) > 1:
            self.c_n = finals[1]
        if self.stateful:
            self._state = [f.copy() for f in finals]
        return xp.ascontiguousarray(output)

    # -- backward ----------------------------------------------------------------------------------
    def backward(self, grad_output, grad_h_n=None, grad_c_n=None):
        """∂C/∂x from ∂C/∂output (None if the cost uses only the final states) and, optionally, ∂C/∂h_n and
        (LSTM) ∂C/∂c_n. Accumulates every parameter's gradient; sets ``grad_h0`` (and ``grad_c0``) and
        ``grad_states``. Returns None if ``needs_input_grad`` is False."""
        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        seq0 = self._seqs[0]
        N = self.h_n.shape[1]
        T = seq0.shape[0] // N
        dtype = self.h_n.dtype
        xp = backend.xp_of(seq0)
        out_shape = (N, T, D * H) if self.batch_first else (T, N, D * H)
        if grad_output is None:
            g = xp.zeros((T, N, D * H), dtype=dtype)
        else:
            if tuple(grad_output.shape) != out_shape:
                raise ShapeError(f"{self.describe()}: expected grad_output of shape {out_shape}, "
                                 f"got {tuple(grad_output.shape)}")
            g = grad_output.transpose(1, 0, 2) if self.batch_first else grad_output
        finals = [grad_h_n, grad_c_n][: len(self.STATES)]
        for s, gf in zip(self.STATES, finals):
            if gf is not None and tuple(gf.shape) != (L * D, N, H):
                raise ShapeError(f"{self.describe()}: expected grad_{s}_n of shape {(L * D, N, H)}, "
                                 f"got {tuple(gf.shape)}")

        grads0 = [xp.empty((L * D, N, H), dtype=dtype) for _ in self.STATES]
        self._grad_states_tm, self._grad_states = [None] * (L * D), None
        for layer in reversed(range(L)):
            need_dx = layer > 0 or self.needs_input_grad
            grad_x = None
            for d, suffix in enumerate(self._suffixes(layer)):
                k = layer * D + d
                gd = g[:, :, d * H:(d + 1) * H]
                # ∂C/∂h_t from above, in this direction's reading order (a fresh copy: it is written to).
                G = xp.array(gd if d == 0 else gd[::-1], copy=True)
                if grad_h_n is not None:
                    G[-1] += grad_h_n[k]                            # h_n is the last state read
                grad_c = None if grad_c_n is None else grad_c_n[k]
                gx, g0 = self._bptt(G, grad_c, self._caches[k], self._seqs[k], suffix, need_dx)
                for a, v in zip(grads0, g0):
                    a[k] = v
                gs = G if d == 0 else G[::-1]                       # G now holds ∂C/∂h_t
                self._grad_states_tm[k] = gs
                if need_dx:
                    if grad_x is None:
                        grad_x = gx if d == 0 else xp.ascontiguousarray(gx[::-1])
                    else:
                        grad_x += gx if d == 0 else gx[::-1]
            g = grad_x
        self.grad_h0 = grads0[0]
        if len(grads0) > 1:
            self.grad_c0 = grads0[1]
        if g is None:
            return None
        return xp.ascontiguousarray(g.transpose(1, 0, 2)) if self.batch_first else g

    @property
    def grad_states(self):
        """∂C/∂h_t at every step after backward, one array per layer and direction, laid out like the output
        (made on first reading: the instruments read it, training does not; None before any backward)."""
        if self._grad_states is None and self._grad_states_tm is not None:
            xp = backend.xp_of(self._grad_states_tm[0])
            self._grad_states = [xp.ascontiguousarray(g.transpose(1, 0, 2)) if self.batch_first else g
                                 for g in self._grad_states_tm]
        return self._grad_states

    @property
    def gates(self):
        """The gates' activations after forward, one dict {name: (T, N, H)} per layer and direction, in reading
        order (made on first reading where the cell keeps them in another layout; None before any forward)."""
        if self._gates is None and self._gate_parts is not None:
            self._gates = [g() if callable(g) else g for g in self._gate_parts]
        return self._gates

    # -- the cell (subclasses) ---------------------------------------------------------------------
    def _run(self, seq2, init, suffix):
        """One layer and direction forward. ``seq2`` holds x_1..x_T stacked as a (T*N, I) matrix, ``init``
        the initial states. Returns (cache for ``_bptt``, states h_1..h_T as (T, N, H), the final states,
        the gates {name: (T, N, H)} in reading order, or a function that makes them)."""
        raise NotImplementedError

    def _bptt(self, G, grad_c, cache, seq2, suffix, need_dx):
        """One layer and direction backward. ``G`` (T, N, H) holds the gradient from above at every step and
        is turned in place into ∂C/∂h_t. Accumulates the parameter gradients; returns ∂C/∂x_t as (T, N, I)
        (None unless ``need_dx``) and the gradients of the initial states."""
        raise NotImplementedError

    def _input_grad(self, d_in, N, suffix, need_dx):
        """∂C/∂x_t = U^T ∂C/∂(U x_t) for every step, (T, N, I), from the (T*N, G*H) matrix ``d_in``; None unless
        ``need_dx``."""
        if not need_dx:
            return None
        U = self._p("weight_ih", suffix).data
        return (d_in @ U).reshape(-1, N, U.shape[1])

    def _add_grads(self, suffix, parts):
        """Adds each block's (∂C/∂W, ∂C/∂U, ∂C/∂b_ih, ∂C/∂b_hh) to the gradients, in block order (whichever thread
        finished first)."""
        for dW, dU, db_ih, db_hh in parts:
            self._p("weight_hh", suffix).grad += dW
            self._p("weight_ih", suffix).grad += dU
            if self.bias:
                self._p("bias_ih", suffix).grad += db_ih
                self._p("bias_hh", suffix).grad += db_hh

    def _input_part(self, seq2, N, suffix):
        """U x_t for every step as one GEMM, ``(T, N, G*H)``."""
        U = self._p("weight_ih", suffix).data
        return (seq2 @ U.T).reshape(seq2.shape[0] // N, N, -1)

    def extra_repr(self) -> str:
        return ", ".join(self._repr_parts())

    def _repr_parts(self) -> list:
        parts = [f"{self.input_size}", f"{self.hidden_size}"]
        if self.num_layers != 1:
            parts.append(f"num_layers={self.num_layers}")
        if self.bidirectional:
            parts.append("bidirectional=True")
        if not self.batch_first:
            parts.append("batch_first=False")
        return parts


def _orthogonal(rng, n):
    """A random n×n orthogonal matrix, uniformly distributed (QR of a Gaussian matrix, signs fixed)."""
    q, r = numpy.linalg.qr(rng.standard_normal((n, n)))
    return q * numpy.sign(numpy.diag(r))


class RNN(Recurrent):
    """A multi-layer Elman RNN, h_t = f(U x_t + W h_{t-1} + b), with BPTT written out.

        forward     net_t = U x_t + W h_{t-1} + b          (U = weight_ih, W = weight_hh, b = b_ih + b_hh)
                    h_t   = f(net_t),        h_0 = h0 (zeros by default)

        backward    ∂C/∂h_t = g_t + W^T δ_{t+1}            (g_t: the gradient arriving from above at step t)
                    δ_t   = ∂C/∂net_t = ∂C/∂h_t ⊙ f'(net_t)
                    unrolled:  δ_k = δ_t ∏_{i=k+1}^{t} W^T diag f'(net_i)      (what reaches step k from step t)
                    ∂C/∂W += Σ_t δ_t h_{t-1}^T      ∂C/∂U += Σ_t δ_t x_t^T      ∂C/∂b += Σ_t δ_t
                    ∂C/∂x_t = U^T δ_t               ∂C/∂h0 = W^T δ_1

    Args:
        input_size: features per step of the input, I.
        hidden_size: size of the state h_t, H.
        num_layers: stacked recurrent layers, L (default 1).
        nonlinearity: f, one of ``"tanh"`` (default), ``"relu"``, ``"sigmoid"``, ``"identity"``.
        bias: whether the layer has biases ``bias_ih`` and ``bias_hh`` (default True).
        batch_first: inputs and outputs are ``(N, T, ·)`` if True (default), ``(T, N, ·)`` if False.
            (PyTorch's default is False; deepscope's sequences are batch-first.)
        bidirectional: add a second network that reads the sequence backwards (D = 2).
        init: ``"pytorch"`` (default): every weight and bias ~ U(-1/√H, 1/√H), drawn from the global
            generator; ``"orthogonal"``: the same, but W a random orthogonal matrix; ``"irnn"`` (Le, Jaitly &
            Hinton 2015, for ``nonlinearity="relu"``): W = identity, biases 0, U ~ N(0, 0.001²).
        stateful: truncated BPTT (see the module's docstring).

    Shape:
        - x: ``(N, T, I)`` (``(T, N, I)`` if not batch_first);  hx = h0: ``(L*D, N, H)``, optional (zeros).
        - output: ``(N, T, D*H)``, the last layer's states at every step (directions concatenated).

    Attributes:
        weight_ih_l{k}[_reverse]: ``(H, I)`` for k = 0, ``(H, D*H)`` for k > 0 (U).
        weight_hh_l{k}[_reverse]: ``(H, H)`` (W).   bias_ih_l{k}[_reverse], bias_hh_l{k}[_reverse]: ``(H,)``.
        h_n: after forward, every layer's and direction's final state ``(L*D, N, H)`` (for the backward
            direction, the state after reading x_1).
        grad_h0: ∂C/∂h0, ``(L*D, N, H)``, after backward.
        grad_states: after backward, one array per layer and direction (index k*D + d), ∂C/∂h_t at every
            step, ``(N, T, H)`` (``(T, N, H)`` if not batch_first), in time order: the total gradient reaching
            h_t (from the layer above and from h_{t+1}), whose norm the gradient-through-time instrument reads.
        gates: after forward, one dict per layer and direction, {f: h_t at every step (T, N, H)} in reading
            order (the units' activations, for the saturation instrument).
    """

    INITS = ("pytorch", "orthogonal", "irnn")

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = True, bidirectional: bool = False,
                 init: str = "pytorch", stateful: bool = False):
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"RNN: nonlinearity must be one of {', '.join(NONLINEARITIES)}, got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.GATE_NAMES = ((nonlinearity, nonlinearity),)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, bidirectional, init, stateful)

    def _repr_parts(self) -> list:
        parts = super()._repr_parts()
        if self.nonlinearity != "tanh":
            parts.insert(3 if self.num_layers != 1 else 2, f"nonlinearity={self.nonlinearity!r}")
        return parts

    def _run(self, seq2, init, suffix):
        """h_0 = h0, h_t = f(U x_t + W h_{t-1} + b) for t = 1..T."""
        xp = backend.xp_of(seq2)
        h0, = init
        N = h0.shape[0]
        net = self._input_part(seq2, N, suffix)                   # U x_t for every step: one GEMM
        T = net.shape[0]
        if self.bias:
            net += self._p("bias_ih", suffix).data + self._p("bias_hh", suffix).data
        S = xp.empty((T + 1,) + h0.shape, dtype=net.dtype)
        S[0] = h0
        # W^T stored row-major: OpenBLAS's AVX-512 kernels multiply by it faster than by W's transposed view
        # (the LSTM's (64, 128) @ (128, 512): 44 µs against 57; its AVX2 kernels take 74 µs either way)
        Wt = xp.ascontiguousarray(self._p("weight_hh", suffix).data.T)
        buf = xp.empty_like(h0)
        for t in range(T):
            xp.matmul(S[t], Wt, out=buf)
            net[t] += buf                                       # net_t = U x_t + W h_{t-1} + b
            _f(self.nonlinearity, net[t], S[t + 1])             # h_t = f(net_t)
        return S, S[1:], [S[-1]], {self.nonlinearity: S[1:]}

    def _bptt(self, G, grad_c, S, seq2, suffix, need_dx):
        xp = backend.xp_of(G)
        T, N, H = G.shape
        w_ih, w_hh = self._p("weight_ih", suffix), self._p("weight_hh", suffix)
        W = w_hh.data
        fp = _f_prime(self.nonlinearity, S[1:])                    # f'(net_t) for every step at once
        delta = xp.empty_like(G) if fp is not None else G
        carry = xp.empty_like(G[0])                                # W^T δ_{t+1}
        for t in reversed(range(T)):
            if t < T - 1:
                G[t] += carry                                      # ∂C/∂h_t = g_t + W^T δ_{t+1}
            if fp is not None:
                xp.multiply(G[t], fp[t], out=delta[t])             # δ_t = ∂C/∂h_t ⊙ f'(net_t)
            xp.matmul(delta[t], W, out=carry)
        # Parameter gradients as one GEMM each, over all steps stacked.
        d2 = delta.reshape(T * N, H)
        w_hh.grad += d2.T @ S[:-1].reshape(T * N, H)               # Σ_t δ_t h_{t-1}^T
        w_ih.grad += d2.T @ seq2                                   # Σ_t δ_t x_t^T
        if self.bias:
            db = d2.sum(axis=0)
            self._p("bias_ih", suffix).grad += db                  # Σ_t δ_t
            self._p("bias_hh", suffix).grad += db
        return self._input_grad(d2, N, suffix, need_dx), [carry]  # ∂C/∂x_t = U^T δ_t, ∂C/∂h0 = W^T δ_1


class LSTM(Recurrent):
    """A multi-layer long short-term memory network (Hochreiter & Schmidhuber 1997), PyTorch's formulation.

    Each unit has a memory cell c_t, written and read through three gates (σ: the sigmoid):

        forward   i_t = σ(U_i x_t + W_i h_{t-1} + b_i)         input gate: how much of g_t to write
                  f_t = σ(U_f x_t + W_f h_{t-1} + b_f)         forget gate: how much of c_{t-1} to keep
                  g_t = tanh(U_g x_t + W_g h_{t-1} + b_g)      the candidate
                  o_t = σ(U_o x_t + W_o h_{t-1} + b_o)         output gate
                  c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t              the additive path: ∂c_t/∂c_{t-1} = diag f_t
                  h_t = o_t ⊙ tanh(c_t)

    U = weight_ih holds [U_i; U_f; U_g; U_o] stacked (4H rows, PyTorch's gate order), W = weight_hh and
    b = b_ih + b_hh likewise. With a_t = U x_t + W h_{t-1} + b the pre-activations of the four gates:

        backward  ∂C/∂h_t = g_t + W^T ∂C/∂a_{t+1}                                 (g_t: from above)
                  ∂C/∂c_t = ∂C/∂c_{t+1} ⊙ f_{t+1} + ∂C/∂h_t ⊙ o_t ⊙ (1 - tanh² c_t)   (the cell's path)
                  ∂C/∂a_i = ∂C/∂c_t ⊙ g_t ⊙ i_t(1 - i_t)       ∂C/∂a_f = ∂C/∂c_t ⊙ c_{t-1} ⊙ f_t(1 - f_t)
                  ∂C/∂a_g = ∂C/∂c_t ⊙ i_t ⊙ (1 - g_t²)         ∂C/∂a_o = ∂C/∂h_t ⊙ tanh c_t ⊙ o_t(1 - o_t)
                  ∂C/∂W += Σ_t ∂C/∂a_t h_{t-1}^T   ∂C/∂U += Σ_t ∂C/∂a_t x_t^T   ∂C/∂b += Σ_t ∂C/∂a_t
                  ∂C/∂x_t = U^T ∂C/∂a_t    ∂C/∂h0 = W^T ∂C/∂a_1    ∂C/∂c0 = ∂C/∂c_1 ⊙ f_1

    Unrolled, what reaches c_k from c_t along the cell's path is ∂C/∂c_t ⊙ f_t ⊙ … ⊙ f_{k+1}: no weight
    matrix and no f' in the product, so gradient survives as long as the forget gates stay open.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, bidirectional, stateful: as :class:`RNN`.
        init: ``"pytorch"`` (default, every weight and bias ~ U(-1/√H, 1/√H)) or ``"orthogonal"`` (each gate's
            H×H block of W a random orthogonal matrix).

    Shape:
        - x: ``(N, T, I)`` (``(T, N, I)`` if not batch_first);  hx = (h0, c0), each ``(L*D, N, H)``, optional.
        - output: ``(N, T, D*H)``, h_t of the last layer at every step (directions concatenated).

    Attributes:
        weight_ih_l{k}[_reverse]: ``(4H, I)`` for k = 0, ``(4H, D*H)`` for k > 0.
        weight_hh_l{k}[_reverse]: ``(4H, H)``.   bias_ih_l{k}[_reverse], bias_hh_l{k}[_reverse]: ``(4H,)``.
        h_n, c_n: after forward, the final states ``(L*D, N, H)``.   grad_h0, grad_c0: after backward.
        grad_states: ∂C/∂h_t at every step, as :class:`RNN`.
        gates: after forward, one dict per layer and direction, {"i", "f", "g", "o": (T, N, H)}.
    """

    GATES = 4
    STATES = ("h", "c")
    GATE_NAMES = (("i", "sigmoid"), ("f", "sigmoid"), ("g", "tanh"), ("o", "sigmoid"))

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = True, bidirectional: bool = False, init: str = "pytorch",
                 stateful: bool = False):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, bidirectional, init, stateful)

    def _scale(self, xp, dtype):
        """[½, ½, 1, ½] per gate block: σ(a) = (1 + tanh(a/2))/2, so one tanh over all four gates computes
        them all (the σ gates' pre-activations are halved on the way in)."""
        s = xp.full(4 * self.hidden_size, 0.5, dtype=dtype)
        s[2 * self.hidden_size:3 * self.hidden_size] = 1.0
        return s

    def _run(self, seq2, init, suffix):
        xp = backend.xp_of(seq2)
        h0, c0 = init
        N, H = h0.shape
        T = seq2.shape[0] // N
        parts = [self._p("weight_hh", suffix).data, self._p("weight_ih", suffix).data]
        if self.bias:
            parts.append((self._p("bias_ih", suffix).data + self._p("bias_hh", suffix).data)[:, None])
        M = xp.concatenate(parts, axis=1) * self._scale(xp, seq2.dtype)[:, None]   # [W | U | b], σ rows halved
        seq = seq2.reshape(T, N, -1)
        hs, c_n = xp.empty((T, N, H), dtype=seq2.dtype), xp.empty((N, H), dtype=seq2.dtype)
        k = cpu.kernels() if cpu.fast(seq2, h0, c0) else None     # the fast path: NumPy float32/float64
        blocks = _batch_blocks(N)

        def block(j):
            lo, hi = blocks[j]
            cache = self._run_block(seq[:, lo:hi], h0[lo:hi], c0[lo:hi], M, k)
            hs[:, lo:hi] = cache[1][1:, :H].transpose(0, 2, 1)   # h_1..h_T
            c_n[lo:hi] = cache[2][T].T
            return cache

        caches = _each_block(block, len(blocks), k is not None)

        def gates():                                              # {gate: (T, N, H)}, from the blocks' A
            out = {name: xp.empty((T, N, H), dtype=seq2.dtype) for name in "ifgo"}
            for (lo, hi), cache in zip(blocks, caches):
                A = cache[0].reshape(T, 4, H, hi - lo)
                for q, name in enumerate("ifgo"):
                    out[name][:, lo:hi] = A[:, q].transpose(0, 2, 1)
            return out
        return (blocks, caches), hs, [hs[-1], c_n], gates

    def _run_block(self, x, h0, c0, M, k):
        """Forward of one block of n samples, x ``(T, n, I)``, through all T steps. Inside, a sample is a column,
        as in the book, and the input part joins the recurrent one in the step's one GEMM:
        a_t = [W | U | b] [h_{t-1}; x_t; 1], ``(4H, n)``; no block needs another's columns. Returns the cache:
        A, the gates [i; f; g; o] at every step, ``(T, 4H, n)``; Z, the columns [h_t; x_{t+1}; 1] for t = 0..T,
        ``(T+1, H+I(+1), n)`` (x and 1 unset in Z[T]); c_0..c_T, ``(T+1, H, n)``; tanh c_t, ``(T, H, n)``."""
        xp = backend.xp_of(x)
        T, n, I = x.shape
        H = h0.shape[1]
        Z = xp.empty((T + 1, M.shape[1], n), dtype=M.dtype)
        Z[0, :H] = h0.T
        Z[:T, H:H + I] = x.transpose(0, 2, 1)
        Z[:T, H + I:] = 1                                         # the bias's column of ones (if any)
        A = xp.empty((T, 4 * H, n), dtype=M.dtype)
        C = xp.empty((T + 1, H, n), dtype=M.dtype)
        TC = xp.empty((T, H, n), dtype=M.dtype)
        C[0] = c0.T
        tmp = xp.empty((H, n), dtype=M.dtype)
        A1, C1 = A.reshape(T, 1, -1), C.reshape(T + 1, 1, -1)     # a step's gates, cells as one row (kernel)
        for t in range(T):
            a = A[t]
            xp.matmul(M, Z[t], out=a)                             # a_t = W h_{t-1} + U x_t + b (σ rows halved)
            xp.tanh(a, out=a)
            if k:                                                 # the next six lines in one pass
                k.lstm_cell_forward(A1[t], C1[t], C1[t + 1])
            else:
                _sigmoid_from_tanh(a[:2 * H])                     # i_t, f_t
                _sigmoid_from_tanh(a[3 * H:])                     # o_t        (g_t = tanh a_g already)
                i, f, g = a[:H], a[H:2 * H], a[2 * H:3 * H]
                xp.multiply(f, C[t], out=C[t + 1])
                xp.multiply(i, g, out=tmp)
                C[t + 1] += tmp                                   # c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
            xp.tanh(C[t + 1], out=TC[t])
            xp.multiply(a[3 * H:], TC[t], out=Z[t + 1, :H])       # h_t = o_t ⊙ tanh c_t
        return A, Z, C, TC

    def _bptt(self, G, grad_c, cache, seq2, suffix, need_dx):
        xp = backend.xp_of(G)
        blocks, caches = cache
        T, N, H = G.shape
        U, W = self._p("weight_ih", suffix).data, self._p("weight_hh", suffix).data
        I = U.shape[1]
        Wt = xp.ascontiguousarray(W.T)
        gx = xp.empty((T, N, I), dtype=G.dtype) if need_dx else None
        grad_h0, grad_c0 = xp.empty((N, H), dtype=G.dtype), xp.empty((N, H), dtype=G.dtype)
        k = cpu.kernels() if cpu.fast(G, seq2) else None

        def block(j):
            lo, hi = blocks[j]
            n = hi - lo
            dc = None if grad_c is None else grad_c[lo:hi]
            dA, grad_h0[lo:hi], grad_c0[lo:hi] = self._bptt_block(G[:, lo:hi], dc, caches[j], Wt, k)
            if need_dx:                                            # over all steps at once (dA: (4H, T·n)):
                gx[:, lo:hi] = (dA.T @ U).reshape(T, n, -1)       # ∂C/∂x_t = U^T ∂C/∂a_t
            Z = caches[j][1][:T]                                   # [h_{t-1}; x_t; 1], (T, K, n)
            K = Z.shape[1]
            # Σ_t ∂C/∂a_t [h_{t-1}; x_t; 1]^T = [∂C/∂W | ∂C/∂U | ∂C/∂b] as one GEMM over all steps, with Z's
            # columns as rows; K padded with zeros to a multiple of 16 (OpenBLAS's AVX-512 kernels: 157 -> 160
            # columns ran the LSTM(28, 128)'s product in 0.89x the time)
            Zr = xp.zeros((T, n, -(-K // 16) * 16), dtype=Z.dtype)
            Zr[:, :, :K] = Z.transpose(0, 2, 1)
            return dA @ Zr.reshape(T * n, -1)

        parts = _each_block(block, len(blocks), k is not None)
        dM = parts[0]
        for p in parts[1:]:                                        # the blocks' sums, in block order
            dM += p
        db = dM[:, H + I] if self.bias else None
        self._add_grads(suffix, [(dM[:, :H], dM[:, H:H + I], db, db)])
        return gx, [grad_h0, grad_c0]

    def _bptt_block(self, G, grad_c, cache, Wt, k):
        """Backward of one block. G ``(T, n, H)``, the gradient from above, is turned in place into ∂C/∂h_t;
        ``grad_c`` ``(n, H)``: ∂C/∂c_T (None: 0). Returns ∂C/∂a_t at every step with the steps' columns side by
        side, ``(4H, T·n)``, and ∂C/∂h0, ∂C/∂c0 ``(n, H)``."""
        xp = backend.xp_of(G)
        A, _, C, TC = cache
        T, H, n = TC.shape
        D = xp.ascontiguousarray(G.transpose(0, 2, 1))             # ∂C/∂h_t as (T, H, n): samples in columns
        dc_next = xp.zeros((H, n), dtype=A.dtype)                  # ∂C/∂c_{t+1} ⊙ f_{t+1}
        if grad_c is not None:
            dc_next[...] = grad_c.T
        carry = xp.empty((H, n), dtype=A.dtype)                    # W^T ∂C/∂a_{t+1}
        if k:                                                      # the reference below, one pass a step
            dA, da = xp.empty((4 * H, T, n), dtype=A.dtype), xp.empty((4 * H, n), dtype=A.dtype)
            D1, A1, C1, TC1 = (v.reshape(len(v), 1, -1) for v in (D, A, C, TC))   # a step's arrays as one row
            carry1, dc1, da1 = (v.reshape(1, -1) for v in (carry, dc_next, da))      # each (the kernel's view)
            for t in reversed(range(T)):
                k.lstm_cell_backward(D1[t], carry1, t < T - 1, A1[t], C1[t], TC1[t], dc1, da1)
                xp.matmul(Wt, da, out=carry)
                dA[:, t] = da
        else:
            dA = xp.empty((T, 4 * H, n), dtype=A.dtype)
            A4, dA4 = A.reshape(T, 4, H, n), dA.reshape(T, 4, H, n)
            i, f, g, o = A4[:, 0], A4[:, 1], A4[:, 2], A4[:, 3]
            # The factors of every step at once (no recurrence in them); dA is then filled in place:
            #   dA = [g i(1-i); c_{t-1} f(1-f); i (1-g²); tanh c ⊙ o(1-o)]  ⊙  [∂C/∂c_t ×3; ∂C/∂h_t]
            xp.multiply(g, i * (1 - i), out=dA4[:, 0])
            xp.multiply(C[:-1], f * (1 - f), out=dA4[:, 1])
            xp.multiply(i, 1 - g * g, out=dA4[:, 2])
            xp.multiply(TC, o * (1 - o), out=dA4[:, 3])
            K = o * (1 - TC * TC)                                  # ∂h_t/∂c_t
            dc = xp.empty((H, n), dtype=A.dtype)
            for t in reversed(range(T)):
                if t < T - 1:
                    D[t] += carry                                  # ∂C/∂h_t = g_t + W^T ∂C/∂a_{t+1}
                xp.multiply(D[t], K[t], out=dc)
                dc += dc_next                                      # ∂C/∂c_t = ∂C/∂c_{t+1} ⊙ f_{t+1} + ∂C/∂h_t ⊙ ∂h_t/∂c_t
                dA4[t, :3] *= dc                                   # ∂C/∂a_i, ∂C/∂a_f, ∂C/∂a_g
                dA4[t, 3] *= D[t]                                  # ∂C/∂a_o
                xp.multiply(dc, f[t], out=dc_next)                 # what reaches c_{t-1} along the cell
                xp.matmul(Wt, dA[t], out=carry)
            dA = xp.ascontiguousarray(dA.transpose(1, 0, 2))
        G[...] = D.transpose(0, 2, 1)                              # ∂C/∂h_t, for grad_states
        return dA.reshape(4 * H, T * n), carry.T, dc_next.T


class GRU(Recurrent):
    """A multi-layer gated recurrent unit network (Cho et al. 2014), PyTorch's formulation.

        forward   r_t = σ(U_r x_t + b_ir + W_r h_{t-1} + b_hr)          reset gate
                  z_t = σ(U_z x_t + b_iz + W_z h_{t-1} + b_hz)          update gate
                  n_t = tanh(U_n x_t + b_in + r_t ⊙ (W_n h_{t-1} + b_hn))   the candidate
                  h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}                  the additive path: ∂h_t/∂h_{t-1} ∋ diag z_t

    U = weight_ih holds [U_r; U_z; U_n] (3H rows, PyTorch's order), W = weight_hh likewise; the two biases
    stay separate because b_hn sits inside r_t ⊙ (…). With a_r, a_z, a_n the pre-activations and
    m_t = W_n h_{t-1} + b_hn:

        backward  ∂C/∂h_t = g_t + ∂C/∂h_{t+1} ⊙ z_{t+1} + W^T ∂C/∂(W h_t)_{t+1}           (g_t: from above)
                  ∂C/∂a_n = ∂C/∂h_t ⊙ (1 - z_t) ⊙ (1 - n_t²)
                  ∂C/∂a_z = ∂C/∂h_t ⊙ (h_{t-1} - n_t) ⊙ z_t(1 - z_t)
                  ∂C/∂a_r = ∂C/∂a_n ⊙ m_t ⊙ r_t(1 - r_t)
                  input side   ∂C/∂(U x_t + b_i) = [∂C/∂a_r, ∂C/∂a_z, ∂C/∂a_n]
                  hidden side  ∂C/∂(W h_{t-1} + b_h) = [∂C/∂a_r, ∂C/∂a_z, ∂C/∂a_n ⊙ r_t]
                  ∂C/∂U += Σ_t (input side) x_t^T     ∂C/∂b_i += Σ_t (input side)
                  ∂C/∂W += Σ_t (hidden side) h_{t-1}^T  ∂C/∂b_h += Σ_t (hidden side)
                  ∂C/∂x_t = U^T (input side)     ∂C/∂h0 = ∂C/∂h_1 ⊙ z_1 + W^T (hidden side)_1

    Args and Shape: as :class:`LSTM`, with hx = h0 only; 3H rows in place of 4H.

    Attributes:
        h_n, grad_h0, grad_states: as :class:`RNN`.   gates: {"r", "z", "n": (T, N, H)} per layer and direction.
    """

    GATES = 3
    GATE_NAMES = (("r", "sigmoid"), ("z", "sigmoid"), ("n", "tanh"))

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = True, bidirectional: bool = False, init: str = "pytorch",
                 stateful: bool = False):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, bidirectional, init, stateful)

    def _run(self, seq2, init, suffix):
        xp = backend.xp_of(seq2)
        h0, = init
        N, H = h0.shape
        T = seq2.shape[0] // N
        s = xp.full((3 * H, 1), 0.5, dtype=seq2.dtype)            # σ(a) = (1 + tanh(a/2))/2: halve r, z rows
        s[2 * H:] = 1.0
        U = self._p("weight_ih", suffix).data * s
        W = self._p("weight_hh", suffix).data * s
        bi = self._p("bias_ih", suffix).data[:, None] * s if self.bias else None
        bh = self._p("bias_hh", suffix).data[:, None] * s if self.bias else None
        seq = seq2.reshape(T, N, -1)
        hs = xp.empty((T, N, H), dtype=seq2.dtype)
        k = cpu.kernels() if cpu.fast(seq2, h0) else None         # the fast path: NumPy float32/float64
        blocks = _batch_blocks(N)

        def block(j):
            lo, hi = blocks[j]
            cache = self._run_block(seq[:, lo:hi], h0[lo:hi], U, W, bi, bh, k)
            hs[:, lo:hi] = cache[4][1:]                           # h_1..h_T
            return cache

        caches = _each_block(block, len(blocks), k is not None)

        def gates():                                              # {gate: (T, N, H)}, from the blocks'
            out = {name: xp.empty((T, N, H), dtype=seq2.dtype) for name in "rzn"}
            for (lo, hi), (_, RZ, Nn, _, _) in zip(blocks, caches):
                for name, v in (("r", RZ[:, :H]), ("z", RZ[:, H:]), ("n", Nn)):
                    out[name][:, lo:hi] = v.transpose(0, 2, 1)
            return out
        return (blocks, caches), hs, [hs[-1]], gates

    def _run_block(self, x, h0, U, W, bi, bh, k):
        """Forward of one block of n samples, x ``(T, n, I)``, through all T steps, a sample per column (as the
        LSTM's). Returns the cache: (W h_{t-1} + b_h) ⊙ s ``(T, 3H, n)``, [r; z] ``(T, 2H, n)``, n_t ``(T, H, n)``,
        h_0..h_T ``(T+1, H, n)`` and as rows ``(T+1, n, H)``."""
        xp = backend.xp_of(x)
        T, n, _ = x.shape
        H = h0.shape[1]
        GI = xp.matmul(U, x.transpose(0, 2, 1))                   # (U x_t + b_i) ⊙ s for every step
        if bi is not None:
            GI += bi
        GH = xp.empty((T, 3 * H, n), dtype=GI.dtype)              # (W h_{t-1} + b_h) ⊙ s, kept for backward
        RZ = xp.empty((T, 2 * H, n), dtype=GI.dtype)
        Nn = xp.empty((T, H, n), dtype=GI.dtype)
        Hs = xp.empty((T + 1, H, n), dtype=GI.dtype)
        Hs[0] = h0.T
        if k:                                                     # a step's arrays as one row each (kernels)
            GI1, GH1, RZ1, Nn1, Hs1 = (v.reshape(len(v), 1, -1) for v in (GI, GH, RZ, Nn, Hs))
            bh1 = xp.empty(0, dtype=GI.dtype) if bh is None else xp.repeat(bh, n)   # b_h for every element
        for t in range(T):
            gh, rz, nn_, h = GH[t], RZ[t], Nn[t], Hs[t + 1]
            xp.matmul(W, Hs[t], out=gh)
            if k:                                                 # each kernel: the reference lines beside it
                k.gru_cell_gates(GI1[t], GH1[t], bh1, bh is not None, RZ1[t])
            else:
                if bh is not None:
                    gh += bh
                xp.add(GI[t, :2 * H], gh[:2 * H], out=rz)
            xp.tanh(rz, out=rz)
            if k:
                k.gru_cell_candidate(RZ1[t], GH1[t], GI1[t], Nn1[t])
            else:
                _sigmoid_from_tanh(rz)                            # r_t, z_t
                xp.multiply(rz[:H], gh[2 * H:], out=nn_)
                nn_ += GI[t, 2 * H:]
            xp.tanh(nn_, out=nn_)                                 # n_t = tanh(U_n x + b_in + r ⊙ m_t)
            if k:
                k.gru_cell_state(Hs1[t], Nn1[t], RZ1[t], Hs1[t + 1])
            else:
                xp.subtract(Hs[t], nn_, out=h)
                h *= rz[H:]
                h += nn_                                          # h_t = n_t + z_t ⊙ (h_{t-1} - n_t)
        return GH, RZ, Nn, Hs, xp.ascontiguousarray(Hs.transpose(0, 2, 1))

    def _bptt(self, G, grad_c, cache, seq2, suffix, need_dx):
        xp = backend.xp_of(G)
        blocks, caches = cache
        T, N, H = G.shape
        U, W = self._p("weight_ih", suffix).data, self._p("weight_hh", suffix).data
        Wt = xp.ascontiguousarray(W.T)
        seq = seq2.reshape(T, N, -1)
        gx = xp.empty((T, N, U.shape[1]), dtype=G.dtype) if need_dx else None
        grad_h0 = xp.empty((N, H), dtype=G.dtype)
        k = cpu.kernels() if cpu.fast(G, seq2) else None

        def block(j):
            lo, hi = blocks[j]
            n = hi - lo
            DI, DH, grad_h0[lo:hi] = self._bptt_block(G[:, lo:hi], caches[j], Wt, k)
            if need_dx:                                            # over all steps at once ((3H, T·n) each):
                gx[:, lo:hi] = (DI.T @ U).reshape(T, n, -1)       # ∂C/∂x_t = U^T (input side)
            return (DH @ caches[j][4][:T].reshape(T * n, H),       # Σ_t (hidden side) h_{t-1}^T
                    DI @ seq[:, lo:hi].reshape(T * n, -1),         # Σ_t (input side) x_t^T
                    DI.sum(axis=1), DH.sum(axis=1))                # Σ_t (input side), Σ_t (hidden side)

        self._add_grads(suffix, _each_block(block, len(blocks), k is not None))
        return gx, [grad_h0]

    def _bptt_block(self, G, cache, Wt, k):
        """Backward of one block: G ``(T, n, H)``, the gradient from above, is turned in place into ∂C/∂h_t.
        Returns the input and the hidden side at every step with the steps' columns side by side, ``(3H, T·n)``
        each, and ∂C/∂h0 ``(n, H)``."""
        xp = backend.xp_of(G)
        GH, RZ, Nn, Hs, _ = cache
        T, H, n = Nn.shape
        D = xp.ascontiguousarray(G.transpose(0, 2, 1))             # ∂C/∂h_t as (T, H, n): samples in columns
        r, z = RZ[:, :H], RZ[:, H:]
        carry = xp.empty((H, n), dtype=G.dtype)
        if k:                                                      # the reference below, one pass a step
            DI, DH = xp.empty((3 * H, T, n), dtype=G.dtype), xp.empty((3 * H, T, n), dtype=G.dtype)
            di, dh = xp.empty((3 * H, n), dtype=G.dtype), xp.empty((3 * H, n), dtype=G.dtype)
            D1, RZ1, Nn1, GH1, Hs1 = (v.reshape(len(v), 1, -1) for v in (D, RZ, Nn, GH, Hs))
            carry1, di1, dh1 = (v.reshape(1, -1) for v in (carry, di, dh))
            for t in reversed(range(T)):
                k.gru_cell_backward(D1[t], carry1, D1[min(t + 1, T - 1)], RZ1[min(t + 1, T - 1)], t < T - 1,
                                    RZ1[t], Nn1[t], GH1[t], Hs1[t], di1, dh1)
                xp.matmul(Wt, dh, out=carry)                       # carry + ∂C/∂h_t ⊙ z_t: in the next call
                DI[:, t], DH[:, t] = di, dh
            carry += D[0] * z[0]                                   # ∂C/∂h0
        else:
            DI = xp.empty((T, 3 * H, n), dtype=G.dtype)            # input side  [a_r; a_z; a_n]
            DH = xp.empty((T, 3 * H, n), dtype=G.dtype)            # hidden side [a_r; a_z; a_n ⊙ r]
            m = GH[:, 2 * H:]                                      # m_t = W_n h_{t-1} + b_hn (unscaled row block)
            # Factors of every step at once, turned in the loop into the gradients:
            Kn = (1 - z) * (1 - Nn * Nn)                           # ∂C/∂a_n = ∂C/∂h_t ⊙ Kn
            Kz = (Hs[:-1] - Nn) * z * (1 - z)                      # ∂C/∂a_z = ∂C/∂h_t ⊙ Kz
            Kr = m * r * (1 - r)                                   # ∂C/∂a_r = ∂C/∂a_n ⊙ Kr
            for t in reversed(range(T)):
                if t < T - 1:
                    D[t] += carry                                  # ∂C/∂h_t = g_t + (what h_{t+1} sends back)
                dh, di, dhid = D[t], DI[t], DH[t]
                xp.multiply(dh, Kn[t], out=di[2 * H:])             # ∂C/∂a_n
                xp.multiply(dh, Kz[t], out=di[H:2 * H])            # ∂C/∂a_z
                xp.multiply(di[2 * H:], Kr[t], out=di[:H])         # ∂C/∂a_r
                dhid[:2 * H] = di[:2 * H]
                xp.multiply(di[2 * H:], r[t], out=dhid[2 * H:])    # ∂C/∂m_t = ∂C/∂a_n ⊙ r_t
                xp.matmul(Wt, dhid, out=carry)
                carry += dh * z[t]                                 # ∂C/∂h_{t-1} = W^T (hidden side) + ∂C/∂h_t ⊙ z_t
            DI, DH = (xp.ascontiguousarray(v.transpose(1, 0, 2)) for v in (DI, DH))
        G[...] = D.transpose(0, 2, 1)                              # ∂C/∂h_t, for grad_states
        return DI.reshape(3 * H, T * n), DH.reshape(3 * H, T * n), carry.T


class LastStep(Module):
    """Selects the last time step of a sequence, ``output[:, -1]``, so a recurrent layer can classify inside
    ``Sequential``. Backward puts the gradient at the last step and zeros elsewhere. (For a bidirectional
    layer, the backward direction's part of the last step has read only x_T; use ``h_n`` in your own
    module if you need both full summaries.)

    Args:
        batch_first: sequences are ``(N, T, F)`` (default) or ``(T, N, F)``.

    Shape:
        - Input: ``(N, T, F)``.  Output: ``(N, F)``.
    """

    def __init__(self, batch_first: bool = True):
        super().__init__()
        self.batch_first = bool(batch_first)

    def forward(self, x):
        if x.ndim != 3:
            raise self.shape_error("(N, T, F)" if self.batch_first else "(T, N, F)", x.shape)
        self._shape, self._dtype = x.shape, x.dtype
        return x[:, -1] if self.batch_first else x[-1]

    def backward(self, grad_output):
        xp = backend.xp_of(grad_output)
        g = xp.zeros(self._shape, dtype=grad_output.dtype)
        if self.batch_first:
            g[:, -1] = grad_output
        else:
            g[-1] = grad_output
        return g

    def extra_repr(self) -> str:
        return "" if self.batch_first else "batch_first=False"


class AllSteps(Module):
    """The identity. Kept only so that models saved before the recurrent layers returned one array
    (``Sequential(…, RNN, AllSteps, Linear)``) still load; new models need nothing between a recurrent
    layer and a per-step head."""

    def forward(self, x):
        return x

    def backward(self, grad_output):
        return grad_output

    def extra_repr(self) -> str:
        return ""


class SequenceLogLikelihood(Loss):
    """The log-likelihood cost with softmax outputs at every step of a sequence, averaged over all N·T steps:

        C = -(1/NT) Σ_n Σ_t ln softmax(z_{nt})_{y_{nt}},      δ_{nt} = (softmax(z_{nt}) - onehot(y_{nt})) / NT

    It is :class:`LogLikelihoodCost` on the logits reshaped to ``(N*T, K)``.

    Shape:
        - z: ``(N, T, K)`` logits; target: ``(N, T)`` integer labels. ``backward()`` returns ``(N, T, K)``.
    """

    def __init__(self):
        self._cost = LogLikelihoodCost()

    def forward(self, z, target) -> float:
        xp = backend.xp_of(z)
        target = xp.asarray(target)
        if z.ndim != 3 or tuple(target.shape) != tuple(z.shape[:2]):
            raise ShapeError(f"SequenceLogLikelihood: expected logits (N, T, K) and targets (N, T), "
                             f"got {tuple(z.shape)} and {tuple(target.shape)}")
        self._shape = z.shape
        return self._cost(z.reshape(-1, z.shape[2]), target.reshape(-1))

    def backward(self):
        return self._cost.backward().reshape(self._shape)

    def activation(self, z):
        return self._cost.activation(z)
