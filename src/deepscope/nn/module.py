"""Module, Parameter and Sequential: the contract every layer keeps.

A layer does three things (Torch7's contract): compute its output (``forward``), compute the gradient of
the cost with respect to its input (``backward``, which returns it), and accumulate the gradients of its
parameters into ``Parameter.grad``. This is the book's backpropagation made into code: ``backward`` of
layer l receives δ^{l+1}-shaped signals ∂C/∂a^l and turns them into ∂C/∂a^{l-1}.

    out = model(x)              # forward, layer by layer, caching what backward needs
    loss = cost(out, y)
    model.backward(cost.backward())   # backward, in reverse order, filling Parameter.grad

Instruments (``deepscope.scope``) watch a model through hooks: ``register_forward_hook(fn)`` calls
``fn(module, inputs, output)`` after each forward, ``register_backward_hook(fn)`` calls
``fn(module, grad_input, grad_output)`` after each backward. A layer's code knows nothing of them.
"""
from __future__ import annotations

import functools
import inspect
from collections import OrderedDict

import numpy

from .. import backend
from ..errors import ShapeError


class Parameter:
    """A trainable array and its gradient.

    Attributes:
        data: the values (an array of the backend's module).
        grad: ∂C/∂data, same shape, accumulated by ``backward`` and reset by ``zero_grad``.
    """

    __slots__ = ("data", "grad")

    def __init__(self, data):
        self.data = data
        self.grad = backend.xp_of(data).zeros_like(data)

    @property
    def shape(self):
        return self.data.shape

    def __repr__(self):
        return f"Parameter(shape={tuple(self.data.shape)}, dtype={self.data.dtype})"


