"""deepscope.book.mnist_loader: the book's formats, and the data found where the book's users keep them."""
from __future__ import annotations

import numpy as np
import pytest

from deepscope.book import mnist_loader, network3
from deepscope.data.mnist import load_sample


def test_load_data_reads_the_books_file_at_dot_dot_data(book_folder):
    tr, va, te = mnist_loader.load_data()
    sample = load_sample()
    assert tr[0].shape == (5000, 784) and tr[0].dtype == np.float32 and tr[1].dtype == np.int64
    np.testing.assert_array_equal(tr[0], sample.train[0].reshape(5000, 784))
    np.testing.assert_array_equal(te[1], sample.test[1])
    assert va[0].shape == (1000, 784)


def test_load_data_wrapper_gives_the_books_lists(book_folder):
    training_data, validation_data, test_data = mnist_loader.load_data_wrapper()
    assert isinstance(training_data, list) and isinstance(validation_data, list) and isinstance(test_data, list)
    assert (len(training_data), len(validation_data), len(test_data)) == (5000, 1000, 1000)
    x, y = training_data[0]
    assert x.shape == (784, 1) and y.shape == (10, 1) and y.sum() == 1.0
    tr, _, te = mnist_loader.load_data()
    assert int(np.argmax(y)) == tr[1][0]
    x, digit = test_data[3]
    assert x.shape == (784, 1) and isinstance(digit, int) and digit == te[1][3]
    assert mnist_loader.vectorized_result(7)[7, 0] == 1.0 and mnist_loader.vectorized_result(7).shape == (10, 1)


def test_the_books_file_comes_before_deepscopes_search(book_folder, tmp_path, monkeypatch, make_book_pickle):
    other = tmp_path / "other"
    make_book_pickle(other / "mnist.pkl.gz", n_train=100)
    monkeypatch.setenv("DEEPSCOPE_DATA", str(other))
    assert len(mnist_loader.load_data()[0][1]) == 5000            # ../data/mnist.pkl.gz wins
    (tmp_path / "data" / "mnist.pkl.gz").unlink()
    assert len(mnist_loader.load_data()[0][1]) == 100             # then $DEEPSCOPE_DATA


def test_without_any_mnist_the_sample_is_used_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("deepscope.data.mnist.download_file", _no_network)
    tr, _, _ = mnist_loader.load_data()
    assert len(tr[1]) == 5000
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "embedded sample" in err[0]


def _no_network(*args, **kwargs):
    from deepscope.data.mnist import _DownloadFailed
    raise _DownloadFailed("no network in tests")


def test_a_named_file_that_is_missing_says_so(tmp_path, monkeypatch, capsys, make_book_pickle):
    make_book_pickle(tmp_path / "d" / "mnist.pkl.gz", n_train=50)
    monkeypatch.setenv("DEEPSCOPE_DATA", str(tmp_path / "d"))
    data = network3.load_data_shared(str(tmp_path / "nowhere" / "mnist.pkl.gz"))
    assert len(data[0][1]) == 50 and data[0][0].shape == (50, 1, 28, 28)
    assert "nowhere/mnist.pkl.gz not found" in capsys.readouterr().err


def test_network3_load_data_shared_reads_the_books_layout(book_folder):
    training_data, validation_data, test_data = network3.load_data_shared()
    assert training_data[0].shape == (5000, 1, 28, 28) and network3.size(test_data) == 1000


def test_missing_expanded_file_is_built_from_the_same_mnist(book_folder, tmp_path, monkeypatch, capsys, make_book_pickle):
    other = tmp_path / "other"                     # a different MNIST deepscope could find: must not be used
    make_book_pickle(other / "mnist.pkl.gz", n_train=100)
    monkeypatch.setenv("DEEPSCOPE_DATA", str(other))
    expanded, validation, test = network3.load_data_shared("../data/mnist_expanded.pkl.gz")
    plain, plain_validation, plain_test = network3.load_data_shared()
    assert len(expanded[1]) == 5 * len(plain[1]) == 25000
    np.testing.assert_array_equal(validation[0], plain_validation[0])
    np.testing.assert_array_equal(test[1], plain_test[1])
    assert sorted(np.bincount(expanded[1]) // 5) == sorted(np.bincount(plain[1]))
    err = capsys.readouterr().err
    assert "mnist_expanded.pkl.gz not found; expanding the training set" in err and "mnist.pkl.gz" in err


def test_an_expanded_file_on_disk_is_read(book_folder, tmp_path, make_book_pickle):
    splits = make_book_pickle(tmp_path / "data" / "mnist_expanded.pkl.gz", n_train=300)
    expanded, _, _ = network3.load_data_shared("../data/mnist_expanded.pkl.gz")
    assert len(expanded[1]) == 300
    np.testing.assert_array_equal(expanded[1], splits[0][1])


@pytest.mark.parametrize("bad", [b"not a pickle", b"\x80\x02cos\nsystem\nq\x00."])
def test_a_hostile_or_broken_pickle_is_one_clear_error(book_folder, tmp_path, bad):
    import gzip

    from deepscope.errors import DataError
    with gzip.open(tmp_path / "data" / "mnist.pkl.gz", "wb") as f:
        f.write(bad)
    with pytest.raises(DataError):
        mnist_loader.load_data()


def test_the_books_expanded_file_of_lists_is_read(book_folder, tmp_path):
    """expand_mnist.py pickles its training split as two lists: image arrays and NumPy-scalar labels."""
    import gzip
    import pickle

    tr, va, te = mnist_loader.load_data()
    pairs = [(x, y) for x, y in zip(tr[0][:60], tr[1][:60])]           # y: numpy.int64 scalars
    expanded_training_data = [list(d) for d in zip(*pairs)]
    with gzip.open(tmp_path / "data" / "mnist_expanded.pkl.gz", "wb") as f:
        pickle.dump((expanded_training_data, va, te), f, protocol=2)
    expanded, validation, test = network3.load_data_shared("../data/mnist_expanded.pkl.gz")
    assert expanded[0].shape == (60, 1, 28, 28) and expanded[1].dtype == np.int64
    np.testing.assert_array_equal(expanded[1], tr[1][:60])
    np.testing.assert_array_equal(expanded[0].reshape(60, 784), tr[0][:60])
    np.testing.assert_array_equal(test[1], te[1])
