"""The basic recurrent network (Elman RNN), trained by backpropagation through time.

A recurrent layer reads a sequence x_1 … x_T one step at a time and keeps a state s_t that summarises
what it has seen. Unrolled in time it is a deep feedforward net with one layer per step, all steps
sharing the same weights, so everything the book says about deep nets (ch. 5) holds here too: the
gradient reaching step k from step t is multiplied by W^T diag f'(net_i) once for every step in
between, and it vanishes (or explodes) geometrically.

    forward     net_t = U x_t + W s_{t-1} + b            (U = weight_ih, W = weight_hh, b = b_ih + b_hh)
                s_t   = f(net_t),        s_0 = h0 (zeros by default)

    backward    δ_t   = ∂C/∂net_t = (∂C/∂s_t) ⊙ f'(net_t),
                ∂C/∂s_t = g_t + W^T δ_{t+1}                (g_t: the gradient arriving from above at step t)
                unrolled:  δ_k = δ_t ∏_{i=k+1}^{t} W^T diag f'(net_i)      (what reaches step k from step t)
                ∂C/∂W += Σ_t δ_t s_{t-1}^T      ∂C/∂U += Σ_t δ_t x_t^T      ∂C/∂b += Σ_t δ_t
                ∂C/∂x_t = U^T δ_t               ∂C/∂h0 = W^T δ_1

Stacked layers feed the states of layer k-1 as the inputs x_t of layer k. A bidirectional layer runs a
second, independent network from t = T down to 1 and concatenates the two states, [s_t^→, s_t^←].

The layer keeps PyTorch's ``torch.nn.RNN`` names, layouts and return values, so a state dict moves
between the two unchanged.

Using an RNN inside ``Sequential``: ``forward`` returns the pair ``(output, h_n)`` and ``backward``
accepts the matching pair ``(grad_output, grad_h_n)``. Put :class:`LastStep` after it to classify a
sequence from the last step's output (``Sequential(RNN(28, 128), LastStep(), Linear(128, 10))``), or
:class:`AllSteps` to keep every step for a per-step head (``Sequential(Embedding(65, 32), RNN(32, 256),
AllSteps(), Linear(256, 65))``, with :class:`SequenceLogLikelihood` as the cost).
"""
from __future__ import annotations

import math

import numpy

from .. import backend
from ..errors import ShapeError
from .activation import sigmoid
from .loss import LogLikelihoodCost, Loss
from .module import Module, Parameter

NONLINEARITIES = ("tanh", "relu", "sigmoid", "identity")
INITS = ("pytorch", "orthogonal", "irnn")


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


