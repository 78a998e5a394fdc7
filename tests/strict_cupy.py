"""A stand-in for CuPy on a machine without a GPU, as strict as CuPy about what may meet what.

deepscope's CuPy path can only run for real on a lent GPU. This module lets the CPU tests walk the same path:
``install()`` puts a module named ``cupy`` into ``sys.modules`` whose arrays hold a NumPy array inside but
behave like CuPy's where CuPy would refuse:

- an array never turns into a NumPy array by itself: ``numpy.asarray(a)``, ``numpy.float32(a)`` and NumPy
  functions given one raise ``TypeError`` as CuPy does; ``.get()`` / ``cupy.asnumpy`` copy it out;
- host and device arrays do not mix: an operation or ``cupy`` function given a NumPy array (of one or more
  dimensions) raises ``TypeError``, as CuPy's do; only ``cupy.asarray`` / ``cupy.array`` take one;
- ``type(a) is numpy.ndarray`` is false, so deepscope's CPU-only fast paths (threads, numba) stay out;
- ``cupy.random.default_rng`` has only the methods CuPy's ``Generator`` has.

It says nothing about speed or about CUDA itself; the real check is ``benchmarks/gpu_check.py`` on a GPU.
"""
from __future__ import annotations

import sys
import types

import numpy
from numpy.lib.mixins import NDArrayOperatorsMixin

# the methods cupy.random.Generator has (CuPy 14), beyond which a draw on the device fails
GENERATOR_METHODS = {"beta", "binomial", "chisquare", "dirichlet", "exponential", "f", "gamma", "geometric",
                     "hypergeometric", "integers", "logseries", "poisson", "power", "random", "standard_exponential",
                     "standard_gamma", "standard_normal", "uniform"}


def _host_error(what):
    return TypeError(f"Unsupported type <class 'numpy.ndarray'> ({what}): CuPy does not mix host and device arrays")


def _unwrap(x, what="argument"):
    """The NumPy array inside a device array; a host array of >= 1 dimension is refused as CuPy refuses it."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, numpy.ndarray) and x.ndim > 0:
        raise _host_error(what)
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v, what) for v in x)
    return x


OPERATIONS = [0]    # device operations done so far: a test can tell work ran "on the GPU"


def _wrap(x):
    OPERATIONS[0] += 1
    if isinstance(x, numpy.ndarray):
        return ndarray(x)
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    if isinstance(x, numpy.generic):      # CuPy returns 0-d arrays where NumPy returns scalars
        return ndarray(numpy.asarray(x))
    return x


class ndarray(NDArrayOperatorsMixin):  # noqa: N801 - CuPy's name
    """A device array: a NumPy array inside, CuPy's rules outside."""

    __module__ = "cupy"          # what backend.xp_of looks at
    __array_priority__ = 100

    def __init__(self, a):
        self._a = a

    # -- CuPy's refusals -------------------------------------------------------------------------------------
    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = _unwrap(inputs, f"numpy.{ufunc.__name__}")
        if "out" in kwargs:
            kwargs["out"] = _unwrap(kwargs["out"], "out=")
        if method == "at":
            getattr(ufunc, method)(*inputs, **kwargs)
            return None
        return _wrap(getattr(ufunc, method)(*inputs, **kwargs))

    def __array_function__(self, func, types_, args, kwargs):
        # numpy.f(device array) dispatches here; CuPy answers with its own f: do the same
        return _wrap(func(*_unwrap(args, func.__name__), **{k: _unwrap(v, k) for k, v in kwargs.items()}))

    # -- what a CuPy array has -------------------------------------------------------------------------------
    def get(self, stream=None, order="C", out=None):
        return numpy.array(self._a, order=order)

    def __getitem__(self, key):
        return _wrap(self._a[self._key(key)])

    def __setitem__(self, key, value):
        self._a[self._key(key)] = _unwrap(value, "assigned value")

    @staticmethod
    def _key(key):
        if isinstance(key, tuple):
            return tuple(k._a if isinstance(k, ndarray) else k for k in key)
        return key._a if isinstance(key, ndarray) else key

    def __getattr__(self, name):
        if name.startswith("__") or name == "_a":
            raise AttributeError(name)
        value = getattr(self._a, name)
        if callable(value):
            return lambda *a, **k: _wrap(value(*_unwrap(a, name), **{n: _unwrap(v, n) for n, v in k.items()}))
        return _wrap(value) if isinstance(value, numpy.ndarray) else value

    @property
    def T(self):  # noqa: N802 - NumPy's name
        return ndarray(self._a.T)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(v) for v in self._a)

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __bool__(self):
        return bool(self._a)

    def __complex__(self):
        return complex(self._a)

    def __repr__(self):
        return f"array({self._a!r}, device)"

    def __iadd__(self, other):
        self._a += _unwrap(other, "+=")
        return self

    def __isub__(self, other):
        self._a -= _unwrap(other, "-=")
        return self

    def __imul__(self, other):
        self._a *= _unwrap(other, "*=")
        return self

    def __itruediv__(self, other):
        self._a /= _unwrap(other, "/=")
        return self


