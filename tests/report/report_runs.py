"""Small real runs for the report tests (seconds each, on the MNIST sample shipped with deepscope)."""
import contextlib
import urllib.error
from pathlib import Path

import pytest

from deepscope import arch, backend, nn, optim
from deepscope.data import load_mnist
from deepscope.data import mnist as mnist_module
from deepscope.report import live_callbacks
from deepscope.runs import Run
from deepscope.train import fit

CONV = "conv6x5-maxpool2-fc20-softmax10:relu"


def sample_mnist(n_train=300, n_eval=200):
    data = load_mnist(download=False, verbose=False)          # the embedded sample: no network, no cache
    cut = lambda split, n: (split[0][:n], split[1][:n])     # noqa: E731
    return cut(data.train, n_train), cut(data.validation, n_eval), cut(data.test, n_eval), data.source


def train_run(path: Path, arch_string=CONV, epochs=2, eta=0.03, every=3, seed=0, callbacks=()):
    """What `deepscope train --report` does, on 300 sample images: a run with its config, metrics, speed records
    (every ``every`` steps), model, and the report it keeps up to date (``report.html``)."""
    train, validation, test, source = sample_mnist()
    backend.manual_seed(seed)
    model = arch.build(arch_string, init="he")
    run = Run.create(path, "train")
    run.write_config({"arch": arch_string, "epochs": epochs, "batch_size": 16, "eta": eta, "momentum": 0.9,
                      "lmbda": 0.1, "optimizer": "sgd", "init": "he", "seed": seed, "dataset": "mnist",
                      "train_size": len(train[0]), "data_source": source, "n_train": len(train[0])},
                     "deepscope train")
    opt = optim.SGD(model.parameters(), lr=eta, momentum=0.9, weight_decay=optim.book_weight_decay(0.1, 300))
    report = live_callbacks(model, run.path, every=10, speed_every=every)
    with run:
        fit(model, nn.LogLikelihoodCost(), opt, train, epochs=epochs, batch_size=16, validation=validation,
            test=test, run=run, callbacks=[*report, *callbacks])
    report[0].remove()
    return path


@contextlib.contextmanager
def offline():
    """No download: the commands fall back to the MNIST sample shipped with deepscope."""
    def fail(url, timeout=None):
        raise urllib.error.URLError("offline in tests")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mnist_module.urllib.request, "urlopen", fail)
        yield
