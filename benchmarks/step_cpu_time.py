"""CPU time of one training step at 1 thread: deepscope against PyTorch (CPU), per net and mini-batch size.

cpu_speed.py measures throughput by the wall clock, which the other processes of a loaded machine disturb (on
the shared 2-core machine of issue 11 PyTorch's 2-thread runs collapsed to a few hundred images/s). At one
thread the CPU time a step takes (``time.process_time``) is far steadier: waiting for a core is not counted.
The nets, costs and steps are cpu_speed.py's (its Deepscope and Torch runners); each repeat times both
frameworks in turn, and the table gives the smallest time per step over the repeats (the run least disturbed).

    python benchmarks/step_cpu_time.py                     # writes benchmarks/results/step_cpu_time.json
    python benchmarks/step_cpu_time.py --nets fc100 --batches 10,256 --repeats 5
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import deepscope

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import cpu_speed  # noqa: E402
from common import machine, table, write_json  # noqa: E402


def step_cpu_time(name, batch, repeats, images):
    """{framework: smallest CPU seconds per step over ``repeats``}, both frameworks timed in each repeat."""
    runners = {"deepscope": cpu_speed.Deepscope(name, batch), "pytorch": cpu_speed.Torch(name, batch)}
    iters = max(3, images // batch)
    for runner in runners.values():                    # warm-up: first-call costs, allocations, compilation
        for _ in range(3):
            runner.step()
    best = {fw: float("inf") for fw in runners}
    for _ in range(repeats):
        for fw, runner in runners.items():
            t0 = time.process_time()
            for _ in range(iters):
                runner.step()
            best[fw] = min(best[fw], (time.process_time() - t0) / iters)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", default=",".join(cpu_speed.NETS))
    ap.add_argument("--batches", default=",".join(map(str, cpu_speed.BATCHES)))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--images", type=int, default=640, help="images per timed run (at least 3 steps)")
    ap.add_argument("--out", default="step_cpu_time.json", help="file name under benchmarks/results/")
    args = ap.parse_args(argv)
    cpu_speed.set_threads(1)
    load_before = os.getloadavg()
    rows = []
    for name in args.nets.split(","):
        for batch in map(int, args.batches.split(",")):
            t = step_cpu_time(name, batch, args.repeats, args.images)
            rows.append({"net": name, "batch": batch, "deepscope_us": 1e6 * t["deepscope"],
                         "pytorch_us": 1e6 * t["pytorch"], "pytorch/deepscope": t["pytorch"] / t["deepscope"]})
            print(table(rows[-1:], list(rows[-1])).splitlines()[-1], flush=True)
    print()
    print(table(rows, list(rows[0])))
    commit = subprocess.run(["git", "-C", str(Path(deepscope.__file__).parent), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    info = {"machine": machine(), "command": "python benchmarks/step_cpu_time.py " + " ".join(argv or sys.argv[1:]),
            "deepscope_commit": commit or None,     # the checkout the library was imported from
            "threads": 1, "repeats": args.repeats, "images_per_timing": args.images,
            "load_average_before": load_before, "load_average_after": os.getloadavg()}
    path = write_json(args.out, {**info, "rows": rows})
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
