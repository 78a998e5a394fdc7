"""Overhead of the learning-speed recorder: training with and without it, alternating, medians.

    python benchmarks/scope_overhead.py [--steps 3000] [--repeats 7] [--every 100] [--data-dir DIR]

A [784, 30, 30, 30, 10] sigmoid net, cross-entropy cost, mini-batch SGD (batch 10, η = 0.1) on MNIST
(``deepscope.data.load_mnist``; the embedded sample if the full set is not found). The loop is fit's step
(forward, cost, zero_grad, backward, optimizer step) without the progress bar, so the overhead is measured
against bare computation. The recorder records every ``--every`` steps. Goal: <= 5 % overhead.
Writes ``benchmarks/results/scope_overhead.json``.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

import deepscope
from deepscope import backend, nn, optim
from deepscope.data import load_mnist
from deepscope.book.ch5 import build_net
from deepscope.scope import LearningSpeedRecorder
from deepscope.train import step
from common import write_json


def train(X, y, steps, batch, every=None) -> tuple[float, int, float, float]:
    """Wall seconds for ``steps`` SGD steps, the number of records made, the seconds spent inside the
    recorder's calls (``before_step``/``after_step``; the hooks' own time on recorded steps is not in it) and
    the process CPU seconds (less disturbed than wall time by other work on a shared machine)."""
    deepscope.manual_seed(0)
    model = build_net([784, 30, 30, 30, 10])
    cost = nn.CrossEntropyCost()
    opt = optim.SGD(model.parameters(), lr=0.1)
    rec = LearningSpeedRecorder(model, every=every) if every else None
    n = len(X)
    inside = 0.0
    c0, t0 = time.process_time(), time.perf_counter()
    for k in range(steps):
        i = (k * batch) % (n - batch + 1)
        xb, yb = X[i:i + batch], y[i:i + batch]
        def before_update(loss):
            nonlocal inside
            if rec:
                t1 = time.perf_counter()
                rec.before_step()
                inside += time.perf_counter() - t1

        step(model, cost, opt, xb, yb, before_update)
        if rec:
            t1 = time.perf_counter()
            rec.after_step()
            inside += time.perf_counter() - t1
    return time.perf_counter() - t0, len(rec.history) if rec else 0, inside, time.process_time() - c0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "scope_overhead.json"))
    args = ap.parse_args()

    ds = load_mnist(data_dir=args.data_dir)
    X = backend.asarray(np.asarray(ds.train[0]).reshape(len(ds.train[0]), -1))
    y = backend.asarray(ds.train[1])
    train(X, y, 200, args.batch)                              # warm up
    base, with_rec, inside, cpu_base, cpu_with, records = [], [], [], [], [], 0
    for r in range(args.repeats):                             # alternate, so load changes hit both alike
        t, _, _, c = train(X, y, args.steps, args.batch)
        base.append(t)
        cpu_base.append(c)
        t, records, t_in, c = train(X, y, args.steps, args.batch, every=args.every)
        with_rec.append(t)
        inside.append(t_in)
        cpu_with.append(c)
        print(f"  repeat {r + 1}: without {base[-1]:.3f}s (cpu {cpu_base[-1]:.3f}s)  with {t:.3f}s "
              f"(cpu {c:.3f}s)", flush=True)
    mb, mw = statistics.median(base), statistics.median(with_rec)
    overhead = (mw - mb) / mb
    cb, cw = statistics.median(cpu_base), statistics.median(cpu_with)
    cpu_overhead = (cw - cb) / cb
    share = statistics.median(t / w for t, w in zip(inside, with_rec))
    print(f"\n| run ({args.steps} steps, batch {args.batch}) | median wall s | median CPU s | µs/step (wall) |")
    print("|---|---|---|---|")
    print(f"| without recorder | {mb:.3f} | {cb:.3f} | {mb / args.steps * 1e6:.0f} |")
    print(f"| recorder every {args.every} steps ({records} records) | {mw:.3f} | {cw:.3f} | "
          f"{mw / args.steps * 1e6:.0f} |")
    print(f"\noverhead (goal <= 5%): wall {overhead:+.1%}, CPU {cpu_overhead:+.1%}; time inside the recorder's "
          f"calls: {share:.2%} of the run.  data: {ds.source}")
    threads = {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    result = {"benchmark": "scope_overhead", "net": [784, 30, 30, 30, 10], "steps": args.steps, "batch": args.batch,
              "every": args.every, "repeats": args.repeats, "records": records, "seconds_without": base,
              "seconds_with": with_rec, "median_without": mb, "median_with": mw, "overhead": overhead,
              "cpu_seconds_without": cpu_base, "cpu_seconds_with": cpu_with,
              "median_cpu_without": cb, "median_cpu_with": cw, "cpu_overhead": cpu_overhead,
              "seconds_inside_recorder": inside, "share_inside_recorder": share,
              "data": ds.source, "threads_env": threads, "cpus": os.cpu_count(), "numpy": np.__version__,
              "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
