"""The CPU's cores: deepscope's thread count, its thread pool, and the parallel fast paths of the layers.

One setting governs every thread deepscope runs: :func:`set_num_threads` (``deepscope.set_num_threads``,
``--threads`` on the command line; default ``$OMP_NUM_THREADS``, else the cores this process may use).
deepscope cuts the work of a layer into pieces that its threads share: chunks of the mini-batch for the
im2col copy, the GEMMs and col2im of a convolution, planes for poolings, flat ranges for activations, dropout
and the optimizer's update over one flat buffer, row blocks for the GEMMs of a linear layer (tiles of 4 rows
for the compiled loops that run its products with a small weight matrix). The pieces do
not depend on the thread count, so neither do the numbers a run computes. BLAS (OpenBLAS, through
threadpoolctl) runs one thread inside each of deepscope's, so the process never runs more threads than asked
for. That is what makes the default safe on a shared machine: OpenBLAS's own threads spin-wait between
calls, and on the loaded 2-core machine of issue 11 they turned 0.09 ms GEMMs into 230-300 ms stalls
(``benchmarks/cpu_speed.py``); deepscope's workers sleep while they wait for work, the caller never waits for
a worker that has not started (it takes the remaining pieces itself), and it waits for a worker's last piece
awake for at most ``WAIT_AWAKE_US`` (200 us), then asleep.

Memory: glibc's malloc hands the free top of its heap back to the kernel once it exceeds a threshold that it
raises only as far as the largest block freed so far, so a training step's freed temporaries went back at
the end of every step and were page-faulted in again by the next (issue 11: rung 1 at m=64 spent ~25% of
its CPU time, on one thread or two, in the kernel's page-fault and brk paths; with two threads faulting
into one address space it was the main reason the second core bought little). :func:`keep_freed_memory`
fixes glibc's thresholds at the values its own rule ends at (blocks up to 32 MB from the heap, up to 64 MB
of free heap kept), once, when deepscope is imported; a user who set glibc's malloc variables keeps them.

Fewer, larger parallel sections: a hand-over costs a worker's wake-up, so a Sequential's ``Conv2d → MaxPool2d(2) →
σ`` runs as one section (:func:`conv_pool_forward`, ``nn/fuse.py``) rather than one per layer, and each thread's share
of it is one compiled call that never takes the GIL (NumPy's own BLAS called from the compiled code: :func:`blas_gemm`).

A fast path takes only NumPy arrays (:func:`fast`): CuPy arrays, and any run where numba is missing, take
the layer's own NumPy/CuPy expression, which is also the reference each fast path is tested against
(``tests/test_cpu.py``). The loops themselves are in ``deepscope._kernels`` (compiled by numba on first use).

    >>> import deepscope
    >>> deepscope.set_num_threads(2)
"""
from __future__ import annotations

import ctypes
import glob
import itertools
import os
import queue
import threading
import time
from pathlib import Path

import numpy
from threadpoolctl import threadpool_info, threadpool_limits

from . import device

_lock = threading.Lock()
_num_threads = None
_pool = None
_kernels = None            # deepscope._kernels once imported; False when numba is unavailable
_enabled = True
_local = threading.local()


# -- the thread count ------------------------------------------------------------------------------------
def default_num_threads() -> int:
    """``$OMP_NUM_THREADS`` if set (a positive integer), else the number of cores this process may use."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def set_num_threads(n: int) -> None:
    """Run deepscope's work on ``n`` threads (and BLAS at one thread inside each)."""
    global _num_threads, _pool
    if isinstance(n, bool) or not isinstance(n, (int, numpy.integer)) or n < 1:
        raise ValueError(f"set_num_threads: expected a positive integer, got {n!r}")
    with _lock:
        _num_threads = int(n)
        if _pool is not None and _pool.size != _num_threads:
            _pool.close()
            _pool = None
    _limit_blas()


def get_num_threads() -> int:
    """The number of threads deepscope runs on."""
    if _num_threads is None:
        set_num_threads(default_num_threads())
    return _num_threads


def _limit_blas() -> None:
    # One BLAS thread: each of deepscope's threads calls BLAS on its own shard (see the module docstring).
    threadpool_limits(1, user_api="blas")


# -- the pool ----------------------------------------------------------------------------------------------
class _Job:
    """One ``parallel`` call: shards taken in turn by whichever thread is free, the caller included."""

    def __init__(self, fn, shards):
        self.fn, self.shards = fn, shards
        self.next = itertools.count()          # next(count) is atomic: each shard is taken exactly once
        self.finished = itertools.count(1)     # ... and counted once when it is done
        self.results = [None] * len(shards)
        self.error = None
        self.done = threading.Lock()           # held until the last shard is done (a plain lock: a threading.Event
        self.done.acquire()                    # runs a Condition's Python code in both threads, each section)
        self.flag = numpy.zeros(1, dtype=numpy.int64)   # 1: done (written without the GIL), 2: the caller saw it

    def work(self) -> bool:
        """Run shards until none is left to take; True if this thread finished the job's last shard."""
        last, n = False, len(self.shards)
        while True:
            i = next(self.next)
            if i >= n:
                return last
            try:
                self.results[i] = self.fn(*self.shards[i])
            except BaseException as e:  # noqa: BLE001 - handed to the caller, which re-raises it
                self.error = self.error or e
            if next(self.finished) == n:
                self.done.release()
                last = True


WAIT_AWAKE_US = 200     # how long the caller waits awake (spinning, without the GIL) for a worker still running
                        # a shard before it sleeps: on issue 11's VM a sleeping thread's core halts and takes
                        # ~30-50 us to wake. 2 shards of ~45 us (2 threads, loaded machine, chrt -f 10): from the
                        # worker's last shard ending to the caller returning 17-23 us asleep, 6-7 us awake. A longer
                        # wait sleeps: on a loaded machine the worker may not be running at all


PARK_US = 300           # a worker done with its shards waits this long, awake and without the GIL, for the next job
                        # before it goes back to the queue (0: at once): it then takes the GIL once a section (to
                        # start the next job), not twice (also to get back to the queue, while the caller runs the
                        # serial work between sections: ~4 of rung 1's ~10 sleeps a step at m=64)


GIL_GRACE_US = 10       # a parked worker that sees the next job waits this much longer, awake and without the GIL, before
                        # it asks for the GIL: the caller holds the GIL from handing the job out until it enters its own
                        # shard's compiled code (or BLAS), and a thread that asks for a held GIL sleeps (CPython has it
                        # wait on a condition variable) and pays the ~30-50 us wake-up. Rung 1 at m=64, own kernels,
                        # 2 threads, cores close, alternating in one process (thread_profile.py --ab GIL_GRACE_US=0):
                        # 1,244 against 1,306 us a step, 1.2 against 5.8 sleeps; the dropout net 5,620 against 5,813 us


HAND_OUT_AT_CALL = 1    # 1: parallel(..., hands_out=True) hands the job out from the caller's first shard, right before
                        # its GIL-free call (hand_out()), and a parked worker asks for the GIL HAND_OUT_GRACE_US after
                        # it sees the job; 0: when the section starts, with GIL_GRACE_US. Handed out at the start, the
                        # worker began its shard ~15 us after the caller (the grace, then its own Python) and the
                        # caller waited 5-15 us for it at the end of each of rung 1's 4 sections (m=64, own kernels,
                        # cores close: each section 15-25 us over half its 1-thread time, 12-21 after). Rung 1 at
                        # m=64, own kernels, cores close (88 ns), 2 threads, alternating in one process
                        # (thread_profile.py --ab HAND_OUT_AT_CALL=0, 11 rounds of 10 steps, load ~0.3): 1,184 / 1,190
                        # against 1,221 / 1,278 us a step; the dropout net 4,774 against 4,826. 1 thread: no pool.
HAND_OUT_GRACE_US = 5   # the Python left between hand_out() and the GIL-free call (a numba call's dispatch ~1 us, NumPy's
                        # argument parsing), with room: at 2 us the two threads' Python between their calls collided more
                        # often (cores apart, 2 threads: rung 1 1.0 against 0.3 GIL sleeps a step, 1,446 against 1,433
                        # us; the dropout net 3.3 against 0.5, 6,152 against 5,831: thread_profile.py --ab HAND_OUT_GRACE_US=5)


class _Pool:
    """``size - 1`` worker threads that sleep on a queue until there is work. The caller takes shards too and
    never waits for a worker that has not started: on a loaded machine a sleeping thread may wake late, and
    then the caller simply runs its shards as well (the work is never held up by a late thread). The caller
    waits for a worker still running a shard awake, without the GIL, for up to ``WAIT_AWAKE_US`` (then
    sleeps); the worker that finishes the last shard signals it from outside the GIL and holds off taking the
    GIL back until the caller has it, so that the caller does not sleep on the GIL either; it then waits, still
    awake and without the GIL, up to ``PARK_US`` for the next job, so that it takes the GIL back only to start that
    job, and then ``GIL_GRACE_US`` more, so that it asks for it once the caller has let it go. (A worker that took
    the GIL back first and then waited awake for the next job gained nothing: it must take the GIL to start it,
    which the caller holds while it hands the job out, and slept there; rung 1 at m=64, 2 threads: 3.40 -> 4.16 ms
    a step.) A section whose shards call :func:`hand_out` is handed out later, when the caller's first shard is
    about to let the GIL go (``HAND_OUT_AT_CALL``), with a shorter grace."""

    def __init__(self, size: int):
        self.size, self.parked_until = size, 0
        self._tasks = queue.SimpleQueue()
        self._posted = numpy.zeros(2, numpy.int64)      # [jobs handed out so far (a parked worker watches it),
                                                        #  the last one's grace in ns (_kernels.park)]
        k = kernels()
        self._wait = k if k is not None and k.wait_until is not None else None
        if self._wait is not None:              # compiled now (not cached on disk), not inside the first job
            k.wait_until(numpy.ones(1, numpy.int64), 0, 1, 0)
            k.publish(numpy.zeros(1, numpy.int64), 0, 1, 0)
            k.publish_and_park(numpy.zeros(1, numpy.int64), 0, 1, 0, numpy.zeros(2, numpy.int64), 0, 0)
        for _ in range(size - 1):
            threading.Thread(target=self._work, daemon=True, name="deepscope-worker").start()

    def _work(self):
        _local.busy = True       # work started from a worker runs inline (no nesting)
        while True:
            job = self._tasks.get()
            if job is None:
                return
            # The job's own number, not the count now: a worker that took a job late, after the next one was out
            # (the caller had run it alone), then waited for the one after that, and stayed one job behind, with no
            # shard left to take, for as long as jobs came less than PARK_US apart (rung 1 at m=64 read 1.14).
            seen = job.number
            last, flag = job.work(), job.flag
            del job         # not held while this thread waits: its shards' arrays would stay alive into the next step
            if self._wait is None:
                continue
            if last:        # tell the caller, then wait for the next job, all without the GIL
                self._wait.publish_and_park(flag, 0, 1, WAIT_AWAKE_US * 1000, self._posted, seen, PARK_US * 1000)
            elif PARK_US:
                self._wait.park(self._posted, seen, PARK_US * 1000)

    def run(self, fn, shards, hands_out=False):
        job = _Job(fn, shards)
        job.number = int(self._posted[0]) + 1
        for _ in range(min(self.size, len(shards)) - 1):
            self._tasks.put(job)
        if hands_out and HAND_OUT_AT_CALL and self._wait is not None:
            _local.unposted = (self, job.number)        # fn's first shard here posts it: hand_out()
        else:
            self._post(job.number, GIL_GRACE_US)
        job.work()
        if self._posted[0] != job.number:       # fn did not call hand_out(): the workers take what is left, if any
            _local.unposted = None
            self._post(job.number, GIL_GRACE_US)
        if job.done.locked() and self._wait is not None:
            self._wait.wait_until(job.flag, 0, 1, WAIT_AWAKE_US * 1000)
        job.done.acquire()
        if PARK_US and self._wait is not None:      # the workers now wait awake PARK_US from their last shard's end:
            self.parked_until = time.perf_counter_ns() + PARK_US * 500  # count on half of it (workers_parked)
        job.flag[0] = 2                 # the worker that published may take the GIL now
        if job.error is not None:
            raise job.error
        return job.results

    def _post(self, number, grace_us):
        self._posted[1] = grace_us * 1000
        self._posted[0] = number

    def close(self):
        for _ in range(self.size - 1):
            self._tasks.put(None)