class _Ufunc:
    def __init__(self, uf):
        self._uf = uf
        self.__name__ = uf.__name__

    def __call__(self, *args, **kwargs):
        kwargs = {k: _unwrap(v, k) for k, v in kwargs.items()}
        return _wrap(self._uf(*_unwrap(args, self.__name__), **kwargs))

    def at(self, a, indices, b=None):
        if not isinstance(a, ndarray):
            raise TypeError(f"cupy.{self.__name__}.at needs a device array")
        args = (_unwrap(indices, "indices"),) + (() if b is None else (_unwrap(b, "values"),))
        self._uf.at(a._a, *args)

    def __getattr__(self, name):
        method = getattr(self._uf, name)
        return lambda *a, **k: _wrap(method(*_unwrap(a, name), **{n: _unwrap(v, n) for n, v in k.items()}))


class _Generator:
    def __init__(self, seed):
        self._g = numpy.random.default_rng(seed)

    def __getattr__(self, name):
        if name not in GENERATOR_METHODS:
            raise AttributeError(f"'cupy.random.Generator' object has no attribute {name!r}")
        method = getattr(self._g, name)
        return lambda *a, **k: _wrap(method(*_unwrap(a, name), **k))


def _asarray(a, dtype=None, order=None):
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else ndarray(a._a.astype(dtype))
    return ndarray(numpy.array(a, dtype=dtype, order=order or "K"))


def _function(name):
    f = getattr(numpy, name)
    if isinstance(f, numpy.ufunc):
        return _Ufunc(f)
    if not callable(f) or isinstance(f, type):
        return f

    def call(*args, **kwargs):
        return _wrap(f(*_unwrap(args, f"cupy.{name}"), **{k: _unwrap(v, k) for k, v in kwargs.items()}))
    call.__name__ = name
    return call


def _module():
    m = types.ModuleType("cupy")
    m.__file__ = __file__
    m.ndarray = ndarray
    m.asarray = _asarray
    m.array = lambda a, dtype=None, copy=True, order="K": ndarray(numpy.array(_unwrap_device(a), dtype=dtype,
                                                                               order=order))
    m.ascontiguousarray = lambda a, dtype=None: ndarray(numpy.ascontiguousarray(_unwrap_device(a), dtype=dtype))
    m.asnumpy = lambda a, stream=None: a.get() if isinstance(a, ndarray) else numpy.asarray(a)
    m.get_array_module = lambda *arrays: m if any(isinstance(a, ndarray) for a in arrays) else numpy

    def getattr_(name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _function(name)
        setattr(m, name, value)
        return value
    m.__getattr__ = getattr_

    random = types.ModuleType("cupy.random")
    random.default_rng = _Generator
    random.Generator = _Generator
    m.random = random
    stride_tricks = types.ModuleType("cupy.lib.stride_tricks")
    stride_tricks.as_strided = lambda x, shape=None, strides=None: ndarray(
        numpy.lib.stride_tricks.as_strided(x._a, shape=shape, strides=strides))
    m.lib = types.SimpleNamespace(stride_tricks=stride_tricks)

    class Device:
        def __init__(self, i=0):
            self.id = i

        def synchronize(self):
            pass
    class Stream:
        """Streams run in order (there is only the CPU); recording a graph is refused, as CUDA refuses an
        operation it cannot record: code that records must fall back."""

        def __init__(self, non_blocking=False, null=False):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def synchronize(self):
            pass

        def begin_capture(self, mode=None):
            raise RuntimeError("the CuPy stand-in cannot record CUDA graphs")

        def end_capture(self):
            raise RuntimeError("the CuPy stand-in cannot record CUDA graphs")

    class MemoryPool:
        def malloc(self, size):
            raise RuntimeError("the CuPy stand-in has no device memory")

    allocator = [None]
    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1,
                                    getDeviceProperties=lambda i: {"name": b"strict CuPy stand-in (CPU)"})
    m.cuda = types.SimpleNamespace(Device=Device, runtime=runtime, Stream=Stream, MemoryPool=MemoryPool,
                                   get_current_stream=lambda: Stream(), get_allocator=lambda: allocator[0],
                                   set_allocator=lambda a=None: allocator.__setitem__(0, a))
    return m


def _unwrap_device(a):
    return a._a if isinstance(a, ndarray) else a


def install(monkeypatch):
    """Make ``import cupy`` give the stand-in for the rest of a test (``monkeypatch``: pytest's fixture)."""
    monkeypatch.setitem(sys.modules, "cupy", _module())
    return sys.modules["cupy"]
