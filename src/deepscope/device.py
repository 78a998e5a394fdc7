"""What a GPU needs beyond CuPy itself: knowing when a CUDA graph is recording, and a matrix product that can
be recorded.

:class:`deepscope.train.GraphedStep` records a training step as a CUDA graph and replays it (a GPU step at the
book's mini-batches is a few hundred small kernels that Python issues more slowly than the GPU runs them).
CuPy refuses to record cuBLAS (its ``cublas.setStream`` raises ``NotImplementedError: calling cuBLAS API during
stream capture is currently unsupported``, CuPy 14), so inside a recording :func:`matmul` runs deepscope's own
GEMM kernel instead; everywhere else it is ``a @ b``. Nothing here imports CuPy until a recording needs it.
"""
from __future__ import annotations

import functools

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


# C = A B, A and B with any strides (transposed views read in place). A block of 16x16 threads computes a
# (16 RM) x (16 RN) tile of C: thread (ty, tx) the rows ty + 16 i and the columns tx + 16 j, i < RM, j < RN, so that
# each value it reads from shared memory serves RM or RN multiply-adds (RM = RN = 1 reads two for each one). The
# tile's 16-wide slices of A and B are loaded along whichever stride is 1. The K axis may be split across
# blockIdx.z (each slice writes its own partial C, summed afterwards): a product with a long K and a small C (a
# conv's ∂C/∂W over a large mini-batch) would otherwise run on a handful of blocks.
_GEMM_SOURCE = r"""
extern "C" __global__ void gemm(const real* A, const real* B, real* C, int M, int N, int K,
                                long long sam, long long sak, long long sbk, long long sbn, int kchunk) {
    __shared__ real As[16][16 * RM + 1];       // As[k][i]: the tile's rows of A, one k at a time
    __shared__ real Bs[16][16 * RN + 1];       // Bs[k][j]: its columns of B
    const int tx = threadIdx.x, ty = threadIdx.y, t = ty * 16 + tx;
    const int row0 = blockIdx.y * 16 * RM, col0 = blockIdx.x * 16 * RN;
    const int kbeg = blockIdx.z * kchunk, kend = min(K, kbeg + kchunk);
    real acc[RM][RN];
    #pragma unroll
    for (int i = 0; i < RM; ++i)
        #pragma unroll
        for (int j = 0; j < RN; ++j) acc[i][j] = 0;
    for (int k0 = kbeg; k0 < kend; k0 += 16) {
        #pragma unroll
        for (int e = t; e < 256 * RM; e += 256) {
            int i = sak == 1 ? e / 16 : e % (16 * RM), k = sak == 1 ? e % 16 : e / (16 * RM);
            int r = row0 + i, kk = k0 + k;
            As[k][i] = (r < M && kk < kend) ? A[r * sam + kk * sak] : (real)0;
        }
        #pragma unroll
        for (int e = t; e < 256 * RN; e += 256) {
            int j = sbn == 1 ? e % (16 * RN) : e / 16, k = sbn == 1 ? e / (16 * RN) : e % 16;
            int c = col0 + j, kk = k0 + k;
            Bs[k][j] = (kk < kend && c < N) ? B[kk * sbk + c * sbn] : (real)0;
        }
        __syncthreads();
        #pragma unroll
        for (int k = 0; k < 16; ++k) {
            real a[RM], b[RN];
            #pragma unroll
            for (int i = 0; i < RM; ++i) a[i] = As[k][ty + 16 * i];
            #pragma unroll
            for (int j = 0; j < RN; ++j) b[j] = Bs[k][tx + 16 * j];
            #pragma unroll
            for (int i = 0; i < RM; ++i)
                #pragma unroll
                for (int j = 0; j < RN; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
    #pragma unroll
    for (int i = 0; i < RM; ++i)
        #pragma unroll
        for (int j = 0; j < RN; ++j) {
            int r = row0 + ty + 16 * i, c = col0 + tx + 16 * j;
            if (r < M && c < N) C[((long long)blockIdx.z * M + r) * N + c] = acc[i][j];
        }
}
"""
_kernels: dict = {}
K_PER_SLICE = 2048     # the K axis is split into slices of about this length (at most 64)
@functools.cache
def _multiprocessors() -> int:
    """The GPU's streaming multiprocessors (read once: :func:`prepare` reads it before a recording)."""
    import cupy    # lazy: CuPy is the optional gpu extra
    return cupy.cuda.Device().attributes["MultiProcessorCount"]


