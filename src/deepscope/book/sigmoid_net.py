"""The network of the book's ``network.py`` and ``network2.py``, computed by deepscope's layers.

Both programs train the same thing: sigmoid neurons in fully connected layers, ``sizes = [784, 30, 10]``,

    a^l = σ(w^l a^{l-1} + b^l),

with ``net.weights[l]`` of shape ``(sizes[l+1], sizes[l])`` and ``net.biases[l]`` of shape ``(sizes[l+1], 1)``,
by mini-batch stochastic gradient descent on a list of ``(x, y)`` pairs of column vectors. The book loops over
the examples of a mini-batch one by one (``backprop(x, y)`` per example, summed); here the whole mini-batch
goes through :class:`deepscope.nn.Linear` and :class:`deepscope.nn.Sigmoid` layers at once (one matrix product
per layer), the cost's δ^L comes from :mod:`deepscope.nn.loss`, and :class:`deepscope.optim.SGD` applies

    w ← (1 - ηλ/n) w - (η/m) Σ_x ∇_w C_x,        b ← b - (η/m) Σ_x ∇_b C_x,

the update of network2's ``update_mini_batch`` (λ = 0 gives network.py's). Everything is float64, as the book's
NumPy code; the random numbers are the book's too: weights and biases are drawn with ``np.random.randn`` in
the book's order, and each epoch shuffles the training list with ``random.shuffle``, so ``random.seed`` and
``np.random.seed`` (which the book's scripts call) give the book's initial weights and its order of examples.

``net.weights`` and ``net.biases`` are the layers' parameters themselves (the biases as ``(n, 1)`` views), so
changing them in place changes the net; assigning a new list (``net.weights = [...]``) copies it in.
"""
from __future__ import annotations

import random

import numpy as np

from .. import nn, optim, train
from ..errors import ShapeError
from ..nn.activation import sigmoid
from ..nn.loss import Loss