def hand_out() -> None:
    """Called by a shard function of ``parallel(..., hands_out=True)`` right before its GIL-free call (compiled
    loops, BLAS): on the calling thread's first shard this hands the job out to the parked workers, with a grace of
    ``HAND_OUT_GRACE_US``; elsewhere it does nothing."""
    unposted = getattr(_local, "unposted", None)
    if unposted is not None:
        _local.unposted = None
        pool, number = unposted
        pool._post(number, HAND_OUT_GRACE_US)


# -- memory: a step's freed temporaries stay in the heap for the next step ----------------------------------
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3     # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD_BYTES = 32 << 20                 # blocks below this come from the heap (glibc's DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD_BYTES = 64 << 20                 # free heap kept before trimming (2x the above, as glibc's own rule)
_MALLOC_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory() -> bool:
    """Fix glibc's trim and mmap thresholds at the values its dynamic rule ends at (see the module docstring),
    so that the memory a training step frees is reused by the next step instead of being returned to the
    kernel and page-faulted back in. True when set; False where there is no glibc (macOS, Windows, musl) or
    the user has set glibc's malloc variables (``MALLOC_*_`` or ``glibc.malloc`` in ``GLIBC_TUNABLES``)."""
    if any(v in os.environ for v in _MALLOC_VARIABLES) or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                                   TRIM_THRESHOLD_BYTES))


def _reset_after_fork():
    global _pool, _lock
    _pool, _lock = None, threading.Lock()   # the child has none of the parent's threads


os.register_at_fork(after_in_child=_reset_after_fork)
set_num_threads(default_num_threads())
keep_freed_memory()


