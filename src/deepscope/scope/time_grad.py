"""Gradient through time: how ‖∂C/∂s_(T-k)‖ falls (or grows) with the distance k from the cost in a fresh RNN.

An RNN unrolled in time is a deep net with one layer per step and shared weights, so the book's ch. 5
argument applies: the gradient reaching state s_(T-k) from a cost on the last step is multiplied k times
by Wᵀ diag f'(net), and vanishes (or explodes) geometrically in k.

The experiment: a fresh ``RNN(28, H)`` reads T steps of random N(0, 1) inputs; a fresh ``Linear(H, 10)`` on
the last state feeds the log-likelihood cost (random labels). One backward pass, then the RNN's
``grad_states`` (∂C/∂s_t at every step, the total gradient reaching s_t) gives ‖∂C/∂s_(T-k)‖ (the norm over
the batch and the units) for k = 0 … T-1. Three networks:

    tanh           f = tanh, PyTorch's init U(-1/√H, 1/√H): f' ≤ 1 and a small W — the gradient vanishes
    relu           f = ReLU, the same init
    relu-identity  f = ReLU, W = identity, biases 0 (IRNN, Le et al. 2015): the gradient is carried intact
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import backend, nn
from ..figures import plot_time

CONFIGS = (("tanh", "tanh", "pytorch"), ("relu", "relu", "pytorch"), ("relu-identity", "relu", "irnn"))


def state_gradient_norms(nonlinearity: str, init: str, steps: int = 30, hidden: int = 100, batch: int = 32,
                         input_size: int = 28, seed: int = 0) -> np.ndarray:
    """‖∂C/∂s_(T-k)‖ for k = 0 … T-1 (index k), for one fresh RNN and one random batch."""
    backend.manual_seed(seed)
    model = nn.Sequential(nn.RNN(input_size, hidden, nonlinearity=nonlinearity, init=init), nn.LastStep(),
                          nn.Linear(hidden, 10))
    rng = np.random.default_rng(seed)
    x = backend.asarray(rng.standard_normal((batch, steps, input_size)), dtype=backend.default_dtype())
    y = backend.asarray(rng.integers(0, 10, batch))
    cost = nn.LogLikelihoodCost()
    cost(model(x), y)
    model.zero_grad()
    model.backward(cost.backward())
    gs = backend.to_numpy(model[0].grad_states[0]).astype(np.float64)   # (N, T, H), time order
    return np.sqrt((gs ** 2).sum(axis=(0, 2)))[::-1].copy()            # index k = T-1-t


def run_time(steps: int = 30, hidden: int = 100, batch: int = 32, seed: int = 0, out=None, progress=True) -> dict:
    """All three networks; prints a table, writes ``time.json`` and ``time.png`` to ``out``."""
    results = {name: state_gradient_norms(f, init, steps, hidden, batch, seed=seed).tolist()
               for name, f, init in CONFIGS}
    if progress:
        ks = sorted({k for k in (0, 1, 2, 5, 10, 20, 50, 100, steps - 1) if k < steps})
        print(f"‖∂C/∂s_(T-k)‖ in a fresh RNN(28, {hidden}), T = {steps}, batch {batch}, cost on the last step:")
        print(f"{'k':>5} " + " ".join(f"{name:>14}" for name in results))
        for k in ks:
            print(f"{k:>5} " + " ".join(f"{v[k]:14.4g}" for v in results.values()))
        for name, v in results.items():
            print(f"{name}: ‖∂C/∂s_(T-{steps - 1})‖ / ‖∂C/∂s_T‖ = {v[-1] / v[0]:.3g}")
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "time.json", "w") as f:
            json.dump({"steps": steps, "hidden": hidden, "batch": batch, "seed": seed, "norms": results}, f, indent=2)
        plot_time(results, out / "time.png", hidden)
        if progress:
            print(f"figure: {out / 'time.png'}")
    return results
