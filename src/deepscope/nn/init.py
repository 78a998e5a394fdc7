"""Weight initialisation schemes (chapter 3 of the book, and the two that came after it).

Each scheme draws weights from the global generator (``deepscope.manual_seed`` fixes it) on the host and
returns arrays of the backend's module and default dtype.

============  ==============================  =====================
scheme        weights                          biases
============  ==============================  =====================
``"book"``    N(0, 1/n_in)  (network2's default)   N(0, 1)
``"large"``   N(0, 1)       (network.py, ch. 1)   N(0, 1)
``"xavier"``  N(0, 2/(n_in + n_out))  (Glorot)     0
``"he"``      N(0, 2/n_in)  (He et al., for ReLU)  0
``"zeros"``   0                                   0
============  ==============================  =====================

``n_in`` is the number of inputs of one neuron (in_features, or in_channels*kh*kw for a convolution).
"""
from __future__ import annotations

import math

from .. import backend

SCHEMES = ("book", "large", "xavier", "he", "zeros")


def weight_std(scheme: str, fan_in: int, fan_out: int) -> float:
    """The standard deviation of the weights under ``scheme``."""
    if scheme == "book":
        return 1.0 / math.sqrt(fan_in)
    if scheme == "large":
        return 1.0
    if scheme == "xavier":
        return math.sqrt(2.0 / (fan_in + fan_out))
    if scheme == "he":
        return math.sqrt(2.0 / fan_in)
    if scheme == "zeros":
        return 0.0
    raise ValueError(f"unknown initialisation {scheme!r}: expected one of {', '.join(SCHEMES)}")


def normal(shape, std: float, dtype=None):
    """An array of N(0, std²) values drawn from the global generator."""
    dtype = dtype or backend.default_dtype()
    values = backend.rng().standard_normal(shape) * std
    return backend.asarray(values.astype(dtype))


def initialize(weight_shape, bias_shape, fan_in: int, fan_out: int, scheme: str = "book"):
    """Weights and biases for a layer, drawn under ``scheme``. Returns ``(weight, bias)``."""
    std = weight_std(scheme, fan_in, fan_out)
    weight = normal(weight_shape, std)
    bias_std = 1.0 if scheme in ("book", "large") else 0.0
    bias = normal(bias_shape, bias_std)
    return weight, bias
