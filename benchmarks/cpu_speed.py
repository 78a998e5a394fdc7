"""Every core of the CPU (issue 11): deepscope against PyTorch (CPU) at 1 and 2 threads, in one process.

For FC 784-100-10 (sigmoid), rung 1, rung 3 and the dropout net (nets as in conv_speed.py, log-likelihood
cost, plain SGD, the first layer skipping ∂C/∂x in both frameworks) at mini-batches 10, 64 and 256 it
measures training images/s of deepscope and PyTorch with 1 and with 2 threads (``deepscope.set_num_threads``
and ``torch.set_num_threads`` switched in the same process). Each repeat times all four (framework × threads)
in a rotating order; the table gives medians of the repeats. Each turn starts once the other framework's threads
have stopped running (PyTorch's OpenMP workers spin on after its turn: 6-7 ms of CPU time inside deepscope's next
turn, rung 1 at m=64) and after one untimed step at the turn's thread count (switching costs deepscope a new thread
pool and PyTorch a resized OpenMP team: +0.9-1.5 ms on the first step of a turn); the JSON gives the CPU time the
other framework's threads ran in each turn (``other_framework_cpu_ms_per_turn``, ~0). Also, in the same run:

  * scaling: deepscope's 2-thread / 1-thread throughput, and before and after the run what the machine gave two
    threads (``common.core_to_core_ns`` and ``common.fma_scaling``: 2t/1t of multiply-adds in the registers);
  * the float32 GEMM peak at 1 and 2 threads (a 2048³ NumPy matmul, OpenBLAS at that many threads) and
    the fraction of it each training run reaches (FLOPs per image: 3 × 2 × multiply-adds of the conv and FC
    layers, as conv_speed.py);
  * [784,30,10] (sigmoid, cross-entropy, ``fit``) against a network2.py-style per-example loop at m = 10
    and 64 (fc_speed.py's loop), 1 thread: images/s from median wall times, and the CPU time a step from the
    smallest of the repeats (steadier on a loaded machine);
  * peak memory of a training step (peak-RSS growth over two steps, in a fresh process after warm-up steps
    at mini-batch 2 and at the measured one and malloc_trim, both frameworks at 2 threads);
  * the OpenBLAS spin-wait check behind deepscope's default: 64×784 by 784×100 GEMMs with OpenBLAS's own 2
    threads against one, while the other engineers' processes load the machine.

    python benchmarks/cpu_speed.py                 # writes benchmarks/results/cpu_speed.json
    python benchmarks/cpu_speed.py --quick         # a quick check that it runs
    python benchmarks/cpu_speed.py --network2-only --repeats 15   # only [784,30,10] against the loop (~10 s)
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import deepscope as ds
from deepscope import cpu, nn, optim
from deepscope.train import step

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import conv_speed  # noqa: E402
from common import core_to_core_ns, fma_scaling, write_json  # noqa: E402
import fc_speed  # noqa: E402

NETS = ("fc100", "rung1", "rung3", "dropout")
BATCHES = (10, 64, 256)


class Deepscope(conv_speed.DeepscopeRunner):
    """conv_speed's runner (nets as there, FC 784-100-10 included), no ∂C/∂x for the data; ``step()`` trains."""

    def __init__(self, name, batch, seed=0):
        super().__init__(name, batch, seed, input_grad=False)

    def step(self):
        self.train_step()


class Torch(conv_speed.TorchRunner):
    """The same net in PyTorch (conv_speed's runner); ``step()`` trains."""

    def step(self):
        self.train_step()


def set_threads(n):
    ds.set_num_threads(n)
    torch.set_num_threads(n)


def flops_per_image(name):
    """2 × multiply-adds of the conv and FC layers for one image (forward)."""
    return conv_speed.flops_per_image(conv_speed.build_deepscope(name))


def gemm_peak(threads, repeats=7, n=2048):
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    with threadpool_limits(threads, user_api="blas"):
        a @ b
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            ts.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(ts)


def _thread_cpu_ns() -> dict:
    """{thread id: CPU time so far, ns} for every thread of this process (/proc/self/task/*/schedstat; {} elsewhere)."""
    out = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                out[int(tid)] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


QUIET_NS = 2_000_000        # a turn starts once no other thread of the process has run for this long ...
QUIET_WAIT_S = 0.5          # ... or after this long at most


