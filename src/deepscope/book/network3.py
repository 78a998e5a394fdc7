"""network3.py, rebuilt on deepscope: the book's chapter 6 code runs with only its imports changed.

    from deepscope.book.network3 import Network, ConvPoolLayer, FullyConnectedLayer, SoftmaxLayer
    from deepscope.book.network3 import sigmoid, tanh, ReLU, linear, load_data_shared, size

    training_data, validation_data, test_data = load_data_shared()
    mini_batch_size = 10
    net = Network([
        ConvPoolLayer(image_shape=(mini_batch_size, 1, 28, 28), filter_shape=(20, 1, 5, 5), poolsize=(2, 2)),
        FullyConnectedLayer(n_in=20*12*12, n_out=100),
        SoftmaxLayer(n_in=100, n_out=10)], mini_batch_size)
    net.SGD(training_data, 60, mini_batch_size, 0.1, validation_data, test_data)

Nielsen's network3 built a Theano graph; here each network3 layer becomes a few deepscope modules
(``Conv2d`` + ``MaxPool2d`` + activation, ``Linear`` + activation, dropout) chained in one
:class:`deepscope.nn.Sequential` (``net.model``), trained by explicit backpropagation.

With ``quirks=True`` (the default here, and only here) the network behaves as network3 did:

* FullyConnectedLayer weights ~ N(0, 1/n_out) (not 1/n_in), biases ~ N(0, 1);
* ConvPoolLayer weights ~ N(0, 1/n_out) with n_out = out_maps*kh*kw // (pool_h*pool_w), biases ~ N(0, 1);
* SoftmaxLayer weights and biases start at zero;
* the L2 term is 0.5*λ*Σw²/num_training_batches (divided by the number of mini-batches, not by n),
  on every layer's weights (never the biases);
* the training data are visited in the same order every epoch (no reshuffling), and only the first
  ``num_training_batches*mini_batch_size`` examples are used (the same for validation and test);
* dropout as network3 did it: a layer with ``p_dropout`` drops each of its *inputs* with probability p
  during training without rescaling, and at test time multiplies its weighted input by (1-p)
  (``nn.Dropout(p, scale_at_test=True)``);
* the activation is applied after the max-pooling (σ(max(z) + b)).

With ``quirks=False`` the same layers get deepscope's defaults: weights ~ N(0, 1/n_in) everywhere (the
output layer included), L2 as network2 (λ/n per step), reshuffling every epoch, inverted dropout
(:class:`deepscope.nn.Dropout`). ``docs/deviations.md`` lists every difference.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy

from .. import backend, nn
from ..errors import ArchitectureError, DataError, NonFiniteError, ShapeError
from ..nn import init as _init
from ..nn.activation import sigmoid as _sigmoid
from ..optim import SGD as _SGD
from ..train import step
from .mnist_loader import expanded_training_data, find_expanded_mnist, find_mnist


# network3's GPU flag. Theano compiled for the GPU when it was True; in deepscope a Network built while it is
# True lives on the GPU (``model.to("cuda")``, CuPy; without CuPy and a GPU, one clear ConfigError).
GPU = False


# -- activation functions (network3 passes these functions to the layers) -------------------------------
def linear(z):
    """a = z."""
    return z


def ReLU(z):
    """a = max(0, z)."""
    return backend.xp_of(z).maximum(0.0, z)


def sigmoid(z):
    """a = 1/(1 + e^{-z})."""
    return _sigmoid(z)


def tanh(z):
    """a = tanh z."""
    return backend.xp_of(z).tanh(z)


def activation_module(fn) -> nn.Module:
    """The deepscope module for a network3 activation: one of the functions above (looked up in the one
    registry, ``deepscope.nn.ACTIVATIONS``, by its name), a name ("sigmoid", "tanh", "relu", "linear"), a
    Module class or a Module instance."""
    if isinstance(fn, nn.Module):
        return fn
    if isinstance(fn, type) and issubclass(fn, nn.Module):
        return fn()
    if fn in (linear, ReLU, sigmoid, tanh):
        fn = fn.__name__
    if isinstance(fn, str) and fn.lower() in nn.ACTIVATIONS:
        return nn.activation(fn)
    raise ArchitectureError(f"unknown activation_fn {fn!r}: use sigmoid, tanh, ReLU or linear from "
                            f"deepscope.book.network3 (or a deepscope.nn activation)")


# -- what network3 exposed through Theano ------------------------------------------------------------------
class SharedVariable:
    """A layer's ``w`` or ``b`` as network3 exposed it (a Theano shared variable), over a deepscope Parameter.

    ``eval()`` and ``get_value()`` return a NumPy copy in network3's layout (a fully connected layer's ``w`` is
    ``(n_in, n_out)``, the transpose of deepscope's ``(n_out, n_in)``; conv filters and biases are as they are);
    ``set_value(v)`` takes that layout. ``data`` and ``grad`` are the Parameter's own arrays (deepscope's layout).
    """

    def __init__(self, parameter, transpose: bool = False):
        self.parameter = parameter
        self.transpose = transpose

    @property
    def data(self):
        return self.parameter.data

    @data.setter
    def data(self, value):
        self.parameter.data = value

    @property
    def grad(self):
        return self.parameter.grad

    def eval(self):
        value = backend.to_numpy(self.parameter.data)
        return (value.T if self.transpose else value).copy()

    def get_value(self, borrow: bool = False):
        return self.eval()

    def set_value(self, value, borrow: bool = False):
        value = numpy.asarray(value)
        value = value.T if self.transpose else value
        if value.shape != tuple(self.parameter.data.shape):
            raise ShapeError(f"set_value: expected shape {self.eval().shape}, got {numpy.shape(value.T if self.transpose else value)}")
        self.parameter.data[...] = backend.to_device(value, backend.xp_of(self.parameter.data))

    def __repr__(self):
        return f"SharedVariable({self.eval().shape})"


class SharedArray(numpy.ndarray):
    """A data array as ``load_data_shared`` returned it in network3 (a Theano shared variable, or for the labels
    ``T.cast(shared_y, "int32")``): a NumPy array that also answers ``eval()`` and ``get_value()``
    (``test_data[1].eval()``, ``training_data[0].get_value(borrow=True)``) with itself as a plain array."""

    def eval(self):
        return self.view(numpy.ndarray)

    def get_value(self, borrow: bool = False):
        return self.view(numpy.ndarray)


def shared(data):
    """``(X, y)`` as network3's shared variables (:class:`SharedArray`)."""
    return tuple(numpy.asarray(a).view(SharedArray) for a in data)


