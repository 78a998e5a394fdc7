"""deepscope.nn: layers, containers and costs, each with explicit forward and backward."""
from . import init
from .activation import ACTIVATIONS, Identity, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .linear import Flatten, Linear
from .loss import COSTS, CrossEntropyCost, CrossEntropyLoss, LogLikelihoodCost, Loss, QuadraticCost
from .module import Module, Parameter, Sequential
from .recurrent import RNN, AllSteps, LastStep, SequenceLogLikelihood
from .embedding import Embedding
from .conv import Conv2d
from .pool import AvgPool2d, L2Pool2d, MaxPool2d
from .dropout import Dropout
