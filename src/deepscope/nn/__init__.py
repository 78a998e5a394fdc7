"""deepscope.nn: layers, containers and costs, each with explicit forward and backward."""
from . import init
from .activation import ACTIVATIONS, Identity, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh, activation, activation_name
from .linear import Flatten, Linear
from .loss import COSTS, CrossEntropyCost, LogLikelihoodCost, Loss, QuadraticCost, no_such_name
from .module import Concat, Module, Parameter, Residual, Sequential
from .recurrent import GRU, LSTM, RNN, AllSteps, LastStep, Recurrent, SequenceLogLikelihood
from .embedding import Embedding
from .conv import Conv2d
from .pool import AvgPool2d, L2Pool2d, MaxPool2d
from .dropout import Dropout



def __getattr__(name):
    # A name deepscope avoids on purpose (CrossEntropyLoss) fails with a line saying which class to use.
    raise no_such_name(__name__, name)
from .norm import BatchNorm1d, BatchNorm2d
