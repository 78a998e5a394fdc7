"""Recurrent nets on their two tasks, with deepscope's own layers (the issue-13 goals in brackets):

    python benchmarks/rnn_accuracy.py mnist --cell lstm --hidden 128 --epochs 20 --lr 2e-3     [≥ 98.7% test]
    python benchmarks/rnn_accuracy.py text --cell lstm --hidden 512 --epochs 12               [≤ 1.50 nats/char]

``mnist``: row-by-row MNIST (28 steps of 28 pixels), ``sequence.train_row_mnist``: Adam, global-norm clipping
1.0, cosine schedule, batch 64, standardised pixels, the book's 50k/10k/10k split; the test accuracy reported is
the one at the best validation epoch. ``text``: character LM on tiny-shakespeare, validation = the last 10% of
the text, ``sequence.train_char_lm``: Embedding(65, 64) -> cell -> Linear, 32 streams x 100 steps, truncated
BPTT, Adam with clipping 5.0 and a cosine schedule; reports the best validation nats/char and a 500-character
sample (τ = 0.8) from the best epoch's weights. Writes ``results/rnn_accuracy_<task>_<cell>.json``.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import deepscope as ds
from deepscope.data import load_mnist
from deepscope.data.text import load_corpus
from deepscope.runs import Run
from deepscope.sequence import char_model, sample, train_char_lm, train_row_mnist

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_json  # noqa: E402

DATA = Path(os.environ.get("DEEPSCOPE_DATA", Path(__file__).resolve().parents[2] / "shared/data"))


def run_mnist(args) -> dict:
    data = load_mnist(data_dir=DATA / "mnist")
    ds.manual_seed(args.seed)
    t0 = time.perf_counter()
    _, hist = train_row_mnist(data, hidden=args.hidden, epochs=args.epochs, lr=args.lr, cell=args.cell,
                              init=args.init, callbacks=[])
    wall = time.perf_counter() - t0
    best = hist.best
    print(f"row-MNIST {args.cell.upper()}({args.hidden}), {args.epochs} epochs: best validation "
          f"{best['val_acc']:.2%} at epoch {best['epoch']}, test there {best['test_acc']:.2%}, {wall:.0f} s")
    return {"best_epoch": best["epoch"], "val_acc": best["val_acc"], "test_acc_at_best_val": best["test_acc"],
            "wall_seconds": wall, "history": hist.records}


def run_text(args) -> dict:
    corpus = load_corpus(DATA / "tinyshakespeare/input.txt")
    ds.manual_seed(args.seed)
    model = char_model(len(corpus.vocab), args.hidden, 64, args.layers, cell=args.cell)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, Run.create(Path(tmp) / "run") as run:   # keeps the best model
        records = train_char_lm(model, corpus, epochs=args.epochs, lr=args.lr, schedule="cosine", run=run)
        wall = time.perf_counter() - t0
        model = run.load_model()
    best = min(records, key=lambda r: r["val_loss"])
    text = sample(model, corpus.vocab, 500, 0.8, prime="\n", seed=args.seed)
    print(f"char LM {args.cell.upper()}({args.hidden}) x{args.layers}: best validation {best['val_loss']:.4f} "
          f"nats/char at epoch {best['epoch']}, {wall:.0f} s\nsample (τ = 0.8):\n{text}")
    return {"best_epoch": best["epoch"], "val_loss": best["val_loss"], "wall_seconds": wall,
            "sample": text, "history": records}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=["mnist", "text"])
    p.add_argument("--cell", choices=["rnn", "lstm", "gru"], default="lstm")
    p.add_argument("--hidden", type=int, default=None, help="default: 128 (mnist), 512 (text)")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--epochs", type=int, default=None, help="default: 20 (mnist), 12 (text)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--init", default="orthogonal")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    mnist = args.task == "mnist"
    args.hidden = args.hidden or (128 if mnist else 512)
    args.epochs = args.epochs or (20 if mnist else 12)
    row = run_mnist(args) if mnist else run_text(args)
    cfg = {k: v for k, v in vars(args).items()}
    write_json(f"rnn_accuracy_{args.task}_{args.cell}.json",
               {"machine": machine(), "config": cfg, "command": "python benchmarks/rnn_accuracy.py " +
                " ".join(sys.argv[1:] if argv is None else argv), **row})


if __name__ == "__main__":
    main()
