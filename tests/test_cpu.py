"""deepscope.cpu: every fast path equals the layer's own NumPy expression (run under ``cpu.reference()``), at
one thread and sharded over several (thresholds lowered so that even small arrays are split), for both
memory layouts a layer meets (N-major input, channel-major conv outputs) and both dtypes."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import deepscope as ds
from deepscope import cpu, nn, optim
from deepscope.cli.main import build_parser, main

pytestmark = pytest.mark.skipif(cpu.kernels() is None, reason="numba is not installed")


@pytest.fixture(params=[1, 3], ids=["1thread", "3threads"])
def threads(request, monkeypatch):
    """Run at 1 thread, and at 3 with every size threshold at its minimum (so the shards are tiny and uneven)."""
    was = cpu.get_num_threads()
    cpu.set_num_threads(request.param)
    if request.param > 1:
        monkeypatch.setattr(cpu, "ELEMENTS_PER_SHARD", 1)
        monkeypatch.setattr(cpu, "DROPOUT_ELEMENTS_PER_SHARD", 1)
        monkeypatch.setattr(cpu, "MACS_PER_SHARD", 1)
        monkeypatch.setattr(cpu, "COLUMN_BYTES_PER_CHUNK", 1)
        monkeypatch.setattr(cpu, "COLUMN_BYTES_PER_CHUNK_MAX", 1)
    yield request.param
    cpu.set_num_threads(was)


def _close(dtype):
    return dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=2e-6)


def _layout(a, channel_major):
    """``a`` (N, C, H, W) stored channel-major (as deepscope's conv outputs are) or N-major."""
    if not channel_major:
        return np.ascontiguousarray(a)
    return np.ascontiguousarray(a.transpose(1, 0, 2, 3)).transpose(1, 0, 2, 3)


def _both(layer, x, g):
    """(output, ∂C/∂x, parameter gradients) from the reference path and from the fast path, and the δ both got."""
    results, grad = [], None
    for ctx in (cpu.reference, _nothing):
        with ctx():
            for p in layer.parameters():
                p.grad[...] = 0
            y = layer(x)
            grad = _layout(g(y.shape), True) if grad is None else grad     # the same δ for both paths
            dx = layer.backward(grad)
            results.append((y.copy(), None if dx is None else dx.copy(), [p.grad.copy() for p in layer.parameters()]))
    return results[0], results[1], grad


def _magnitudes(layer, x, grad):
    """(output, ∂C/∂x, parameter gradients) of a bilinear layer computed from |w|, |b|, |x| and |δ| in float64 (its
    reference path): Σ|terms| of each sum the layer forms. Two summation orders of a sum agree to a few roundings
    of that, not of the sum itself, which cancellation can make far smaller than its terms."""
    absolute = copy.deepcopy(layer).to(np.float64)
    for p in absolute.parameters():
        p.data[...] = np.abs(p.data)
        p.grad[...] = 0
    with cpu.reference():
        y = absolute(np.abs(x).astype(np.float64))
        dx = absolute.backward(np.abs(grad).astype(np.float64))
    return y, dx, [p.grad for p in absolute.parameters()]


def _sums_close(actual, desired, magnitude, dtype):
    """``_close(dtype)``, plus 8 roundings of the sum's Σ|terms| (``magnitude``) where the terms cancel."""
    close = _close(dtype)
    tolerance = close["atol"] + 8 * np.finfo(dtype).eps * magnitude + close["rtol"] * np.abs(desired)
    error = np.abs(actual.astype(np.float64) - desired)
    worst = np.unravel_index(np.argmax(error - tolerance), error.shape)
    assert (error <= tolerance).all(), (f"{int((error > tolerance).sum())} of {error.size} differ; at {worst}: "
                                        f"{actual[worst]} vs {desired[worst]}, Σ|terms| {magnitude[worst]}")


def _assert_gradients_close(grads, dx, ref_grads, ref_dx, dtype, input_grad):
    """The parameter gradients and ∂C/∂x (None both, without ``input_grad``) of a fast path against the reference's."""
    for a, b in zip(grads, ref_grads):
        np.testing.assert_allclose(a, b, **_close(dtype))
    if input_grad:
        np.testing.assert_allclose(dx, ref_dx, **_close(dtype))
    else:
        assert ref_dx is None and dx is None


class _nothing:
    def __enter__(self):
        pass

    def __exit__(self, *exc):
        pass


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, n_in, n_out, bias", [(64, 784, 30, True), (10, 300, 7, False), (5, 257, 1, True),
                                                  (3, 40, 2, True), (64, 2880, 100, True), (64, 2880, 100, False)])
@pytest.mark.parametrize("input_grad", [True, False])
def test_linear_sigmoid_as_one_pass_equals_reference(threads, monkeypatch, dtype, m, n_in, n_out, bias, input_grad):
    """Linear → Sigmoid of a Sequential, run as one pass (nn/fuse.py's LinearSigmoid: the loops, or BLAS's two
    partial sums by halves of the inputs (2880 -> 100 at m=64) and the pass that adds them, write -|z|, then
    NumPy's exp and the σ kernel), against the layers' NumPy expressions (``cpu.reference()``) and against the two
    layers' own fast paths (``cpu.FUSE_LINEAR_SIGMOID = 0``): the same outputs and gradients, bit for bit; also with
    NaN, ±∞ and outputs far in both tails of σ."""
    monkeypatch.setattr(cpu, "_loops_win", True)         # the loops where they beat BLAS, whatever this machine
    monkeypatch.setattr(cpu, "_avx512_host", True)
    ds.manual_seed(0)
    net = nn.Sequential(nn.Linear(n_in, n_out, bias=bias), nn.Sigmoid(), nn.Linear(n_out, 3)).to(dtype)
    net.needs_input_grad = input_grad
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((m, n_in)) * 3).astype(dtype)
    x[0, 0], x[-1, 1] = np.nan, np.inf                   # a NaN row and a row of ±∞ (or NaN) outputs
    g = rng.standard_normal((m, 3)).astype(dtype)
    (y0, dx0, g0, fused0), (y1, dx1, g1, fused1), (y2, dx2, g2, fused2) = _three_ways(net, x, g, "FUSE_LINEAR_SIGMOID",
                                                                                    "LinearSigmoid")
    assert (fused0, fused1, fused2) == (False, True, False)
    np.testing.assert_array_equal(y1, y2)
    for a, b in zip(g1 + [dx1], g2 + [dx2]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(y1, y0, **_close(dtype))
    with np.errstate(invalid="ignore"):
        _assert_gradients_close(g1, dx1, g0, dx0, dtype, input_grad)
    assert np.isnan(y1[0]).all() and not np.isnan(y1[1:-1]).any()


def test_linear_sigmoid_runs_layer_by_layer_under_a_hook_or_for_other_inputs(threads):
    """A hook on either layer, a 3-D input, another dtype or a Sigmoid whose input needs no gradient: the two layers
    run one by one (and say what is wrong with a bad input, as Linear does)."""
    ds.manual_seed(0)
    net = nn.Sequential(nn.Linear(300, 8), nn.Sigmoid())
    x = np.random.default_rng(5).standard_normal((6, 300)).astype(np.float32)
    y = net(x)
    assert type(net._passes[0]).__name__ == "LinearSigmoid"
    handle = net[1].register_forward_hook(lambda m, inputs, out: None)
    np.testing.assert_array_equal(net(x), y)
    assert net._passes[0] is net[0]
    handle.remove()
    np.testing.assert_array_equal(net(x.reshape(2, 3, 300)).reshape(6, 8), y)
    assert net._passes[0] is net[0]
    np.testing.assert_allclose(net(x.astype(np.float64)), y, rtol=1e-6)
    assert net._passes[0] is net[0]
    net[1].needs_input_grad = False
    net(x)
    assert net._passes[0] is net[0]
    with pytest.raises(ds.errors.ShapeError, match="Linear"):
        net(x[:, :299])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channel_major", [False, True])
@pytest.mark.parametrize("kernel,stride,padding,bias", [(3, 1, 0, True), ((3, 2), (1, 2), (0, 1), False),
                                                        (2, 2, 2, True)])
@pytest.mark.parametrize("input_grad", [True, False])
@pytest.mark.parametrize("weight_grad", ["loops", "blas"])
def test_conv2d_fast_path_equals_reference(threads, monkeypatch, dtype, channel_major, kernel, stride, padding, bias,
                                           input_grad, weight_grad):
    """∂C/∂W by the compiled dot products (conv_weight_grad, a small kernel) and by BLAS (a larger one)."""
    monkeypatch.setattr(cpu, "CONV_WEIGHT_GRAD_LOOPS_MAX", 1 << 20 if weight_grad == "loops" else 0)
    ds.manual_seed(0)
    conv = nn.Conv2d(3, 4, kernel, stride=stride, padding=padding, bias=bias).to(dtype)
    conv.needs_input_grad = input_grad
    rng = np.random.default_rng(1)
    x = _layout(rng.standard_normal((5, 3, 9, 8)).astype(dtype), channel_major)
    (y0, dx0, g0), (y1, dx1, g1), delta = _both(conv, x, lambda s: rng.standard_normal(s).astype(dtype))
    y_mag, dx_mag, g_mag = _magnitudes(conv, x, delta)
    _sums_close(y1, y0, y_mag, dtype)
    for a, b, mag in zip(g1, g0, g_mag):
        _sums_close(a, b, mag, dtype)
    if input_grad:
        _sums_close(dx1, dx0, dx_mag, dtype)
    else:
        assert dx0 is None and dx1 is None


def _three_ways(net, x, g, flag, run):
    """(output, ∂C/∂x, parameter gradients, whether the first pass was a ``run``) of ``net`` on ``x`` and ``g``: by
    the NumPy expressions, by the fast paths with the run of nn/fuse.py switched on by ``cpu.<flag>``, and off."""
    results = []
    for ctx, fuse in ((cpu.reference, 1), (_nothing, 1), (_nothing, 0)):
        with ctx():
            was = getattr(cpu, flag)
            setattr(cpu, flag, fuse)
            try:
                net.zero_grad()
                y = net(x)
                dx = net.backward(g)
                fused = type(net._passes[0]).__name__ == run if net._passes else False
            finally:
                setattr(cpu, flag, was)
        results.append((y.copy(), None if dx is None else dx.copy(), [p.grad.copy() for p in net.parameters()], fused))
    return results


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("neuron", [nn.Sigmoid, nn.ReLU])
@pytest.mark.parametrize("channel_major", [False, True])
@pytest.mark.parametrize("kernel,stride,padding,bias,size", [(3, 1, 0, True, (10, 9)), ((3, 2), (1, 2), (0, 1), False, (9, 10)),
                                                             (5, 1, 0, True, (12, 12))])
@pytest.mark.parametrize("input_grad", [True, False])
def test_conv_pool_neuron_as_one_pass_equals_reference(threads, dtype, neuron, channel_major, kernel, stride, padding,
                                                       bias, size, input_grad):
    """Conv2d → MaxPool2d(2) → σ/ReLU of a Sequential, run as one pass (nn/fuse.py), against the three layers' NumPy
    expressions (``cpu.reference()``), also on odd conv outputs (a last row or column in no window) and with many
    ties (small integers); and against the three layers' own fast paths: the same outputs, bit for bit."""
    ds.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, kernel, stride=stride, padding=padding, bias=bias), nn.MaxPool2d(2), neuron(),
                        nn.Flatten()).to(dtype)
    net.needs_input_grad = input_grad
    rng = np.random.default_rng(1)
    x = _layout(rng.integers(-2, 3, (5, 3) + size).astype(dtype), channel_major)
    with cpu.reference():
        y = net(x)
    g = rng.standard_normal(y.shape).astype(dtype)
    (y0, dx0, g0, fused0), (y1, dx1, g1, fused1), (y2, _, _, fused2) = _three_ways(net, x, g, "FUSE_CONV_POOL", "ConvPool")
    assert (fused0, fused1, fused2) == (False, True, False)
    np.testing.assert_allclose(y1, y0, **_close(dtype))
    np.testing.assert_array_equal(y1, y2)
    _assert_gradients_close(g1, dx1, g0, dx0, dtype, input_grad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("neuron", [nn.Sigmoid, nn.ReLU])
def test_conv_pool_forward_with_rows_one_image_longer_equals_reference(threads, monkeypatch, dtype, neuron):
    """ALIASED_ROW_BYTES at one number: every chunk's X and W X get a spare image of room (cpu._spare), which must
    change nothing: the same outputs and gradients as without it, bit for bit, and as the NumPy reference."""
    ds.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), neuron(), nn.Flatten()).to(dtype)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 3, 10, 9)).astype(dtype)
    g = rng.standard_normal((6, 4 * 4 * 3)).astype(dtype)
    results = []
    for ctx, row_bytes in ((cpu.reference, 0), (_nothing, 0), (_nothing, np.dtype(dtype).itemsize)):
        monkeypatch.setattr(cpu, "ALIASED_ROW_BYTES", row_bytes)
        assert cpu._spare(5, 8, 7, np.dtype(dtype).itemsize) == (row_bytes > 0)
        with ctx():
            net.zero_grad()
            y = net(x)
            dx = net.backward(g)
        results.append((y.copy(), dx.copy(), [p.grad.copy() for p in net.parameters()]))
    (y0, dx0, g0), (y1, dx1, g1), (y2, dx2, g2) = results
    np.testing.assert_allclose(y2, y0, **_close(dtype))
    _assert_gradients_close(g2, dx2, g0, dx0, dtype, True)
    np.testing.assert_array_equal(y2, y1)
    np.testing.assert_array_equal(dx2, dx1)
    for a, b in zip(g2, g1):
        np.testing.assert_array_equal(a, b)


