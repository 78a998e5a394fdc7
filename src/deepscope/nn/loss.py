"""Costs. Each takes the net's last pre-activations z^L (logits), applies its own output neuron, and
returns the mean cost over the mini-batch; ``backward()`` returns δ^L = ∂C/∂z^L (the book's BP1).

Fusing the output neuron into the cost is what makes it exact and stable: δ^L = a^L - y for
cross-entropy with sigmoid outputs and for log-likelihood with softmax outputs, with no 0/0 where a
saturates. With n examples in the batch and K outputs:

=====================  ===================================================  ==============================
cost                   C                                                    δ^L = ∂C/∂z^L
=====================  ===================================================  ==============================
QuadraticCost          (1/2n) Σ_x ‖a - y‖²,  a = σ(z)                        (a - y) ⊙ σ'(z) / n
CrossEntropyCost       -(1/n) Σ_x Σ_j [y_j ln a_j + (1-y_j) ln(1-a_j)], a=σ(z)   (a - y) / n
LogLikelihoodCost      -(1/n) Σ_x ln a_y,  a = softmax(z)                    (a - onehot(y)) / n
=====================  ===================================================  ==============================

Targets are integer class labels ``(N,)`` (turned into one-hot vectors y), or, for the quadratic and
cross-entropy costs, arrays ``(N, K)`` of target values.
"""
from __future__ import annotations

import numpy

from .. import backend, cpu, device
from ..errors import DataError, ShapeError
from .activation import log_softmax, sigmoid


class Loss:
    """Base of the costs: ``loss = cost(z, target)`` then ``delta = cost.backward()``."""

    def __call__(self, z, target) -> float:
        return self.forward(z, target)

    def __repr__(self):
        return f"{type(self).__name__}()"

    def _check(self, z, target, allow_dense: bool):
        """Validate shapes and labels; return target as a dense (N, K) array or integer labels (N,)."""
        name = type(self).__name__
        if z.ndim != 2:
            raise ShapeError(f"{name}: expected outputs of shape (N, K), got {tuple(z.shape)}")
        xp = backend.xp_of(z)
        target = xp.asarray(target)
        n, k = z.shape
        if target.ndim == 1:
            if target.shape[0] != n:
                raise ShapeError(f"{name}: {n} outputs but {target.shape[0]} labels")
            if target.dtype.kind not in "iu":
                raise DataError(f"{name}: labels must be integers, got dtype {target.dtype}")
            if n and not device.capturing.now():     # (a CUDA graph's recorder checks the labels itself)
                self.check_label_range(target, k)
            return target
        if not allow_dense:
            raise ShapeError(f"{name}: expected integer labels of shape ({n},), got {tuple(target.shape)}")
        if tuple(target.shape) != (n, k):
            raise ShapeError(f"{name}: targets of shape {tuple(target.shape)} do not match outputs {(n, k)}")
        return target.astype(z.dtype, copy=False)

    @staticmethod
    def _value(c):
        """The cost as a float on the CPU; on a GPU a 0-d device array (``float()`` reads it: a read waits for the
        GPU, so it is left to whoever needs the number)."""
        return float(c) if backend.xp_of(c) is numpy else c

    def check_label_range(self, labels, k: int) -> None:
        """Integer labels (any array module) must lie in 0..k-1: one read of the smallest and the largest, and a
        :class:`DataError` naming the one out of range."""
        xp = backend.xp_of(labels)
        lo, hi = (int(v) for v in backend.to_numpy(xp.stack([labels.min(), labels.max()])))
        if lo < 0 or hi >= k:
            raise self._out_of_range(hi if hi >= k else lo, k)

    def _out_of_range(self, label: int, k: int) -> DataError:
        return DataError(f"{type(self).__name__}: label {label} is out of range for {k} classes (0..{k - 1})")

    def _compiled(self, kernel, z, target):
        """The cost and δ = (output - y)/n in one compiled pass of ``kernel`` (``cpu.crossentropy`` or
        ``cpu.loglikelihood``), each label checked on the way; None where no kernel applies (the NumPy lines run)."""
        fast = kernel(z, target)
        if fast is None:
            return None
        loss, delta, bad = fast
        if bad >= 0:
            raise self._out_of_range(int(target[bad]), z.shape[1])
        return loss, delta

    @staticmethod
    def _onehot(labels, k, dtype):
        xp = backend.xp_of(labels)
        y = xp.zeros((labels.shape[0], k), dtype=dtype)
        y[xp.arange(labels.shape[0]), labels] = 1
        return y

    def _dense(self, z, target):
        t = self._check(z, target, allow_dense=True)
        return self._onehot(t, z.shape[1], z.dtype) if t.ndim == 1 else t


