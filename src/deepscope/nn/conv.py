"""Convolutional layer (chapter 6 of the book: local receptive fields and shared weights).

Each hidden neuron of a feature map looks at a small window of the input, its *local receptive field*,
and every neuron of the map uses the same weights and bias. The book writes the output of neuron (j, k)
of a map with a kh×kw kernel as

    a_{j,k} = σ(b + Σ_{l=0}^{kh-1} Σ_{m=0}^{kw-1} w_{l,m} a_{j+l, k+m}).

Conv2d computes the argument of σ, summed over the input channels c too (the activation is a separate
layer, as everywhere in deepscope). With stride s and zero padding p, for output channel o:

    forward    z_{n,o,j,k} = b_o + Σ_c Σ_l Σ_m w_{o,c,l,m} x̃_{n,c, s·j+l, s·k+m}      (x̃ = x padded by p zeros)
    output     H_out = ⌊(H + 2p - kh) / s⌋ + 1,   W_out = ⌊(W + 2p - kw) / s⌋ + 1
    backward   ∂C/∂b_o         = Σ_{n,j,k} δ_{n,o,j,k}
               ∂C/∂w_{o,c,l,m} = Σ_{n,j,k} δ_{n,o,j,k} x̃_{n,c, s·j+l, s·k+m}
               ∂C/∂x̃_{n,c,u,v} = Σ_o Σ_{(j,l): s·j+l=u} Σ_{(k,m): s·k+m=v} w_{o,c,l,m} δ_{n,o,j,k}

where δ = ∂C/∂z arrives from above. All three are matrix products once every receptive field is laid out
as a column ("im2col"): with X the (C·kh·kw, N·H_out·W_out) matrix whose columns are the receptive
fields and W the (out, C·kh·kw) matrix of the kernels,

    Z = W X + b,      ∂C/∂W = Δ Xᵀ,      ∂C/∂X = Wᵀ Δ,

and ∂C/∂x̃ is ∂C/∂X scattered back into the image: for each kernel offset (l, m) the slice of ∂C/∂X that
belongs to that offset is added into the strided window x̃[:, :, l::s, m::s] (overlapping fields add up).

Memory layout: the columns are built channel-major, (C, kh, kw, N, H_out, W_out), so that one GEMM covers
the whole mini-batch, and the output is returned as a ``(N, out, H_out, W_out)`` *view* of the
channel-major ``(out, N, H_out, W_out)`` product (no transposing copy). NumPy's elementwise operations keep
that layout, so a stack of conv, pooling and activation layers stays channel-major end to end.
X is cached by a training-mode forward and released by backward once ∂C/∂W is formed; an evaluation-mode
forward keeps no columns (backward, if called anyway, rebuilds them from the cached input).
"""
from __future__ import annotations

from .. import backend, cpu, device
from . import init as _init
from .module import Module, Parameter


