"""Sequence tasks for the recurrent network: row-by-row MNIST and character language models.

    from deepscope.sequence import row_mnist_model, train_row_mnist, char_model, train_char_lm, sample
"""
from .mnist import as_rows, row_mnist_model, train_row_mnist
from .text import char_model, evaluate_char_lm, sample, train_char_lm

__all__ = ["as_rows", "row_mnist_model", "train_row_mnist", "char_model", "evaluate_char_lm", "sample",
           "train_char_lm"]
