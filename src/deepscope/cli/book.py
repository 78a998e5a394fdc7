"""``deepscope book ch6``: chapter 6's ladder from the shell.

    deepscope book ch6 --list
    deepscope book ch6 conv --epochs 2 --train-size 10000
    deepscope book ch6 relu --quirks            # through network3, with its quirks
    deepscope book ch6 all --epochs 1 --train-size 5000 --out runs/ladder
    deepscope book ch6 --resume runs/ladder     # continue where it stopped

The run folder (``--out``, default ``runs/book-ch6-STEP-<date>-<time>``) holds the command's options, one run
folder per net (``<rung>-<k>/``: config, metrics, checkpoint, the model), and ``results.json`` and
``table.txt``: the book-vs-ours table, which is also printed.
"""
from __future__ import annotations

import argparse

from .. import files, nn, sweep
from ..book import ch6
from ..errors import DeepscopeError
from ..runs import Run
from . import options
from . import sweep as sweeps

COMMAND = "deepscope book ch6"
SAVED = ("step", "epochs", "runs", "train_size", "val_size", "quirks", "seed", "data_dir", "lr", "batch_size",
         "momentum", "init", "no_expand")


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
    p.add_argument("--val-size", type=int, help="use only the first N validation images (default all 10,000)")
    p.add_argument("--lr", "--eta", dest="lr", type=options.positive_float, default=None, metavar="η",
                   help="learning rate (default: the step's, 0.1 or 0.03)")
    p.add_argument("--batch-size", "-m", dest="batch_size", type=options.positive_int, default=None, metavar="M",
                   help="mini-batch size (default: the book's 10)")
    p.add_argument("--momentum", type=options.momentum_float, default=None, metavar="μ",
                   help="momentum (default: the book's 0, plain SGD); not with --quirks")
    p.add_argument("--init", choices=nn.init.SCHEMES, default=None,
                   help="weight initialisation (default: the book's N(0, 1/n_in), biases N(0, 1)); not with --quirks")
    p.add_argument("--no-expand", action="store_true",
                   help="train on the images as they are, not expanded by one-pixel shifts (the later steps' 5x)")
    p.add_argument("--quirks", action="store_true",
                   help="train through network3 with its quirks (init, L2 per mini-batch, fixed order, dropout)")
    options.data(p, dataset=False)
    options.training(p, "book-ch6-STEP")
    options.report(p)
    sweeps.add_parallel_options(p)   # the ensemble's nets are trials of a sweep when Ray is installed
    p.set_defaults(func=cmd_ch6)
    book.set_defaults(func=lambda args: (book.print_help(), 2)[1])


def cmd_ch6(args) -> int:
    if args.resume is None and (args.list or not args.step):
        print(ch6.list_rungs())
        if not args.list:
            print("\nchoose a step: deepscope book ch6 STEP (or 'all'), or --resume RUN")
        return 0
    if args.step == "ensemble" and not args.quirks and args.resume is None and sweep.ray_available():
        return _ensemble_by_sweep(args)
    run, opts = options.start(args, COMMAND, f"book-ch6-{args.step}", {k: getattr(args, k) for k in SAVED})
    names = list(ch6.RUNGS) if opts["step"] == "all" else [ch6.get_rung(opts["step"]).name]
    changes = _changes(opts)
    for flag in ("epochs", "runs", "val_size"):
        value = opts[flag]
        if value is not None and value < 1:
            raise DeepscopeError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    train, validation, test, source = ch6.load_data(opts["data_dir"], opts["train_size"], opts["val_size"])
    run = run or Run.create(args.out, f"book-ch6-{opts['step']}", COMMAND)
    opts["data_dir"] = options.absolute(opts["data_dir"])
    with run:
        run.write_config({**opts, "data_source": source}, COMMAND)
        results = []
        for name in names:
            r = ch6.run_rung(ch6.get_rung(name, **changes), (train, validation, test), epochs=opts["epochs"],
                             runs=opts["runs"],
                             quirks=opts["quirks"], seed=opts["seed"], out=run.path, progress=not args.quiet,
                             verbose=not args.quiet, data_source=source,
                             callbacks_for=lambda net_run: options.report_callbacks(args, None, net_run,
                                                                                    test=(*test, tuple("0123456789"))))
            r["data_source"] = source
            results.append(r)
            run.save_json("results.json", results)
            table = ch6.format_table(results)
            files.atomic_write(run.file("table.txt"), table + "\n")
    print()
    print(table)
    print(f"\nsaved to {run}")
    return 0


def _changes(opts: dict) -> dict:
    """The rung settings the command line changes (None: the book's)."""
    if opts.get("quirks") and (opts.get("momentum") or opts.get("init") not in (None, "book")):
        raise DeepscopeError("--momentum and --init need deepscope's training: drop them or --quirks")
    return {"eta": opts.get("lr"), "mini_batch_size": opts.get("batch_size"), "momentum": opts.get("momentum"),
            "init": opts.get("init"), "expanded": False if opts.get("no_expand") else None}


def _ensemble_by_sweep(args) -> int:
    """The ensemble's nets as parallel trials of a sweep (Ray), then their plurality vote."""
    for flag in ("epochs", "runs"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise DeepscopeError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    rung = ch6.get_rung("ensemble", **_changes(vars(args)))
    r = sweeps.ensemble(rung, epochs=args.epochs, runs=args.runs, train_size=args.train_size,
                        data_dir=args.data_dir, seed=args.seed, out=args.out, address=args.address,
                        workers=args.workers, progress=not args.quiet, device=args.device)
    print("members' test accuracy: " + ", ".join(f"{a:.2f}%" for a in r["members"]))
    book = ch6.get_rung("ensemble")
    print(f"ensemble (plurality vote of {len(r['members'])} nets): {r['vote']:.2f}% (book: {r['book']:.2f}% with "
          f"{book.settings()}; here: {r['settings']}"
          f"{f', on the first {args.train_size:,} images' if args.train_size else ''})")
    print(f"saved to {r['sweep']} (vote.json, trials.csv, one run folder per net)")
    return 0
