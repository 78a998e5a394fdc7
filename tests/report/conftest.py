"""Small real runs of every kind a report reads, made once per test session."""
import csv
import json

import numpy as np
import pytest

from deepscope import io
from deepscope.scope import speed_experiment
from report_runs import CONV, sample_mnist, train_run


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("report-runs")


@pytest.fixture(scope="session")
def conv_run(runs_dir):
    return train_run(runs_dir / "conv")


@pytest.fixture(scope="session")
def text_run(runs_dir):
    from deepscope.cli import main
    corpus = runs_dir / "corpus.txt"
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "it"]
    corpus.write_text(" ".join(rng.choice(words, 1500)) + "\n", encoding="utf-8")
    path = runs_dir / "text"
    assert main(["rnn", "text", "--corpus", str(corpus), "--hidden", "16", "--embedding", "8", "--seq-len", "16",
                 "-m", "4", "--epochs", "2", "--sample-length", "80", "--quiet", "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="session")
def scope_run(runs_dir):
    train, *_ = sample_mnist(n_train=100)
    path = runs_dir / "scope-speed"
    X = np.asarray(train[0]).reshape(len(train[0]), -1)
    speed_experiment([784, 12, 12, 10], steps=6, seeds=2, data=(X, train[1]), out=path, progress=False)
    return path


@pytest.fixture(scope="session")
def sweep_run(runs_dir):
    """A sweep folder as `deepscope sweep` writes it (sweep.json, trials.json, trials.csv, one run per trial)."""
    path = runs_dir / "sweep"
    trials, rows = [], []
    for k, eta in enumerate((0.01, 0.1)):
        name = f"eta={eta}-seed=0"
        trials.append({"options": {"eta": eta}, "seed": 0, "name": name})
        run = train_run(path / name, eta=eta, epochs=2, every=50)
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        best = max(records, key=lambda r: (r["val_acc"], -r["epoch"]))
        rows.append({"trial": name, "options": {"eta": eta}, "seed": 0, "status": "done",
                     "best_epoch": best["epoch"], "val_acc": best["val_acc"], "test_acc": best["test_acc"],
                     "seconds": 1.0 + k})
    io.write_json(path / "sweep.json", {"command": ["train", "--arch", CONV, "--epochs", "2"], "trials": trials})
    io.write_json(path / "trials.json", rows)
    with open(path / "trials.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["trial", "eta", "seed", "status", "best_epoch", "val_acc", "test_acc", "seconds"],
                           extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r["options"], **r})
    return path
