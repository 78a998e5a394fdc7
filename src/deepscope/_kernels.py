"""Compiled CPU loops (numba) behind ``deepscope.cpu``: each is one pass over its shard of the data.

Every function here is the explicit loop of an equation that a layer file states and computes with NumPy
(the reference); ``deepscope.cpu`` runs them on shards of the mini-batch in its threads (``nogil``: the
threads run at once) and ``tests/test_cpu.py`` checks each against the layer's NumPy expression.
Compiled on first use and cached on disk (``cache=True``), so only the first run on a machine pays the
compile time. This module imports numba at its top; ``deepscope.cpu`` imports it lazily, on first use.
"""
from __future__ import annotations

import ctypes
import math
import sys

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .cpu import host_cpu_features

_jit = njit(cache=True, nogil=True, fastmath=False, boundscheck=False,
            error_model="numpy")   # IEEE x/0 (as NumPy), no Python check: loops with a division vectorise


# -- waiting for another thread, awake and without the GIL -------------------------------------------------
# deepscope.cpu's pool waits here instead of sleeping for waits of a few tens of microseconds: a thread that
# sleeps lets its core halt, and on a VM (issue 11's, guest_halt_poll_ns=0) waking a halted core costs ~30-50
# us. The clock is libc's clock_gettime (a call the compiler cannot see through, so the flag is read anew each
# turn); numba cannot cache a function that calls through a ctypes pointer, so these compile on first use.
_clock_gettime = None
if sys.platform.startswith("linux"):     # CLOCK_MONOTONIC = 1 and struct timespec = two int64 (x86-64, arm64)
    try:
        _clock_gettime = ctypes.CDLL(None).clock_gettime
        _clock_gettime.argtypes, _clock_gettime.restype = (ctypes.c_int, ctypes.c_void_p), ctypes.c_int
    except (OSError, AttributeError):      # pragma: no cover - a C library without it
        _clock_gettime = None
_CLOCK_MONOTONIC = 1
_jit_wait = njit(cache=False, nogil=True)


if _clock_gettime is not None:
    @_jit_wait
    def _now_ns(ts):
        if _clock_gettime(_CLOCK_MONOTONIC, ts.ctypes.data) != 0:
            return np.int64(1) << 62                # no clock: any wait ends at once
        return ts[0] * 1_000_000_000 + ts[1]

    @_jit_wait
    def wait_until(flag, i, value, limit_ns):
        """Wait, awake, until flag[i] >= value (True) or ``limit_ns`` nanoseconds have passed (False)."""
        ts = np.empty(2, np.int64)
        start = _now_ns(ts)
        while flag[i] < value:
            if _now_ns(ts) - start > limit_ns:
                return False
        return True

    @_jit_wait
    def publish(flag, i, value, limit_ns):
        """flag[i] = value, then wait, awake, until another thread has raised it (it has taken the GIL back) or
        ``limit_ns`` nanoseconds have passed."""
        flag[i] = value
        ts = np.empty(2, np.int64)
        start = _now_ns(ts)
        while flag[i] == value:
            if _now_ns(ts) - start > limit_ns:
                return False
        return True

    @_jit_wait
    def park(posted, seen, limit_ns):
        """Wait, awake, until posted[0] != seen (a new job was handed out: True) or ``limit_ns`` nanoseconds have
        passed (False); after a new job, posted[1] nanoseconds more (the grace its poster set: the thread that
        handed it out may hold the GIL a while longer, and asking for the GIL before then puts this thread to
        sleep)."""
        ts = np.empty(2, np.int64)
        start = _now_ns(ts)
        while posted[0] == seen:
            if _now_ns(ts) - start > limit_ns:
                return False
        grace_ns = posted[1]
        start = _now_ns(ts)
        while _now_ns(ts) - start < grace_ns:
            pass
        return True

    @_jit_wait
    def publish_and_park(flag, i, value, limit_ns, posted, seen, park_ns):
        """``publish``, then ``park``, in one call: the thread takes the GIL back only when the next job is out."""
        publish(flag, i, value, limit_ns)
        return park(posted, seen, park_ns)
else:  # pragma: no cover
    wait_until = publish = park = publish_and_park = None


# -- convolution --------------------------------------------------------------------------------------
# A row of 8 numbers as one vector. The compiler vectorises a copy of unknown length in blocks of 64 numbers and
# leaves a shorter row to its scalar remainder, so the book's second conv (a 12x12 input, a 5x5 kernel: rows of 8)
# was copied one number at a time. These two move a row of 8 with one vector load and store (an ISA with narrower
# vectors gets several). Both take 1-D arrays of unit stride (the callers check it) and the offsets of the 8.
def _vector_at(context, builder, array_type, array, at, width=8):
    """A pointer to the 8-vector (or ``width``-vector) at array[at:at + 8]."""
    data = context.make_array(array_type)(context, builder, array).data
    vector = ir.VectorType(context.get_data_type(array_type.dtype), width)
    return builder.bitcast(builder.gep(data, [at]), vector.as_pointer())


@intrinsic
def _copy8(typingctx, dst, i, src, j):
    """dst[i:i + 8] = src[j:j + 8]."""
    def codegen(context, builder, sig, args):
        v = builder.load(_vector_at(context, builder, sig.args[2], args[2], args[3]), align=1)
        builder.store(v, _vector_at(context, builder, sig.args[0], args[0], args[1]), align=1)
        return context.get_dummy_value()
    return types.void(dst, i, src, j), codegen


@intrinsic
def _add8(typingctx, dst, i, src, j):
    """dst[i:i + 8] += src[j:j + 8] (each number one add, as the scalar loop: the same result)."""
    def codegen(context, builder, sig, args):
        to = _vector_at(context, builder, sig.args[0], args[0], args[1])
        v = builder.load(_vector_at(context, builder, sig.args[2], args[2], args[3]), align=1)
        builder.store(builder.fadd(builder.load(to, align=1), v), to, align=1)
        return context.get_dummy_value()
    return types.void(dst, i, src, j), codegen


@_jit
def col2im(dcols, dx, n0, sh, sw):
    """dx[c, n0 + n, s·j + l, s·k + m] = Σ dcols[c, l, m, n, j, k] (the sum over every (l, m, j, k) that lands there, 0
    where none does): ∂C/∂x̃ from ∂C/∂X for the images n0, n0 + 1, … (dx (C, N, H̃, W̃); the whole array, so that a
    C-contiguous one gives rows the compiler knows are contiguous: vector adds, where a slice of it gave scalar ones).
    Each image's plane is zeroed here, just before its adds, while it is in this core's cache (a serial
    ``numpy.zeros`` of the whole ∂C/∂x̃ had cost rung 3's second conv ~60 us at 2 threads before the threads began).

    The kernel column m is the outer loop: the row adds that follow one another then touch different rows of
    the plane, and the next m's adds (one element along, overlapping) come ho·kh adds later, when the earlier
    stores have left the store buffer. (With m inner, each add read what the one before had just written, one
    element off, and waited on the store.) Rung 3's second conv at m=256, own AVX-512 kernels: 9.7 -> 2.1 ms;
    its rows of 8 as one vector add each (_add8): 2.0 -> 0.8 ms (the kernel alone, 32 chunks of 8 images)."""
    c_, kh, kw, n_, ho, wo = dcols.shape
    rows8 = sw == 1 and wo == 8 and dx.strides[3] == dx.itemsize and dcols.strides[5] == dcols.itemsize
    for c in range(c_):
        for n in range(n_):
            plane = dx[c, n0 + n]
            plane[:, :] = 0
            for m in range(kw):
                for l in range(kh):
                    src = dcols[c, l, m, n]
                    if rows8:                            # a row of 8: one vector add
                        for j in range(ho):
                            _add8(plane[j * sh + l], m, src[j], 0)
                        continue
                    for j in range(ho):
                        row, add = plane[j * sh + l], src[j]
                        if sw == 1:                      # unit stride: a loop the compiler vectorises
                            for k in range(wo):
                                row[k + m] += add[k]
                        else:
                            for k in range(wo):
                                row[k * sw + m] += add[k]


@_jit
def im2col(x, cols, n0, count, sh, sw, channel_major):
    """cols[c, l, m, n, j, k] = x[c, n0 + n, s·j + l, s·k + m] for n < count: every receptive field of the images n0,
    n0 + 1, … of x (C, N, H, W) as a column (cols may hold more images: the rest is left as it is); x given as (N, C,
    H, W) when not ``channel_major``. x is whole and given in the
    order its memory is laid out, as in col2im: a C-contiguous x gives vector copies (rung 3's second conv at
    m=256: 2.6 -> 1.7 ms; its rows of 8 as one vector each (_copy8): 1.6 -> 0.6 ms, the kernel alone)."""
    c_, kh, kw, _, ho, wo = cols.shape
    rows8 = sw == 1 and wo == 8 and x.strides[3] == x.itemsize and cols.strides[5] == cols.itemsize
    for c in range(c_):
        for n in range(count):
            plane = x[c, n0 + n] if channel_major else x[n0 + n, c]
            for l in range(kh):
                for m in range(kw):
                    dst = cols[c, l, m, n]
                    if rows8:                            # a row of 8: one vector copy
                        for j in range(ho):
                            _copy8(dst[j], 0, plane[j * sh + l], m)
                        continue
                    for j in range(ho):
                        row, out = plane[j * sh + l], dst[j]
                        if sw == 1:
                            for k in range(wo):
                                out[k] = row[k + m]
                        else:
                            for k in range(wo):
                                out[k] = row[k * sw + m]


# -- pooling, on planes (P, H, W): P = N·C in memory order ---------------------------------------------
@_jit
def maxpool_forward(x, out, arg, kh, kw, sh, sw):
    """out = max over each window; arg = l·kw + m of its first maximum in row-major order (NaN propagates)."""
    p_, h_, w_ = x.shape
    ho, wo = out.shape[1], out.shape[2]
    offsets = np.empty(kh * kw, np.int64)           # where offset (l, m) lies in a plane of h_·w_ numbers
    for l in range(kh):
        for m in range(kw):
            offsets[l * kw + m] = l * w_ + m
    for p in range(p_):
        plane = x[p].reshape(h_ * w_)
        for j in range(ho):
            for k in range(wo):
                base = j * sh * w_ + k * sw
                best = plane[base]
                at = 0
                nan = best != best
                for c in range(1, kh * kw):
                    v = plane[base + offsets[c]]
                    nan |= v != v
                    if v > best:
                        best = v
                        at = c
                out[p, j, k] = best if not nan else math.nan
                arg[p, j, k] = at


@_jit
def maxpool2_forward(x, out, arg):
    """maxpool_forward for the book's 2×2 windows with stride 2 (a loop the compiler unrolls)."""
    p_, ho, wo = out.shape
    for p in range(p_):
        for j in range(ho):
            r0, r1, o, ar = x[p, 2 * j], x[p, 2 * j + 1], out[p, j], arg[p, j]
            for k in range(wo):
                o[k], ar[k] = _first_max(r0[2 * k], r0[2 * k + 1], r1[2 * k], r1[2 * k + 1])


