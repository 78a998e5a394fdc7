"""deepscope.book.network2 and network against the book's own network2.py (benchmarks/book_network2.py):
the same gradients per example, the same trajectory from the same seeds, the same monitoring lists."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from deepscope.book import mnist_loader, network, network2
from deepscope.errors import DataError, ShapeError


def random_example(sizes, rng, digit=None):
    x = rng.random((sizes[0], 1))
    y = np.zeros((sizes[-1], 1))
    y[rng.integers(sizes[-1]) if digit is None else digit] = 1.0
    return x, y


def twin_nets(book_network2, sizes, cost_name, seed):
    """Our net and the book's with the same weights and biases (drawn by our net, scaled to be non-trivial)."""
    np.random.seed(seed)
    ours = network2.Network(sizes, cost=getattr(network2, cost_name))
    ours.weights = [2 * w for w in ours.weights]
    book = book_network2.Network(sizes, cost=getattr(book_network2, cost_name))
    book.weights = [w.copy() for w in ours.weights]
    book.biases = [b.copy() for b in ours.biases]
    return ours, book


def assert_close_to_rounding(ours, book):
    """Equal up to float64 rounding: a few ulps of the largest entry of the layer."""
    for a, b in zip(ours, book):
        assert a.shape == b.shape and a.dtype == np.float64
        scale = max(float(np.abs(b).max()), 1e-300)
        assert float(np.abs(a - b).max()) <= 64 * np.finfo(np.float64).eps * scale


@pytest.mark.parametrize("sizes", [[784, 30, 10], [7, 5, 4, 3], [3, 6, 6, 6, 6, 2], [4, 1]])
@pytest.mark.parametrize("cost_name", ["CrossEntropyCost", "QuadraticCost"])
def test_backprop_matches_the_books_per_example_formula(book_network2, sizes, cost_name):
    rng = np.random.default_rng(len(sizes))
    for seed in range(3):
        ours, book = twin_nets(book_network2, sizes, cost_name, seed)
        x, y = random_example(sizes, rng)
        nabla_b, nabla_w = ours.backprop(x, y)
        book_b, book_w = book.backprop(x, y)
        assert [b.shape for b in nabla_b] == [b.shape for b in ours.biases]
        assert [w.shape for w in nabla_w] == [w.shape for w in ours.weights]
        assert_close_to_rounding(nabla_b, book_b)
        assert_close_to_rounding(nabla_w, book_w)


def test_backprop_with_a_cost_class_of_ones_own(book_network2):
    class HalfQuadratic:                     # the book's interface: fn(a, y), delta(z, a, y)
        @staticmethod
        def fn(a, y):
            return 0.25 * np.linalg.norm(a - y) ** 2

        @staticmethod
        def delta(z, a, y):
            return 0.5 * (a - y) * network2.sigmoid_prime(z)

    ours, book = twin_nets(book_network2, [6, 4, 3], "QuadraticCost", 0)
    ours.cost = book.cost = HalfQuadratic
    x, y = random_example([6, 4, 3], np.random.default_rng(0))
    for a, b in zip(ours.backprop(x, y), book.backprop(x, y)):
        assert_close_to_rounding(a, b)