def dropout_layer(layer, p_dropout):
    """network3's ``dropout_layer``: ``layer`` with each entry kept with probability 1-p and zeroed otherwise,
    unscaled; the mask comes from deepscope's generator (network3 drew it from Theano's RandomStreams)."""
    xp = backend.xp_of(layer)
    mask = backend.rng().random(layer.shape) >= p_dropout
    return layer * backend.to_device(mask, xp, dtype=layer.dtype)


class _NoTheano(AttributeError):
    pass


def _symbolic(name, instead):
    """A property for a Theano symbol that has no deepscope counterpart: reading it says what to use."""
    def fail(self):
        raise _NoTheano(f"{name} was a Theano symbol in network3; deepscope computes directly: use {instead}")
    return property(fail)


# -- layers: network3's descriptions; Network turns them into deepscope modules ------------------------
class ConvPoolLayer:
    """A convolutional layer followed by max-pooling and the activation, as network3's ConvPoolLayer.

    Args:
        filter_shape: ``(out_maps, in_maps, kh, kw)``.
        image_shape: ``(mini_batch_size, in_maps, height, width)``.
        poolsize: ``(ph, pw)`` max-pooling window (and stride).
        activation_fn: sigmoid, tanh, ReLU or linear.

    After :class:`Network` is built, ``w`` and ``b`` are the conv layer's Parameters
    (``w.data`` has shape ``filter_shape``).
    """

    def __init__(self, filter_shape, image_shape, poolsize=(2, 2), activation_fn=sigmoid):
        self.filter_shape = tuple(int(v) for v in filter_shape)
        self.image_shape = tuple(int(v) for v in image_shape)
        self.poolsize = tuple(int(v) for v in poolsize)
        self.activation_fn = activation_fn
        if len(self.filter_shape) != 4 or len(self.image_shape) != 4 or len(self.poolsize) != 2:
            raise ArchitectureError(f"ConvPoolLayer: filter_shape and image_shape need 4 entries and poolsize 2, "
                                    f"got {filter_shape}, {image_shape}, {poolsize}")
        c_out, c_in, kh, kw = self.filter_shape
        _, maps, h, w = self.image_shape
        if c_in != maps:
            raise ArchitectureError(f"ConvPoolLayer: filter_shape {self.filter_shape} expects {c_in} input maps "
                                    f"but image_shape {self.image_shape} has {maps}")
        if h < kh or w < kw:
            raise ArchitectureError(f"ConvPoolLayer: a {kh}x{kw} filter does not fit images of {h}x{w}")
        self.in_shape = (maps, h, w)
        ph, pw = self.poolsize
        self.out_shape = (c_out, (h - kh + 1) // ph, (w - kw + 1) // pw)
        self.n_in = maps * h * w
        self.n_out = int(numpy.prod(self.out_shape))
        self.w = self.b = None

    def init_std(self) -> float:
        """network3's weight scale: sqrt(1/n_out), n_out = out_maps*kh*kw // (ph*pw) (Python 2 division)."""
        c_out, _, kh, kw = self.filter_shape
        return math.sqrt(1.0 / ((c_out * kh * kw) // (self.poolsize[0] * self.poolsize[1])))

    def build(self, quirks: bool, flatten: bool = False):
        c_out, c_in, kh, kw = self.filter_shape
        kernel = kh if kh == kw else (kh, kw)
        pool = self.poolsize[0] if self.poolsize[0] == self.poolsize[1] else self.poolsize
        conv = nn.Conv2d(c_in, c_out, kernel, init="zeros" if quirks else "book")
        if quirks:
            conv.weight.data = _init.normal(self.filter_shape, self.init_std())
            conv.bias.data = _init.normal((c_out,), 1.0)
        self.w, self.b = SharedVariable(conv.weight), SharedVariable(conv.bias)
        # network3: σ(maxpool(conv) + b); the bias is per map, so it commutes with the max.
        return [conv, nn.MaxPool2d(pool), activation_module(self.activation_fn)]


class FullyConnectedLayer:
    """A fully connected layer ``a = σ(w·x + b)`` with optional network3 dropout on its inputs.

    Args:
        n_in, n_out: numbers of inputs and neurons.
        activation_fn: sigmoid, tanh, ReLU or linear.
        p_dropout: probability of dropping each input during training.

    After :class:`Network` is built, ``w`` and ``b`` are the Linear layer's Parameters; note that
    ``w.data`` is ``(n_out, n_in)`` (PyTorch's layout), the transpose of network3's ``(n_in, n_out)``.
    """

    y_out = _symbolic("layer.y_out", "net.predict(X) (the most likely digit for each input)")

    def __init__(self, n_in, n_out, activation_fn=sigmoid, p_dropout=0.0):
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.activation_fn = activation_fn
        self.p_dropout = float(p_dropout)
        self.w = self.b = None

    def init_std(self) -> float:
        """network3's weight scale: sqrt(1/n_out)."""
        return math.sqrt(1.0 / self.n_out)

    def _linear(self, quirks: bool, zero: bool = False):
        lin = nn.Linear(self.n_in, self.n_out, init="zeros" if quirks else "book")
        if quirks and not zero:
            lin.weight.data = _init.normal((self.n_out, self.n_in), self.init_std())
            lin.bias.data = _init.normal((self.n_out,), 1.0)
        self.w, self.b = SharedVariable(lin.weight, transpose=True), SharedVariable(lin.bias)
        return lin

    def _head(self, quirks: bool, flatten: bool):
        mods = [nn.Flatten()] if flatten else []
        if self.p_dropout > 0:
            # network3 drops the layer's inputs, unscaled, and multiplies them by (1-p) at test time
            mods.append(nn.Dropout(self.p_dropout, scale_at_test=quirks))
        return mods

    def build(self, quirks: bool, flatten: bool = False):
        return self._head(quirks, flatten) + [self._linear(quirks), activation_module(self.activation_fn)]


class SoftmaxLayer(FullyConnectedLayer):
    """The softmax output layer: gives the logits z; :class:`~deepscope.nn.LogLikelihoodCost` applies the
    softmax. network3 starts its weights and biases at zero (``quirks=True``)."""

    def __init__(self, n_in, n_out, p_dropout=0.0):
        super().__init__(n_in, n_out, activation_fn=None, p_dropout=p_dropout)

    def build(self, quirks: bool, flatten: bool = False):
        return self._head(quirks, flatten) + [self._linear(quirks, zero=True)]


# -- the network ------------------------------------------------------------------------------------------
@dataclass
class SGDResult:
    """What :meth:`Network.SGD` found (network3 only printed it)."""
    best_validation_accuracy: float = 0.0
    best_iteration: int | None = None
    best_epoch: int | None = None
    test_accuracy: float | None = None
    epochs: list = field(default_factory=list)  # one dict per epoch: epoch, cost, validation_accuracy


class Network:
    """A network3 Network: ``Network(layers, mini_batch_size)``, then ``net.SGD(...)``.

    Args:
        layers: ConvPoolLayer / FullyConnectedLayer / SoftmaxLayer descriptions; the last is the output.
        mini_batch_size: network3's m (training uses the one passed to ``SGD``).
        quirks: reproduce network3's initialisation, L2 normalisation, data order and dropout (default
            True); False gives deepscope's defaults (see the module docstring).

    Attributes:
        model: the :class:`deepscope.nn.Sequential` the layers became (logits out).
        params: its Parameters, in order.
    """

    x = _symbolic("net.x", "net.predict(X) or net.feedforward(X) on the inputs X themselves")
    y = _symbolic("net.y", "the labels y themselves (net.accuracy((X, y)))")

    def __init__(self, layers, mini_batch_size, quirks: bool = True):
        self.layers = list(layers)
        self.mini_batch_size = int(mini_batch_size)
        self.quirks = bool(quirks)
        if not self.layers:
            raise ArchitectureError("Network: no layers")
        if not isinstance(self.layers[-1], SoftmaxLayer):
            raise ArchitectureError(f"Network: the last layer must be a SoftmaxLayer, got "
                                    f"{type(self.layers[-1]).__name__}")
        modules = []
        for j, layer in enumerate(self.layers):
            if not isinstance(layer, (ConvPoolLayer, FullyConnectedLayer)):
                raise ArchitectureError(f"Network: layer {j} is a {type(layer).__name__}, not a network3 layer")
            prev = self.layers[j - 1] if j else None
            if prev is not None and prev.n_out != layer.n_in:
                raise ArchitectureError(f"Network: layer {j} ({type(layer).__name__}) takes n_in={layer.n_in} "
                                        f"inputs but layer {j - 1} gives {prev.n_out}")
            if isinstance(layer, ConvPoolLayer) and prev is not None and not isinstance(prev, ConvPoolLayer):
                raise ArchitectureError(f"Network: ConvPoolLayer {j} follows a fully connected layer")
            modules += layer.build(self.quirks, flatten=isinstance(prev, ConvPoolLayer))
        self.model = nn.Sequential(*modules)
        if GPU:
            self.model.to("cuda")    # network3's GPU flag: deepscope's device (CuPy; one clear error without it)
        self.params = self.model.parameters()
        self.cost = nn.LogLikelihoodCost()
        first = self.layers[0]
        self.input_shape = first.in_shape if isinstance(first, ConvPoolLayer) else (first.n_in,)

    # -- inputs and outputs ---------------------------------------------------------------------------
    def inputs(self, X):
        """``X`` reshaped to what the first layer takes ((N, C, H, W) or (N, n_in)), in the model's dtype."""
        n = X.shape[0]
        if int(numpy.prod(X.shape[1:])) != int(numpy.prod(self.input_shape)):
            raise ShapeError(f"Network: inputs of shape {tuple(X.shape)} do not fit the first layer, which "
                             f"takes {self.input_shape}")
        return backend.to_device(X.reshape((n,) + tuple(self.input_shape)), self.model.xp, dtype=self.model.dtype)

    def feedforward(self, X, batch_size: int = 1000):
        """The logits for ``X`` with the network in test mode (as a NumPy array)."""
        self.model.eval()
        out = [backend.to_numpy(self.model(self.inputs(X[i:i + batch_size])))
               for i in range(0, X.shape[0], batch_size)]
        self.model.train()
        return numpy.concatenate(out)

    def predict(self, X):
        """network3's ``y_out``: the most likely digit for each input."""
        return self.feedforward(X).argmax(axis=1)

    def accuracy(self, data, mini_batch_size=None):
        """The fraction of ``data = (X, y)`` classified correctly. With quirks, as network3: only the first
        ``(N // mini_batch_size) * mini_batch_size`` examples count."""
        X, y = data
        n = X.shape[0]
        if self.quirks:
            m = mini_batch_size or self.mini_batch_size
            n = (n // m) * m
        if n == 0:
            return 0.0
        return float((self.predict(X[:n]) == backend.to_numpy(y[:n])).mean())

    # -- training -------------------------------------------------------------------------------------
    def SGD(self, training_data, epochs, mini_batch_size, eta, validation_data, test_data, lmbda=0.0,
            verbose: bool = True) -> SGDResult:
        """Train by mini-batch stochastic gradient descent, printing network3's lines.

        The cost is the mean log-likelihood of the mini-batch plus the L2 term: with quirks,
        0.5*λ*Σw²/num_training_batches (network3); without, 0.5*λ*Σw²/n (network2). After each epoch the
        validation accuracy is measured; at every new best (≥) the test accuracy too. Returns an
        :class:`SGDResult` (network3 returned nothing).
        """
        say = print if verbose else (lambda *a, **k: None)
        training_x, training_y = training_data
        n = size(training_data)
        num_training_batches = n // mini_batch_size
        if num_training_batches == 0:
            raise DataError(f"Network.SGD: {n} training examples is less than one mini-batch of {mini_batch_size}")
        weight_decay = lmbda / num_training_batches if self.quirks else lmbda / n
        optimizer = _SGD(self.params, lr=eta, weight_decay=weight_decay)
        rng = backend.rng()
        y_all = numpy.asarray(backend.to_numpy(training_y)).astype(numpy.int64)

        result = SGDResult()
        self.model.train()
        for epoch in range(epochs):
            order = numpy.arange(n) if self.quirks else rng.permutation(n)
            cost_sum = 0.0
            for minibatch_index in range(num_training_batches):
                iteration = num_training_batches * epoch + minibatch_index
                if iteration % 1000 == 0:
                    say("Training mini-batch number {0}".format(iteration))
                idx = order[minibatch_index * mini_batch_size:(minibatch_index + 1) * mini_batch_size]
                xb = self.inputs(training_x[idx])
                yb = backend.to_device(y_all[idx], self.model.xp)
                def finite(cost, iteration=iteration):
                    if not math.isfinite(cost):
                        raise NonFiniteError(f"Network.SGD: the cost became {cost} at iteration {iteration}; "
                                             f"try a smaller eta (now {eta})")
                cost_ij, _ = step(self.model, self.cost, optimizer, xb, yb, finite)   # update_mini_batch
                cost_sum += cost_ij
            validation_accuracy = self.accuracy(validation_data, mini_batch_size)
            record = {"epoch": epoch, "cost": float(cost_sum) / num_training_batches,
                      "validation_accuracy": validation_accuracy}
            say("Epoch {0}: validation accuracy {1:.2%}".format(epoch, validation_accuracy))
            if validation_accuracy >= result.best_validation_accuracy:
                say("This is the best validation accuracy to date.")
                result.best_validation_accuracy = validation_accuracy
                result.best_iteration = iteration
                result.best_epoch = epoch
                if test_data:
                    result.test_accuracy = self.accuracy(test_data, mini_batch_size)
                    record["test_accuracy"] = result.test_accuracy
                    say("The corresponding test accuracy is {0:.2%}".format(result.test_accuracy))
            result.epochs.append(record)
        say("Finished training network.")
        say("Best validation accuracy of {0:.2%} obtained at iteration {1}".format(
            result.best_validation_accuracy, result.best_iteration))
        if result.test_accuracy is not None:
            say("Corresponding test accuracy of {0:.2%}".format(result.test_accuracy))
        self.result = result
        return result


# -- data -------------------------------------------------------------------------------------------------
def size(data):
    """The number of examples in ``data = (X, y)``."""
    return data[0].shape[0]


def load_data_shared(filename=None, data_dir=None):
    """MNIST as network3's ``[training_data, validation_data, test_data]``, each ``(X, y)`` with X float32
    ``(N, 1, 28, 28)`` in [0, 1] and y int64 ``(N,)`` (the book's 50k/10k/10k split).

    Found as the book's users keep it (:mod:`deepscope.book.mnist_loader`): ``filename`` (default: the book's
    ``../data/mnist.pkl.gz``, relative to the working folder; a folder of MNIST files works too), then
    deepscope's search (``data_dir``, ``$DEEPSCOPE_DATA``, the cache, a download), then the shipped sample
    with a line saying so. The book's pickles are read with deepscope's safe unpickler (arrays only).

    A name containing ``expanded`` (the book's ``../data/mnist_expanded.pkl.gz``) is chapter 6's expanded
    training set (250,000 images): read if the file exists, otherwise built from the same MNIST the
    validation and test sets come from (:func:`deepscope.book.mnist_loader.find_expanded_mnist`).
    """
    if filename is not None and "expanded" in os.path.basename(os.fspath(filename)):
        mnist = find_expanded_mnist(filename, data_dir=data_dir)
    else:
        mnist = find_mnist(filename, data_dir=data_dir)
    return [shared(mnist.train), shared(mnist.validation), shared(mnist.test)]

