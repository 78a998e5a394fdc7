"""Pooling layers (chapter 6): each condenses a kh×kw window of a feature map into one number.

For output position (j, k) of channel c the window is x[n, c, s·j : s·j+kh, s·k : s·k+kw] (stride s,
no padding), and H_out = ⌊(H - kh)/s⌋ + 1, W_out = ⌊(W - kw)/s⌋ + 1. Writing x_{(l,m)} for the element at
kernel offset (l, m) of the window:

    MaxPool2d   forward   a = max_{l,m} x_{(l,m)}
                backward  ∂C/∂x_{(l,m)} = ∂C/∂a  for the first maximal (l, m) in row-major order, else 0
    AvgPool2d   forward   a = (1/(kh·kw)) Σ_{l,m} x_{(l,m)}
                backward  ∂C/∂x_{(l,m)} = ∂C/∂a / (kh·kw)
    L2Pool2d    forward   a = √(Σ_{l,m} x_{(l,m)}²)                     (the book's "L2 pooling")
                backward  ∂C/∂x_{(l,m)} = ∂C/∂a · x_{(l,m)} / a        (0 where a = 0: the subgradient)

Max pooling sends the gradient to one element per window, the first maximum, as PyTorch does, so ties
give the same gradients in both. L2 pooling is ``torch.nn.functional.lp_pool2d(x, 2, k, s)``; unlike
PyTorch it has gradient 0 (not NaN) at an all-zero window.

Every layer loops over the kh·kw kernel offsets (l, m); the slice x[:, :, l::s, m::s] (cut to H_out×W_out)
holds offset (l, m) of every window at once. Forward combines these slices; backward adds into the same
strided slices of ∂C/∂x, so overlapping windows (stride < kernel) accumulate correctly, and nothing
needs ``add.at``. When windows do not overlap each element belongs to one window and backward assigns.

Integer input (e.g. uint8 pixels) is converted to the default float dtype first, as ``Conv2d`` and ``Linear``
convert it to their weights' dtype: an average or a sum of squares computed in uint8 would wrap around. L2
pooling sums its squares in at least float32 (in float16, squares of small values underflow to 0 and of
large ones overflow to inf) and returns the input's dtype.

Shape:
    - Input: ``(N, C, H, W)``.  Output: ``(N, C, H_out, W_out)``.
"""
from __future__ import annotations

from .. import backend, cpu
from .conv import _pair
from .module import Module


class _Pool2d(Module):
    """The shared part of the pooling layers: arguments, checks and the kernel-offset slices."""

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride")
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"{type(self).__name__}: kernel_size and stride must be >= 1, got "
                             f"kernel_size={kernel_size}, stride={stride}")

    def _start(self, x):
        """Check ``x``, remember its shape and (H_out, W_out), and return it as floats (integer input converted
        to the default dtype)."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        if x.ndim != 4:
            raise self.shape_error("(N, C, H, W)", x.shape)
        if x.shape[2] < kh or x.shape[3] < kw:
            raise self.shape_error(f"(N, C, H, W) with H >= {kh} and W >= {kw}", x.shape)
        self._x_shape = x.shape
        self._ho, self._wo = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
        return x if x.dtype.kind == "f" else x.astype(backend.default_dtype())

    def _offsets(self, a):
        """Yield ``(l, m, a[:, :, l::s, m::s])`` for every kernel offset, each slice cut to H_out×W_out."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        ho, wo = self._ho, self._wo
        for i in range(kh):
            for j in range(kw):
                yield i, j, a[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw]

    def _fold(self, x, first, combine):
        """Combine the kernel-offset slices of ``x``: ``out = first(slice_0)``, then
        ``combine(out, slice)`` (in place) for every other offset."""
        out = None
        for _, _, view in self._offsets(x):
            if out is None:
                out = first(view)
            else:
                combine(out, view)
        return out

    def _overlapping(self):
        return self.stride[0] < self.kernel_size[0] or self.stride[1] < self.kernel_size[1]

    def _scatter(self, grad_of_offset, like, dtype):
        """∂C/∂x from a function giving the gradient of each offset's slice: added (overlapping windows)
        or assigned (windows that do not overlap) into a zero array shaped (and laid out) like ``like``."""
        xp = backend.xp_of(like)
        dx = xp.zeros_like(like, dtype=dtype)
        overlapping = self._overlapping()
        for i, j, view in self._offsets(dx):
            if overlapping:
                view += grad_of_offset(i, j)
            else:
                view[...] = grad_of_offset(i, j)
        return dx

    def extra_repr(self) -> str:
        k, s = self.kernel_size, self.stride
        k = k[0] if k[0] == k[1] else k
        s = s[0] if s[0] == s[1] else s
        return f"{k}" if s == k else f"{k}, stride={s}"