def small_data(n, rng, sizes=(12, 8, 10)):   # 10 outputs: the book's vectorized_result
    training = [random_example(sizes, rng) for _ in range(n)]
    evaluation = [(x, int(np.argmax(y))) for x, y in (random_example(sizes, rng) for _ in range(n // 2))]
    return training, evaluation


def test_sgd_follows_the_books_trajectory_from_the_same_seeds(book_network2, capsys):
    rng = np.random.default_rng(1)
    training, evaluation = small_data(95, rng)      # 95: the last mini-batch has 5 examples
    results, nets, orders = {}, {}, {}
    for name, module in (("ours", network2), ("book", book_network2)):
        data = list(training)
        random.seed(7)
        np.random.seed(7)
        net = module.Network([12, 8, 10], cost=module.CrossEntropyCost)
        results[name] = net.SGD(data, 3, 10, 0.5, lmbda=2.0, evaluation_data=evaluation,
                                monitor_evaluation_cost=True, monitor_evaluation_accuracy=True,
                                monitor_training_cost=True, monitor_training_accuracy=True)
        nets[name], orders[name] = net, [id(pair) for pair in data]
        results[name + " output"] = capsys.readouterr().out
    assert orders["ours"] == orders["book"]          # the list is shuffled in place, the same way
    for a, b in zip(nets["ours"].weights + nets["ours"].biases, nets["book"].weights + nets["book"].biases):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    eval_cost, eval_acc, train_cost, train_acc = results["ours"]
    book_eval_cost, book_eval_acc, book_train_cost, book_train_acc = results["book"]
    assert eval_acc == book_eval_acc and train_acc == book_train_acc
    np.testing.assert_allclose(eval_cost, book_eval_cost, rtol=1e-12)
    np.testing.assert_allclose(train_cost, book_train_cost, rtol=1e-12)
    ours_lines, book_lines = results["ours output"].splitlines(), results["book output"].splitlines()
    assert len(ours_lines) == len(book_lines) == 3 * 6     # the same lines; the costs differ in the last digit
    assert [x for x in ours_lines if "Cost" not in x] == [x for x in book_lines if "Cost" not in x]


def test_monitoring_lists_have_the_books_meaning_and_length(capsys):
    rng = np.random.default_rng(2)
    training, evaluation = small_data(60, rng)
    np.random.seed(0)
    net = network2.Network([12, 8, 10])
    lists = net.SGD(training, 4, 10, 0.5, lmbda=1.0, evaluation_data=evaluation,
                    monitor_evaluation_cost=True, monitor_evaluation_accuracy=True,
                    monitor_training_cost=True, monitor_training_accuracy=True)
    assert [len(v) for v in lists] == [4, 4, 4, 4]
    eval_cost, eval_acc, train_cost, train_acc = lists
    # after the last epoch: the same values the net gives now, by the book's definitions
    assert eval_acc[-1] == net.accuracy(evaluation) == sum(
        int(np.argmax(net.feedforward(x)) == y) for x, y in evaluation)
    assert train_acc[-1] == net.accuracy(training, convert=True)
    by_hand = sum(network2.CrossEntropyCost.fn(net.feedforward(x), y) for x, y in training) / len(training)
    by_hand += 0.5 * (1.0 / len(training)) * sum(np.linalg.norm(w) ** 2 for w in net.weights)
    assert train_cost[-1] == pytest.approx(by_hand, rel=1e-12) == net.total_cost(training, 1.0)
    assert eval_cost[-1] == pytest.approx(net.total_cost(evaluation, 1.0, convert=True), rel=1e-12)
    assert all(isinstance(a, int) and 0 <= a <= len(evaluation) for a in eval_acc)
    out = capsys.readouterr().out
    assert out.count("training complete") == 4 and f"Accuracy on evaluation data: {eval_acc[-1]} / 30" in out
    # flags off: empty lists
    assert net.SGD(training, 2, 10, 0.5) == ([], [], [], [])


def test_network_py_follows_network2_without_regularisation(book_network2):
    rng = np.random.default_rng(3)
    training, test = small_data(40, rng)
    np.random.seed(3)
    ours = network.Network([12, 8, 10])
    book = book_network2.Network([12, 8, 10], cost=book_network2.QuadraticCost)
    book.weights, book.biases = [w.copy() for w in ours.weights], [b.copy() for b in ours.biases]
    for name, net in (("ours", ours), ("book", book)):
        random.seed(5)
        if name == "ours":
            net.SGD(list(training), 2, 10, 3.0, test_data=test)
        else:
            net.SGD(list(training), 2, 10, 3.0, lmbda=0.0)
    for a, b in zip(ours.weights + ours.biases, book.weights + book.biases):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    assert ours.evaluate(test) == book.accuracy(test)
    x, y = training[0]
    np.testing.assert_allclose(ours.cost_derivative(ours.feedforward(x), y), book.feedforward(x) - y, atol=1e-14)


def test_network_py_initial_weights_are_the_books_draws():
    np.random.seed(11)
    net = network.Network([5, 3, 2])
    np.random.seed(11)
    biases = [np.random.randn(y, 1) for y in [3, 2]]
    weights = [np.random.randn(3, 5), np.random.randn(2, 3)]
    for a, b in zip(net.biases + net.weights, biases + weights):
        np.testing.assert_array_equal(a, b)


def test_weights_and_biases_are_the_layers_own():
    np.random.seed(0)
    net = network2.Network([4, 3, 2])
    net.biases[0][1, 0] = 5.0                       # in place: the layer sees it
    assert net.linears[0].bias.data[1] == 5.0
    net.weights = [np.ones((3, 4)), np.zeros((2, 3))]
    assert (net.feedforward(np.zeros((4, 1)))[:, 0] == network2.sigmoid(net.biases[1][:, 0])).all()
    with pytest.raises(ShapeError, match=r"shapes \[\(3, 4\), \(2, 3\)\]"):
        net.weights = [np.ones((4, 3)), np.zeros((2, 3))]


def test_feedforward_takes_one_column_or_many():
    np.random.seed(0)
    net = network2.Network([4, 3, 2])
    X = np.random.rand(4, 5)
    many = net.feedforward(X)
    assert many.shape == (2, 5)
    for j in range(5):
        np.testing.assert_allclose(net.feedforward(X[:, [j]]), many[:, [j]], rtol=1e-15)


def test_save_and_load_round_trip_and_read_the_books_files(tmp_path, book_network2):
    np.random.seed(0)
    net = network2.Network([5, 4, 3], cost=network2.QuadraticCost)
    net.save(tmp_path / "net.json")
    loaded = network2.load(tmp_path / "net.json")
    assert loaded.sizes == [5, 4, 3] and loaded.cost is network2.QuadraticCost
    for a, b in zip(net.weights + net.biases, loaded.weights + loaded.biases):
        np.testing.assert_array_equal(a, b)
    book = book_network2.Network([5, 4, 3])
    book.save(str(tmp_path / "book.json"))           # the book's own file
    ours = network2.load(tmp_path / "book.json")
    assert ours.cost is network2.CrossEntropyCost
    x = np.random.rand(5, 1)
    np.testing.assert_allclose(ours.feedforward(x), book.feedforward(x), rtol=1e-14)
    # the saved file is the book's format, readable by the book's load
    again = book_network2.load(str(tmp_path / "net.json"))
    np.testing.assert_allclose(again.feedforward(x), net.feedforward(x), rtol=1e-14)
    assert sorted(json.loads((tmp_path / "net.json").read_text())) == ["biases", "cost", "sizes", "weights"]
    # an instance as cost (fig/overfitting.py passes CrossEntropyCost()) saves under its class name
    network2.Network([2, 2], cost=network2.CrossEntropyCost()).save(tmp_path / "inst.json")
    assert json.loads((tmp_path / "inst.json").read_text())["cost"] == "CrossEntropyCost"


def test_load_refuses_names_it_does_not_know(tmp_path):
    path = tmp_path / "evil.json"
    path.write_text(json.dumps({"sizes": [2, 2], "weights": [[[0, 0], [0, 0]]], "biases": [[[0], [0]]],
                                "cost": "load"}))
    with pytest.raises(DataError, match="unknown cost 'load'"):
        network2.load(path)
    path.write_text("not json")
    with pytest.raises(DataError, match="not a network2 JSON file"):
        network2.load(path)


def test_bad_sizes_are_one_clear_error():
    with pytest.raises(ShapeError, match="sizes"):
        network2.Network([784])
    with pytest.raises(ShapeError, match="sizes"):
        network.Network([784, 0, 10])


def test_update_mini_batch_is_one_step_of_the_book(book_network2):
    ours, book = twin_nets(book_network2, [6, 5, 3], "CrossEntropyCost", 4)
    rng = np.random.default_rng(4)
    batch = [random_example([6, 5, 3], rng) for _ in range(7)]
    ours.update_mini_batch(batch, 0.3, 2.0, 50)
    book.update_mini_batch(batch, 0.3, 2.0, 50)
    for a, b in zip(ours.weights + ours.biases, book.weights + book.biases):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-14)