@_jit
def maxpool_backward(g, arg, dx, kw, sh, sw):
    """dx[window's first maximum] += g (dx zeroed)."""
    p_, ho, wo = g.shape
    for p in range(p_):
        for j in range(ho):
            for k in range(wo):
                a = arg[p, j, k]
                dx[p, j * sh + a // kw, k * sw + a % kw] += g[p, j, k]


@njit(inline="always")     # (inlined into its callers: the same loop as written out there)
def _first_max(a, b, c, d):
    """The max of a 2×2 window (a, b its first row, c, d its second) and where its first maximum is (0-3); NaN if
    any element is NaN (as NumPy's max)."""
    best, at = a, 0
    if b > best:
        best, at = b, 1
    if c > best:
        best, at = c, 2
    if d > best:
        best, at = d, 3
    if a != a or b != b or c != c or d != d:
        best = math.nan
    return best, at


@njit(inline="always")     # (inlined into its callers: the same loop as written out there)
def _to_first_max(r0, r1, k, v, at):
    """A 2×2 window's gradient: v to its element ``at`` (0, 1 in row r0, 2, 3 in row r1, columns 2k, 2k+1), 0 to the
    other three. Four selects, not a branch and a zeroing: every element written once."""
    r0[2 * k] = v if at == 0 else 0
    r0[2 * k + 1] = v if at == 1 else 0
    r1[2 * k] = v if at == 2 else 0
    r1[2 * k + 1] = v if at == 3 else 0


# Windows of 2x2 with stride 2, several at once. A row of the pooled map has 12 windows in the book's first conv (a
# 24x24 output) and 4 in its second (8x8): loops over k that short the compiler leaves scalar (it vectorises in
# blocks of 16 or more, and the two rows of a window interleave). These take ``width`` windows (8 or 4) as vectors:
# the rows' even and odd numbers pulled apart by shuffles, the first-maximum chain and its selects as in
# _first_max and _to_first_max, each lane the same operations as the scalar code (the same results, bit for bit).
def _splat(builder, value, width):
    """``value`` in every lane of a ``width``-vector."""
    vector = ir.VectorType(value.type, width)
    one = builder.insert_element(ir.Constant(vector, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(vector, ir.Undefined), ir.Constant(ir.VectorType(ir.IntType(32), width), [0] * width))


def _lanes(*indices):
    return ir.Constant(ir.VectorType(ir.IntType(32), len(indices)), list(indices))


def _first_max_of(width):
    @intrinsic
    def first_max(typingctx, r0, r1, u, bc, has_bias, relu, out, arg, k):
        """out[k:k + width], arg[k:k + width] = the max of windows k, k + 1, … (r0[u:u + 2·width] their first rows,
        r1 their second; + bc first when has_bias, max(0, ·) after when relu) and where its first maximum is (0-3);
        NaN if any element of the window is NaN (as _first_max)."""
        def codegen(context, builder, sig, args):
            t0, t1, _, tb, _, _, to, ta, _ = sig.args
            r0_, r1_, u_, bc_, has_bias_, relu_, out_, arg_, k_ = args
            x0 = builder.load(_vector_at(context, builder, t0, r0_, u_, 2 * width), align=1)
            x1 = builder.load(_vector_at(context, builder, t1, r1_, u_, 2 * width), align=1)
            even, odd = _lanes(*range(0, 2 * width, 2)), _lanes(*range(1, 2 * width, 2))
            bias = _splat(builder, context.cast(builder, bc_, tb, t0.dtype), width)
            window = []
            for v in (builder.shuffle_vector(x0, x0, even), builder.shuffle_vector(x0, x0, odd),
                      builder.shuffle_vector(x1, x1, even), builder.shuffle_vector(x1, x1, odd)):
                window.append(builder.select(has_bias_, builder.fadd(v, bias), v))          # z = W X + b
            i8 = ir.VectorType(ir.IntType(8), width)
            best, at = window[0], ir.Constant(i8, [0] * width)
            for offset, v in enumerate(window[1:], 1):                                   # the first maximum
                later = builder.fcmp_ordered(">", v, best)
                best, at = builder.select(later, v, best), builder.select(later, ir.Constant(i8, [offset] * width), at)
            nan = builder.or_(builder.fcmp_unordered("uno", window[0], window[1]),
                              builder.fcmp_unordered("uno", window[2], window[3]))
            best = builder.select(nan, ir.Constant(best.type, [float("nan")] * width), best)
            zero = ir.Constant(best.type, [0.0] * width)                                 # a = max(0, m)
            rectified = builder.select(builder.fcmp_ordered(">", best, zero), best, builder.fmul(best, zero))
            best = builder.select(relu_, rectified, best)
            builder.store(best, _vector_at(context, builder, to, out_, k_, width), align=1)
            builder.store(at, _vector_at(context, builder, ta, arg_, k_, width), align=1)
            return context.get_dummy_value()
        return types.void(r0, r1, u, bc, has_bias, relu, out, arg, k), codegen
    return first_max


def _to_first_max_of(width):
    @intrinsic
    def to_first_max(typingctx, r0, r1, u, v, arg, k):
        """_to_first_max for windows k, k + 1, …: r0[u:u + 2·width], r1[u:u + 2·width] (their two rows) get v[k + q]
        at window q's element arg[k + q], 0 at its other three."""
        def codegen(context, builder, sig, args):
            t0, t1, _, tv, ta, _ = sig.args
            r0_, r1_, u_, v_, arg_, k_ = args
            vs = builder.load(_vector_at(context, builder, tv, v_, k_, width), align=1)
            at = builder.load(_vector_at(context, builder, ta, arg_, k_, width), align=1)
            zero = ir.Constant(vs.type, [0.0] * width)
            put = [builder.select(builder.icmp_signed("==", at, ir.Constant(at.type, [offset] * width)), vs, zero)
                   for offset in range(4)]
            pairs = _lanes(*(q for i in range(width) for q in (i, i + width)))           # (put0[0], put1[0], put0[1], …)
            builder.store(builder.shuffle_vector(put[0], put[1], pairs),
                          _vector_at(context, builder, t0, r0_, u_, 2 * width), align=1)
            builder.store(builder.shuffle_vector(put[2], put[3], pairs),
                          _vector_at(context, builder, t1, r1_, u_, 2 * width), align=1)
            return context.get_dummy_value()
        return types.void(r0, r1, u, v, arg, k), codegen
    return to_first_max


def _relu_grad_of(width):
    @intrinsic
    def relu_grad(typingctx, v, g, a, k):
        """v[k:k + width] = g[k:k + width] ⊙ [a > 0] (as g if a > 0 else g·0, the scalar code's ±0)."""
        def codegen(context, builder, sig, args):
            tv, tg, ta, _ = sig.args
            v_, g_, a_, k_ = args
            gs = builder.load(_vector_at(context, builder, tg, g_, k_, width), align=1)
            av = builder.load(_vector_at(context, builder, ta, a_, k_, width), align=1)
            zero = ir.Constant(gs.type, [0.0] * width)
            put = builder.select(builder.fcmp_ordered(">", av, zero), gs, builder.fmul(gs, zero))
            builder.store(put, _vector_at(context, builder, tv, v_, k_, width), align=1)
            return context.get_dummy_value()
        return types.void(v, g, a, k), codegen
    return relu_grad


_first_max8, _first_max4 = _first_max_of(8), _first_max_of(4)
_relu_grad8, _relu_grad4 = _relu_grad_of(8), _relu_grad_of(4)
_to_first_max8, _to_first_max4 = _to_first_max_of(8), _to_first_max_of(4)


@_jit
def maxpool2_backward(g, arg, dx):
    """maxpool_backward for 2×2 windows with stride 2: writes every element of dx (no zeroing needed)."""
    p_, ho, wo = g.shape
    h_, w_ = dx.shape[1], dx.shape[2]
    for p in range(p_):
        for j in range(ho):
            r0, r1, gr, ar = dx[p, 2 * j], dx[p, 2 * j + 1], g[p, j], arg[p, j]
            for k in range(wo):
                _to_first_max(r0, r1, k, gr[k], ar[k])
            for v in range(2 * wo, w_):              # a last odd column belongs to no window
                r0[v] = 0
                r1[v] = 0
        for u in range(2 * ho, h_):                  # nor does a last odd row
            dx[p, u, :] = 0


@_jit
def conv_pool_forward(z, bias, out, arg, relu, neg_abs):
    """Conv2d → MaxPool2d(2) → the neuron for one chunk of images (nn/fuse.py): z (C, n, H, W), the chunk's W X without
    b; out[i, c, j, k] = m, the max over window (j, k) of z[c, i] + b[c] (NaN propagates, arg = the offset of the first
    maximum, as maxpool2_forward), then max(0, m) as the relu kernel when ``relu``; and -|m| into ``neg_abs`` unless it
    is empty (for the sigmoid, whose e^{-|m|} is NumPy's vectorised exp). out, arg, neg_abs are (n, C, H_p, W_p),
    N-major (z may hold more images than n: the rest is not read). No b when it is empty.
    Rows of unit stride go 8 and 4 windows at a time (_first_max8, _first_max4; the rest one by one): rung 3's chunks,
    float32, ReLU, alone (CPU time a call, Zen 5): 16 images of 20 24x24 maps 36.6 -> 20.0 us, 8 of 40 8x8 maps 7.9 ->
    4.9 us."""
    c_, n_ = z.shape[0], out.shape[0]
    hp, wp = out.shape[2], out.shape[3]
    has_bias, sigmoid = bias.size > 0, neg_abs.size > 0
    vectors = z.strides[3] == z.itemsize and out.strides[3] == out.itemsize and arg.strides[3] == 1
    for c in range(c_):
        bc = bias[c] if has_bias else z.dtype.type(0)
        for i in range(n_):
            for j in range(hp):
                r0, r1, o, ar = z[c, i, 2 * j], z[c, i, 2 * j + 1], out[i, c, j], arg[i, c, j]
                first = 0
                if vectors:
                    while first + 8 <= wp:
                        _first_max8(r0, r1, 2 * first, bc, has_bias, relu, o, ar, first)
                        first += 8
                    while first + 4 <= wp:
                        _first_max4(r0, r1, 2 * first, bc, has_bias, relu, o, ar, first)
                        first += 4
                for k in range(first, wp):
                    a, b, e, d = r0[2 * k], r0[2 * k + 1], r1[2 * k], r1[2 * k + 1]
                    if has_bias:                                              # z = W X + b
                        a, b, e, d = a + bc, b + bc, e + bc, d + bc
                    best, at = _first_max(a, b, e, d)                         # max over the window
                    if relu:                                                  # a = max(0, m)
                        best = best if best > 0 else best * 0
                    o[k] = best
                    ar[k] = at
                if sigmoid:
                    for k in range(wp):
                        neg_abs[i, c, j, k] = -abs(o[k])


@_jit
def pool_neuron_backward(g, a, arg, sigmoid, delta):
    """∂C/∂z of one chunk for nn/fuse.py's Conv2d → MaxPool2d(2) → neuron: δ = ∂C/∂a ⊙ σ'(m) (a(1-a), 1 - a in
    float64, or [a > 0] for ReLU) at each window's first maximum (arg), 0 elsewhere and on a last odd
    row or column. g, a, arg (n, C, H_p, W_p); delta (C, n, H, W), every element written.
    A row's ∂C/∂m first (ReLU's 8 and 4 at a time: _relu_grad8, _relu_grad4), then its windows 8 and 4 at a time
    (_to_first_max8, _to_first_max4; the rest one by one): rung 3's chunks, float32, ReLU, alone (CPU time a call, Zen
    5): 16 images of 20 24x24 maps 66.7 -> 21.2 us, 8 of 40 8x8 maps 13.0 -> 6.9 us."""
    n_, c_, hp, wp = g.shape
    h_, w_ = delta.shape[2], delta.shape[3]
    as_delta = delta.dtype.type                      # (v rounded once, before the four selects: 2.7x faster)
    v = np.empty(wp, delta.dtype)                    # a row's ∂C/∂m
    vectors = delta.strides[3] == delta.itemsize and arg.strides[3] == 1
    relu_vectors = (not sigmoid and g.dtype == delta.dtype and a.dtype == delta.dtype
                    and g.strides[3] == g.itemsize and a.strides[3] == a.itemsize)
    for c in range(c_):
        for i in range(n_):
            for j in range(hp):
                r0, r1, gr, av, ar = delta[c, i, 2 * j], delta[c, i, 2 * j + 1], g[i, c, j], a[i, c, j], arg[i, c, j]
                done = 0
                if relu_vectors:                                              # ∂C/∂m = ∂C/∂a ⊙ [a > 0]
                    while done + 8 <= wp:
                        _relu_grad8(v, gr, av, done)
                        done += 8
                    while done + 4 <= wp:
                        _relu_grad4(v, gr, av, done)
                        done += 4
                for k in range(done, wp):
                    gk, ak = gr[k], av[k]
                    if sigmoid:
                        v[k] = as_delta(gk * ak * (1.0 - ak))                 # ∂C/∂m = ∂C/∂a ⊙ a(1-a)
                    else:
                        v[k] = as_delta(gk if ak > 0 else gk * 0)             # ∂C/∂m = ∂C/∂a ⊙ [a > 0]
                first = 0
                if vectors:                                                   # at the first maximum
                    while first + 8 <= wp:
                        _to_first_max8(r0, r1, 2 * first, v, ar, first)
                        first += 8
                    while first + 4 <= wp:
                        _to_first_max4(r0, r1, 2 * first, v, ar, first)
                        first += 4
                for k in range(first, wp):
                    _to_first_max(r0, r1, k, v[k], ar[k])
                for u in range(2 * wp, w_):                  # a last odd column belongs to no window
                    r0[u] = 0
                    r1[u] = 0
            for u in range(2 * hp, h_):                      # nor does a last odd row
                delta[c, i, u, :] = 0


# -- a ConvPool chunk as one call that never holds the GIL (cpu.conv_pool_forward / conv_pool_backward) -----------
# BLAS from compiled code: ``gemm`` is the address of NumPy's own cblas_sgemm or cblas_dgemm (cpu.blas_gemm: OpenBLAS's
# scipy_cblas_?gemm64_, 64-bit integers), called with the arguments numpy.matmul passes it, so the products are
# NumPy's bit for bit, under the same OpenBLAS kernels and thread setting. The address is an argument (not a ctypes
# function in a global), so that these functions are cached on disk like the rest.
@intrinsic
def _cblas_gemm(typingctx, fn, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc):
    """cblas_?gemm(RowMajor, trans_a, trans_b, m, n, k, 1, a, lda, b, ldb, 0, c, ldc) at address ``fn`` (int64)."""
    def codegen(context, builder, sig, args):
        f, ta, tb, m_, n_, k_, a_, lda_, b_, ldb_, c_, ldc_ = args
        dt = context.get_data_type(sig.args[6].dtype)
        i32, i64 = ir.IntType(32), ir.IntType(64)
        fnty = ir.FunctionType(ir.VoidType(), [i32, i32, i32, i64, i64, i64, dt, dt.as_pointer(), i64,
                                               dt.as_pointer(), i64, dt, dt.as_pointer(), i64])
        data = [context.make_array(sig.args[i])(context, builder, v).data for i, v in ((6, a_), (8, b_), (10, c_))]
        builder.call(builder.inttoptr(f, fnty.as_pointer()),
                     [i32(101), builder.trunc(ta, i32), builder.trunc(tb, i32), m_, n_, k_, dt(1.0), data[0], lda_,
                      data[1], ldb_, dt(0.0), data[2], ldc_])
        return context.get_dummy_value()
    return types.void(types.int64, types.int64, types.int64, types.int64, types.int64, types.int64, a, types.int64,
                      b, types.int64, c, types.int64), codegen


@njit(inline="always")     # (inlined into its callers)
def _gemm(fn, a, ta, b, tb, c):
    """c = op(a) op(b) by BLAS (op(a) = aᵀ when ``ta``); a, b, c row-major with unit column stride (their row strides
    are BLAS's leading dimensions). CblasTrans = 112, CblasNoTrans = 111."""
    m, n = c.shape
    k = a.shape[0] if ta else a.shape[1]
    size = c.itemsize
    _cblas_gemm(fn, 112 if ta else 111, 112 if tb else 111, m, n, k, a, a.strides[0] // size, b, b.strides[0] // size,
                c, c.strides[0] // size)


@_jit
def linear_backward_columns(gemm, d, x, w, w_grad, dx, lo, hi):
    """Linear's backward for its inputs lo:hi, in one call that never holds the GIL (cpu.linear_backward's blocks):
    W.grad[:, lo:hi] += δᵀ x[:, lo:hi] (BLAS's product into a new array, then added, as NumPy's add of ``δ.T @ x``)
    and ∂C/∂x[:, lo:hi] = δ W[:, lo:hi] (BLAS, into dx): the calls numpy.matmul makes, so the same numbers."""
    n = d.shape[1]
    t = np.empty((n, hi - lo), d.dtype)
    _gemm(gemm, d, True, x[:, lo:hi], False, t)                        # δᵀ x[:, lo:hi]
    for i in range(n):
        row, add = w_grad[i, lo:hi], t[i]           # (row by row: the loop vectorises; over (i, lo + j) it ran 4x slower)
        for j in range(add.size):
            row[j] += add[j]                                            # W.grad += δᵀ x  (BP4)
    _gemm(gemm, d, False, w[:, lo:hi], False, dx[:, lo:hi])            # ∂C/∂x = δ W    (BP2)


@_jit
def chunk_columns(x, channel_major, a, b, sh, sw, ph, pw, cols):
    """X of images a:b into cols (C, kh, kw, ≥ b-a, H_out, W_out), as cpu._columns makes it: every receptive field of
    x̃ (x padded by ph, pw zeros) as a column (images after b-a left as they are); x given in memory order, (C, N, H, W)
    when ``channel_major``, else (N, C, H, W)."""
    if ph or pw:
        c_, h, w = cols.shape[0], x.shape[2], x.shape[3]
        xpad = np.zeros((c_, b - a, h + 2 * ph, w + 2 * pw), x.dtype)
        for c in range(c_):
            for n in range(b - a):
                xpad[c, n, ph:ph + h, pw:pw + w] = x[c, a + n] if channel_major else x[a + n, c]
        im2col(xpad, cols, 0, b - a, sh, sw, True)
    else:
        im2col(x, cols, a, b - a, sh, sw, channel_major)


@njit(inline="always")     # (inlined into its callers)
def _chunk_space(chunks, start, stop, spares, per_image, dtype):
    """One buffer for the largest of the chunks start..stop-1 (with its spare images) of per_image numbers an image:
    every chunk's array is made in it, so that each chunk writes where the last one did, in this core's cache (a fresh
    array a chunk, allocated before the last one is freed, alternates between two places: rung 1's backward at m=256,
    1 thread, 2,659 -> 2,833 us)."""
    most = 0
    for i in range(start, stop):
        most = max(most, chunks[i, 1] - chunks[i, 0] + spares[i])
    return np.empty(most * per_image, dtype)


@_jit
def conv_pool_chunks(gemm, x, channel_major, w2, bias, chunks, spares, start, stop, base, kh, kw, sh, sw, ph, pw,
                     relu, out, arg, neg_abs):
    """cpu.conv_pool_forward's chunks start..stop-1 in one call: per chunk i (images a:b = chunks[i]) X (chunk_columns,
    with room for spares[i] more images: cpu.ALIASED_ROW_BYTES), Z = W X (BLAS), then conv_pool_forward into out, arg
    and neg_abs (unless it is empty) at a - base:b - base (the three hold the images from ``base`` on)."""
    o, ckk = w2.shape
    c_, h, w = ckk // (kh * kw), x.shape[2], x.shape[3]
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    x_space = _chunk_space(chunks, start, stop, spares, ckk * ho * wo, w2.dtype)
    z_space = _chunk_space(chunks, start, stop, spares, o * ho * wo, w2.dtype)
    for i in range(start, stop):
        a, b = chunks[i, 0], chunks[i, 1]
        room, used = b - a + spares[i], (b - a) * ho * wo
        cols = x_space[:ckk * room * ho * wo].reshape((c_, kh, kw, room, ho, wo))
        chunk_columns(x, channel_major, a, b, sh, sw, ph, pw, cols)                           # X
        wx = z_space[:o * room * ho * wo].reshape((o, room, ho, wo))
        _gemm(gemm, w2, False, cols.reshape(ckk, -1)[:, :used], False, wx.reshape(o, -1)[:, :used])   # Z = W X
        at, to = a - base, b - base
        conv_pool_forward(wx, bias, out[at:to], arg[at:to], relu, neg_abs[at:to] if neg_abs.size else neg_abs[0:0])


@njit(inline="always")     # (inlined into its caller)
def _pairwise_block(a, lo, n):
    """NumPy's pairwise_sum of a[lo:lo + n] for n ≤ 128: 8 running sums, then the rest one by one (n < 8: one by one)."""
    if n < 8:
        res = a.dtype.type(0)
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3, r4, r5, r6, r7 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3], a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - n % 8:
        r0, r1, r2, r3 = r0 + a[lo + i], r1 + a[lo + i + 1], r2 + a[lo + i + 2], r3 + a[lo + i + 3]
        r4, r5, r6, r7 = r4 + a[lo + i + 4], r5 + a[lo + i + 5], r6 + a[lo + i + 6], r7 + a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@_jit
def _pairwise_sum(a, lo, n):
    """a[lo] + … + a[lo + n - 1] summed as NumPy sums a contiguous row (its pairwise_sum: blocks of up to 128 numbers,
    a longer run as the sum of its two halves, the first a multiple of 8 long; NumPy's sum then adds the result to its
    identity, 0), so the same number bit for bit. The halving's recursion by an explicit stack (numba's disk cache
    cannot hold a recursive function: a cached one crashed when loaded)."""
    los, ns, stage = np.empty(64, np.int64), np.empty(64, np.int64), np.empty(64, np.int64)
    sums = np.empty(64, a.dtype)
    los[0], ns[0], stage[0] = lo, n, 0
    top, done = 0, 0
    while top >= 0:
        first, count = los[top], ns[top]
        if count <= 128:                                  # a block: its sum goes on the stack of sums
            sums[done] = _pairwise_block(a, first, count)
            done += 1
            top -= 1
            continue
        half = count // 2
        half -= half % 8
        if stage[top] == 0:                               # the first half
            stage[top] = 1
            top += 1
            los[top], ns[top], stage[top] = first, half, 0
        elif stage[top] == 1:                             # then the second
            stage[top] = 2
            top += 1
            los[top], ns[top], stage[top] = first + half, count - half, 0
        else:                                             # then first + second
            sums[done - 2] = sums[done - 2] + sums[done - 1]
            done -= 1
            top -= 1
    return sums[0]


@_jit
def conv_pool_chunks_backward(gemm, x, channel_major, w2, chunks, start, stop, kh, kw, sh, sw, ph, pw, g, a_out, arg,
                              sigmoid, loops, dwts, dbs, dxpad):
    """cpu.conv_pool_backward's chunks start..stop-1 in one call: per chunk i (images a:b) X (chunk_columns), Δ by
    pool_neuron_backward, (∂C/∂W)ᵀ = X Δᵀ and ∂C/∂b = Σ δ into dwts[i], dbs[i] (by conv_weight_grad with ``loops``,
    else by BLAS and NumPy's pairwise sum, as cpu.conv2d_backward), and, unless dxpad is empty, ∂C/∂X = Wᵀ Δ (BLAS,
    over X) scattered into dxpad by col2im."""
    o, ckk = w2.shape
    c_, h, w = ckk // (kh * kw), x.shape[2], x.shape[3]
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    none = np.zeros(stop, np.int64)
    x_space = _chunk_space(chunks, start, stop, none, ckk * ho * wo, w2.dtype)
    d_space = _chunk_space(chunks, start, stop, none, o * ho * wo, w2.dtype)
    for i in range(start, stop):
        a, b = chunks[i, 0], chunks[i, 1]
        cols = x_space[:ckk * (b - a) * ho * wo].reshape((c_, kh, kw, b - a, ho, wo))
        chunk_columns(x, channel_major, a, b, sh, sw, ph, pw, cols)                           # X
        cols2 = cols.reshape(ckk, -1)
        delta = d_space[:o * (b - a) * ho * wo].reshape((o, b - a, ho, wo))
        pool_neuron_backward(g[a:b], a_out[a:b], arg[a:b], sigmoid, delta)                   # δ = ∂C/∂z
        delta2 = delta.reshape(o, -1)
        if loops:
            conv_weight_grad(cols2, delta2, 0, dwts[i], dbs[i])                              # (∂C/∂W)ᵀ = X Δᵀ, Σ δ
        else:
            _gemm(gemm, cols2, False, delta2, True, dwts[i])                                 # (∂C/∂W)ᵀ = X Δᵀ
            for c in range(o):
                dbs[i, c] = w2.dtype.type(0) + _pairwise_sum(delta2[c], 0, delta2.shape[1])  # ∂C/∂b = Σ δ
        if dxpad.size:
            _gemm(gemm, w2, True, delta2, False, cols2)                                      # ∂C/∂X = Wᵀ Δ
            col2im(cols, dxpad, a, sh, sw)


@_jit
def sumpool_forward(x, out, kh, kw, sh, sw, squares):
    """out = Σ over each window of x (or of x² when ``squares``)."""
    p_, ho, wo = out.shape
    for p in range(p_):
        for j in range(ho):
            for k in range(wo):
                s = x[p, j * sh, k * sw] * 0
                for l in range(kh):
                    for m in range(kw):
                        v = x[p, j * sh + l, k * sw + m]
                        s += v * v if squares else v
                out[p, j, k] = s


@_jit
def sumpool_backward(g, x, dx, kh, kw, sh, sw, times_x):
    """dx[window] += g (or g · x[window] when ``times_x``) (dx zeroed)."""
    p_, ho, wo = g.shape
    for p in range(p_):
        for j in range(ho):
            for k in range(wo):
                gv = g[p, j, k]
                for l in range(kh):
                    for m in range(kw):
                        u, v = j * sh + l, k * sw + m
                        dx[p, u, v] += gv * x[p, u, v] if times_x else gv


# -- elementwise, on flat contiguous shards -------------------------------------------------------------
@_jit
def sigmoid(z, e, out):
    """σ(z) = 1/(1+e^{-z}) from e = e^{-|z|} (no overflow): 1/(1+e) for z ≥ 0, e/(1+e) for z < 0. The exponential
    comes from NumPy, whose vectorised exp is several times faster than a scalar one."""
    one = z.dtype.type(1)                 # in z's precision, as NumPy computes it
    for i in range(z.size):
        ei = e[i]
        r = one / (one + ei)
        out[i] = r if z[i] >= 0 else ei * r


@_jit
def add_partial_sums(z, p, b, neg_abs):
    """z = (z + p) + b and neg_abs = -|z| for (m, n) arrays z, p, neg_abs and a bias b (n,) (or empty: none): Linear's
    two partial products summed and its bias added as NumPy's two adds do it (cpu._linear_by_inputs), the same
    numbers bit for bit, with -|z| beside it for σ (cpu.linear_sigmoid)."""
    m, n = z.shape
    for i in range(m):
        for j in range(n):
            v = z[i, j] + p[i, j]
            if b.size:
                v = v + b[j]
            z[i, j] = v
            neg_abs[i, j] = -abs(v)


@_jit
def sigmoid_backward(g, a, out):
    """∂C/∂z = ∂C/∂a ⊙ a(1-a), in a's precision as Sigmoid's NumPy line computes it, (g a)(1 - a): the same numbers,
    bit for bit (train.SigmoidNetStep calls it where the layer runs that line)."""
    one = a.dtype.type(1)
    for i in range(g.size):
        out[i] = g[i] * a[i] * (one - a[i])


@_jit
def tanh_backward(g, a, out):
    """∂C/∂z = ∂C/∂a ⊙ (1-a²)."""
    for i in range(g.size):
        out[i] = g[i] * (1.0 - a[i] * a[i])


@_jit
def relu(z, out, mask):
    """a = max(0, z) as z·[z > 0], and the mask [z > 0]."""
    for i in range(z.size):
        keep = z[i] > 0
        mask[i] = keep
        out[i] = z[i] if keep else z[i] * 0


@_jit
def masked(g, mask, out):
    """out = g ⊙ mask (ReLU's backward: mask = [z > 0]; dropout's: mask = m/(1-p))."""
    for i in range(g.size):
        out[i] = g[i] * mask[i]


@_jit
def dropout(x, u, p, scale, out, mask):
    """mask = [u ≥ p]·scale (m ~ Bernoulli(1-p) from uniform u), out = x ⊙ mask."""
    for i in range(x.size):
        m = scale if u[i] >= p else 0.0
        mask[i] = m
        out[i] = x[i] * mask[i]


# -- a mini-batch drawn from the training set (train.Batches) ---------------------------------------------------
@intrinsic
def _prefetch(typingctx, array, row, col):
    """Start loading the cache line of array[row, col] into the caches (a hint: nothing waits for it)."""
    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, signature.args[0], ary, [args[1], args[2]])
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0i8")
        read, every_level, data = ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)
        builder.call(fn, [builder.bitcast(ptr, i8p), read, every_level, data])
        return context.get_dummy_value()
    return types.void(array, row, col), codegen


