"""Activation functions: the neuron's σ in a = σ(z).

Each layer caches what its derivative needs and multiplies the incoming gradient by σ'(z) on the way back,
the ``⊙ σ'(z^l)`` of the book's BP1 and BP2:

    Sigmoid   a = 1/(1+e^{-z})        ∂C/∂z = ∂C/∂a ⊙ a(1-a)
    Tanh      a = tanh z              ∂C/∂z = ∂C/∂a ⊙ (1-a²)
    ReLU      a = max(0, z)           ∂C/∂z = ∂C/∂a ⊙ [z > 0]
    Identity  a = z                   ∂C/∂z = ∂C/∂a
    Softmax   a_j = e^{z_j}/Σ_k e^{z_k}      ∂C/∂z = a ⊙ (g - Σ_j g_j a_j),   g = ∂C/∂a
    LogSoftmax  a_j = z_j - log Σ_k e^{z_k}  ∂C/∂z = g - softmax(z) Σ_j g_j

Shape: any input ``(N, *)``; the output has the same shape. Softmax and LogSoftmax act on the last axis.
"""
from __future__ import annotations

from .. import backend, cpu
from .module import Module


def sigmoid(z, e=None):
    """σ(z) = 1/(1+e^{-z}), computed without overflow for any z: with e = e^{-|z|} ≤ 1 (pass it if you
    have it), σ(z) = 1/(1+e) for z ≥ 0 and e/(1+e) for z < 0 — both exact to the last bit in the tails."""
    xp = backend.xp_of(z)
    if e is None:
        fast = cpu.sigmoid(z)             # the same, in one pass on the CPU's threads (None: not a NumPy float)
        if fast is not None:
            return fast
        e = xp.exp(-xp.abs(z))
    r = 1.0 / (1.0 + e)
    out = xp.multiply(e, r, out=xp.empty_like(r))
    xp.copyto(out, r, where=z >= 0)
    return out


def sigmoid_backward(grad_output, a):
    """∂C/∂z = ∂C/∂a ⊙ σ'(z) with σ'(z) = a(1-a), from the sigmoid's output a."""
    fast = cpu.sigmoid_backward(grad_output, a)
    return grad_output * a * (1.0 - a) if fast is None else fast


def log_softmax(z, axis=-1):
    """log softmax(z) along ``axis``, stable (the largest z is subtracted first)."""
    xp = backend.xp_of(z)
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


def softmax(z, axis=-1):
    xp = backend.xp_of(z)
    e = xp.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class Sigmoid(Module):
    """The sigmoid neuron of the book, a = σ(z) = 1/(1+e^{-z}); σ'(z) = a(1-a) ≤ 1/4."""

    def forward(self, z):
        self._a = sigmoid(z)
        return self._a

    def backward(self, grad_output):
        return sigmoid_backward(grad_output, self._a)


class Tanh(Module):
    """a = tanh(z); σ'(z) = 1 - a²."""

    def forward(self, z):
        self._a = backend.xp_of(z).tanh(z)
        return self._a

    def backward(self, grad_output):
        fast = cpu.tanh_backward(grad_output, self._a)
        return grad_output * (1.0 - self._a * self._a) if fast is None else fast


class ReLU(Module):
    """Rectified linear unit, a = max(0, z); σ'(z) = 1 where z > 0, else 0."""

    def forward(self, z):
        fast = cpu.relu(z)                # the same two lines, in one pass on the CPU's threads
        if fast is not None:
            a, self._mask = fast
            return a
        self._mask = z > 0
        return z * self._mask

    def backward(self, grad_output):
        fast = cpu.masked(grad_output, self._mask)
        return grad_output * self._mask if fast is None else fast


class Identity(Module):
    """a = z (the ``linear`` neuron of network3)."""

    def forward(self, z):
        return z

    def backward(self, grad_output):
        return grad_output


class Softmax(Module):
    """Softmax over the last axis: a_j = e^{z_j} / Σ_k e^{z_k}."""

    def forward(self, z):
        self._a = softmax(z)
        return self._a

    def backward(self, grad_output):
        a = self._a
        return a * (grad_output - (grad_output * a).sum(axis=-1, keepdims=True))


class LogSoftmax(Module):
    """log-softmax over the last axis: a_j = z_j - log Σ_k e^{z_k}."""

    def forward(self, z):
        self._a = log_softmax(z)
        return self._a

    def backward(self, grad_output):
        xp = backend.xp_of(grad_output)
        return grad_output - xp.exp(self._a) * grad_output.sum(axis=-1, keepdims=True)


# -- the one activation registry: every name a user can write for a neuron (arch strings, network3's
# activation_fn, the CLI's --activation, the instruments) is looked up here and nowhere else.
ACTIVATIONS = {"sigmoid": Sigmoid, "tanh": Tanh, "relu": ReLU, "linear": Identity}
"""The neuron of a hidden layer by name (``"linear"``, network3's name, is the Identity neuron)."""
ALIASES = {"identity": "linear"}


def activation(name: str) -> Module:
    """A new activation layer from its name (``"sigmoid"``, ``"tanh"``, ``"relu"``, ``"linear"``)."""
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}: expected one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[key]()


def activation_name(module) -> str | None:
    """The registry name of an activation layer (``"sigmoid"`` for a :class:`Sigmoid`), None for any other."""
    for name, cls in ACTIVATIONS.items():
        if type(module) is cls:
            return name
    return None
