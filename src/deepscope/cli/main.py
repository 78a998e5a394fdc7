"""``deepscope COMMAND ...``: the parser of every command, and one-line errors.

Each group of subcommands is a module of this package with a ``register(subparsers)`` function; a subcommand
stores its handler as ``func`` in its parser's defaults. Errors deepscope raises on purpose
(:class:`deepscope.DeepscopeError`) are printed as one line.
"""
from __future__ import annotations

import argparse
import os
import sys

from .. import __version__, backend, set_num_threads
from ..errors import DeepscopeError
from . import book, report, rnn, scope, show, sweep, train
from .options import Parser

GROUPS = [train, book, show, report, scope, rnn, sweep]   # train/evaluate/predict, book ch6, show, report, scope, rnn, sweep

EPILOG = """examples:
  deepscope train                                  train the default chapter 6 convolutional net on MNIST
  deepscope train --arch 784-30-10:sigmoid --epochs 30 -m 10 --lr 0.1 --lmbda 5.0 --momentum 0 --init book --schedule none
  deepscope evaluate runs/train-20261127-101500
  deepscope predict runs/train-20261127-101500 digit.png
  deepscope report runs/train-20261127-101500       one HTML page: curves, speed of learning, filters
  deepscope book ch6 --list
  deepscope scope speed --layers 784,30,30,30,10
  deepscope rnn text --epochs 1
  deepscope sweep --grid lr=0.01,0.03,0.1 --seeds 3 -- train --epochs 2
"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="deepscope", description="Deep, convolutional and recurrent nets from scratch, with instruments.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"deepscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "threads", None):
        set_num_threads(args.threads)     # --threads: one setting for deepscope's threads and BLAS
    try:
        if getattr(args, "device", None):
            backend.use_device(args.device)   # new parameters and mini-batches go there
        result = args.func(args)
    except DeepscopeError as e:
        print(f"deepscope: error: {e}", file=sys.stderr)
        return 1
    except MemoryError as e:  # e.g. --arch fc99999999999: numpy says how much it could not allocate
        print(f"deepscope: error: not enough memory{': ' + str(e) if str(e) else ''}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `deepscope ... | head`: every finished epoch was saved before it was printed
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python exits
        return 141
    except OSError as e:  # a read-only folder, a full disk, a file where a folder should be
        where = f"{e.filename}: " if e.filename else ""
        print(f"deepscope: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndeepscope: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)
