"""What a GPU needs beyond CuPy itself: knowing when a CUDA graph is recording, and a matrix product that can
be recorded.

:class:`deepscope.train.GraphedStep` records a training step as a CUDA graph and replays it (a GPU step at the
book's mini-batches is a few hundred small kernels that Python issues more slowly than the GPU runs them).
CuPy refuses to record cuBLAS (its ``cublas.setStream`` raises ``NotImplementedError: calling cuBLAS API during
stream capture is currently unsupported``, CuPy 14), so inside a recording :func:`matmul` runs deepscope's own
GEMM kernel instead; everywhere else it is ``a @ b``. Nothing here imports CuPy until a recording needs it.
"""
from __future__ import annotations

import numpy

_recording = False


class capturing:
    """Context manager: a CUDA graph is recording. While it records nothing may be read back to the host (a read
    would break the recording), so the checks that read the GPU (a cost's label range) are left to whoever
    starts the recording, and :func:`matmul` uses a kernel that can be recorded. ``capturing.now()`` says
    whether one is on."""

    def __enter__(self):
        global _recording
        _recording = True

    def __exit__(self, *exc):
        global _recording
        _recording = False

    @staticmethod
    def now() -> bool:
        return _recording


def matmul(a, b):
    """``a @ b`` for 2-D arrays; inside a CUDA graph recording, :func:`gemm` (CuPy cannot record cuBLAS)."""
    if _recording and type(a) is not numpy.ndarray:
        return gemm(a, b)
    return a @ b


# C = A B, one 16x16 tile of C a block, A and B with any strides (transposed views read in place). The K axis
# may be split across blockIdx.z (each slice writes its own partial C, summed afterwards): a product with a long
# K and a small C (a conv's ∂C/∂W over a large mini-batch) would otherwise run on a handful of blocks.
_GEMM_SOURCE = r"""
extern "C" __global__ void gemm(const real* A, const real* B, real* C, int M, int N, int K,
                                long long sam, long long sak, long long sbk, long long sbn, int kchunk) {
    __shared__ real As[16][17];
    __shared__ real Bs[16][17];
    int tx = threadIdx.x, ty = threadIdx.y;
    int row = blockIdx.y * 16 + ty, col = blockIdx.x * 16 + tx;
    int kbeg = blockIdx.z * kchunk;
    int kend = min(K, kbeg + kchunk);
    real acc = 0;
    for (int k0 = kbeg; k0 < kend; k0 += 16) {
        As[ty][tx] = (row < M && k0 + tx < kend) ? A[row * sam + (k0 + tx) * sak] : (real)0;
        Bs[ty][tx] = (k0 + ty < kend && col < N) ? B[(k0 + ty) * sbk + col * sbn] : (real)0;
        __syncthreads();
        #pragma unroll
        for (int k = 0; k < 16; ++k) acc += As[ty][k] * Bs[k][tx];
        __syncthreads();
    }
    if (row < M && col < N) C[((long long)blockIdx.z * M + row) * N + col] = acc;
}
"""
_kernels: dict = {}
K_PER_SLICE = 2048     # the K axis is split into slices of about this length (at most 64)


def gemm(a, b):
    """``a @ b`` for 2-D CuPy float32/float64 arrays by deepscope's own kernel (see the module's docstring)."""
    import cupy    # lazy: CuPy is the optional gpu extra
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0] or a.dtype != b.dtype:
        raise ValueError(f"gemm: cannot multiply {a.shape} {a.dtype} by {b.shape} {b.dtype}")
    if a.dtype not in (numpy.float32, numpy.float64):
        raise ValueError(f"gemm: float32 or float64 only, got {a.dtype}")
    kernel = _kernels.get(a.dtype)
    if kernel is None:
        real = "float" if a.dtype == numpy.float32 else "double"
        kernel = _kernels[a.dtype] = cupy.RawKernel("typedef " + real + " real;\n" + _GEMM_SOURCE, "gemm")
    (M, K), N = a.shape, b.shape[1]
    slices = max(1, min(64, K // K_PER_SLICE))
    kchunk = -(-K // slices)
    kchunk += -kchunk % 16
    slices = -(-K // kchunk) if K else 1
    out = cupy.empty((slices, M, N), dtype=a.dtype)
    if M and N:
        s = a.itemsize
        kernel(((N + 15) // 16, (M + 15) // 16, slices), (16, 16),
               (a, b, out, numpy.int32(M), numpy.int32(N), numpy.int32(K),
                numpy.int64(a.strides[0] // s), numpy.int64(a.strides[1] // s),
                numpy.int64(b.strides[0] // s), numpy.int64(b.strides[1] // s), numpy.int32(kchunk)))
    return out[0] if slices == 1 else out.sum(axis=0)


def prepare(dtype) -> None:
    """Compile and load :func:`gemm`'s kernel and its sum over K slices for ``dtype``, before a recording: a
    kernel's first launch loads its module, which a recording should not have to do."""
    import cupy    # lazy: CuPy is the optional gpu extra
    a = cupy.ones((2, 2 * K_PER_SLICE), dtype=dtype)
    gemm(a, a.T)                       # two K slices: the kernel and the sum
    gemm(a[:, :16], a[:, :16].T)       # one slice
    cupy.cuda.get_current_stream().synchronize()

