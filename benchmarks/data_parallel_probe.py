"""Would data parallelism scale better than deepscope's own? (issue 11: 2-thread / 1-thread on the conv nets)

deepscope cuts each layer's work between the threads (images, channels, blocks of a GEMM), with a parallel section a
layer and the small layers, the cost and the update between them on one thread. The other way: each thread runs the
whole net on its half of the mini-batch (a replica sharing the weights, with its own gradient buffer), one parallel
section a step, then the two gradients are added and the update runs. This probe times both at 1 and 2 threads,
alternating in one process (rounds of 10 steps, medians), on conv_speed's nets:

    plain   deepscope's step (train.step), as cpu_speed.py times it
    halves  the two replicas' forward and backward in one cpu.parallel section (at 1 thread one after the other),
            then flat.grad += the replica's gradient (on the threads) and the optimizer's update

It is a probe, not a fast path: the halves' gradient is the full mini-batch's with each half's cost divided by m/2
(the same step up to a factor the timing does not see), and their sums round differently from one pass's.

    python benchmarks/data_parallel_probe.py --nets rung1,rung3,dropout --batches 64,256 --rounds 7
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import deepscope as ds  # noqa: E402
from deepscope import cpu, nn, optim  # noqa: E402
from deepscope.train import step  # noqa: E402

import conv_speed  # noqa: E402
from common import core_to_core_ns, machine, write_json  # noqa: E402


class Halves:
    """A conv_speed net with SGD, and a replica that shares its weights and has its own flat gradient."""

    def __init__(self, name, batch, seed=0):
        ds.manual_seed(seed)
        self.net = conv_speed.build_deepscope(name)
        self.net.needs_input_grad = False
        self.cost, self.replica_cost = nn.LogLikelihoodCost(), nn.LogLikelihoodCost()
        self.opt = optim.SGD(self.net.parameters(), lr=conv_speed.ETA)
        self.replica = copy.deepcopy(self.net)
        grad = self.opt.flat.grad
        self.replica_grad = np.zeros_like(grad)
        base = grad.__array_interface__["data"][0]
        for p, q in zip(self.net.parameters(), self.replica.parameters()):
            q.data = p.data                                                     # the same weights
            at = (p.grad.__array_interface__["data"][0] - base) // grad.itemsize
            q.grad = self.replica_grad[at:at + p.grad.size].reshape(p.grad.shape)   # at p.grad's place
        rng = np.random.default_rng(seed)
        self.x = rng.random((batch, 1, 28, 28), dtype=np.float32)
        self.y = rng.integers(0, 10, batch)
        self.net.train()
        self.replica.train()

    def plain(self):
        step(self.net, self.cost, self.opt, self.x, self.y)

    def halves(self):
        m, x, y = len(self.x), self.x, self.y

        def half(i):
            model, cost, rows = ((self.net, self.cost, slice(0, m // 2)) if i == 0 else
                                 (self.replica, self.replica_cost, slice(m // 2, m)))
            cost(model(x[rows]), y[rows])
            model.backward(cost.backward())

        self.opt.zero_grad()
        cpu.zero(self.replica_grad)
        cpu.parallel(lambda s, e: [half(i) for i in range(s, e)], 2)       # layers inside run inline (no nesting)
        g, r = self.opt.flat.grad, self.replica_grad
        cpu.parallel(lambda s, e: np.add(g[s:e], r[s:e], out=g[s:e]), g.size, cpu.ELEMENTS_PER_SHARD)
        self.opt.step()


def seconds_a_step(fn, steps=10):
    fn()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="rung1,rung3,dropout")
    ap.add_argument("--batches", default="64")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", help="a JSON file name (under benchmarks/results/) or path")
    args = ap.parse_args(argv)
    c2c = core_to_core_ns()
    print(f"core-to-core round trip: {c2c:.0f} ns (~100-200: the vCPUs share an L3; ~400: apart)")
    print(f"{'net':8} {'m':>4} | {'plain 1t':>8} {'2t':>7} {'2t/1t':>5} | {'halves 1t':>9} {'2t':>7} | "
          f"{'plain 1t / halves 2t':>20} {'plain 2t / halves 2t':>20}  (us a step)")
    rows = []
    for name in args.nets.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            run = Halves(name, batch)
            times = {(k, t): [] for k in ("plain", "halves") for t in (1, 2)}
            for r in range(args.rounds):
                for threads in (1, 2):
                    ds.set_num_threads(threads)
                    for kind in (("plain", "halves") if r % 2 else ("halves", "plain")):
                        times[kind, threads].append(seconds_a_step(getattr(run, kind)))
            med = {f"{k}_{t}thread": statistics.median(v) * 1e6 for (k, t), v in times.items()}
            row = {"net": name, "batch": batch, "us_a_step": med,
                   "plain_2_over_1": med["plain_1thread"] / med["plain_2thread"],
                   "plain_1thread_over_halves_2thread": med["plain_1thread"] / med["halves_2thread"],
                   "plain_2thread_over_halves_2thread": med["plain_2thread"] / med["halves_2thread"]}
            rows.append(row)
            print(f"{name:8} {batch:>4} | {med['plain_1thread']:8.0f} {med['plain_2thread']:7.0f} "
                  f"{row['plain_2_over_1']:5.2f} | {med['halves_1thread']:9.0f} {med['halves_2thread']:7.0f} | "
                  f"{row['plain_1thread_over_halves_2thread']:20.2f} {row['plain_2thread_over_halves_2thread']:20.2f}",
                  flush=True)
    if args.out:
        out = write_json(args.out, {"command": " ".join(["python", "benchmarks/data_parallel_probe.py",
                                                          *(argv or sys.argv[1:])]),
                                    "machine": machine(), "rounds": args.rounds, "core_to_core_round_trip_ns": c2c,
                                    "rows": rows})
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