class SigmoidNetwork:
    """Fully connected sigmoid layers ``sizes[0] → … → sizes[-1]`` with a book cost class.

    Args:
        sizes: the number of neurons in each layer, the input layer first (e.g. ``[784, 30, 10]``).
        cost: a cost class (or instance) with ``fn(a, y)`` and ``delta(z, a, y)`` as network2's.

    Attributes:
        model: the :class:`deepscope.nn.Sequential` ``Linear, Sigmoid, …, Linear`` (its output is z^L; the
            output sigmoid belongs to the cost, as in every deepscope cost).
    """

    def __init__(self, sizes, cost):
        self.num_layers = len(sizes)
        self.sizes = list(sizes)
        if self.num_layers < 2 or any(int(s) != s or s < 1 for s in self.sizes):
            raise ShapeError(f"Network: sizes must be at least two positive integers, got {sizes!r}")
        self.cost = cost
        self.linears = [nn.Linear(x, y, init="zeros") for x, y in zip(self.sizes[:-1], self.sizes[1:])]
        modules = []
        for lin in self.linears:
            modules += [lin, nn.Sigmoid()]
        self.model = nn.Sequential(*modules[:-1]).to("float64")
        self.model.needs_input_grad = False   # nobody reads ∂C/∂x of the data: the first layer skips it

    # -- the book's attributes ------------------------------------------------------------------------------
    @property
    def weights(self):
        """w^l for l = 2 … L: ``(sizes[l], sizes[l-1])`` arrays, the layers' own."""
        return [lin.weight.data for lin in self.linears]

    @weights.setter
    def weights(self, values):
        for lin, w in zip(self.linears, self._check(values, "weights", lambda lin: lin.weight.data.shape)):
            lin.weight.data = w

    @property
    def biases(self):
        """b^l for l = 2 … L: ``(sizes[l], 1)`` views of the layers' biases."""
        return [lin.bias.data.reshape(-1, 1) for lin in self.linears]

    @biases.setter
    def biases(self, values):
        for lin, b in zip(self.linears, self._check(values, "biases", lambda lin: (lin.out_features, 1))):
            lin.bias.data = b.reshape(-1)

    def _check(self, values, name, shape_of):
        arrays = [np.array(v, dtype=np.float64) for v in values]
        shapes = [shape_of(lin) for lin in self.linears]
        if [a.shape for a in arrays] != [tuple(s) for s in shapes]:
            raise ShapeError(f"Network.{name}: expected arrays of shapes {[tuple(s) for s in shapes]} for sizes "
                             f"{self.sizes}, got {[a.shape for a in arrays]}")
        return arrays

    def gaussian_initializer(self, weight_scale):
        """Biases ~ N(0, 1), then weights ~ N(0, 1) · ``weight_scale(n_in)``, drawn with ``np.random`` in the
        book's order (all biases, then all weights)."""
        self.biases = [np.random.randn(y, 1) for y in self.sizes[1:]]
        self.weights = [np.random.randn(y, x) * weight_scale(x) for x, y in zip(self.sizes[:-1], self.sizes[1:])]

    # -- computing ------------------------------------------------------------------------------------------
    def feedforward(self, a):
        """The output a^L for the input ``a``: a ``(784, 1)`` column, or ``(784, k)`` for k inputs at once."""
        a = np.asarray(a, dtype=np.float64)
        return sigmoid(self.model(a.reshape(a.shape[0], -1).T)).T.reshape((-1,) + a.shape[1:])

    def backprop(self, x, y):
        """``(nabla_b, nabla_w)``: the gradient of the cost C_x of one example, layer by layer, shaped like
        ``self.biases`` and ``self.weights`` (x ``(784, 1)``, y ``(10, 1)``). One forward and one backward pass
        of the layers (BP1-BP4); with one example the batch mean is C_x itself."""
        loss = self.loss()
        loss(self.model(np.reshape(x, (1, -1)).astype(np.float64)), np.reshape(y, (1, -1)).astype(np.float64))
        self.model.zero_grad()
        self.model.backward(loss.backward())
        return ([lin.bias.grad.reshape(-1, 1).copy() for lin in self.linears],
                [lin.weight.grad.copy() for lin in self.linears])

    def loss(self) -> Loss:
        """The deepscope cost that computes ``self.cost``: the book's two classes name theirs (``loss``); any
        other cost class is used through its own ``fn`` and ``delta``."""
        cls = self.cost if isinstance(self.cost, type) else type(self.cost)
        made = cls.__dict__.get("loss")
        return made() if made is not None else BookCost(self.cost)

    def optimizer(self, eta, lmbda=0.0, n=1):
        """network2's update as :class:`deepscope.optim.SGD`: weight decay λ/n on the weights, none on biases."""
        return optim.SGD(self.model.parameters(), lr=eta, weight_decay=optim.book_weight_decay(lmbda, n))

    def step(self, loss, optimizer, X, Y):
        """One mini-batch (rows of ``X``, ``Y``): forward, δ^L, backward (BP1-BP4), update
        (:func:`deepscope.train.step`, which stops with a clear error if the cost is not finite)."""
        train.step(self.model, loss, optimizer, X, Y)

    @staticmethod
    def training_set(training_data):
        """``(training_data, data, order)`` for :meth:`train_epoch`: the list itself (a list is shuffled in
        place, as the book's; anything else is copied into one), its examples stacked, and the identity order."""
        if not isinstance(training_data, list):
            training_data = list(training_data)
        data = stack(training_data)
        return training_data, data, np.arange(len(training_data))

    def train_epoch(self, training_data, data, order, mini_batch_size, loss, optimizer):
        """One epoch of the book's SGD: ``random.shuffle(training_data)`` (the list is shuffled in place, as
        the book's), then one step per mini-batch ``training_data[k:k+mini_batch_size]``. ``data`` is the list
        stacked once (:func:`stack`) and ``order[i]`` the row of ``data`` that ``training_data[i]`` holds; the
        new order is returned."""
        perm = list(range(len(training_data)))
        random.shuffle(perm)     # the same draws as random.shuffle(training_data)
        training_data[:] = [training_data[i] for i in perm]
        order = order[perm]
        X, Y = data
        for k in range(0, len(order), mini_batch_size):
            rows = order[k:k + mini_batch_size]
            self.step(loss, optimizer, X[rows], Y[rows])
        return order

    def predictions(self, X):
        """The index of the most active output neuron for each row of ``X``."""
        return self.model(X).argmax(axis=1)   # σ is increasing: the largest z^L is the largest a^L

    def correct(self, data) -> int:
        """How many of the stacked ``data = (X, Y)`` the net classifies correctly (Y digits or unit vectors)."""
        X, Y = data
        labels = Y.argmax(axis=1) if Y.ndim == 2 else Y
        return int((self.predictions(X) == labels).sum())


class BookCost(Loss):
    """A book-style cost class (static ``fn(a, y)`` and ``delta(z, a, y)`` on column vectors) as a deepscope
    cost over a mini-batch, with the output neuron a = σ(z): C = (1/m) fn(A, Y), δ^L = delta(Z, A, Y)/m with
    the examples as columns (the book's functions are elementwise, so they take a matrix as well)."""

    def __init__(self, cost):
        self.cost = cost

    def forward(self, z, target) -> float:
        self._z, self._y = z, self._dense(z, target)
        self._a = sigmoid(z)
        return float(self.cost.fn(self._a.T, self._y.T)) / z.shape[0]

    def backward(self):
        return self.cost.delta(self._z.T, self._a.T, self._y.T).T / self._z.shape[0]

    def activation(self, z):
        return sigmoid(z)


def stack(data):
    """A list of ``(x, y)`` pairs as arrays ``(X, Y)``: X float64 ``(n, len(x))``, one row per example; Y float64
    ``(n, len(y))`` for vector targets, int64 ``(n,)`` for digits."""
    data = data if isinstance(data, list) else list(data)
    if not data:
        raise ShapeError("no examples: the data list is empty")
    X = np.array([x for x, _ in data], dtype=np.float64).reshape(len(data), -1)
    if np.ndim(data[0][1]) == 0:
        return X, np.array([y for _, y in data], dtype=np.int64)
    return X, np.array([y for _, y in data], dtype=np.float64).reshape(len(data), -1)
