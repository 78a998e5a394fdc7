"""The ``deepscope`` command.

Each group of subcommands lives beside the code it drives and adds itself through a ``register(subparsers)``
function (listed in ``_COMMAND_MODULES``); a subcommand stores its handler as ``func`` in its parser's
defaults. Errors deepscope raises on purpose (:class:`deepscope.DeepscopeError`) are printed as one line.
"""
from __future__ import annotations

import argparse
import importlib
import math
import sys
from pathlib import Path

from .errors import DeepscopeError

_COMMAND_MODULES = [
    "deepscope.commands",        # train, evaluate, predict
    "deepscope.book.cli",        # book ch6 ...
    "deepscope.show",            # show filters / errors
    "deepscope.scope.cli",       # scope speed / chain / compare / time
    "deepscope.sequence.cli",    # rnn mnist / text / sample
]

EPILOG = """examples:
  deepscope train                                  train the default chapter 6 convolutional net on MNIST
  deepscope train --arch 784-30-10:sigmoid --epochs 30 -m 10 --eta 0.1 --lmbda 5.0 --momentum 0 --init book --schedule none
  deepscope evaluate runs/train-20261127-101500
  deepscope predict runs/train-20261127-101500 digit.png
  deepscope book ch6 --list
  deepscope scope speed --layers 784,30,30,30,10
  deepscope rnn text --epochs 1
"""


class Parser(argparse.ArgumentParser):
    """argparse, with a bad option reported in one line (and where to look) instead of the full usage."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# Option types: a bad value stops the command at once, in one line, before any data is read.

def _number(kind, ok, must: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not (math.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"must be {must}, got {text}")
        return value
    parse.__name__ = f"{kind.__name__} {must}"
    return parse


positive_int = _number(int, lambda v: v >= 1, "at least 1")
nonnegative_int = _number(int, lambda v: v >= 0, "at least 0")
positive_float = _number(float, lambda v: v > 0, "positive")
nonnegative_float = _number(float, lambda v: v >= 0, "at least 0")
momentum_float = _number(float, lambda v: 0 <= v < 1, "in [0, 1)")


def existing_dir(text: str) -> str:
    """A folder that must exist (a typo in --data-dir must not quietly train on the embedded sample)."""
    if not Path(text).expanduser().is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {text}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="deepscope", description="Deep, convolutional and recurrent nets from scratch, with instruments.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    from . import __version__
    parser.add_argument("--version", action="version", version=f"deepscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except DeepscopeError as e:
        print(f"deepscope: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndeepscope: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