class MaxPool2d(_Pool2d):
    """Max pooling: each output is the largest activation in its kh×kw window.

    Args:
        kernel_size: the window, an int or a pair.
        stride: step between windows (default: ``kernel_size``, windows that tile the map).

    Shape:
        - Input: ``(N, C, H, W)``.  Output: ``(N, C, ⌊(H-kh)/s⌋+1, ⌊(W-kw)/s⌋+1)``.
    """

    def forward(self, x):
        xp = backend.xp_of(x)
        x = self._start(x)
        self._arg = None
        if cpu.fast(x):   # the same max, one pass in the CPU's threads, remembering where it was
            out, self._arg = cpu.maxpool2d_forward(x, self.kernel_size, self.stride)
            self._x = self._out = None          # backward needs only where the maxima were (less memory held)
            self._dtype = x.dtype
        else:
            out = self._fold(x, lambda v: xp.copy(v, order="K"), lambda o, v: xp.maximum(o, v, out=o))
            self._x, self._out = x, out
        return out

    def backward(self, grad_output):
        if self._arg is not None:
            if not cpu.fast(grad_output):
                grad_output = grad_output.astype(self._dtype)
            return cpu.maxpool2d_backward(grad_output, self._arg, self._x_shape, self.kernel_size, self.stride)
        # Route each window's gradient to its first maximum (row-major offset order, as PyTorch does):
        # offset (l, m) takes it where x equals the window's maximum and no earlier offset took it.
        taken = None
        routes = {}
        for i, j, view in self._offsets(self._x):
            hit = view == self._out
            if taken is None:
                taken = hit.copy()
            else:
                hit &= ~taken
                taken |= hit
            routes[(i, j)] = hit
        return self._scatter(lambda i, j: grad_output * routes[(i, j)], self._x, grad_output.dtype)


class AvgPool2d(_Pool2d):
    """Average pooling: each output is the mean of its kh×kw window.

    Args:
        kernel_size: the window, an int or a pair.
        stride: step between windows (default: ``kernel_size``).

    Shape:
        - Input: ``(N, C, H, W)``.  Output: ``(N, C, ⌊(H-kh)/s⌋+1, ⌊(W-kw)/s⌋+1)``.
    """

    def forward(self, x):
        xp = backend.xp_of(x)
        x = self._start(x)
        if cpu.fast(x):   # the same sum, one pass in the CPU's threads
            total = cpu.sumpool2d_forward(x, self.kernel_size, self.stride)
        else:
            total = self._fold(x, lambda v: xp.copy(v, order="K"), lambda o, v: xp.add(o, v, out=o))
        self._like = x
        return total * (1.0 / (self.kernel_size[0] * self.kernel_size[1]))

    def backward(self, grad_output):
        share = grad_output * (1.0 / (self.kernel_size[0] * self.kernel_size[1]))
        if cpu.fast(share, self._like):
            return cpu.sumpool2d_backward(share, self._like, self.kernel_size, self.stride)
        return self._scatter(lambda i, j: share, self._like, share.dtype)


class L2Pool2d(_Pool2d):
    """L2 pooling (the book's alternative to max pooling): a = √(Σ x²) over each kh×kw window.

    Args:
        kernel_size: the window, an int or a pair.
        stride: step between windows (default: ``kernel_size``).

    Shape:
        - Input: ``(N, C, H, W)``.  Output: ``(N, C, ⌊(H-kh)/s⌋+1, ⌊(W-kw)/s⌋+1)``.
    """

    def forward(self, x):
        xp = backend.xp_of(x)
        x = self._start(x)
        if cpu.fast(x):   # the same sum of squares, one pass in the CPU's threads
            total = cpu.sumpool2d_forward(x, self.kernel_size, self.stride, squares=True)
        else:
            wide = xp.promote_types(x.dtype, xp.float32)  # float16 squares under- and overflow
            total = self._fold(x, lambda v: xp.square(v, dtype=wide),
                               lambda o, v: xp.add(o, xp.square(v, dtype=wide), out=o))
        out = xp.sqrt(total).astype(x.dtype, copy=False)
        self._x, self._out = x, out
        return out

    def backward(self, grad_output):
        xp = backend.xp_of(grad_output)
        # ∂C/∂a / a, with 0 where a = 0 (an all-zero window): no division by zero, no warning.
        nonzero = self._out > 0
        ratio = xp.where(nonzero, grad_output / xp.where(nonzero, self._out, 1), 0).astype(grad_output.dtype)
        if cpu.fast(ratio, self._x):
            return cpu.sumpool2d_backward(ratio, self._x, self.kernel_size, self.stride, times_x=True)
        views = {(i, j): v for i, j, v in self._offsets(self._x)}
        return self._scatter(lambda i, j: ratio * views[(i, j)], self._x, ratio.dtype)
