"""Where a training step's time goes at 1 and 2 threads: per layer and phase (forward, backward, cost, update),
the wall time, the calling thread's CPU time and the other threads' CPU time (issue 11's 2-thread scaling).

A phase whose "other" column is 0 ran on one thread (a serial section); one whose 2-thread wall time is no
better than its 1-thread time gained nothing from the second core (on this 2-core Firecracker VM a sleeping
worker takes ~50 us to wake: an idle vCPU halts at once, ``haltpoll.guest_halt_poll_ns=0``). Also per step:
the minor page faults and the kernel (system) CPU time, which count memory handed back to the kernel and
faulted in again, and the number of parallel sections (thread hand-overs). The nets and steps are
cpu_speed.py's; medians over the steps. Wall-clock columns mean something only on an idle machine; the
fault, system-time and section counts do not depend on the load.

Sleeps: the process's voluntary context switches (all threads), per phase and per step at 2 threads. Each is a
thread that blocked (on the job queue, on the caller's wait, or on the GIL while the other thread held it) and
whose core may then halt: on issue 11's VM each costs a ~30-50 us wake-up. Fewer sleeps a step is what the
thread pool's and the conv chunks' design aims at; the count moves with the load far less than the times do.

A Sequential's ``Conv2d → MaxPool2d(2) → σ`` that runs as one pass (``nn/fuse.py``) is one row, "i-j ConvPool".

Reading the 2-thread / 1-thread ratio: it is the idle machine's number only on an idle machine, and only with the
core-to-core round trip printed beside it (``common.core_to_core_ns``): the VM's host moves its two vCPUs between
cores that share an L3 (~90-200 ns) and cores apart (~390-430 ns) within minutes, and the ratio moves with it
(rung 1 at m=64, own kernels, idle, 21:34-21:41: 1.44-1.61 at ~100-150 ns, 1.14-1.35 at ~400 ns; the same command
two minutes apart read 1.55 and 1.16). That, not the method, is why this and cpu_speed.py disagreed: run back to
back in the same state they agree. Beside other
users' processes at normal priority the worker waits for a core and the ratio collapses (rung 1 at m=64 read 1.07
at 19:27 in a window the load average called idle, against cpu_speed.py's 1.47 minutes before;
``compare`` below and cpu_speed.py's ``training_speed`` read 1.54-1.59 and 1.51-1.55 run alternately in one
process under ``chrt -f 10`` at load 4-5, 20:42). Under ``chrt -f 10`` beside busy processes the cores never
halt, so a wake-up is cheap and the ratio reads higher than on the idle machine (rung 1 unfused 1.56-1.58 chrt'd
vs 1.47 idle): compare variants alternating, in one process, and take the idle machine's run as the number.

What the far placement costs (``--probe``, measured 22:49-23:00 UTC, chrt'd, this VM): a parallel section of two
~3.5 us shards takes ~19-22 us with the cores close and ~50 us apart (7.5 us on one thread); two threads calling a
small NumPy function in turn pay ~0.2 us a call for the GIL hand-over close and ~2.8 us apart; a thread overwriting 1 MB
that the other thread last read pays ~17 us close and ~124 us apart (that it last wrote: ~31 us; that it read itself:
~16 us), reading 1 MB the other wrote ~23 against ~20 us. So a step loses, apart, ~30 us a parallel section, a few us
each time the two threads' Python work interleaves, and ~0.1 ms a MB that one thread rewrites after the other read it
(rung 1's serial SGD update rewrote the 1.15 MB weight the worker had read: 165 us apart, 32 us close). Again at
01:19-01:22 UTC (the threads pinned to the two cores, 1 MB, chrt'd): apart (377-399 ns) overwriting what the other
read 117-121 us a MB, what it wrote 28, reading what it wrote 32; close (103-140 ns) 21 / 16 / 21; own lines 16-19.
And in the step (01:03, landed code, rung 1 at m=64, Haswell kernels, 2 threads, us): apart against close, the
serial update 154 against 29 (it reads the half of W.grad the worker wrote and rewrites the half of W it read),
ConvPool forward 477 against 380 (4.0 sleeps against 1.35: the two threads' Python interleaves), Linear forward
252 / 210, Linear backward 438 / 402, ConvPool backward 437 / 376; the step 1,946 against 1,578 (1 thread 2,560).

``--ab NAME=VALUE,...`` compares, in one process and alternating (rounds of steps, medians), the current
settings of ``deepscope.cpu`` with the variant (e.g. the thread pool's awake wait off, the old 512 KB conv
chunks): the 2-thread / 1-thread throughput of each, for a change's effect on the idle machine in a minute.

    python benchmarks/thread_profile.py                       # rung1,rung3,dropout at m=64
    python benchmarks/thread_profile.py --nets rung1 --batches 64,256 --steps 40
    python benchmarks/thread_profile.py --nets rung1,dropout --batches 64 \
        --ab WAIT_AWAKE_US=0,COLUMN_BYTES_PER_CHUNK_MAX=524288 --out thread_profile_ab.json
    python benchmarks/thread_profile.py --nets rung1,dropout --batches 64 --steps 10 --rounds 9 --ab FUSE_CONV_POOL=0
    python benchmarks/thread_profile.py --nets rung1 --set GEMM_BLOCKS=4     # a profile with other settings
    python benchmarks/thread_profile.py --nets rung1 --batches 64 --steps 10 --rounds 9 --ab FORWARD_BY_INPUTS=0
    python benchmarks/thread_profile.py --nets rung1,rung3,dropout --batches 64,256 --steps 10 --rounds 12 --ab CONV_POOL_ONE_CALL=0
    python benchmarks/thread_profile.py --nets rung1,dropout --batches 64 --steps 10 --rounds 11 --ab HAND_OUT_AT_CALL=0
    python benchmarks/thread_profile.py --nets rung1 --batches 64 --steps 10 --rounds 21 \
        --ab LINEAR_BACKWARD_ONE_CALL=0,FUSE_LINEAR_SIGMOID_BY_INPUTS=0,SMALL_PRODUCT_MIN_INPUTS=256
    python benchmarks/thread_profile.py --probe     # a section's price, a MB taken from the other core, the round trip
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import cpu_speed  # noqa: E402
from common import core_to_core_ns, machine, write_json  # noqa: E402

import deepscope  # noqa: E402
from deepscope import cpu  # noqa: E402


def _sleeps() -> int:
    """The process's voluntary context switches so far (every thread's)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw


