"""benchmarks/gpu_check.py stays runnable: on the CPU it refuses in one line, and its layer check (run here with
NumPy standing in for CuPy) builds every case and compares every gradient."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deepscope import backend

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def gpu_check(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    yield mod
    backend.set_default_dtype("float32")


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_without_a_gpu_it_says_so_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "layers", "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("gpu_check: device 'cuda' needs CuPy and an NVIDIA GPU")


def test_layer_section_runs_every_case_with_numpy_standing_in(gpu_check, monkeypatch):
    real = backend.device_module
    monkeypatch.setattr(backend, "device_module", lambda d: np if d == "cuda" else real(d))
    result = gpu_check.section_layers(None, np)
    failed = {k: v for k, v in result.items() if isinstance(v, dict) and not v.get("ok")}
    assert not failed
    assert result["all_ok"] and {"LSTM float64", "Conv2d float32", "Embedding float64"} <= set(result)
