"""Fixtures for the book's programs: the book's own network2.py (benchmarks/book_network2.py) as the reference,
and a working folder laid out as the book's users keep it (``../data/mnist.pkl.gz``, here made from the MNIST
sample shipped with deepscope)."""
from __future__ import annotations

import gzip
import importlib.util
import pickle
import sys
from pathlib import Path

import pytest

from deepscope.book import mnist_loader
from deepscope.data.mnist import load_sample

ROOT = Path(__file__).resolve().parents[2]


def load_book_network2():
    """The book's network2.py, Python 3 (benchmarks/book_network2.py)."""
    spec = importlib.util.spec_from_file_location("book_network2", ROOT / "benchmarks" / "book_network2.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["book_network2"] = module            # its load() looks its cost classes up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def book_network2():
    return load_book_network2()


def write_book_pickle(path: Path, n_train=None):
    """The shipped sample as the book's ``mnist.pkl.gz``: ((X (N, 784) float32, y int64) x 3)."""
    sample = load_sample()
    splits = [mnist_loader.flat(s) for s in (sample.train, sample.validation, sample.test)]
    if n_train is not None:
        splits[0] = (splits[0][0][:n_train], splits[0][1][:n_train])
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        pickle.dump(tuple(splits), f, protocol=2)
    return splits


@pytest.fixture
def book_folder(tmp_path, monkeypatch):
    """A working folder ``tmp/work`` with the book's ``../data/mnist.pkl.gz`` beside it; the test runs there."""
    work = tmp_path / "work"
    work.mkdir()
    write_book_pickle(tmp_path / "data" / "mnist.pkl.gz")
    monkeypatch.chdir(work)
    return work


@pytest.fixture
def make_book_pickle():
    """``make_book_pickle(path, n_train=None)``: write the sample as the book's pickle at ``path``."""
    return write_book_pickle
