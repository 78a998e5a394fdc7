"""Module, Parameter and the containers (Sequential, Residual, Concat): the contract every layer keeps.

A layer does three things (Torch7's contract): compute its output (``forward``), compute the gradient of
the cost with respect to its input (``backward``, which returns it), and accumulate the gradients of its
parameters into ``Parameter.grad``. This is the book's backpropagation made into code: ``backward`` of
layer l receives δ^{l+1}-shaped signals ∂C/∂a^l and turns them into ∂C/∂a^{l-1}.

    out = model(x)              # forward, layer by layer, caching what backward needs
    loss = cost(out, y)
    model.backward(cost.backward())   # backward, in reverse order, filling Parameter.grad

Writing a layer: subclass :class:`Module` and define ``forward(x)`` and ``backward(grad_output)``, nothing
else. ``module(x)`` runs ``forward`` and then the forward hooks. ``module.backward(g)`` is the public verb
that every caller uses (a training loop, a container calling its children, a user's own module): when a
subclass defines ``backward``, the base class wraps it once, at class creation (``__init_subclass__``, as it
does for ``__init__``), so that the public ``backward``

1. skips the layer entirely when its input needs no gradient and it has no parameters (below),
2. runs the layer's own ``backward`` otherwise (a ``super().backward(g)`` inside it calls the parent
   class's code and nothing more),
3. returns None instead of ∂C/∂x when ``needs_input_grad`` is False,
4. runs this module's backward hooks, ``fn(module, grad_input, grad_output)`` (``grad_input`` may be None),

and returns ∂C/∂x. There is no second, private method to call: a bare layer and a child of a container
behave the same.

Skipping ∂C/∂x: ``needs_input_grad`` (default True) says whether anyone reads the gradient with respect to
this module's input. The data fed to a net needs none, so ``deepscope.train.fit`` sets the model's flag to
False while it trains, and the first layer of the net skips that work (the book's backprop stops at δ^2:
nothing computes ∂C/∂x). A layer with parameters still accumulates their gradients and returns None (it
tests ``self.needs_input_grad`` before computing ∂C/∂x); a layer without parameters is not run at all.
Containers pass the flag on: :class:`Sequential` to its leading children, up to and including the first
one with parameters (what lies before a net's first weights needs no gradient either); :class:`Residual`
and :class:`Concat` to every branch. A user's container keeps its children's own flags (their ∂C/∂x is
computed and, at the top, dropped: correct, only slower).

Instruments (``deepscope.scope``) watch a model through hooks: ``register_forward_hook(fn)`` calls
``fn(module, inputs, output)`` after each forward, ``register_backward_hook(fn)`` calls
``fn(module, grad_input, grad_output)`` after each backward. A layer's code knows nothing of them.

A model owns its device: ``model.to("cpu")`` / ``model.to("cuda")`` moves every parameter (CuPy on the GPU),
``model.to("float64")`` casts; ``model.xp`` is the array module of its parameters and ``model.device`` says
where they live. Optimizers keep their state beside the parameters (``deepscope.optim`` follows them).
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
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording_init(cls.__dict__["__init__"])
        if "backward" in cls.__dict__:
            cls.backward = _public_backward(cls.__dict__["backward"])

    def __init__(self):
        self.__dict__.setdefault("_init_args", {})
        self._parameters: "OrderedDict[str, Parameter]" = OrderedDict()
        self._buffers: "OrderedDict[str, object]" = OrderedDict()   # state that is not trained (register_buffer)
        self._modules: "OrderedDict[str, Module]" = OrderedDict()
        self._forward_hooks: dict = {}
        self._backward_hooks: dict = {}
        self._hook_id = 0
        self.training = True
        self._needs_input_grad = True
        self.name = ""  # set by the parent container: the module's path in the model, e.g. "2"

    # -- registration ------------------------------------------------------------------------------
    def __setattr__(self, key, value):
        if isinstance(value, (Parameter, Module)):
            if isinstance(value, Parameter):
                self.__dict__["_parameters"][key] = value
            elif "_modules" in self.__dict__:
                self.__dict__["_modules"][key] = value
        elif key in self.__dict__.get("_buffers", ()):
            self.__dict__["_buffers"][key] = value
        object.__setattr__(self, key, value)

    def register_buffer(self, name: str, value) -> None:
        """Keep an array that is part of the module's state but not trained (BatchNorm's running statistics):
        it is saved and loaded with the parameters (``state_dict``) and follows ``to(device)``; ``to(dtype)``
        casts it if it holds floats. Assigning ``self.name = new_array`` later replaces it."""
        self._buffers[name] = value
        object.__setattr__(self, name, value)

    def named_buffers(self, prefix: str = ""):
        for name, b in self._buffers.items():
            yield (f"{prefix}.{name}" if prefix else name), b
        for name, m in self._modules.items():
            yield from m.named_buffers(f"{prefix}.{name}" if prefix else name)

    def _named_state(self, prefix: str = ""):
        """(key, array, owner, attribute) for every parameter and buffer, in PyTorch's state-dict order: a
        module's parameters, then its buffers, then its children's."""
        for name, p in self._parameters.items():
            yield (f"{prefix}.{name}" if prefix else name), p.data, p, "data"
        for name, b in self._buffers.items():
            yield (f"{prefix}.{name}" if prefix else name), b, self, name
        for name, m in self._modules.items():
            yield from m._named_state(f"{prefix}.{name}" if prefix else name)

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

    @property
    def needs_input_grad(self) -> bool:
        """Whether ``backward`` must return ∂C/∂x (False: the input's gradient is read by no one)."""
        return self._needs_input_grad

    @needs_input_grad.setter
    def needs_input_grad(self, value: bool) -> None:
        self._needs_input_grad = bool(value)
        self._pass_needs_input_grad(self._needs_input_grad)

    def _pass_needs_input_grad(self, value: bool) -> None:
        """Containers override this to tell the children that read their input (see the module docstring)."""

    def has_parameters(self) -> bool:
        """Whether this module or any module inside it has a parameter."""
        if self._parameters:
            return True
        for m in self._modules.values():
            if m.has_parameters():
                return True
        return False

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

    # -- device and dtype --------------------------------------------------------------------------
    def to(self, target) -> "Module":
        """Move every parameter (and its gradient) to a device, ``"cpu"`` or ``"cuda"`` (CuPy), or cast it to
        a dtype, ``"float32"`` or ``"float64"``. Returns the module. An optimizer made before keeps its state
        beside the parameters (it follows them at its next step)."""
        if isinstance(target, str) and target in backend.DEVICES:
            xp = backend.device_module(target)
            for p in self.parameters():
                p.data = backend.to_device(p.data, xp)
                p.grad = backend.to_device(p.grad, xp)
            for m in self.modules():
                for name, b in m._buffers.items():
                    setattr(m, name, backend.to_device(b, xp))
            return self
        try:
            dtype = numpy.dtype(target)
        except TypeError:
            dtype = None
        if dtype is None or dtype.kind != "f":
            raise ValueError(f"{type(self).__name__}.to: expected a device ({', '.join(backend.DEVICES)}) or a "
                             f"float dtype (float32, float64), got {target!r}")
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            p.grad = p.grad.astype(dtype)
        for m in self.modules():
            for name, b in m._buffers.items():
                if b.dtype.kind == "f":
                    setattr(m, name, b.astype(dtype))
        return self

    @property
    def xp(self):
        """The array module of this module's parameters (``numpy`` or ``cupy``); the backend's if it has none."""
        for p in self.parameters():
            return backend.xp_of(p.data)
        return backend.xp()

    @property
    def device(self) -> str:
        """Where the parameters live: ``"cpu"`` or ``"cuda"``."""
        return "cpu" if self.xp is numpy else "cuda"

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
        """Parameter and buffer values by PyTorch-style key (``"0.weight"``, ``"1.running_mean"``), in PyTorch's
        order, as NumPy arrays (copies)."""
        return OrderedDict((k, backend.to_numpy(v).copy()) for k, v, _, _ in self._named_state())

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy values into the parameters and buffers, checking every key and shape (each keeps its dtype)."""
        own = {k: (owner, attr, v) for k, v, owner, attr in self._named_state()}
        if strict:
            missing = sorted(set(own) - set(state))
            unexpected = sorted(set(state) - set(own))
            if missing or unexpected:
                raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for k, (owner, attr, old) in own.items():
            if k not in state:
                continue
            v = state[k]
            if tuple(v.shape) != tuple(old.shape):
                raise ShapeError(f"load_state_dict: {k} has shape {tuple(v.shape)}, "
                                 f"the model expects {tuple(old.shape)}")
            xp = backend.xp_of(old)
            setattr(owner, attr, xp.asarray(backend.to_numpy(v), dtype=old.dtype).copy())

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


def hooked(modules) -> bool:
    """Whether any of ``modules`` has a forward or backward hook: a run of layers computed as one pass (nn/fuse.py,
    train.SigmoidNetStep) then takes them one by one, so that each hook sees its own layer's call."""
    for m in modules:
        if m._forward_hooks or m._backward_hooks:
            return True
    return False


def _recording_init(init):
    """Wrap a subclass's ``__init__`` to record its arguments (the outermost call's), so that deepscope.save
    can describe a model as JSON and deepscope.load can rebuild it (no pickle anywhere)."""
    sig = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kw):
        if "_init_args" not in self.__dict__:
            bound = sig.bind(self, *args, **kw)
            bound.apply_defaults()
            args_ = dict(bound.arguments)
            args_.pop("self")
            object.__setattr__(self, "_init_args", args_)
        init(self, *args, **kw)

    return __init__


