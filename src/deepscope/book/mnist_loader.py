"""mnist_loader.py, on deepscope: the MNIST data in the formats of the book's ``network.py`` and ``network2.py``.

    from deepscope.book import mnist_loader
    training_data, validation_data, test_data = mnist_loader.load_data_wrapper()

``load_data()`` returns ``(training_data, validation_data, test_data)``, each a tuple ``(X, y)`` with X a
float32 array ``(N, 784)`` in [0, 1] and y an int64 array ``(N,)`` of digits: 50,000 / 10,000 / 10,000 images.

``load_data_wrapper()`` turns them into what network.py and network2.py train on (lists, not Python 3's
one-shot ``zip`` objects, so they can be shuffled, sliced and read twice):

* ``training_data``: a list of 50,000 pairs ``(x, y)``, x a ``(784, 1)`` column vector, y the ``(10, 1)``
  unit vector of the digit (:func:`vectorized_result`);
* ``validation_data``, ``test_data``: lists of 10,000 pairs ``(x, y)``, x ``(784, 1)``, y the digit (an int).

Where the data come from, in order (:func:`find_mnist`):

1. the book's file ``../data/mnist.pkl.gz``, relative to the working folder, as the book's code opened it
   (read with deepscope's safe unpickler: NumPy arrays and tuples only, never code);
2. deepscope's own search (:func:`deepscope.data.load_mnist`): ``data_dir``, ``$DEEPSCOPE_DATA``, the cache,
   a download;
3. the MNIST sample shipped with deepscope (5,000 / 1,000 / 1,000 images), with a line saying so.

The expanded training set of chapter 6 (``../data/mnist_expanded.pkl.gz``, written by the book's
``expand_mnist.py``) is found the same way (:func:`find_expanded_mnist`); when the file is missing, the
expansion is built from the *same* MNIST the validation and test sets come from, with a line saying so.
"""
from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np

from ..data import load_mnist
from ..data.augment import expanded_training_data  # also the book's name here
from ..data.mnist import MNISTData, load_book_pickle

BOOK_FILE = os.path.join("..", "data", "mnist.pkl.gz")
BOOK_EXPANDED_FILE = os.path.join("..", "data", "mnist_expanded.pkl.gz")


def load_data(data_dir=None):
    """The MNIST data as ``(training_data, validation_data, test_data)``, each ``(X, y)``: X float32
    ``(N, 784)`` in [0, 1], y int64 ``(N,)`` (the book's format). ``data_dir``: a folder to search first
    after ``../data/mnist.pkl.gz`` (see the module docstring)."""
    mnist = find_mnist(data_dir=data_dir)
    return tuple(flat(split) for split in (mnist.train, mnist.validation, mnist.test))


def load_data_wrapper(data_dir=None):
    """``(training_data, validation_data, test_data)`` as lists of ``(x, y)`` pairs: x ``(784, 1)``; y a
    ``(10, 1)`` unit vector for the training data, the digit (int) for validation and test."""
    tr_d, va_d, te_d = load_data(data_dir)
    training_inputs = [np.reshape(x, (784, 1)) for x in tr_d[0]]
    training_results = [vectorized_result(y) for y in tr_d[1]]
    training_data = list(zip(training_inputs, training_results))
    validation_data = list(zip([np.reshape(x, (784, 1)) for x in va_d[0]], va_d[1].tolist()))
    test_data = list(zip([np.reshape(x, (784, 1)) for x in te_d[0]], te_d[1].tolist()))
    return (training_data, validation_data, test_data)


def vectorized_result(j):
    """A 10-dimensional unit vector ``(10, 1)`` with a 1.0 in the j'th position: the desired output for digit j."""
    e = np.zeros((10, 1))
    e[j] = 1.0
    return e


def flat(split):
    """``(X, y)`` with X ``(N, 1, 28, 28)`` or ``(N, 784)`` as the book's ``(X (N, 784) float32, y (N,) int64)``."""
    X, y = split
    return np.asarray(X, dtype=np.float32).reshape(len(X), 784), np.asarray(y, dtype=np.int64)


# -- where the data are --------------------------------------------------------------------------------------
def find_mnist(filename=None, data_dir=None, verbose: bool = True) -> MNISTData:
    """MNIST as the book's users keep it, else as deepscope finds it (see the module docstring).

    Args:
        filename: the book's pickle (default ``../data/mnist.pkl.gz``), or a folder of MNIST files. A path
            the user named that does not exist is reported in one line, then deepscope's search runs.
        data_dir: a folder for deepscope's search (``deepscope.data.load_mnist(data_dir=...)``).
        verbose: print the lines saying where the data came from when it is not the book's file.

    Returns:
        a :class:`deepscope.data.mnist.MNISTData` (splits X float32 ``(N, 1, 28, 28)``, y int64 ``(N,)``;
        ``.source`` says where they came from).
    """
    path = os.fspath(filename) if filename is not None else BOOK_FILE
    if os.path.isdir(path):
        return load_mnist(data_dir=path, verbose=verbose)
    if os.path.isfile(path):
        return load_book_pickle(path)
    if filename is not None and verbose:
        print(f"deepscope: {path} not found; looking for MNIST where deepscope keeps it", file=sys.stderr)
    return load_mnist(data_dir=data_dir, verbose=verbose)


def find_expanded_mnist(filename=None, data_dir=None, verbose: bool = True) -> MNISTData:
    """MNIST with chapter 6's expanded training set (250,000 images: each image, then its one-pixel shifts
    down, up, right and left, shuffled once), validation and test unchanged.

    The book's ``mnist_expanded.pkl.gz`` (default ``../data/mnist_expanded.pkl.gz``) is read if it exists.
    Otherwise the expansion is built from the MNIST found by :func:`find_mnist` for the ``mnist.pkl.gz``
    beside it, so that training, validation and test come from the same data, and a line says so.
    """
    path = os.fspath(filename) if filename is not None else BOOK_EXPANDED_FILE
    if os.path.isfile(path):
        return load_book_pickle(path)
    sibling = os.path.join(os.path.dirname(path), "mnist.pkl.gz")
    base = find_mnist(sibling if os.path.isfile(sibling) else None, data_dir=data_dir, verbose=verbose)
    train = expanded_training_data(base.train)
    if verbose:
        print(f"deepscope: {path} not found; expanding the training set of the MNIST in {base.source} "
              f"({len(base.train[1]):,} images and their one-pixel shifts: {len(train[1]):,}), as expand_mnist.py "
              f"does; validation and test come from the same MNIST", file=sys.stderr)
    return dataclasses.replace(base, train=train, source=f"{base.source} (training set expanded)")
