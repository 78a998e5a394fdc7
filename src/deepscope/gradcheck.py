"""Finite-difference gradient checking: the one checker every layer's test calls (Chainer's check_backward).

``check_module(module, x)`` compares, in float64, the gradients that ``module.backward`` produces — with
respect to the input and to every parameter — with central differences

    ∂L/∂θ_i ≈ (L(θ + h e_i) - L(θ - h e_i)) / 2h,

where L = Σ (forward(x) ⊙ r) for a fixed random r, so every output element contributes.
"""
from __future__ import annotations

import numpy as np

from . import backend


def numerical_grad(f, array, h: float = 1e-6, max_entries: int | None = None, rng=None):
    """Central-difference gradient of the scalar ``f()`` with respect to ``array`` (changed in place and
    restored). With ``max_entries``, only that many randomly chosen entries are probed (others are NaN).
    ``array`` may have any memory layout (entries are reached through ``array.flat``, never a reshaped copy)."""
    grad = np.full(array.shape, np.nan)
    flat = array.flat
    idx = np.arange(array.size)
    if max_entries is not None and array.size > max_entries:
        idx = (rng or np.random.default_rng(0)).choice(array.size, max_entries, replace=False)
    gflat = grad.reshape(-1)
    for i in idx:
        old = flat[i].copy()
        flat[i] = old + h
        fp = f()
        flat[i] = old - h
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * h)
    return grad


def check_module(module, *inputs, rtol: float = 1e-6, atol: float = 1e-8, max_entries: int = 200,
                 seed: int = 0, forward=None):
    """Check ``module``'s backward against central differences in float64. Raises AssertionError on a
    mismatch, naming the tensor. Float ``inputs`` are cast to float64 (integer ones, e.g. an Embedding's
    indices, are kept and have no gradient); the module is cast to float64. The input gradient is checked
    for the first input, unless ``backward`` returns None for it (``needs_input_grad = False``, Embedding).

    ``forward`` (optional) maps the module's output to the array that is weighted by r (e.g. to select
    one element of a tuple output). Returns the analytical gradients, for further checks.
    """
    module.to("float64")
    xs = [np.array(x) if np.asarray(x).dtype.kind in "iub" else np.array(x, dtype=np.float64)
          for x in map(backend.to_numpy, inputs)]
    rng = np.random.default_rng(seed)
    pick = forward or (lambda out: out)
    out = pick(module(*xs))
    r = rng.standard_normal(out.shape)

    def loss():
        return float((pick(module(*xs)) * r).sum())

    module.zero_grad()
    out = pick(module(*xs))
    grad_x = module.backward(r)
    analytic = {"input": grad_x}
    for name, p in module.named_parameters():
        analytic[name] = p.grad.copy()

    numeric = {}
    if grad_x is not None:
        numeric["input"] = numerical_grad(loss, xs[0], max_entries=max_entries, rng=rng)
    for name, p in module.named_parameters():
        numeric[name] = numerical_grad(loss, p.data, max_entries=max_entries, rng=rng)

    for name in numeric:
        a, n = np.asarray(analytic[name]), numeric[name]
        mask = ~np.isnan(n)
        if not np.allclose(a[mask], n[mask], rtol=rtol, atol=atol):
            err = np.max(np.abs(a[mask] - n[mask]))
            raise AssertionError(f"{type(module).__name__}: gradient of {name} differs from finite "
                                 f"differences by up to {err:.3e}")
    return analytic


def check_loss(cost, z, target, rtol: float = 1e-6, atol: float = 1e-9):
    """Check a cost's δ = ∂C/∂z against central differences in float64."""
    z = np.array(z, dtype=np.float64)
    cost(z, target)
    delta = cost.backward()
    numeric = numerical_grad(lambda: cost(z, target), z)
    if not np.allclose(delta, numeric, rtol=rtol, atol=atol):
        raise AssertionError(f"{type(cost).__name__}: δ differs from finite differences by up to "
                             f"{np.max(np.abs(delta - numeric)):.3e}")
    return delta
