"""The deepscope command: train / evaluate / predict / resume, and one-line errors."""
import json
import subprocess
import sys
import urllib.error

import numpy as np
import pytest

from deepscope.cli import main
from deepscope.data import mnist as mnist_module

FAST = ["--arch", "784-30-10:sigmoid", "--epochs", "1", "-m", "10", "--eta", "0.5", "--momentum", "0",
        "--init", "book", "--schedule", "none", "--train-size", "1000", "--quiet"]


@pytest.fixture
def offline(monkeypatch):
    def fail(url, timeout=None):
        raise urllib.error.URLError("offline in tests")
    monkeypatch.setattr(mnist_module.urllib.request, "urlopen", fail)


def test_train_falls_back_to_the_sample_and_saves_a_run(tmp_path, offline, capsys):
    run = tmp_path / "run"
    assert main(["train", *FAST, "--out", str(run)]) == 0
    out, err = capsys.readouterr()
    assert "embedded sample" in err
    assert "best validation accuracy" in out and str(run) in out
    for name in ("config.json", "metrics.jsonl", "model.safetensors", "model.json", "checkpoint.safetensors"):
        assert (run / name).exists(), name
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["arch"] == "784-30-10:sigmoid" and cfg["data_source"] == "embedded sample"

    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    acc = float(out.split("test")[1].split("accuracy")[1].split("%")[0])
    assert acc > 70.0

    # resume: one more epoch, continuing the same run
    assert main(["train", "--resume", str(run), "--epochs", "2", "--quiet"]) == 0
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2]


def test_predict_reads_a_png(tmp_path, offline, capsys):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from deepscope.data import load_mnist
    run = tmp_path / "run"
    main(["train", *FAST, "--out", str(run)])
    X, y = load_mnist(download=False, verbose=False).test
    i = int(np.flatnonzero(y == 3)[0])
    png = tmp_path / "three.png"
    plt.imsave(png, 1.0 - X[i, 0], cmap="gray")  # dark digit on light: predict inverts it
    capsys.readouterr()
    assert main(["predict", str(run), str(png)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{png}: ")
    assert len(out.split("all: ")[1].split()) == 10


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "deepscope.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize("args,msg", [
    (["train", "--arch", "784-3x-10", "--data-dir", "."], "cannot read token 2 '3x'"),
    (["evaluate", "/nonexistent/run"], "is not a run folder"),
    (["predict", "/nonexistent/run", "x.png"], "no saved model"),
])
def test_errors_are_one_line(args, msg):
    r = run_cli(*args)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and msg in r.stderr and "Traceback" not in r.stderr


def test_corrupt_idx_is_one_line(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(b"")
    r = run_cli("train", *FAST, "--data-dir", str(tmp_path), "--out", str(tmp_path / "run"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "idx" in r.stderr


def test_help_has_examples():
    r = run_cli("--help")
    assert r.returncode == 0 and "examples:" in r.stdout and "deepscope train" in r.stdout