def split(n: int, parts: int) -> list:
    """``range(n)`` as at most ``parts`` contiguous ``(start, stop)`` pieces of near-equal size."""
    parts = max(1, min(parts, n))
    return [(n * i // parts, n * (i + 1) // parts) for i in range(parts)]


def one_shard(n: int, min_per_shard: int = 1) -> bool:
    """Whether work of size ``n`` is one shard (one thread, or too small to share): :func:`parallel` then makes
    one call; a caller on a hot path may call its kernel directly instead."""
    return n < 2 * max(1, min_per_shard) or get_num_threads() == 1


def parallel(fn, n: int, min_per_shard: int = 1, hands_out: bool = False) -> list:
    """``[fn(start, stop) for (start, stop) in split(n, k)]`` with the k shards run at once on the pool, k ≤
    the thread count and every shard at least ``min_per_shard`` long (smaller work runs in one call).
    ``hands_out``: fn calls :func:`hand_out` right before its GIL-free call, and the workers start from there."""
    global _pool
    if one_shard(n, min_per_shard) or getattr(_local, "busy", False) or not _lock.acquire(blocking=False):
        return [fn(0, n)]
    k = min(get_num_threads(), n // max(1, min_per_shard))
    try:
        _local.busy = True
        if _pool is None:
            _pool = _Pool(_num_threads)
        return _pool.run(fn, split(n, k), hands_out)
    finally:
        _local.busy = False
        _lock.release()


# -- when a fast path applies ----------------------------------------------------------------------------
def kernels():
    """``deepscope._kernels``, or None when numba is not installed."""
    global _kernels
    if _kernels is None:
        try:
            from . import _kernels as k  # numba is heavy (~0.5 s to import): only when a fast path first runs
            _kernels = k
        except ImportError:
            _kernels = False
    return _kernels or None


_FAST_DTYPES = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


def fast(*arrays) -> bool:
    """True when the CPU fast paths apply: all arrays NumPy float32/float64, numba present, not disabled."""
    if not _enabled:
        return False
    for a in arrays:
        if type(a) is not numpy.ndarray or a.dtype not in _FAST_DTYPES:  # numba has no float16
            return False
    return bool(_kernels) or kernels() is not None


class reference:
    """Context manager: run the layers' NumPy reference expressions instead of the fast paths (tests)."""

    def __enter__(self):
        global _enabled
        self._was, _enabled = _enabled, False

    def __exit__(self, *exc):
        global _enabled
        _enabled = self._was


def _flat(a):
    """The 1-D view, in memory order, of an array whose elements fill one block (no copy), else None."""
    r = a.ravel(order="K")
    return r if r.size <= 1 or numpy.shares_memory(r, a) else None


def _element_strides(a):
    return tuple(s // a.itemsize for s in a.strides)


ELEMENTS_PER_SHARD = 262_144    # below this an elementwise shard is not worth a thread hand-over: on the 2-core
                                # VM of issue 11 waking a worker costs ~50 us and the data it wrote must move to
                                # the other core's cache; at 65,536 rung 1's σ' (184,320 elements) and SGD update
                                # (289,630) took 1.6x and 1.3x longer on 2 threads than on 1


def elementwise(kernel, like, *arrays, out_dtypes=(None,)):
    """Run ``kernel(*inputs, *outputs)`` on matching 1-D shards of ``arrays`` (all shaped and laid out like
    ``like``) and of new output arrays (one per entry of ``out_dtypes``, None = ``like``'s dtype), the shards
    on the threads; returns the outputs, laid out like ``like``; None when the layouts differ (the caller
    then takes its reference path). Work under two shards' worth is one direct kernel call."""
    n, shape = like.size, like.shape
    row_major = like.flags.c_contiguous
    for a in arrays:
        row_major = row_major and a.flags.c_contiguous and a.shape == shape
    if row_major:                                               # the common case: row-major (so are the outputs)
        outs = [numpy.empty(shape, like.dtype if d is None else d) for d in out_dtypes]
        flats = [a.reshape(n) for a in arrays] + [o.reshape(n) for o in outs]
    else:
        outs = [numpy.empty_like(like, dtype=d) for d in out_dtypes]
        every = (*arrays, *outs)
        strides = _element_strides(like)
        if any(a.shape != like.shape or _element_strides(a) != strides or min(a.strides, default=0) < 0
               for a in every):
            return None
        flats = [_flat(a) for a in every]
        if any(f is None for f in flats):
            return None
    if one_shard(n, ELEMENTS_PER_SHARD):
        kernel(*flats)
    else:
        parallel(lambda s, e: kernel(*(f[s:e] for f in flats)), n, ELEMENTS_PER_SHARD)
    return outs


# -- memory laid out for the vector loops ----------------------------------------------------------------
CACHE_LINE = 64     # bytes: a cache line, and one AVX-512 vector


def empty_aligned(shape, dtype):
    """``numpy.empty(shape, dtype)`` starting on a cache line (NumPy's own arrays start on 16 bytes): a vector load
    or store that straddles two lines costs two, and Linear's compiled loops over a 64x784 input and a 30x784 weight
    ran ~20% slower off the line (Zen 5, 1 thread: W.grad += δᵀx 20 vs 25-27 us; see optim.FlatParameters)."""
    dtype = numpy.dtype(dtype)
    n = int(numpy.prod(shape, dtype=numpy.int64))
    raw = numpy.empty(n * dtype.itemsize + CACHE_LINE, numpy.uint8)
    skip = -raw.ctypes.data % CACHE_LINE
    return raw[skip:skip + n * dtype.itemsize].view(dtype).reshape(shape)


def zeros_aligned(n: int, dtype, xp=numpy):
    """A flat array of ``n`` zeros of ``xp`` starting on a cache line (:func:`empty_aligned`; CuPy's own arrays
    start on 256 bytes)."""
    if xp is not numpy:
        return xp.zeros(n, dtype=dtype)
    out = empty_aligned(n, dtype)
    out.fill(0)
    return out


def zero(a) -> None:
    """``a[...] = 0`` for a contiguous NumPy float array, by its bytes (+0.0 is all zero bits): NumPy fills floats
    one element at a time, bytes by memset ([784,30,10]'s 95 KB of gradients, Zen 5: 1.59 -> 0.67 us)."""
    a.view(numpy.uint8).fill(0)


def take_rows(x, index):
    """``x[index]`` (a mini-batch drawn from a training set) for a row-major NumPy float array ``x`` and a 1-D int64
    ``index``, starting on a cache line (:func:`empty_aligned`: Linear's loops run W.grad += δᵀx for a 64x784 input
    by a 30x784 weight in 18.5 us on it, 23 us off it, Zen 5), copied by a compiled loop that starts loading each
    row before it copies it (``_kernels.take_rows``); None where that does not apply or a row number is out of
    range (the caller takes ``x[index]``, which says so)."""
    if not (type(x) is numpy.ndarray and x.dtype in _FAST_DTYPES and x.ndim >= 1 and x.flags.c_contiguous
            and type(index) is numpy.ndarray and index.ndim == 1 and index.dtype == numpy.int64 and _enabled
            and (_kernels or kernels())):
        return None
    row = x.size // len(x) if len(x) else 0
    space = numpy.empty(len(index) * row + CACHE_LINE // x.itemsize, x.dtype)
    skip = _kernels.take_rows(x.reshape(len(x), row), index, space)
    if skip < 0:
        return None
    return space[skip:skip + len(index) * row].reshape(len(index), *x.shape[1:])


# -- linear algebra ---------------------------------------------------------------------------------------
MACS_PER_SHARD = 2_000_000      # below this a GEMM block is not worth a thread hand-over
GEMM_BLOCKS = 2                 # the most blocks a GEMM is cut into: one a thread on 2 cores. 4 blocks ran each thread's
                                # two as two calls (and two repackings of the larger operand), also at 1 thread: rung 1
                                # at m=64, Haswell kernels, 1 / 2 threads, chrt'd, cores close, alternating in one process
                                # (thread_profile.py --ab GEMM_BLOCKS=2), 4 blocks 2958/1840, 2659/1593, 2909/1679,
                                # 2828/1722 us a step against 2 blocks 2767/1653, 2569/1535, 2789/1597, 2775/1638; the
                                # dropout net, rung 3 and m = 10 or 256 within ±2%. (More cores: fewer of them on Linear.)
AVX512_BLOCK_SCALE = 4          # under OpenBLAS's AVX-512 kernels a GEMM of cache-sized arrays: 4x larger blocks
CORE_CACHE_BYTES = 1 << 20      # a core's L2 (Zen 5: 1 MB): arrays this small gain nothing from being cut


def gemm_block_macs(largest_array_bytes: int) -> int:
    """The fewest multiply-adds in a block of :func:`matmul`: 2 x ``MACS_PER_SHARD``, and ``AVX512_BLOCK_SCALE``
    times that under OpenBLAS's AVX-512 kernels (:func:`blas_runs_avx512`) when the largest of the operands and
    the product fits in a core's cache. Those kernels run a product ~1.9x faster and pay more for each cut, which
    then gains no cache: on a Zen 5 core, 1 thread, 256x784x100 took 204 / 240 / 289 us in 1 / 2 / 4 blocks,
    256x2880x100 758 / 879 / 1,060 (Haswell kernels 1,413 / 1,428 / 1,480). So FC 784-100-10 at m=256 (20M
    multiply-adds a product, the 256x784 input 0.8 MB) runs one call, which a second thread woken for ~50 us cannot
    beat: in 4 blocks it had trained at 312k img/s on 2 threads and 353k on 1 (PyTorch 317k on 2). A larger array
    (the dropout net's 4 MB 1000x1000 weight and its gradient at m=10) is still cut: each core then holds its half
    (in one call that net ran 12% slower on 2 threads)."""
    wide = blas_runs_avx512() and largest_array_bytes <= CORE_CACHE_BYTES
    return 2 * MACS_PER_SHARD * (AVX512_BLOCK_SCALE if wide else 1)


def matmul(a, b, add_to=None):
    """``a @ b`` for 2-D arrays (with ``add_to``: ``add_to += a @ b``, returning ``add_to``): a large product in up to
    ``GEMM_BLOCKS`` blocks (each at least :func:`gemm_block_macs` multiply-adds: smaller blocks cost more than a second thread
    gains) that the threads share: rows of ``a`` when ``a`` is
    the larger operand, else columns of ``b``, so that each block repacks only its share of the larger operand and
    runs almost as fast as one call (8 thin row blocks had cost up to 1.8x one call on a single thread); each
    thread adds its block into ``add_to`` while the block is in its cache. The blocks depend on the sizes and the
    BLAS, not on the thread count, so neither does the result. Linear's two products with a small weight matrix and
    a few rows (x Wᵀ + b, and W.grad += δᵀ x) run compiled loops instead where they beat BLAS (:func:`linear`)."""
    blocks = _gemm_blocks(a, b, add_to)
    if blocks is None:
        if _transposed(a, b):                                   # a few rows of inputs by a tall weight (x Wᵀ at small
            out = numpy.ascontiguousarray((b.T @ a.T).T)        # m): OpenBLAS is ~25% faster on the transposed product
        elif add_to is not None and _holds_plus_zeros(add_to, a, b):
            numpy.matmul(a, b, out=add_to)                      # add_to = a @ b: the same BLAS call, into add_to ...
            return numpy.add(add_to, 0, out=add_to)             # ... + 0 (= 0 + (a @ b), -0.0 included), bit for bit
        else:
            out = device.matmul(a, b)                           # (a GPU's own kernel while a CUDA graph records)
        if add_to is None:
            return out
        add_to += out
        return add_to
    out, run = blocks
    _run_blocks(run)
    return out


def _holds_plus_zeros(add_to, a, b) -> bool:
    """:func:`matmul`'s ``add_to += a @ b`` may write ``a @ b`` into ``add_to`` instead of into a new array: NumPy
    arrays of one dtype, ``add_to`` contiguous and all +0.0 (its bits all zero, as ``zero_grad`` leaves W.grad) and
    apart from ``a`` and ``b``. Then ``0 + (a @ b)`` is ``(a @ b) + 0``, and the step holds no temporary the size of
    W.grad: FC 784-100-10's 100x784 float32 at m = 64 and 256 (313.6 KB), most of the step's peak-RSS growth in
    cpu_speed.memory (438-451 KB at m=64 on 2 threads, PyTorch 438 or 786). Checking the bits (:func:`_bits`) and
    the + 0 cost about what the temporary's add did."""
    return (type(add_to) is numpy.ndarray and type(a) is numpy.ndarray and type(b) is numpy.ndarray
            and add_to.dtype == a.dtype == b.dtype and add_to.dtype in _FAST_DTYPES and add_to.flags.c_contiguous
            and add_to.size and not numpy.may_share_memory(add_to, a) and not numpy.may_share_memory(add_to, b)
            and _bits(add_to).max() == 0)


def _bits(a):
    """A contiguous float array's bits as unsigned integers, 8 bytes each where its length allows: their max() is 0
    exactly when every number is +0.0, and NumPy's unsigned max runs in vector lanes (100x784 float32, Zen 5: 2.6 us,
    where any() took 7.1)."""
    flat = a.reshape(-1)
    return flat.view(numpy.uint64 if flat.nbytes % 8 == 0 else numpy.uint32)


def _transposed(a, b) -> bool:
    m, k = a.shape
    return m < b.shape[1] <= k and type(a) is numpy.ndarray


def matmul_is_plain(a, b) -> bool:
    """Whether :func:`matmul` computes ``a @ b`` as NumPy's one ``a @ b`` (one block, not the transposed product)."""
    return _gemm_block_count(a, b) == 1 and not _transposed(a, b)


def _run_blocks(run):
    """The blocks of :func:`_gemm_blocks` (of one product or several), shared by the threads."""
    parallel(lambda s, e: [f() for f in run[s:e]], len(run), hands_out=True)


def _gemm_block_count(a, b) -> int:
    """How many blocks :func:`matmul` cuts ``a @ b`` into: a power of 2 up to ``GEMM_BLOCKS``, each of at least
    :func:`gemm_block_macs` multiply-adds."""
    m, k = a.shape
    n = b.shape[1]
    if m * k * n < 4 * MACS_PER_SHARD:          # under two blocks of the fewest multiply-adds gemm_block_macs gives
        return 1
    largest = max(a.nbytes, b.nbytes, m * n * numpy.result_type(a, b).itemsize)      # operands and product
    blocks, least = 1, gemm_block_macs(largest)
    while blocks < GEMM_BLOCKS and m * k * n >= 2 * blocks * least:
        blocks *= 2
    return blocks


def _gemm_blocks(a, b, add_to=None):
    """:func:`matmul`'s blocks: ``(out, [block, ...])`` with each block a call that computes (or adds into
    ``add_to``) its rows or columns of ``a @ b`` in ``out``, in any order on any thread; None for one block."""
    m, k = a.shape
    n = b.shape[1]
    blocks = _gemm_block_count(a, b)
    if blocks == 1 or not fast(a, b) or (add_to is not None and type(add_to) is not numpy.ndarray):
        return None
    out = numpy.empty((m, n), dtype=numpy.result_type(a, b)) if add_to is None else add_to
    by_rows = a.size >= b.size

    def block(lo, hi):
        rows, cols = (slice(lo, hi), slice(None)) if by_rows else (slice(None), slice(lo, hi))

        def run():
            ai, bj, oij = a[rows], b[:, cols], out[rows, cols]
            hand_out()
            if add_to is None:
                numpy.matmul(ai, bj, out=oij)                   # one block of a @ b
            else:
                numpy.add(oij, ai @ bj, out=oij)                # ... added in
        return run

    return out, [block(lo, hi) for lo, hi in split(m if by_rows else n, blocks)]


SMALL_WEIGHT_ROWS = 256         # a mini-batch of at most this many rows ...
SMALL_WEIGHT_BYTES = 1 << 19    # ... by a weight matrix this small (it stays in the core's cache) ...
SMALL_WEIGHT_MIN_INPUTS = 256   # ... with rows this long at least (the loops run along them): compiled loops
SMALL_MACS = 262_144            # ... and under OpenBLAS's AVX-512 kernels, both products up to this many multiply-adds
SMALL_PRODUCT_MIN_INPUTS = 100  # ... which also holds for rows this long at least, under either kernels: a 100->10 layer
                                # (rung 1's and FC 784-100-10's last) at m=64, Zen 5, 1 thread, forward / backward with
                                # ∂C/∂x, own kernels 5.1 / 10.4 us by BLAS against 4.1 / 5.2 by the loops (Haswell kernels
                                # 6.1 / 12.7 against 4.1 / 6.2); m=256 11.8 / 16.2 against 8.1 / 10.1; 100->30 and 100->100
                                # up to 262,144 multiply-adds 1.1-1.9x; rows of 10-20 are slower (10->100 at m=64 forward
                                # 5.8 against 8.4 us; the layer alone, timed in one process, alternating). (256: rows of 256 only, as before)
FORWARD_LOOPS_ROWS = 64         # ... and under OpenBLAS's AVX-512 kernels, the forward product of at most this many rows
GRAD_LOOPS_ROWS = 64            # ... and W.grad += δᵀx (with b.grad += Σδ) of at most this many rows ...
GRAD_LOOPS_MACS = 2_000_000     # ... and multiply-adds (W.grad on a cache line: optim.FlatParameters)
TINY_MACS = 32_768              # a product this small: compiled loops everywhere (measured, Zen 5, 1 thread: 64x30 by
                                # 30x10 with its bias 1.3 us against 2.6 us by BLAS and NumPy's add)
INPUT_GRAD_LOOPS_MACS = 10_000  # ∂C/∂x = δ W by the loops only up to this many multiply-adds: their rows of n_in = 30 are
                                # one 16-wide vector and 14 scalar lanes each (Zen 5, 1 thread, δ 10 neurons wide: 10x30
                                # out 0.6 vs 0.8-1.6 us by BLAS, 64x30 2.7-5.1 vs 1.0-2.2 us)
AVX2_SHORT_ROWS_LOOPS_MACS = 100_000   # on a CPU without AVX-512 (AVX2, 16 registers of 256 bits: the loops' tiles
                                # are _kernels.VECTOR_BITS wide there) the forward product runs the loops for rows of at
                                # least _kernels.VECTOR_TILE_MIN_INPUTS (256) inputs, or at most this many multiply-adds; W.grad
AVX2_GRAD_LOOPS_INPUTS = 128    # += δᵀx for rows of at most this many inputs, or at most AVX2_GRAD_LOOPS_ROWS rows.
AVX2_GRAD_LOOPS_ROWS = 128      # Zen 3, 1 thread, float32, BLAS's time over the loops' (with NumPy's bias add or sum),
                                # m = 10 / 32 / 64 / 128 / 256, forward: 784->30 3.2 / 2.2 / 1.9 / 1.8 / 1.5, 784->100
                                # 2.4 / 1.5 / 1.3 / 1.1 / 1.1, 1000->100 2.1 / 1.4 / 1.2 / 1.1 / 1.0, 1000->10 3.0 / 2.0 /
                                # 1.7 / 1.7 / 1.5, 100->10 2.6 / 1.7 / 1.3 / 1.0 / 0.9, 100->30 1.7 / 1.0 / 0.8 / 0.7 /
                                # 0.6; W.grad: 784->30 2.6 / 2.1 / 1.6 / 1.5 / 1.1, 784->100 1.9 / 1.5 / 1.2 / 1.2 / 1.1,
                                # 1000->100 1.9 / 1.6 / 1.2 / 1.2 / 0.8, 100->10 7.1 / 5.6 / 4.3 / 2.2 / 2.0


AVX512_OPENBLAS = ("SkylakeX", "Cooperlake", "SapphireRapids")    # OpenBLAS's cores with AVX-512 kernels
_loops_win = None


def _blas_libraries() -> list:
    """NumPy's BLAS libraries, as threadpoolctl describes them (internal_api, architecture, ...)."""
    return [i for i in threadpool_info() if i.get("user_api") == "blas"]


def loops_beat_blas() -> bool:
    """Whether the compiled loops of Linear's small products beat BLAS on this machine: the CPU has AVX2 and FMA
    (numba compiles the loops for its widest vectors) and NumPy's BLAS is an OpenBLAS running kernels narrower than
    AVX-512 (its Haswell/Zen kernels: a CPU without AVX-512, or OPENBLAS_CORETYPE=Haswell on one with it). Measured,
    [784,30,10] ``fit`` against a network2.py-style loop (``benchmarks/cpu_speed.py``'s comparison), 1 thread: on a
    Zen 3 core (AVX2) the loops 7.3-8.4x the loop at m=10 and 15.2-15.7x at m=64, BLAS 3.0-3.1x and 10.8-11.1x; on
    a Zen 5 core (AVX-512), 784-30 and 784-100 layers at mini-batches 10-256, the loops 1.1-2.1x faster than OpenBLAS's
    Haswell kernels, but 1.04-1.9x slower than its SkylakeX (AVX-512) kernels in most of those products. Decided
    once, on first use."""
    global _loops_win
    if _loops_win is None:
        features, blas = host_cpu_features(), _blas_libraries()
        _loops_win = bool(features.get("avx2") and features.get("fma")) and bool(blas) and all(
            i.get("internal_api") == "openblas" and i.get("architecture") not in AVX512_OPENBLAS for i in blas)
    return _loops_win


_host_features = None


def host_cpu_features() -> dict:
    """This CPU's features as numba's compiler sees them ({"avx2": True, ...}). Asked once, on first use."""
    global _host_features
    if _host_features is None:
        from llvmlite import binding        # numba's compiler: present whenever the loops are (lazy, as numba)
        _host_features = dict(binding.get_host_cpu_features())
    return _host_features


_avx512_host = None


def host_avx512() -> bool:
    """Whether this CPU has AVX-512 (where the loops' register tiles are 512-bit vectors; tests set ``_avx512_host``
    to check the other CPU's choices). Decided once, on first use."""
    global _avx512_host
    if _avx512_host is None:
        _avx512_host = bool(host_cpu_features().get("avx512f"))
    return _avx512_host


_avx512_blas = None


def blas_runs_avx512() -> bool:
    """Whether NumPy's BLAS is an OpenBLAS running its AVX-512 kernels (its own choice on a CPU with AVX-512, unless
    OPENBLAS_CORETYPE names narrower ones). Decided once, on first use."""
    global _avx512_blas
    if _avx512_blas is None:
        blas = _blas_libraries()
        _avx512_blas = bool(blas) and all(
            i.get("internal_api") == "openblas" and i.get("architecture") in AVX512_OPENBLAS for i in blas)
    return _avx512_blas


def linear_runs_loops(x, w, *others, forward=False) -> bool:
    """Whether Linear's products for ``x`` (m, k) and ``w`` (n, k) (and ``others``: (m, n) and (n,) arrays or None)
    run the compiled loops of ``_kernels.linear_*``: all row-major NumPy arrays of one float dtype, and either a tiny
    product (at most ``TINY_MACS`` multiply-adds: a BLAS call and NumPy's bias add or sum cost more than the whole
    loop), or a few long rows by a small ``w`` on a machine where the loops beat BLAS (:func:`loops_beat_blas`;
    with short rows, k = 30 or 100, they are slower there in larger products). The ``forward`` product x Wᵀ + b of at most
    ``FORWARD_LOOPS_ROWS`` rows also beats OpenBLAS's AVX-512 kernels (its 4x4 register tiles; Zen 5, 1 thread,
    k = 784, n = 10-100: m = 10 1.07-1.31x, m = 64 1.12-1.75x, e.g. 64x784 by 784x30 20 vs 35 us). W.grad += δᵀx, with
    W.grad on a cache line (optim.FlatParameters), beats them up to ``GRAD_LOOPS_ROWS`` rows and ``GRAD_LOOPS_MACS``
    multiply-adds ([784,30,10] fit at m=64, CPU time a step, loaded: 113.6 -> 106.8 us) but not beyond ([784,100,10]
    at m=64: 196 -> 207 us; before the alignment it lost from m = 64, 0.69-0.85x); at m = 256 the loops' gain (1.08x
    for n = 100) does not pay for cutting the product between 2 threads, which those kernels' one call need not (FC 784-100-10, 2 threads: 339k
    vs 371k img/s). Both products of at most ``SMALL_MACS`` multiply-adds beat those kernels too (a BLAS call's
    fixed costs and NumPy's separate add and sum: W.grad += δᵀx, b.grad += Σδ, k = 784, n = 10-30, m = 10-24: 1.15-1.44x,
    at 250k multiply-adds (32x784x10) 0.98x), and so do they OpenBLAS's narrower kernels, down to rows of
    ``SMALL_PRODUCT_MIN_INPUTS`` (a 100->10 layer at m = 64-256: 1.4-2.0x; rows of 10-20 are slower). On a CPU
    without AVX-512 (:func:`host_avx512`), beyond the tiny products, only the forward product of rows of at least
    ``_kernels.VECTOR_TILE_MIN_INPUTS`` inputs or of at most ``AVX2_SHORT_ROWS_LOOPS_MACS`` multiply-adds, and W.grad += δᵀx of
    rows of at most ``AVX2_GRAD_LOOPS_INPUTS`` inputs or of at most ``AVX2_GRAD_LOOPS_ROWS`` rows."""
    rows = x.shape[0]
    if not (rows > 0 and _enabled and type(x) is numpy.ndarray and type(w) is numpy.ndarray      # (fast(x, w),
            and x.dtype == w.dtype and x.dtype in _FAST_DTYPES and (_kernels or kernels())      # written out: this
            and x.flags.c_contiguous and w.flags.c_contiguous):                                 # runs 4 times a step)
        return False
    for a in others:
        if a is not None and (type(a) is not numpy.ndarray or a.dtype != w.dtype or not a.flags.c_contiguous):
            return False
    macs = rows * w.size
    if macs <= TINY_MACS:
        return True
    if not (rows <= SMALL_WEIGHT_ROWS and w.nbytes <= SMALL_WEIGHT_BYTES and x.shape[1] >= SMALL_PRODUCT_MIN_INPUTS
            and (loops_beat_blas() or blas_runs_avx512())):
        return False
    if not host_avx512():
        if forward:
            return x.shape[1] >= kernels().VECTOR_TILE_MIN_INPUTS or macs <= AVX2_SHORT_ROWS_LOOPS_MACS
        return x.shape[1] <= AVX2_GRAD_LOOPS_INPUTS or rows <= AVX2_GRAD_LOOPS_ROWS
    return macs <= SMALL_MACS or (x.shape[1] >= SMALL_WEIGHT_MIN_INPUTS and (
        loops_beat_blas() or (forward and rows <= FORWARD_LOOPS_ROWS)
        or (not forward and rows <= GRAD_LOOPS_ROWS and macs <= GRAD_LOOPS_MACS)))


_NONE = {numpy.dtype(numpy.float32): numpy.empty(0, numpy.float32),     # "no bias" for the loops
         numpy.dtype(numpy.float64): numpy.empty(0, numpy.float64)}
_NO_NEG_ABS = {dt: numpy.empty((0, 0), dt) for dt in _NONE}            # "no -|z|" for linear_forward


def loops_bias(b, dtype):
    """A bias (or its gradient) as the compiled loops take it: an empty array of ``dtype`` for none."""
    return _NONE[dtype] if b is None else b


PARKED_MACS_PER_SHARD = 1_000_000  # the loops' shards while the workers wait awake from the last parallel section
                                   # (workers_parked): handing them a job then costs no wake-up. Rung 3's 640->100
                                   # at m=64 (4.1M multiply-adds, its weight out of the cache after the convs) then runs
                                   # on both threads; FC 784-100-10's, with no section before it, still in one call


def workers_parked() -> bool:
    """Whether the pool's workers are still waiting awake after the last parallel section (``PARK_US``)."""
    return _pool is not None and time.perf_counter_ns() < _pool.parked_until


def _least_tiles(macs_per_row, shard_macs) -> int:
    """The fewest tiles of 4 output rows in a shard of the loops: 2 x ``shard_macs`` multiply-adds."""
    return -(-2 * shard_macs // (4 * macs_per_row))


def _tiles(kernel, args, rows, macs_per_row):
    """``kernel(*args, start, stop)`` over tiles of 4 output rows, shared by the threads (each shard at least
    2 x ``MACS_PER_SHARD`` multiply-adds, or 2 x ``PARKED_MACS_PER_SHARD`` while the workers are awake): the
    numbers do not depend on where the shards are cut."""
    least = _least_tiles(macs_per_row, PARKED_MACS_PER_SHARD if workers_parked() else MACS_PER_SHARD)
    if one_shard(-(-rows // 4), least):
        kernel(*args, 0, rows)
    else:
        parallel(lambda s, e: kernel(*args, 4 * s, min(4 * e, rows)), -(-rows // 4), least)


def tiles_in_one_call(rows, macs_per_row) -> bool:
    """Whether the loops' tiles are too little work to share (one thread, or under 2 x ``MACS_PER_SHARD`` in each
    of two shards): ``train.SigmoidNetStep`` then runs its net's products as one piece."""
    return one_shard(-(-rows // 4), _least_tiles(macs_per_row, MACS_PER_SHARD))


FORWARD_BY_INPUTS = 1   # 1: Linear's forward of a wide weight by the inputs its backward cuts it by (_forward_by_inputs);
                        # 0: by neurons, as matmul cuts it (for an A/B: thread_profile.py --ab FORWARD_BY_INPUTS=0)


def _forward_by_inputs(x, w) -> bool:
    """Whether Linear's forward product x Wᵀ (x (m, k), W (n, k)) runs as two partial sums over halves of the inputs,
    :func:`_linear_by_inputs`, instead of :func:`matmul`'s blocks: where matmul would cut it in two by neurons (x
    smaller than W) and W has more inputs than neurons (n < k), so that the backward's two products cut W by its
    inputs (:func:`_gemm_blocks`: δᵀ is smaller than x and δ smaller than W), at the same column k // 2. Rung 1's
    100x2880 weight at m=64. Then each thread reads the same half of W's columns in both passes, and writes its
    own partial sum: by neurons the two threads read different parts of W in the forward and the backward, and
    their blocks of z shared a cache line in every row. On issue 11's VM with the vCPUs on cores apart (350-390 ns
    round trip: a line another core holds costs several times more to take), rung 1 at m=64, 2 threads, chrt'd,
    alternating in one process (thread_profile.py --ab FORWARD_BY_INPUTS=0), us a step: Haswell kernels 1,959 /
    1,807 / 1,798 / 1,838 / 1,919 against 1,998 / 1,831 / 1,858 / 1,876 / 1,972 by neurons (2% faster), AVX-512
    kernels 1,662 / 1,692 / 1,680 / 1,790 against 1,705 / 1,695 / 1,670 / 1,791 (even); cores close (86-130 ns):
    1,513 / 1,562 / 1,524 / 1,464 / 1,479 / 1,536 against 1,507 / 1,540 / 1,527 / 1,467 / 1,485 / 1,540, AVX-512
    1,243 / 1,238 / 1,310 against 1,230 / 1,245 / 1,284 (even, within the runs' spread). 1 thread unchanged. The
    same halves at any thread count, so the same numbers."""
    n, k = w.shape
    return (FORWARD_BY_INPUTS and x.ndim == 2 and n < k and x.size < w.size and fast(x, w) and x.dtype == w.dtype
            and _gemm_block_count(x, w.T) == 2)


def _linear_by_inputs(x, w, b):
    """z = x[:, :h] W[:, :h]ᵀ + x[:, h:] W[:, h:]ᵀ + b with h = k // 2 (:func:`_forward_by_inputs`): the two partial
    sums, one a thread, then added."""
    parts = [numpy.empty((x.shape[0], w.shape[0]), dtype=w.dtype) for _ in range(2)]
    _partial_products(x, w, parts)
    z = numpy.add(parts[0], parts[1], out=parts[0])
    if b is not None:
        z += b
    return z


def _partial_products(x, w, parts):
    """parts[0] = x[:, :h] W[:, :h]ᵀ and parts[1] = x[:, h:] W[:, h:]ᵀ with h = k // 2, one a thread."""
    (_, h), _ = split(w.shape[1], 2)

    def half(i):
        cols = slice(0, h) if i == 0 else slice(h, None)
        xc, wct, out = x[:, cols], w[:, cols].T, parts[i]
        hand_out()
        numpy.matmul(xc, wct, out=out)                                          # x[:, cols] W[:, cols]ᵀ

    parallel(lambda s, e: [half(i) for i in range(s, e)], 2, hands_out=True)


def linear(x, w, b=None):
    """Linear's forward product z = x Wᵀ + b for x (m, k), W (n, k), b (n,) or None: by the compiled loops where
    :func:`linear_runs_loops` says so (the bias added in the same pass), else :func:`matmul` and NumPy's add (by
    halves of the inputs where :func:`_forward_by_inputs` says so)."""
    if linear_runs_loops(x, w, b, forward=True):
        z = numpy.empty((x.shape[0], w.shape[0]), dtype=w.dtype)
        _tiles(_kernels.linear_forward, (x, w, loops_bias(b, w.dtype), z, _NO_NEG_ABS[w.dtype]),
               x.shape[0], w.size)
        return z
    if _forward_by_inputs(x, w):
        return _linear_by_inputs(x, w, b)
    z = matmul(x, w.T)
    if b is not None:
        z += b
    return z


FUSE_LINEAR_SIGMOID = 1     # 1: nn/fuse.py's LinearSigmoid runs Linear → Sigmoid as one pass where Linear's forward runs
                            # the loops (or BLAS by halves of the inputs, with FUSE_LINEAR_SIGMOID_BY_INPUTS); 0: each layer
                            # on its own (the same numbers; an A/B: --ab FUSE_LINEAR_SIGMOID=0)
FUSE_LINEAR_SIGMOID_BY_INPUTS = 1   # 1: ... also where Linear's forward is BLAS's two partial sums (_forward_by_inputs:
                            # rung 1's 2880->100 at m=64), their sum and bias then one compiled pass that writes -|z| beside
                            # z (no Sigmoid layer call, no |z| and -|z| passes, no NumPy adds): the serial part of the step
                            # at either thread count. An A/B: thread_profile.py --ab FUSE_LINEAR_SIGMOID_BY_INPUTS=0


def linear_sigmoid_applies(x, w, b=None) -> bool:
    """Whether :func:`linear_sigmoid` computes Linear → Sigmoid for this input: Linear's forward runs the loops, or
    BLAS by halves of the inputs (:func:`_forward_by_inputs`) with a bias of W's dtype (or none)."""
    if not FUSE_LINEAR_SIGMOID:
        return False
    return linear_runs_loops(x, w, b, forward=True) or bool(
        FUSE_LINEAR_SIGMOID_BY_INPUTS and _forward_by_inputs(x, w)
        and (b is None or (type(b) is numpy.ndarray and b.dtype == w.dtype and b.ndim == 1)))


def linear_sigmoid(x, w, b=None, arrays=None):
    """a = σ(x Wᵀ + b) for nn/fuse.py's LinearSigmoid (where :func:`linear_sigmoid_applies`): Linear's loops, which
    write -|z| beside z, or BLAS's two partial sums (:func:`_partial_products`, in z and a) added with the bias by a
    compiled pass that writes -|z| beside z (their sum (p₀ + p₁) + b as NumPy's two adds form it); then NumPy's exp of
    -|z| and the sigmoid kernel, as :func:`sigmoid` computes σ(z): the numbers of the two layers' own fast paths, bit
    for bit, with no Python between them and no |z| pass. ``arrays``: (z, e, a), row-major (rows, n) arrays of w's
    dtype to compute in (train.SigmoidNetStep's, made once), else new ones."""
    rows, n = x.shape[0], w.shape[0]
    z, e, a = arrays if arrays is not None else (numpy.empty((rows, n), dtype=w.dtype) for _ in range(3))
    if linear_runs_loops(x, w, b, forward=True):
        _tiles(_kernels.linear_forward, (x, w, loops_bias(b, w.dtype), z, e), rows, w.size)
    else:
        _partial_products(x, w, (z, a))
        _kernels.add_partial_sums(z, a, loops_bias(b, w.dtype), e)          # z = (z + a) + b, e = -|z|
    numpy.exp(e, out=e)                                   # e = e^{-|z|}
    _kernels.sigmoid(z.reshape(-1), e.reshape(-1), a.reshape(-1))
    return a


def _grads_by_loops(d, x, w_grad, b_grad):
    _tiles(_kernels.linear_weight_grad, (d, x, w_grad, loops_bias(b_grad, w_grad.dtype)),
           w_grad.shape[0], x.size)


def grads_by_blas(d, x, w_grad, b_grad):
    """W.grad += δᵀx by :func:`matmul` and b.grad += Σδ by NumPy's sum (Linear's backward where the loops do not run)."""
    matmul(d.T, x, add_to=w_grad)
    if b_grad is not None:
        b_grad += d.sum(axis=0)


def linear_backward(d, x, w, w_grad, b_grad=None, input_grad=True):
    """Linear's backward for δ = ``d`` (m, n), its input x (m, k) and W = ``w`` (n, k): the parameter gradients
    W.grad += δᵀ x and b.grad += Σ_n δ (``w_grad`` (n, k), ``b_grad`` (n,) or None), accumulated in place, by the
    compiled loops where :func:`linear_runs_loops` says so (both in one pass), else :func:`matmul` and NumPy's sum;
    and, with ``input_grad``, returns δ W (else None). Where both products run
    in blocks (:func:`matmul`), their blocks share one parallel section: one hand-over to the threads instead of
    two (the same blocks, so the same numbers). Where the gradients run the compiled loops and δ W is as tiny
    (at most ``INPUT_GRAD_LOOPS_MACS`` multiply-adds), δ W does too."""
    if linear_runs_loops(x, w_grad, d, b_grad):
        _grads_by_loops(d, x, w_grad, b_grad)
        if not input_grad:
            return None
        if input_grad_by_loops(d, w):
            dx = numpy.empty((d.shape[0], w.shape[1]), dtype=w.dtype)
            _kernels.linear_input_grad(d, w, dx)
            return dx
        return matmul(d, w)
    if input_grad:
        if _backward_by_columns(d, x, w, w_grad):
            return _linear_backward_columns(d, x, w, w_grad, b_grad)
        grads, inputs = _gemm_blocks(d.T, x, w_grad), _gemm_blocks(d, w)
        if grads is not None and inputs is not None:
            _run_blocks(_paired(grads[1], inputs[1]))
            if b_grad is not None:
                b_grad += d.sum(axis=0)
            return inputs[0]
    grads_by_blas(d, x, w_grad, b_grad)
    return matmul(d, w) if input_grad else None


LINEAR_BACKWARD_ONE_CALL = 1    # 1: where both of Linear's backward products are cut by W's columns (rung 1's 2880->100
                                # at m=64), each thread's block of the two is one compiled call that never holds the GIL
                                # (_kernels.linear_backward_columns, NumPy's own BLAS gemm called from it) instead of four
                                # NumPy calls, each of which gives the GIL up and takes it back, and with W.grad's block
                                # added in a vectorised loop where NumPy's add into a strided block was slower. The same
                                # numbers bit for bit. The call alone (alternating in one process, Zen 5, load ~0.6), us:
                                # own kernels 1 thread 402 against 453, 2 threads 236 against 266; Haswell kernels 687 /
                                # 737, 377 / 409; m=256, 1 thread, 1,500 / 1,542 (own), 2,789 / 2,865. Rung 1's step at
                                # m=64, own, cores close (thread_profile.py --ab LINEAR_BACKWARD_ONE_CALL=0, 41 rounds):
                                # 2 threads 1,176 / 1,224 against 1,253 / 1,266 us, 1 thread 2,024 / 2,033 against 2,067 /
                                # 2,091


def _backward_by_columns(d, x, w, w_grad) -> bool:
    """Whether :func:`linear_backward` runs its blocks as :func:`_linear_backward_columns`: both products in two blocks
    by W's columns (the input x and W larger than δ), row-major NumPy arrays of one float dtype, and NumPy's gemm
    at hand (:func:`blas_gemm`)."""
    return bool(LINEAR_BACKWARD_ONE_CALL and GEMM_BLOCKS == 2 and _same_float(d, x, w, w_grad)
                and d.ndim == x.ndim == w.ndim == 2 and d.flags.c_contiguous and x.flags.c_contiguous
                and w.flags.c_contiguous and w_grad.flags.c_contiguous and d.size < x.size and d.size < w.size
                and _gemm_block_count(d.T, x) == 2 and _gemm_block_count(d, w) == 2 and blas_gemm(w.dtype))


def _linear_backward_columns(d, x, w, w_grad, b_grad):
    """:func:`linear_backward`'s two products in the blocks :func:`_gemm_blocks` cuts them into (W's columns in two
    halves), block i of each in one compiled call (_kernels.linear_backward_columns), one a thread; then b.grad."""
    gemm, dx = blas_gemm(w.dtype), numpy.empty(x.shape, dtype=w.dtype)
    cuts = split(w.shape[1], 2)

    def shard(s, e):
        for lo, hi in cuts[s:e]:
            hand_out()
            _kernels.linear_backward_columns(gemm, d, x, w, w_grad, dx, lo, hi)     # W.grad += δᵀx, ∂C/∂x = δW

    parallel(shard, len(cuts), hands_out=True)
    if b_grad is not None:
        b_grad += d.sum(axis=0)
    return dx


PAIR_BLOCKS = 1     # 1: on several threads a Linear backward's two products block by block side by side (_paired);
                    # 0: one product after the other (for an A/B: thread_profile.py --ab PAIR_BLOCKS=0)


def _paired(first, second):
    """The blocks of two products in the order the threads take them: on several threads block i of each product
    side by side (each thread then runs the same columns of W.grad += δᵀx and of δ W: equal work, where the one
    product a thread had taken 30% longer than the other: rung 1's 2880->100 at m=64, 225 against 173 us), on one
    thread one product after the other (faster there: the same blocks side by side took 391.8 against 389.6 us at
    m=64, 1,309 against 1,288 at m=256). The same blocks either way, so the same numbers. Measured alone (own
    AVX-512 kernels, cores close, alternating in one process), 2 threads: 246.6 -> 229.1 us at m=64, 708 -> 679 at
    m=256; the dropout net's 1000->1000 and 640->1000, whose two products cost the same, within ±1%. In rung 1's
    step at m=64 (thread_profile.py --ab PAIR_BLOCKS=0): 1,217 against 1,232 us at 2 threads; rung 3 2,599 / 2,654."""
    if get_num_threads() == 1 or len(first) != len(second) or not PAIR_BLOCKS:
        return first + second
    return [block for pair in zip(first, second) for block in pair]


def input_grad_by_loops(d, w) -> bool:
    """Whether :func:`linear_backward`, where the parameter gradients run the loops, computes δ W by the loops too."""
    return d.shape[0] * w.size <= INPUT_GRAD_LOOPS_MACS and w.dtype == d.dtype and w.flags.c_contiguous


# -- convolution: the mini-batch in shards, each shard in chunks whose columns stay in cache ---------------
CONV_WEIGHT_GRAD_LOOPS_MAX = 2048   # ∂C/∂W of a kernel with at most this many weights (rung 1's and rung 3's first conv,
                                    # 20x1x5x5) by the compiled dot products: OpenBLAS runs the 25 x 20 product over
                                    # K = 9,216 a chunk at ~20% of its peak (3.2 ms at m=256), the loop in 1.2 ms
COLUMN_BYTES_PER_CHUNK = 1 << 19    # 512 KB, the smallest chunk: at m=10 two threads' chunks in flight hold half as
                                    # much as 1 MB chunks (rung 3 at m=10: peak-RSS growth 3.6-3.8 -> 3.2-3.5 MB)


def core_l2_bytes(default: int = 1 << 20) -> int:
    """A core's L2 cache in bytes, as Linux describes CPU 0's caches (``/sys/devices/system/cpu/cpu0/cache``), else
    ``default``."""
    for index in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*"):
        try:
            level, kind, size = (Path(index, f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        if level == "2" and kind in ("Unified", "Data") and size[:-1].isdigit() and size[-1:] in ("K", "M"):
            return int(size[:-1]) << (10 if size[-1] == "K" else 20)
    return default


COLUMN_BYTES_PER_CHUNK_MAX = core_l2_bytes()    # a core's L2, the largest chunk: Zen 5 1 MB, Zen 3 512 KB (there,
                                    # thread_profile.py --ab COLUMN_BYTES_PER_CHUNK_MAX=524288 against 1 MB, 2 threads:
                                    # rung 1 m=64 5,500 vs 6,127 us a step, m=256 16,513 vs 18,098; rung 3 10,836 vs
                                    # 11,730 and 34,830 vs 35,183; the dropout net 20,871 vs 21,246 and 65,289 vs
                                    # 68,087; 1 thread level)
CHUNKS_AT_LEAST = 4                 # chunks grow from the smallest to the largest size while there are more of them


def _conv_output_size(x, weight, stride, padding):
    """(H_out, W_out) = (⌊(H + 2p - kh) / s⌋ + 1, ⌊(W + 2p - kw) / s⌋ + 1) (as nn.conv.output_size)."""
    (sh, sw), (ph, pw), (kh, kw) = stride, padding, weight.shape[2:]
    return (x.shape[2] + 2 * ph - kh) // sh + 1, (x.shape[3] + 2 * pw - kw) // sw + 1


def _conv_plan(x, weight, stride, padding):
    """Sizes, and the mini-batch cut into near-equal chunks of images, an even number of them (if more than one).
    A chunk's columns take ``COLUMN_BYTES_PER_CHUNK`` (512 KB) while that makes at most ``CHUNKS_AT_LEAST`` (4)
    chunks, else a quarter of the columns up to ``COLUMN_BYTES_PER_CHUNK_MAX`` (a core's L2). Every chunk is a few
    calls from Python (im2col, the GEMMs, the bias), each of which gives up the GIL and takes it back; when the
    other thread holds it then, the thread sleeps, and on issue 11's VM each such sleep is a ~30-50 us wake-up:
    rung 1 at m=64 in 8 chunks of 512 KB slept ~5 times in its conv forward and ~7 in its backward at 2 threads,
    in 4 chunks of 0.9 MB ~1.5 and ~2.4 (the CPU time at 1 thread is the same, 512 KB to 2 MB chunks).
    The chunks do not depend on the thread count (so neither do the results: partial sums are added in
    chunk order); the threads take whole chunks, at least ``min_chunks`` each."""
    n, c = x.shape[:2]
    o, _, kh, kw = weight.shape
    ho, wo = _conv_output_size(x, weight, stride, padding)
    per_image = c * kh * kw * ho * wo
    chunk_bytes = min(max(COLUMN_BYTES_PER_CHUNK, n * per_image * x.itemsize // CHUNKS_AT_LEAST),
                      max(COLUMN_BYTES_PER_CHUNK, COLUMN_BYTES_PER_CHUNK_MAX))
    size = max(1, chunk_bytes // (per_image * x.itemsize))
    count = max(1, -(-n // size))
    count += count % 2 if count > 1 else 0          # an even count of near-equal chunks: two threads share evenly
    chunks = split(n, count)
    min_chunks = max(1, -(-MACS_PER_SHARD // (o * per_image * -(-n // count))))
    return n, c, o, kh, kw, ho, wo, chunks, min_chunks


ALIASED_ROW_BYTES = 2048    # GEMM operands whose rows are a multiple of this long get one image more room (0: never).
                            # Rows 4 KB apart fall in the same sets of the L1 cache (64 sets of 64 B), 2 KB apart in two:
                            # BLAS reading 16-32 of them at once evicts its own lines. Rung 3's (and rung 1's) first conv
                            # at 16 images a chunk has rows of 36,864 B = 9 x 4 KB: Z = W X (20x25 by 25x9216), own
                            # AVX-512 kernels, 1 thread, alone: 111 -> 63 us with X's and Z's rows one image longer;
                            # in rung 3's step at m=256 35% -> 55% of the GEMM peak, and the second conv's (8 images,
                            # rows of 2 KB) 67% -> 75% (benchmarks/conv_profile.py). Not for the backward's products:
                            # there the longer rows measured no faster (X Δᵀ and Wᵀ Δ, 500x512 by 512x40, alone).


def _spare(images, ho, wo, itemsize):
    """1 if rows of ``images`` images' outputs would be a multiple of ALIASED_ROW_BYTES long, else 0."""
    row = images * ho * wo * itemsize
    return int(ALIASED_ROW_BYTES > 0 and row % ALIASED_ROW_BYTES == 0)


def _columns(xc, kh, kw, stride, padding, a, b, spare=0):
    """X for images a:b: every receptive field of x̃ as a column, (C, kh, kw, b-a, H_out, W_out), from ``xc``,
    the input as (C, N, H, W) (x̃: padded by p zeros); with room for ``spare`` more images, left unwritten (the
    caller reads X as the first b-a images of each row: rows longer than the data, see ALIASED_ROW_BYTES)."""
    (sh, sw), (ph, pw) = stride, padding
    x, first = xc, a                              # the whole input and the chunk's first image (see im2col)
    if ph or pw:
        c, n, h, w = xc[:, a:b].shape
        x, first = numpy.zeros((c, n, h + 2 * ph, w + 2 * pw), dtype=xc.dtype), 0
        x[:, :, ph:ph + h, pw:pw + w] = xc[:, a:b]
    c, _, h, w = x.shape
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    cols = numpy.empty((c, kh, kw, b - a + spare, ho, wo), dtype=x.dtype)
    if x.flags.c_contiguous or not x.transpose(1, 0, 2, 3).flags.c_contiguous:
        kernels().im2col(x, cols, first, b - a, sh, sw, True)   # (a compiled copy: ~2x NumPy's copy of the 6-D view)
    else:                                                  # N-major memory (a ConvPool's output): x as (N, C, H, W)
        kernels().im2col(x.transpose(1, 0, 2, 3), cols, first, b - a, sh, sw, False)
    return cols


def conv2d_forward(x, weight, bias, stride, padding, then=None):
    """Conv2d's forward, Z = W X + b, chunk by chunk of the mini-batch on the threads (X, the im2col columns,
    built per chunk and not kept: backward rebuilds them, as PyTorch keeps none either; keeping them cost
    ~1.4x PyTorch's peak memory on rung 3 for ~5% speed, and once the im2col copy was fast it cost speed too: a
    chunk rebuilt in cache beats one read back from memory (rung 3 at m=256, 1 thread, own AVX-512 kernels, CPU
    time a step, medians alternating in one process: rebuilt 28.5 ms, the second conv's kept 30.1 ms, both convs'
    kept 30.4 ms)). Returns z as ``(N, out, H_out, W_out)``, a view
    of channel-major memory. With ``then``, each chunk's W X (images a:b, as (out, b-a, H_out, W_out), without
    b, with room for one image more when its rows would alias: see ALIASED_ROW_BYTES) goes to ``then(wx, a, b)`` in
    the same shard instead, and nothing is returned (:func:`conv_pool_forward`)."""
    n, c, o, kh, kw, ho, wo, chunks, min_chunks = _conv_plan(x, weight, stride, padding)
    w2 = weight.reshape(o, -1)
    xc = x.transpose(1, 0, 2, 3)                                                # (C, N, H, W)
    z = numpy.empty((o, n, ho, wo), dtype=weight.dtype) if then is None else None
    z2 = None if z is None else z.reshape(o, n * ho * wo)
    hw = ho * wo

    def shard(s, e):
        for a, b in chunks[s:e]:
            if then is not None:         # X's and W X's rows one image longer if they would alias (ALIASED_ROW_BYTES)
                spare = _spare(b - a, ho, wo, x.itemsize)
                cols = _columns(xc, kh, kw, stride, padding, a, b, spare)
                wx = numpy.empty((o, b - a + spare, ho, wo), dtype=weight.dtype)
                numpy.matmul(w2, cols.reshape(c * kh * kw, -1)[:, :(b - a) * hw],
                             out=wx.reshape(o, -1)[:, :(b - a) * hw])                 # Z = W X
                then(wx, a, b)
                continue
            cols = _columns(xc, kh, kw, stride, padding, a, b)
            za = numpy.matmul(w2, cols.reshape(c * kh * kw, -1), out=z2[:, a * hw:b * hw])   # Z = W X (in place)
            if bias is not None:
                za += bias[:, None]                                                    #   + b

    parallel(shard, len(chunks), min_chunks)
    return None if z is None else z.transpose(1, 0, 2, 3)


def conv2d_backward(x, weight, grad_output, stride, padding, input_grad=True, delta_of=None):
    """Conv2d's backward chunk by chunk on the threads: returns (∂C/∂W, ∂C/∂b, ∂C/∂x or None), with
    ∂C/∂W = Δ Xᵀ, ∂C/∂b = Σ δ, ∂C/∂X = Wᵀ Δ scattered back by col2im (X rebuilt per chunk). With ``delta_of``
    (and no ``grad_output``), a chunk's Δ (images a:b) is ``delta_of(a, b)``, made in the same shard
    (:func:`conv_pool_backward`)."""
    k = kernels()
    n, c, o, kh, kw, ho, wo, chunks, min_chunks = _conv_plan(x, weight, stride, padding)
    (ph, pw), (h, w) = padding, x.shape[2:]
    w2 = weight.reshape(o, -1)
    xc = x.transpose(1, 0, 2, 3)                                                # (C, N, H, W)
    dxpad = numpy.empty((c, n, h + 2 * ph, w + 2 * pw), dtype=weight.dtype) if input_grad else None   # (col2im sets it)
    g2 = None if grad_output is None else grad_output.transpose(1, 0, 2, 3).reshape(o, -1)   # Δ, (out, N·Ho·Wo)
    loops = (weight.size <= CONV_WEIGHT_GRAD_LOOPS_MAX and weight.dtype == x.dtype
             and (g2 is None or g2.dtype == weight.dtype))
    hw = ho * wo

    dwts = numpy.empty((len(chunks), c * kh * kw, o), weight.dtype)      # each chunk's (∂C/∂W)ᵀ ...
    dbs = numpy.empty((len(chunks), o), weight.dtype)                       # ... and ∂C/∂b

    def shard(s, e):
        for i in range(s, e):
            a, b = chunks[i]
            cols = _columns(xc, kh, kw, stride, padding, a, b)
            cols2 = cols.reshape(c * kh * kw, -1)
            whole, at = (g2, a * hw) if delta_of is None else (delta_of(a, b), 0)   # the chunk's Δ: columns at, …
            delta = whole[:, at:at + (b - a) * hw]
            if loops:                   # a small kernel: the compiled dot products (see conv_weight_grad)
                k.conv_weight_grad(cols2, whole, at, dwts[i], dbs[i])                 # (∂C/∂W)ᵀ = X Δᵀ, ∂C/∂b = Σ δ
            else:
                # numpy.dot, not @: NumPy's matmul keeps the GIL for products of <= 500 elements, and so ran one
                # thread at a time; dot releases it. Formed as (∂C/∂W)ᵀ = X Δᵀ: OpenBLAS runs that layout of the
                # product far faster (rung 3's second conv at m=256, 40x500 over K = 512 a chunk, own AVX-512
                # kernels: 50% -> 69% of its GEMM peak).
                numpy.dot(cols2, delta.T, out=dwts[i])                                  # (∂C/∂W)ᵀ = X Δᵀ
                delta.sum(axis=1, out=dbs[i])                                           # ∂C/∂b = Σ δ
            if input_grad:   # Wᵀ Δ has X's shape: written over X, which ∂C/∂W no longer needs (less memory)
                numpy.matmul(w2.T, delta, out=cols2)                                    # ∂C/∂X = Wᵀ Δ
                k.col2im(cols, dxpad, a, *stride)                                       # col2im
            del cols, cols2                     # freed before the next chunk's columns are made

    parallel(shard, len(chunks), min_chunks)
    # The chunks' parts added in chunk order, whatever the threads: one NumPy pass each (a Python loop of one add a
    # chunk had cost rung 3's second conv ~110 us at 2 threads, after the threads were done: 32 chunks).
    dw, db = dwts.sum(axis=0), dbs.sum(axis=0)
    dx = None if dxpad is None else dxpad[:, :, ph:ph + h, pw:pw + w].transpose(1, 0, 2, 3)
    return dw.T.reshape(weight.shape), db, dx


# -- a convolution, the max pooling after it and the neuron after that, in one pass (nn/fuse.py) -------------
FUSE_CONV_POOL = 1      # 1: nn/fuse.py's ConvPool runs Conv2d → MaxPool2d(2) → σ as one pass; 0: each layer on its own
                        # (the same numbers; for an A/B: benchmarks/thread_profile.py --ab FUSE_CONV_POOL=0)


CONV_POOL_ONE_CALL = 1  # 1: a ConvPool shard's chunks are one compiled call that never holds the GIL (im2col, NumPy's own
                        # BLAS gemm called from the compiled code, b, pooling, neuron; the backward likewise), where
                        # blas_gemm finds the gemm; 0: a few calls a chunk from Python, each of which gives up the GIL
                        # and takes it back (a thread that asks for it while the other holds it sleeps, ~30-50 us).
                        # The same numbers bit for bit. Measured: benchmarks/thread_profile.py --ab CONV_POOL_ONE_CALL=0
GEMM_SYMBOLS = {numpy.dtype(numpy.float32): "scipy_cblas_sgemm64_", numpy.dtype(numpy.float64): "scipy_cblas_dgemm64_"}
_gemm_addresses = None


def blas_gemm(dtype) -> int:
    """The address of the cblas_sgemm / cblas_dgemm of NumPy's own BLAS (0 where there is none to be had): the
    scipy-openblas64 library in the ``numpy.libs`` folder of NumPy's wheels, already loaded by NumPy
    (``RTLD_NOLOAD``: the same library object, so OpenBLAS's kernels and threadpoolctl's thread setting are NumPy's),
    whose CBLAS takes 64-bit integers. Other builds of NumPy (other BLAS, other symbol names) get 0: their ConvPool
    takes the calls from Python. Found once, on first use."""
    global _gemm_addresses
    if _gemm_addresses is None:
        _gemm_addresses = {}
        libs = os.path.join(os.path.dirname(os.path.dirname(numpy.__file__)), "numpy.libs")
        found = [i["filepath"] for i in _blas_libraries() if i.get("internal_api") == "openblas"
                 and os.path.dirname(i.get("filepath") or "") == libs]
        try:
            lib = ctypes.CDLL(found[0], mode=os.RTLD_NOLOAD) if len(found) == 1 else None
        except (OSError, AttributeError):
            lib = None
        for dt, name in GEMM_SYMBOLS.items():
            f = getattr(lib, name, None)
            _gemm_addresses[dt] = (f is not None and ctypes.cast(f, ctypes.c_void_p).value) or 0
    return _gemm_addresses.get(numpy.dtype(dtype), 0)


def _one_call_gemm(x, weight) -> int:
    """blas_gemm for a ConvPool's chunks as one compiled call (CONV_POOL_ONE_CALL), else 0."""
    return blas_gemm(weight.dtype) if CONV_POOL_ONE_CALL and x.dtype == weight.dtype else 0


def _in_memory_order(x):
    """(x as its memory is laid out, channel_major): (C, N, H, W) unless x (N, C, H, W) is C-contiguous (as _columns)."""
    channel_major = not x.flags.c_contiguous and x.transpose(1, 0, 2, 3).flags.c_contiguous
    return (x.transpose(1, 0, 2, 3) if channel_major else x), channel_major


SIGMOID_BYTES_PER_CALL = 1 << 20   # a ConvPool's compiled call (CONV_POOL_ONE_CALL) covers chunks whose m and e^{-|m|}
                                   # take at most this much (at least one chunk), then NumPy's exp and the σ pass run on
                                   # them, in a core's L2 (1 MB, Zen 5): rung 1 (16-image chunks, 368 KB) 2 chunks a
                                   # call. m and e for a whole shard at once (5.9 MB at m=256, 1 thread) evicted the next
                                   # layer's data: rung 1's step at m=256, 1 thread, own kernels, read 7,246-7,507 us
                                   # against 7,100-7,195 with the calls from Python (CONV_POOL_ONE_CALL=0), in runs of 1
                                   # MB 7,102-7,311 against 7,231-7,533 (thread_profile.py --ab, loaded ~0.8)


def _neuron_groups(chunks, s, t, image_bytes):
    """Chunks s..t-1 in runs (i, j, a, b): chunks i..j-1, images a:b, of at most SIGMOID_BYTES_PER_CALL at
    ``image_bytes`` an image (at least one chunk each)."""
    groups, i = [], s
    while i < t:
        j = i + 1
        while j < t and (chunks[j][1] - chunks[i][0]) * image_bytes <= SIGMOID_BYTES_PER_CALL:
            j += 1
        groups.append((i, j, chunks[i][0], chunks[j - 1][1]))
        i = j
    return groups


def conv_pool_forward(x, weight, bias, stride, padding, relu):
    """Conv2d → MaxPool2d(2) → σ (``relu``: ReLU) chunk by chunk of the mini-batch in one parallel section (one
    hand-over to the threads instead of three, no full-size Z in memory): per chunk Z = W X (as
    :func:`conv2d_forward`), then b, the max over each 2×2 window and ReLU in one compiled pass, or the sigmoid as
    :func:`sigmoid` computes it. With NumPy's BLAS at hand (:func:`blas_gemm`) a shard's chunks are one compiled call
    (``_kernels.conv_pool_chunks``; for the sigmoid one a run of chunks up to SIGMOID_BYTES_PER_CALL, then NumPy's exp
    and the sigmoid pass over their images).
    Returns (a, arg): a as (N, out, H_p, W_p), N-major (a Flatten after it is free), and each window's first maximum,
    l·2 + m (int8), for :func:`conv_pool_backward`."""
    k = kernels()
    n, o = x.shape[0], weight.shape[0]
    ho, wo = _conv_output_size(x, weight, stride, padding)
    out = numpy.empty((n, o, ho // 2, wo // 2), dtype=weight.dtype)
    arg = numpy.empty(out.shape, dtype=numpy.int8)
    b_ = loops_bias(bias, weight.dtype)
    no_e = numpy.empty((0, 0, 0, 0), dtype=weight.dtype)
    gemm = _one_call_gemm(x, weight)
    if gemm:
        _, _, _, kh, kw, _, _, chunks, min_chunks = _conv_plan(x, weight, stride, padding)
        bounds = numpy.array(chunks, dtype=numpy.int64)
        spares = numpy.array([_spare(b - a, ho, wo, x.itemsize) for a, b in chunks], dtype=numpy.int64)
        xm, channel_major = _in_memory_order(x)
        w2 = weight.reshape(o, -1)

        def shard(s, t):
            if relu:            # max(0, max_window(W X + b))
                hand_out()
                k.conv_pool_chunks(gemm, xm, channel_major, w2, b_, bounds, spares, s, t, 0, kh, kw, *stride, *padding,
                                   True, out, arg, no_e)
                return
            groups = _neuron_groups(chunks, s, t, 2 * out[0].nbytes)
            m = numpy.empty((max(b - a for _, _, a, b in groups),) + out.shape[1:], dtype=out.dtype)
            e = numpy.empty_like(m)
            for i, j, a, b in groups:
                hand_out()
                k.conv_pool_chunks(gemm, xm, channel_major, w2, b_, bounds, spares, i, j, a, kh, kw, *stride, *padding,
                                   False, m, arg[a:], e)                # m = max_window(W X + b), e = -|m|
                numpy.exp(e[:b - a], out=e[:b - a])                                       # e = e^{-|m|}
                k.sigmoid(m[:b - a].reshape(-1), e[:b - a].reshape(-1), out[a:b].reshape(-1))   # σ(m)

        parallel(shard, len(chunks), min_chunks, hands_out=True)
        return out, arg

    def pool_and_neuron(wx, a, b):
        if relu:
            k.conv_pool_forward(wx, b_, out[a:b], arg[a:b], True, no_e)              # max(0, max_window(W X + b))
            return
        m, e = numpy.empty(out[a:b].shape, dtype=out.dtype), numpy.empty(out[a:b].shape, dtype=out.dtype)
        k.conv_pool_forward(wx, b_, m, arg[a:b], False, e)                          # m = max_window(W X + b), -|m|
        numpy.exp(e, out=e)                                                         # e = e^{-|m|}
        k.sigmoid(m.reshape(-1), e.reshape(-1), out[a:b].reshape(-1))               # σ(m)

    conv2d_forward(x, weight, bias, stride, padding, then=pool_and_neuron)
    return out, arg


def conv_pool_backward(x, weight, grad_output, out, arg, stride, padding, relu, input_grad=True):
    """Backward of :func:`conv_pool_forward` (``out``, ``arg`` from it) in one parallel section: per chunk, δ =
    ∂C/∂a ⊙ σ'(m) routed to each window's first maximum (one compiled pass), then that chunk's part of
    :func:`conv2d_backward`; a shard's chunks as one compiled call (``_kernels.conv_pool_chunks_backward``) where
    NumPy's BLAS is at hand. Returns (∂C/∂W, ∂C/∂b, ∂C/∂x or None)."""
    k = kernels()
    o = weight.shape[0]
    ho, wo = _conv_output_size(x, weight, stride, padding)
    gemm = _one_call_gemm(x, weight)
    if gemm and grad_output.dtype == weight.dtype:
        n, c, _, kh, kw, _, _, chunks, min_chunks = _conv_plan(x, weight, stride, padding)
        (ph, pw), (h, w) = padding, x.shape[2:]
        xm, channel_major = _in_memory_order(x)
        dxpad = numpy.empty((c, n, h + 2 * ph, w + 2 * pw) if input_grad else (0, 0, 0, 0), dtype=weight.dtype)
        dwts = numpy.empty((len(chunks), weight[0].size, o), weight.dtype)      # each chunk's (∂C/∂W)ᵀ ...
        dbs = numpy.empty((len(chunks), o), weight.dtype)                       # ... and ∂C/∂b
        bounds = numpy.array(chunks, dtype=numpy.int64)
        w2, loops = weight.reshape(o, -1), weight.size <= CONV_WEIGHT_GRAD_LOOPS_MAX

        def shard(s, t):
            hand_out()
            k.conv_pool_chunks_backward(gemm, xm, channel_major, w2, bounds, s, t, kh, kw, *stride, *padding,
                                        grad_output, out, arg, not relu, loops, dwts, dbs, dxpad)

        parallel(shard, len(chunks), min_chunks, hands_out=True)
        dw, db = dwts.sum(axis=0), dbs.sum(axis=0)      # the chunks' parts in chunk order, as conv2d_backward
        dx = dxpad[:, :, ph:ph + h, pw:pw + w].transpose(1, 0, 2, 3) if input_grad else None
        return dw.T.reshape(weight.shape), db, dx

    def delta_of(a, b):
        d = numpy.empty((o, b - a, ho, wo), dtype=weight.dtype)
        k.pool_neuron_backward(grad_output[a:b], out[a:b], arg[a:b], not relu, d)
        return d.reshape(o, -1)

    return conv2d_backward(x, weight, None, stride, padding, input_grad, delta_of=delta_of)


# -- pooling: the feature maps as planes, in shards ----------------------------------------------------
def _planes(x, order=None):
    """``x`` (N, C, H, W) as C-contiguous planes (P, H, W), P = N·C in memory order, and that order: (0, 1)
    for N-major memory, (1, 0) for channel-major. With ``order`` given, in that order (copying if need be)."""
    if order is None:
        order = (1, 0) if x.strides[1] > x.strides[0] else (0, 1)
    a = x.transpose(*order, 2, 3)
    if not a.flags.c_contiguous:
        a = numpy.ascontiguousarray(a)
    return a.reshape(-1, *x.shape[2:]), order


def _unplanes(planes, order, n, c):
    """Planes back to (N, C, h, w), a view."""
    lead = (n, c) if order == (0, 1) else (c, n)
    return planes.reshape(*lead, *planes.shape[1:]).transpose(*order, 2, 3)


def _pool_run(kernel, planes):
    """``kernel(start, stop)`` over shards of ``planes`` (P, H, W)."""
    parallel(kernel, planes.shape[0], max(1, ELEMENTS_PER_SHARD // max(1, planes.shape[1] * planes.shape[2])))


def _pool_out(xp_, kernel, stride, dtype=None):
    (kh, kw), (sh, sw) = kernel, stride
    ho, wo = (xp_.shape[1] - kh) // sh + 1, (xp_.shape[2] - kw) // sw + 1
    return numpy.empty((xp_.shape[0], ho, wo), dtype=dtype or xp_.dtype)


def maxpool2d_forward(x, kernel, stride):
    """(max over each window, index l·kw + m of its first maximum as planes + their order)."""
    k = kernels()
    xp_, order = _planes(x)
    out, arg = _pool_out(xp_, kernel, stride), _pool_out(xp_, kernel, stride, numpy.int32)
    if kernel == (2, 2) and stride == (2, 2):
        _pool_run(lambda s, e: k.maxpool2_forward(xp_[s:e], out[s:e], arg[s:e]), xp_)
    else:
        _pool_run(lambda s, e: k.maxpool_forward(xp_[s:e], out[s:e], arg[s:e], *kernel, *stride), xp_)
    return _unplanes(out, order, *x.shape[:2]), (arg, order)


def maxpool2d_backward(grad_output, arg, x_shape, kernel, stride):
    """∂C/∂x (x of shape ``x_shape``): each window's gradient added at its first maximum (``arg`` from
    :func:`maxpool2d_forward`)."""
    k = kernels()
    arg, order = arg
    g, _ = _planes(grad_output, order)
    if kernel == (2, 2) and stride == (2, 2):
        dx = numpy.empty((arg.shape[0],) + tuple(x_shape[2:]), dtype=grad_output.dtype)
        _pool_run(lambda s, e: k.maxpool2_backward(g[s:e], arg[s:e], dx[s:e]), dx)
    else:
        dx = numpy.zeros((arg.shape[0],) + tuple(x_shape[2:]), dtype=grad_output.dtype)
        _pool_run(lambda s, e: k.maxpool_backward(g[s:e], arg[s:e], dx[s:e], kernel[1], *stride), dx)
    return _unplanes(dx, order, *x_shape[:2])


def sumpool2d_forward(x, kernel, stride, squares=False):
    """Σ over each window of x (of x² with ``squares``)."""
    k = kernels()
    xp_, order = _planes(x)
    out = _pool_out(xp_, kernel, stride)
    _pool_run(lambda s, e: k.sumpool_forward(xp_[s:e], out[s:e], *kernel, *stride, squares), xp_)
    return _unplanes(out, order, *x.shape[:2])


def sumpool2d_backward(grad_output, x_like, kernel, stride, times_x=False):
    """∂C/∂x[window] += g (g · x[window] with ``times_x``, x = ``x_like``)."""
    k = kernels()
    xp_, order = _planes(x_like)
    g, _ = _planes(grad_output, order)
    dx = numpy.zeros(xp_.shape, dtype=grad_output.dtype)
    _pool_run(lambda s, e: k.sumpool_backward(g[s:e], xp_[s:e], dx[s:e], *kernel, *stride, times_x), dx)
    return _unplanes(dx, order, *x_like.shape[:2])


# -- activations and dropout: one pass over flat shards ------------------------------------------------
def _same_float(first, *others) -> bool:
    if not fast(first, *others):
        return False
    for a in others:
        if a.dtype != first.dtype:
            return False
    return True


def sigmoid(z):
    """σ(z) as the layer computes it (e = e^{-|z|} by NumPy's exp, then 1/(1+e) or e/(1+e) in one compiled
    pass, the same numbers), or None where the fast path does not apply."""
    if not _same_float(z):
        return None
    k = kernels()

    def kernel(z_, out):
        e = numpy.abs(z_)
        numpy.exp(numpy.negative(e, out=e), out=e)      # e = e^{-|z|}
        k.sigmoid(z_, e, out)                           # (e apart from out: a loop that may alias does not vectorise)

    out = elementwise(kernel, z, z)
    return out and out[0]


BACKWARD_NUMPY_BELOW = 16_384   # an activation's backward on fewer numbers: the layer's NumPy line is faster (measured:
                                # 300 numbers 1.1 vs 2.8 us; the compiled pass wins from ~25,000)


def sigmoid_backward(g, a):
    """∂C/∂a ⊙ a(1-a), or None (also for fewer than ``BACKWARD_NUMPY_BELOW`` numbers)."""
    if a.size < BACKWARD_NUMPY_BELOW or not _same_float(g, a):
        return None
    out = elementwise(kernels().sigmoid_backward, g, g, a)
    return out and out[0]


def tanh_backward(g, a):
    """∂C/∂a ⊙ (1-a²), or None (also for fewer than ``BACKWARD_NUMPY_BELOW`` numbers)."""
    if a.size < BACKWARD_NUMPY_BELOW or not _same_float(g, a):
        return None
    out = elementwise(kernels().tanh_backward, g, g, a)
    return out and out[0]


def relu(z):
    """(max(0, z), [z > 0]), or None."""
    if not _same_float(z):
        return None
    return elementwise(kernels().relu, z, z, out_dtypes=(None, numpy.bool_))


def masked(g, mask):
    """g ⊙ mask (mask boolean or of g's dtype), or None."""
    if not (_same_float(g) and type(mask) is numpy.ndarray) or mask.dtype not in (g.dtype, numpy.bool_):
        return None
    out = elementwise(kernels().masked, g, g, mask)
    return out and out[0]


DROPOUT_ELEMENTS_PER_SHARD = 16_384  # dropout draws its uniforms on the threads from this many per shard: NumPy's
                                    # PCG64 float32 draw costs ~1.3 ns a number on one thread (Zen 5: 83 us for
                                    # 64,000), so a shard of 16k (~25 us) pays for a hand-over (~20 us, cores close).
                                    # The dropout net's 64x1000 alone: 92 us on 1 thread, 68 on 2


def dropout(x, rng, p, scale):
    """(x ⊙ m, m) with m = [u ≥ p]·scale in x's dtype and u = ``rng.random(x.shape, dtype="float32")``, or None
    (then nothing was drawn). u is drawn on the threads, shard by shard, each shard from a copy of ``rng``'s PCG64
    moved to its place in the stream (:func:`_pcg64_at`): the same numbers as the one serial draw, whatever the
    thread count, and ``rng`` ends where that draw leaves it (``manual_seed`` reproduces runs as before)."""
    if not (_same_float(x) and x.flags.c_contiguous and type(rng) is numpy.random.Generator
            and type(rng.bit_generator) is numpy.random.PCG64):
        return None
    n, dropout_ = x.size, kernels().dropout
    out, mask = numpy.empty(x.shape, x.dtype), numpy.empty(x.shape, x.dtype)
    xf, of, mf = x.reshape(n), out.reshape(n), mask.reshape(n)
    if one_shard(n, DROPOUT_ELEMENTS_PER_SHARD):
        dropout_(xf, rng.random(n, dtype=numpy.float32), p, scale, of, mf)
        return out, mask
    state, shards = rng.bit_generator.state, split(n, min(get_num_threads(), n // DROPOUT_ELEMENTS_PER_SHARD))
    spares = getattr(_local, "pcg64", [])
    spares += [numpy.random.PCG64() for _ in range(len(shards) - 1 - len(spares))]   # PCG64() seeds from the OS: ~7 us
    _local.pcg64 = spares
    # the first shard draws from rng itself (where it stands), each other one from a spare moved to its place;
    # the last one's generator ends where the serial draw would leave rng (~6 us less a call than moving rng there)
    draws = [(0, shards[0][1], rng)] + [(s, e, numpy.random.Generator(_pcg64_at(state, s, g)))
                                        for (s, e), g in zip(shards[1:], spares)]

    def run(i, j):          # NumPy's fill and the kernel both run without the GIL
        for s, e, g in draws[i:j]:
            xs, os_, ms = xf[s:e], of[s:e], mf[s:e]
            hand_out()
            dropout_(xs, g.random(e - s, dtype=numpy.float32), p, scale, os_, ms)

    parallel(run, len(draws), hands_out=True)
    rng.bit_generator.state = draws[-1][2].bit_generator.state
    return out, mask


def _pcg64_at(state, position, bit_generator):
    """``bit_generator`` (a PCG64) set to where a PCG64 in ``state`` is after ``position`` 32-bit draws, and returned.
    NumPy's PCG64 makes two 32-bit draws of each 64-bit step (the low half, then the high half it keeps in
    ``uinteger`` with ``has_uint32`` = 1), and ``advance(k)`` moves k steps, clearing the kept half."""
    bit_generator.state = state
    kept = state["has_uint32"]
    if position < kept:                 # position 0, the kept half next
        return bit_generator
    steps, odd = divmod(position - kept, 2)
    bit_generator.advance(steps)
    if odd:                             # the high half of the next step comes next
        high = int(bit_generator.random_raw()) >> 32
        bit_generator.state = {**bit_generator.state, "has_uint32": 1, "uinteger": high}
    return bit_generator


# -- costs: the output neuron and the cost in one pass ------------------------------------------------------
def _labelled(z, labels) -> bool:
    return (fast(z) and z.ndim == 2 and z.flags.c_contiguous and type(labels) is numpy.ndarray
            and labels.ndim == 1 and labels.dtype.kind in "iu" and labels.shape[0] == z.shape[0] > 0)


def loglikelihood(z, labels):
    """(Σ_x -ln softmax(z_x)_{y_x}, δ = (softmax(z) - onehot(y)) / n, the row of the first label out of range or -1),
    or None where the fast path does not apply (integer labels (N,) for logits (N, K) only)."""
    if not _labelled(z, labels):
        return None
    delta = numpy.empty_like(z)
    total, bad = kernels().loglikelihood(z, labels, delta)
    return total, delta, bad


def crossentropy(z, labels):
    """(Σ_x Σ_j [softplus(z_j) - y_j z_j], δ = (σ(z) - onehot(y)) / n, the row of the first label out of range or -1),
    or None (as :func:`loglikelihood`): one compiled pass, its exponentials included (``_kernels.crossentropy``)."""
    if not _labelled(z, labels):
        return None
    delta = numpy.empty_like(z)
    total, bad, _ = kernels().crossentropy(z, labels, delta)
    return total, delta, bad


def sum_of_squares(x):
    """Σ x² over a row-major NumPy float array, by one compiled pass (``_kernels.sum_of_squares``), or None where
    that does not apply (the caller takes NumPy's ``dot``)."""
    if not (fast(x) and x.flags.c_contiguous):
        return None
    return kernels().sum_of_squares(x.reshape(-1))


def correct(out, labels):
    """How many rows of ``out`` (N, K) have their largest entry (the first, on ties, as NumPy's argmax) at the
    integer label, or None where the fast path does not apply."""
    if not _labelled(out, labels):
        return None
    return int(kernels().correct(out, labels))
