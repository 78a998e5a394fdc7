"""Runs of layers computed as one pass: a convolution, the max pooling after it and the neuron after that
(:class:`ConvPool`, chapter 6's convolutional-pooling layer, network3.py's ``ConvPoolLayer``), and a fully connected
layer with its sigmoid neurons (:class:`LinearSigmoid`, a layer of network2.py). :data:`FUSIONS` lists them;
:class:`~deepscope.nn.Sequential` looks for each at every position of its chain.

A :class:`~deepscope.nn.Sequential` that holds ``Conv2d → MaxPool2d(2) → Sigmoid`` (or ``ReLU``) runs the three
as one :class:`ConvPool` on the CPU: the same equations as the three layers' pages (conv.py, pool.py,
activation.py), taken chunk by chunk of the mini-batch instead of layer by layer:

    forward   z = b + w ⋆ x,       m = max_{l,m} z_{(l,m)} over each 2×2 window,      a = σ(m)
    backward  ∂C/∂m = ∂C/∂a ⊙ σ'(m)                 (σ' = a(1-a) for the sigmoid, [a > 0] for ReLU)
              ∂C/∂z = ∂C/∂m at the window's first maximum, 0 elsewhere
              ∂C/∂w, ∂C/∂b, ∂C/∂x from ∂C/∂z as Conv2d's backward

Why: each layer's fast path is a parallel section of its own (or, under 262,144 numbers, a serial pass), and on
issue 11's 2-core VM every hand-over to the other thread costs a ~30-50 us wake-up and GIL hand-offs, about what a
pooling or a sigmoid over a mini-batch of 64 takes. One section forward and one backward for the three (rung 1 at
m=64: 4 parallel sections a step instead of 6, ~10 sleeps instead of ~16, no serial σ pass, and the Flatten after it
no longer copies), and no full-size z or ∂C/∂z in memory. The outputs are those of the three layers' own fast paths,
bit for bit; the gradients round σ'(m) once, as their compiled pass does.

The run applies when the three are exactly these classes, the pooling is 2×2 with stride 2, none of them has a
hook (an instrument sees every layer's output, so each layer then runs on its own), and the input is a NumPy
float array (``cpu.fast``: CuPy arrays and runs without numba take the layers one by one; so does
``cpu.FUSE_CONV_POOL = 0``).
"""
from __future__ import annotations

from .. import cpu
from .activation import ReLU, Sigmoid, sigmoid_backward
from .conv import Conv2d, output_size
from .linear import Linear
from .module import hooked
from .pool import MaxPool2d


