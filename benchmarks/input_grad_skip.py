"""The training speed gained by skipping the first layer's ∂C/∂x (``needs_input_grad = False``).

The data fed to a net needs no gradient, so the backward pass of its first layer can stop after ∂C/∂W and
∂C/∂b: for a convolution that skips ∂C/∂X = Wᵀ Δ (a GEMM as large as the one for ∂C/∂W) and the col2im
scatter. ``deepscope.train.fit`` sets ``model.needs_input_grad = False``; before the layer contract only
``Linear`` honoured it, so the first ``Conv2d`` of every conv net computed an input gradient nobody read.

Nets (input 1×28×28, 10 classes, log-likelihood cost), as in conv_speed.py:
  rung1    conv20x5-maxpool2-fc100-softmax10:sigmoid                    (the book's first conv net)
  rung3    conv20x5-maxpool2-conv40x5-maxpool2-fc100-softmax10:relu     (``deepscope train``'s default net)

For mini-batches m = 10 and 64 it times a training step (``deepscope.train.step``: forward, cost, backward,
plain SGD update) with the skip on (``needs_input_grad = False``, what fit does) and off (``True``: ∂C/∂x computed and
dropped, the old behaviour), the two alternating in one process on the same net and data, and reports the
median images/s of each and their ratio. It also times the first convolution's backward alone (on/off).
Both settings give the same parameter gradients (checked before timing). One BLAS thread by default
(``--threads``), the setting the published conv benchmarks use on this shared 2-core machine.

    python benchmarks/input_grad_skip.py            # writes benchmarks/results/input_grad_skip.json
    python benchmarks/input_grad_skip.py --quick    # a few iterations, to check that it runs
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from thread_option import threads_from_argv


# OpenBLAS reads its thread count when NumPy is imported, so it is set before the import.
THREADS = threads_from_argv(sys.argv, default=1)
os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(THREADS)

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import deepscope as ds  # noqa: E402
from deepscope import arch, nn, optim  # noqa: E402
from deepscope.train import step  # noqa: E402
from common import machine, table, write_json  # noqa: E402

NETS = {"rung1": "conv20x5-maxpool2-fc100-softmax10:sigmoid",
        "rung3": "conv20x5-maxpool2-conv40x5-maxpool2-fc100-softmax10:relu"}
BATCHES = (10, 64)
ETA = 0.03


class Runner:
    """One net, one mini-batch, one optimizer; ``step(skip)`` is one training step with the skip on or off."""

    def __init__(self, arch_string, batch, seed=0):
        ds.manual_seed(seed)
        self.net = arch.build(arch_string)
        self.cost = nn.LogLikelihoodCost()
        self.opt = optim.SGD(self.net.parameters(), lr=ETA)
        rng = np.random.default_rng(seed)
        self.x = rng.random((batch, 1, 28, 28), dtype=np.float32)
        self.y = rng.integers(0, 10, batch)

    def step(self, skip: bool):
        self.net.needs_input_grad = not skip
        step(self.net, self.cost, self.opt, self.x, self.y)

    def grads(self, skip: bool):
        self.net.needs_input_grad = not skip
        self.cost(self.net(self.x), self.y)
        self.opt.zero_grad()
        returned = self.net.backward(self.cost.backward())
        return returned, [p.grad.copy() for p in self.net.parameters()]


def check_same_gradients(runner):
    off_x, off = runner.grads(skip=False)
    on_x, on = runner.grads(skip=True)
    assert off_x is not None and on_x is None
    for a, b in zip(on, off):
        np.testing.assert_array_equal(a, b)


def _timed(fn, iters):
    """(wall seconds, CPU seconds of this process) for ``iters`` calls of ``fn``."""
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(iters):
        fn()
    return time.perf_counter() - w0, time.process_time() - c0


def alternate(fns, repeats, iters):
    """Median (wall, CPU) seconds per block of ``iters`` calls, the functions alternating, order flipped
    every repeat."""
    times = {k: [] for k in fns}
    for rep in range(repeats):
        for k in (list(fns) if rep % 2 == 0 else list(reversed(fns))):
            times[k].append(_timed(fns[k], iters))
    return {k: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)) for k, v in times.items()}


def measure(name, batch, repeats, images):
    runner = Runner(NETS[name], batch)
    check_same_gradients(runner)
    iters = max(2, images // batch)
    fns = {"on": lambda: runner.step(True), "off": lambda: runner.step(False)}
    for fn in fns.values():          # warm up
        fn()
        fn()
    train = alternate(fns, repeats, iters)

    # the first convolution's backward alone (its forward, which caches the columns, is not timed)
    conv = runner.net[0]
    g = np.random.default_rng(1).standard_normal(conv(runner.x).shape).astype(np.float32)

    def conv_backward(skip):
        conv.needs_input_grad = not skip
        conv(runner.x)
        t0 = time.perf_counter()
        conv.backward(g)
        return time.perf_counter() - t0

    conv_ms = {}
    for k in ("on", "off"):
        conv_ms[k] = []
    for rep in range(repeats):
        for k in (("on", "off") if rep % 2 == 0 else ("off", "on")):
            conv_ms[k].append(1e3 * sum(conv_backward(k == "on") for _ in range(iters)) / iters)
    conv.needs_input_grad = True
    row = {"net": name, "arch": NETS[name], "batch": batch, "iters": iters, "repeats": repeats}
    for k in ("off", "on"):
        row[f"img_s_skip_{k}"] = iters * batch / train[k][0]
        row[f"cpu_img_s_skip_{k}"] = iters * batch / train[k][1]
    row["speedup"] = row["img_s_skip_on"] / row["img_s_skip_off"]
    row["cpu_speedup"] = row["cpu_img_s_skip_on"] / row["cpu_img_s_skip_off"]
    row["conv1_bwd_ms_off"] = statistics.median(conv_ms["off"])
    row["conv1_bwd_ms_on"] = statistics.median(conv_ms["on"])
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few iterations, to check that it runs")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--images", type=int, default=640, help="images per timed block")
    ap.add_argument("--threads", type=int, default=THREADS, help="BLAS threads (default 1)")
    args = ap.parse_args(argv)
    repeats, images = (3, 64) if args.quick else (args.repeats, args.images)
    rows = []
    for name in NETS:
        for batch in BATCHES:
            r = measure(name, batch, repeats, images)
            rows.append(r)
            print(f"{name} m={batch}: {r['img_s_skip_off']:.0f} -> {r['img_s_skip_on']:.0f} img/s "
                  f"(x{r['speedup']:.2f}; CPU time x{r['cpu_speedup']:.2f})", flush=True)
    cols = ["net", "batch", "img_s_skip_off", "img_s_skip_on", "speedup", "cpu_speedup",
            "conv1_bwd_ms_off", "conv1_bwd_ms_on"]
    print(table(rows, cols))
    if not args.quick:
        cmd = "python benchmarks/input_grad_skip.py" + (f" --threads {args.threads}" if args.threads != 1 else "")
        path = write_json("input_grad_skip.json", {"command": cmd, "threads": args.threads,
                                                    "machine": machine(), "rows": rows})
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
