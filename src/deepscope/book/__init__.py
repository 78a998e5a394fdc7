"""The book's experiments: a network3-compatible API (:mod:`deepscope.book.network3`) and chapter 6's ladder
of convolutional nets as named presets (:mod:`deepscope.book.ch6`, ``deepscope book ch6``)."""
from . import ch6, network3
from .ch6 import RUNGS, Rung, ensemble_predict, format_table, run_rung

__all__ = ["ch6", "network3", "RUNGS", "Rung", "ensemble_predict", "format_table", "run_rung"]