TAKE_AHEAD = 2      # rows whose loads start before they are copied (Zen 5, 64 of 5,000 rows of 784 float32, caches
                    # flushed: 12.7 us by NumPy's X[idx], 10.9 by this loop without prefetching, 8.4 with 1-8 rows ahead)


@_jit
def take_rows(x, index, space):
    """Copies the rows x[index[i]] (a mini-batch X[index] of the training set) one after another into ``space`` (a
    flat array with a cache line to spare), from its first element on a cache line, and returns that element's
    number (-1, copying nothing, if a row number is out of range). Each row's loads start ``TAKE_AHEAD`` rows before
    it is copied: the rows lie at random places in memory, where the CPU's own prefetcher, which follows sequential
    streams, cannot guess the next."""
    n, k = index.shape[0], x.shape[1]
    for i in range(n):
        if index[i] < 0 or index[i] >= x.shape[0]:
            return -1
    line = 64 // x.itemsize                         # elements in a cache line
    skip = (-space.ctypes.data % 64) // x.itemsize
    out = space[skip:skip + n * k].reshape((n, k))
    for i in range(-TAKE_AHEAD, n):
        if i + TAKE_AHEAD < n:
            for c in range(0, k, line):
                _prefetch(x, index[i + TAKE_AHEAD], c)
        if i >= 0:
            src, dst = x[index[i]], out[i]
            for c in range(k):
                dst[c] = src[c]
    return skip


