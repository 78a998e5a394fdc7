"""The ``deepscope`` command (:func:`main`): one module per group of subcommands, shared options in
:mod:`deepscope.cli.options`. Nothing in the library imports this package."""
from .main import main

__all__ = ["main"]
