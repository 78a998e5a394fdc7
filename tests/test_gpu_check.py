"""benchmarks/gpu_check.py stays runnable: on the CPU it refuses in one line (its sections are walked with a strict
CuPy stand-in in tests/test_gpu_stand_in.py)."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_without_a_gpu_it_says_so_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "layers", "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("gpu_check: device 'cuda' needs CuPy and an NVIDIA GPU")
