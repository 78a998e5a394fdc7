"""The book's chapter 3 results for fully connected nets, run with deepscope's fit.

    python benchmarks/fc_accuracy.py --net 784-100-10 --epochs 60      # the book: 98.04%
    python benchmarks/fc_accuracy.py --net 784-30-10 --epochs 30       # the book: 96.48%

Settings as network2.py: sigmoid, cross-entropy, default init (N(0,1/n_in)), mini-batch 10, eta 0.1,
lmbda 5.0, the book's 50k/10k/10k split; the test accuracy reported is the one at the best validation epoch.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import deepscope as ds
from deepscope import arch, nn, optim
from deepscope.data import load_mnist
from deepscope.train import fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_json  # noqa: E402

BOOK = {"784-30-10": 96.48, "784-100-10": 98.04}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--net", default="784-100-10")
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/mnist"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    data = load_mnist(data_dir=args.data_dir)
    ds.manual_seed(args.seed)
    model = arch.build(args.net + ":sigmoid", init="book")
    opt = optim.SGD(model.parameters(), lr=0.1, weight_decay=optim.book_weight_decay(5.0, len(data.train[0])))
    t0 = time.perf_counter()
    hist = fit(model, nn.CrossEntropyCost(), opt, data.train, epochs=args.epochs, batch_size=10,
               validation=data.validation, test=data.test, callbacks=[])
    wall = time.perf_counter() - t0
    best = hist.best
    row = {"net": args.net, "epochs": args.epochs, "seed": args.seed, "best_epoch": best["epoch"],
           "val_acc": best["val_acc"], "test_acc_at_best_val": best["test_acc"],
           "book_test_acc": BOOK.get(args.net), "wall_seconds": wall, "history": hist.records}
    print(f"{args.net}, {args.epochs} epochs: best validation {best['val_acc']:.2%} at epoch {best['epoch']}, "
          f"test there {best['test_acc']:.2%} (book: {BOOK.get(args.net)}%), {wall:.0f} s")
    write_json(f"fc_accuracy_{args.net}.json", {"machine": machine(), **row})


if __name__ == "__main__":
    main()