def _workers_cpu() -> float:
    """The CPU seconds deepscope's worker threads have run, each read from its own clock: the process's clock
    (``time.process_time``) adds another thread's time only at its context switches and the scheduler's ticks, so it
    missed most of a worker that waits awake (cpu.GIL_GRACE_US, PARK_US) and rarely sleeps."""
    total = 0.0
    for th in threading.enumerate():
        if th.name.startswith("deepscope") and th.ident is not None:
            try:
                total += time.clock_gettime(time.pthread_getcpuclockid(th.ident))
            except OSError:         # the thread has just ended
                pass
    return total


def _timed(record, key, fn):
    def wrapper(*args):
        s0 = _sleeps()
        w0, m0, o0 = time.perf_counter(), time.thread_time(), _workers_cpu()
        out = fn(*args)
        w1, m1, o1 = time.perf_counter(), time.thread_time(), _workers_cpu()
        record.setdefault(key, []).append((w1 - w0, m1 - m0, o1 - o0, _sleeps() - s0))
        return out
    return wrapper


def profile(name, batch, steps):
    """{threads: {"phases": {phase: (wall, own CPU, other threads' CPU) medians, s}, "step": {...}}}."""
    runner = cpu_speed.Deepscope(name, batch)
    record, sections = {}, [0]
    for i, m in enumerate(runner.net):
        m.forward = _timed(record, f"{i} {type(m).__name__} forward", m.forward)
        m.backward = _timed(record, f"{i} {type(m).__name__} backward", m.backward)
    for i, run in runner.net._fused_runs().items():        # Conv2d → MaxPool2d(2) → σ run as one pass (nn/fuse.py)
        key = f"{i}-{i + len(run.modules) - 1} ConvPool"
        run.forward = _timed(record, f"{key} forward", run.forward)
        run.backward = _timed(record, f"{key} backward", run.backward)
    runner.cost.forward = _timed(record, "cost forward", runner.cost.forward)
    runner.cost.backward = _timed(record, "cost backward", runner.cost.backward)
    runner.opt.zero_grad = _timed(record, "zero_grad", runner.opt.zero_grad)
    runner.opt.step = _timed(record, "update", runner.opt.step)
    pool_run = cpu._Pool.run

    def counted(pool, fn, shards, *rest):
        sections[0] += 1
        return pool_run(pool, fn, shards, *rest)

    out = {}
    cpu._Pool.run = counted
    try:
        for threads in (1, 2):
            cpu_speed.set_threads(threads)
            for _ in range(3):
                runner.step()
            record.clear()
            sections[0] = 0
            walls, cpus = [], []
            r0 = resource.getrusage(resource.RUSAGE_SELF)
            for _ in range(steps):
                w0, p0 = time.perf_counter(), time.thread_time() + _workers_cpu()
                runner.step()
                walls.append(time.perf_counter() - w0)
                cpus.append(time.thread_time() + _workers_cpu() - p0)
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            out[threads] = {
                "phases": {k: [statistics.median(x[j] for x in v) for j in range(3)] + [sum(x[3] for x in v) / steps]
                           for k, v in record.items()},
                "step": {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus),
                         "minor_faults": (r1.ru_minflt - r0.ru_minflt) / steps,
                         "system_cpu_s": (r1.ru_stime - r0.ru_stime) / steps,
                         "sleeps": (r1.ru_nvcsw - r0.ru_nvcsw) / steps,
                         "parallel_sections": sections[0] / steps}}
    finally:
        cpu._Pool.run = pool_run
    return out


