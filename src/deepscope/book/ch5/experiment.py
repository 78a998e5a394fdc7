"""The book's learning-speed experiment (ch. 5): how fast each hidden layer of a deep sigmoid net learns.

What Nielsen did (``fig/generate_gradient.py`` in his repository), and what :func:`speed_experiment` does:

* data: the first 1,000 images of the book's 50,000-image training set, as 784-pixel vectors in [0, 1];
* net: network2's ``Network([784, 30, …, 30, 10])``: sigmoid neurons, weights N(0, 1/n_in), biases N(0, 1)
  (``init="book"``), sigmoid output neurons with the cross-entropy cost;
* the speed of hidden layer l: ‖(1/n) Σ_x ∂C_x/∂bˡ‖, the bias gradient of the cost *without* the L2 term,
  averaged over the 1,000 images (``backprop`` summed over the data, divided by ``len``). deepscope's costs
  average over the batch, so one full-batch backward pass gives exactly this in ``bias.grad``;
* training: 500 "epochs" of ``net.SGD(td, 1, 1000, 0.1, lmbda=5.0)``, i.e. 500 full-batch gradient-descent
  steps w ← (1 - ηλ/n) w - η ∇_w C, b ← b - η ∇_b C with η = 0.1, λ = 5.0, n = 1,000; the speed is
  measured *before* each step, so record 0 is the speed at initialisation and record 499 the speed
  before the last step.

The numbers the book prints (0.07/0.31 for two hidden layers, …) come from one random initialisation;
this module averages over several seeds and reports the spread.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ... import backend, nn, optim
from ...data import load_mnist
from ...figures import plot_speed
from ...scope import LearningSpeedRecorder
from ...train import Batches, fit


def mnist_subset(n_train: int = 1000, n_val: int = 0, data_dir=None, verbose: bool = True):
    """The first ``n_train`` training images of the book's split as ``(n, 784)`` float arrays and labels, and
    (optionally) the first ``n_val`` validation images (``deepscope.data.load_mnist``; ``data_dir`` optional)."""
    ds = load_mnist(data_dir=data_dir, verbose=verbose)
    X, y = ds.train
    if len(X) < n_train:
        raise ValueError(f"the training set has only {len(X)} images, {n_train} were asked for")
    train = (np.asarray(X[:n_train]).reshape(n_train, -1), np.asarray(y[:n_train]))
    if not n_val:
        return train, None
    Xv, yv = ds.validation
    n_val = min(n_val, len(Xv))
    return train, (np.asarray(Xv[:n_val]).reshape(n_val, -1), np.asarray(yv[:n_val]))


def build_net(layers, activation: str = "sigmoid", init: str = "book") -> nn.Sequential:
    """``Linear → activation → … → Linear`` for sizes ``layers`` (e.g. [784, 30, 30, 10]); the last Linear
    gives the logits (the cost applies the output neuron)."""
    if len(layers) < 2:
        raise ValueError(f"need at least an input and an output size, got {list(layers)}")
    if activation not in nn.ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}: expected one of {', '.join(nn.ACTIVATIONS)}")
    mods = []
    for j, (n_in, n_out) in enumerate(zip(layers[:-1], layers[1:])):
        mods.append(nn.Linear(n_in, n_out, init=init))
        if j < len(layers) - 2:
            mods.append(nn.ACTIVATIONS[activation]())
    return nn.Sequential(*mods)


def full_batch_gradient(model, cost, X, y) -> float:
    """One forward and backward pass over all of ``(X, y)``; leaves ∂C/∂θ (the batch mean) in ``.grad``."""
    loss = cost(model(X), y)
    model.zero_grad()
    model.backward(cost.backward())
    return float(loss)


def hidden_speeds(model, cost, X, y) -> list[float]:
    """The speed of learning of each hidden layer (every parametrised layer but the output one, in forward
    order), over all of ``(X, y)``: ‖∂C/∂bˡ‖, or ‖∂C/∂β‖ for a layer followed by batch norm (the recorder's
    ``speed``; the batch-norm module itself counts as part of the layer before it)."""
    rec = LearningSpeedRecorder(model)
    full_batch_gradient(model, cost, X, y)
    rec.after_step()
    rec.remove()
    speeds = [e["speed"] for e in rec.history[0]["layers"].values() if e["speed"] is not None]
    return speeds[:-1]


def speed_experiment(layers, activation: str = "sigmoid", init: str = "book", steps: int = 500, seeds: int = 1,
                     seed: int = 0, eta: float = 0.1, lmbda: float = 5.0, data=None, n_train: int = 1000,
                     out=None, progress: bool = True, data_dir=None) -> dict:
    """Run the book's experiment for ``seeds`` initialisations and return the speeds.

    Args:
        layers: sizes, e.g. ``[784, 30, 30, 10]``.
        activation, init: the hidden neurons (``sigmoid``/``tanh``/``relu``) and weight initialisation.
        steps: full-batch gradient-descent steps (the book: 500).
        seeds: number of initialisations (seeds ``seed``, ``seed+1``, …).
        eta, lmbda: η and network2's L2 λ (weight decay λ/n on the weights only).
        data: ``(X, y)`` with X ``(n, 784)``; default: the first ``n_train`` images of the book's training set.
        out: folder for ``speed.jsonl`` (every record of every seed), ``summary.json`` and ``speed.png``.

    Returns:
        a dict with ``speeds`` ``(seeds, steps, hidden layers)``, ``init_speeds`` (seed × layer),
        ``final_accuracy`` per seed (on the training images) and ``figure`` (the PNG path, if ``out``).
    """
    layers = [int(s) for s in layers]
    X, y = data if data is not None else mnist_subset(n_train, data_dir=data_dir)[0]
    n = len(X)
    X = backend.asarray(np.asarray(X, dtype=backend.default_dtype()).reshape(n, -1))
    y = backend.asarray(np.asarray(y))
    out = Path(out) if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "speed.jsonl").unlink(missing_ok=True)
    hidden = len(layers) - 2
    if hidden < 1:
        raise ValueError(f"the net {layers} has no hidden layer")
    all_speeds, accs = [], []
    t0 = time.perf_counter()
    for s in range(seed, seed + seeds):
        backend.manual_seed(s)
        model = build_net(layers, activation, init)
        cost = nn.CrossEntropyCost()
        opt = optim.SGD(model.parameters(), lr=eta, weight_decay=optim.book_weight_decay(lmbda, n))
        rec = LearningSpeedRecorder(model, every=1)
        if steps:   # one full-batch step per "epoch"; the recorder reads ∂C/∂b before each update
            fit(model, cost, opt, Batches(X, y, shuffle=False), epochs=steps, batch_size=n, callbacks=[rec])
        else:       # only the speeds at initialisation
            full_batch_gradient(model, cost, X, y)
            rec.after_step()
        rec.remove()
        all_speeds.append(rec.series("bias_grad")[1][:, :hidden])
        out_z = model(X)
        accs.append(float((backend.to_numpy(out_z).argmax(axis=1) == backend.to_numpy(y)).mean()))
        if out is not None:
            with open(out / "speed.jsonl", "a") as f:
                for r in rec.history:
                    f.write(json.dumps({"seed": s, **r}) + "\n")
        if progress:
            after = f", after {steps - 1} updates {_fmt(all_speeds[-1][-1])}" if steps > 1 else ""
            print(f"  seed {s}: speeds at init {_fmt(all_speeds[-1][0])}{after}  ({time.perf_counter() - t0:.0f}s)",
                  flush=True)
    speeds = np.array(all_speeds)                          # (seeds, steps, hidden)
    result = {"layers": layers, "activation": activation, "init": init, "steps": steps, "eta": eta,
              "lmbda": lmbda, "n": n, "seeds": list(range(seed, seed + seeds)), "speeds": speeds,
              "init_speeds": speeds[:, 0, :], "final_accuracy": accs}
    if out is not None and steps:
        result["figure"] = str(out / "speed.png")
        plot_speed(np.arange(steps), speeds, [f"Hidden layer {j + 1}" for j in range(hidden)], out / "speed.png",
                   title=f"Speed of learning: {hidden} hidden layer{'s' if hidden > 1 else ''}",
                   xlabel="Number of full-batch steps of training")
        with open(out / "summary.json", "w") as f:
            json.dump(summarize(result), f, indent=2)
    return result


def summarize(result: dict) -> dict:
    """Speeds at initialisation over seeds (mean, std, min, max per hidden layer) and the last/first ratio."""
    init = np.asarray(result["init_speeds"])
    ratio = init[:, -1] / init[:, 0]
    return {
        "layers": result["layers"], "activation": result["activation"], "init": result["init"],
        "steps": result["steps"], "eta": result["eta"], "lmbda": result["lmbda"], "n": result["n"],
        "seeds": result["seeds"],
        "init_speed_mean": init.mean(axis=0).tolist(), "init_speed_std": init.std(axis=0).tolist(),
        "init_speed_min": init.min(axis=0).tolist(), "init_speed_max": init.max(axis=0).tolist(),
        "ratio_last_first_mean": float(ratio.mean()), "ratio_last_first_std": float(ratio.std()),
        "final_speed_mean": np.asarray(result["speeds"])[:, -1, :].mean(axis=0).tolist(),
        "final_accuracy_mean": float(np.mean(result["final_accuracy"])),
    }


def _fmt(values) -> str:
    return "/".join(f"{v:.3g}" for v in values)
