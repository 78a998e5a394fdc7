"""Where a `[784,30,10]` training step spends its CPU time, at 1 thread: issue 11's 20x-the-network2-loop goal.

cpu_speed.py compares ``fit`` on `[784,30,10]` (sigmoid, cross-entropy, plain SGD) with a network2.py-style
per-example loop. This splits deepscope's side into its parts, each timed alone in a loop by CPU time
(``time.process_time``: waiting for a core on a loaded machine is not counted), smallest of the repeats:

- ``fit, a step``: one epoch of ``fit`` over the images divided by its steps (what cpu_speed.py times);
- ``step() on one batch``: :func:`deepscope.train.step` again and again on one mini-batch (no drawing, data in cache);
- what ``fit`` adds: drawing the mini-batches (``Batches.epoch``), the finiteness check of the training set (once a
  ``fit`` call, shared by its steps);
- each layer's forward and backward, the cost, ``zero_grad``, the SGD update (the step's parts, with their Python);
- the first layer's two products by the compiled loops alone (``_kernels.linear_forward``, ``linear_weight_grad``):
  the floor the step cannot go below without faster loops;
- the network2 loop's step, for the ratio.

    python benchmarks/fc_profile.py                        # m = 10 and 64 (~15 s)
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/fc_profile.py   # OpenBLAS's own kernels
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import deepscope as ds
from deepscope import arch, cpu, nn, optim
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
    flatten, first, sigmoid, last = model
    model.needs_input_grad = False                     # as fit sets it: the first layer skips ∂C/∂x
    batches = Batches(X, y)
    xb, yb = next(iter(batches.epoch(m)))
    n2 = fc_speed.network2_run([784, 30, 10], X, y, m)
    rows = {"fit, a step": cpu_us(epoch, 1, repeats) / steps,
            "step() on one batch": cpu_us(lambda: step(model, cost, opt, xb, yb), 2000 // steps + 50, repeats),
            "drawing the batches (Batches.epoch), a step": cpu_us(lambda: [b for b in batches.epoch(m)], 1, repeats) / steps,
            "finiteness check of the training set, a step": cpu_us(lambda: check_inputs("fit", X), 1, repeats) / steps}
    calls = 2000
    h = flatten(xb)
    z1 = first(h)
    a1 = sigmoid(z1)
    z2 = last(a1)
    rows["Flatten forward"] = cpu_us(lambda: flatten(xb), calls, repeats)
    rows["Linear 784-30 forward"] = cpu_us(lambda: first(h), calls, repeats)
    rows["Sigmoid forward"] = cpu_us(lambda: sigmoid(z1), calls, repeats)
    rows["Linear 30-10 forward"] = cpu_us(lambda: last(a1), calls, repeats)
    rows["cost (forward and delta)"] = cpu_us(lambda: cost(z2, yb), calls, repeats)
    d2 = cost.backward()
    rows["zero_grad"] = cpu_us(opt.zero_grad, calls, repeats)
    rows["Linear 30-10 backward"] = cpu_us(lambda: last.backward(d2), calls, repeats)
    g1 = last.backward(d2)
    rows["Sigmoid backward"] = cpu_us(lambda: sigmoid.backward(g1), calls, repeats)
    d1 = sigmoid.backward(g1)
    rows["Linear 784-30 backward"] = cpu_us(lambda: first.backward(d1), calls, repeats)
    rows["SGD update"] = cpu_us(opt.step, calls, repeats)
    k, w, wg, bg = cpu.kernels(), first.weight.data, first.weight.grad, first.bias.grad
    if k is not None:
        z = np.empty((m, 30), np.float32)
        rows["  its loops alone: x W^T + b"] = cpu_us(lambda: k.linear_forward(h, w, first.bias.data, z, np.empty((0, 0), np.float32), 0, m),
                                                      calls, repeats)
        rows["  its loops alone: W.grad += delta^T x"] = cpu_us(lambda: k.linear_weight_grad(d1, h, wg, bg, 0, 30),
                                                                calls, repeats)
    rows["network2 loop, a step"] = cpu_us(n2, 1, max(3, repeats // 2)) / steps
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", default="10,64")
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default="fc_profile.json", help="file name under benchmarks/results/")
    args = ap.parse_args(argv)
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
                                 "repeats": args.repeats, "command": "python benchmarks/fc_profile.py "
                                 + " ".join(argv or sys.argv[1:]), "rows": out})
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
