"""Dropout (chapter 3 and chapter 6 of the book): during training, each activation is deleted — set to 0 —
with probability p, independently for every example and every mini-batch, so no neuron can rely on the
presence of particular others.

Two conventions give the same expected activations:

    inverted (default, PyTorch's)  train  y = x ⊙ m / (1 - p)      eval  y = x
    network3 (scale_at_test=True)  train  y = x ⊙ m                eval  y = (1 - p) x

with m_i ~ Bernoulli(1 - p) drawn afresh on every forward. The book's network3.py uses the second: it
trains with the plain mask and multiplies the weights (here, equivalently, the inputs of the next layer)
by 1 - p at test time. Backward uses the same mask as the forward it follows:

    train  ∂C/∂x = ∂C/∂y ⊙ m / (1 - p)   (inverted)     or   ∂C/∂y ⊙ m   (network3)
    eval   ∂C/∂x = ∂C/∂y                  (inverted)     or   (1 - p) ∂C/∂y (network3)

The masks come from the seeded generator of the device x lives on (``backend.rng_for``), so
``deepscope.manual_seed`` reproduces them.
"""
from __future__ import annotations

from .. import backend, cpu
from .module import Module


class Dropout(Module):
    """Randomly zero activations with probability ``p`` while training.

    Args:
        p: probability of dropping each activation, 0 <= p < 1 (default 0.5).
        scale_at_test: ``False`` (default): inverted dropout — survivors are scaled by 1/(1-p) during training
            and evaluation is the identity (PyTorch's ``nn.Dropout``). ``True``: the book's network3
            convention — no scaling during training, activations multiplied by (1-p) in evaluation.

    Shape:
        - Input: any ``(N, *)``.  Output: the same shape.
    """

    def __init__(self, p: float = 0.5, scale_at_test: bool = False):
        super().__init__()
        p = float(p)
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must satisfy 0 <= p < 1, got {p}")
        self.p, self.scale_at_test = p, bool(scale_at_test)
        self._mask = None

    def forward(self, x):
        xp = backend.xp_of(x)
        if not self.training or self.p == 0.0:
            self._mask = None
            self._scale = (1.0 - self.p) if self.scale_at_test else 1.0
            return x * self._scale if self._scale != 1.0 else x
        # m_i ~ Bernoulli(1 - p), drawn where x lives from the seeded generator (reproducible), with the
        # training scale folded in so that forward and backward are each one multiplication.
        rng = backend.rng_for(xp)
        scale = 1.0 if self.scale_at_test else 1.0 / (1.0 - self.p)
        fast = cpu.dropout(x, rng, self.p, scale)   # the same u, mask and product, drawn and computed on the CPU's threads
        if fast is not None:
            out, self._mask = fast
            return out
        u = rng.random(x.shape, dtype="float32")
        keep = u >= self.p
        mask = xp.asarray(keep, dtype=x.dtype)
        if scale != 1.0:
            mask *= scale
        self._mask = mask
        return x * mask

    def backward(self, grad_output):
        if self._mask is None:
            return grad_output * self._scale if self._scale != 1.0 else grad_output
        fast = cpu.masked(grad_output, self._mask)
        return grad_output * self._mask if fast is None else fast

    def extra_repr(self) -> str:
        return f"p={self.p}" + (", scale_at_test=True" if self.scale_at_test else "")