# -- fully connected layers: products with a small weight matrix (cpu.matmul) -----------------------------------
# OpenBLAS runs products as thin as a mini-batch by a 784x30 weight far below its peak; these loops keep a
# register tile of 5 neurons x 4 inputs (forward) or 5 neurons x 4 vectors of inputs (BP4) over the long axis,
# in the CPU's widest vectors (AVX-512's 32 registers; with AVX2's 16: 3 neurons x 4 inputs, 4 neurons x 3 vectors). Rows [start, stop) of the output: the threads share tiles, and each number is computed
# by the same loop whichever rows a call is given.
_jit_sum = njit(cache=True, nogil=True, fastmath={"reassoc", "contract"}, boundscheck=False, error_model="numpy")
_jit_fma = njit(cache=True, nogil=True, fastmath={"contract"}, boundscheck=False, error_model="numpy")


@njit(inline="always")     # (inlined into its callers, compiled with their flags: the sums in vector lanes)
def _dot_tile_5x4(a0, a1, a2, a3, a4, b0, b1, b2, b3, kk, zero):
    """The 20 dot products Σ_{k<kk} a_r[k] b_c[k] of 5 rows a by 4 rows b: a register tile in which each vector of a
    and of b is loaded once for 4 or 5 of them (20 vector sums and 9 loads a step: 29 of AVX-512's 32 registers), a
    row of the tile a line (linear_forward, conv_weight_grad)."""
    s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = s20 = s21 = zero
    s22 = s23 = s30 = s31 = s32 = s33 = s40 = s41 = s42 = s43 = zero
    for k in range(kk):
        u0, u1, u2, u3 = b0[k], b1[k], b2[k], b3[k]
        p0, p1, p2, p3, p4 = a0[k], a1[k], a2[k], a3[k], a4[k]
        s00, s01, s02, s03 = s00 + p0 * u0, s01 + p0 * u1, s02 + p0 * u2, s03 + p0 * u3
        s10, s11, s12, s13 = s10 + p1 * u0, s11 + p1 * u1, s12 + p1 * u2, s13 + p1 * u3
        s20, s21, s22, s23 = s20 + p2 * u0, s21 + p2 * u1, s22 + p2 * u2, s23 + p2 * u3
        s30, s31, s32, s33 = s30 + p3 * u0, s31 + p3 * u1, s32 + p3 * u2, s33 + p3 * u3
        s40, s41, s42, s43 = s40 + p4 * u0, s41 + p4 * u1, s42 + p4 * u2, s43 + p4 * u3
    return (s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33,
            s40, s41, s42, s43)


