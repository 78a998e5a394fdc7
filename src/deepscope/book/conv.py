"""conv.py, on deepscope: the driver of chapter 6's experiments with convolutional networks, with the book's
functions and arguments, written on :mod:`deepscope.book.network3`.

    from deepscope.book import conv
    nets = conv.double_fc_dropout(0.5, 0.5, 0.5, 5)
    error_locations, erroneous_predictions = conv.ensemble(nets)
    conv.plot_errors(error_locations, erroneous_predictions).savefig("ensemble_errors.png")

The book's conv.py loaded MNIST when imported; here ``conv.training_data``, ``conv.validation_data`` and
``conv.test_data`` are loaded the first time they are used (``network3.load_data_shared()``: the book's
``../data/mnist.pkl.gz``, then deepscope's search; assign them to use other data). What network3 exposed
through Theano is computed directly (``docs/deviations.md``, "conv.py and network3's Theano names"):

====================================================  =======================================================
book (Theano)                                         deepscope
====================================================  =======================================================
``theano.function([i], net.layers[-1].y_out,``        ``net.predict(X)``: the most likely digit of each input
``givens={net.x: test_x[i*m:(i+1)*m]})``
``test_data[1].eval()``, ``data[0].get_value()``      the same: the arrays answer ``eval()``/``get_value()``
``net.layers[k].w.eval()``                            the same: a NumPy copy in network3's layout
``network3.GPU``                                      the same flag: True puts new nets on the GPU (CuPy)
``network3.dropout_layer(layer, p)``                  the same function, on arrays, deepscope's generator
====================================================  =======================================================

Functions whose run count or epochs the book wrote into the body take them as keyword arguments, with the
book's values as defaults (``runs=3``, ``epochs=60``), so that a short run is possible.
"""
from __future__ import annotations

import numpy as np

from . import network3
from .ch6 import ensemble_predict
from .network3 import ConvPoolLayer, FullyConnectedLayer, Network, ReLU, SoftmaxLayer, sigmoid

mini_batch_size = 10
_DATA_NAMES = ("training_data", "validation_data", "test_data")


def __getattr__(name):
    """``conv.training_data`` etc., loaded on first use (the book's conv.py loaded them on import)."""
    if name in _DATA_NAMES:
        return _data()[_DATA_NAMES.index(name)]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _data():
    """(training_data, validation_data, test_data): the module's own if assigned, else network3's MNIST."""
    g = globals()
    if not all(k in g for k in _DATA_NAMES):
        for k, v in zip(_DATA_NAMES, network3.load_data_shared()):
            g.setdefault(k, v)
    return tuple(g[k] for k in _DATA_NAMES)


def _conv_pool(activation_fn=sigmoid, first=True):
    """The book's two ConvPoolLayers: 20 5x5 filters on 28x28 images, then 40 5x5 filters on 20 12x12 maps."""
    if first:
        return ConvPoolLayer(image_shape=(mini_batch_size, 1, 28, 28), filter_shape=(20, 1, 5, 5),
                             poolsize=(2, 2), activation_fn=activation_fn)
    return ConvPoolLayer(image_shape=(mini_batch_size, 20, 12, 12), filter_shape=(40, 20, 5, 5),
                         poolsize=(2, 2), activation_fn=activation_fn)


def shallow(n=3, epochs=60):
    training_data, validation_data, test_data = _data()
    nets = []
    for j in range(n):
        print("A shallow net with 100 hidden neurons")
        net = Network([
            FullyConnectedLayer(n_in=784, n_out=100),
            SoftmaxLayer(n_in=100, n_out=10)], mini_batch_size)
        net.SGD(training_data, epochs, mini_batch_size, 0.1, validation_data, test_data)
        nets.append(net)
    return nets


def basic_conv(n=3, epochs=60):
    training_data, validation_data, test_data = _data()
    for j in range(n):
        print("Conv + FC architecture")
        net = Network([
            _conv_pool(),
            FullyConnectedLayer(n_in=20*12*12, n_out=100),
            SoftmaxLayer(n_in=100, n_out=10)], mini_batch_size)
        net.SGD(training_data, epochs, mini_batch_size, 0.1, validation_data, test_data)
    return net


def omit_FC(runs=3, epochs=60):
    training_data, validation_data, test_data = _data()
    for j in range(runs):
        print("Conv only, no FC")
        net = Network([
            _conv_pool(),
            SoftmaxLayer(n_in=20*12*12, n_out=10)], mini_batch_size)
        net.SGD(training_data, epochs, mini_batch_size, 0.1, validation_data, test_data)
    return net