def _tiles(M: int, N: int, slices: int):
    """(RM, RN): C's tiles of 64 rows and columns where C is that large and such tiles still give each of the GPU's
    multiprocessors a block (a large product), else of 16 along that side (small ones: more blocks, no rows wasted)."""
    for rm, rn in ((4, 4), (1, 4), (4, 1)):
        fits = (rm == 1 or M >= 64) and (rn == 1 or N >= 64)
        if fits and -(-M // (16 * rm)) * -(-N // (16 * rn)) * slices >= _multiprocessors():
            return rm, rn
    return 1, 1


def gemm(a, b):
    """``a @ b`` for 2-D CuPy float32/float64 arrays by deepscope's own kernel (see the module's docstring)."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0] or a.dtype != b.dtype:
        raise ValueError(f"gemm: cannot multiply {a.shape} {a.dtype} by {b.shape} {b.dtype}")
    if a.dtype not in (numpy.float32, numpy.float64):
        raise ValueError(f"gemm: float32 or float64 only, got {a.dtype}")
    slices, kchunk = _slices(a.shape[1])
    return _launch(a, b, slices, kchunk, *_tiles(a.shape[0], b.shape[1], slices))


def _slices(K: int):
    """(slices, kchunk): the K axis cut into slices of about ``K_PER_SLICE`` (at most 64), each a multiple of 16."""
    slices = max(1, min(64, K // K_PER_SLICE))
    kchunk = -(-K // slices)
    kchunk += -kchunk % 16
    return (-(-K // kchunk) if K else 1), kchunk


def _launch(a, b, slices, kchunk, rm, rn):
    """Run :func:`gemm`'s kernel with (16 RM) x (16 RN) tiles and the K axis in ``slices`` of ``kchunk``."""
    import cupy    # lazy: CuPy is the optional gpu extra
    kernel = _kernels.get((a.dtype, rm, rn))
    if kernel is None:
        real = "float" if a.dtype == numpy.float32 else "double"
        kernel = _kernels[a.dtype, rm, rn] = cupy.RawKernel(
            f"typedef {real} real;\n#define RM {rm}\n#define RN {rn}\n" + _GEMM_SOURCE, "gemm")
    (M, K), N = a.shape, b.shape[1]
    out = cupy.empty((slices, M, N), dtype=a.dtype)
    if M and N:
        s = a.itemsize
        kernel((-(-N // (16 * rn)), -(-M // (16 * rm)), slices), (16, 16),
               (a, b, out, numpy.int32(M), numpy.int32(N), numpy.int32(K),
                numpy.int64(a.strides[0] // s), numpy.int64(a.strides[1] // s),
                numpy.int64(b.strides[0] // s), numpy.int64(b.strides[1] // s), numpy.int32(kchunk)))
    return out[0] if slices == 1 else out.sum(axis=0)


def prepare(dtype) -> None:
    """Compile and load :func:`gemm`'s kernel and its sum over K slices for ``dtype``, before a recording: a
    kernel's first launch loads its module, which a recording should not have to do."""
    import cupy    # lazy: CuPy is the optional gpu extra
    a = cupy.ones((16, 16), dtype=dtype)
    for rm, rn in ((1, 1), (4, 4), (1, 4), (4, 1)):        # the four tile shapes
        _launch(a, a, 1, 16, rm, rn)
    a = cupy.ones((2, 2 * K_PER_SLICE), dtype=dtype)
    gemm(a, a.T)                       # two K slices: the sum
    cupy.cuda.get_current_stream().synchronize()

