"""Each ported script of the book (examples/book/) runs with --quick, in a working folder laid out as the book's
users keep it (../data/mnist.pkl.gz), and writes what the book's writes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "book"


def run(script, cwd):
    env = dict(os.environ, MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(EXAMPLES / script), "--quick"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return done.stdout


def test_every_script_has_a_test():
    tested = {"generate_gradient.py", "weight_initialization.py", "multiple_eta.py", "overfitting.py",
              "more_data.py", "mnist_average_darkness.py", "chapter1_network.py", "chapter3_regularization.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_generate_gradient(book_folder):
    out = run("generate_gradient.py", book_folder)
    speeds = [json.loads(line.split(": ", 1)[1]) for line in out.splitlines()
              if line.startswith("Average gradient for the hidden layers")]
    assert [len(s) for s in speeds] == [2, 3, 4]
    for s in speeds:                       # the vanishing gradient: each layer learns faster than the one before
        assert all(a < b for a, b in zip(s, s[1:]))
    for k in (2, 3, 4):
        norms = json.loads((book_folder / f"norms_during_training_{k}_layers.json").read_text())
        assert len(norms) == 3 and all(len(n) == k for n in norms)
        assert (book_folder / f"training_speed_{k}_layers.png").stat().st_size > 0
    assert len(json.loads((book_folder / "initial_gradient.json").read_text())) == 2


def test_chapter1_network(book_folder):
    lines = run("chapter1_network.py", book_folder).splitlines()
    assert [x.split(":")[0] for x in lines] == ["Epoch 0", "Epoch 1"] and lines[1].endswith(" / 1000")


def test_chapter3_regularization(book_folder):
    out = run("chapter3_regularization.py", book_folder)
    assert out.count("Accuracy on evaluation data:") == 2 and "Accuracy on training data:" in out


def test_weight_initialization(book_folder):
    run("weight_initialization.py", book_folder)
    results = json.loads((book_folder / "weight_initialization.json").read_text())
    for key in ("default_weight_initialization", "large_weight_initialization"):
        vc, va, tc, ta = results[key]
        assert vc == tc == ta == [] and len(va) == 2 and all(0 <= a <= 1000 for a in va)
    assert (book_folder / "weight_initialization.png").stat().st_size > 0


def test_multiple_eta(book_folder):
    run("multiple_eta.py", book_folder)
    results = json.loads((book_folder / "multiple_eta.json").read_text())
    assert len(results) == 3 and all(len(r[2]) == 2 and r[0] == r[1] == r[3] == [] for r in results)


def test_overfitting(book_folder):
    run("overfitting.py", book_folder)
    test_cost, test_accuracy, training_cost, training_accuracy = json.loads(
        (book_folder / "overfitting.json").read_text())
    assert len(test_cost) == len(test_accuracy) == len(training_cost) == len(training_accuracy) == 3
    assert all(0 <= a <= 100 for a in training_accuracy)


def test_more_data(book_folder):
    out = run("more_data.py", book_folder)
    assert len(json.loads((book_folder / "more_data.json").read_text())) == 2
    assert out.count("Accuracy was") >= 2


def test_mnist_average_darkness(book_folder):
    out = run("mnist_average_darkness.py", book_folder)
    correct = int(out.splitlines()[-1].split(" of ")[0])
    assert out.splitlines()[-1].endswith("of 1000 values correct.") and 100 < correct < 400