def wait_quiet():
    """Wait until every thread but this one has stopped running for ``QUIET_NS``: the framework timed before has
    handed its cores back (PyTorch's OpenMP workers spin-wait up to several ms after a parallel region, libgomp's
    default; deepscope's parked workers up to 0.3 ms). Returns the seconds
    waited."""
    me, t0 = threading.get_native_id(), time.perf_counter()
    last, still = _thread_cpu_ns(), time.perf_counter()
    while time.perf_counter() - t0 < QUIET_WAIT_S:
        time.sleep(0.0005)
        now = _thread_cpu_ns()
        if any(v != last.get(tid) for tid, v in now.items() if tid != me):
            still = time.perf_counter()
        elif time.perf_counter() - still >= QUIET_NS / 1e9:
            break
        last = now
    return time.perf_counter() - t0


def training_speed(name, batch, repeats, images, threads=(1, 2)):
    """{(framework, threads): median images/s}, all four timed in each repeat in a rotating order. Each turn
    starts on a quiet process (:func:`wait_quiet`: the other framework's threads have stopped spinning) and
    after one untimed step at its thread count (deepscope starts its thread pool for a new count, PyTorch
    resizes its OpenMP team: a cost of switching, not of a training step). Also returns, per (framework,
    threads), the median CPU ms a turn that the other framework's threads ran (0 when the turns are fair)."""
    iters = max(2, images // batch)
    runners = {"deepscope": Deepscope(name, batch), "pytorch": Torch(name, batch)}
    keys = [(fw, t) for t in threads for fw in runners]
    times = {k: [] for k in keys}
    intrusion = {k: [] for k in keys}
    for fw, t in keys:                                  # warm-up: first-call costs, allocations, compilation
        set_threads(t)
        for _ in range(2):
            runners[fw].step()
    for rep in range(repeats):
        for fw, t in keys[rep % len(keys):] + keys[:rep % len(keys)]:
            set_threads(t)
            wait_quiet()
            runners[fw].step()
            c0 = _thread_cpu_ns()
            t0 = time.perf_counter()
            for _ in range(iters):
                runners[fw].step()
            times[(fw, t)].append(time.perf_counter() - t0)
            c1 = _thread_cpu_ns()
            ours = {th.native_id for th in threading.enumerate() if th.name.startswith("deepscope")}
            others = [tid for tid in c1 if tid != threading.get_native_id() and (tid in ours) == (fw == "pytorch")]
            intrusion[(fw, t)].append(sum(c1[tid] - c0.get(tid, 0) for tid in others) / 1e6)
    return ({k: iters * batch / statistics.median(v) for k, v in times.items()},
            {k: statistics.median(v) for k, v in intrusion.items()})


def network2_comparison(repeats, images):
    """[784,30,10]: deepscope's fit against the per-example loop, 1 thread, m = 10 and 64: images/s from the median
    wall time of the repeats (alternating), and the CPU time a step from the smallest (which the other processes of
    a loaded machine barely move)."""
    set_threads(1)
    rng = np.random.default_rng(0)
    X = rng.random((images, 784), dtype=np.float32)
    y = rng.integers(0, 10, images)
    rows = []
    for m in (10, 64):
        fns = {"deepscope": fc_speed.deepscope_run([784, 30, 10], X, y, m),
               "network2": fc_speed.network2_run([784, 30, 10], X, y, m)}
        for fn in fns.values():
            fn()
        times, cpu_times = {k: [] for k in fns}, {k: [] for k in fns}
        for _ in range(repeats):
            for k, fn in fns.items():
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                times[k].append(time.perf_counter() - t0)
                cpu_times[k].append(time.process_time() - c0)
        ips = {k: images / statistics.median(v) for k, v in times.items()}
        steps = -(-images // m)
        cpu_us = {k: 1e6 * min(v) / steps for k, v in cpu_times.items()}
        rows.append({"net": "[784,30,10]", "batch": m, "deepscope_images_per_s": ips["deepscope"],
                     "network2_images_per_s": ips["network2"], "ratio": ips["deepscope"] / ips["network2"],
                     "deepscope_cpu_us_per_step": cpu_us["deepscope"], "network2_cpu_us_per_step": cpu_us["network2"],
                     "cpu_time_ratio": cpu_us["network2"] / cpu_us["deepscope"]})
    return rows


def blas_spin_check(repeats=200):
    """Median ms of a 64×784 by 784×100 GEMM with OpenBLAS at 1 and at 2 of its own threads."""
    rng = np.random.default_rng(0)
    a, b = rng.random((64, 784), dtype=np.float32), rng.random((784, 100), dtype=np.float32)
    out = {}
    for t in (1, 2, 1, 2):
        with threadpool_limits(t, user_api="blas"):
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                a @ b
                ts.append(time.perf_counter() - t0)
        out.setdefault(f"openblas_{t}_threads", []).append({"median_ms": 1e3 * statistics.median(ts),
                                                              "max_ms": 1e3 * max(ts)})
    return out


MEMORY_CHILD = """
import ctypes, gc, json, sys
sys.path.insert(0, {here!r})
import cpu_speed as c, conv_speed as cs
c.set_threads({threads})
make = c.Deepscope if {fw!r} == "deepscope" else c.Torch
warm = make({name!r}, 2)          # imports, compiled kernels, first-call set-up: not a step's memory
warm.step()
warm = make({name!r}, {batch})    # a step at the measured batch: every thread either framework runs there has
warm.step()                       # started (its stack, malloc arena, BLAS buffer: once a process, not a step)
r = make({name!r}, {batch})
del warm
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)   # hand freed heap back, so the peak below is the step's own
open("/proc/self/clear_refs", "w").write("5")
base = cs._vm("VmRSS")
r.step()
r.step()
print(json.dumps(cs._vm("VmHWM") - base))
"""


def memory(name, batch, threads):
    """Peak memory of a training step: the peak-RSS growth over two steps at mini-batch ``batch``, in a fresh
    process per framework, after a warm-up step at mini-batch 2 and one at ``batch`` (imports, compiled kernels,
    first-call set-up and the first use of each thread are not a step's memory) and ``malloc_trim``."""
    out = {}
    for fw in ("deepscope", "pytorch"):
        code = MEMORY_CHILD.format(here=str(HERE), threads=threads, fw=fw, name=name, batch=batch)
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        out[fw] = int(res.stdout.strip().splitlines()[-1])
    return out


def load():
    return os.getloadavg()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None, help="default 5 (3 with --quick)")
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--network2-only", action="store_true", help="only [784,30,10] against the network2 loop")
    ap.add_argument("--out", default="cpu_speed.json", help="a file name: written under benchmarks/results/; a path with a folder: written there")
    args = ap.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 5)
    images = 256 if args.quick else 1280
    load_before = load()
    print(f"load average before: {load_before}")
    c2c_before = core_to_core_ns()
    print(f"core-to-core round trip before: {c2c_before} ns (~100-200: the vCPUs share an L3; ~400: apart)")
    fma_before = fma_scaling()
    print(f"2t/1t of multiply-adds in the registers before: {fma_before} (~2.0: two cores; ~1.0: one core's two "
          f"hardware threads)")
    print(f"Linear's small products by compiled loops (they beat this BLAS): {cpu.loops_beat_blas()}")
    print(f"fewest multiply-adds in a GEMM block of cached operands: {cpu.gemm_block_macs(0):,} (OpenBLAS's "
          f"AVX-512 kernels: {cpu.blas_runs_avx512()})")
    if args.network2_only:
        args.nets = ""
    peaks, spin = {}, {}
    if args.nets:
        peaks = {t: gemm_peak(t) for t in (1, 2)}
        print(f"float32 GEMM peak: 1 thread {peaks[1] / 1e9:.1f} GFLOP/s, 2 threads {peaks[2] / 1e9:.1f} GFLOP/s")
        spin = blas_spin_check()
        print("OpenBLAS 64x784x100 GEMM, ms (median, max):",
              {k: [(round(v['median_ms'], 3), round(v['max_ms'], 1)) for v in vs] for k, vs in spin.items()})
    header = (f"{'net':8} {'m':>4} | {'ds 1t':>7} {'pt 1t':>7} {'ratio':>5} | {'ds 2t':>7} {'pt 2t':>7} {'ratio':>5} | "
              f"{'ds 2t/1t':>8} | {'%peak 1t':>8} {'%peak 2t':>8} | {'mem ds/pt':>9}")
    if args.nets:
        print(header + "\n" + "-" * len(header))
    rows = []
    for name in filter(None, args.nets.split(",")):
        fpi = flops_per_image(name)
        for batch in map(int, args.batches.split(",")):
            s, other_cpu = training_speed(name, batch, repeats, images)
            row = {"net": name, "batch": batch, "flops_per_image_forward": fpi,
                   "images_per_s": {f"{fw}_{t}thread": v for (fw, t), v in s.items()},
                   "other_framework_cpu_ms_per_turn": {f"{fw}_{t}thread": v for (fw, t), v in other_cpu.items()},
                   "ratio_1thread": s[("deepscope", 1)] / s[("pytorch", 1)],
                   "ratio_2threads": s[("deepscope", 2)] / s[("pytorch", 2)],
                   "deepscope_scaling_2_over_1": s[("deepscope", 2)] / s[("deepscope", 1)],
                   "pytorch_scaling_2_over_1": s[("pytorch", 2)] / s[("pytorch", 1)],
                   "deepscope_fraction_of_gemm_peak": {f"{t}thread": s[("deepscope", t)] * 3 * fpi / peaks[t]
                                                       for t in (1, 2)}}
            mem = "      n/a"
            if not args.no_memory:
                row["peak_rss_growth_bytes_2threads"] = m = memory(name, batch, 2)
                row["memory_ratio"] = m["deepscope"] / max(1, m["pytorch"])
                mem = f"{row['memory_ratio']:9.2f}"
            rows.append(row)
            f = row["deepscope_fraction_of_gemm_peak"]
            print(f"{name:8} {batch:4d} | {s[('deepscope', 1)]:7.0f} {s[('pytorch', 1)]:7.0f} {row['ratio_1thread']:5.2f} | "
                  f"{s[('deepscope', 2)]:7.0f} {s[('pytorch', 2)]:7.0f} {row['ratio_2threads']:5.2f} | "
                  f"{row['deepscope_scaling_2_over_1']:8.2f} | {100 * f['1thread']:7.1f}% {100 * f['2thread']:7.1f}% | "
                  f"{mem}", flush=True)
    ratios = [r[k] for r in rows for k in ("ratio_1thread", "ratio_2threads")]
    geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios)) if ratios else None
    if ratios:
        print(f"geometric mean of the deepscope/PyTorch ratios: {geomean:.2f} (min {min(ratios):.2f})")
    n2 = network2_comparison(repeats, 1000 if args.quick else 5000)
    for r in n2:
        print(f"[784,30,10] m={r['batch']}: deepscope {r['deepscope_images_per_s']:.0f} img/s, network2 loop "
              f"{r['network2_images_per_s']:.0f} img/s: {r['ratio']:.2f}x; CPU time a step {r['deepscope_cpu_us_per_step']:.1f} "
              f"vs {r['network2_cpu_us_per_step']:.1f} us: {r['cpu_time_ratio']:.2f}x")
    load_after = load()
    print(f"load average after: {load_after}")
    c2c_after = core_to_core_ns()
    print(f"core-to-core round trip after: {c2c_after} ns")
    fma_after = fma_scaling()
    print(f"2t/1t of multiply-adds in the registers after: {fma_after}")
    result = {"command": "python benchmarks/cpu_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": conv_speed.platform.platform(), "cpu_count": os.cpu_count(), "numpy": np.__version__,
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "repeats": repeats,
              "images_per_timing": images, "load_average_before": load_before, "load_average_after": load_after,
              "core_to_core_round_trip_ns": {"before": c2c_before, "after": c2c_after},
              "fma_2_over_1": {"before": fma_before, "after": fma_after},
              "gemm_peak_flops": {f"{t}thread": p for t, p in peaks.items()}, "openblas_spin_check": spin,
              "linear_compiled_loops": cpu.loops_beat_blas(),
              "gemm_block_macs_cached": cpu.gemm_block_macs(0), "blas_avx512": cpu.blas_runs_avx512(),
              "rows": rows, "geometric_mean_ratio": geomean, "min_ratio": min(ratios) if ratios else None, "network2": n2}
    print(f"wrote {write_json(args.out, result)}")


if __name__ == "__main__":
    main()
