"""network.py, on deepscope: the book's first network (chapter 1), with its class, arguments and printed
lines; only the import changes.

    from deepscope.book import mnist_loader, network
    training_data, validation_data, test_data = mnist_loader.load_data_wrapper()
    net = network.Network([784, 30, 10])
    net.SGD(training_data, 30, 10, 3.0, test_data=test_data)

Sigmoid neurons, the quadratic cost C_x = ½‖a - y‖², weights and biases ~ N(0, 1). The network is
:class:`deepscope.book.sigmoid_net.SigmoidNetwork`: each mini-batch goes through deepscope's layers at once,
in float64, with the book's random numbers (``np.random.randn``, ``random.shuffle``).
"""
from __future__ import annotations


from .network2 import QuadraticCost, sigmoid, sigmoid_prime
from .sigmoid_net import SigmoidNetwork, stack


class Network(SigmoidNetwork):
    """``Network(sizes)``, e.g. ``[784, 30, 10]``: weights and biases ~ N(0, 1) (variance 1)."""

    def __init__(self, sizes):
        super().__init__(sizes, QuadraticCost)
        self.gaussian_initializer(lambda n_in: 1.0)

    def SGD(self, training_data, epochs, mini_batch_size, eta, test_data=None):
        """Train by mini-batch stochastic gradient descent on ``training_data``, a list of ``(x, y)`` pairs
        (shuffled in place each epoch, as the book's). With ``test_data`` the number of test inputs
        classified correctly is printed after each epoch."""
        training_data, train, order = self.training_set(training_data)
        if test_data:
            n_test = len(test_data)
            test = stack(test_data)
        loss, optimizer = self.loss(), self.optimizer(eta)
        for j in range(epochs):
            order = self.train_epoch(training_data, train, order, mini_batch_size, loss, optimizer)
            if test_data:
                print("Epoch {0}: {1} / {2}".format(j, self.correct(test), n_test))
            else:
                print("Epoch {0} complete".format(j))

    def update_mini_batch(self, mini_batch, eta):
        """One gradient-descent step on ``mini_batch``, a list of ``(x, y)``, with learning rate ``eta``."""
        X, Y = stack(mini_batch)
        self.step(self.loss(), self.optimizer(eta), X, Y)

    def evaluate(self, test_data):
        """The number of test inputs the network classifies correctly (the most active output neuron)."""
        return self.correct(stack(test_data))

    def cost_derivative(self, output_activations, y):
        """∂C_x/∂a for the output activations."""
        return output_activations - y


__all__ = ["Network", "sigmoid", "sigmoid_prime"]