class QuadraticCost(Loss):
    """The book's quadratic cost C = (1/2n) Σ ‖y - a‖², with a = σ(z) (``output="sigmoid"``, default) or
    a = z (``output="linear"``)."""

    def __init__(self, output: str = "sigmoid"):
        if output not in ("sigmoid", "linear"):
            raise ValueError(f"QuadraticCost: output must be 'sigmoid' or 'linear', got {output!r}")
        self.output = output

    def forward(self, z, target) -> float:
        y = self._dense(z, target)
        a = sigmoid(z) if self.output == "sigmoid" else z
        self._a, self._y = a, y
        return self._value(0.5 * ((a - y) ** 2).sum() / z.shape[0])

    def backward(self):
        a, y = self._a, self._y
        delta = (a - y) / a.shape[0]
        return delta * a * (1 - a) if self.output == "sigmoid" else delta

    def activation(self, z):
        return sigmoid(z) if self.output == "sigmoid" else z


class CrossEntropyCost(Loss):
    """The book's cross-entropy cost for sigmoid output neurons, fused with the sigmoid (like PyTorch's
    ``BCEWithLogitsLoss`` summed over outputs): C = (1/n) Σ Σ_j [softplus(z_j) - y_j z_j], δ = (σ(z) - y)/n."""

    def forward(self, z, target) -> float:
        n = z.shape[0]
        fast = self._compiled(cpu.crossentropy, z, target)     # the lines below in one compiled pass
        if fast is not None:
            loss, self._delta = fast
        else:
            t = self._check(z, target, allow_dense=True)
            xp = backend.xp_of(z)
            # softplus(z) - y z = [max(z, 0) - y z] + ln(1 + e^{-|z|}): never overflows, and the bracket is exact
            # and ≥ 0 (0 for a confident right answer), so a small cost is not lost to cancellation
            e = xp.exp(-xp.abs(z))
            c = xp.maximum(z, 0)                            # becomes max(z, 0) - y z below
            a_minus_y = sigmoid(z, e)                       # becomes a - y below
            if t.ndim == 1:                                 # integer labels: y is one-hot, never built
                rows = xp.arange(z.shape[0])
                c[rows, t] -= z[rows, t]
                a_minus_y[rows, t] -= 1
            else:
                c -= t * z
                a_minus_y -= t
            loss = c.sum() + xp.log1p(e).sum()
            self._delta = a_minus_y / n                     # δ^L = (a - y)/n
        return self._value(loss / n)

    def backward(self):
        return self._delta

    def activation(self, z):
        return sigmoid(z)


class LogLikelihoodCost(Loss):
    """Softmax output neurons with the log-likelihood cost, fused and stable (PyTorch's ``CrossEntropyLoss``):
    C = -(1/n) Σ ln softmax(z)_y,  δ = (softmax(z) - onehot(y)) / n."""

    def forward(self, z, target) -> float:
        n = z.shape[0]
        fast = self._compiled(cpu.loglikelihood, z, target)    # the lines below in one compiled pass
        if fast is not None:
            loss, self._delta = fast
        else:
            labels = self._check(z, target, allow_dense=False)
            xp = backend.xp_of(z)
            rows = xp.arange(z.shape[0])
            logp = log_softmax(z)
            loss = -logp[rows, labels].sum()
            p_minus_y = xp.exp(logp)                        # becomes softmax(z) - onehot(y)
            p_minus_y[rows, labels] -= 1
            self._delta = p_minus_y / n                     # δ^L = (softmax(z) - onehot(y))/n
        return self._value(loss / n)

    def backward(self):
        return self._delta

    def activation(self, z):
        return backend.xp_of(z).exp(log_softmax(z))


COSTS = {"quadratic": QuadraticCost, "crossentropy": CrossEntropyCost, "loglikelihood": LogLikelihoodCost}

# One name per cost, the book's. PyTorch's ``CrossEntropyLoss`` is softmax + log-likelihood, while the book's
# "cross-entropy" is the sigmoid-output cost: on the same logits they differ (e.g. 1.414 vs 0.241), so
# deepscope does not offer the PyTorch name at all; asking for it says which class to use.
_NOT_OURS = {
    "CrossEntropyLoss": "deepscope has no CrossEntropyLoss: PyTorch's CrossEntropyLoss (softmax outputs, "
                        "log-likelihood) is LogLikelihoodCost; the book's cross-entropy for sigmoid outputs is "
                        "CrossEntropyCost (PyTorch's BCEWithLogitsLoss summed over outputs)",
}


def no_such_name(module: str, name: str) -> AttributeError:
    """The error for ``module.name``: the line saying what to use for a name deepscope avoids on purpose."""
    return AttributeError(_NOT_OURS.get(name, f"module {module!r} has no attribute {name!r}"))


def __getattr__(name):
    raise no_such_name(__name__, name)