def dbl_conv(activation_fn=sigmoid, runs=3, epochs=60):
    training_data, validation_data, test_data = _data()
    for j in range(runs):
        print("Conv + Conv + FC architecture")
        net = Network([
            _conv_pool(activation_fn),
            _conv_pool(activation_fn, first=False),
            FullyConnectedLayer(n_in=40*4*4, n_out=100, activation_fn=activation_fn),
            SoftmaxLayer(n_in=100, n_out=10)], mini_batch_size)
        net.SGD(training_data, epochs, mini_batch_size, 0.1, validation_data, test_data)
    return net


def regularized_dbl_conv(lmbdas=(0.00001, 0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0), runs=3, epochs=60):
    """Omitted from the chapter (an important negative result: L2 regularisation did not help much)."""
    training_data, validation_data, test_data = _data()
    for lmbda in lmbdas:
        for j in range(runs):
            print("Conv + Conv + FC num %s, with regularization %s" % (j, lmbda))
            net = Network([
                _conv_pool(),
                _conv_pool(first=False),
                FullyConnectedLayer(n_in=40*4*4, n_out=100),
                SoftmaxLayer(n_in=100, n_out=10)], mini_batch_size)
            net.SGD(training_data, epochs, mini_batch_size, 0.1, validation_data, test_data, lmbda=lmbda)


def dbl_conv_relu(lmbdas=(0.0, 0.00001, 0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0), runs=3, epochs=60):
    training_data, validation_data, test_data = _data()
    for lmbda in lmbdas:
        for j in range(runs):
            print("Conv + Conv + FC num %s, relu, with regularization %s" % (j, lmbda))
            net = Network([
                _conv_pool(ReLU),
                _conv_pool(ReLU, first=False),
                FullyConnectedLayer(n_in=40*4*4, n_out=100, activation_fn=ReLU),
                SoftmaxLayer(n_in=100, n_out=10)], mini_batch_size)
            net.SGD(training_data, epochs, mini_batch_size, 0.03, validation_data, test_data, lmbda=lmbda)


#### Some subsequent functions use the expanded MNIST data: ../data/mnist_expanded.pkl.gz if the book's
#### expand_mnist.py wrote it, else built from the same MNIST as the validation and test data.

def expanded_data(n=100, runs=3, epochs=60):
    """n is the number of neurons in the fully-connected layer.  We'll try n=100, 300, and 1000."""
    _, validation_data, test_data = _data()
    expanded_training_data, _, _ = network3.load_data_shared("../data/mnist_expanded.pkl.gz")
    for j in range(runs):
        print("Training with expanded data, %s neurons in the FC layer, run num %s" % (n, j))
        net = Network([
            _conv_pool(ReLU),
            _conv_pool(ReLU, first=False),
            FullyConnectedLayer(n_in=40*4*4, n_out=n, activation_fn=ReLU),
            SoftmaxLayer(n_in=n, n_out=10)], mini_batch_size)
        net.SGD(expanded_training_data, epochs, mini_batch_size, 0.03, validation_data, test_data, lmbda=0.1)
    return net


def expanded_data_double_fc(n=100, runs=3, epochs=60):
    """n is the number of neurons in both fully-connected layers.  We'll try n=100, 300, and 1000."""
    _, validation_data, test_data = _data()
    expanded_training_data, _, _ = network3.load_data_shared("../data/mnist_expanded.pkl.gz")
    for j in range(runs):
        print("Training with expanded data, %s neurons in two FC layers, run num %s" % (n, j))
        net = Network([
            _conv_pool(ReLU),
            _conv_pool(ReLU, first=False),
            FullyConnectedLayer(n_in=40*4*4, n_out=n, activation_fn=ReLU),
            FullyConnectedLayer(n_in=n, n_out=n, activation_fn=ReLU),
            SoftmaxLayer(n_in=n, n_out=10)], mini_batch_size)
        net.SGD(expanded_training_data, epochs, mini_batch_size, 0.03, validation_data, test_data, lmbda=0.1)


def double_fc_dropout(p0, p1, p2, repetitions, epochs=40):
    _, validation_data, test_data = _data()
    expanded_training_data, _, _ = network3.load_data_shared("../data/mnist_expanded.pkl.gz")
    nets = []
    for j in range(repetitions):
        print("\n\nTraining using a dropout network with parameters ", p0, p1, p2)
        print("Training with expanded data, run num %s" % j)
        net = Network([
            _conv_pool(ReLU),
            _conv_pool(ReLU, first=False),
            FullyConnectedLayer(n_in=40*4*4, n_out=1000, activation_fn=ReLU, p_dropout=p0),
            FullyConnectedLayer(n_in=1000, n_out=1000, activation_fn=ReLU, p_dropout=p1),
            SoftmaxLayer(n_in=1000, n_out=10, p_dropout=p2)], mini_batch_size)
        net.SGD(expanded_training_data, epochs, mini_batch_size, 0.03, validation_data, test_data)
        nets.append(net)
    return nets


