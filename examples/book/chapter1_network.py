"""chapter1_network.py
~~~~~~~~~~~~~~~~~~~~~~

The shell session of chapter 1 of the book ("Implementing our network to
classify digits"), as a script: network.py, [784, 30, 10], 30 epochs,
mini-batches of 10, eta = 3.0. The book reports about 95% on the test data.

Imports from deepscope.book; changes are marked "deepscope:".
Run: python examples/book/chapter1_network.py [--quick]
(--quick: 1,000 training images, 2 epochs).
"""
import sys

from deepscope.book import mnist_loader
from deepscope.book import network

QUICK = "--quick" in sys.argv[1:]  # deepscope: a smoke-test-sized run

training_data, validation_data, test_data = mnist_loader.load_data_wrapper()
epochs = 30
if QUICK: training_data, epochs = training_data[:1000], 2  # deepscope
net = network.Network([784, 30, 10])
net.SGD(training_data, epochs, 10, 3.0, test_data=test_data)
