"""Small real runs of every kind a report reads, made once per test session."""
import numpy as np
import pytest

from deepscope.cli import main

from deepscope.runs import Run
from deepscope.book.ch5 import speed_experiment
from deepscope.sweep import SweepFolder, expand
from report_runs import CONV, offline, sample_mnist, train_run


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("report-runs")


@pytest.fixture(scope="session")
def conv_run(runs_dir):
    """`deepscope train --report` on 300 images of the shipped sample: speeds every 3 steps."""
    path = runs_dir / "conv"
    with offline():
        assert main(["train", "--arch", CONV, "--train-size", "300", "--epochs", "2", "-m", "16", "--report",
                     "--speed-every", "3", "--report-every", "10", "--quiet", "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="session")
def text_run(runs_dir):
    corpus = runs_dir / "corpus.txt"
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "it"]
    corpus.write_text(" ".join(rng.choice(words, 1500)) + "\n", encoding="utf-8")
    path = runs_dir / "text"
    assert main(["rnn", "text", "--corpus", str(corpus), "--hidden", "16", "--embedding", "8", "--seq-len", "16",
                 "-m", "4", "--epochs", "2", "--sample-length", "80", "--quiet", "--report", "--speed-every", "5",
                 "--out", str(path)]) == 0
    return path


@pytest.fixture(scope="session")
def scope_run(runs_dir):
    train, *_ = sample_mnist(n_train=100)
    X = np.asarray(train[0]).reshape(len(train[0]), -1)
    with Run.create(runs_dir / "scope-speed", "scope-speed") as run:    # as `deepscope scope speed` does
        speed_experiment([784, 12, 12, 10], steps=6, seeds=2, data=(X, train[1]), out=run.path, progress=False)
    return run.path


@pytest.fixture(scope="session")
def sweep_run(runs_dir):
    """A sweep folder written by deepscope.sweep's own SweepFolder (sweep.json, trials.json/csv), its two trials
    trained here in-process (`deepscope sweep` would run them on Ray: slow to start, tested in test_sweep)."""
    path = runs_dir / "sweep"
    trials = expand(grid=[("eta", ["0.01", "0.1"])])
    folder = SweepFolder.create(path, ["train", "--arch", CONV, "--epochs", "2"], trials)
    for k, trial in enumerate(trials):
        run = Run.open(train_run(folder.run_dir(trial), eta=float(trial.options["eta"]), epochs=2, every=50))
        best = run.history.best
        folder.record({"trial": trial.name, "options": trial.options, "seed": trial.seed, "status": "done",
                       "best_epoch": best["epoch"], "val_acc": best["val_acc"], "test_acc": best["test_acc"],
                       "seconds": 1.0 + k})
    return path
