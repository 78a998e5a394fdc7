"""The book's programs and experiments on deepscope.

* :mod:`~deepscope.book.network`, :mod:`~deepscope.book.network2`, :mod:`~deepscope.book.mnist_loader` —
  chapters 1-3's code (its API, data formats and numerics), computed by deepscope's layers;
* :mod:`~deepscope.book.ch5` — chapter 5's experiments (speed of learning, the depth × activation × init grid,
  the one-neuron chain);
* :mod:`~deepscope.book.network3`, :mod:`~deepscope.book.conv` — chapter 6's code and its driver;
  :mod:`~deepscope.book.ch6` — chapter 6's ladder of convolutional nets as named presets (``deepscope book ch6``).

``examples/book/`` holds the book's scripts ported to Python 3 on these modules.
"""
from . import ch5, ch6, network3
from .ch6 import RUNGS, Rung, ensemble_predict, format_table, run_rung

__all__ = ["ch5", "ch6", "network3", "RUNGS", "Rung", "ensemble_predict", "format_table", "run_rung"]
