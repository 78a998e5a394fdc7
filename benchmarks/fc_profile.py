"""Where a `[784,30,10]` training step spends its CPU time, at 1 thread: issue 11's 20x-the-network2-loop goal.

cpu_speed.py compares ``fit`` on `[784,30,10]` (sigmoid, cross-entropy, plain SGD) with a network2.py-style
per-example loop. This splits deepscope's side into its parts, each timed alone in a loop by CPU time
(``time.process_time``: waiting for a core on a loaded machine is not counted), smallest of the repeats:

- ``fit, a step``: one epoch of ``fit`` over the images divided by its steps (what cpu_speed.py times);
- ``step() on one batch``: :func:`deepscope.train.step` again and again on one mini-batch (no drawing, data in cache);
- fit's one-piece step (:class:`deepscope.train.SigmoidNetStep`, what ``fit`` runs for this net) on one mini-batch;
- what ``fit`` adds: drawing the mini-batches (``Batches.epoch``), the finiteness check of the training set (once a
  ``fit`` call, shared by its steps);
- each pass's forward and backward as the step runs them (a layer, or a run of layers as one: nn/fuse.py), the cost,
  ``zero_grad``, the SGD update (the step's parts, with their Python);
- the first layer's two products by the compiled loops alone (``_kernels.linear_forward``, ``linear_weight_grad``):
  the floor the step cannot go below without faster loops;
- the step's kernels (the same loops and NumPy calls) called one after another from one function: what the step
  would cost with no Python between them (fit's one-piece step, train.SigmoidNetStep, is these calls with their
  checks and bookkeeping);
- the network2 loop's step, for the ratio.

    python benchmarks/fc_profile.py                        # m = 10 and 64 (~15 s)
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/fc_profile.py   # OpenBLAS's own kernels
    python benchmarks/fc_profile.py --layer-by-layer       # fit steps layer by layer (the A/B of SigmoidNetStep)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import deepscope as ds
from deepscope import arch, cpu, nn, optim, train
from deepscope.train import Batches, check_inputs, fit, step

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import cpu_speed  # noqa: E402
import fc_speed  # noqa: E402
from common import blas, machine, table, write_json  # noqa: E402


GOALS = {10: 5, 64: 20}      # issue 11: the network2 loop's CPU time a step over fit's, at m = 10 and 64


def cpu_us(fn, calls, repeats):
    """The smallest CPU time of one call of ``fn`` over ``repeats`` runs of ``calls`` calls, in us."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        for _ in range(calls):
            fn()
        best = min(best, (time.process_time() - t0) / calls)
    return 1e6 * best