def _public_backward(layer_backward):
    """The public ``backward`` around a subclass's own (see the module docstring): skip, run, drop ∂C/∂x when
    it is not needed, then run the backward hooks."""

    @functools.wraps(layer_backward)
    def backward(self, grad_output, *args, **kwargs):
        if type(self).backward is not backward:   # reached through super() from a subclass's backward:
            return layer_backward(self, grad_output, *args, **kwargs)   # the subclass's wrapper does the rest
        if self._needs_input_grad:
            grad_input = layer_backward(self, grad_output, *args, **kwargs)
        elif self._parameters or self.has_parameters():
            layer_backward(self, grad_output, *args, **kwargs)   # accumulates Parameter.grad
            grad_input = None
        else:
            grad_input = None                                    # nothing to compute
        if self._backward_hooks:
            for hook in list(self._backward_hooks.values()):
                hook(self, grad_input, grad_output)
        return grad_input

    backward.layer_backward = layer_backward
    return backward


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
        return {"module": obj.config()}    # a module passed to a constructor (deepscope.load rebuilds it first)
    return obj


class Sequential(Module):
    """A chain of modules: forward runs them in order, backward in reverse (the book's backprop).

    On the CPU a ``Conv2d → MaxPool2d(2) → Sigmoid | ReLU`` run of the chain is computed as one pass
    (:class:`deepscope.nn.fuse.ConvPool`: the same numbers, one hand-over to the threads instead of three), and so
    is a ``Linear → Sigmoid`` with a small weight (:class:`deepscope.nn.fuse.LinearSigmoid`: the same numbers, one
    call from Python instead of two).

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
        self._runs = self._passes = None

    def forward(self, x):
        runs = self._fused_runs()
        if not runs:
            for m in self._modules.values():
                x = m(x)
            return x
        modules, passes, i = list(self._modules.values()), [], 0
        while i < len(modules):
            run = runs.get(i)
            step = run if run is not None and run.applies(x) else modules[i]
            x = step(x)
            passes.append(step)
            i += len(run.modules) if step is run else 1
        self._passes = passes               # what backward goes back through: modules, or runs of them as one
        return x

    def backward(self, grad_output):
        for m in reversed(self._passes or self._modules.values()):
            grad_output = m.backward(grad_output)
            if grad_output is None:  # a layer whose input needs no gradient: nothing below it needs any
                break
        return grad_output

    def _fused_runs(self) -> dict:
        """{i: a run (nn/fuse.py's ConvPool or LinearSigmoid) that starts at module i} for this chain's modules
        (found once per set of modules)."""
        modules = tuple(self._modules.values())
        if self._runs is None or self._runs[0] != modules:
            from .fuse import FUSIONS     # (here, not at the top: fuse.py builds on the layers, they on this file)
            runs, i = {}, 0
            while i < len(modules):
                kind = next((k for k in FUSIONS if k.starts_at(modules, i)), None)
                if kind is None:
                    i += 1
                    continue
                runs[i] = run = kind(*modules[i:i + kind.LENGTH])
                i += len(run.modules)
            self._runs = modules, runs
            self._passes = None
        return self._runs[1]

    def _pass_needs_input_grad(self, value: bool) -> None:
        # The children before the first one with parameters read (a function of) this container's input.
        for m in self._modules.values():
            m.needs_input_grad = value
            if m.has_parameters():
                break

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


class Residual(Module):
    """A skip connection: ``out = block(x) + shortcut(x)``, the shortcut the identity unless given.

        forward    y = F(x) + S(x)                    (S(x) = x by default)
        backward   ∂C/∂x = F'ᵀ ∂C/∂y + S'ᵀ ∂C/∂y      (= block.backward(g) + g for the identity)

    The gradient reaching x is the sum of what comes back through the block and through the shortcut, so
    with the identity it never vanishes however many residual blocks are stacked.

    Args:
        block: the residual branch F (any Module, e.g. a Sequential).
        shortcut: the other branch S (default None: the identity; e.g. a ``Linear`` or 1x1 ``Conv2d`` when
            F changes the shape).

    Shape:
        - Input: what ``block`` takes.  Output: what ``block`` returns; ``shortcut(x)`` must have that shape.
    """

    def __init__(self, block: Module, shortcut: Module | None = None):
        super().__init__()
        for what, m in (("block", block), ("shortcut", shortcut)):
            if m is not None and not isinstance(m, Module):
                raise TypeError(f"Residual: {what} is a {type(m).__name__}, not a Module")
        self.add_module("block", block)
        block.name = "block"
        if shortcut is not None:
            self.add_module("shortcut", shortcut)
            shortcut.name = "shortcut"
        else:
            self.shortcut = None

    def forward(self, x):
        y = self.block(x)
        s = x if self.shortcut is None else self.shortcut(x)
        if tuple(y.shape) != tuple(s.shape):
            raise ShapeError(f"{self.describe()}: the block gives {tuple(y.shape)} but the shortcut gives "
                             f"{tuple(s.shape)}; give a shortcut that maps the input to the block's output shape")
        return y + s

    def backward(self, grad_output):
        grad_block = self.block.backward(grad_output)                        # F'ᵀ g
        grad_short = grad_output if self.shortcut is None else self.shortcut.backward(grad_output)   # S'ᵀ g
        if not self.needs_input_grad:
            return None
        return _add(grad_block, grad_short)

    def _pass_needs_input_grad(self, value: bool) -> None:
        for m in self._modules.values():     # both branches read this container's input
            m.needs_input_grad = value

    def config(self) -> dict:
        return {"type": "Residual", "block": self.block.config(),
                "shortcut": None if self.shortcut is None else self.shortcut.config()}

    def extra_repr(self) -> str:
        return ""


class Concat(Module):
    """Branches side by side: every branch reads the same input and their outputs are joined along ``dim``.

        forward    y = [B_1(x), B_2(x), …]            (concatenated along dim)
        backward   ∂C/∂x = Σ_i B_iᵀ' (∂C/∂y)_i          ((∂C/∂y)_i: the slice of g that branch i produced)

    Args:
        *branches: the modules, named ``"0"``, ``"1"``, … (state-dict keys like PyTorch's ModuleList).
        dim: the axis to join along (default 1: features of ``(N, F)``, channels of ``(N, C, H, W)``).

    Shape:
        - Input: what every branch takes.  Output: the branches' outputs, equal except along ``dim``, whose
          sizes add up.
    """

    def __init__(self, *branches: Module, dim: int = 1):
        super().__init__()
        if not branches:
            raise ValueError("Concat: give at least one branch")
        for i, m in enumerate(branches):
            if not isinstance(m, Module):
                raise TypeError(f"Concat: branch {i} is a {type(m).__name__}, not a Module")
            self.add_module(str(i), m)
            m.name = str(i)
        self.dim = int(dim)

    def forward(self, x):
        outs = [m(x) for m in self._modules.values()]
        ref = outs[0]
        dim = self.dim % ref.ndim if ref.ndim else 0
        for i, o in enumerate(outs):
            if o.ndim != ref.ndim or tuple(o.shape[:dim]) + tuple(o.shape[dim + 1:]) != \
                    tuple(ref.shape[:dim]) + tuple(ref.shape[dim + 1:]):
                raise ShapeError(f"{self.describe()}: branch {i} gives {tuple(o.shape)}, which cannot be joined "
                                 f"to branch 0's {tuple(ref.shape)} along dim {self.dim}")
        self._sizes = [o.shape[dim] for o in outs]
        return backend.xp_of(ref).concatenate(outs, axis=dim)

    def backward(self, grad_output):
        dim = self.dim % grad_output.ndim
        grad_input, start = None, 0
        for m, size in zip(self._modules.values(), self._sizes):
            index = (slice(None),) * dim + (slice(start, start + size),)
            grad_input = _add(grad_input, m.backward(grad_output[index]))    # Σ_i B_i'ᵀ (∂C/∂y)_i
            start += size
        return grad_input if self.needs_input_grad else None

    def _pass_needs_input_grad(self, value: bool) -> None:
        for m in self._modules.values():     # every branch reads this container's input
            m.needs_input_grad = value

    def config(self) -> dict:
        return {"type": "Concat", "branches": [m.config() for m in self._modules.values()], "dim": self.dim}

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


def _add(a, b):
    """a + b where either may be None (a branch whose input needs no gradient returned none)."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b
