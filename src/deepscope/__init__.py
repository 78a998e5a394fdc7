"""deepscope: deep feedforward, convolutional and recurrent networks from scratch on NumPy, with instruments
that show why deep networks are hard to train (Nielsen, *Neural Networks and Deep Learning*, ch. 5-6)."""
from . import backend, nn
from .backend import get_num_threads, manual_seed, set_num_threads
from .errors import ArchitectureError, ConfigError, DataError, DeepscopeError, NonFiniteError, ShapeError

__version__ = "0.1.0"
from .io import load, register, save
