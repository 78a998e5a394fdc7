"""Chapter 6's ladder, book vs deepscope: train the chosen rungs and print/write the table.

    python benchmarks/ch6_ladder.py --rungs baseline,conv --epochs 3 --train-size 10000
    python benchmarks/ch6_ladder.py --rungs all                 # the book's full settings (days on a CPU)

The book's number is the test accuracy at the epoch of best validation accuracy (for the ensemble, the
plurality vote of five nets). Anything less than the book's epochs or training set is a smaller
experiment and is said so in the table (epochs run / book's epochs, training images) and in the JSON.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

import deepscope
from deepscope.book import ch6
from common import write_json


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rungs", default="baseline,conv", help="comma-separated rung names, or 'all'")
    p.add_argument("--epochs", type=int, help="epochs per net (default: the book's)")
    p.add_argument("--runs", type=int, help="nets per rung (default: 1; the ensemble: 5)")
    p.add_argument("--train-size", type=int, help="first N training images (default: all 50,000)")
    p.add_argument("--val-size", type=int, help="first N validation images (default: all 10,000)")
    p.add_argument("--quirks", action="store_true", help="train through network3 with its quirks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="MNIST folder (default: ../shared/data/mnist if present)")
    p.add_argument("--out", default=None, help="JSON file (default: benchmarks/results/ch6_<rungs>.json)")
    p.add_argument("--runs-dir", default=None, help="also save each net's run folder here")
    args = p.parse_args(argv)

    names = list(ch6.RUNGS) if args.rungs == "all" else [s.strip() for s in args.rungs.split(",") if s.strip()]
    for n in names:
        ch6.get_rung(n)
    here = Path(__file__).resolve().parent
    data_dir = args.data_dir
    if data_dir is None and (here.parent.parent / "shared/data/mnist").exists():
        data_dir = str(here.parent.parent / "shared/data/mnist")
    train, validation, test, source = ch6.load_data(data_dir, args.train_size, args.val_size)

    results = []
    out = Path(args.out) if args.out else here / "results" / f"ch6_{'-'.join(names)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in names:
        r = ch6.run_rung(name, (train, validation, test), epochs=args.epochs, runs=args.runs, quirks=args.quirks,
                         seed=args.seed, out=args.runs_dir, progress=False, verbose=True)
        r["data_source"] = source
        results.append(r)
        print(ch6.format_table([r]), flush=True)
        report = {"command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
                  "machine": {"python": platform.python_version(), "numpy": np.__version__,
                              "cpus": os.cpu_count(), "deepscope": deepscope.__version__},
                  "date": time.strftime("%Y-%m-%d %H:%M:%S"), "results": results}
        write_json(out, report)
    print()
    print(ch6.format_table(results))
    print(f"\nwritten to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
