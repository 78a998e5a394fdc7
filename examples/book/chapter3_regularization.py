"""chapter3_regularization.py
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~

The shell session of chapter 3 of the book ("Regularization"), as a
script: network2.py, [784, 30, 10], cross-entropy cost, the large
(chapter 1) weight initialisation, 30 epochs, mini-batches of 10,
eta = 0.5, lambda = 5.0 on all 50,000 training images, measured on the
test data. The book reports 96.49%.

Imports from deepscope.book; changes are marked "deepscope:".
Run: python examples/book/chapter3_regularization.py [--quick]
(--quick: 1,000 training images, 2 epochs).
"""
import sys

from deepscope.book import mnist_loader
from deepscope.book import network2

QUICK = "--quick" in sys.argv[1:]  # deepscope: a smoke-test-sized run

training_data, validation_data, test_data = mnist_loader.load_data_wrapper()
epochs = 30
if QUICK: training_data, epochs = training_data[:1000], 2  # deepscope
net = network2.Network([784, 30, 10], cost=network2.CrossEntropyCost)
net.large_weight_initializer()
net.SGD(training_data, epochs, 10, 0.5,
        evaluation_data=test_data, lmbda = 5.0,
        monitor_evaluation_accuracy=True, monitor_training_accuracy=True)
