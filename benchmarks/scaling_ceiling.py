"""The machine's own ceiling for 2-thread scaling (issue 11), against deepscope's 2-thread / 1-thread throughput.

For each net and mini-batch, in rounds (the four cases alternate within a round, so they share the machine's state):
  * alone, 1 thread: one process trains for ``--seconds``;
  * two copies, 1 thread each: two processes train at once (they start together, at a barrier, after their warm-up
    steps) — their summed throughput over one copy alone is what two cores give this workload with no sharing at all
    (no thread hand-over, no serial part), their phases free to interleave: the most two cores give here;
  * two copies in lockstep, 1 thread each: one process, two threads, each training its own copy, every step of both
    started together at a barrier: their phases line up as those of one net whose every layer two threads share do
    (both cores in a GEMM at once, then both in the pooling...), with the GIL shared: the ceiling for running one
    net's steps on both cores on this machine (the free copies above interleave their phases, which a net cut
    between two threads cannot);
  * alone, 2 threads: one process, ``deepscope.set_num_threads(2)``.
Each case is a fresh process (nothing cached from the others). The lockstep case is the fair ceiling for one net: a
mini-batch's steps follow one another (each needs the weights the one before wrote), so its two threads always work
on the same phase at once. Medians over the rounds; the core-to-core round trip
before and after (``common.core_to_core_ns``: ~100-200 ns, the vCPUs share an L3; ~400, apart), and before each
round that and ``common.fma_scaling`` (2t/1t of a loop of multiply-adds in the registers: ~2.0 on two cores, ~1.0
while the host runs both vCPUs on one core's hardware threads), so that each round says what it ran on.

    python benchmarks/scaling_ceiling.py                                   # rung1,rung3,dropout at m=64 (~6 min)
    python benchmarks/scaling_ceiling.py --nets rung1 --batches 64,256 --rounds 5 --out scaling_ceiling.json
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from common import core_to_core_ns, fma_scaling, machine, write_json  # noqa: E402


def _ready(name, batch, seed, threads):
    """conv_speed's runner for ``name`` at ``threads`` deepscope threads, warmed up by 3 steps."""
    import deepscope as ds
    import conv_speed
    runner = conv_speed.DeepscopeRunner(name, batch, seed, input_grad=False)
    ds.set_num_threads(threads)
    for _ in range(3):
        runner.train_step()
    return runner


def _train(name, batch, threads, seconds, barrier, results):
    """A child process: build the net, warm up, wait at the barrier, train for ``seconds``."""
    runner = _ready(name, batch, 0, threads)
    barrier.wait()
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        runner.train_step()
        steps += 1
    results.put(steps * batch / (time.perf_counter() - t0))


def _train_lockstep(name, batch, threads, seconds, barrier, results):
    """A child process: two copies of the net, each trained by its own thread at ``threads`` (1) deepscope thread,
    every step of both started together at a barrier (it also decides, once for both, when time is up)."""
    import threading
    runners = [_ready(name, batch, seed, threads) for seed in (0, 1)]
    barrier.wait()
    steps, t0, stop = [0, 0], time.perf_counter(), [False]

    def up():
        stop[0] = time.perf_counter() - t0 >= seconds

    together = threading.Barrier(2, action=up)

    def train(i):
        while True:
            together.wait()
            if stop[0]:
                return
            runners[i].train_step()
            steps[i] += 1

    other = threading.Thread(target=train, args=(1,))
    other.start()
    train(0)
    other.join()
    results.put(sum(steps) * batch / (time.perf_counter() - t0))


def images_per_s(ctx, target, name, batch, threads, processes, seconds) -> float:
    """Summed images/s of ``processes`` processes running ``target`` (:func:`_train` or :func:`_train_lockstep`)
    on ``name`` at once, ``threads`` deepscope threads each."""
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=target, args=(name, batch, threads, seconds, barrier, results))
             for _ in range(processes)]
    for p in procs:
        p.start()
    total = sum(results.get() for _ in procs)
    for p in procs:
        p.join()
    return total


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="rung1,rung3,dropout")
    ap.add_argument("--batches", default="64")
    ap.add_argument("--seconds", type=float, default=6.0, help="timed training per case (default 6)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", help="a JSON file name (under benchmarks/results/) or path")
    args = ap.parse_args(argv)
    ctx = mp.get_context("spawn")
    c2c_before = core_to_core_ns()
    print(f"core-to-core round trip before: {c2c_before:.0f} ns (~100-200: the vCPUs share an L3; ~400: apart)")
    print(f"{'net':8} {'m':>4} | {'alone 1t':>9} {'2 copies':>9} {'lockstep':>9} {'alone 2t':>9} | {'ceiling':>7} "
          f"{'lockstep':>8} {'ds 2t/1t':>8}  (img/s)")
    rows = []
    cases = {"alone_1thread": (_train, 1, 1), "two_copies_1thread": (_train, 1, 2),      # (target, threads,
             "two_copies_lockstep": (_train_lockstep, 1, 1), "alone_2threads": (_train, 2, 1)}   #  processes)
    for name in args.nets.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            runs, state = {k: [] for k in cases}, []
            for _ in range(args.rounds):
                state.append({"core_to_core_ns": core_to_core_ns(), "fma_2_over_1": fma_scaling()})
                for k, (target, threads, processes) in cases.items():
                    runs[k].append(images_per_s(ctx, target, name, batch, threads, processes, args.seconds))
            med = {k: statistics.median(v) for k, v in runs.items()}
            row = {"net": name, "batch": batch, "images_per_s": med, "runs": runs, "machine_before_rounds": state,
                   "ceiling_2_over_1": med["two_copies_1thread"] / med["alone_1thread"],
                   "lockstep_ceiling_2_over_1": med["two_copies_lockstep"] / med["alone_1thread"],
                   "deepscope_2_over_1": med["alone_2threads"] / med["alone_1thread"],
                   "per_round_ceiling": [p / a for p, a in zip(runs["two_copies_1thread"], runs["alone_1thread"])],
                   "per_round_lockstep": [p / a for p, a in zip(runs["two_copies_lockstep"], runs["alone_1thread"])],
                   "per_round_deepscope": [t / a for t, a in zip(runs["alone_2threads"], runs["alone_1thread"])]}
            rows.append(row)
            print(f"{name:8} {batch:>4} | {med['alone_1thread']:9.0f} {med['two_copies_1thread']:9.0f} "
                  f"{med['two_copies_lockstep']:9.0f} {med['alone_2threads']:9.0f} | {row['ceiling_2_over_1']:7.2f} "
                  f"{row['lockstep_ceiling_2_over_1']:8.2f} {row['deepscope_2_over_1']:8.2f}  (rounds: "
                  + ", ".join(f"ds {d:.2f} lockstep {c:.2f} at {m['core_to_core_ns'] or 0:.0f} ns, FMA "
                              f"{m['fma_2_over_1'] or 0:.2f}" for d, c, m in zip(row["per_round_deepscope"],
                                                                                 row["per_round_lockstep"], state)) + ")",
                  flush=True)
    c2c_after = core_to_core_ns()
    print(f"core-to-core round trip after: {c2c_after:.0f} ns")
    if args.out:
        out = write_json(args.out, {"command": " ".join(["python", "benchmarks/scaling_ceiling.py", *(argv or sys.argv[1:])]),
                                    "machine": machine(), "seconds": args.seconds, "rounds": args.rounds,
                                    "core_to_core_round_trip_ns": [c2c_before, c2c_after], "rows": rows})
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
