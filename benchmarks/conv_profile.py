"""Where a conv net's training step spends its CPU time: each compiled kernel and each BLAS product, at 1 thread.

Issue 11 asks rung 3 at m=256 for 45% of the float32 GEMM peak. This splits one training step (cpu_speed.py's
runner: forward, backward, SGD) into the calls deepscope.cpu makes — every ``deepscope._kernels`` function and
every ``numpy.matmul`` / ``numpy.dot``, grouped by name and operand shape — timed by CPU time
(``time.process_time``: waiting for a core on a loaded machine is not counted). For each product it also times
the same product alone, on operands that stay in cache (a 2048³ GEMM gives the peak), and prints the fraction of
the peak each reaches in the step and alone: what is left to gain in the products, and what the copies
(im2col, col2im) and the pooling cost around them. (Alone, the operands are contiguous; in the step a ConvPool's
forward gives X and Z rows one image longer where they would alias in the cache (cpu.ALIASED_ROW_BYTES), so a
product can run faster in the step than alone: the first conv's 20x25 by 25x9216.) (The step's CPU time includes the timing wrappers' own, a few
microseconds a call; the calls' sum excludes Python's time between them.)

    python benchmarks/conv_profile.py                               # rung 3, m=256
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/conv_profile.py   # OpenBLAS's own kernels
    python benchmarks/conv_profile.py --net rung1 --batch 64
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import numpy as np

from deepscope import cpu

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import cpu_speed  # noqa: E402
from common import blas, machine, table, write_json  # noqa: E402

clock = time.process_time


class Timed:
    """``deepscope._kernels`` with every call's CPU time and count added to ``totals[(name, first shape)]``."""

    def __init__(self, kernels, totals):
        self._k, self._totals = kernels, totals

    def __getattr__(self, name):
        f = getattr(self._k, name)
        if not callable(f):
            return f

        def timed(*args):
            t0 = clock()
            out = f(*args)
            entry = self._totals[(name, getattr(args[0], "shape", ()))]
            entry[0], entry[1] = entry[0] + clock() - t0, entry[1] + 1
            return out
        return timed


def timed_product(fn, totals):
    def product(a, b, *args, **kwargs):
        t0 = clock()
        out = fn(a, b, *args, **kwargs)
        entry = totals[("gemm", a.shape, b.shape)]
        entry[0], entry[1] = entry[0] + clock() - t0, entry[1] + 1
        return out
    return product


def alone(m, k, n, repeats=20, inner=10):
    """CPU seconds of one (m, k) @ (k, n) float32 product on operands in cache, best of ``repeats``."""
    rng = np.random.default_rng(0)
    a, b = rng.random((m, k), dtype=np.float32), rng.random((k, n), dtype=np.float32)
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        for _ in range(inner):
            a @ b
        best = min(best, (clock() - t0) / inner)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--net", default="rung3", choices=("rung1", "rung3", "dropout"))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", default="conv_profile.json", help="file name under benchmarks/results/")
    args = ap.parse_args(argv)
    cpu_speed.set_threads(1)
    peak = 2 * 2048 ** 3 / alone(2048, 2048, 2048, repeats=5, inner=1)     # by CPU time, as everything here
    runner = cpu_speed.Deepscope(args.net, args.batch)
    for _ in range(3):
        runner.step()                                   # compiled, allocated, warm
    totals = collections.defaultdict(lambda: [0.0, 0])      # (name, shapes) -> [CPU seconds, calls]
    kernels, matmul, dot = cpu.kernels(), cpu.numpy.matmul, cpu.numpy.dot
    cpu._kernels = Timed(kernels, totals)
    cpu.numpy.matmul, cpu.numpy.dot = timed_product(matmul, totals), timed_product(dot, totals)
    try:
        t0 = clock()
        for _ in range(args.steps):
            runner.step()
        step = (clock() - t0) / args.steps
    finally:
        cpu._kernels, cpu.numpy.matmul, cpu.numpy.dot = kernels, matmul, dot
    rows = []
    for key, (seconds, calls) in sorted(totals.items(), key=lambda kv: -kv[1][0]):
        row = {"call": f"{key[0]} {key[1]}", "ms_a_step": 1e3 * seconds / args.steps, "calls_a_step": calls // args.steps,
               "percent_of_peak_in_step": None, "percent_of_peak_alone": None}
        if key[0] == "gemm":
            (m, k), (_, n) = key[1], key[2]
            row["call"] = f"GEMM ({m}x{k}) @ ({k}x{n})"
            row["percent_of_peak_in_step"] = 100 * 2 * m * k * n * calls / seconds / peak
            row["percent_of_peak_alone"] = 100 * 2 * m * k * n / alone(m, k, n) / peak
        rows.append(row)
    kernels_used = [lib.get("architecture") for lib in blas()["libraries"] if lib.get("internal_api") == "openblas"]
    print(f"{args.net}, m={args.batch}, 1 thread, OpenBLAS {kernels_used}: float32 GEMM peak {peak / 1e9:.1f} GFLOP/s")
    print(table(rows, list(rows[0])))
    flops = 3 * cpu_speed.flops_per_image(args.net) * args.batch
    print(f"\nCPU time a step {1e3 * step:.2f} ms (the calls above: {sum(r['ms_a_step'] for r in rows):.2f} ms); "
          f"{100 * flops / step / peak:.1f}% of the GEMM peak by CPU time")
    path = write_json(args.out, {"machine": machine(), "blas": blas(), "net": args.net, "batch": args.batch,
                                 "steps": args.steps, "gemm_peak_flops": peak, "step_cpu_seconds": step,
                                 "fraction_of_peak_by_cpu_time": flops / step / peak, "rows": rows,
                                 "command": "python benchmarks/conv_profile.py " + " ".join(argv or sys.argv[1:])})
    print(f"written to {path}")


if __name__ == "__main__":
    main()
