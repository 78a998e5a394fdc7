"""Depth × activation × initialisation × normalisation × residual connections: where the gradient vanishes,
whether the net still learns, and what the cures change.

For each cell of the grid, a net of ``depth`` hidden layers of 30 neurons (cross-entropy cost on sigmoid
outputs), named by an architecture string (:func:`cell_arch`, grammar in :mod:`deepscope.arch`):

    norm none, residual no     784-30*D-10:act            the book's plain deep net
    norm batch                 784-30bn*D-10:act          batch norm after every hidden Linear, before act
    residual yes               784-30-res30*B[-30]-10:act the first hidden layer, then B = (D-1)//2 residual
                                                          blocks of two layers (identity skips), and one more
                                                          plain layer when D is even: D hidden Linear maps
                                                          in all (D < 3 leaves no room for a block: the plain
                                                          net)

is initialised and measured:

    ratio      the speed of learning of the last hidden layer / that of the first, at initialisation, over the
               first 1,000 training images (the book's ‖∂C/∂bˡ‖; for a layer followed by batch norm ‖∂C/∂β‖, the
               bias the cost can see). ≫ 1: the first layer learns far slower (vanishing gradient); ≪ 1: it
               learns faster (exploding gradient); ≈ 1: balanced.
    ratio_trained  the same after the training below.
    accuracy   validation accuracy after a short training: ``steps`` steps of mini-batch SGD (batch 10,
               η = 0.1, no regularisation, through ``deepscope.train.fit``: each epoch in a new order drawn from
               deepscope's generator) on the first ``n_train`` training images, batch norm in evaluation mode
               (running statistics). A run whose cost becomes non-finite is marked ``diverged``.

Results: ``compare.md`` (a table), ``compare.json`` (every cell) and ``compare.png`` (heatmaps).
"""
from __future__ import annotations

import itertools
import json
import math
import time
from pathlib import Path

import numpy as np

from ... import arch, backend, nn, optim
from ...errors import ConfigError, NonFiniteError
from ...figures import plot_compare
from ...train import fit
from .experiment import hidden_speeds, mnist_subset

NORMS = ("none", "batch")
RESIDUALS = ("no", "yes")
WIDTH = 30


class _Enough(Exception):
    """Raised by :class:`_StopAfter` to end training mid-epoch."""


