"""Shared helpers for the benchmarks: timing with alternation and medians, machine description, JSON output."""
from __future__ import annotations

import os
import platform
import re
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info

from deepscope import files

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    import torch
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def alternate(fns: dict, repeats: int) -> dict:
    """Run each function ``repeats`` times, alternating between them; return {name: [seconds, ...]}."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def median(xs):
    return statistics.median(xs)


REPO = RESULTS.parent.parent


def portable(value):
    """``value`` with every absolute path made relative to the repository (``../shared/data/mnist``), and a
    path in a temporary folder as ``$TMPDIR/...`` (anything else as ``<elsewhere>/NAME``): results committed to
    the repository never name one machine's folders."""
    if isinstance(value, dict):
        return {k: portable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [portable(v) for v in value]
    if isinstance(value, str):   # a path, or a command line naming paths
        return re.sub(r"(?<![\w.~$])/[^\s\"'=]+", lambda m: _portable_path(m.group(0)), value)
    return value


def _portable_path(path: str) -> str:
    rel = os.path.relpath(path, REPO)
    if not rel.startswith("../.."):   # in the repository, or beside it (../shared/data)
        return rel
    tmp = os.path.relpath(path, tempfile.gettempdir())
    return f"$TMPDIR/{tmp}" if not tmp.startswith("..") else f"<elsewhere>/{Path(path).name}"


def write_json(name, obj) -> Path:
    """Write ``obj`` to ``benchmarks/results/NAME`` (or to ``name`` if it names a folder too), atomically, with
    every path relative to the repository (:func:`portable`)."""
    path = Path(name) if Path(name).parent != Path(".") else RESULTS / name
    if isinstance(obj, dict) and "blas" not in obj:
        obj = {**obj, "blas": blas()}
    return files.write_json(path, portable(obj))


def blas() -> dict:
    """Which BLAS kernels ran: OpenBLAS picks them by CPU when NumPy loads it unless ``OPENBLAS_CORETYPE``
    names them (this project's build machines set ``OPENBLAS_CORETYPE=Haswell`` in their environment)."""
    return {"env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
            "libraries": [{k: i.get(k) for k in ("internal_api", "version", "architecture")}
                          for i in threadpool_info()]}


def table(rows: list[dict], cols: list[str]) -> str:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    line = "  ".join(c.rjust(widths[c]) for c in cols)
    out = [line, "-" * len(line)]
    for r in rows:
        out.append("  ".join(_fmt(r.get(c)).rjust(widths[c]) for c in cols))
    return "\n".join(out)


def _fmt(v):
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)



def core_to_core_ns(volleys: int = 100_000, rounds: int = 3):
    """The round trip of a cache line between two threads, ns (median of ``rounds``): each thread waits, awake and
    without the GIL, for the other's write to one flag and writes it back, ``volleys`` times. On issue 11's 2-core
    VM it reads ~90-200 ns while the host runs both vCPUs on cores that share an L3 and ~390-430 ns while it runs
    them apart, and it moves from one to the other within minutes; deepscope's 2-thread step moves with it (rung 1
    at m=64, own kernels, 21:34-21:39: 2t/1t 1.20-1.35 at ~400 ns, 1.44-1.61 at ~100 ns), since its threads hand
    each other their shards' data. A 2-thread reading means little without it. None where it could not run."""
    try:
        volley = _volley_loop()
    except Exception:  # noqa: BLE001 - numba missing or unable to compile it: no reading
        return None
    out = []
    for _ in range(rounds):
        flag = np.zeros(16, np.int64)
        other = threading.Thread(target=volley, args=(flag, 1, volleys, 1 << 31))
        other.start()
        t0 = time.perf_counter()
        done = volley(flag, 0, volleys, 1 << 31)        # gives up after 2^31 spins (seconds: a busy machine)
        elapsed = time.perf_counter() - t0
        other.join()
        if done:
            out.append(1e9 * elapsed / volleys)
    return statistics.median(out) if out else None


def fma_scaling(rounds: int = 3):
    """Two threads' throughput over one thread's on a loop of fused multiply-adds that never leaves the registers
    and L1 (12 independent 256-bit sums, ~0.06 s a thread), median of ``rounds``: ~2.0 while the host runs the two
    vCPUs on two cores, ~1.0 while it runs them on one core's two hardware threads (which share its FMA units), in
    between while a neighbour's work shares the core. Beside ``core_to_core_ns`` it says what a 2-thread reading was
    measured on: issue 11's VM read 1.93-2.00 (2026-11-28 19:22 UTC) minutes after a store-bound loop read 0.87-1.08.
    None where numba cannot compile it."""
    try:
        loop = _fma_loop()
    except Exception:  # noqa: BLE001 - numba missing or unable to compile it: no reading
        return None

    def run(threads, n=4_000_000):
        arrays = [(np.full((3, 64), 0.5, np.float32), np.full((4, 64), 0.5, np.float32)) for _ in range(threads)]
        workers = [threading.Thread(target=loop, args=(n, *a)) for a in arrays]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return time.perf_counter() - t0

    return statistics.median(2 * run(1) / run(2) for _ in range(rounds))


_FMA = []


def _fma_loop():
    """The compiled loop of :func:`fma_scaling` (deepscope's 3 x 4 tile of 256-bit sums over rows of 64 numbers in
    L1), built on first use."""
    if not _FMA:
        from numba import njit
        from deepscope._kernels import _vector_dot_tile_3x4

        @njit(nogil=True, fastmath={"reassoc", "contract"})
        def loop(n, w, x):
            t = np.float32(0)
            for i in range(n):
                s = _vector_dot_tile_3x4(w, x, 0, 1, 2, 0, 1, 2, 3, 64)
                w[0, i & 63] = s[0] * np.float32(1e-30)      # (a dependence, so that the loop is not hoisted)
                t += s[11]
            return t
        loop(1, np.ones((3, 64), np.float32), np.ones((4, 64), np.float32))
        _FMA.append(loop)
    return _FMA[0]


_VOLLEY = []


def _volley_loop():
    """The compiled loop of :func:`core_to_core_ns`, built on first use (numba is heavy). The flag is read by an
    atomic load (acquire), so that the compiler reads it anew on every turn of the wait."""
    if not _VOLLEY:
        from numba import njit, types
        from numba.core import cgutils
        from numba.extending import intrinsic

        @intrinsic
        def load_acquire(typingctx, arr, i):
            sig = types.int64(arr, types.intp)

            def codegen(context, builder, sig, args):
                ary = context.make_array(sig.args[0])(context, builder, args[0])
                ptr = cgutils.get_item_pointer(context, builder, sig.args[0], ary, [args[1]])
                return builder.load_atomic(ptr, ordering="acquire", align=8)
            return sig, codegen

        @njit(nogil=True)
        def volley(flag, me, volleys, spins_max):
            for k in range(volleys):
                want, spins = 2 * k + me, 0
                while load_acquire(flag, 0) != want:
                    spins += 1
                    if spins > spins_max:
                        return False
                flag[0] = want + 1
            return True
        volley(np.ones(16, np.int64), 1, 1, 1)          # compiled here, not inside a timing
        _VOLLEY.append(volley)
    return _VOLLEY[0]