def ensemble(nets):
    """Takes as input a list of nets, and then computes the accuracy on the test data when classifications are
    computed by taking a vote amongst the nets.  Returns a tuple containing a list of indices for test data
    which is erroneously classified, and a list of the corresponding erroneous predictions.

    The book compiled a Theano function of ``net.layers[-1].y_out`` with ``givens={net.x: ...}`` over 1,000
    mini-batches of the test data; deepscope asks each net for its predictions (``net.predict``) on all of
    it. Ties go to the class named by the earliest net (``Counter.most_common`` order)."""
    test_x, test_y = _data()[2]
    for net in nets:
        net.test_predictions = list(net.predict(test_x))
    all_test_predictions = np.array([net.test_predictions for net in nets])
    plurality_test_predictions = ensemble_predict(all_test_predictions)
    test_y_eval = test_y.eval()
    error_locations = [j for j in range(len(test_y_eval))
                       if plurality_test_predictions[j] != test_y_eval[j]]
    erroneous_predictions = [int(plurality_test_predictions[j]) for j in error_locations]
    print("Accuracy is {:.2%}".format((1 - len(error_locations) / len(test_y_eval))))
    return error_locations, erroneous_predictions


def plot_errors(error_locations, erroneous_predictions=None):
    """The first 40 misclassified test images in a 5 x 8 grid, each with its label (top) and the wrong
    prediction (bottom). Returns ``matplotlib.pyplot`` (call ``.savefig``), as the book's."""
    matplotlib, plt = _pyplot()
    test_x, test_y = _data()[2][0].eval(), _data()[2][1].eval()
    plt.figure()
    error_images = [np.array(test_x[i]).reshape(28, -1) for i in error_locations]
    n = min(40, len(error_locations))
    for j in range(n):
        ax = plt.subplot2grid((5, 8), (j // 8, j % 8))
        ax.matshow(error_images[j], cmap=matplotlib.cm.binary)
        ax.text(24, 5, test_y[error_locations[j]])
        if erroneous_predictions:
            ax.text(24, 24, erroneous_predictions[j])
        plt.xticks(np.array([]))
        plt.yticks(np.array([]))
    plt.tight_layout()
    return plt


def plot_filters(net, layer, x, y):
    """Plot the filters for net after the (convolutional) layer number layer.  They are plotted in x by y
    format.  So, for example, if we have 20 filters after layer 0, then we can call plot_filters(net, 0, 5, 4)
    to get a 5 by 4 plot of all filters. Returns ``matplotlib.pyplot``, as the book's."""
    matplotlib, plt = _pyplot()
    filters = net.layers[layer].w.eval()
    fig = plt.figure()
    for j in range(len(filters)):
        ax = fig.add_subplot(y, x, j + 1)     # the book's j: matplotlib numbers subplots from 1
        ax.matshow(filters[j][0], cmap=matplotlib.cm.binary)
        plt.xticks(np.array([]))
        plt.yticks(np.array([]))
    plt.tight_layout()
    return plt


def _pyplot():
    # lazy: matplotlib is only needed for the two figures
    import matplotlib
    import matplotlib.pyplot as plt
    return matplotlib, plt


#### Helper method to run all experiments in the book

def run_experiments():
    """Run the experiments described in the book."""
    shallow()
    basic_conv()
    omit_FC()
    dbl_conv(activation_fn=sigmoid)
    # omitted, but still interesting: regularized_dbl_conv()
    dbl_conv_relu()
    expanded_data(n=100)
    expanded_data(n=300)
    expanded_data(n=1000)
    expanded_data_double_fc(n=100)
    expanded_data_double_fc(n=300)
    expanded_data_double_fc(n=1000)
    nets = double_fc_dropout(0.5, 0.5, 0.5, 5)
    # plot the erroneous digits in the ensemble of nets just trained
    error_locations, erroneous_predictions = ensemble(nets)
    plt = plot_errors(error_locations, erroneous_predictions)
    plt.savefig("ensemble_errors.png")
    # plot the filters learned by the first of the nets just trained
    plt = plot_filters(nets[0], 0, 5, 4)
    plt.savefig("net_full_layer_0.png")
    plt = plot_filters(nets[0], 1, 8, 5)
    plt.savefig("net_full_layer_1.png")


__all__ = ["mini_batch_size", "shallow", "basic_conv", "omit_FC", "dbl_conv", "regularized_dbl_conv",
           "dbl_conv_relu", "expanded_data", "expanded_data_double_fc", "double_fc_dropout", "ensemble",
           "plot_errors", "plot_filters", "run_experiments"]