def test_blas_gemm_is_numpys_own_openblas():
    """Where NumPy's wheel brings its scipy-openblas64 (in numpy.libs), blas_gemm finds its sgemm and dgemm: the one-call
    ConvPool path is not silently off on such an install; other dtypes get 0."""
    libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    wheel = any(os.path.dirname(i.get("filepath") or "") == libs for i in cpu._blas_libraries())
    assert (cpu.blas_gemm(np.float32) != 0) == wheel and (cpu.blas_gemm(np.float64) != 0) == wheel
    assert cpu.blas_gemm(np.int64) == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("m,n,k,spare", [(20, 576, 25, 0), (20, 9216, 25, 576), (7, 13, 5, 3), (1, 1, 1, 0)])
def test_gemm_from_compiled_code_equals_numpy_matmul(dtype, ta, tb, m, n, k, spare):
    """_kernels._gemm (NumPy's own cblas_?gemm called from compiled code) against numpy.matmul on the same operands,
    also with rows longer than the data (a spare image's room, as cpu._spare) and transposed operands: the same call,
    so the same numbers bit for bit."""
    gemm = cpu.blas_gemm(dtype)
    if not gemm:
        pytest.skip("NumPy's BLAS is not a scipy-openblas64 in numpy.libs")
    from numba import njit      # (as deepscope.cpu: numba only where a fast path runs)
    inline = cpu.kernels()._gemm
    call = njit(lambda fn, a, ta_, b, tb_, c: inline(fn, a, ta_, b, tb_, c))
    rng = np.random.default_rng(5)
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k + spare) if tb else (k, n + spare)).astype(dtype)
    b = b[:, :k] if tb else b[:, :n]
    c = np.full((m, n + spare), 7, dtype)
    call(gemm, a, ta, b, tb, c[:, :n])
    np.testing.assert_array_equal(c[:, :n], np.matmul(a.T if ta else a, b.T if tb else b))
    assert (c[:, n:] == 7).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pairwise_sum_equals_numpy_sum(dtype):
    """_kernels._pairwise_sum (+ 0, NumPy's identity) against NumPy's sum of each row: bit for bit, on every length up to
    300 and longer rows (the halving above 128), numbers over six decades, -0.0 rows (NumPy's sum gives +0.0)."""
    rng = np.random.default_rng(8)
    k = cpu.kernels()
    for n in list(range(300)) + [511, 512, 513, 1000, 4096, 9216, 36865]:
        d = (rng.standard_normal((2, n)) * 10.0 ** rng.uniform(-3, 3, (2, n))).astype(dtype)
        d[1] = -0.0 if n % 3 == 0 else d[1]
        got = np.array([dtype(0) + k._pairwise_sum(row, 0, n) for row in d], dtype)
        np.testing.assert_array_equal(got, d.sum(axis=1))
        assert (np.signbit(got) == np.signbit(d.sum(axis=1))).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("neuron", [nn.Sigmoid, nn.ReLU])
@pytest.mark.parametrize("channel_major", [False, True])
@pytest.mark.parametrize("kernel,stride,padding,size", [(3, 1, 0, (10, 9)), ((3, 2), (1, 2), (0, 1), (9, 10)),
                                                        (5, 1, 2, (12, 12))])
@pytest.mark.parametrize("input_grad", [True, False])
@pytest.mark.parametrize("weight_grad", ["loops", "blas"])
def test_conv_pool_as_one_compiled_call_equals_the_calls_from_python(threads, monkeypatch, dtype, neuron, channel_major,
                                                                     kernel, stride, padding, size, input_grad,
                                                                     weight_grad):
    """A ConvPool shard's chunks as one compiled call (CONV_POOL_ONE_CALL: im2col, BLAS's gemm, pooling and neuron in
    _kernels.conv_pool_chunks; the backward in conv_pool_chunks_backward, ∂C/∂W by the loops or BLAS) against the same
    steps called one by one from Python: the same outputs, ∂C/∂x and parameter gradients, bit for bit. Chunks of one
    image each, with rows one image longer (ALIASED_ROW_BYTES at one number), so that every chunk boundary and spare
    is crossed."""
    if not cpu.blas_gemm(dtype):
        pytest.skip("NumPy's BLAS is not a scipy-openblas64 in numpy.libs")
    monkeypatch.setattr(cpu, "COLUMN_BYTES_PER_CHUNK", 1)
    monkeypatch.setattr(cpu, "COLUMN_BYTES_PER_CHUNK_MAX", 1)
    monkeypatch.setattr(cpu, "MACS_PER_SHARD", 1)
    monkeypatch.setattr(cpu, "ALIASED_ROW_BYTES", np.dtype(dtype).itemsize)
    monkeypatch.setattr(cpu, "CONV_WEIGHT_GRAD_LOOPS_MAX", 1 << 20 if weight_grad == "loops" else 0)
    ds.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, kernel, stride=stride, padding=padding), nn.MaxPool2d(2), neuron(),
                        nn.Flatten()).to(dtype)
    net.needs_input_grad = input_grad
    rng = np.random.default_rng(4)
    x = _layout(rng.standard_normal((6, 3) + size).astype(dtype), channel_major)
    with cpu.reference():
        g = rng.standard_normal(net(x).shape).astype(dtype)
    _, (y1, dx1, g1, fused1), (y0, dx0, g0, fused0) = _three_ways(net, x, g, "CONV_POOL_ONE_CALL", "ConvPool")
    assert fused1 and fused0
    np.testing.assert_array_equal(y1, y0)
    assert (dx1 is None) == (dx0 is None) == (not input_grad)
    if input_grad:
        np.testing.assert_array_equal(dx1, dx0)
    for a, b in zip(g1, g0):
        np.testing.assert_array_equal(a, b)


def test_conv_pool_neuron_runs_layer_by_layer_under_a_hook_and_propagates_nan(threads):
    """An instrument's hook sees every layer's output, so the layers then run one by one; NaN goes through the
    one-pass max as through MaxPool2d's."""
    ds.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.ReLU())
    x = np.random.default_rng(2).standard_normal((3, 1, 8, 8)).astype(np.float32)
    x[1, 0, 4, 4] = np.nan
    y = net(x)
    assert type(net._passes[0]).__name__ == "ConvPool"
    seen = []
    handle = net[1].register_forward_hook(lambda m, inputs, out: seen.append(out.shape))
    y_hooked = net(x)
    handle.remove()
    assert seen == [(3, 2, 3, 3)] and net._passes[0] is net[0]
    np.testing.assert_array_equal(y, y_hooked)
    assert np.isnan(y[1]).any() and not np.isnan(y[[0, 2]]).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channel_major", [False, True])
@pytest.mark.parametrize("kernel,stride,padding", [((5, 5), (1, 1), (0, 0)), ((3, 2), (1, 2), (0, 1)), ((2, 2), (2, 2), (2, 2)),
                                                   ((3, 1), (1, 1), (0, 0)), ((5, 5), (1, 1), (1, 2))])   # rows of 8
