"""Fully connected layer and Flatten.

Linear is the book's layer of neurons without its activation: every output neuron j sees every input k,

    forward    z_j = Σ_k w_{jk} a_k + b_j                  z = a Wᵀ + b        (the book's z^l = w^l a^{l-1} + b^l)
    backward   ∂C/∂b_j = Σ_n δ_{nj}                         b.grad += Σ_n δ      (BP3)
               ∂C/∂w_{jk} = Σ_n δ_{nj} a_{nk}               W.grad += δᵀ a       (BP4)
               ∂C/∂a_k = Σ_j w_{jk} δ_j                     returns δ W          (BP2, before σ')

where δ = ∂C/∂z is the gradient that arrives from above, one row per example.
"""
from __future__ import annotations

from .. import backend, cpu
from . import init as _init
from .module import Module, Parameter


class Linear(Module):
    """A fully connected layer, ``z = x Wᵀ + b``.

    Args:
        in_features: size of each input (n_in).
        out_features: number of neurons (n_out).
        bias: whether the layer has biases (default True).
        init: initialisation scheme, one of ``"book"`` (default: W ~ N(0, 1/n_in), b ~ N(0, 1)),
            ``"large"``, ``"xavier"``, ``"he"``, ``"zeros"`` (see ``deepscope.nn.init``).

    Shape:
        - Input: ``(N, in_features)`` or ``(N, *, in_features)``.
        - Output: ``(N, out_features)`` or ``(N, *, out_features)``.

    Attributes:
        weight: ``(out_features, in_features)`` — PyTorch's layout; row j holds neuron j's weights.
        bias: ``(out_features,)``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, init: str = "book"):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        if self.in_features < 1 or self.out_features < 1:
            raise ValueError(f"Linear: in_features and out_features must be positive, got {in_features}, {out_features}")
        w, b = _init.initialize((out_features, in_features), (out_features,), in_features, out_features, init)
        self.weight = Parameter(w)
        self.bias = Parameter(b) if bias else None

    def forward(self, x):
        if x.ndim < 2 or x.shape[-1] != self.in_features:
            raise self.shape_error(f"(N, {self.in_features})", x.shape)
        self._lead = lead = x.shape[:-1]
        if x.ndim > 2:
            x = x.reshape(-1, self.in_features)
        weight = self.weight.data
        if x.dtype != weight.dtype:
            x = x.astype(weight.dtype)
        self._x = x  # cached for ∂C/∂W = δᵀ a
        bias = self.bias
        z = cpu.linear(x, weight, None if bias is None else bias.data)       # z = x Wᵀ + b, on the CPU's threads
        return z if len(lead) == 1 else z.reshape(*lead, self.out_features)

    def backward(self, grad_output):
        delta = grad_output if grad_output.ndim == 2 else grad_output.reshape(-1, self.out_features)
        bias = self.bias
        # BP4: W.grad += δᵀ a,  BP3: b.grad += Σ_n δ,  BP2: ∂C/∂a = δ W (σ' is the activation's job), on the CPU's threads
        grad_input = cpu.linear_backward(delta, self._x, self.weight.data, self.weight.grad,
                                         None if bias is None else bias.grad, input_grad=self._needs_input_grad)
        if grad_input is None:                                   # the first layer: nobody reads ∂C/∂x
            return None
        return grad_input if len(self._lead) == 1 else grad_input.reshape(*self._lead, self.in_features)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}"


class Flatten(Module):
    """Flattens every dimension after the first: ``(N, C, H, W) -> (N, C*H*W)``.

    Shape:
        - Input: ``(N, *)``.  Output: ``(N, prod(*))``.
    """

    def forward(self, x):
        if x.ndim < 1:
            raise self.shape_error("(N, *)", x.shape)
        self._shape = x.shape
        # the input's axes from the outermost in memory (None: row-major), e.g. (1, 0, 2, 3) for a conv's output
        self._memory_order = None if x.flags.c_contiguous else \
            tuple(sorted(range(x.ndim), key=lambda i: -x.strides[i]))
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_output):
        grad_input = grad_output.reshape(self._shape)
        if self._memory_order is None:
            return grad_input
        # ∂C/∂x laid out in memory as x was, so that the layers below read it in the order they wrote their outputs
        xp = backend.xp_of(grad_output)
        order = self._memory_order
        out = xp.empty([self._shape[i] for i in order], dtype=grad_output.dtype)
        out = out.transpose([order.index(i) for i in range(len(order))])          # x's shape, x's memory order
        out[...] = grad_input
        return out

    def extra_repr(self) -> str:
        return ""
