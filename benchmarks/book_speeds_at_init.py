"""The speeds of learning at initialisation of the book's fig/generate_gradient.py, over several seeds.

    python benchmarks/book_speeds_at_init.py [--seeds 10]

For each seed s, ``np.random.seed(s)``, then for 2, 3 and 4 hidden layers of 30 neurons a fresh
``network2.Network`` and the script's own ``initial_norms`` measure (``get_average_gradient`` over the first
1,000 training images of ``mnist_loader.load_data_wrapper()``, examples/book/generate_gradient.py). The book
printed one initialisation: 0.07 / 0.31; 0.012 / 0.060 / 0.283; 0.003 / 0.017 / 0.070 / 0.285.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys

import numpy as np

from deepscope.book import mnist_loader, network2

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import write_json  # noqa: E402

BOOK = {2: [0.07, 0.31], 3: [0.012, 0.060, 0.283], 4: [0.003, 0.017, 0.070, 0.285]}


def generate_gradient():
    spec = importlib.util.spec_from_file_location(
        "generate_gradient", os.path.join(HERE, "..", "examples", "book", "generate_gradient.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--out", default="book_speeds_at_init.json", help="file name under benchmarks/results/")
    args = p.parse_args(argv)
    gg = generate_gradient()
    td = mnist_loader.load_data_wrapper()[0][:1000]
    speeds = {k: [] for k in BOOK}
    for seed in range(args.seeds):
        np.random.seed(seed)
        for hidden in BOOK:
            net = network2.Network([784] + [30] * hidden + [10])
            speeds[hidden].append([gg.list_norm(avg) for avg in gg.get_average_gradient(net, td)[:-1]])
    rows = {}
    print(f"‖∂C/∂b^l‖ at initialisation, first 1,000 training images, {args.seeds} seeds (mean ± std [min, max])")
    for hidden, values in speeds.items():
        v = np.array(values)
        rows[hidden] = {"mean": v.mean(0).tolist(), "std": v.std(0).tolist(), "min": v.min(0).tolist(),
                        "max": v.max(0).tolist(), "book": BOOK[hidden], "per_seed": values}
        ours = "; ".join(f"{m:.3g} ± {s:.2g} [{lo:.3g}, {hi:.3g}]"
                         for m, s, lo, hi in zip(v.mean(0), v.std(0), v.min(0), v.max(0)))
        print(f"{hidden} hidden layers: {ours}   (book: {' / '.join(map(str, BOOK[hidden]))})")
    write_json(args.out, {"command": "python benchmarks/" + " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
                          "seeds": args.seeds, "n_images": len(td), "rows": rows})


if __name__ == "__main__":
    main()
