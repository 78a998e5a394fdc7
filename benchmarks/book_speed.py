"""network2.Network.SGD on deepscope against the book's own network2.py, same data, same process.

    python benchmarks/book_speed.py [--repeats 5] [--images 10000] [--sizes 784,30,10] [--batch 10]

Both train one epoch of ``SGD(training_data, 1, m, 0.5, lmbda=5.0)`` on the first ``--images`` images of
``mnist_loader.load_data_wrapper()`` (real MNIST when deepscope finds it, else the shipped sample), starting
from the same seeds, alternating, ``--repeats`` times; the table gives the medians in images per second and
the ratio. The book's code is benchmarks/book_network2.py (its network2.py, Python 3, nothing else changed),
whose per-example loop (``backprop(x, y)`` for each x of a mini-batch) deepscope replaces by one pass of
the whole mini-batch through its layers. Wall-clock and CPU-time (this process's) medians are both given: on a
shared, loaded machine the CPU time is the steadier measure of the work each does. Because both draw the same random numbers (``np.random.randn``
weights, ``random.shuffle`` order), the weights after the epoch must agree to rounding: the largest
difference is reported too.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import sys
import time

import numpy as np

from deepscope.backend import get_num_threads
from deepscope.book import mnist_loader, network2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import book_network2  # noqa: E402
from common import machine, median, table, write_json  # noqa: E402


def one_epoch(module, sizes, data, m, seed):
    """A fresh ``module.Network(sizes)`` from ``seed``, trained one epoch on a copy of ``data``."""
    random.seed(seed)
    np.random.seed(seed)
    net = module.Network(sizes, cost=module.CrossEntropyCost)
    with contextlib.redirect_stdout(io.StringIO()):
        net.SGD(list(data), 1, m, 0.5, lmbda=5.0)
    return net


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--images", type=int, default=10000, help="training images in the timed epoch")
    p.add_argument("--sizes", default="784,30,10")
    p.add_argument("--batch", type=int, default=10, help="mini-batch size m")
    p.add_argument("--out", default="book_speed.json", help="file name under benchmarks/results/")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    training_data = mnist_loader.load_data_wrapper()[0][:args.images]
    n = len(training_data)
    times = {"deepscope": [], "book": []}
    cpu_times = {"deepscope": [], "book": []}      # this process's CPU seconds: steadier on a loaded machine
    nets = {}
    for r in range(args.repeats + 1):               # the first round warms up and is not counted
        for name, module in (("deepscope", network2), ("book", book_network2)):
            t0, c0 = time.perf_counter(), time.process_time()
            nets[name] = one_epoch(module, sizes, training_data, args.batch, seed=r)
            if r:
                times[name].append(time.perf_counter() - t0)
                cpu_times[name].append(time.process_time() - c0)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(nets["deepscope"].weights + nets["deepscope"].biases,
                                                          nets["book"].weights + nets["book"].biases))
    ips = {k: n / median(v) for k, v in times.items()}
    cpu_ips = {k: n / median(v) for k, v in cpu_times.items()}
    row = {"net": str(sizes), "batch": args.batch, "images": n, "deepscope img/s": ips["deepscope"],
           "book img/s": ips["book"], "speed-up": ips["deepscope"] / ips["book"],
           "deepscope img/CPU-s": cpu_ips["deepscope"], "book img/CPU-s": cpu_ips["book"],
           "CPU speed-up": cpu_ips["deepscope"] / cpu_ips["book"], "max |Δw| after 1 epoch": f"{diff:.1e}"}
    cols = ["net", "batch", "images", "deepscope img/s", "book img/s", "speed-up", "deepscope img/CPU-s",
            "book img/CPU-s", "CPU speed-up", "max |Δw| after 1 epoch"]
    print(table([row], cols))
    info = {"machine": machine(), "load_average": os.getloadavg(),
            "note": "shared machine (about 8 engineers' jobs); ratios are measured alternating in one process",
            "command": "python benchmarks/" + " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
            "threads": get_num_threads(), "repeats": args.repeats, "times": times, "cpu_times": cpu_times}
    path = write_json(args.out, {**info, "rows": [row]})
    print(f"\nwritten to {os.path.relpath(path, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}")


if __name__ == "__main__":
    main()
