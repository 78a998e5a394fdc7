"""network2.py, on deepscope: the book's improved network (cross-entropy cost, L2 regularisation, better
initial weights), with its classes, functions, arguments and printed lines; only the import changes.

    from deepscope.book import mnist_loader, network2
    training_data, validation_data, test_data = mnist_loader.load_data_wrapper()
    net = network2.Network([784, 30, 10], cost=network2.CrossEntropyCost)
    net.SGD(training_data, 30, 10, 0.5, lmbda=5.0, evaluation_data=validation_data,
            monitor_evaluation_accuracy=True)

The network is :class:`deepscope.book.sigmoid_net.SigmoidNetwork`: a mini-batch goes through deepscope's
layers at once instead of one example at a time, in float64, with the book's random numbers
(``np.random.randn`` for the weights, ``random.shuffle`` for the order), so ``backprop(x, y)`` returns the
book's ``(nabla_b, nabla_w)`` and ``SGD`` the book's four monitoring lists. ``docs/deviations.md`` lists the
few differences (the sigmoid is computed without overflow; ``save`` writes atomically; ``load`` accepts only
the book's two cost names).
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from .. import nn
from ..errors import DataError
from ..nn.activation import sigmoid as _sigmoid
from .mnist_loader import vectorized_result
from .sigmoid_net import SigmoidNetwork, stack


#### The quadratic and cross-entropy cost functions
class QuadraticCost:
    """C_x = ½‖a - y‖²;  δ^L = (a - y) ⊙ σ'(z)."""

    loss = nn.QuadraticCost   # the deepscope cost that computes it for a whole mini-batch

    @staticmethod
    def fn(a, y):
        """The cost of an output ``a`` with desired output ``y``."""
        return 0.5 * np.linalg.norm(a - y) ** 2

    @staticmethod
    def delta(z, a, y):
        """The error δ of the output layer."""
        return (a - y) * sigmoid_prime(z)


class CrossEntropyCost:
    """C_x = -Σ_j [y_j ln a_j + (1-y_j) ln(1-a_j)];  δ^L = a - y (no σ'(z): the learning slowdown is gone)."""

    loss = nn.CrossEntropyCost

    @staticmethod
    def fn(a, y):
        """The cost of an output ``a`` with desired output ``y``; ``np.nan_to_num`` turns the 0·log 0 of a
        saturated neuron with the right answer into 0, as the book's."""
        return np.sum(np.nan_to_num(-y * np.log(a) - (1 - y) * np.log(1 - a)))

    @staticmethod
    def delta(z, a, y):
        """The error δ of the output layer (``z`` is unused, kept for the interface)."""
        return a - y