@pytest.mark.parametrize("strided", [False, True])
def test_im2col_kernel_copies_every_receptive_field_exactly(dtype, channel_major, kernel, stride, padding, strided):
    """cpu._columns (the compiled copy) against the NumPy copy of the strided view of x̃ it replaced; output rows of 8
    (the kernel's one-vector copies) included, and an x whose rows are not contiguous (every other number)."""
    x = _layout(np.random.default_rng(13).standard_normal((5, 3, 9, 16 if strided else 8)).astype(dtype), channel_major)
    x = x[..., ::2] if strided else x
    xc = x.transpose(1, 0, 2, 3)
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xpad = np.pad(xc[:, 1:4], ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    c, n, h, w = xpad.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    s_c, s_n, s_h, s_w = xpad.strides
    expect = np.lib.stride_tricks.as_strided(xpad, (c, kh, kw, n, ho, wo), (s_c, s_h, s_w, s_n, s_h * sh, s_w * sw))
    np.testing.assert_array_equal(cpu._columns(xc, kh, kw, stride, padding, 1, 4), expect)
    spared = cpu._columns(xc, kh, kw, stride, padding, 1, 4, spare=1)       # room for one image more, left unwritten
    assert spared.shape == expect.shape[:3] + (4,) + expect.shape[4:]
    np.testing.assert_array_equal(spared[:, :, :, :3], expect)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sigmoid", [False, True])
@pytest.mark.parametrize("size", [(8, 6), (9, 7), (8, 8), (4, 24), (5, 27)])   # rows of 3, 4, 12 (8 + 4), 13 windows
@pytest.mark.parametrize("strided", [False, True])
def test_pool_neuron_backward_kernel_equals_the_numpy_scatter(dtype, sigmoid, size, strided):
    """pool_neuron_backward against NumPy: δ = ∂C/∂a ⊙ σ'(m) put at each window's maximum (arg), 0 everywhere else
    (a last odd row and column included; δ starts as NaN, so an element left unwritten fails); ∂C/∂a and a also as
    every other number of their rows (the kernel's one-by-one path)."""
    rng = np.random.default_rng(23)
    n, c, (h, w) = 3, 4, size
    shape = (n, c, h // 2, w // 2)
    g = rng.standard_normal(shape).astype(dtype)
    a = rng.random(shape).astype(dtype) if sigmoid else np.maximum(rng.standard_normal(shape), 0).astype(dtype)
    arg = rng.integers(0, 4, shape).astype(np.int8)
    v = g * a * (1 - a) if sigmoid else g * (a > 0)
    expect = np.zeros((n, c, h, w), dtype)
    i, ch, j, k = np.indices(shape)
    expect[i, ch, 2 * j + arg // 2, 2 * k + arg % 2] = v
    got = np.full((c, n, h, w), np.nan, dtype)
    if strided:
        g, a = np.repeat(g, 2, axis=3)[..., ::2], np.repeat(a, 2, axis=3)[..., ::2]
    cpu.kernels().pool_neuron_backward(g, a, arg, sigmoid, got)
    np.testing.assert_allclose(got, expect.transpose(1, 0, 2, 3), rtol=4 * np.finfo(dtype).eps, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("relu,bias", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("size", [(6, 7), (8, 8), (4, 24), (5, 27), (2, 16)])   # rows of 3, 4, 12 (8 + 4), 13, 8 windows
def test_conv_pool_forward_kernel_equals_the_numpy_max(dtype, relu, bias, size):
    """conv_pool_forward against NumPy: m = max over each 2x2 window of z + b, arg = where its first maximum is (NumPy's
    argmax of the window's four numbers in row-major order), out = max(0, m) with ReLU or m with -|m| for the sigmoid;
    NaN in a window gives NaN (an odd last row and column belong to no window). z holds one image more than the chunk
    (a spare, as cpu._spare), which is not read."""
    rng = np.random.default_rng(29)
    c, n, (h, w) = 3, 4, size
    z = rng.standard_normal((c, n + 1, h, w)).astype(dtype)
    z[0, 1, 0, 0], z[1, 2, h - 2, 2 * (w // 2) - 1] = np.nan, np.nan
    z[1, 3, 0, w - 1] = np.nan if w % 2 else z[1, 3, 0, w - 1]  # in no window (an odd last column): no NaN out
    z[2, 0, :2, :4] = 1.5                                       # ties: the first of equal maxima
    b = rng.standard_normal(c).astype(dtype) if bias else np.empty(0, dtype)
    zb = z[:, :n] + (b[:, None, None, None] if bias else 0)
    hp, wp = h // 2, w // 2
    windows = zb[:, :, :2 * hp, :2 * wp].reshape(c, n, hp, 2, wp, 2).transpose(1, 0, 2, 4, 3, 5).reshape(n, c, hp, wp, 4)
    m = windows.max(axis=-1)
    expect_arg = np.nan_to_num(windows, nan=-np.inf).argmax(axis=-1)
    out, arg = np.full((n, c, hp, wp), 7, dtype), np.full((n, c, hp, wp), 9, np.int8)
    neg_abs = np.empty(0 if relu else out.shape, dtype).reshape((0, 0, 0, 0) if relu else out.shape)
    cpu.kernels().conv_pool_forward(z, b, out, arg, relu, neg_abs)
    np.testing.assert_array_equal(out, np.where(m > 0, m, m * 0) if relu else m)
    finite = ~np.isnan(m)
    np.testing.assert_array_equal(arg[finite], expect_arg[finite])
    assert np.isnan(m).sum() == 2
    if not relu:
        np.testing.assert_array_equal(neg_abs, -np.abs(m))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fields,maps", [(25, 20), (7, 5), (1, 1), (4, 9)])
@pytest.mark.parametrize("columns", [100, 302])     # (AVX2: 302 columns run the 3 x 4 vector tiles, 6 left over)
def test_conv_weight_grad_kernel_equals_the_numpy_products(dtype, fields, maps, columns):
    """conv_weight_grad on the columns 30:30+K of δ against X Δᵀ and Σ δ by NumPy (short last tiles included); in
    float32 as the loops of linear products are judged: each sum within 8 roundings of its Σ|terms| of the exact one,
    and on average as close to it as NumPy's product (the sums run in another order than NumPy's)."""
    rng = np.random.default_rng(19)
    cols = rng.standard_normal((fields, columns)).astype(dtype)
    g = rng.standard_normal((maps, columns + 70)).astype(dtype)
    dwt, db = np.empty((fields, maps), dtype), np.empty(maps, dtype)
    cpu.kernels().conv_weight_grad(cols, g, 30, dwt, db)
    gk = g[:, 30:30 + columns]
    np.testing.assert_allclose(db, gk.sum(axis=1), **_close(dtype))
    if dtype == np.float64:
        np.testing.assert_allclose(dwt, cols @ gk.T, **_close(dtype))
        return
    c64, g64 = cols.astype(np.float64), gk.astype(np.float64)
    exact, terms = c64 @ g64.T, np.abs(c64) @ np.abs(g64).T
    assert (np.abs(dwt - exact) <= 8 * np.finfo(dtype).eps * terms).all()
    if dwt.size >= 64:
        assert np.abs(dwt - exact).mean() <= 2 * np.abs(cols @ gk.T - exact).mean()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel,stride", [((5, 5), (1, 1)), ((3, 2), (1, 2)), ((2, 2), (2, 2)), ((1, 1), (3, 1)),
                                           ((3, 3), (1, 1))])                # rows of 8
@pytest.mark.parametrize("strided", [False, True])
def test_col2im_kernel_sets_every_image_to_the_numpy_loops_sum(dtype, kernel, stride, strided):
    """The compiled col2im on images 2:5 of ∂C/∂x̃ against conv.py's NumPy loop (each kernel offset's slice added
    into its strided window of zeros: the kernel sets those images, whatever they held, 0 where no column lands);
    the images outside the chunk stay untouched. Rows of 8 (the kernel's one-vector adds) included, and a ∂C/∂x̃
    whose rows are not contiguous (every other number)."""
    rng = np.random.default_rng(17)
    (kh, kw), (sh, sw) = kernel, stride
    c, n, h, w = 3, 7, 11, 10
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    dcols = rng.standard_normal((c, kh, kw, 3, ho, wo)).astype(dtype)
    start = rng.standard_normal((c, n, h, w)).astype(dtype)
    expect = start.copy()
    expect[:, 2:5] = 0
    for i in range(kh):
        for j in range(kw):
            expect[:, 2:5, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] += dcols[:, i, j]
    got = np.repeat(start, 2, axis=3)[..., ::2] if strided else start.copy()
    cpu.kernels().col2im(dcols, got, 2, sh, sw)
    np.testing.assert_allclose(got, expect, **_close(dtype))
    np.testing.assert_array_equal(got[:, :2], start[:, :2])
    np.testing.assert_array_equal(got[:, 5:], start[:, 5:])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("channel_major", [False, True])
@pytest.mark.parametrize("pool", [nn.MaxPool2d, nn.AvgPool2d, nn.L2Pool2d])
@pytest.mark.parametrize("kernel,stride", [(2, None), (3, 2), ((2, 3), (1, 2))])
@pytest.mark.parametrize("size", [(9, 10), (8, 7)])
def test_pooling_fast_paths_equal_reference(threads, dtype, channel_major, pool, kernel, stride, size):
    layer = pool(kernel, stride)
    rng = np.random.default_rng(2)
    x = rng.integers(-3, 4, (4, 3) + size).astype(dtype)        # small integers: many ties for max pooling
    x = _layout(x, channel_major)
    (y0, dx0, _), (y1, dx1, _), _ = _both(layer, x, lambda s: rng.standard_normal(s).astype(dtype))
    np.testing.assert_allclose(y1, y0, **_close(dtype))
    np.testing.assert_allclose(dx1, dx0, **_close(dtype))
    if pool is nn.MaxPool2d:                                     # the max and its routing are exact
        np.testing.assert_array_equal(y1, y0)
        if stride is None:                                       # (overlapping windows add in another order)
            np.testing.assert_array_equal(dx1, dx0)


@pytest.mark.parametrize("kernel,stride", [(2, 2), (3, 1)])
def test_maxpool_fast_path_propagates_nan(threads, kernel, stride):
    x = np.zeros((2, 2, 6, 6), np.float32)
    x[1, 0, 2, 3] = np.nan
    y = nn.MaxPool2d(kernel, stride)(x)
    with cpu.reference():
        ref = nn.MaxPool2d(kernel, stride)(x)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    assert np.isnan(y).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layer", [nn.Sigmoid, nn.Tanh, nn.ReLU, nn.Identity])
@pytest.mark.parametrize("channel_major", [False, True])
def test_activation_fast_paths_equal_reference(threads, monkeypatch, dtype, layer, channel_major):
    monkeypatch.setattr(cpu, "BACKWARD_NUMPY_BELOW", 0)          # the compiled backward passes, on a small input
    rng = np.random.default_rng(3)
    z = rng.standard_normal((6, 3, 5, 7)).astype(dtype) * 8
    z[0, 0, 0, :3] = [0, 200, -200]                              # the sigmoid's tails and ReLU's kink
    z = _layout(z, channel_major)
    (y0, dx0, _), (y1, dx1, _), _ = _both(layer(), z, lambda s: rng.standard_normal(s).astype(dtype))
    np.testing.assert_allclose(y1, y0, **_close(dtype))
    np.testing.assert_allclose(dx1, dx0, **_close(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_fast_path_gives_the_reference_numbers_exactly(threads, dtype):
    """NumPy's e^{-|z|}, then 1/(1+e) or e·1/(1+e) compiled: the same operations, so the same bits."""
    z = np.random.default_rng(9).standard_normal((7, 333)).astype(dtype) * 20
    z[0, :4] = [0, -0.0, 200, -200]
    fast = nn.Sigmoid()(z)
    with cpu.reference():
        ref = nn.Sigmoid()(z)
    np.testing.assert_array_equal(fast, ref)


def test_activation_with_mismatched_layouts_takes_the_reference_path(threads):
    """grad_output N-major while the cached activation is channel-major: still the right answer."""
    rng = np.random.default_rng(4)
    z = _layout(rng.standard_normal((4, 3, 5, 5)).astype(np.float32), True)
    g = np.ascontiguousarray(rng.standard_normal(z.shape).astype(np.float32))
    s = nn.Sigmoid()
    a = s(z)
    expect = g * a * (1 - a)
    np.testing.assert_allclose(s.backward(g), expect, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("channel_major", [False, True])
def test_flatten_hands_back_the_gradient_in_the_inputs_memory_order(channel_major):
    """So that the activation and pooling below a Flatten read δ in their own layout (the fast paths)."""
    rng = np.random.default_rng(12)
    x = _layout(rng.standard_normal((4, 3, 5, 5)).astype(np.float32), channel_major)
    g = rng.standard_normal((4, 75)).astype(np.float32)
    f = nn.Flatten()
    np.testing.assert_array_equal(f(x), x.reshape(4, 75))
    dx = f.backward(g)
    np.testing.assert_array_equal(dx, g.reshape(4, 3, 5, 5))
    assert dx.strides == x.strides


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale_at_test", [False, True])
def test_dropout_fast_path_draws_the_same_mask(threads, dtype, scale_at_test):
    x = np.random.default_rng(5).standard_normal((64, 300)).astype(dtype)
    g = np.random.default_rng(6).standard_normal((64, 300)).astype(dtype)
    outs = []
    for ctx in (cpu.reference, _nothing):
        with ctx():
            ds.manual_seed(7)
            d = nn.Dropout(0.3, scale_at_test=scale_at_test)
            outs.append((d(x), d.backward(g)))
    np.testing.assert_array_equal(outs[1][0], outs[0][0])
    np.testing.assert_array_equal(outs[1][1], outs[0][1])


@pytest.mark.parametrize("kept", [0, 1])
def test_pcg64_at_is_the_serial_stream_cut_by_position(kept):
    """A PCG64 moved to position k (cpu._pcg64_at) draws the serial stream's 32-bit numbers from the k-th on, with
    and without a kept high half in the state; the float32 uniforms dropout draws are made of them."""
    g = np.random.default_rng(21)
    g.random(kept, dtype=np.float32)                  # an odd count leaves a high half kept (has_uint32 = 1)
    assert g.bit_generator.state["has_uint32"] == kept
    state = g.bit_generator.state
    serial = g.random(41, dtype=np.float32)
    g.random(3)                                       # a 64-bit draw between: the kept half stays kept
    after = g.random(5, dtype=np.float32)
    spare = np.random.PCG64()
    for k in range(41):
        u = np.random.Generator(cpu._pcg64_at(state, k, spare)).random(41 - k, dtype=np.float32)
        np.testing.assert_array_equal(u, serial[k:])
    moved = np.random.Generator(cpu._pcg64_at(state, 41, np.random.PCG64()))
    moved.random(3)
    np.testing.assert_array_equal(moved.random(5, dtype=np.float32), after)


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (13, 101)])
@pytest.mark.parametrize("kept", [0, 1])
def test_dropout_draws_on_the_threads_the_serial_uniforms_and_leaves_the_generator_where_they_do(threads, shape, kept):
    """u drawn in shards (1 number a shard at 3 threads, uneven, odd starts) is the one serial draw: the mask
    [u >= p]/(1-p) and x ⊙ mask equal the NumPy expression, and the next draws of the generator are unchanged."""
    x = np.random.default_rng(22).standard_normal(shape).astype(np.float32)
    fast, ref = np.random.default_rng(23), np.random.default_rng(23)
    for g in (fast, ref):
        g.random(kept, dtype=np.float32)
    out, mask = cpu.dropout(x, fast, 0.3, 1 / 0.7)
    u = ref.random(shape, dtype=np.float32)
    expect = (u >= 0.3).astype(np.float32) * np.float32(1 / 0.7)
    np.testing.assert_array_equal(mask, expect)
    np.testing.assert_array_equal(out, x * expect)
    moved, drawn = fast.bit_generator.state, ref.bit_generator.state
    assert (moved["state"], moved["has_uint32"]) == (drawn["state"], drawn["has_uint32"])
    assert not drawn["has_uint32"] or moved["uinteger"] == drawn["uinteger"]   # (a used half stays in NumPy's state)
    np.testing.assert_array_equal(fast.random(9, dtype=np.float32), ref.random(9, dtype=np.float32))


@pytest.mark.parametrize("shape", [(1, 7, 3), (50, 40, 30), (300, 784, 100)])
def test_matmul_splits_rows_or_columns_and_equals_numpy(threads, shape):
    """a @ b in blocks: rows of a (a the larger operand) or columns of b (b @ a's transposes below)."""
    m, k, n = shape
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    np.testing.assert_allclose(cpu.matmul(a, b), a @ b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cpu.matmul(b.T, a.T), b.T @ a.T, rtol=1e-12, atol=1e-12)   # transposed views
    for x, y in ((a, b), (b.T, a.T)):                    # accumulating: add_to += x @ y, block by block
        acc = rng.standard_normal((x.shape[0], y.shape[1]))
        expect = acc + x @ y
        assert cpu.matmul(x, y, add_to=acc) is acc
        np.testing.assert_allclose(acc, expect, rtol=1e-12, atol=1e-12)
    a32, b32 = a.astype(np.float32), b.astype(np.float32)
    assert cpu.matmul(a32, b32).dtype == np.float32
    exact = a32.astype(np.float64) @ b32                 # float32: as close to the exact product as NumPy's own
    assert np.abs(cpu.matmul(a32, b32) - exact).max() <= 2 * np.abs(a32 @ b32 - exact).max() + 1e-6


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_adds_into_zeros_without_a_temporary_bit_for_bit(dtype):
    """add_to += a @ b where add_to is all +0.0 (W.grad after zero_grad; FC 784-100-10's δᵀx at m=64, one BLAS
    call): a @ b is written into add_to, then + 0, with no array the size of the product, and the bits are those of
    0 + (a @ b) (-0.0 products included); add_to holding -0.0 or another number, or overlapping an operand, adds
    a new product as before."""
    import tracemalloc
    rng = np.random.default_rng(10)
    d, x = rng.standard_normal((64, 100)).astype(dtype), rng.standard_normal((64, 784)).astype(dtype)
    x[:, :5] = 0                                   # columns of zero inputs: products of ±0.0 ...
    d[:, :3] = -np.abs(d[:, :3])                   # ... some of them -0.0 only
    x[:, 5] = -0.0
    d[0, 7], x[1, 9] = np.nan, np.inf
    for start in (0.0, -0.0, 1.5):
        acc = np.full((100, 784), start, dtype)
        expect = np.full((100, 784), start, dtype) + d.T @ x
        tracemalloc.start()
        assert cpu.matmul(d.T, x, add_to=acc) is acc
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert (peak < acc.nbytes // 10) == (start == 0.0 and np.signbit(start) == 0)      # no temporary, or one
        assert acc.tobytes() == expect.tobytes()
    assert cpu._holds_plus_zeros(np.zeros((8, 8), dtype), np.ones((8, 8), dtype).T, np.ones((8, 8), dtype))
    assert not cpu._holds_plus_zeros(np.zeros((8, 8), dtype).T[::2], np.ones((4, 8), dtype), np.ones((8, 8), dtype))
    both = np.zeros((8, 8), dtype)
    assert not cpu._holds_plus_zeros(both, both, np.ones((8, 8), dtype))           # add_to is an operand: a new product


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("input_grad", [True, False])
def test_linear_backward_runs_both_products_in_one_section_and_equals_numpy(threads, monkeypatch, dtype, bias,
                                                                          input_grad):
    """W.grad += δᵀ a, b.grad += Σ δ and δ W (rung 1's 2880->100 at m=64): the blocks of both products in one
    parallel section when there are several threads, the same numbers as NumPy's (exactly as cpu.matmul's)."""
    monkeypatch.setattr(cpu, "loops_beat_blas", lambda: False)          # BLAS blocks, whatever this machine
    rng = np.random.default_rng(9)
    d, x, w = (rng.standard_normal(s).astype(dtype) for s in ((64, 100), (64, 2880), (100, 2880)))
    w_grad, b_grad = rng.standard_normal((100, 2880)).astype(dtype), rng.standard_normal(100).astype(dtype)
    expect_w, expect_b = w_grad + d.T @ x, b_grad + d.sum(axis=0)
    expect_in = cpu.matmul(d, w)
    same_w = cpu.matmul(d.T, x, add_to=w_grad.copy())
    sections = []
    run = cpu._Pool.run
    monkeypatch.setattr(cpu._Pool, "run",
                        lambda pool, fn, shards, *rest: sections.append(len(shards)) or run(pool, fn, shards, *rest))
    out = cpu.linear_backward(d, x, w, w_grad, b_grad if bias else None, input_grad=input_grad)
    assert len(sections) == (0 if threads == 1 else 1)        # without ∂C/∂a: W.grad's blocks alone
    np.testing.assert_array_equal(w_grad, same_w)                     # the same blocks as matmul: the same numbers
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)   # sums of 64 / 100
    np.testing.assert_allclose(w_grad, expect_w, **tol)
    if bias:
        np.testing.assert_allclose(b_grad, expect_b, **tol)
    if input_grad:
        np.testing.assert_array_equal(out, expect_in)
        np.testing.assert_allclose(out, d @ w, **tol)
    else:
        assert out is None


def test_linear_backward_blocks_side_by_side_on_several_threads(threads):
    """Block i of W.grad's product beside block i of δ W's on several threads (each thread the same columns of
    both), one product after the other on one thread; unequal counts stay as they are."""
    g, i = ["g0", "g1"], ["i0", "i1"]
    assert cpu._paired(g, i) == (["g0", "g1", "i0", "i1"] if threads == 1 else ["g0", "i0", "g1", "i1"])
    assert cpu._paired(g, ["i0"]) == ["g0", "g1", "i0"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("m, n, k", [(64, 100, 2880), (33, 101, 2881)])
def test_linear_forward_by_inputs_equals_numpy(threads, monkeypatch, dtype, bias, m, n, k):
    """A weight with more inputs than neurons, larger than the input (rung 1's 2880->100 at m=64): x Wᵀ + b as the two
    partial sums over the input halves h = k // 2 that the backward's blocks also take, in one parallel section; the
    numbers of that NumPy expression (the same at 1 and 3 threads) and close to the whole product."""
    monkeypatch.setattr(cpu, "loops_beat_blas", lambda: False)          # BLAS, whatever this machine
    monkeypatch.setattr(cpu, "_avx512_blas", False)
    rng = np.random.default_rng(12)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((m, k), (n, k), (n,)))
    assert cpu._forward_by_inputs(x, w)
    h = k // 2
    expect = x[:, :h] @ w[:, :h].T + x[:, h:] @ w[:, h:].T
    if bias:
        expect += b
    sections = []
    run = cpu._Pool.run
    monkeypatch.setattr(cpu._Pool, "run",
                        lambda pool, fn, shards, *rest: sections.append(len(shards)) or run(pool, fn, shards, *rest))
    z = cpu.linear(x, w, b if bias else None)
    assert sections == ([] if threads == 1 else [2])
    np.testing.assert_array_equal(z, expect)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-3)   # sums of 2880
    np.testing.assert_allclose(z, x @ w.T + (b if bias else 0), **tol)
    assert not cpu._forward_by_inputs(x[:, :n], w[:, :n]) and not cpu._forward_by_inputs(np.tile(x, (4, 1)), w)
    monkeypatch.setattr(cpu, "FORWARD_BY_INPUTS", 0)
    assert not cpu._forward_by_inputs(x, w)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, n, k", [(64, 100, 2880), (33, 101, 2881)])
def test_linear_backward_by_columns_in_one_call_equals_the_numpy_blocks(threads, monkeypatch, dtype, m, n, k):
    """Rung 1's 2880->100 backward at m=64: both products cut by W's columns, each thread's block of the two as one
    compiled call (cpu.LINEAR_BACKWARD_ONE_CALL, NumPy's gemm called from it) against the NumPy calls of the same
    blocks (LINEAR_BACKWARD_ONE_CALL = 0): W.grad (accumulated onto what it held, -0.0 and NaN included), b.grad and
    ∂C/∂x bit for bit, at any thread count; and close to the whole products."""
    monkeypatch.setattr(cpu, "loops_beat_blas", lambda: False)          # BLAS, whatever this machine
    monkeypatch.setattr(cpu, "_avx512_blas", False)
    if not cpu.blas_gemm(np.dtype(dtype)):
        pytest.skip("NumPy's BLAS has no scipy_cblas gemm to call from compiled code")
    rng = np.random.default_rng(13)
    d, x, w = (rng.standard_normal(s).astype(dtype) for s in ((m, n), (m, k), (n, k)))
    g0, gb0 = rng.standard_normal((n, k)).astype(dtype), rng.standard_normal(n).astype(dtype)
    g0[0, :3] = [-0.0, np.nan, 0.0]
    assert cpu._backward_by_columns(d, x, w, g0)
    calls = []
    kernel = cpu.kernels().linear_backward_columns
    monkeypatch.setattr(cpu.kernels(), "linear_backward_columns", lambda *a: calls.append(a[-2:]) or kernel(*a))
    results = []
    for one_call in (1, 0):
        monkeypatch.setattr(cpu, "LINEAR_BACKWARD_ONE_CALL", one_call)
        g, gb = g0.copy(), gb0.copy()
        dx = cpu.linear_backward(d, x, w, g, gb)
        results.append((g, gb, dx))
    assert sorted(calls) == [(0, k // 2), (k // 2, k)]
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    g, gb, dx = results[0]
    assert np.signbit(g[0, 0]) == np.signbit(g0[0, 0] + (d.T @ x)[0, 0]) and np.isnan(g[0, 1])
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(dx, d @ w, **tol)
    np.testing.assert_allclose(g[1:], g0[1:] + d.T[1:] @ x, **tol)
    np.testing.assert_array_equal(gb, gb0 + d.sum(axis=0))
    assert not cpu._backward_by_columns(d, x[:, :n], w[:, :n], g0[:, :n])      # small: one block, or the loops


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("m, n, k", [(1, 1, 256), (7, 13, 257), (10, 30, 784), (64, 100, 640), (61, 9, 300),
                                     (6, 11, 300)])   # (W.grad's last rows: 1, 1, 2, 0, 1, 2 + 1)
def test_linear_products_with_a_small_weight_run_compiled_loops_and_equal_numpy(threads, monkeypatch, dtype, bias,
                                                                                 m, n, k):
    """x Wᵀ + b, and W.grad += δᵀ x with b.grad += Σ δ, by the loops of _kernels.linear_*: as close to the exact
    products as NumPy's own (the bias gradient the same numbers as NumPy's sum), and the same numbers however the
    threads share the rows (shards cut small here, to make many)."""
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((n, k)).astype(dtype)
    d, g0 = rng.standard_normal((m, n)).astype(dtype), rng.standard_normal((n, k)).astype(dtype)
    b, gb0 = (rng.standard_normal(n).astype(dtype) for _ in range(2))
    calls = []
    for name in ("linear_forward", "linear_weight_grad"):
        monkeypatch.setattr(cpu.kernels(), name, lambda *a, f=getattr(cpu.kernels(), name), name=name:
                            calls.append(name) or f(*a))
    monkeypatch.setattr(cpu, "MACS_PER_SHARD", 64)
    monkeypatch.setattr(cpu, "_loops_win", True)         # (wherever BLAS is faster, the loops must still be right)
    monkeypatch.setattr(cpu, "_avx512_host", True)
    z, g, gb = cpu.linear(x, w, b if bias else None), g0.copy(), gb0.copy()
    cpu.linear_backward(d, x, w, g, gb if bias else None, input_grad=False)
    assert set(calls) == {"linear_forward", "linear_weight_grad"} and z.dtype == g.dtype == dtype
    monkeypatch.undo()
    k_ = cpu.kernels()
    z1, g1, gb1, none = np.empty_like(z), g0.copy(), gb0.copy(), np.empty(0, dtype)
    k_.linear_forward(x, w, b if bias else none, z1, np.empty((0, 0), dtype), 0, m)   # one call, every row
    k_.linear_weight_grad(d, x, g1, gb1 if bias else none, 0, n)
    np.testing.assert_array_equal(z, z1)
    np.testing.assert_array_equal(g, g1)
    np.testing.assert_array_equal(gb, gb1)
    if bias:
        np.testing.assert_array_equal(gb, gb0 + d.sum(axis=0))      # ∂C/∂b: NumPy's sum, the same order
    else:
        np.testing.assert_array_equal(gb, gb0)
    b_ = b if bias else 0
    x64, w64, d64 = (a.astype(np.float64) for a in (x, w, d))
    exact_z, exact_g = x64 @ w64.T + b_, g0.astype(np.float64) + d64.T @ x64
    if dtype == np.float64:
        np.testing.assert_allclose(z, x @ w.T + b_, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(g, g0 + d.T @ x, rtol=1e-12, atol=1e-12)
    else:       # float32: each sum within 8 roundings of its Σ|terms| (another order than NumPy's), and on average
        terms_z = np.abs(x64) @ np.abs(w64).T + np.abs(b_)                      # as close to the exact one as NumPy's
        terms_g = np.abs(g0.astype(np.float64)) + np.abs(d64).T @ np.abs(x64)   # (one sum alone is luck: 1x1x256 on
        for got, numpys, exact, terms in ((z, x @ w.T + b_, exact_z, terms_z),  # Zen 3, 3.9e-6 against NumPy's 8e-8)
                                          (g, g0 + d.T @ x, exact_g, terms_g)):
            assert (np.abs(got - exact) <= 8 * np.finfo(dtype).eps * terms).all()
            if got.size >= 64:
                assert np.abs(got - exact).mean() <= 2 * np.abs(numpys - exact).mean()


def _linear_counting_loops(monkeypatch, x, w, b, d):
    """Linear's forward and backward (W.grad and b.grad from 0, no ∂C/∂x) by cpu's fast paths: (the loops' kernels
    called, in order, z, W.grad, b.grad)."""
    calls = []
    for name in ("linear_forward", "linear_weight_grad"):
        monkeypatch.setattr(cpu.kernels(), name, lambda *a, f=getattr(cpu.kernels(), name), name=name:
                            calls.append(name) or f(*a))
    z, g, gb = cpu.linear(x, w, b), np.zeros_like(w), np.zeros_like(b)
    cpu.linear_backward(d, x, w, g, gb, input_grad=False)
    return calls, z, g, gb


@pytest.mark.parametrize("loops_win, avx512_blas", [(True, False), (False, False), (False, True)])
@pytest.mark.parametrize("m, n, k, loops", [(64, 10, 30, True), (10, 10, 30, True), (100, 10, 32, True),
                                            (256, 10, 30, False), (64, 100, 784, None), (300, 30, 784, False),
                                            (65, 30, 784, "grads"), (10, 30, 784, "small"), (64, 30, 784, "both"),
                                            (64, 10, 100, "small"), (256, 10, 100, "small"), (64, 100, 10, False),
                                            (256, 30, 100, False)])
def test_linear_takes_the_loops_for_tiny_products_and_where_they_beat_blas(monkeypatch, loops_win, avx512_blas,
                                                                           m, n, k, loops):
    """A product of at most cpu.TINY_MACS multiply-adds runs the loops on any machine (a BLAS call and NumPy's bias
    add cost more); a few long rows by a small weight only where the loops beat BLAS (None: the forward product
    where OpenBLAS runs narrower kernels or its AVX-512 ones, the weight's gradient only under narrower kernels;
    "both": both products under either, the gradient's under AVX-512 up to cpu.GRAD_LOOPS_MACS multiply-adds);
    anything else, and every layer without the fast paths, by BLAS and NumPy; the sums either way within 8 roundings
    of their Σ|terms| of the exact ones (one sum's error, loops against NumPy's, is luck: see the accuracy test above)."""
    monkeypatch.setattr(cpu, "_loops_win", loops_win)
    monkeypatch.setattr(cpu, "_avx512_host", True)
    monkeypatch.setattr(cpu, "_avx512_blas", avx512_blas)
    rng = np.random.default_rng(12)
    x, w, b, d = (rng.standard_normal(s).astype(np.float32) for s in ((m, k), (n, k), (n,), (m, n)))
    calls, z, g, gb = _linear_counting_loops(monkeypatch, x, w, b, d)
    forward = loops_win or avx512_blas if loops in (None, "small", "both") else loops_win if loops == "grads" else loops
    grads = loops_win or (avx512_blas and loops in ("small", "both")) if loops in (None, "grads", "small", "both") \
        else loops
    assert calls == ["linear_forward"] * forward + ["linear_weight_grad"] * grads
    with cpu.reference():                                 # the layer's NumPy/BLAS lines
        z0, g0, gb0 = cpu.linear(x, w, b), np.zeros_like(w), np.zeros_like(b)
        cpu.linear_backward(d, x, w, g0, gb0, input_grad=False)
    assert len(calls) == forward + grads
    x64, w64, b64, d64 = (a.astype(np.float64) for a in (x, w, b, d))    # float32 sums of k terms, whichever way:
    for got in ((z, g, gb), (z0, g0, gb0)):                               # as close to the exact ones as reordered
        for a, exact, terms in ((got[0], x64 @ w64.T + b64, np.abs(x64) @ np.abs(w64).T + np.abs(b64)),   # sums are
                                (got[1], d64.T @ x64, np.abs(d64).T @ np.abs(x64)),
                                (got[2], d64.sum(axis=0), np.abs(d64).sum(axis=0))):
            _sums_close(a, exact, terms, np.float32)
    assert z0.flags.c_contiguous and z0.shape == (m, n)


@pytest.mark.parametrize("m, n, k, dtype, forward, grads", [
    (64, 30, 784, np.float32, True, True), (10, 30, 784, np.float32, True, True), (129, 30, 784, np.float32, True, False),
    (256, 30, 784, np.float64, True, False), (64, 100, 784, np.float32, True, True), (64, 10, 100, np.float32, True, True),
    (128, 10, 100, np.float32, False, True), (64, 30, 100, np.float32, False, True), (32, 30, 100, np.float32, True, True),
    (256, 10, 12, np.float32, True, True)])
def test_linear_takes_the_loops_on_a_cpu_without_avx512_for_long_rows_few_rows_or_short_rows(
        monkeypatch, m, n, k, dtype, forward, grads):
    """Without AVX-512 Linear's forward product runs the loops (AVX2's 3 x 4 vector tiles) for rows of at least
    _kernels.VECTOR_TILE_MIN_INPUTS inputs (784) or for at most cpu.AVX2_SHORT_ROWS_LOOPS_MACS multiply-adds (100->10
    at m=64, 100->30 at m=32), W.grad += δᵀx for rows of at most cpu.AVX2_GRAD_LOOPS_INPUTS inputs (a 100->10 layer)
    or at most cpu.AVX2_GRAD_LOOPS_ROWS rows (128), both when tiny; else BLAS: the sums as close to the exact ones as
    reordered sums are."""
    monkeypatch.setattr(cpu, "_loops_win", True)
    monkeypatch.setattr(cpu, "_avx512_host", False)
    rng = np.random.default_rng(13)
    x, w, b, d = (rng.standard_normal(s).astype(dtype) for s in ((m, k), (n, k), (n,), (m, n)))
    calls, z, g, gb = _linear_counting_loops(monkeypatch, x, w, b, d)
    assert calls == ["linear_forward"] * forward + ["linear_weight_grad"] * grads
    x64, w64, b64, d64 = (a.astype(np.float64) for a in (x, w, b, d))
    for got, exact, terms in ((z, x64 @ w64.T + b64, np.abs(x64) @ np.abs(w64).T + np.abs(b64)),
                              (g, d64.T @ x64, np.abs(d64).T @ np.abs(x64)),
                              (gb, d64.sum(axis=0), np.abs(d64).sum(axis=0))):
        _sums_close(got, exact, terms, dtype)


def test_linear_products_propagate_nan_and_infinity():
    x, w = np.ones((5, 256), np.float32), np.ones((3, 256), np.float32)
    x[1, 2], w[2, 255] = np.nan, np.inf
    k, none = cpu.kernels(), np.empty(0, np.float32)
    z = np.empty((5, 3), np.float32)
    k.linear_forward(x, w, none, z, np.empty((0, 0), np.float32), 0, 5)
    np.testing.assert_array_equal(z, x @ w.T)             # NaN in row 1, ∞ in column 2
    np.testing.assert_array_equal(cpu.linear(x, w), x @ w.T)
    d, g, gb = np.ones((5, 3), np.float32), np.zeros((3, 256), np.float32), np.zeros(3, np.float32)
    d[4, 0] = np.nan
    k.linear_weight_grad(d, x, g, gb, 0, 3)
    np.testing.assert_array_equal(g, d.T @ x)
    np.testing.assert_array_equal(gb, d.sum(axis=0))
    g2, gb2 = np.zeros((3, 256), np.float32), np.zeros(3, np.float32)
    cpu.linear_backward(d, x, w, g2, gb2, input_grad=False)
    np.testing.assert_array_equal(g2, g)
    np.testing.assert_array_equal(gb2, gb)


@pytest.mark.parametrize("arch, api", [("Haswell", "openblas"), ("SkylakeX", "openblas"), ("Haswell", "mkl")])
def test_the_loops_replace_blas_only_where_blas_runs_narrower_vectors(monkeypatch, arch, api):
    from llvmlite import binding
    monkeypatch.setattr(cpu, "_loops_win", None)
    monkeypatch.setattr(cpu, "threadpool_info",
                        lambda: [{"user_api": "blas", "internal_api": api, "architecture": arch}])
    features = binding.get_host_cpu_features()
    expect = arch == "Haswell" and api == "openblas" and bool(features.get("avx2") and features.get("fma"))
    assert cpu.loops_beat_blas() is expect



@pytest.mark.parametrize("arch, api", [("Haswell", "openblas"), ("SkylakeX", "openblas"), ("SkylakeX", "mkl")])
def test_gemm_blocks_hold_more_under_openblas_avx512_kernels(monkeypatch, arch, api):
    """FC 784-100's 256x784x100 products: 4 blocks (at most GEMM_BLOCKS) under narrower kernels, one call under OpenBLAS's AVX-512 ones
    (where the cuts cost more than a second thread gains); a 1000x1000 layer's products at m=10 (a 4 MB weight or
    gradient, larger than a core's cache) in 2 blocks under both; the same at any thread count."""
    monkeypatch.setattr(cpu, "_avx512_blas", None)
    monkeypatch.setattr(cpu, "_loops_win", False)         # BLAS, not Linear's compiled loops
    monkeypatch.setattr(cpu, "threadpool_info",
                        lambda: [{"user_api": "blas", "internal_api": api, "architecture": arch}])
    wide = arch == "SkylakeX" and api == "openblas"
    assert cpu.blas_runs_avx512() is wide
    assert cpu.gemm_block_macs(1 << 20) == 2 * cpu.MACS_PER_SHARD * (cpu.AVX512_BLOCK_SCALE if wide else 1)
    assert cpu.gemm_block_macs((1 << 20) + 1) == 2 * cpu.MACS_PER_SHARD
    rng = np.random.default_rng(3)
    x, w, d = (rng.random(s, dtype=np.float32) for s in ((256, 784), (100, 784), (256, 100)))
    x10, d10, w1000 = (rng.random(s, dtype=np.float32) for s in ((10, 1000), (10, 1000), (1000, 1000)))
    was = cpu.get_num_threads()
    try:
        for threads in (1, 3):
            cpu.set_num_threads(threads)
            cuts = []
            monkeypatch.setattr(cpu, "parallel", lambda fn, n, *a, **kw: cuts.append(n) or [fn(0, n)])
            z, g = cpu.matmul(x, w.T), cpu.matmul(d.T, x, add_to=np.zeros((100, 784), np.float32))
            zz = cpu.matmul(x10, w1000.T)
            gg = cpu.matmul(d10.T, x10, add_to=np.zeros((1000, 1000), np.float32))    # its ∂C/∂W: a 4 MB result
            assert cuts == ([2, 2] if wide else [min(4, cpu.GEMM_BLOCKS)] * 2 + [2, 2])
            np.testing.assert_allclose(z, x @ w.T, rtol=1e-5, atol=1e-4)
            np.testing.assert_allclose(g, d.T @ x, rtol=1e-5, atol=1e-4)
            np.testing.assert_allclose(zz, x10 @ w1000.T, rtol=1e-5, atol=1e-4)
            np.testing.assert_allclose(gg, d10.T @ x10, rtol=1e-5, atol=1e-4)
    finally:
        cpu.set_num_threads(was)

# -- the costs in one pass, against their NumPy code ---------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cost", [nn.LogLikelihoodCost, nn.CrossEntropyCost])
@pytest.mark.parametrize("label_dtype", [np.int64, np.int32, np.uint8])
def test_cost_fast_paths_equal_reference(dtype, cost, label_dtype):
    rng = np.random.default_rng(10)
    z = (rng.standard_normal((37, 10)) * 6).astype(dtype)
    z[0, :3] = [0, 80, -80]                                      # saturated outputs: the stable forms
    z[1, :] = 1e4                                                # and the largest logit shifted away
    labels = rng.integers(0, 10, 37).astype(label_dtype)
    results = []
    for ctx in (cpu.reference, _nothing):
        with ctx():
            c = cost()
            results.append((c(z, labels), c.backward()))
    (loss0, d0), (loss1, d1) = results
    assert type(loss1) is float and np.isfinite(loss1)
    np.testing.assert_allclose(loss1, loss0, **_close(dtype))
    np.testing.assert_allclose(d1, d0, **_close(dtype))
    assert d1.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dense", [False, True])
def test_crossentropy_keeps_a_small_cost(dtype, dense):
    """Confident right answers cost ~1e-13 a neuron: both paths keep it (softplus(z) - y z summed as two large
    sums would cancel it to 0 or to rounding noise)."""
    z = np.full((6, 10), -30.0, dtype=dtype)
    labels = np.arange(6) % 10
    z[np.arange(6), labels] = 30.0
    target = np.eye(10, dtype=dtype)[labels] if dense else labels
    expected = 10 * np.log1p(np.exp(-30.0))                    # per example: ln(1 + e^{-30}) from each neuron
    for ctx in (cpu.reference, _nothing):
        with ctx():
            np.testing.assert_allclose(nn.CrossEntropyCost()(z, target), expected,
                                       rtol=1e-12 if dtype == np.float64 else 1e-5)


@pytest.mark.parametrize("cost", [nn.LogLikelihoodCost, nn.CrossEntropyCost])
def test_cost_fast_paths_propagate_nan_and_refuse_labels_out_of_range(cost):
    z = np.random.default_rng(11).standard_normal((4, 3)).astype(np.float32)
    z[2, 1] = np.nan
    for ctx in (cpu.reference, _nothing):
        with ctx():
            c = cost()
            assert np.isnan(c(z, np.array([0, 1, 2, 0])))
            assert np.isnan(c.backward()[2]).any() and np.isfinite(c.backward()[[0, 1, 3]]).all()
            for bad in (3, -1):
                with pytest.raises(ds.DataError, match=f"label {bad} is out of range for 3 classes"):
                    c(z, np.array([0, bad, 1, 2]))


# -- the optimizers over one flat buffer, against the per-parameter update written out -----------------
def _net(dtype="float32"):
    ds.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3), nn.ReLU(), nn.Linear(3, 2)).to(dtype)


def _fill_grads(model, seed):
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.grad[...] = rng.standard_normal(p.grad.shape)


@pytest.mark.parametrize("momentum,decay,clip", [(0.0, 0.0, None), (0.0, 0.01, None), (0.9, 0.01, 0.5)])
def test_sgd_flat_update_equals_the_per_parameter_update(threads, momentum, decay, clip):
    model = _net("float64")
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=momentum, weight_decay=decay, clip_norm=clip)
    ws = [p.data.copy() for p in model.parameters()]
    vs = [np.zeros_like(w) for w in ws]
    for step in range(3):
        _fill_grads(model, step)
        gs = [p.grad.copy() for p in model.parameters()]
        if clip is not None:
            norm = np.sqrt(sum((g * g).sum() for g in gs))
            gs = [g * (clip / (norm + 1e-6)) if norm > clip else g for g in gs]
        for w, v, g in zip(ws, vs, gs):
            d = decay if w.ndim >= 2 else 0.0                   # weights only, as the book
            if momentum:
                v[...] = momentum * v - 0.1 * (g + d * w)
                w += v
            else:
                w[...] = (1 - 0.1 * d) * w - 0.1 * g
        opt.step()
        for p, w in zip(model.parameters(), ws):
            np.testing.assert_allclose(p.data, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum,form", [(0.0, "pytorch"), (0.9, "book"), (0.9, "pytorch")])
@pytest.mark.parametrize("decay", [0.0, 0.01])
def test_sgd_kernels_equal_the_numpy_update(threads, dtype, momentum, form, decay):
    """The compiled SGD updates against optim.SGD's NumPy lines (``cpu.reference()``) over a few steps: the same numbers
    in float32 and float64, bit for bit (both round η, μ, ηλ' to the parameters' dtype), except PyTorch's form with
    decay, which adds λ'w to ∇C first, as PyTorch does (the NumPy lines add it to v): there within float rounding."""
    results = []
    for ctx in (cpu.reference, _nothing):
        model = _net(dtype)
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=momentum, weight_decay=decay, momentum_form=form)
        with ctx():
            for step in range(3):
                _fill_grads(model, step)
                opt.step()
        results.append([p.data.copy() for p in model.parameters()])
    for a, b in zip(*results):
        if form == "pytorch" and momentum and decay:
            np.testing.assert_allclose(b, a, **_close(dtype))
        else:
            np.testing.assert_array_equal(b, a)


def test_adam_flat_update_equals_the_per_parameter_update(threads):
    model = _net("float64")
    opt = optim.Adam(model.parameters(), lr=0.01, weight_decay=0.1)
    ws = [p.data.copy() for p in model.parameters()]
    ms, vs = [np.zeros_like(w) for w in ws], [np.zeros_like(w) for w in ws]
    for step in range(1, 4):
        _fill_grads(model, step)
        for w, m, v, p in zip(ws, ms, vs, model.parameters()):
            g = p.grad + (0.1 * w if w.ndim >= 2 else 0)
            m[...] = 0.9 * m + 0.1 * g
            v[...] = 0.999 * v + 0.001 * g * g
            w -= 0.01 / (1 - 0.9 ** step) * m / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
        opt.step()
        for p, w in zip(model.parameters(), ws):
            np.testing.assert_allclose(p.data, w, rtol=1e-12, atol=1e-12)


def test_flat_buffer_follows_replaced_parameters_and_zero_grad_is_one_buffer(threads):
    model = _net()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    assert all(np.shares_memory(p.grad, opt.flat.grad) for p in model.parameters())
    _fill_grads(model, 0)
    opt.flat.grad[-1] = 1.0                                       # (padding: zeroed as well)
    opt.zero_grad()
    assert not any(p.grad.any() for p in model.parameters()) and not opt.flat.grad.any()
    state = {k: v + 1 for k, v in model.state_dict().items()}
    model.load_state_dict(state)                                  # replaces every p.data
    _fill_grads(model, 1)
    expect = [p.data - 0.1 * p.grad for p in model.parameters()]
    opt.step()
    for p, e in zip(model.parameters(), expect):
        np.testing.assert_allclose(p.data, e, rtol=1e-6)
        assert np.shares_memory(p.data, opt.flat.data)
    model.to("float64")
    opt.step()
    assert opt.flat.data.dtype == np.float64 and all(v.dtype == np.float64 for v in opt.velocity)
    for p in model.parameters():                  # every parameter and its gradient start on a cache line
        assert p.data.ctypes.data % 64 == 0 and p.grad.ctypes.data % 64 == 0
    assert opt.flat.size > sum(p.data.size for p in model.parameters())   # (so the padding between them is used)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_empty_aligned_starts_on_a_cache_line(dtype):
    assert cpu.empty_aligned((0, 3), dtype).shape == (0, 3)
    for shape in [(1,), (5, 3), (64, 784)]:
        a = cpu.empty_aligned(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.ctypes.data % 64 == 0
    z = cpu.zeros_aligned(37, dtype)
    assert z.shape == (37,) and not z.any() and z.ctypes.data % 64 == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, rows", [((50, 784), 64), ((50, 784), 7), ((20, 1, 5, 6), 20), ((9,), 4), ((3, 0), 2)])
def test_take_rows_equals_numpy_indexing_and_starts_on_a_cache_line(dtype, shape, rows):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(dtype)
    if x.size >= 3:
        x.reshape(-1)[:3] = [np.nan, np.inf, -0.0]
    index = rng.integers(0, shape[0], rows)                   # any valid rows, repeats included
    out = cpu.take_rows(x, index)
    np.testing.assert_array_equal(out, x[index])
    assert out.dtype == x.dtype and out.flags.c_contiguous and (out.size == 0 or out.ctypes.data % 64 == 0)
    assert np.signbit(out).tolist() == np.signbit(x[index]).tolist()   # bit for bit (-0.0 stays -0.0)


def test_take_rows_leaves_other_arrays_to_numpy():
    x, index = np.ones((6, 4), np.float32), np.arange(3)
    assert cpu.take_rows(x.astype(np.uint8), index) is None
    assert cpu.take_rows(x[:, ::2], index) is None                 # not row-major
    assert cpu.take_rows(x, index.astype(np.int32)) is None
    assert cpu.take_rows(x, index[:, None]) is None
    assert cpu.take_rows(x, np.array([0, 6])) is None and cpu.take_rows(x, np.array([-1])) is None   # x[index] says why
    with cpu.reference():
        assert cpu.take_rows(x, index) is None


def test_fit_draws_the_same_mini_batches_by_the_compiled_copy():
    from deepscope.train import Batches
    rng = np.random.default_rng(2)
    X, y = rng.random((70, 12), dtype=np.float32), rng.integers(0, 3, 70)
    ds.manual_seed(4)
    fast = [(a.copy(), b.copy()) for a, b in Batches(X, y).epoch(16)]
    ds.manual_seed(4)
    with cpu.reference():
        ref = list(Batches(X, y).epoch(16))
    assert len(fast) == len(ref) == 5
    for (a, b), (a0, b0) in zip(fast, ref):
        np.testing.assert_array_equal(a, a0)
        np.testing.assert_array_equal(b, b0)


def test_a_shared_parameter_is_updated_once():
    lin = nn.Linear(2, 2)
    opt = optim.SGD(lin.parameters() + lin.parameters(), lr=1.0)
    lin.weight.grad[...] = 1
    before = lin.weight.data.copy()
    opt.step()
    np.testing.assert_allclose(lin.weight.data, before - 1)


# -- the pool and the setting -------------------------------------------------------------------------------
def test_parallel_runs_the_shards_on_several_threads_and_reraises():
    cpu.set_num_threads(3)
    seen = []
    barrier = threading.Barrier(3, timeout=10)       # passes only if three shards run at the same time

    def shard(s, e):
        barrier.wait()
        seen.append(threading.get_ident())
        return (s, e)

    assert cpu.parallel(shard, 10) == [(0, 3), (3, 6), (6, 10)]
    assert len(set(seen)) == 3

    def boom(s, e):
        if s:
            raise RuntimeError("shard failed")

    with pytest.raises(RuntimeError, match="shard failed"):
        cpu.parallel(boom, 10)
    assert cpu.parallel(lambda s, e: cpu.parallel(lambda a, b: (a, b), 4), 2) == [[(0, 4)], [(0, 4)]]  # nested: inline
    cpu.set_num_threads(cpu.default_num_threads())


@pytest.mark.parametrize("awake_us", [0, 200, 100_000])
def test_the_caller_waits_awake_for_a_late_worker_and_gets_every_result(monkeypatch, awake_us):
    """The caller waits for the worker's last shard awake (up to WAIT_AWAKE_US, then asleep): every shard's result
    comes back in order, whichever thread ran it, and a worker slower than the wait is still waited for."""
    monkeypatch.setattr(cpu, "WAIT_AWAKE_US", awake_us)
    cpu.set_num_threads(2)
    main = threading.get_ident()
    try:
        for _ in range(20):
            def shard(s, e):
                if threading.get_ident() != main:
                    threading.Event().wait(0.002)         # the worker finishes last (asleep: lets the caller wait)
                return list(range(s, e))

            assert [x for part in cpu.parallel(shard, 8) for x in part] == list(range(8))
    finally:
        cpu.set_num_threads(cpu.default_num_threads())


@pytest.mark.skipif(cpu.kernels() is None or cpu.kernels().wait_until is None, reason="no awake wait here")
def test_the_awake_waits_see_another_threads_write_and_give_up_in_time():
    import time
    k, flag = cpu.kernels(), np.zeros(1, np.int64)
    t0 = time.perf_counter()
    assert k.wait_until(flag, 0, 1, 2_000_000) is False              # nobody writes: gives up after 2 ms
    assert 0.002 <= time.perf_counter() - t0 < 1.0
    threading.Timer(0.01, lambda: flag.__setitem__(0, 1)).start()
    assert k.wait_until(flag, 0, 1, 5_000_000_000) is True           # another thread's write ends the wait
    threading.Timer(0.01, lambda: flag.__setitem__(0, 2)).start()
    assert k.publish(flag, 0, 1, 5_000_000_000) is True and flag[0] == 2   # raised by the other side: done
    posted = np.zeros(2, np.int64)                                           # [the job's number, its grace in ns]
    t0 = time.perf_counter()
    assert k.park(posted, 0, 2_000_000) is False                             # no new job: back to the queue after 2 ms
    assert 0.002 <= time.perf_counter() - t0 < 1.0
    threading.Timer(0.01, lambda: posted.__setitem__(0, 1)).start()
    assert k.park(posted, 0, 5_000_000_000) is True                          # the next job is out
    posted[1] = 3_000_000
    t0 = time.perf_counter()
    assert k.park(posted, 0, 5_000_000_000) is True                          # out already: then its grace, awake
    assert 0.003 <= time.perf_counter() - t0 < 1.0
    flag[0], posted[1] = 0, 0
    threading.Timer(0.01, lambda: (flag.__setitem__(0, 2), posted.__setitem__(0, 2))).start()
    assert k.publish_and_park(flag, 0, 1, 5_000_000_000, posted, 1, 5_000_000_000) is True and flag[0] == 2


@pytest.mark.parametrize("at_call", [1, 0])
def test_a_job_handed_out_by_its_first_shard_runs_every_shard_once(monkeypatch, at_call):
    """parallel(..., hands_out=True): the caller's first shard hands the job out (hand_out, right before its GIL-free
    call); until then no parked worker has started a shard, and every shard runs once, in order, whichever thread
    runs it; a job whose shards never call hand_out still gets every shard run (the caller hands it out after)."""
    monkeypatch.setattr(cpu, "HAND_OUT_AT_CALL", at_call)
    cpu.set_num_threads(2)
    main = threading.get_ident()
    try:
        for _ in range(20):
            started = []

            def shard(s, e):
                started.append((s, e))
                if threading.get_ident() == main:
                    threading.Event().wait(0.001)       # Python work before the GIL-free call (holding the GIL)
                cpu.hand_out()
                return list(range(s, e))

            parts = cpu.parallel(shard, 8, hands_out=True)
            assert [x for part in parts for x in part] == list(range(8)) and sorted(started) == [(0, 4), (4, 8)]
            silent = cpu.parallel(lambda s, e: list(range(s, e)), 8, hands_out=True)     # never calls hand_out
            assert [x for part in silent for x in part] == list(range(8))
        assert getattr(cpu._local, "unposted", None) is None
    finally:
        cpu.set_num_threads(cpu.default_num_threads())


def test_a_worker_that_took_a_job_late_goes_on_to_the_next_at_once(monkeypatch):
    """A worker that takes job n after job n+1 is out (it woke late and the caller ran job n alone) starts job n+1
    at once: had it waited for a job handed out after the count it read, it would have stayed one job behind."""
    monkeypatch.setattr(cpu, "PARK_US", 5_000_000)          # waiting for a job not yet out: 5 s
    pool = cpu._Pool(2)
    try:
        done = threading.Event()
        late = cpu._Job(lambda: None, [])                  # job n: no shard left to take
        following = cpu._Job(done.set, [()])               # job n+1: one shard, for the worker
        for job in (late, following):
            pool._posted[0] += 1
            job.number = int(pool._posted[0])
            pool._tasks.put(job)
        assert done.wait(2.0)
    finally:
        pool.close()
        pool._posted[0] += 1                               # out of its wait, to the queue's end


def test_the_largest_conv_chunk_is_a_core_l2_as_linux_describes_it(monkeypatch, tmp_path):
    """core_l2_bytes reads the level-2 cache of CPU 0 ("512K", "1M"), skipping the others, else the default."""
    import glob as glob_module
    for i, (level, kind, size) in enumerate([("1", "Data", "32K"), ("1", "Instruction", "32K"), ("2", "Unified", "512K"),
                                             ("3", "Unified", "32768K")]):
        (tmp_path / f"index{i}").mkdir()
        for name, text in (("level", level), ("type", kind), ("size", size)):
            (tmp_path / f"index{i}" / name).write_text(text + "\n")
    real = glob_module.glob
    monkeypatch.setattr(glob_module, "glob", lambda pattern: real(str(tmp_path / "index*")))
    assert cpu.core_l2_bytes() == 512 << 10
    (tmp_path / "index2" / "size").write_text("1M\n")
    assert cpu.core_l2_bytes() == 1 << 20
    (tmp_path / "index2" / "level").write_text("4\n")
    assert cpu.core_l2_bytes(default=12345) == 12345


def test_conv_chunks_grow_with_the_mini_batch_not_with_the_threads(monkeypatch):
    """Rung 1's first conv, with a core's L2 of 1 MB: 512 KB chunks at m=10 (as many as before, peak memory), 4
    chunks at m=64 (fewer round trips through the GIL), at most 1 MB each at m=256; the same at 1 and 3 threads."""
    monkeypatch.setattr(cpu, "COLUMN_BYTES_PER_CHUNK_MAX", 1 << 20)
    plans, was = [], cpu.get_num_threads()
    try:
        for threads in (1, 3):
            cpu.set_num_threads(threads)
            plans.append({m: cpu._conv_plan(np.zeros((m, 1, 28, 28), np.float32), np.zeros((20, 1, 5, 5), np.float32),
                                            (1, 1), (0, 0))[7] for m in (10, 64, 256)})
    finally:
        cpu.set_num_threads(was)
    assert plans[0] == plans[1]
    column_bytes = 25 * 24 * 24 * 4                         # one image's columns, float32
    chunks = plans[0]
    assert len(chunks[10]) == 2 and len(chunks[64]) == 4 and len(chunks[256]) == 16
    assert max(b - a for a, b in chunks[10]) * column_bytes <= cpu.COLUMN_BYTES_PER_CHUNK
    assert max(b - a for a, b in chunks[256]) * column_bytes <= cpu.COLUMN_BYTES_PER_CHUNK_MAX
    for m, c in chunks.items():
        assert c[0][0] == 0 and c[-1][1] == m and all(c[i][1] == c[i + 1][0] for i in range(len(c) - 1))


def test_set_num_threads_rejects_nonsense_and_honours_omp_num_threads():
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="positive integer"):
            ds.set_num_threads(bad)
    code = "import deepscope, threadpoolctl; print(deepscope.get_num_threads(), " \
           "[i['num_threads'] for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas'])"
    env = dict(os.environ, OMP_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    n, blas = out.stdout.split(" ", 1)
    assert n == "3" and set(eval(blas)) == {1}       # deepscope's 3 threads, each calling one-threaded BLAS


def test_threads_option_on_training_and_evaluating_commands(tmp_path, capsys):
    parser = build_parser()
    for argv in (["train"], ["book", "ch6", "relu"], ["rnn", "mnist"], ["rnn", "text"], ["scope", "speed"],
                 ["evaluate", "RUN"], ["predict", "RUN", "x.png"]):
        assert parser.parse_args(argv + ["--threads", "3"]).threads == 3, argv
    was = cpu.get_num_threads()
    try:
        assert main(["evaluate", str(tmp_path / "no-such-run"), "--threads", "3"]) != 0   # fails: no run ...
        assert cpu.get_num_threads() == 3                                                       # ... but applied first
    finally:
        cpu.set_num_threads(was)
    capsys.readouterr()


def test_a_training_step_gives_the_same_numbers_at_any_thread_count(monkeypatch):
    """Shards never change a sum's order (conv chunks do not depend on the thread count; their partial ∂C/∂W
    are added in chunk order; GEMMs split by rows): 1 and 3 threads give bit-identical weights."""
    from deepscope.train import step
    monkeypatch.setattr(cpu, "ELEMENTS_PER_SHARD", 64)
    monkeypatch.setattr(cpu, "MACS_PER_SHARD", 1000)
    monkeypatch.setattr(cpu, "COLUMN_BYTES_PER_CHUNK", 20_000)
    monkeypatch.setattr(cpu, "COLUMN_BYTES_PER_CHUNK_MAX", 20_000)
    rng = np.random.default_rng(0)
    x, y = rng.random((37, 1, 14, 14), dtype=np.float32), rng.integers(0, 10, 37)
    weights, was = [], cpu.get_num_threads()
    try:
        for threads in (1, 3):
            cpu.set_num_threads(threads)
            ds.manual_seed(0)
            net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(4, 6, 3),
                                nn.Sigmoid(), nn.Flatten(), nn.Dropout(0.2), nn.Linear(150, 40), nn.Tanh(),
                                nn.Linear(40, 10))
            opt = optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
            for _ in range(3):
                step(net, nn.LogLikelihoodCost(), opt, x, y)
            weights.append([p.data.copy() for p in net.parameters()])
    finally:
        cpu.set_num_threads(was)
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)



HEAP_CHURN = """
import resource, sys, numpy
if sys.argv[1] == "deepscope":
    from deepscope import cpu
    print(cpu.keep_freed_memory())
else:
    print(None)                                         # glibc's own rule, deepscope not imported
big = numpy.ones(3 << 20, numpy.float32); del big      # a 12 MB block freed: glibc's rule raises its thresholds
def step():                                             # a step's temporaries: 2 x 12 MB allocated, touched, freed
    a = numpy.ones(3 << 20, numpy.float32); b = numpy.ones(3 << 20, numpy.float32); del a, b
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _heap_churn(*argv, **env):
    env = dict({k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}, **env)
    out = subprocess.run([sys.executable, "-c", HEAP_CHURN, *argv], env=env, capture_output=True, text=True, check=True)
    kept, faults = out.stdout.split()
    return kept, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_memory_stays_in_the_heap_for_the_next_step_unless_the_user_set_malloc():
    """glibc's own rule trims the 24 MB a step freed and the next step page-faults it back in; with deepscope's
    fixed thresholds the steps reuse the heap. A user's MALLOC_* setting is left alone."""
    kept, faults = _heap_churn("deepscope")
    if kept == "False":
        pytest.skip("no glibc mallopt here")
    assert faults < 100
    assert _heap_churn("glibc")[1] > 10 * max(faults, 100)        # what the thresholds prevent
    assert _heap_churn("deepscope", MALLOC_TRIM_THRESHOLD_="131072")[0] == "False"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("label_dtype", [np.int64, np.int32, np.uint8])
def test_correct_count_equals_numpy_argmax(dtype, label_dtype):
    """fit's count of right answers: NumPy's argmax (the first maximum on ties, a NaN counting as the maximum)."""
    from deepscope.train import _correct
    rng = np.random.default_rng(13)
    out = rng.integers(0, 4, (200, 10)).astype(dtype)          # many ties
    out[3, 5] = out[7, 0] = out[9, 9] = np.nan
    out[11] = np.nan
    labels = rng.integers(0, 10, 200).astype(label_dtype)
    labels[[3, 7, 9, 11]] = [5, 0, 9, 0]
    expect = int(np.count_nonzero(out.argmax(axis=1) == labels))
    assert cpu.correct(out, labels) == expect and expect > 10
    assert _correct(out, labels) == expect and type(_correct(out, labels)) is int
    with cpu.reference():
        assert cpu.correct(out, labels) is None and _correct(out, labels) == expect
    onehot = np.eye(10, dtype=dtype)[labels]                     # one-hot targets: NumPy's lines
    assert _correct(out, onehot) == expect


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("label_dtype", [np.int64, np.uint8])
def test_crossentropy_counts_the_right_answers_as_numpy_argmax_in_the_same_pass(dtype, label_dtype):
    """SigmoidNetStep's cost pass (the kernel behind cpu.crossentropy) also counts fit's right answers: NumPy's argmax
    count (ties, NaN), with cpu.crossentropy's cost and δ."""
    k = cpu.kernels()
    rng = np.random.default_rng(14)
    z = (rng.integers(0, 4, (200, 10)) - 1.5).astype(dtype)     # many ties
    z[3, 5] = z[7, 0] = z[9, 9] = np.nan
    z[11] = np.nan
    labels = rng.integers(0, 10, 200).astype(label_dtype)
    labels[[3, 7, 9, 11]] = [5, 0, 9, 0]
    expect = int(np.count_nonzero(z.argmax(axis=1) == labels))
    delta = np.empty_like(z)
    total, bad, right = k.crossentropy(z, labels, delta)
    assert right == expect and type(right) is int and expect > 10 and bad == -1
    plain = cpu.crossentropy(z, labels)
    assert len(plain) == 3 and np.array_equal(total, plain[0], equal_nan=True) and plain[2] == bad
    np.testing.assert_array_equal(delta, plain[1])
    finite = z[12:]
    total, bad, right = k.crossentropy(finite, labels[12:], delta[12:])
    assert right == np.count_nonzero(finite.argmax(axis=1) == labels[12:])
    assert total == cpu.crossentropy(finite, labels[12:])[0]
    labels[20] = 10                                              # out of range: its row, no count
    assert k.crossentropy(finite, labels[12:], delta[12:])[1:] == (8, 0)


def test_the_cost_pass_exponential_is_within_an_ulp_of_the_exact_one():
    """_kernels._exp_neg (e^x for x <= 0, the cross-entropy pass's exponentials) against e^x in long double: within
    an ulp of it down to -708, 0 below, NaN for NaN."""
    numba = pytest.importorskip("numba")
    k = cpu.kernels()

    @numba.njit(fastmath={"contract"})       # the cross-entropy pass's flags (_kernels._jit_fma)
    def exp_neg(x, out):
        for i in range(x.size):
            out[i] = k._exp_neg(x[i])

    rng = np.random.default_rng(15)
    x = -np.concatenate([np.abs(rng.standard_normal(50_000)) * 60, rng.random(20_000), np.linspace(0, 708, 7081),
                         [0.0, 5e-324, 1e-300, 1e-17, 0.5 * np.log(2), np.log(2), 707.9, 708.0]])
    out = np.empty_like(x)
    exp_neg(x, out)
    exact = np.exp(x.astype(np.longdouble))
    assert np.all(np.abs(out - exact) <= np.spacing(exact.astype(np.float64)))
    below = np.array([-708.0000001, -745.2, -1e300, -np.inf, np.nan])
    out = np.empty_like(below)
    exp_neg(below, out)
    assert np.array_equal(out, [0, 0, 0, 0, np.nan], equal_nan=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n, classes, scale", [(64, 10, 6.0), (64, 10, 40.0), (64, 10, 1e-3), (4, 3000, 3.0)])
def test_crossentropy_pass_is_the_cost_computed_exactly(dtype, n, classes, scale):
    """cpu.crossentropy's C (the logarithms as one log1p of Π(1 + e) - 1) against Σ_j softplus(z_j) - z_y in long
    double, a log1p a number: as close as z's precision allows (float32: e is rounded to it). 4x3000 outputs:
    Π(1 + e) passes 1e300 (the pass takes its logarithm before it overflows); scale 40: a tiny cost."""
    rng = np.random.default_rng(16)
    z = (rng.standard_normal((n, classes)) * scale).astype(dtype)
    labels = rng.integers(0, classes, n)
    if scale > 10:                               # confident and right: C ~ 1e-12 a row, all of it ln(1 + e) terms
        z = np.where(np.arange(classes) == labels[:, None], np.abs(z) + 30, -np.abs(z) - 30).astype(dtype)
    total, delta, bad = cpu.crossentropy(z, labels)
    zl = z.astype(np.longdouble)
    onehot = np.arange(classes) == labels[:, None]
    exact = np.maximum(np.where(onehot, -zl, zl), 0).sum() + np.log1p(np.exp(-np.abs(zl))).sum()
    assert bad == -1 and np.isfinite(total)
    assert abs(total - exact) <= (1e-7 if dtype == np.float32 else 1e-13) * exact
    sigma = 1 / (1 + np.exp(-zl))
    np.testing.assert_allclose(delta, ((sigma - onehot) / n).astype(dtype), **_close(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, n, k", [(64, 10, 30), (10, 10, 30), (1, 1, 7), (64, 10, 60), (32, 10, 31)])
def test_linear_backward_of_a_tiny_layer_runs_one_compiled_pass_each_and_equals_numpy(monkeypatch, dtype, m, n, k):
    """A tiny layer's backward (at most cpu.TINY_MACS multiply-adds a product): W.grad += δᵀx with b.grad += Σδ by the
    compiled loops, and δW too up to cpu.INPUT_GRAD_LOOPS_MACS; as close to the exact products as NumPy's own (float64:
    1e-12)."""
    rng = np.random.default_rng(14)
    x, w, d = (rng.standard_normal(s).astype(dtype) for s in ((m, k), (n, k), (m, n)))
    g, gb = rng.standard_normal((n, k)).astype(dtype), rng.standard_normal(n).astype(dtype)
    g0, gb0 = g.copy(), gb.copy()
    calls = []
    for name in ("linear_weight_grad", "linear_input_grad"):
        monkeypatch.setattr(cpu.kernels(), name, lambda *a, f=getattr(cpu.kernels(), name), name=name:
                            calls.append(name) or f(*a))
    dx = cpu.linear_backward(d, x, w, g, gb)
    tiny = m * n * k <= cpu.TINY_MACS
    by_loops = ["linear_weight_grad"] + (["linear_input_grad"] if m * n * k <= cpu.INPUT_GRAD_LOOPS_MACS else [])
    assert calls == (by_loops if tiny else [])
    assert cpu.linear_backward(d, x, w, g.copy(), gb.copy(), input_grad=False) is None
    np.testing.assert_array_equal(gb, gb0 + d.sum(axis=0))
    d64, w64, x64 = (a.astype(np.float64) for a in (d, w, x))
    if dtype == np.float64:
        np.testing.assert_allclose(dx, d @ w, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(g, g0 + d.T @ x, rtol=1e-12, atol=1e-12)
    else:
        assert np.abs(dx - d64 @ w64).max() <= 2 * np.abs(d @ w - d64 @ w64).max() + 1e-6
        exact_g = g0.astype(np.float64) + d64.T @ x64
        assert np.abs(g - exact_g).max() <= 2 * np.abs((g0 + d.T @ x) - exact_g).max() + 1e-6
    assert dx.dtype == dtype and dx.shape == (m, k)
    nan = d.copy()
    nan[0, 0] = np.nan
    assert np.isnan(cpu.linear_backward(nan, x, w, g.copy(), gb.copy())[0]).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sum_of_squares_screens_as_numpy_dot(dtype):
    """check_inputs's screen: Σ x² by the compiled pass against NumPy's dot(x, x): close on finite data, not finite
    wherever a NaN, ±∞ (or an overflow) is; and check_inputs still names the bad inputs."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((300, 37)).astype(dtype)
    flat = x.reshape(-1)
    np.testing.assert_allclose(cpu.sum_of_squares(x), np.dot(flat, flat), rtol=1e-5 if dtype == np.float32 else 1e-12)
    for poison in (np.nan, np.inf, -np.inf, np.finfo(dtype).max):
        y = x.copy()
        y[123, 5] = poison
        assert not np.isfinite(cpu.sum_of_squares(y))
    assert cpu.sum_of_squares(x[:, ::2]) is None                        # not row-major: NumPy's dot
    y = x.copy()
    y[7, 1], y[250, 0] = np.nan, np.inf
    with pytest.raises(ds.errors.DataError, match="2 of 300 inputs hold NaN or infinity .the first is input 7."):
        ds.train.check_inputs("fit", y)
    ds.train.check_inputs("fit", x / np.abs(x).max() * np.finfo(dtype).max)   # huge, finite: the exact count clears it


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_backward_kernel_is_the_layers_numpy_line_bit_for_bit(dtype):
    """_kernels.sigmoid_backward computes nn/activation.py's line g * a * (1.0 - a) in a's precision: the same numbers
    bit for bit, NaN, ±∞, signed zeros and tiny and huge gradients included (train.SigmoidNetStep calls the kernel
    where the layer runs the line)."""
    rng = np.random.default_rng(18)
    a = rng.random(5000).astype(dtype)
    g = (rng.standard_normal(5000) * 10.0 ** rng.integers(-20, 20, 5000)).astype(dtype)
    a[:7] = [0, 1, np.nan, 0.5, np.finfo(dtype).tiny, 1 - np.finfo(dtype).eps, -0.0]
    g[7:12] = [np.inf, -np.inf, np.nan, 0, -0.0]
    out = np.empty_like(a)
    cpu.kernels().sigmoid_backward(g, a, out)
    with np.errstate(all="ignore"):
        expect = g * a * (1.0 - a)
    np.testing.assert_array_equal(out, expect)
    number = ~np.isnan(expect)
    assert np.array_equal(np.signbit(out[number]), np.signbit(expect[number])) and out.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, n, k, start, stop", [(64, 30, 784, 0, 30), (7, 13, 257, 4, 13), (61, 9, 300, 0, 8),
                                                  (3, 6, 79, 0, 6), (64, 10, 30, 0, 10)])
@pytest.mark.parametrize("strided", [False, True])
def test_linear_weight_grad_fresh_is_zero_grad_then_the_loops_bit_for_bit(dtype, m, n, k, start, stop, strided):
    """fresh=True (train.SigmoidNetStep's zero_grad done by the loops): rows [start, stop) of W.grad and b.grad as the
    loops give them after zeroing, bit for bit and the sign of a zero included, whatever they held before (NaN here);
    the other rows untouched. By the register tiles (unit stride) and by the loops over k (strided views)."""
    rng = np.random.default_rng(17)
    x, d = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((m, n)).astype(dtype)
    x[1, 2], d[2, start] = np.nan, np.inf
    d[:, stop - 1] = -0.0                                       # Σ δ = -0: 0 + (-0) is +0
    x_ = np.repeat(x, 2, axis=1)[:, ::2] if strided else x

    def grads(fill):
        g = np.full((n, 2 * k if strided else k), fill, dtype)
        return (g[:, ::2] if strided else g), np.full(n, fill, dtype)
    (g0, gb0), (g1, gb1) = grads(0.0), grads(np.nan)
    cpu.kernels().linear_weight_grad(d, x_, g0, gb0, start, stop)
    cpu.kernels().linear_weight_grad(d, x_, g1, gb1, start, stop, True)
    for a, b in ((g0, g1), (gb0, gb1)):
        np.testing.assert_array_equal(a[start:stop], b[start:stop])
        assert np.array_equal(np.signbit(a[start:stop]), np.signbit(b[start:stop]))
        assert np.isnan(np.delete(b, np.s_[start:stop], axis=0)).all()
    assert gb1[stop - 1] == 0 and not np.signbit(gb1[stop - 1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, n, k, start, stop", [(64, 30, 784, 0, 30), (7, 13, 257, 4, 13), (61, 9, 300, 0, 8),
                                                  (3, 6, 79, 0, 6), (64, 10, 30, 0, 10)])
def test_linear_weight_grad_register_tiles_equal_the_loops_bit_for_bit(dtype, m, n, k, start, stop):
    """W.grad += δᵀ x by the register tiles (rows of unit stride: every whole 512-bit vector) and by the loops over
    k that keep W.grad in memory (the same arrays as strided views: every column): the same fused multiply-adds in
    the same order, so the same numbers bit for bit, NaN and ∞ included, and rows outside [start, stop) untouched."""
    rng = np.random.default_rng(13)
    x, d = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((m, n)).astype(dtype)
    g0, gb0 = rng.standard_normal((n, k)).astype(dtype), rng.standard_normal(n).astype(dtype)
    x[1, 2], d[2, start] = np.nan, np.inf
    g, gb = g0.copy(), gb0.copy()
    cpu.kernels().linear_weight_grad(d, x, g, gb, start, stop)
    x_strided, g_strided = np.repeat(x, 2, axis=1)[:, ::2], np.repeat(g0, 2, axis=1)[:, ::2]
    gb_strided = gb0.copy()
    cpu.kernels().linear_weight_grad(d, x_strided, g_strided, gb_strided, start, stop)
    np.testing.assert_array_equal(g, g_strided)
    np.testing.assert_array_equal(gb, gb_strided)
    np.testing.assert_array_equal(np.delete(g, np.s_[start:stop], axis=0), np.delete(g0, np.s_[start:stop], axis=0))
    assert np.isnan(g[start:stop, 2]).all() and not np.isnan(np.delete(g[start:stop], 2, axis=1)).all()


def test_the_loops_share_a_smaller_product_while_the_workers_are_awake(monkeypatch):
    """Linear's loops cut a product into shards of 2 x MACS_PER_SHARD multiply-adds, or of 2 x PARKED_MACS_PER_SHARD
    while the pool's workers still wait awake after a parallel section (a hand-over then costs no wake-up): rung 3's
    640->100 at m=64 (4.1M) runs in one call after a pause and in two shards right after a section, with the same
    numbers bit for bit; SigmoidNetStep's one-piece rule (tiles_in_one_call) does not change with the workers."""
    cpu.set_num_threads(2)
    try:
        rng = np.random.default_rng(0)
        x, w = rng.standard_normal((64, 640)).astype(np.float32), rng.standard_normal((100, 640)).astype(np.float32)
        b = rng.standard_normal(100).astype(np.float32)
        if not cpu.linear_runs_loops(x, w, b, forward=True):
            pytest.skip("this CPU's BLAS takes a 64x640 by 640x100 product (cpu.linear_runs_loops)")
        calls, run = [], cpu.parallel

        def counted(fn, n, min_per_shard=1, hands_out=False):
            calls.append(not cpu.one_shard(n, min_per_shard))        # True: the work was shared
            return run(fn, n, min_per_shard, hands_out)

        monkeypatch.setattr(cpu, "parallel", counted)
        results = {}
        for parked in (False, True):
            monkeypatch.setattr(cpu, "workers_parked", lambda: parked)
            calls.clear()
            results[parked] = cpu.linear(x, w, b)
            assert calls == ([True] if parked else [])                # one call: no parallel section at all
            assert cpu.tiles_in_one_call(64, w.size)
        np.testing.assert_array_equal(results[True], results[False])
        np.testing.assert_allclose(results[False], x.astype(np.float64) @ w.T.astype(np.float64) + b, rtol=1e-4,
                                   atol=1e-4)
        before = time.perf_counter_ns()
        run(lambda s, e: None, 2)                                     # a section: the worker now waits awake ...
        if cpu.PARK_US and cpu._pool._wait is not None:               # ... and workers_parked() says so until then
            assert cpu._pool.parked_until >= before + cpu.PARK_US * 500
    finally:
        cpu.set_num_threads(cpu.default_num_threads())
