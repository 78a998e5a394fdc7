"""Helpers of the reliability catalogue (issue 9): small data folders, and running code in a fresh
process to measure its peak memory."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from data_paths import MNIST_DIR, write_fake_mnist  # noqa: F401 (the helpers' tests import it from here)

ROOT = Path(__file__).resolve().parents[2]
REAL_MNIST = MNIST_DIR   # $DEEPSCOPE_DATA or ../shared/data, resolved
needs_mnist = pytest.mark.skipif(not (REAL_MNIST / "train-labels-idx1-ubyte.gz").is_file(),
                                 reason="no MNIST in ../shared/data")


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