class ConvPool:
    """``Conv2d → MaxPool2d(2) → Sigmoid | ReLU`` of a Sequential as one pass (see the module docstring). Not a
    layer of its own: the three modules keep their parameters, names and state-dict keys; this object holds only
    what its backward needs (the input, the outputs and where each window's maximum was)."""

    LENGTH = 3      # modules in the run

    def __init__(self, conv: Conv2d, pool: MaxPool2d, neuron):
        self.modules = (conv, pool, neuron)
        self.conv, self.relu = conv, type(neuron) is ReLU
        self._x = self._out = self._arg = None

    @staticmethod
    def starts_at(modules, i) -> bool:
        """Whether ``modules[i:i+3]`` are a Conv2d, a 2×2 max pooling with stride 2 and a sigmoid or ReLU."""
        return (i + 3 <= len(modules) and type(modules[i]) is Conv2d and type(modules[i + 1]) is MaxPool2d
                and modules[i + 1].kernel_size == modules[i + 1].stride == (2, 2)
                and type(modules[i + 2]) in (Sigmoid, ReLU))

    def applies(self, x) -> bool:
        """Whether this input runs as one pass: a NumPy float array of the weights' dtype, an output of at least
        2×2, and no hooks on the three modules."""
        conv, w = self.conv, self.conv.weight.data
        if not (cpu.FUSE_CONV_POOL and cpu.fast(x, w) and x.dtype == w.dtype and x.ndim == 4 and x.shape[1] == conv.in_channels):
            return False
        if hooked(self.modules):
            return False
        (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
        return output_size(x.shape[2], kh, sh, ph) >= 2 and output_size(x.shape[3], kw, sw, pw) >= 2

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        """a = σ(max over 2×2 windows of (b + w ⋆ x)), N-major."""
        conv = self.conv
        bias = None if conv.bias is None else conv.bias.data
        self._out, self._arg = cpu.conv_pool_forward(x, conv.weight.data, bias, conv.stride, conv.padding, self.relu)
        self._x = x
        return self._out

    def backward(self, grad_output):
        """∂C/∂x (None when the convolution's input needs no gradient), accumulating ∂C/∂w and ∂C/∂b."""
        conv = self.conv
        if grad_output.dtype != self._out.dtype:
            grad_output = grad_output.astype(self._out.dtype)
        dw, db, dx = cpu.conv_pool_backward(self._x, conv.weight.data, grad_output, self._out, self._arg,
                                            conv.stride, conv.padding, self.relu, conv.needs_input_grad)
        conv.weight.grad += dw                                                   # ∂C/∂W = Δ Xᵀ
        if conv.bias is not None:
            conv.bias.grad += db                                                 # ∂C/∂b = Σ δ
        return dx


class LinearSigmoid:
    """``Linear → Sigmoid`` of a Sequential as one pass, where Linear's forward runs the compiled loops (small
    weights, few rows) or BLAS by halves of its inputs (a wide weight, few rows: rung 1's 2880->100;
    :func:`deepscope.cpu.linear_sigmoid_applies`), the equations of linear.py's and activation.py's pages:

        forward   z = x Wᵀ + b,  a = σ(z)                   (the loops, or the pass that adds BLAS's two halves and b,
                                                             write -|z| beside z; e^{-|z|} by NumPy's exp)
        backward  δ = ∂C/∂a ⊙ a(1-a)                        (Sigmoid's backward)
                  W.grad += δᵀ x,  b.grad += Σ δ,  ∂C/∂x = δ W   (Linear's backward: BP4, BP3, BP2)

    Why: at network2's sizes each layer's call from Python costs about what its arithmetic does ([784,30,10] at
    m=64: the Sigmoid layer's forward 4.7 us for 1,920 numbers, of which exp and the σ pass ~1.4). One pass writes no
    |z|, and calls no Sigmoid layer. Behind BLAS's 2880->100 at m=64 the Sigmoid layer is ~11 us of serial work
    a step at any thread count. The outputs are those of the two layers' own fast paths, bit for bit; the
    gradients too (the same two backward lines).

    Applies when the two are exactly these classes, neither has a hook, the Sigmoid's input needs its gradient,
    and the input is a NumPy float array (N, in_features) of the weights' dtype, row-major (CuPy arrays, other
    shapes, and products that run BLAS in one piece or by neurons take the layers one by one; so does
    ``cpu.FUSE_LINEAR_SIGMOID = 0``).
    Not a layer of its own: the modules keep their parameters, names and state-dict keys."""

    LENGTH = 2      # modules in the run

    def __init__(self, linear: Linear, neuron: Sigmoid):
        self.modules = (linear, neuron)
        self.linear = linear
        self._x = self._a = None

    @staticmethod
    def starts_at(modules, i) -> bool:
        """Whether ``modules[i:i+2]`` are a Linear and a Sigmoid."""
        return i + 2 <= len(modules) and type(modules[i]) is Linear and type(modules[i + 1]) is Sigmoid

    def applies(self, x) -> bool:
        linear, neuron = self.modules
        w, b = linear.weight.data, linear.bias
        if hooked(self.modules) or not neuron.needs_input_grad:
            return False
        return x.ndim == 2 and x.shape[1] == linear.in_features and cpu.linear_sigmoid_applies(
            x, w, None if b is None else b.data)

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        """a = σ(x Wᵀ + b)."""
        linear = self.linear
        self._x = x                                                  # cached for ∂C/∂W = δᵀ x
        self._a = cpu.linear_sigmoid(x, linear.weight.data, None if linear.bias is None else linear.bias.data)
        return self._a

    def backward(self, grad_output):
        """∂C/∂x (None when Linear's input needs no gradient), accumulating ∂C/∂W and ∂C/∂b."""
        linear = self.linear
        delta = sigmoid_backward(grad_output, self._a)               # δ = ∂C/∂a ⊙ σ'(z)
        # BP4: W.grad += δᵀ x,  BP3: b.grad += Σ δ,  BP2: ∂C/∂x = δ W, as Linear.backward
        return cpu.linear_backward(delta, self._x, linear.weight.data, linear.weight.grad,
                                   None if linear.bias is None else linear.bias.grad,
                                   input_grad=linear.needs_input_grad)


FUSIONS = (ConvPool, LinearSigmoid)
"""The runs a Sequential computes as one pass where they apply (each has ``starts_at(modules, i)``)."""