def _pair(v, name):
    """An int or a pair of ints as a pair ``(h, w)``."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
        return int(v[0]), int(v[1])
    return int(v), int(v)


def output_size(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    """H_out = ⌊(H + 2p - k) / s⌋ + 1 (the same for widths)."""
    return (size + 2 * padding - kernel) // stride + 1


def windows(x, kh, kw, sh, sw, order):
    """A strided view of every kh×kw window of ``x`` (N, C, H, W) with strides (sh, sw), no copy.

    ``order`` names the axis order of the view using ``n, c, i, j`` (kernel offsets) and ``h, w`` (output
    positions), e.g. ``"cijnhw"``. Works for any memory layout of ``x`` (its own strides are used).
    """
    xp = backend.xp_of(x)
    n, c, H, W = x.shape
    ho, wo = (H - kh) // sh + 1, (W - kw) // sw + 1
    s_n, s_c, s_h, s_w = x.strides
    axes = {"n": (n, s_n), "c": (c, s_c), "i": (kh, s_h), "j": (kw, s_w),
            "h": (ho, s_h * sh), "w": (wo, s_w * sw)}
    shape = tuple(axes[a][0] for a in order)
    strides = tuple(axes[a][1] for a in order)
    return xp.lib.stride_tricks.as_strided(x, shape=shape, strides=strides)  # read only: never written


class Conv2d(Module):
    """A 2-D convolution (the book's feature maps, without σ): ``z = b + w ⋆ x``.

    Args:
        in_channels: channels of the input (1 for MNIST; the previous layer's feature maps otherwise).
        out_channels: number of feature maps (kernels).
        kernel_size: kh×kw of the local receptive field; an int or a pair.
        stride: step between neighbouring receptive fields; an int or a pair (default 1).
        padding: zeros added on each side of the input; an int or a pair (default 0); ``"same"``: the output has
            the input's size, p = (k - 1)/2 (stride 1 and odd kernels only: even kernels would need PyTorch's
            uneven padding); ``"valid"``: 0.
        bias: whether each feature map has a bias (default True).
        init: initialisation scheme (see ``deepscope.nn.init``); default ``"book"``: w ~ N(0, 1/n_in) with
            n_in = in_channels·kh·kw (one neuron's inputs), b ~ N(0, 1).

    Shape:
        - Input: ``(N, in_channels, H, W)``.
        - Output: ``(N, out_channels, H_out, W_out)`` with H_out = ⌊(H + 2p - kh)/s⌋ + 1 and
          W_out = ⌊(W + 2p - kw)/s⌋ + 1.

    Attributes:
        weight: ``(out_channels, in_channels, kh, kw)`` — PyTorch's layout.
        bias: ``(out_channels,)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 bias: bool = True, init: str = "book"):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        if self.in_channels < 1 or self.out_channels < 1:
            raise ValueError(f"Conv2d: in_channels and out_channels must be positive, got {in_channels}, {out_channels}")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        kh, kw = self.kernel_size
        if padding == "same":
            if self.stride != (1, 1) or kh % 2 == 0 or kw % 2 == 0:
                raise ValueError(f"Conv2d: padding='same' needs stride 1 and an odd kernel, got "
                                 f"kernel_size={kernel_size}, stride={stride}")
            padding = ((kh - 1) // 2, (kw - 1) // 2)
        elif padding == "valid":
            padding = 0
        self.padding = _pair(padding, "padding")
        if min(kh, kw) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(f"Conv2d: kernel_size and stride must be >= 1 and padding >= 0, got "
                             f"kernel_size={kernel_size}, stride={stride}, padding={padding}")
        fan_in, fan_out = self.in_channels * kh * kw, self.out_channels * kh * kw
        w, b = _init.initialize((self.out_channels, self.in_channels, kh, kw), (self.out_channels,),
                                fan_in, fan_out, init)
        self.weight = Parameter(w)
        self.bias = Parameter(b) if bias else None

    # -- forward -----------------------------------------------------------------------------------
    def _check(self, x):
        if x.ndim != 4:
            raise self.shape_error(f"(N, {self.in_channels}, H, W)", x.shape)
        if x.shape[1] != self.in_channels:
            raise self.shape_error(f"(N, {self.in_channels}, H, W) ({self.in_channels} channels)", x.shape)
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        if x.shape[2] + 2 * ph < kh or x.shape[3] + 2 * pw < kw:
            raise self.shape_error(f"(N, {self.in_channels}, H, W) with H >= {kh - 2 * ph} and "
                                   f"W >= {kw - 2 * pw} (kernel {kh}x{kw}, padding {ph}x{pw})", x.shape)

    def _pad(self, x):
        """x̃: ``x`` with p zeros on each side, stored channel-major (C, N, H+2p, W+2p)."""
        ph, pw = self.padding
        if ph == 0 and pw == 0:
            return x
        xp = backend.xp_of(x)
        n, c, h, w = x.shape
        xpad = xp.zeros((c, n, h + 2 * ph, w + 2 * pw), dtype=x.dtype).transpose(1, 0, 2, 3)
        xpad[:, :, ph:ph + h, pw:pw + w] = x
        return xpad

    def _columns(self, xpad):
        """X: every receptive field of x̃ as a column, (C·kh·kw, N·H_out·W_out), one contiguous copy."""
        xp = backend.xp_of(xpad)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        cols = xp.ascontiguousarray(windows(xpad, kh, kw, sh, sw, "cijnhw"))
        return cols.reshape(self.in_channels * kh * kw, -1)

    def forward(self, x):
        self._check(x)
        dtype = self.weight.data.dtype
        if x.dtype != dtype:
            x = x.astype(dtype)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        n, _, h, w = x.shape
        ho, wo = output_size(h, kh, sh, ph), output_size(w, kw, sw, pw)
        self._x_shape, self._x, self._cols = x.shape, x, None
        if cpu.fast(x):   # the same Z = W X + b, chunks of the mini-batch on the CPU's threads
            bias = None if self.bias is None else self.bias.data
            return cpu.conv2d_forward(x, self.weight.data, bias, self.stride, self.padding)
        cols = self._columns(self._pad(x))
        z = device.matmul(self.weight.data.reshape(self.out_channels, -1), cols)   # Z = W X   (out, N·Ho·Wo)
        if self.bias is not None:
            z += self.bias.data[:, None]                                       #   + b
        # Cache the columns for ∂C/∂W only when training (inference keeps no copy of them).
        self._cols = cols if self.training else None
        return z.reshape(self.out_channels, n, ho, wo).transpose(1, 0, 2, 3)

    # -- backward ----------------------------------------------------------------------------------
    def backward(self, grad_output):
        xp = backend.xp_of(grad_output)
        n, c, h, w = self._x_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        ho, wo = grad_output.shape[2], grad_output.shape[3]
        if cpu.fast(grad_output, self._x):   # the same three lines below, on shards, in the CPU's threads
            dw, db, dx = cpu.conv2d_backward(self._x, self.weight.data, grad_output, self.stride, self.padding,
                                             input_grad=self.needs_input_grad)
            self.weight.grad += dw                                               # ∂C/∂W = Δ Xᵀ
            if self.bias is not None:
                self.bias.grad += db                                             # ∂C/∂b = Σ δ
            return dx                                                            # col2im(Wᵀ Δ)
        cols = self._cols if self._cols is not None else self._columns(self._pad(self._x))
        self._cols = None   # backward needs X once: let it go as soon as ∂C/∂W is done (lower peak memory)
        # Δ as (out, N·Ho·Wo); free when grad_output is channel-major (as our own outputs are).
        delta = grad_output.transpose(1, 0, 2, 3).reshape(self.out_channels, -1)
        w2 = self.weight.data.reshape(self.out_channels, -1)
        self.weight.grad += device.matmul(delta, cols.T).reshape(self.weight.data.shape)   # ∂C/∂W = Δ Xᵀ
        if self.bias is not None:
            self.bias.grad += delta.sum(axis=1)                                  # ∂C/∂b = Σ δ
        del cols
        if not self.needs_input_grad:                       # the first layer: nobody reads ∂C/∂x
            return None
        dcols = device.matmul(w2.T, delta).reshape(c, kh, kw, n, ho, wo)        # ∂C/∂X = Wᵀ Δ
        # col2im: add each kernel offset's slice into its strided window of ∂C/∂x̃ (channel-major).
        dxpad = xp.zeros((c, n, h + 2 * ph, w + 2 * pw), dtype=dcols.dtype)
        for i in range(kh):
            for j in range(kw):
                dxpad[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] += dcols[:, i, j]
        return dxpad[:, :, ph:ph + h, pw:pw + w].transpose(1, 0, 2, 3)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        if self.stride != (1, 1):
            s += f", stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        return s