class _StopAfter:
    """A ``fit`` callback that ends training after ``steps`` optimizer steps."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_step(self, step, model, optimizer):
        if step >= self.steps:
            raise _Enough


def cell_arch(depth: int, activation: str, norm: str = "none", residual: str = "no", width: int = WIDTH,
              n_in: int = 784, n_out: int = 10) -> str:
    """The architecture string of a cell: ``depth`` hidden layers of ``width`` neurons (see the module)."""
    if norm not in NORMS:
        raise ConfigError(f"compare: norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if residual not in RESIDUALS:
        raise ConfigError(f"compare: residual must be one of {', '.join(RESIDUALS)}, got {residual!r}")
    if int(depth) < 1:
        raise ConfigError(f"compare: depth must be at least 1, got {depth}")
    bn = "bn" if norm == "batch" else ""
    if residual == "yes":
        blocks, extra = divmod(int(depth) - 1, 2)
        hidden = [f"{width}{bn}"] + ([f"res{width}{bn}*{blocks}"] if blocks else []) + [f"{width}{bn}"] * extra
    else:
        hidden = [f"{width}{bn}*{int(depth)}"]
    return "-".join([str(n_in), *hidden, f"{n_out}:{activation}"])


def check_grid(depths, activations, norms, residuals, n_train: int, batch_size: int = 10) -> None:
    """Raise :class:`ConfigError` (one line) for a grid that cannot run: an unknown norm or residual value, a
    depth below 1, an unknown activation, or batch norm with a last mini-batch of one image."""
    for d, a, n, r in itertools.product(depths, activations, norms, residuals):
        if a not in nn.ACTIVATIONS:
            raise ConfigError(f"compare: unknown activation {a!r}; choose from {', '.join(nn.ACTIVATIONS)}")
        cell_arch(d, a, n, r)
    if "batch" in norms and n_train % batch_size == 1:
        raise ConfigError(f"compare: {n_train} training images leave a last mini-batch of one image, which batch "
                          f"norm cannot normalise; use a number that is not 1 more than a multiple of {batch_size}")


def run_cell(depth, activation, init, train, val, speed_data, steps=1000, batch_size=10, eta=0.1, seed=0,
             norm="none", residual="no") -> dict:
    """One cell of the grid: the speed ratios at initialisation and after ``steps`` SGD steps, and the
    validation accuracy."""
    backend.manual_seed(seed)
    name = cell_arch(depth, activation, norm, residual)
    model = arch.build(name, init=init)
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
        model.eval()
        Xv, yv = val
        z = backend.to_numpy(model(Xv))
        model.train()
        trained = hidden_speeds(model, cost, *speed_data)
    acc = float((z.argmax(axis=1) == backend.to_numpy(yv)).mean()) if np.isfinite(z).all() else float("nan")
    diverged = diverged or not math.isfinite(acc)
    return {"depth": depth, "activation": activation, "init": init, "norm": norm, "residual": residual,
            "arch": name, "seed": seed, "speeds": speeds, "ratio": _ratio(speeds), "speeds_trained": trained,
            "ratio_trained": _ratio(trained), "accuracy": acc, "diverged": diverged}


def _ratio(speeds) -> float:
    """Last hidden layer's speed / the first's (inf if the first is 0, NaN if either is not finite)."""
    if not all(math.isfinite(s) for s in speeds):
        return float("nan")
    return float(speeds[-1] / speeds[0]) if speeds[0] > 0 else float("inf")


def run_compare(depths=(2, 3, 4, 5, 6), activations=("sigmoid", "tanh", "relu"), inits=("large", "book", "he"),
                steps=1000, batch_size=10, eta=0.1, n_train=5000, n_val=1000, seed=0, data=None, out=None,
                progress=True, data_dir=None, norms=("none",), residuals=("no",)) -> list[dict]:
    """Run the whole grid; ``data`` = ``(train, val)`` pairs of ``(X (n,784), y)`` (default: MNIST, book split).
    ``norms`` from ``"none"``, ``"batch"``; ``residuals`` from ``"no"``, ``"yes"``."""
    check_grid(depths, activations, norms, residuals, n_train if data is None else len(data[0][0]), batch_size)
    if data is None:
        train, val = mnist_subset(n_train, n_val, data_dir=data_dir)
    else:
        train, val = data
    dt = backend.default_dtype()
    train = (backend.asarray(np.asarray(train[0], dtype=dt).reshape(len(train[0]), -1)), backend.asarray(train[1]))
    val = (backend.asarray(np.asarray(val[0], dtype=dt).reshape(len(val[0]), -1)), backend.asarray(val[1]))
    speed_data = (train[0][:1000], train[1][:1000])
    cells, t0 = [], time.perf_counter()
    for depth, act, norm, res, init in itertools.product(depths, activations, norms, residuals, inits):
        c = run_cell(depth, act, init, train, val, speed_data, steps, batch_size, eta, seed, norm, res)
        cells.append(c)
        if progress:
            print(f"  depth {depth} {act:7s} {init:6s} norm {norm:5s} residual {res:3s} ratio {c['ratio']:10.3g} "
                  f"→ {c['ratio_trained']:10.3g}  accuracy {_acc(c)}  ({time.perf_counter() - t0:.0f}s)",
                  flush=True)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        config = {"depths": list(depths), "activations": list(activations), "inits": list(inits),
                  "norms": list(norms), "residuals": list(residuals), "steps": steps, "batch_size": batch_size,
                  "eta": eta, "n_train": len(train[0]), "n_val": len(val[0]), "seed": seed}
        with open(out / "compare.json", "w") as f:
            json.dump({"config": config, "cells": cells}, f, indent=2)
        (out / "compare.md").write_text(table(cells, inits) + "\n")
        rows = variants(cells)
        plot_compare(cells, depths, activations, rows, out / "compare.png", [variant_label(*v) for v in rows])
    return cells


def variants(cells) -> list[tuple]:
    """The (init, norm, residual) combinations of the cells, in the order they first appear."""
    return list(dict.fromkeys((c["init"], c.get("norm", "none"), c.get("residual", "no")) for c in cells))


def variant_label(init: str, norm: str = "none", residual: str = "no") -> str:
    """``he``, ``he, bn``, ``he, res``, ``he, bn, res``: a row of the figure."""
    return ", ".join([init] + (["bn"] if norm == "batch" else []) + (["res"] if residual == "yes" else []))


def _acc(c) -> str:
    return "diverged" if c["diverged"] else f"{c['accuracy']:.2%}"


def table(cells, inits) -> str:
    """A markdown table: one row per (depth, activation, norm, residual), one column per init with
    'last/first speed at init → after training · accuracy'."""
    head = ("| depth | activation | norm | residual | "
            + " | ".join(f"{i}: last/first speed init → trained · accuracy" for i in inits) + " |")
    lines = [head, "|" + "---|" * (4 + len(inits))]
    rows = {}
    for c in cells:
        key = (c["depth"], c["activation"], c.get("norm", "none"), c.get("residual", "no"))
        rows.setdefault(key, {})[c["init"]] = c
    for (depth, act, norm, res), by_init in rows.items():
        parts = [f"{by_init[i]['ratio']:.3g} → {by_init[i].get('ratio_trained', float('nan')):.3g} · "
                 f"{_acc(by_init[i])}" if i in by_init else "" for i in inits]
        lines.append(f"| {depth} | {act} | {norm} | {res} | " + " | ".join(parts) + " |")
    return "\n".join(lines)
