"""Gradient through time: how ‖∂C/∂h_(T-k)‖ falls with the distance k from the cost, in an RNN, an LSTM and a
GRU, fresh and after training on row-by-row MNIST.

An RNN unrolled in time is a deep net with one layer per step and shared weights, so the book's ch. 5
argument applies: the gradient reaching state h_(T-k) from a cost on the last step is multiplied k times by
Wᵀ diag f'(net), and vanishes (or explodes) geometrically in k. The LSTM's cell and the GRU's state are
carried by an additive path whose factor per step is a gate (f_t, z_t) the net can hold near 1.

The experiment: each net ``cell(28, H) -> LastStep -> Linear(H, 10)`` reads a batch of MNIST images row by
row (T = 28, standardised pixels), the log-likelihood cost sits on the last step; one backward pass, then the
recurrent layer's ``grad_states`` (∂C/∂h_t at every step, the total gradient reaching h_t) gives
‖∂C/∂h_(T-k)‖ (the norm over the batch and the units) for k = 0 … T-1. It is measured on the fresh net and
again after ``train_steps`` steps of Adam on the training images (the same held-out batch both times), with
the fraction of saturated gate activations (σ < 0.01 or > 0.99, |tanh| > 0.99: σ' or tanh' is tiny there;
for the forget and update gates, saturation at 1 is what keeps the memory) and the validation accuracy.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .. import backend, nn, optim
from ..figures import plot_time
from ..scope.speed import gate_saturation
from ..train import evaluate, step
from .mnist import as_rows, recurrent_layer

# name -> (cell, nonlinearity, init)
NETS = {"rnn": ("rnn", "tanh", "orthogonal"), "lstm": ("lstm", "tanh", "pytorch"), "gru": ("gru", "tanh", "pytorch")}


def time_model(name: str, hidden: int = 128, input_size: int = 28):
    """``cell(input_size, hidden) -> LastStep -> Linear(hidden, 10)`` for a name of :data:`NETS`."""
    cell, f, init = NETS[name]
    return nn.Sequential(recurrent_layer(cell, input_size, hidden, nonlinearity=f, init=init), nn.LastStep(),
                         nn.Linear(hidden, 10, init="xavier"))


def state_gradient_norms(model, x, y) -> np.ndarray:
    """‖∂C/∂h_(T-k)‖ for k = 0 … T-1 (index k) of the recurrent layer ``model[0]``, the cost on the last step."""
    cost = nn.LogLikelihoodCost()
    model.train()
    cost(model(x), y)
    model.zero_grad()
    model.backward(cost.backward())
    model.zero_grad()
    gs = backend.to_numpy(model[0].grad_states[0]).astype(np.float64)   # (N, T, H), time order
    return np.sqrt((gs ** 2).sum(axis=(0, 2)))[::-1].copy()            # index k = T-1-t


def run_time(data, names=("rnn", "lstm", "gru"), hidden: int = 128, batch: int = 64, train_steps: int = 500,
             lr: float = 2e-3, seed: int = 0, out=None, progress=True) -> dict:
    """Every net of ``names``: gradient norms and gate saturation fresh and after ``train_steps`` Adam steps on
    ``data`` (a :func:`deepscope.data.load_mnist` result); prints a table, writes ``time.json`` and ``time.png``
    (and ``time-trained.png``) to ``out``."""
    dt = backend.default_dtype()
    X = backend.asarray(as_rows(data.train[0], normalize=True), dtype=dt)
    y = backend.asarray(data.train[1])
    Xv = backend.asarray(as_rows(data.validation[0], normalize=True), dtype=dt)
    yv = backend.asarray(data.validation[1])
    probe = (Xv[:batch], yv[:batch])
    results = {}
    for name in names:
        backend.manual_seed(seed)
        model = time_model(name, hidden)
        fresh = state_gradient_norms(model, *probe)
        sat_fresh = gate_saturation(model[0])
        opt = optim.Adam(model.parameters(), lr=lr, clip_norm=1.0)
        cost = nn.LogLikelihoodCost()
        rng = np.random.default_rng(seed)
        model.needs_input_grad = False     # the rows are data: no ∂C/∂x while training (as fit does)
        for _ in range(train_steps):
            idx = rng.integers(0, len(X), batch)
            step(model, cost, opt, X[idx], y[idx])
        model.needs_input_grad = True
        trained = state_gradient_norms(model, *probe)
        sat_trained = gate_saturation(model[0])
        model.eval()
        acc = evaluate(model, Xv, yv)
        results[name] = {"fresh": fresh.tolist(), "trained": trained.tolist(), "saturation_fresh": sat_fresh,
                         "saturation_trained": sat_trained, "val_acc": acc,
                         "ratio_fresh": float(fresh[-1] / fresh[0]), "ratio_trained": float(trained[-1] / trained[0])}
        if progress:
            T = len(fresh)
            print(f"{name:5s} ‖∂C/∂h_(T-{T - 1})‖/‖∂C/∂h_T‖: fresh {results[name]['ratio_fresh']:.3g}, after "
                  f"{train_steps} steps {results[name]['ratio_trained']:.3g} (validation accuracy {acc:.2%}); "
                  f"saturated gates fresh {_fmt(sat_fresh)}, trained {_fmt(sat_trained)}", flush=True)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "time.json").write_text(json.dumps({"hidden": hidden, "batch": batch, "train_steps": train_steps,
                                                   "seed": seed, "nets": results}, indent=1))
        plot_time({n: r["fresh"] for n, r in results.items()}, out / "time.png", hidden,
                  title=f"Gradient through time: fresh nets, {hidden} units, row-MNIST")
        plot_time({n: r["trained"] for n, r in results.items()}, out / "time-trained.png", hidden,
                  title=f"Gradient through time: after {train_steps} steps on row-MNIST, {hidden} units")
        if progress:
            print(f"figures: {out / 'time.png'}, {out / 'time-trained.png'}")
    return results


def _fmt(sat: dict) -> str:
    return " ".join(f"{g}={v:.0%}" if math.isfinite(v) else f"{g}=nan" for g, v in sat.items())