def section_cost_us(repeats=300):
    """The wall time of a parallel section whose two shards take ~3.5 us each (NumPy's exp over 10,000 floats), with
    ~100 us of serial Python work before each, at 1 and at 2 threads: the hand-over's price, in us (medians)."""
    a = np.ones(20_000, np.float32)
    o = np.empty_like(a)

    def shard(s, e):
        np.exp(a[s * 10_000:e * 10_000], out=o[s * 10_000:e * 10_000])

    out = {}
    for threads in (1, 2):
        deepscope.set_num_threads(threads)
        times = []
        for _ in range(repeats):
            end = time.perf_counter() + 1e-4
            while time.perf_counter() < end:
                pass
            t0 = time.perf_counter()
            cpu.parallel(shard, 2)
            times.append(time.perf_counter() - t0)
        out[threads] = statistics.median(times) * 1e6
    return out


def transfer_cost_us_per_mb(nbytes=1 << 20, repeats=100):
    """What this thread pays to overwrite (``fill``) 1 MB that it last read itself and that the other thread last
    read, and to read it (an add into a buffer of its own) after itself and after the other thread wrote it, in us
    a MB (medians): the price of a core taking cache lines the other core holds. The two threads are pinned to two
    different cores for the measurement (else the scheduler may run the other thread on this thread's core while
    this one waits, and both readings are a single core's: the probe of 01:03 UTC read 16 us a MB for both at a
    390 ns round trip). {"rewrite": {"own", "other"}, "read_written": {"own", "other"}}; None without two cores."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:      # not Linux
        return None
    if len(cores) < 2:
        return None
    a, sink, sink2 = (np.zeros(nbytes // 4, np.float32) for _ in range(3))
    ask, done, task = threading.Event(), threading.Event(), [None]

    def other():
        os.sched_setaffinity(0, {cores[1]})         # (0: the calling thread)
        while True:
            ask.wait()
            ask.clear()
            if task[0] is None:
                return
            if task[0] == "read":
                np.add(a, 0, out=sink2)
            else:
                a.fill(2.0)
            done.set()

    def by_other(what):
        task[0] = what
        ask.set()
        done.wait()
        done.clear()

    helper = threading.Thread(target=other, daemon=True)
    os.sched_setaffinity(0, {cores[0]})
    helper.start()
    out = {"rewrite": {}, "read_written": {}}
    try:
        for key, first, then in (("rewrite", "read", lambda: a.fill(1.0)),
                                 ("read_written", "write", lambda: np.add(a, 0, out=sink))):
            for who in ("own", "other"):
                times = []
                for _ in range(repeats):
                    if who == "other":
                        by_other(first)
                    elif first == "read":
                        np.add(a, 0, out=sink)
                    else:
                        a.fill(3.0)
                    t0 = time.perf_counter()
                    then()
                    times.append(time.perf_counter() - t0)
                out[key][who] = statistics.median(times) * 1e6 / (nbytes / 2 ** 20)
    finally:
        task[0] = None
        ask.set()
        helper.join()
        os.sched_setaffinity(0, cores)
    return out


def _settings(text):
    """``NAME=VALUE,...`` (integers) as {name: value} for ``deepscope.cpu``'s module settings."""
    out = {}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        if not hasattr(cpu, name.strip()):
            raise SystemExit(f"thread_profile.py: error: deepscope.cpu has no setting {name.strip()!r}")
        out[name.strip()] = int(value, 0)
    return out