def profile(m, images, repeats):
    rng = np.random.default_rng(0)
    X, y = rng.random((images, 784), dtype=np.float32), rng.integers(0, 10, images)
    ds.manual_seed(0)
    model = arch.build("784-30-10:sigmoid")
    cost, opt = nn.CrossEntropyCost(), optim.SGD(model.parameters(), lr=0.1)
    steps = -(-images // m)
    epoch = lambda: fit(model, cost, opt, (X, y), epochs=1, batch_size=m, callbacks=[])   # noqa: E731
    epoch()
    model.needs_input_grad = False                     # as fit sets it: the first layer skips ∂C/∂x
    batches = Batches(X, y)
    xb, yb = next(iter(batches.epoch(m)))
    n2 = fc_speed.network2_run([784, 30, 10], X, y, m)
    rows = {"fit, a step": cpu_us(epoch, 1, repeats) / steps,
            "step() on one batch": cpu_us(lambda: step(model, cost, opt, xb, yb), 2000 // steps + 50, repeats),
            "fit's one-piece step (SigmoidNetStep) on one batch": _one_piece(model, cost, opt, xb, yb, steps, repeats),
            "drawing the batches (Batches.epoch), a step": cpu_us(lambda: [b for b in batches.epoch(m)], 1, repeats) / steps,
            "finiteness check of the training set, a step": cpu_us(lambda: check_inputs("fit", X), 1, repeats) / steps}
    calls = 2000
    model(xb)
    passes, inputs, x = model._passes or list(model), [], xb   # what the step runs: layers, or runs of them as one
    for p in passes:
        inputs.append(x)
        x = p(x)
    out = x
    for p, x in zip(passes, inputs):
        rows[f"{_name(p)} forward"] = cpu_us(lambda: p(x), calls, repeats)
    rows["cost (forward and delta)"] = cpu_us(lambda: cost(out, yb), calls, repeats)
    g = cost.backward()
    rows["zero_grad"] = cpu_us(opt.zero_grad, calls, repeats)
    for p, x in zip(reversed(passes), reversed(inputs)):
        p(x)                                                        # (its forward's cache, for its backward)
        rows[f"{_name(p)} backward"] = cpu_us(lambda: p.backward(g), calls, repeats)
        g = p.backward(g)
        if g is None:
            break
    rows["SGD update"] = cpu_us(opt.step, calls, repeats)
    k, first = cpu.kernels(), model[1]
    if k is not None:
        w, wg, bg, h = first.weight.data, first.weight.grad, first.bias.grad, inputs[1]
        z, none = np.empty((m, 30), np.float32), np.empty((0, 0), np.float32)
        d1 = np.random.default_rng(1).standard_normal((m, 30)).astype(np.float32) * 1e-3
        rows["  its loops alone: x W^T + b"] = cpu_us(lambda: k.linear_forward(h, w, first.bias.data, z, none, 0, m),
                                                      calls, repeats)
        rows["  its loops alone: W.grad += delta^T x"] = cpu_us(lambda: k.linear_weight_grad(d1, h, wg, bg, 0, 30),
                                                                calls, repeats)
        kernels_step = _kernels_step(k, model, opt, m)
        rows["the step's kernels from one Python function"] = cpu_us(lambda: kernels_step(h, yb), calls, repeats)
    rows["network2 loop, a step"] = cpu_us(n2, 1, max(3, repeats // 2)) / steps
    return rows


def _one_piece(model, cost, opt, xb, yb, steps, repeats):
    """train.SigmoidNetStep on one mini-batch, as fit runs it (NaN where it does not apply)."""
    fused = train.SigmoidNetStep.of(model, cost, opt) if train.SIGMOID_NET_STEP else None
    if fused is None or not fused.applies(xb, yb):
        return float("nan")
    return cpu_us(lambda: fused(xb, yb, lambda loss: None), 2000 // steps + 50, repeats)


def _name(p) -> str:
    """A step's pass by name: ``Linear 784-30``, ``Sigmoid``, or a run of nn/fuse.py, ``Linear 784-30 → Sigmoid``."""
    if isinstance(p, nn.Module):
        return f"{type(p).__name__} {p.in_features}-{p.out_features}" if isinstance(p, nn.Linear) else type(p).__name__
    return " → ".join(_name(q) for q in p.modules) + " (one pass)"


def _kernels_step(k, model, opt, m):
    """The same compiled loops and NumPy calls as a step of ``model`` (784-30-10, sigmoid, cross-entropy, plain SGD),
    called one after another from one function into buffers made once: what the step would cost with no Python
    between its kernels (the floor of train.SigmoidNetStep, which makes these calls with the checks that keep its
    numbers the layers'; the numbers are not checked here)."""
    first, last = model[1], model[3]
    w1, b1, w2, b2 = first.weight.data, first.bias.data, last.weight.data, last.bias.data
    gw1, gb1, gw2, gb2 = first.weight.grad, first.bias.grad, last.weight.grad, last.bias.grad
    w, g = opt.flat.data, opt.flat.grad
    z1, e1, a1, d1, g1 = (np.empty((m, 30), np.float32) for _ in range(5))
    z2, d2, none = np.empty((m, 10), np.float32), np.empty((m, 10), np.float32), np.empty((0, 0), np.float32)
    a1_, d1_, g1_ = a1.reshape(-1), d1.reshape(-1), g1.reshape(-1)

    def step_(x, y):
        k.linear_forward(x, w1, b1, z1, e1, 0, m)                   # z1 = x W1ᵀ + b1, e1 = -|z1|
        np.exp(e1, out=e1)
        k.sigmoid(z1.reshape(-1), e1.reshape(-1), a1_)              # a1 = σ(z1)
        k.linear_forward(a1, w2, b2, z2, none, 0, m)                # z2 = a1 W2ᵀ + b2
        k.crossentropy(z2, y, d2)                                   # C and δ2
        k.linear_weight_grad(d2, a1, gw2, gb2, 0, 10, True)         # (fresh: zero_grad in the loops)
        np.matmul(d2, w2, out=g1)
        k.sigmoid_backward(g1_, a1_, d1_)                           # δ1 = (δ2 W2) ⊙ σ'(z1)
        k.linear_weight_grad(d1, x, gw1, gb1, 0, 30, True)
        k.sgd(w, g, w[:0], opt.lr, 0.0, 0.0, opt.flat.n_decayed)
    return step_


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", default="10,64")
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default="fc_profile.json", help="file name under benchmarks/results/")
    ap.add_argument("--layer-by-layer", action="store_true",
                    help="fit steps layer by layer (train.SIGMOID_NET_STEP = False): the same numbers, for an A/B")
    args = ap.parse_args(argv)
    train.SIGMOID_NET_STEP = not args.layer_by_layer
    cpu_speed.set_threads(1)
    batches = [int(b) for b in args.batches.split(",")]
    results = {m: profile(m, args.images, args.repeats) for m in batches}
    parts = list(results[batches[0]])
    out = [{"part": p, **{f"m={m} us": results[m][p] for m in batches}} for p in parts]
    print(table(out, list(out[0])))
    for m in batches:
        r, goal = results[m], GOALS.get(m, 20)
        print(f"m={m}: network2 loop / fit, CPU time a step: {r['network2 loop, a step'] / r['fit, a step']:.2f}x; "
              f"{goal}x needs a fit step of {r['network2 loop, a step'] / goal:.1f} us")
    path = write_json(args.out, {"machine": machine(), "blas": blas(), "threads": 1, "images": args.images,
                                 "one_piece_step": train.SIGMOID_NET_STEP,
                                 "repeats": args.repeats, "command": "python benchmarks/fc_profile.py "
                                 + " ".join(argv or sys.argv[1:]), "rows": out})
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
