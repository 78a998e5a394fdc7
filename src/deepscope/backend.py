"""The one place that chooses the array module, the default dtype, the random generator and
the thread count (``set_num_threads``: see ``deepscope.cpu``).

All numerical code asks this module (or :func:`xp_of` of its inputs) for its array module, so the same
code runs on NumPy and, when CuPy is installed and selected, on an NVIDIA GPU.

    >>> import deepscope
    >>> deepscope.manual_seed(0)          # fixes initialisation, shuffling, dropout and augmentation
    >>> deepscope.backend.set_default_dtype("float64")   # e.g. for gradient checks
"""
from __future__ import annotations

import numpy

from .cpu import get_num_threads, set_num_threads  # noqa: F401  (the thread count lives with the threads)
from .errors import ConfigError

DEVICES = ("cpu", "cuda")
_xp = numpy
_default_dtype = numpy.dtype("float32")
_rng = numpy.random.default_rng(0)
_seed = 0


def use(name: str) -> None:
    """Select the array module: ``"numpy"`` (default) or ``"cupy"`` (needs the ``gpu`` extra)."""
    global _xp
    if name == "numpy":
        _xp = numpy
    elif name == "cupy":
        try:
            import cupy
        except ImportError as e:  # pragma: no cover - depends on the machine
            raise RuntimeError("backend 'cupy' needs CuPy: pip install 'deepscope[gpu]'") from e
        _xp = cupy
    else:
        raise ValueError(f"unknown backend {name!r}: expected 'numpy' or 'cupy'")


def xp():
    """The selected array module (``numpy`` or ``cupy``)."""
    return _xp


def xp_of(*arrays):
    """The array module of the given arrays (CuPy if any is a CuPy array, else NumPy)."""
    for a in arrays:
        if type(a) is numpy.ndarray:
            continue
        mod = type(a).__module__
        if mod.startswith("cupy"):
            import cupy
            return cupy
    return numpy


def device_module(device: str):
    """The array module that holds arrays on ``device``: NumPy for ``"cpu"``, CuPy for ``"cuda"`` (the current
    GPU). Without CuPy or a GPU, ``"cuda"`` is one :class:`ConfigError` line."""
    if device == "cpu":
        return numpy
    if device != "cuda":
        raise ConfigError(f"unknown device {device!r}: expected one of {', '.join(DEVICES)}")
    try:
        import cupy   # lazy: CuPy is a heavy optional dependency (the gpu extra)
        cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # ImportError without CuPy; a CUDA error without a GPU or driver
        raise ConfigError(f"device 'cuda' needs CuPy and an NVIDIA GPU (pip install 'deepscope[gpu]'): "
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unavailable'}") from None
    return cupy


def device_of(a) -> str:
    """``"cuda"`` for a CuPy array, ``"cpu"`` for anything else."""
    return "cpu" if xp_of(a) is numpy else "cuda"


def to_device(a, xp_, dtype=None):
    """``a`` as an array of the module ``xp_`` (NumPy or CuPy), copied across devices only when needed."""
    if xp_ is numpy:
        a = to_numpy(a)
    return xp_.asarray(a, dtype=dtype)


def asarray(a, dtype=None):
    """``a`` as an array of the selected module, in ``dtype`` if given, else keeping its own dtype (layers cast
    their input to their parameters' dtype themselves)."""
    return _xp.asarray(a, dtype=dtype)


def to_numpy(a) -> numpy.ndarray:
    """A NumPy copy (or view) of ``a``, whichever module holds it."""
    if hasattr(a, "get"):
        return a.get()
    return numpy.asarray(a)


def default_dtype() -> numpy.dtype:
    """The dtype new parameters and data get: float32 unless changed."""
    return _default_dtype


def set_default_dtype(dtype) -> None:
    """Set the dtype of new parameters: ``"float32"`` (default) or ``"float64"``."""
    global _default_dtype
    dtype = numpy.dtype(dtype)
    if dtype not in (numpy.float32, numpy.float64):
        raise ValueError(f"default dtype must be float32 or float64, got {dtype}")
    _default_dtype = dtype


def manual_seed(seed: int) -> None:
    """Seed everything random in deepscope: initialisation, shuffling, dropout masks, augmentation."""
    global _rng, _seed
    if isinstance(seed, bool) or not isinstance(seed, (int, numpy.integer)) or seed < 0:
        raise ConfigError(f"the seed must be a whole number >= 0, got {seed!r}")
    _seed = int(seed)
    _rng = numpy.random.default_rng(_seed)


def rng() -> numpy.random.Generator:
    """The global NumPy random generator (initial weights are drawn on the host, then moved)."""
    return _rng


_device_rngs: dict = {}


def rng_for(xp_):
    """The generator that draws arrays of the module ``xp_`` where they live: the global NumPy generator for
    NumPy, for CuPy a CuPy generator on the GPU seeded from the same seed (so dropout masks are drawn on the
    device, not copied there every step). Reseeded by :func:`manual_seed`."""
    if xp_ is numpy:
        return _rng
    key = (xp_.__name__, _seed)
    if key not in _device_rngs:
        _device_rngs.clear()
        _device_rngs[key] = xp_.random.default_rng(_seed)
    return _device_rngs[key]


def use_device(device: str):
    """Make ``device`` ("cpu" or "cuda") the place new arrays go (:func:`asarray`, new parameters) and return
    its array module; "cuda" without CuPy or a GPU is one :class:`ConfigError` line."""
    global _xp
    _xp = device_module(device)
    return _xp


def get_rng_state() -> dict:
    """The generator's state, for checkpoints (a JSON-serialisable dict)."""
    return _rng.bit_generator.state


def set_rng_state(state: dict) -> None:
    _rng.bit_generator.state = state