class Module:
    """Base class of every layer and container. Subclasses implement ``forward`` and ``backward``."""

    def __init_subclass__(cls, **kwargs):
        # Record the constructor arguments of the outermost __init__ so that deepscope.save can describe a
        # model as JSON and deepscope.load can rebuild it (no pickle anywhere).
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            init = cls.__dict__["__init__"]
            sig = inspect.signature(init)

            @functools.wraps(init)
            def wrapped(self, *args, __init=init, __sig=sig, **kw):
                if "_init_args" not in self.__dict__:
                    bound = __sig.bind(self, *args, **kw)
                    bound.apply_defaults()
                    args_ = dict(bound.arguments)
                    args_.pop("self")
                    object.__setattr__(self, "_init_args", args_)
                __init(self, *args, **kw)

            cls.__init__ = wrapped

    def __init__(self):
        self.__dict__.setdefault("_init_args", {})
        self._parameters: "OrderedDict[str, Parameter]" = OrderedDict()
        self._modules: "OrderedDict[str, Module]" = OrderedDict()
        self._forward_hooks: dict = {}
        self._backward_hooks: dict = {}
        self._hook_id = 0
        self.training = True
        self.name = ""  # set by the parent container: the module's path in the model, e.g. "2"

    # -- registration ------------------------------------------------------------------------------
    def __setattr__(self, key, value):
        if isinstance(value, (Parameter, Module)):
            if isinstance(value, Parameter):
                self.__dict__["_parameters"][key] = value
            elif "_modules" in self.__dict__:
                self.__dict__["_modules"][key] = value
        object.__setattr__(self, key, value)

    def add_module(self, name: str, module: "Module") -> None:
        self._modules[name] = module
        object.__setattr__(self, name, module)

    # -- the contract ------------------------------------------------------------------------------
    def forward(self, *inputs):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_output):
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def __call__(self, *inputs):
        out = self.forward(*inputs)
        if self._forward_hooks:
            for hook in list(self._forward_hooks.values()):
                hook(self, inputs, out)
        return out

    def backward_with_hooks(self, grad_output):
        """``backward`` followed by this module's backward hooks; containers call their children this way."""
        grad_input = self.backward(grad_output)
        if self._backward_hooks:
            for hook in list(self._backward_hooks.values()):
                hook(self, grad_input, grad_output)
        return grad_input

    # -- hooks -------------------------------------------------------------------------------------
    def register_forward_hook(self, fn):
        """Call ``fn(module, inputs, output)`` after every forward. Returns a handle with ``remove()``."""
        return self._add_hook(self._forward_hooks, fn)

    def register_backward_hook(self, fn):
        """Call ``fn(module, grad_input, grad_output)`` after every backward. Returns a handle."""
        return self._add_hook(self._backward_hooks, fn)

    def _add_hook(self, table, fn):
        self._hook_id += 1
        key = self._hook_id
        table[key] = fn
        return _HookHandle(table, key)

    # -- traversal ---------------------------------------------------------------------------------
    def children(self):
        return iter(self._modules.values())

    def named_modules(self, prefix: str = ""):
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix: str = ""):
        for name, p in self._parameters.items():
            yield (f"{prefix}.{name}" if prefix else name), p
        for name, m in self._modules.items():
            yield from m.named_parameters(f"{prefix}.{name}" if prefix else name)

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad[...] = 0

    def train(self, mode: bool = True) -> "Module":
        for m in self.modules():
            m.training = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)

    # -- dtype -------------------------------------------------------------------------------------
    def to(self, dtype) -> "Module":
        """Cast every parameter (and its gradient) to ``dtype`` ("float32" or "float64")."""
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = p.grad.astype(dtype)
        return self

    def double(self) -> "Module":
        return self.to("float64")

    def float(self) -> "Module":
        return self.to("float32")

    @property
    def dtype(self):
        ps = self.parameters()
        return ps[0].data.dtype if ps else backend.default_dtype()

    # -- state -------------------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, numpy.ndarray]":
        """Parameter values by PyTorch-style key (``"0.weight"``), as NumPy arrays (copies)."""
        return OrderedDict((k, backend.to_numpy(p.data).copy()) for k, p in self.named_parameters())

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy values into the parameters, checking every key and shape."""
        own = dict(self.named_parameters())
        if strict:
            missing = sorted(set(own) - set(state))
            unexpected = sorted(set(state) - set(own))
            if missing or unexpected:
                raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for k, p in own.items():
            if k not in state:
                continue
            v = state[k]
            if tuple(v.shape) != tuple(p.data.shape):
                raise ShapeError(f"load_state_dict: {k} has shape {tuple(v.shape)}, "
                                 f"the model expects {tuple(p.data.shape)}")
            xp = backend.xp_of(p.data)
            p.data = xp.asarray(backend.to_numpy(v), dtype=p.data.dtype).copy()

    # -- description -------------------------------------------------------------------------------
    def config(self) -> dict:
        """A JSON-serialisable description: the class name and constructor arguments (and children)."""
        cfg = {"type": type(self).__name__, "args": _jsonable(self._init_args)}
        return cfg

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._init_args.items())

    def __repr__(self):
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        lines.append(")")
        return "\n".join(lines)

    def describe(self) -> str:
        """How error messages name this layer, e.g. ``Linear(30, 10) [layer 2]``."""
        where = f" [layer {self.name}]" if self.name else ""
        return f"{type(self).__name__}({self.extra_repr()}){where}"

    def shape_error(self, expected: str, got) -> ShapeError:
        """A ShapeError naming this layer, the expected and the actual shape."""
        return ShapeError(f"{self.describe()}: expected input of shape {expected}, got {tuple(got)}")


class _HookHandle:
    def __init__(self, table, key):
        self._table, self._key = table, key

    def remove(self):
        self._table.pop(self._key, None)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (numpy.integer,)):
        return int(obj)
    if isinstance(obj, (numpy.floating,)):
        return float(obj)
    if isinstance(obj, Module):
        return obj.config()
    return obj


class Sequential(Module):
    """A chain of modules: forward runs them in order, backward in reverse (the book's backprop).

    Args:
        *modules: the layers, in order. Their names are ``"0"``, ``"1"``, … (PyTorch's state-dict keys).
    """

    def __init__(self, *modules: Module):
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: item {i} is a {type(m).__name__}, not a Module")
            self.add_module(str(i), m)
            m.name = str(i)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def backward(self, grad_output):
        for m in reversed(self._modules.values()):
            grad_output = m.backward_with_hooks(grad_output)
            if grad_output is None:  # a layer that was told its input needs no gradient
                break
        return grad_output

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def config(self) -> dict:
        return {"type": "Sequential", "modules": [m.config() for m in self._modules.values()]}

    def extra_repr(self) -> str:
        return ""