#### Main Network class
class Network(SigmoidNetwork):
    """``Network(sizes, cost=CrossEntropyCost)``: weights N(0, 1/n_in), biases N(0, 1)
    (:meth:`default_weight_initializer`)."""

    def __init__(self, sizes, cost=CrossEntropyCost):
        super().__init__(sizes, cost)
        self.default_weight_initializer()

    def default_weight_initializer(self):
        """Weights ~ N(0, 1/n_in) (n_in = the number of inputs of the neuron), biases ~ N(0, 1)."""
        self.gaussian_initializer(lambda n_in: 1 / np.sqrt(n_in))

    def large_weight_initializer(self):
        """Weights and biases ~ N(0, 1), as in chapter 1 (for comparison)."""
        self.gaussian_initializer(lambda n_in: 1.0)

    def SGD(self, training_data, epochs, mini_batch_size, eta,
            lmbda=0.0,
            evaluation_data=None,
            monitor_evaluation_cost=False,
            monitor_evaluation_accuracy=False,
            monitor_training_cost=False,
            monitor_training_accuracy=False):
        """Train by mini-batch stochastic gradient descent with L2 regularisation ``lmbda``.

        ``training_data`` is a list of ``(x, y)`` pairs (shuffled in place each epoch, as the book's);
        ``evaluation_data`` (usually validation or test data, y a digit) is measured if asked. Returns the
        book's four per-epoch lists ``(evaluation_cost, evaluation_accuracy, training_cost,
        training_accuracy)``, each of length ``epochs`` when its flag is set and empty otherwise; costs
        include the L2 term, accuracies are counts of correct examples.
        """
        training_data, train, order = self.training_set(training_data)
        if evaluation_data:
            n_data = len(evaluation_data)
            evaluation = stack(evaluation_data)
        n = len(training_data)
        loss, optimizer = self.loss(), self.optimizer(eta, lmbda, n)
        evaluation_cost, evaluation_accuracy = [], []
        training_cost, training_accuracy = [], []
        for j in range(epochs):
            order = self.train_epoch(training_data, train, order, mini_batch_size, loss, optimizer)
            print("Epoch %s training complete" % j)
            if monitor_training_cost:
                cost = self._total_cost(train, lmbda)
                training_cost.append(cost)
                print("Cost on training data: {}".format(cost))
            if monitor_training_accuracy:
                accuracy = self.correct(train)
                training_accuracy.append(accuracy)
                print("Accuracy on training data: {} / {}".format(accuracy, n))
            if monitor_evaluation_cost:
                cost = self._total_cost(evaluation, lmbda)
                evaluation_cost.append(cost)
                print("Cost on evaluation data: {}".format(cost))
            if monitor_evaluation_accuracy:
                accuracy = self.correct(evaluation)
                evaluation_accuracy.append(accuracy)
                print("Accuracy on evaluation data: {} / {}".format(accuracy, n_data))
            print()
        return evaluation_cost, evaluation_accuracy, training_cost, training_accuracy

    def update_mini_batch(self, mini_batch, eta, lmbda, n):
        """One gradient-descent step on ``mini_batch`` (a list of ``(x, y)``), with regularisation ``lmbda``
        and ``n`` the size of the whole training set."""
        X, Y = stack(mini_batch)
        self.step(self.loss(), self.optimizer(eta, lmbda, n), X, Y)

    def accuracy(self, data, convert=False):
        """The number of inputs in ``data`` the network classifies correctly (the most active output neuron).
        ``convert`` is the book's flag (True for training data, whose y are unit vectors); deepscope reads
        the form of y itself, so both values give the right count."""
        return self.correct(stack(data))

    def total_cost(self, data, lmbda, convert=False):
        """The total cost on ``data``: the mean of ``cost.fn`` over the examples plus the L2 term
        ½(λ/len(data))Σ‖w‖². ``convert`` is the book's flag (True when the y of ``data`` are digits);
        deepscope reads the form of y itself."""
        return self._total_cost(stack(data), lmbda)

    def _total_cost(self, data, lmbda):
        X, Y = data
        if Y.ndim == 1:
            Y = np.eye(self.sizes[-1])[Y]
        A = self.feedforward(X.T)
        if _cost_class(self.cost) in COSTS.values():   # their fn sums over its entries: all examples at once
            cost = self.cost.fn(A, Y.T) / len(X)
        else:
            cost = sum(self.cost.fn(A[:, [i]], Y[[i]].T) for i in range(len(X))) / len(X)
        return cost + 0.5 * (lmbda / len(X)) * sum(np.linalg.norm(w) ** 2 for w in self.weights)

    def save(self, filename):
        """Save the network to ``filename`` as the book's JSON (sizes, weights, biases, cost name), written to
        a temporary file first and moved into place, so a crash never leaves half a file."""
        data = {"sizes": self.sizes,
                "weights": [w.tolist() for w in self.weights],
                "biases": [b.tolist() for b in self.biases],
                "cost": str(_cost_class(self.cost).__name__)}
        folder = os.path.dirname(os.path.abspath(filename))
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(filename) + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f)
            os.replace(tmp, filename)
        except BaseException:
            os.unlink(tmp)
            raise


#### Loading a Network
COSTS = {"QuadraticCost": QuadraticCost, "CrossEntropyCost": CrossEntropyCost}


def load(filename):
    """Load a network saved by :meth:`Network.save` (or by the book's network2). The cost is looked up by
    name among the book's two; nothing else named in the file is ever imported or called."""
    with open(filename, "r") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{filename}: not a network2 JSON file ({e})") from None
    if not isinstance(data, dict) or not {"sizes", "weights", "biases", "cost"} <= set(data):
        raise DataError(f"{filename}: expected a JSON object with sizes, weights, biases and cost")
    if data["cost"] not in COSTS:
        raise DataError(f"{filename}: unknown cost {data['cost']!r}: expected one of {', '.join(COSTS)}")
    net = Network(data["sizes"], cost=COSTS[data["cost"]])
    net.weights = [np.array(w) for w in data["weights"]]
    net.biases = [np.array(b) for b in data["biases"]]
    return net


#### Miscellaneous functions
def _cost_class(cost):
    return cost if isinstance(cost, type) else type(cost)


def sigmoid(z):
    """The sigmoid function (deepscope's, exact without overflow for any z)."""
    return _sigmoid(np.asarray(z, dtype=np.float64))


def sigmoid_prime(z):
    """Derivative of the sigmoid function."""
    return sigmoid(z) * (1 - sigmoid(z))


__all__ = ["QuadraticCost", "CrossEntropyCost", "Network", "load", "vectorized_result", "sigmoid",
           "sigmoid_prime"]
