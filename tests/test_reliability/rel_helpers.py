"""Helpers of the reliability catalogue (issue 9): small data folders, and running code in a fresh
process to measure its peak memory."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from deepscope.data import write_idx
from deepscope.data.mnist import FILES

from data_paths import MNIST_DIR

ROOT = Path(__file__).resolve().parents[2]
REAL_MNIST = MNIST_DIR   # $DEEPSCOPE_DATA or ../shared/data, resolved
needs_mnist = pytest.mark.skipif(not (REAL_MNIST / "train-labels-idx1-ubyte.gz").is_file(),
                                 reason="no MNIST in ../shared/data")


def write_fake_mnist(folder, n_train=60, n_test=12, seed=0, gz=True):
    """Four small MNIST-shaped IDX files (random pixels and labels) in ``folder``; their arrays by file name."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    for name in FILES:
        write_idx(Path(folder) / (name + (".gz" if gz else "")), arrays[name])
    return arrays


def run_measured(code: str, cwd=None) -> dict:
    """Run ``code`` in a fresh Python; it must print one JSON object as its last line. Returns that object
    with ``peak_mb`` added: the process's peak resident memory (``resource.getrusage``), in MB.

    Linux carries a process's peak RSS across ``exec``, and a child forked from pytest starts with pytest's; so
    Python is started by a small shell that forks it (the ``; exit`` keeps the shell from exec'ing it directly),
    and the child also reports ``VmHWM`` (the peak of its own memory map) as a cross-check."""
    wrapper = textwrap.dedent("""
        import json, resource, sys
        def _peak():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        def _hwm():
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
        try:
            result = main()
        except Exception as e:
            result = {"error": type(e).__name__, "message": str(e)}
        result["peak_mb"], result["vmhwm_mb"] = _peak(), _hwm()
        print(json.dumps(result))
    """)
    proc = subprocess.run(["/bin/sh", "-c", '"$0" -c "$1"; exit $?', sys.executable, textwrap.dedent(code) + wrapper],
                          capture_output=True, text=True,
                          cwd=cwd, timeout=300, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin",
                                                     "OPENBLAS_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert abs(result["peak_mb"] - result["vmhwm_mb"]) < 5, result  # getrusage measured this process alone
    return result