@intrinsic
def _vector_dot_tile_3x4(typingctx, w, x, j0, j1, j2, i0, i1, i2, i3, kk):
    """The 12 dot products Σ_{k<kk} w[j, k] x[i, k] of 3 rows of w by 4 rows of x, k in 256-bit vectors (AVX2's
    registers: 12 vector sums, 3 of w and one of x at a time, 16 registers), each sum's lanes then folded in halves;
    ``kk`` a multiple of the vector's numbers. Written as vectors because LLVM's vectoriser, given the same loop as
    scalars (as _dot_tile_5x4), interleaved it past 16 registers and spilled: Zen 3, 1 thread, 64x784 by 30 neurons,
    87 us as scalars 3 x 4, 82-92 us 5 x 4, 41-43 us so (OpenBLAS 64-71 us)."""
    def codegen(context, builder, sig, args):
        tw, tx = sig.args[:2]
        js = [context.cast(builder, a, t, types.intp) for a, t in zip(args[2:5], sig.args[2:5])]
        rows = [context.cast(builder, a, t, types.intp) for a, t in zip(args[5:9], sig.args[5:9])]
        kk_ = context.cast(builder, args[9], sig.args[9], types.intp)
        lanes = 256 // tw.dtype.bitwidth
        vector = ir.VectorType(context.get_data_type(tw.dtype), lanes)
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3),
                                             "llvm.fma.v%df%d" % (lanes, tw.dtype.bitwidth))
        sums = [[cgutils.alloca_once_value(builder, ir.Constant(vector, None)) for _ in rows] for _ in js]
        with cgutils.for_range(builder, builder.sdiv(kk_, ir.Constant(kk_.type, lanes))) as loop:
            k = builder.mul(loop.index, ir.Constant(kk_.type, lanes))
            ws = [builder.load(_row_vector(context, builder, tw, args[0], j, k, lanes), align=1) for j in js]
            for c, i in enumerate(rows):
                xv = builder.load(_row_vector(context, builder, tx, args[1], i, k, lanes), align=1)
                for r, wv in enumerate(ws):
                    builder.store(builder.call(fma, [wv, xv, builder.load(sums[r][c])]), sums[r][c])
        out = []
        for row in sums:
            for s in row:
                v, width = builder.load(s), lanes
                while width > 1:                                   # lanes [0, w/2) + lanes [w/2, w), until one
                    half = [ir.Constant(ir.VectorType(ir.IntType(32), width // 2), list(range(a, a + width // 2)))
                            for a in (0, width // 2)]
                    v = builder.fadd(*(builder.shuffle_vector(v, ir.Constant(v.type, ir.Undefined), h) for h in half))
                    width //= 2
                out.append(builder.extract_element(v, ir.Constant(ir.IntType(32), 0)))
        return context.make_tuple(builder, sig.return_type, out)
    return types.UniTuple(w.dtype, 12)(w, x, j0, j1, j2, i0, i1, i2, i3, kk), codegen


@_jit_sum
def linear_forward(x, w, b, z, neg_abs, start, stop):
    """z[i, j] = Σ_k x[i, k] w[j, k] + b[j] (z = x Wᵀ + b; no b when it is empty) for rows start ≤ i < stop, in
    register tiles of 5 neurons x 4 inputs (_dot_tile_5x4: 20 sums, each vector of w and of x loaded once for 4 or
    5 of them; 30 and 10 neurons are whole tiles, where 4 x 4 tiles left 4 x 2 ones: Zen 5, 1 thread, CPU time,
    64x784 by 30 neurons 16.0 -> 15.3 us, 64x30 by 10 2.51 -> 1.65); the sum over k in vector lanes (another order
    than BLAS's, as accurate), then b added, as NumPy adds it to the product; and -|z| into ``neg_abs`` unless it is
    empty (nn/fuse.py's Linear → Sigmoid: e^{-|z|} is NumPy's vectorised exp). On a CPU without AVX-512 (16
    registers) tiles of 3 neurons x 4 inputs instead (_vector_dot_tile_3x4), the last kk % 8 (float32) inputs of each
    sum added one by one. x's and w's rows have unit stride (cpu.linear_runs_loops: both row-major)."""
    n, kk = w.shape
    if VECTOR_BITS < 512 and kk >= VECTOR_TILE_MIN_INPUTS:   # AVX2: tiles of 4 inputs (outside: their rows stay in
                                                            # L1 while w passes) by 3 neurons
        k0 = kk - kk % (VECTOR_BITS // (8 * x.itemsize))     # (Zen 3, 256x784 by 30: 163 us, neurons outside 186-197)
        for i in range(start, stop, 4):
            i1, i2, i3 = min(i + 1, stop - 1), min(i + 2, stop - 1), min(i + 3, stop - 1)
            for j in range(0, n, 3):
                j1, j2 = min(j + 1, n - 1), min(j + 2, n - 1)
                s = _vector_dot_tile_3x4(w, x, j, j1, j2, i, i1, i2, i3, k0)     # s[4r + c]: neuron r, input c
                z[i, j], z[i1, j], z[i2, j], z[i3, j] = s[0], s[1], s[2], s[3]
                z[i, j1], z[i1, j1], z[i2, j1], z[i3, j1] = s[4], s[5], s[6], s[7]
                z[i, j2], z[i1, j2], z[i2, j2], z[i3, j2] = s[8], s[9], s[10], s[11]
        if k0 < kk or b.size > 0 or neg_abs.size > 0:      # then the last inputs, b and -|z|, a pass over z's rows
            for i in range(start, stop):                    # (in the tiles, 12 such loops cost 64x784 by 30 40 us)
                for j in range(n):
                    v = z[i, j]
                    for k in range(k0, kk):
                        v += x[i, k] * w[j, k]
                    if b.size > 0:
                        v += b[j]
                    z[i, j] = v
                    if neg_abs.size > 0:
                        neg_abs[i, j] = -abs(v)
        return
    bias, sigmoid = b.size > 0, neg_abs.size > 0
    zero = x.dtype.type(0)
    for j in range(0, n, 5):        # 5 neurons' rows of w stay in L1 while every input passes (inputs outside:
        j1, j2, j3, j4 = min(j + 1, n - 1), min(j + 2, n - 1), min(j + 3, n - 1), min(j + 4, n - 1)   # w's 94 KB from
        for i in range(start, stop, 4):     # L2 again for every 4 inputs; Zen 5, 64x784 by 30: 17.5 -> 15.8 us)
            i1, i2, i3 = min(i + 1, stop - 1), min(i + 2, stop - 1), min(i + 3, stop - 1)   # (a short last tile
            a0, a1, a2, a3 = x[i], x[i1], x[i2], x[i3]                                 #  repeats its last row or neuron)
            (s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23, s30, s31, s32, s33,   # s_rc: neuron r,
             s40, s41, s42, s43) = _dot_tile_5x4(w[j], w[j1], w[j2], w[j3], w[j4], a0, a1, a2, a3, kk, zero)  # input c
            if bias:
                c0, c1, c2, c3, c4 = b[j], b[j1], b[j2], b[j3], b[j4]
                s00, s01, s02, s03 = s00 + c0, s01 + c0, s02 + c0, s03 + c0
                s10, s11, s12, s13 = s10 + c1, s11 + c1, s12 + c1, s13 + c1
                s20, s21, s22, s23 = s20 + c2, s21 + c2, s22 + c2, s23 + c2
                s30, s31, s32, s33 = s30 + c3, s31 + c3, s32 + c3, s33 + c3
                s40, s41, s42, s43 = s40 + c4, s41 + c4, s42 + c4, s43 + c4
            z[i, j], z[i1, j], z[i2, j], z[i3, j] = s00, s01, s02, s03
            z[i, j1], z[i1, j1], z[i2, j1], z[i3, j1] = s10, s11, s12, s13
            z[i, j2], z[i1, j2], z[i2, j2], z[i3, j2] = s20, s21, s22, s23
            z[i, j3], z[i1, j3], z[i2, j3], z[i3, j3] = s30, s31, s32, s33
            z[i, j4], z[i1, j4], z[i2, j4], z[i3, j4] = s40, s41, s42, s43
            if sigmoid:
                e = neg_abs
                e[i, j], e[i1, j], e[i2, j], e[i3, j] = -abs(s00), -abs(s01), -abs(s02), -abs(s03)
                e[i, j1], e[i1, j1], e[i2, j1], e[i3, j1] = -abs(s10), -abs(s11), -abs(s12), -abs(s13)
                e[i, j2], e[i1, j2], e[i2, j2], e[i3, j2] = -abs(s20), -abs(s21), -abs(s22), -abs(s23)
                e[i, j3], e[i1, j3], e[i2, j3], e[i3, j3] = -abs(s30), -abs(s31), -abs(s32), -abs(s33)
                e[i, j4], e[i1, j4], e[i2, j4], e[i3, j4] = -abs(s40), -abs(s41), -abs(s42), -abs(s43)


def _row_vector(context, builder, array_type, array, i, k, lanes):
    """A pointer to the vector array[i, k:k + lanes] (of a 2-D array whose rows have unit stride)."""
    at = cgutils.get_item_pointer(context, builder, array_type, context.make_array(array_type)(context, builder, array),
                                  [i, k])
    return builder.bitcast(at, ir.VectorType(context.get_data_type(array_type.dtype), lanes).as_pointer())


def _weight_grad_tile_of(vectors, fresh=False, masked=False, rows=5, bits=512):
    """linear_weight_grad's register tile: ``rows`` rows of W.grad by ``vectors`` vectors of ``bits`` bits, in
    registers while every example is added. With AVX-512 (32 registers of 512 bits): 5 rows x 4 vectors (20 sums,
    4 vectors of x and one δ broadcast at a time: 25 registers). With AVX2 (16 of 256 bits): 4 rows x 3 vectors (12
    sums, 3 of x, one δ: 16; 5 x 4 there ran as two 256-bit halves of each and spilled: Zen 3, 1 thread, 64x784 by
    30 rows, 108 us against BLAS's 58; 4 x 3 47-50, 5 x 2 54-55, 6 x 2 53-56, 3 x 4 81-86).
    The loops over k written as scalars keep W.grad's rows in memory: for each pass of examples they load and store
    every vector of the rows, and 8 examples' δ of 4 neurons (32 broadcasts) outgrow the registers and spill. The
    same fused multiply-adds in the same order (example by example), so the same numbers bit for bit. Zen 5, 1
    thread, CPU time, 64x784 by 30 rows (fit's first layer at m=64): 20.4 -> 12.5 us, the core's FMA peak 12.0.
    ``fresh``: the sums start at +0 instead of W.grad's numbers (W.grad = δᵀ x, with no zero_grad before it: the
    numbers of a zeroed W.grad, which holds +0, bit for bit). ``masked``: one vector whose first ``count`` lanes are
    a row's last numbers, by masked loads and stores (nothing past the row is read or written): fit's
    second layer, 64x30 by 10 rows, float32 (16 numbers a vector, then 14), 1.92 -> 0.82 us with its last 14 by
    loops over k (Zen 5, 1 thread)."""
    @intrinsic
    def tile(typingctx, g, d, x, j0, j1, j2, j3, j4, k, m, count):
        """g[j, k:k + w] += Σ_{i<m} d[i, j] x[i, k:k + w] for the first ``rows`` of the rows j = j0 … j4 (a row
        twice: the same sum stored twice), w = ``vectors`` x ``bits`` bits of numbers (``count`` numbers where
        masked), the examples i added in order, one fused multiply-add each."""
        def codegen(context, builder, sig, args):
            tg, td, tx = sig.args[:3]
            g_, d_, x_ = args[0], args[1], args[2]
            js = [context.cast(builder, a, t, types.intp) for a, t in zip(args[3:8], sig.args[3:8])][:rows]
            k_, m_, n_ = (context.cast(builder, a, t, types.intp) for a, t in zip(args[8:], sig.args[8:]))
            lanes = bits // tg.dtype.bitwidth
            vector = ir.VectorType(context.get_data_type(tg.dtype), lanes)
            name = "v%d%s" % (lanes, "f32" if tg.dtype.bitwidth == 32 else "f64")
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector, [vector] * 3),
                                                 "llvm.fma." + name)
            if masked:                                            # lanes [0, count) of each vector
                mask = builder.icmp_unsigned("<", ir.Constant(ir.VectorType(n_.type, lanes), list(range(lanes))),
                                             _splat(builder, n_, lanes))
                one, flags = ir.Constant(ir.IntType(32), 1), ir.VectorType(ir.IntType(1), lanes)
                masked_load = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(vector, [vector.as_pointer(), one.type, flags, vector]),
                    "llvm.masked.load.%s.p0%s" % (name, name))
                masked_store = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(ir.VoidType(), [vector, vector.as_pointer(), one.type, flags]),
                    "llvm.masked.store.%s.p0%s" % (name, name))

            def load(at):
                return (builder.call(masked_load, [at, one, mask, ir.Constant(vector, None)]) if masked else
                        builder.load(at, align=1))

            def store(value, at):
                if masked:
                    builder.call(masked_store, [value, at, one, mask])
                else:
                    builder.store(value, at, align=1)
            cols = [builder.add(k_, ir.Constant(k_.type, v * lanes)) for v in range(vectors)]
            sums = [[cgutils.alloca_once(builder, vector) for _ in cols] for _ in js]    # (registers, after mem2reg)
            for j, row in zip(js, sums):
                for c, s in zip(cols, row):
                    builder.store(ir.Constant(vector, None) if fresh else         # (None: zeroinitializer, +0)
                                  load(_row_vector(context, builder, tg, g_, j, c, lanes)), s)
            dd = context.make_array(td)(context, builder, d_)
            with cgutils.for_range(builder, m_) as loop:
                i = loop.index
                xs = [load(_row_vector(context, builder, tx, x_, i, c, lanes)) for c in cols]
                for j, row in zip(js, sums):
                    delta = _splat(builder, builder.load(cgutils.get_item_pointer(context, builder, td, dd, [i, j])),
                                   lanes)
                    for xv, s in zip(xs, row):
                        builder.store(builder.call(fma, [delta, xv, builder.load(s)]), s)   # s + δ x, one rounding
            for j, row in zip(js, sums):
                for c, s in zip(cols, row):
                    store(builder.load(s), _row_vector(context, builder, tg, g_, j, c, lanes))
            return context.get_dummy_value()
        return types.void(g, d, x, j0, j1, j2, j3, j4, k, m, count), codegen
    return tile


# linear_weight_grad's tiles for this CPU (numba compiles for its own vectors): rows a tile, vectors a block (then
# one at a time, then a masked tail). The CPU's own features, not cpu.host_avx512 (which tests set to other CPUs').
VECTOR_BITS, TILE_ROWS, BLOCK_VECTORS = (512, 5, 4) if host_cpu_features().get("avx512f") else (256, 4, 3)
VECTOR_TILE_MIN_INPUTS = 256    # linear_forward's 3 x 4 vector tiles (AVX2) for rows this long at least: shorter rows'
                                # last inputs and folded lanes cost more than the tile gains (Zen 3, 1 thread, us, tiles
                                # against BLAS: 100->10 m=64 11.7 vs 10.4, 30->10 12.8 vs 8.2; 784->30 43 vs 80)
_weight_grad_tile_block, _weight_grad_tile_1 = (_weight_grad_tile_of(BLOCK_VECTORS, False, False, TILE_ROWS, VECTOR_BITS),
                                                _weight_grad_tile_of(1, False, False, TILE_ROWS, VECTOR_BITS))
_weight_grad_tile_block_fresh, _weight_grad_tile_1_fresh = (
    _weight_grad_tile_of(BLOCK_VECTORS, True, False, TILE_ROWS, VECTOR_BITS),
    _weight_grad_tile_of(1, True, False, TILE_ROWS, VECTOR_BITS))
_weight_grad_tile_tail, _weight_grad_tile_tail_fresh = (_weight_grad_tile_of(1, False, True, TILE_ROWS, VECTOR_BITS),
                                                        _weight_grad_tile_of(1, True, True, TILE_ROWS, VECTOR_BITS))


@_jit_fma
def linear_weight_grad(d, x, g, gb, start, stop, fresh=False):
    """g[j, k] += Σ_i d[i, j] x[i, k] (∂C/∂W += δᵀ a) for rows start ≤ j < stop, the examples i added in order
    (one fused multiply-add each, as BLAS's inner loop); and gb[j] += Σ_i d[i, j] (∂C/∂b += Σ δ, the examples
    added in order, as NumPy's sum over the first axis) unless gb is empty. Every whole vector (VECTOR_BITS) of a row by
    register tiles (_weight_grad_tile_of) where x's and g's rows have unit stride, a row's last numbers by a masked
    one; else by loops over k that keep g's rows in memory: the same numbers either way. ``fresh``: g and gb's rows
    as if they held +0 first (= instead of +=, zero_grad's work done here: train.SigmoidNetStep, whose gradients are
    all written so)."""
    m, kk = x.shape
    zero = g.dtype.type(0)
    if gb.size > 0:
        for j in range(start, stop):
            s = d[0, j]
            for i in range(1, m):
                s += d[i, j]
            gb[j] = (zero if fresh else gb[j]) + s
    lanes = VECTOR_BITS // (8 * x.itemsize)                     # numbers in a vector
    if x.strides[1] == x.itemsize and g.strides[1] == g.itemsize:
        k0 = kk - kk % lanes                                    # whole vectors; then [k0, kk) masked
        k = 0
        while k < kk:
            block = BLOCK_VECTORS * lanes                       # blocks of vectors, then the last few one by one
            step = block if k + block <= k0 else lanes
            for j in range(start, stop, TILE_ROWS):             # (a short last tile repeats its last row)
                j1, j2, j3, j4 = min(j + 1, stop - 1), min(j + 2, stop - 1), min(j + 3, stop - 1), min(j + 4, stop - 1)
                if k >= k0 and fresh:
                    _weight_grad_tile_tail_fresh(g, d, x, j, j1, j2, j3, j4, k, m, kk - k0)
                elif k >= k0:
                    _weight_grad_tile_tail(g, d, x, j, j1, j2, j3, j4, k, m, kk - k0)
                elif step > lanes and fresh:
                    _weight_grad_tile_block_fresh(g, d, x, j, j1, j2, j3, j4, k, m, lanes)
                elif step > lanes:
                    _weight_grad_tile_block(g, d, x, j, j1, j2, j3, j4, k, m, lanes)
                elif fresh:
                    _weight_grad_tile_1_fresh(g, d, x, j, j1, j2, j3, j4, k, m, lanes)
                else:
                    _weight_grad_tile_1(g, d, x, j, j1, j2, j3, j4, k, m, lanes)
            k += step
        return
    k0 = 0                                                      # (strided rows: every column by the loops below)
    if fresh:
        for j in range(start, stop):
            for k in range(kk):
                g[j, k] = zero
    for j in range(start, stop, 4):
        if j + 4 > stop:                                        # the last 1-3 rows: two, then one
            if j + 2 <= stop:
                r0, r1 = g[j], g[j + 1]
                i = 0
                while i + 4 <= m:
                    xa, xb, xc, xd = x[i], x[i + 1], x[i + 2], x[i + 3]
                    a0, b0, c0, e0 = d[i, j], d[i + 1, j], d[i + 2, j], d[i + 3, j]
                    a1, b1, c1, e1 = d[i, j + 1], d[i + 1, j + 1], d[i + 2, j + 1], d[i + 3, j + 1]
                    for k in range(k0, kk):
                        p, q, u, v = xa[k], xb[k], xc[k], xd[k]
                        r0[k] = (((r0[k] + a0 * p) + b0 * q) + c0 * u) + e0 * v
                        r1[k] = (((r1[k] + a1 * p) + b1 * q) + c1 * u) + e1 * v
                    i += 4
                while i < m:
                    xa, a0, a1 = x[i], d[i, j], d[i, j + 1]
                    for k in range(k0, kk):
                        p = xa[k]
                        r0[k] += a0 * p
                        r1[k] += a1 * p
                    i += 1
                j += 2
            if j < stop:
                row = g[j]
                for i in range(m):
                    di, xi = d[i, j], x[i]
                    for k in range(k0, kk):
                        row[k] += di * xi[k]
            break
        r0, r1, r2, r3 = g[j], g[j + 1], g[j + 2], g[j + 3]
        i = 0
        while i + 8 <= m:     # 8 examples a pass: each vector of the 4 rows of W.grad read and written once for 8 of
            x0, x1, x2, x3, x4, x5, x6, x7 = x[i], x[i + 1], x[i + 2], x[i + 3], x[i + 4], x[i + 5], x[i + 6], x[i + 7]
            # the δ of neuron j (a), j+1 (b), j+2 (c), j+3 (e), numbered by example (Zen 5, 1 thread: 64x784 by 28
            # rows 16.0 -> 14.2 us against 4 examples a pass; the same sums in the same order)
            a0, a1, a2, a3, a4, a5, a6, a7 = (d[i, j], d[i + 1, j], d[i + 2, j], d[i + 3, j], d[i + 4, j], d[i + 5, j],
                                              d[i + 6, j], d[i + 7, j])
            b0, b1, b2, b3, b4, b5, b6, b7 = (d[i, j + 1], d[i + 1, j + 1], d[i + 2, j + 1], d[i + 3, j + 1],
                                              d[i + 4, j + 1], d[i + 5, j + 1], d[i + 6, j + 1], d[i + 7, j + 1])
            c0, c1, c2, c3, c4, c5, c6, c7 = (d[i, j + 2], d[i + 1, j + 2], d[i + 2, j + 2], d[i + 3, j + 2],
                                              d[i + 4, j + 2], d[i + 5, j + 2], d[i + 6, j + 2], d[i + 7, j + 2])
            e0, e1, e2, e3, e4, e5, e6, e7 = (d[i, j + 3], d[i + 1, j + 3], d[i + 2, j + 3], d[i + 3, j + 3],
                                              d[i + 4, j + 3], d[i + 5, j + 3], d[i + 6, j + 3], d[i + 7, j + 3])
            for k in range(k0, kk):
                p0, p1, p2, p3, p4, p5, p6, p7 = x0[k], x1[k], x2[k], x3[k], x4[k], x5[k], x6[k], x7[k]
                r0[k] = (((((((r0[k] + a0 * p0) + a1 * p1) + a2 * p2) + a3 * p3) + a4 * p4) + a5 * p5) + a6 * p6) + a7 * p7
                r1[k] = (((((((r1[k] + b0 * p0) + b1 * p1) + b2 * p2) + b3 * p3) + b4 * p4) + b5 * p5) + b6 * p6) + b7 * p7
                r2[k] = (((((((r2[k] + c0 * p0) + c1 * p1) + c2 * p2) + c3 * p3) + c4 * p4) + c5 * p5) + c6 * p6) + c7 * p7
                r3[k] = (((((((r3[k] + e0 * p0) + e1 * p1) + e2 * p2) + e3 * p3) + e4 * p4) + e5 * p5) + e6 * p6) + e7 * p7
            i += 8
        while i + 4 <= m:     # 4 examples (below: xa-xd, and the δ of example i (a), i+1 (b), ... numbered by neuron)
            xa, xb, xc, xd = x[i], x[i + 1], x[i + 2], x[i + 3]
            a0, a1, a2, a3 = d[i, j], d[i, j + 1], d[i, j + 2], d[i, j + 3]
            b0, b1, b2, b3 = d[i + 1, j], d[i + 1, j + 1], d[i + 1, j + 2], d[i + 1, j + 3]
            c0, c1, c2, c3 = d[i + 2, j], d[i + 2, j + 1], d[i + 2, j + 2], d[i + 2, j + 3]
            e0, e1, e2, e3 = d[i + 3, j], d[i + 3, j + 1], d[i + 3, j + 2], d[i + 3, j + 3]
            for k in range(k0, kk):
                p, q, u, v = xa[k], xb[k], xc[k], xd[k]
                r0[k] = (((r0[k] + a0 * p) + b0 * q) + c0 * u) + e0 * v
                r1[k] = (((r1[k] + a1 * p) + b1 * q) + c1 * u) + e1 * v
                r2[k] = (((r2[k] + a2 * p) + b2 * q) + c2 * u) + e2 * v
                r3[k] = (((r3[k] + a3 * p) + b3 * q) + c3 * u) + e3 * v
            i += 4
        while i < m:
            xa = x[i]
            a0, a1, a2, a3 = d[i, j], d[i, j + 1], d[i, j + 2], d[i, j + 3]
            for k in range(k0, kk):
                p = xa[k]
                r0[k] += a0 * p
                r1[k] += a1 * p
                r2[k] += a2 * p
                r3[k] += a3 * p
            i += 1


@_jit_fma
def linear_input_grad(d, w, out):
    """out[i, k] = Σ_j d[i, j] w[j, k] (∂C/∂a = δ W), the neurons j added in order (one fused multiply-add each)."""
    m, n = d.shape
    kk = w.shape[1]
    for i in range(m):
        row, di = out[i], d[i]
        first, w0 = di[0], w[0]
        for k in range(kk):
            row[k] = first * w0[k]
        for j in range(1, n):
            dij, wj = di[j], w[j]
            for k in range(kk):
                row[k] += dij * wj[k]


# -- convolution's ∂C/∂W for a small kernel (cpu.conv2d_backward) ------------------------------------------------
@_jit_sum
def conv_weight_grad(cols, g, c0, out, gb):
    """out[r, o] = Σ_k cols[r, k] g[o, c0 + k]: (∂C/∂W)ᵀ = X Δᵀ for a chunk of images whose δ are the columns
    c0, c0 + 1, … of g (out, N·H_out·W_out) and whose receptive fields are the columns of cols (C·kh·kw, K);
    and gb[o] = Σ_k g[o, c0 + k] (∂C/∂b = Σ δ).
    Each output is a dot product over the long axis K, in register tiles of 5 fields x 4 maps, summed in vector
    lanes as ``linear_forward``; g is whole, so that its row pieces are contiguous to the compiler (a slice of g
    was strided: no vectors). OpenBLAS runs this 25 x 20 product over K = 9,216 (rung 3's first conv) at ~20% of
    its peak; this loop takes ~1/3 of its time. (The rows stream from L3: a chunk's 1.6 MB is more than a core's
    L2. 5 x 4 tiles fit 25 x 20 exactly and read 225 rows a chunk where 4 x 4 tiles read 280, 3 of each 4 rows of
    the last field tile a repeat: rung 3's 16 chunks of 16 images, alone, 1.55 -> 1.39 ms, load ~4.)
    On a CPU without AVX-512 (16 registers, where the 5 x 4 tile spills) the product is Linear's forward, z = x Wᵀ
    with x = g's columns and W = cols (z = outᵀ), whose tiles there are 3 fields x 4 maps of 256-bit vectors
    (_vector_dot_tile_3x4): Zen 3, 1 thread, 25 x 20 over K = 16 x 576 (a chunk of rung 1's first conv), alternating
    medians of 15, 198-202 -> 163-166 us."""
    rr, kk = cols.shape
    oo = out.shape[1]
    zero = cols.dtype.type(0)
    for o in range(oo):
        row, s = g[o, c0:c0 + kk], zero
        for k in range(kk):
            s += row[k]
        gb[o] = s
    if VECTOR_BITS < 512 and kk >= VECTOR_TILE_MIN_INPUTS:    # (linear_forward's vector tiles; its other tiles are
        linear_forward(g[:, c0:c0 + kk], cols, gb[:0], out.T,   #  the 5 x 4 below, which read g's row pieces whole)
                       np.empty((0, 0), out.dtype), 0, oo)     # (∂C/∂W)ᵀ = X Δᵀ: outᵀ = Δ Xᵀ
        return
    for r in range(0, rr, 5):
        r1, r2, r3, r4 = min(r + 1, rr - 1), min(r + 2, rr - 1), min(r + 3, rr - 1), min(r + 4, rr - 1)   # (a short
        a0, a1, a2, a3, a4 = cols[r], cols[r1], cols[r2], cols[r3], cols[r4]      # last tile repeats its last row,
        for o in range(0, oo, 4):                                                 # or map)
            o1, o2, o3 = min(o + 1, oo - 1), min(o + 2, oo - 1), min(o + 3, oo - 1)
            b0, b1, b2, b3 = g[o, c0:c0 + kk], g[o1, c0:c0 + kk], g[o2, c0:c0 + kk], g[o3, c0:c0 + kk]
            (s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23,
             s30, s31, s32, s33, s40, s41, s42, s43) = _dot_tile_5x4(a0, a1, a2, a3, a4, b0, b1, b2, b3, kk, zero)
            out[r, o], out[r, o1], out[r, o2], out[r, o3] = s00, s01, s02, s03
            out[r1, o], out[r1, o1], out[r1, o2], out[r1, o3] = s10, s11, s12, s13
            out[r2, o], out[r2, o1], out[r2, o2], out[r2, o3] = s20, s21, s22, s23
            out[r3, o], out[r3, o1], out[r3, o2], out[r3, o3] = s30, s31, s32, s33
            out[r4, o], out[r4, o1], out[r4, o2], out[r4, o3] = s40, s41, s42, s43


@_jit_sum
def sum_of_squares(a):
    """Σ_i a_i² of a flat array, in its precision, the sum in vector lanes (a NaN or ±∞ reaches it: train.check_inputs's
    screen of a training set; Zen 5, 1 thread, 5,000x784 float32 in cache: 130-164 us against 191-212 by NumPy's
    dot(a, a))."""
    s = a.dtype.type(0)
    for i in range(a.size):
        s += a[i] * a[i]
    return s


# -- costs, row by row (the mini-batch is small: one thread) --------------------------------------------------
@_jit
def loglikelihood(z, labels, delta):
    """Softmax outputs with the log-likelihood cost: per row, log softmax(z)_j = z_j - m - ln Σ_k e^{z_k - m}
    (m = max z), C_x = -log softmax(z)_y; delta = (softmax(z) - onehot(y)) / n. Returns (Σ_x C_x, -1), or (0, i)
    for the first row i whose label is not in 0..K-1."""
    n, k = z.shape
    count = z.dtype.type(n)
    total = 0.0
    for i in range(n):
        y = labels[i]
        if y < 0 or y >= k:
            return 0.0, i
        m = z[i, 0]
        for j in range(1, k):
            if not z[i, j] <= m:                 # (a NaN becomes m: it propagates, as NumPy's max)
                m = z[i, j]
        s = z.dtype.type(0)
        for j in range(k):
            s += np.exp(z[i, j] - m)
        lse = np.log(s)
        for j in range(k):
            p = np.exp((z[i, j] - m) - lse)
            delta[i, j] = (p - 1 if j == y else p) / count
        total -= (z[i, y] - m) - lse
    return total, -1


# e^x inside a compiled pass: NumPy's exp is a call of its own (its vectorised loop and ~0.5 us of call at
# [784,30,10]'s 64x10 outputs); this one is written out so that the compiler vectorises the loop that calls it.
_LOG2E = 1.4426950408889634
_LN2_HI, _LN2_LO = 0.693359375, -2.1219444005469058e-4   # ln 2 = hi + lo, hi with 9 bits: n·hi is exact for |n| < 2^44


@njit(inline="always")     # (inlined into its callers, compiled with their flags)
def _exp_neg(x):
    """e^x for a float64 x ≤ 0, within an ulp of the exact value: x = n ln 2 + r (|r| ≤ ln 2 / 2, n an integer),
    e^x = 2^n e^r, e^r by its Taylor series to r^13 (the rest below 5e-18 of it), 2^n written as the float's exponent
    bits. 0 below -708 (where e^x < 2^-1021), NaN for NaN."""
    xs = x if x >= -708.0 else -708.0
    n = np.floor(xs * _LOG2E + 0.5)
    r = (xs - n * _LN2_HI) - n * _LN2_LO
    p = 1.0 / 6227020800.0                   # 1/13!, then Horner: p = 1/k! + r p for k = 12 .. 0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    e = p * np.int64((np.int64(n) + 1023) << 52).view(np.float64)
    return e if x >= -708.0 else (0.0 if x < -708.0 else x)


@_jit_fma
def crossentropy(z, labels, delta):
    """Sigmoid outputs with the cross-entropy cost: C_x = Σ_j softplus(z_j) - z_y, softplus(z) = max(z, 0) + ln(1 + e)
    with e = e^{-|z|}, summed as Σ_j max(z_j, 0) - z_y = Σ_j max(±z_j, 0) (minus at j = y) and Σ ln(1 + e) = ln Π (1 + e):
    every term ≥ 0, nothing cancels, and one log1p of Π - 1 (q ← q + e + q e, all in float64) instead of one a number;
    delta = (σ(z) - onehot(y)) / n, σ from e as ``sigmoid``. e by ``_exp_neg`` in one vectorised pass (kept in delta
    until σ replaces it, in z's precision). Returns (Σ_x C_x, -1, right), or (0, i, 0) for the first row i whose label
    is not in 0..K-1; right counts the rows whose largest z is at the label, as ``correct`` (fit's train accuracy,
    counted on the way: one compiled call less a step)."""
    n, k = z.shape
    one, count = z.dtype.type(1), z.dtype.type(n)
    zf, ef = z.reshape(-1), delta.reshape(-1)
    for i in range(zf.size):                                  # e = e^{-|z|}
        ef[i] = _exp_neg(-abs(np.float64(zf[i])))
    total, tails, q, right = 0.0, 0.0, 0.0, 0
    for i in range(n):
        y = labels[i]
        if y < 0 or y >= k:
            return 0.0, i, 0
        for j in range(k):
            zj, ej = z[i, j], delta[i, j]
            total += max(-zj if j == y else zj, 0)
            q += ej + q * np.float64(ej)                     # q = Π (1 + e) - 1 over the numbers so far
            if q > 1e300:                                     # (taken before it could overflow)
                tails, q = tails + np.log1p(q), 0.0
            r = one / (one + ej)
            a = r if zj >= 0 else ej * r
            delta[i, j] = (a - one if j == y else a) / count
        right += _argmax(z[i]) == y
    return total + (tails + np.log1p(q)), -1, right


@_jit
def _argmax(row):
    """argmax_j row[j] as NumPy's: the first maximum, and the first NaN counts as the maximum."""
    best, at = row[0], 0
    if best == best:                         # (no NaN yet)
        for j in range(1, len(row)):
            v = row[j]
            if v != v:
                return j
            if v > best:
                best, at = v, j
    return at


@_jit
def correct(out, labels):
    """Σ_i [argmax_j out[i, j] = labels[i]] (the first maximum, and a NaN counts as the maximum, as NumPy's argmax)."""
    count = 0
    for i in range(out.shape[0]):
        count += _argmax(out[i]) == labels[i]
    return count


# -- optimiser updates on the flat parameter buffer --------------------------------------------------------
@_jit
def sgd(w, g, v, lr, momentum, decay, n_decayed):
    """v ← μv - η(∇C + λ'w), w ← w + v (λ' on the first ``n_decayed`` entries: the weights); μ = 0 and no v:
    w ← (1 - ηλ') w - η ∇C. In w's precision, as optim.SGD's NumPy lines compute it (NumPy rounds the Python numbers
    η, μ, ηλ', 1 - ηλ' to w's dtype): the same numbers, and float32 in vector lanes twice as wide as float64's
    ([784,30,10]'s 23,872 parameters, Zen 5: 2.27 -> 1.24 us)."""
    t = w.dtype.type
    lr_, mu, lr_decay, keep = t(lr), t(momentum), t(lr * decay), t(1.0 - lr * decay)
    nd = n_decayed if decay != 0.0 else 0
    if v.size == 0:
        for i in range(w.size):
            wi = w[i] * keep if i < nd else w[i]
            w[i] = wi - lr_ * g[i]
    else:
        for i in range(w.size):
            vi = v[i] * mu - lr_ * g[i]
            if i < nd:
                vi -= lr_decay * w[i]
            v[i] = vi
            w[i] += vi


@_jit
def sgd_pytorch(w, g, v, lr, momentum, decay, n_decayed):
    """PyTorch's momentum: v ← μv + (∇C + λ'w), w ← w - ηv (λ' on the first ``n_decayed`` entries), in w's
    precision (as :func:`sgd`)."""
    t = w.dtype.type
    lr_, mu, decay_ = t(lr), t(momentum), t(decay)
    nd = n_decayed if decay != 0.0 else 0
    for i in range(w.size):
        gi = g[i] + decay_ * w[i] if i < nd else g[i]
        vi = v[i] * mu + gi
        v[i] = vi
        w[i] -= lr_ * vi


@_jit
def adam(w, g, m, v, lr_c1, b1, b2, c2, eps, decay, n_decayed):
    """m ← β₁m + (1-β₁)g, v ← β₂v + (1-β₂)g², w ← w - (η/c₁) m/(√(v/c₂) + ε), g = ∇C + λ'w on the weights."""
    for i in range(w.size):
        gi = g[i] + decay * w[i] if i < n_decayed and decay != 0.0 else g[i]
        m[i] = m[i] * b1 + (1 - b1) * gi
        v[i] = v[i] * b2 + (1 - b2) * gi * gi
        w[i] -= lr_c1 * m[i] / (math.sqrt(v[i] / c2) + eps)


# -- recurrent cells (nn/recurrent.py): the elementwise part of one time step, row by row of the batch ----------
# Each computes, in one call, the lines of the cell's NumPy reference between the recurrent GEMM and the tanh
# passes (NumPy's tanh is vectorised; numba's is a scalar libm call, ~80x slower, so tanh stays in NumPy), with
# the same operands in the same order: the results equal the reference's to the last bit. Every inner loop
# stores to one array (so that the compiler vectorises it); a gate's block of a row is a slice of H numbers.
@_jit
def lstm_cell_forward(a, c_prev, c):
    """LSTM forward, after a = tanh of the scaled pre-activations [a_i/2, a_f/2, a_g, a_o/2] (N, 4H):
    i, f, o = (1 + a)/2 in place (σ(u) = (1 + tanh(u/2))/2), then c_t = f ⊙ c_{t-1} + i ⊙ g into ``c``."""
    half = a.dtype.type(0.5)
    n_, h_ = c.shape
    for n in range(n_):
        row, cp, cn = a[n], c_prev[n], c[n]
        i, f, g, o = row[:h_], row[h_:2 * h_], row[2 * h_:3 * h_], row[3 * h_:]
        for j in range(h_):
            i[j] = i[j] * half + half
        for j in range(h_):
            f[j] = f[j] * half + half
        for j in range(h_):
            o[j] = o[j] * half + half
        for j in range(h_):
            cn[j] = f[j] * cp[j] + i[j] * g[j]


@_jit
def lstm_cell_backward(gh, carry, add_carry, a, c_prev, tc, dc, da):
    """LSTM backward through one step. gh (N, H): the gradient from above, turned into ∂C/∂h_t = gh + carry
    (carry = W^T ∂C/∂a_{t+1}, added when ``add_carry``); a: [i, f, g, o]; tc = tanh c_t; dc (N, H): ∂C/∂c_{t+1}
    ⊙ f_{t+1} in, ∂C/∂c_t ⊙ f_t out; da (N, 4H): ∂C/∂a_t = [∂C/∂c_t g i(1-i), ∂C/∂c_t c_{t-1} f(1-f),
    ∂C/∂c_t i(1-g²), ∂C/∂h_t tanh c_t o(1-o)] with ∂C/∂c_t = ∂C/∂h_t o(1 - tanh² c_t) + dc.
    (Indexed rows and a scratch row for ∂C/∂c_t: faster here than slices, ~1.5x.)"""
    one = a.dtype.type(1)
    n_, h_ = gh.shape
    dct = np.empty(h_, gh.dtype)
    for n in range(n_):
        r, d, dh, cr, cp, t, dcn = a[n], da[n], gh[n], carry[n], c_prev[n], tc[n], dc[n]
        if add_carry:
            for j in range(h_):
                dh[j] = dh[j] + cr[j]                                              # ∂C/∂h_t
        for j in range(h_):
            dct[j] = dh[j] * (r[3 * h_ + j] * (one - t[j] * t[j])) + dcn[j]        # ∂C/∂c_t
        for j in range(h_):
            i = r[j]
            d[j] = (r[2 * h_ + j] * (i * (one - i))) * dct[j]                      # ∂C/∂a_i
        for j in range(h_):
            f = r[h_ + j]
            d[h_ + j] = (cp[j] * (f * (one - f))) * dct[j]                         # ∂C/∂a_f
        for j in range(h_):
            g = r[2 * h_ + j]
            d[2 * h_ + j] = (r[j] * (one - g * g)) * dct[j]                        # ∂C/∂a_g
        for j in range(h_):
            o = r[3 * h_ + j]
            d[3 * h_ + j] = (t[j] * (o * (one - o))) * dh[j]                       # ∂C/∂a_o
        for j in range(h_):
            dcn[j] = dct[j] * r[h_ + j]                                            # ∂C/∂c_t ⊙ f_t


@_jit
def gru_cell_gates(gi, gh, bh, has_bias, rz):
    """GRU forward, after gh = (W h_{t-1}) ⊙ s (N, 3H): gh += b_h ⊙ s (when ``has_bias``), then the scaled
    pre-activations of r and z, rz = gi[:, :2H] + gh[:, :2H], ready for tanh."""
    n_, h2 = rz.shape
    h3 = gh.shape[1]
    for n in range(n_):
        gr, ir, out = gh[n], gi[n], rz[n]
        if has_bias:
            for j in range(h3):
                gr[j] = gr[j] + bh[j]
        for j in range(h2):
            out[j] = ir[j] + gr[j]


@_jit
def gru_cell_candidate(rz, gh, gi, nn_):
    """GRU forward, after rz = tanh of the scaled pre-activations: r, z = (1 + rz)/2 in place, then the
    candidate's pre-activation nn_ = r ⊙ m_t + U_n x_t + b_in (m_t = gh[:, 2H:]), ready for tanh."""
    half = rz.dtype.type(0.5)
    n_, h_ = nn_.shape
    for n in range(n_):
        row, m, xn, out = rz[n], gh[n, 2 * h_:], gi[n, 2 * h_:], nn_[n]
        for j in range(2 * h_):
            row[j] = row[j] * half + half
        for j in range(h_):
            out[j] = row[j] * m[j] + xn[j]


@_jit
def gru_cell_state(h_prev, nn_, rz, h):
    """GRU forward: h_t = n_t + z_t ⊙ (h_{t-1} - n_t)."""
    n_, h_ = h.shape
    for n in range(n_):
        hp, nv, z, out = h_prev[n], nn_[n], rz[n, h_:], h[n]
        for j in range(h_):
            out[j] = (hp[j] - nv[j]) * z[j] + nv[j]


@_jit
def gru_cell_backward(gh, carry, dh_next, z_next, add_carry, rz, nn_, ghs, h_prev, di, dhid):
    """GRU backward through one step. gh (N, H): the gradient from above, turned into ∂C/∂h_t = gh + (carry +
    ∂C/∂h_{t+1} ⊙ z_{t+1}) (added when ``add_carry``; carry = W^T (hidden side)_{t+1}, z_next = [r, z]_{t+1});
    rz = [r, z], nn_ = n_t, ghs (N, 3H) as in forward (its last block m_t = W_n h_{t-1} + b_hn); out:
    di = [∂C/∂a_r, ∂C/∂a_z, ∂C/∂a_n] with ∂C/∂a_n = ∂C/∂h_t (1-z)(1-n²), ∂C/∂a_z = ∂C/∂h_t (h_{t-1} - n) z(1-z),
    ∂C/∂a_r = ∂C/∂a_n m r(1-r); dhid = [∂C/∂a_r, ∂C/∂a_z, ∂C/∂a_n ⊙ r]."""
    one = gh.dtype.type(1)
    n_, h_ = gh.shape
    for n in range(n_):
        dh, cr, dn, zn = gh[n], carry[n], dh_next[n], z_next[n, h_:]
        r, z, nv, m, hp = rz[n, :h_], rz[n, h_:], nn_[n], ghs[n, 2 * h_:], h_prev[n]
        dr, dz, dnn = di[n, :h_], di[n, h_:2 * h_], di[n, 2 * h_:]
        if add_carry:
            for j in range(h_):
                dh[j] = dh[j] + (cr[j] + dn[j] * zn[j])                  # ∂C/∂h_t
        for j in range(h_):
            dnn[j] = dh[j] * ((one - z[j]) * (one - nv[j] * nv[j]))
        for j in range(h_):
            dz[j] = dh[j] * (((hp[j] - nv[j]) * z[j]) * (one - z[j]))
        for j in range(h_):
            dr[j] = dnn[j] * ((m[j] * r[j]) * (one - r[j]))
        out = dhid[n]
        for j in range(2 * h_):
            out[j] = di[n, j]
        for j in range(h_):
            out[2 * h_ + j] = dnn[j] * r[j]
