"""``deepscope book ch6``: chapter 6's ladder from the shell.

    deepscope book ch6 --list
    deepscope book ch6 conv --epochs 2 --train-size 10000
    deepscope book ch6 relu --quirks            # through network3, with its quirks
    deepscope book ch6 all --epochs 1 --train-size 5000

Each net is saved in a run folder ``OUT/ch6-STEP[-N]/<rung>-<k>/`` (config.json, metrics.jsonl, the model);
``results.json`` and ``table.txt`` beside them hold the book-vs-ours table, which is also printed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import files
from ..runs import reserve
from ..cli import existing_dir
from ..errors import DeepscopeError


def register(subparsers) -> None:
    book = subparsers.add_parser("book", help="the book's experiments as named presets",
                                 description="The book's experiments as named presets.")
    chapters = book.add_subparsers(dest="chapter", metavar="CHAPTER")
    p = chapters.add_parser(
        "ch6", help="chapter 6's ladder of convolutional nets (97.80%% to 99.67%%)",
        description="Run a step of chapter 6's ladder with the book's hyperparameters and print the "
                    "book-vs-ours table.", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  deepscope book ch6 --list\n  deepscope book ch6 conv --epochs 2 --train-size 10000\n"
               "  deepscope book ch6 all --epochs 1 --train-size 5000 --quirks")
    p.add_argument("step", nargs="?", help="a step name (see --list) or 'all'")
    p.add_argument("--list", action="store_true", help="list the steps with their settings and book numbers")
    p.add_argument("--epochs", type=int, help="epochs per net (default: the book's, 60 or 40)")
    p.add_argument("--runs", type=int, help="nets to train per step (default 1; the ensemble: 5)")
    p.add_argument("--train-size", type=int, help="use only the first N training images (before expansion)")
    p.add_argument("--val-size", type=int, help="use only the first N validation images (default all 10,000)")
    p.add_argument("--quirks", action="store_true",
                   help="train through network3 with its quirks (init, L2 per mini-batch, fixed order, dropout)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first net (default 0)")
    p.add_argument("--out", default="runs", help="parent folder of the run folders (default runs/)")
    p.add_argument("--data-dir", type=existing_dir, help="folder with the MNIST IDX files (default: deepscope's cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_ch6)
    book.set_defaults(func=lambda args: (book.print_help(), 2)[1])


def cmd_ch6(args) -> int:
    from . import ch6

    if args.list or not args.step:
        print(ch6.list_rungs())
        if not args.list:
            print("\nchoose a step: deepscope book ch6 STEP (or 'all')")
        return 0
    names = list(ch6.RUNGS) if args.step == "all" else [ch6.get_rung(args.step).name]
    for flag in ("epochs", "runs", "train_size", "val_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise DeepscopeError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    out = reserve(Path(args.out) / f"ch6-{args.step}")
    train, validation, test, source = ch6.load_data(args.data_dir, args.train_size, args.val_size)
    results = []
    for name in names:
        r = ch6.run_rung(name, (train, validation, test), epochs=args.epochs, runs=args.runs, quirks=args.quirks,
                         seed=args.seed, out=out, progress=not args.quiet, verbose=True)
        r["data_source"] = source
        results.append(r)
        files.write_json(out / "results.json", results)
        table = ch6.format_table(results)
        files.atomic_write(out / "table.txt", table + "\n")
    print()
    print(table)
    print(f"\nsaved to {out}")
    return 0