class RNN(Module):
    """A multi-layer Elman RNN, s_t = f(U x_t + W s_{t-1} + b), with BPTT written out.

    Args:
        input_size: features per step of the input, I.
        hidden_size: size of the state s_t, H.
        num_layers: stacked recurrent layers, L (default 1).
        nonlinearity: f, one of ``"tanh"`` (default), ``"relu"``, ``"sigmoid"``, ``"identity"``.
        bias: whether the layer has biases ``bias_ih`` and ``bias_hh`` (default True).
        batch_first: inputs and outputs are ``(N, T, ·)`` if True (default), ``(T, N, ·)`` if False.
            (PyTorch's default is False; deepscope's sequences are batch-first.)
        bidirectional: add a second network that reads the sequence backwards (D = 2).
        init: ``"pytorch"`` (default): every weight and bias ~ U(-1/√H, 1/√H), drawn from the global
            generator; ``"orthogonal"``: the same, but W a random orthogonal matrix (all its singular values
            1, so W^T neither shrinks nor grows δ on its own; Saxe et al. 2014); ``"irnn"`` (Le, Jaitly &
            Hinton 2015, for ``nonlinearity="relu"``): W = identity, biases 0, U ~ N(0, 0.001²).
        stateful: truncated BPTT. When True, a forward without ``h0`` starts from the last ``h_n`` (which
            carries no gradient: backward stops at the chunk's first step), so a long sequence can be fed in
            consecutive chunks. ``reset_state()`` starts over from zeros; a change of batch size does too.
            Passing ``h0 = previous h_n`` explicitly does the same thing.

    Shape:
        - x: ``(N, T, I)`` (``(T, N, I)`` if not batch_first).
        - h0: ``(L*D, N, H)``, optional (zeros).
        - output: ``(N, T, D*H)``, the last layer's states at every step (forward and backward
          directions concatenated).
        - h_n: ``(L*D, N, H)``, every layer's and direction's final state (for the backward direction, the
          state after reading x_1).

    ``backward(grad_output, grad_h_n=None)`` takes ∂C/∂output (or the pair ``(∂C/∂output, ∂C/∂h_n)``;
    either part may be None) and returns ∂C/∂x. It also stores:

    Attributes:
        weight_ih_l{k}[_reverse]: ``(H, I)`` for k = 0, ``(H, D*H)`` for k > 0 (U).
        weight_hh_l{k}[_reverse]: ``(H, H)`` (W).
        bias_ih_l{k}[_reverse], bias_hh_l{k}[_reverse]: ``(H,)``.
        grad_h0: ∂C/∂h0, ``(L*D, N, H)``, after backward.
        grad_states: after backward, a list with one array per layer and direction (index k*D + d), each
            ∂C/∂s_t for every step, ``(N, T, H)`` (``(T, N, H)`` if not batch_first), in time order. This
            is the total gradient reaching s_t — from the layer above and from s_{t+1} — the quantity
            whose norm shrinks as t moves away from the cost (the gradient-through-time instrument reads it).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = True, bidirectional: bool = False,
                 init: str = "pytorch", stateful: bool = False):
        super().__init__()
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"RNN: nonlinearity must be one of {', '.join(NONLINEARITIES)}, got {nonlinearity!r}")
        if init not in INITS:
            raise ValueError(f"RNN: init must be one of {', '.join(INITS)}, got {init!r}")
        if int(num_layers) < 1 or int(hidden_size) < 1 or int(input_size) < 1:
            raise ValueError("RNN: input_size, hidden_size and num_layers must be positive")
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.nonlinearity, self.bias, self.batch_first = nonlinearity, bool(bias), bool(batch_first)
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        self.stateful = bool(stateful)
        self._state = None
        H, dtype, rng = self.hidden_size, backend.default_dtype(), backend.rng()
        k = 1.0 / math.sqrt(H)
        # Parameters are drawn in PyTorch's order: per layer, per direction, w_ih, w_hh, b_ih, b_hh.
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else H * self.num_directions
            for suffix in self._suffixes(layer):
                if init in ("pytorch", "orthogonal"):
                    w_ih = rng.uniform(-k, k, (H, in_size))
                    w_hh = rng.uniform(-k, k, (H, H))
                    b_ih, b_hh = rng.uniform(-k, k, H), rng.uniform(-k, k, H)
                    if init == "orthogonal":
                        q, r = numpy.linalg.qr(rng.standard_normal((H, H)))
                        w_hh = q * numpy.sign(numpy.diag(r))     # uniformly distributed orthogonal matrix
                else:  # irnn
                    w_ih = rng.standard_normal((H, in_size)) * 0.001
                    w_hh = backend.xp().eye(H)
                    b_ih = b_hh = backend.xp().zeros(H)
                setattr(self, "weight_ih" + suffix, Parameter(backend.asarray(w_ih, dtype=dtype)))
                setattr(self, "weight_hh" + suffix, Parameter(backend.asarray(w_hh, dtype=dtype)))
                if self.bias:
                    setattr(self, "bias_ih" + suffix, Parameter(backend.asarray(b_ih, dtype=dtype)))
                    setattr(self, "bias_hh" + suffix, Parameter(backend.asarray(b_hh, dtype=dtype)))

    def _suffixes(self, layer):
        return [f"_l{layer}", f"_l{layer}_reverse"][: self.num_directions]

    def reset_state(self) -> None:
        """Forget the carried state (stateful mode): the next forward starts from zeros."""
        self._state = None

    # -- forward -----------------------------------------------------------------------------------
    def forward(self, x, h0=None):
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
        if h0 is None and self.stateful and self._state is not None and self._state.shape[1] == N:
            h0 = self._state
        if h0 is None:
            h0 = xp.zeros((L * D, N, H), dtype=dtype)
        elif tuple(h0.shape) != (L * D, N, H):
            raise ShapeError(f"{self.describe()}: expected h0 of shape {(L * D, N, H)}, got {tuple(h0.shape)}")
        h0 = h0.astype(dtype, copy=False)

        # Cached for backward. Per layer: its input (T, N, I_k); per layer and direction: the states
        # S (T+1, N, H) and the input in that direction's reading order as one (T*N, I_k) matrix.
        self._inputs, self._states, self._seqs = [], [], []
        h_n = xp.empty((L * D, N, H), dtype=dtype)
        layer_in = xt
        for layer in range(L):
            self._inputs.append(layer_in)
            outs = []
            for d, suffix in enumerate(self._suffixes(layer)):
                seq = layer_in if d == 0 else layer_in[::-1]      # the order this direction reads in
                seq2 = seq.reshape(T * N, -1)                     # (a copy unless already contiguous)
                S = self._run(seq2, h0[layer * D + d], suffix)
                self._states.append(S)
                self._seqs.append(seq2)
                h_n[layer * D + d] = S[-1]
                outs.append(S[1:] if d == 0 else S[:0:-1])        # back in time order
            layer_in = outs[0] if D == 1 else xp.concatenate(outs, axis=2)
        output = layer_in.transpose(1, 0, 2) if self.batch_first else layer_in
        output = xp.ascontiguousarray(output)
        if self.stateful:
            self._state = h_n.copy()
        return output, h_n

    def _run(self, seq2, h0, suffix):
        """One layer, one direction: states S[0] = h0, S[t] = f(U x_t + W S[t-1] + b) for t = 1..T, where
        ``seq2`` holds x_1..x_T stacked as a (T*N, I) matrix."""
        xp = backend.xp_of(seq2)
        N = h0.shape[0]
        T = seq2.shape[0] // N
        U, W = getattr(self, "weight_ih" + suffix).data, getattr(self, "weight_hh" + suffix).data
        # U x_t for every step in one GEMM (plus both biases); only W s_{t-1} is left for the loop.
        net = (seq2 @ U.T).reshape(T, N, -1)
        if self.bias:
            net += getattr(self, "bias_ih" + suffix).data + getattr(self, "bias_hh" + suffix).data
        S = xp.empty((T + 1,) + h0.shape, dtype=net.dtype)
        S[0] = h0
        Wt = W.T
        buf = xp.empty_like(h0)
        for t in range(T):
            xp.matmul(S[t], Wt, out=buf)
            net[t] += buf                                       # net_t = U x_t + W s_{t-1} + b
            _f(self.nonlinearity, net[t], S[t + 1])             # s_t = f(net_t)
        return S

    # -- backward ----------------------------------------------------------------------------------
    def backward(self, grad_output, grad_h_n=None):
        if isinstance(grad_output, tuple):
            grad_output, grad_h_n = grad_output
        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        S0 = self._states[0]
        T, N = S0.shape[0] - 1, S0.shape[1]
        xp = backend.xp_of(S0)
        out_shape = (N, T, D * H) if self.batch_first else (T, N, D * H)
        if grad_output is None:
            g = xp.zeros((T, N, D * H), dtype=S0.dtype)
        else:
            if tuple(grad_output.shape) != out_shape:
                raise ShapeError(f"{self.describe()}: expected grad_output of shape {out_shape}, "
                                 f"got {tuple(grad_output.shape)}")
            g = grad_output.transpose(1, 0, 2) if self.batch_first else grad_output
        if grad_h_n is not None and tuple(grad_h_n.shape) != (L * D, N, H):
            raise ShapeError(f"{self.describe()}: expected grad_h_n of shape {(L * D, N, H)}, "
                             f"got {tuple(grad_h_n.shape)}")

        self.grad_h0 = xp.empty((L * D, N, H), dtype=S0.dtype)
        self.grad_states = [None] * (L * D)
        for layer in reversed(range(L)):
            x = self._inputs[layer]
            grad_x = xp.zeros(x.shape, dtype=S0.dtype)
            for d, suffix in enumerate(self._suffixes(layer)):
                k = layer * D + d
                gd = g[:, :, d * H:(d + 1) * H]
                # ∂C/∂s_t from above, in this direction's reading order (a fresh copy: it is written to).
                G = xp.array(gd if d == 0 else gd[::-1], copy=True)
                if grad_h_n is not None:
                    G[-1] += grad_h_n[k]                            # h_n is the last state read
                delta, self.grad_h0[k] = self._bptt(G, self._seqs[k], self._states[k], suffix)
                gx = delta.reshape(T * N, H) @ getattr(self, "weight_ih" + suffix).data   # ∂C/∂x_t = U^T δ_t
                gx = gx.reshape(T, N, -1)
                if d == 0:
                    grad_x += gx
                else:
                    grad_x += gx[::-1]
                gs = G if d == 0 else G[::-1]                       # G now holds ∂C/∂s_t
                self.grad_states[k] = xp.ascontiguousarray(gs.transpose(1, 0, 2) if self.batch_first else gs)
            g = grad_x
        return xp.ascontiguousarray(g.transpose(1, 0, 2)) if self.batch_first else g

    def _bptt(self, G, seq2, S, suffix):
        """Backpropagation through time for one layer and direction.

        G: (T, N, H) gradient from above at each step, turned in place into ∂C/∂s_t. Returns δ (T, N, H)
        and ∂C/∂h0 = W^T δ_1, and accumulates the parameter gradients.
        """
        xp = backend.xp_of(G)
        T, N, H = G.shape
        w_ih, w_hh = getattr(self, "weight_ih" + suffix), getattr(self, "weight_hh" + suffix)
        W = w_hh.data
        fp = _f_prime(self.nonlinearity, S[1:])                    # f'(net_t) for every step at once
        delta = xp.empty_like(G) if fp is not None else G
        carry = xp.empty_like(G[0])                                # W^T δ_{t+1}
        for t in reversed(range(T)):
            if t < T - 1:
                G[t] += carry                                      # ∂C/∂s_t = g_t + W^T δ_{t+1}
            if fp is not None:
                xp.multiply(G[t], fp[t], out=delta[t])             # δ_t = ∂C/∂s_t ⊙ f'(net_t)
            xp.matmul(delta[t], W, out=carry)
        # Parameter gradients as one GEMM each, over all steps stacked.
        d2 = delta.reshape(T * N, H)
        w_hh.grad += d2.T @ S[:-1].reshape(T * N, H)               # Σ_t δ_t s_{t-1}^T
        w_ih.grad += d2.T @ seq2                                   # Σ_t δ_t x_t^T
        if self.bias:
            db = d2.sum(axis=0)
            getattr(self, "bias_ih" + suffix).grad += db
            getattr(self, "bias_hh" + suffix).grad += db
        return delta, carry

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.nonlinearity != "tanh":
            s += f", nonlinearity={self.nonlinearity!r}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if not self.batch_first:
            s += ", batch_first=False"
        return s


class LastStep(Module):
    """Selects the last time step of a sequence, so an :class:`RNN` can classify inside ``Sequential``.

    Takes an RNN's ``(output, h_n)`` pair (or a plain sequence array) and returns ``output[:, -1]``.
    Backward puts the gradient at the last step and zeros elsewhere, and hands the RNN the pair
    ``(∂C/∂output, None)``. (For a bidirectional RNN, the backward direction's part of the last step has
    read only x_T; use h_n in your own code if you need both full summaries.)

    Args:
        batch_first: sequences are ``(N, T, F)`` (default) or ``(T, N, F)``.

    Shape:
        - Input: ``(N, T, F)`` or the pair ``((N, T, F), h_n)``.  Output: ``(N, F)``.
    """

    def __init__(self, batch_first: bool = True):
        super().__init__()
        self.batch_first = bool(batch_first)

    def forward(self, x):
        self._pair = isinstance(x, tuple)
        seq = x[0] if self._pair else x
        if seq.ndim != 3:
            raise self.shape_error("(N, T, F)" if self.batch_first else "(T, N, F)", seq.shape)
        self._shape, self._dtype = seq.shape, seq.dtype
        return seq[:, -1] if self.batch_first else seq[-1]

    def backward(self, grad_output):
        xp = backend.xp_of(grad_output)
        g = xp.zeros(self._shape, dtype=grad_output.dtype)
        if self.batch_first:
            g[:, -1] = grad_output
        else:
            g[-1] = grad_output
        return (g, None) if self._pair else g

    def extra_repr(self) -> str:
        return "" if self.batch_first else "batch_first=False"


class AllSteps(Module):
    """Keeps every step of an RNN's output: takes the pair ``(output, h_n)`` and returns ``output``, so a
    per-step head (``Linear`` accepts ``(N, T, F)``) can follow the RNN inside ``Sequential``.

    Shape:
        - Input: the pair ``((N, T, F), h_n)`` or an array ``(N, T, F)``.  Output: ``(N, T, F)``.
    """

    def forward(self, x):
        self._pair = isinstance(x, tuple)
        return x[0] if self._pair else x

    def backward(self, grad_output):
        return (grad_output, None) if self._pair else grad_output

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
