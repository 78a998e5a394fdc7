"""Depth × activation × initialisation: where the gradient vanishes, and whether the net still learns.

For each cell of the grid, a net ``[784] + [30]*depth + [10]`` (cross-entropy cost on sigmoid outputs) is
initialised and measured twice:

    ratio      ‖∂C/∂b‖ of the last hidden layer / that of the first, at initialisation, over the first
               1,000 training images (the book's speed measure). ≫ 1: the first layer learns far slower
               (vanishing gradient); ≪ 1: it learns faster (exploding gradient); ≈ 1: balanced.
    accuracy   validation accuracy after a short training: ``steps`` steps of mini-batch SGD (batch 10,
               η = 0.1, no regularisation, through ``deepscope.train.fit``: each epoch in a new order drawn from
               deepscope's generator) on the first ``n_train`` training images. A run whose cost
               becomes non-finite is marked ``diverged``.

Results: ``compare.md`` (a table), ``compare.json`` (every cell) and ``compare.png`` (heatmaps).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from ... import backend, nn, optim
from ...errors import NonFiniteError
from ...figures import plot_compare
from ...train import fit
from .experiment import build_net, hidden_speeds, mnist_subset


class _Enough(Exception):
    """Raised by :class:`_StopAfter` to end training mid-epoch."""


class _StopAfter:
    """A ``fit`` callback that ends training after ``steps`` optimizer steps."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_step(self, step, model, optimizer):
        if step >= self.steps:
            raise _Enough


def run_cell(depth, activation, init, train, val, speed_data, steps=1000, batch_size=10, eta=0.1, seed=0) -> dict:
    """One cell of the grid: the initial speed ratio and the validation accuracy after ``steps`` SGD steps."""
    backend.manual_seed(seed)
    model = build_net([784] + [30] * depth + [10], activation, init)
    cost = nn.CrossEntropyCost()
    speeds = hidden_speeds(model, cost, *speed_data)
    opt = optim.SGD(model.parameters(), lr=eta)
    X, y = train
    per_epoch = -(-len(X) // batch_size)
    diverged = False
    with np.errstate(over="ignore", invalid="ignore"):      # a diverging cell is reported, not warned about
        try:
            fit(model, cost, opt, (X, y), epochs=-(-steps // per_epoch), batch_size=batch_size,
                callbacks=[_StopAfter(steps)])
        except _Enough:
            pass
        except NonFiniteError:
            diverged = True
        Xv, yv = val
        z = backend.to_numpy(model(Xv))
    acc = float((z.argmax(axis=1) == backend.to_numpy(yv)).mean()) if np.isfinite(z).all() else float("nan")
    diverged = diverged or not math.isfinite(acc)
    ratio = speeds[-1] / speeds[0] if speeds[0] > 0 else float("inf")
    return {"depth": depth, "activation": activation, "init": init, "seed": seed, "speeds": speeds,
            "ratio": float(ratio), "accuracy": acc, "diverged": diverged}


def run_compare(depths=(2, 3, 4, 5, 6), activations=("sigmoid", "tanh", "relu"), inits=("large", "book", "he"),
                steps=1000, batch_size=10, eta=0.1, n_train=5000, n_val=1000, seed=0, data=None, out=None,
                progress=True, data_dir=None) -> list[dict]:
    """Run the whole grid; ``data`` = ``(train, val)`` pairs of ``(X (n,784), y)`` (default: MNIST, book split)."""
    if data is None:
        train, val = mnist_subset(n_train, n_val, data_dir=data_dir)
    else:
        train, val = data
    dt = backend.default_dtype()
    train = (backend.asarray(np.asarray(train[0], dtype=dt).reshape(len(train[0]), -1)), backend.asarray(train[1]))
    val = (backend.asarray(np.asarray(val[0], dtype=dt).reshape(len(val[0]), -1)), backend.asarray(val[1]))
    speed_data = (train[0][:1000], train[1][:1000])
    cells, t0 = [], time.perf_counter()
    for depth in depths:
        for act in activations:
            for init in inits:
                c = run_cell(depth, act, init, train, val, speed_data, steps, batch_size, eta, seed)
                cells.append(c)
                if progress:
                    print(f"  depth {depth} {act:7s} {init:6s} ratio {c['ratio']:10.3g}  accuracy "
                          f"{_acc(c)}  ({time.perf_counter() - t0:.0f}s)", flush=True)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        config = {"depths": list(depths), "activations": list(activations), "inits": list(inits), "steps": steps,
                  "batch_size": batch_size, "eta": eta, "n_train": len(train[0]), "n_val": len(val[0]),
                  "seed": seed}
        with open(out / "compare.json", "w") as f:
            json.dump({"config": config, "cells": cells}, f, indent=2)
        (out / "compare.md").write_text(table(cells, inits) + "\n")
        plot_compare(cells, depths, activations, inits, out / "compare.png")
    return cells


def _acc(c) -> str:
    return "diverged" if c["diverged"] else f"{c['accuracy']:.2%}"


def table(cells, inits) -> str:
    """A markdown table: one row per (depth, activation), one column per init with 'ratio · accuracy'."""
    head = "| depth | activation | " + " | ".join(f"{i}: last/first speed · accuracy" for i in inits) + " |"
    lines = [head, "|" + "---|" * (2 + len(inits))]
    rows = {}
    for c in cells:
        rows.setdefault((c["depth"], c["activation"]), {})[c["init"]] = c
    for (depth, act), by_init in rows.items():
        parts = [f"{by_init[i]['ratio']:.3g} · {_acc(by_init[i])}" if i in by_init else "" for i in inits]
        lines.append(f"| {depth} | {act} | " + " | ".join(parts) + " |")
    return "\n".join(lines)