def compare(name, batch, variant, rounds, steps):
    """Median wall time a step at 1 and 2 threads with the current settings and with ``variant``, alternating in
    rounds of ``steps`` steps: {"current"|"variant": {"1": s, "2": s, "min_1": s, "min_2": s, "sleeps_2": per step,
    "cpu_2": s}}: the medians, the fastest rounds, and at 2 threads the sleeps and the CPU seconds of both threads (each
    read from its own clock; a worker waiting awake counts) a step."""
    runner = cpu_speed.Deepscope(name, batch)
    current = {k: getattr(cpu, k) for k in variant}
    times = {(v, t): [] for v in ("current", "variant") for t in (1, 2)}
    sleeps, cpu_2 = {"current": [], "variant": []}, {"current": [], "variant": []}
    try:
        for r in range(rounds):
            for threads in (1, 2):
                cpu_speed.set_threads(threads)
                arms = (("current", current), ("variant", variant))
                for which, settings in arms[::-1] if r % 2 else arms:   # each arm first after the thread switch
                    # in turn: the first arm had read ~1-2% slower at 1 thread, where the arms cannot differ
                    for k, v in settings.items():
                        setattr(cpu, k, v)
                    runner.step()
                    s0, w0, c0 = _sleeps(), time.perf_counter(), time.thread_time() + _workers_cpu()
                    for _ in range(steps):
                        runner.step()
                    times[which, threads].append((time.perf_counter() - w0) / steps)
                    if threads == 2:
                        sleeps[which].append((_sleeps() - s0) / steps)
                        cpu_2[which].append((time.thread_time() + _workers_cpu() - c0) / steps)
    finally:
        for k, v in current.items():
            setattr(cpu, k, v)
    return {which: {"1": statistics.median(times[which, 1]), "2": statistics.median(times[which, 2]),
                    "min_1": min(times[which, 1]), "min_2": min(times[which, 2]),
                    "sleeps_2": statistics.median(sleeps[which]), "cpu_2": statistics.median(cpu_2[which])}
            for which in ("current", "variant")}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", default="rung1,rung3,dropout")
    ap.add_argument("--batches", default="64")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--ab", default=None, metavar="NAME=VALUE,...",
                    help="compare the current deepscope.cpu settings with these (alternating, one process) instead")
    ap.add_argument("--rounds", type=int, default=9, help="--ab: alternating rounds (of --steps steps)")
    ap.add_argument("--probe", action="store_true",
                    help="only measure a parallel section's price and that of cache lines the other core holds")
    ap.add_argument("--set", default="", metavar="NAME=VALUE,...", help="run with these deepscope.cpu settings")
    ap.add_argument("--out", default="thread_profile.json", help="a file name: written under benchmarks/results/; a path with a folder: written there")
    args = ap.parse_args(argv)
    for name, value in _settings(args.set).items():
        setattr(cpu, name, value)
    load_before = os.getloadavg()
    c2c_before = core_to_core_ns()
    print(f"core-to-core round trip: {c2c_before} ns (~100-200: the vCPUs share an L3; ~400: apart)")
    rows = []
    if args.probe:
        sec, moved = section_cost_us(), transfer_cost_us_per_mb()
        print(f"a parallel section of 2 x ~3.5 us: {sec[1]:.1f} us on 1 thread, {sec[2]:.1f} us on 2")
        if moved is not None:
            (rw, rd) = moved["rewrite"], moved["read_written"]
            print(f"a MB overwritten after this thread read it {rw['own']:.0f} us, after the other thread read it "
                  f"{rw['other']:.0f}; read after this thread wrote it {rd['own']:.0f} us, after the other wrote it "
                  f"{rd['other']:.0f}")
        print(f"core-to-core round trip after: {core_to_core_ns()} ns")
        rows.append({"section_us": sec, "transfer_us_per_mb": moved})
        args.nets = ""
    if args.ab is not None and args.nets:
        variant = _settings(args.ab)
        print(f"current deepscope.cpu settings against {variant}: wall a step (median of {args.rounds} alternating "
              f"rounds of {args.steps} steps)")
        for name in args.nets.split(","):
            for batch in map(int, args.batches.split(",")):
                r = compare(name, batch, variant, args.rounds, args.steps)
                for which in ("current", "variant"):
                    t = r[which]
                    print(f"{name:8} m={batch:<4} {which:8} 1 thread {t['1'] * 1e6:7.0f} us, 2 threads {t['2'] * 1e6:7.0f} us"
                          f" ({t['sleeps_2']:.1f} sleeps, CPU {t['cpu_2'] * 1e6:.0f} us), 2t/1t {t['1'] / t['2']:.2f}"
                          f" (fastest rounds {t['min_1'] / t['min_2']:.2f})")
                rows.append({"net": name, "batch": batch, "variant": variant, **r})
    for name in ([] if args.ab is not None else filter(None, args.nets.split(","))):
        for batch in map(int, args.batches.split(",")):
            p = profile(name, batch, args.steps)
            one, two = p[1], p[2]
            print(f"\n{name} m={batch} (us; 2 threads: wall, calling thread's CPU, the workers' CPU)")
            print(f"{'phase':24} {'1t wall':>8} | {'2t wall':>8} {'own':>7} {'other':>7} {'sleeps':>6} | {'1t/2t':>5}")
            for k, (w1, *_) in one["phases"].items():
                w2, own, other, sleeps = two["phases"][k]
                print(f"{k:24} {w1 * 1e6:8.0f} | {w2 * 1e6:8.0f} {own * 1e6:7.0f} {other * 1e6:7.0f} {sleeps:6.2f} | "
                      f"{w1 / max(w2, 1e-9):5.2f}")
            for t in (1, 2):
                s = p[t]["step"]
                print(f"step at {t} thread(s): wall {s['wall_s'] * 1e6:.0f} us, CPU {s['cpu_s'] * 1e6:.0f} us, "
                      f"{s['minor_faults']:.0f} page faults, system CPU {s['system_cpu_s'] * 1e6:.0f} us, "
                      f"{s['parallel_sections']:.1f} parallel sections, {s['sleeps']:.1f} sleeps")
            scaling = one["step"]["wall_s"] / two["step"]["wall_s"]
            print(f"2-thread / 1-thread throughput: {scaling:.2f}")
            rows.append({"net": name, "batch": batch, "threads": {str(t): p[t] for t in (1, 2)},
                         "scaling_2_over_1": scaling})
    commit = subprocess.run(["git", "-C", str(Path(deepscope.__file__).parent), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    info = {"command": "python benchmarks/thread_profile.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "deepscope_commit": commit or None,     # the checkout the library was imported from
            "machine": machine(), "steps": args.steps, "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "core_to_core_round_trip_ns": {"before": c2c_before, "after": core_to_core_ns()}}
    path = write_json(args.out, {**info, "rows": rows})
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
