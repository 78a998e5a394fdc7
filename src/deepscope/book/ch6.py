"""Chapter 6's ladder: from a shallow net at 97.80% to an ensemble of convolutional nets at 99.67%.

Each rung is a named preset holding the book's architecture and hyperparameters (from the text and
Nielsen's ``conv.py``). A rung runs either with deepscope's own training (:func:`deepscope.train.fit`, the
default: reshuffling, N(0, 1/n_in) weights, L2 as λ/n, inverted dropout) or through the network3 API with
network3's quirks (``quirks=True``; see :mod:`deepscope.book.network3` and ``docs/deviations.md``).

    >>> from deepscope.book import ch6
    >>> result = ch6.run_rung("conv", epochs=1, train_size=10_000)
    >>> print(ch6.format_table([result]))

The book's number for a rung is the test accuracy at the epoch of best validation accuracy (the ensemble:
the test accuracy of a plurality vote of five trained nets). The book ran each rung three times
(``conv.py``); ``runs`` chooses how many times we do, and the table reports their mean.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy

from .. import backend, files, nn, optim
from ..arch import build
from ..data import load_mnist
from ..errors import DataError, DeepscopeError
from ..runs import History, Run
from ..train import ProgressBar, fit, predict_logits
from . import network3 as n3


@dataclass(frozen=True)
class Rung:
    """One step of the ladder.

    Attributes:
        name: the preset's name (``deepscope book ch6 NAME``).
        title: what changes at this step, in the book's words.
        book: the book's test accuracy, in percent.
        convs: ``(maps, kernel)`` of each conv + 2x2 max-pool layer.
        fcs: sizes of the hidden fully connected layers.
        activation: of every hidden layer ("sigmoid" or "relu").
        p_dropout: dropout on the inputs of every fully connected and softmax layer.
        epochs, mini_batch_size, eta, lmbda: the book's SGD settings. λ is network3's (its L2 term is
            0.5 λ Σw² / num_training_batches); both modes apply that same strength.
        momentum, init: the book's are plain SGD (0) and its N(0, 1/n_in) weights with N(0, 1) biases
            ("book"); other values (``deepscope book ch6 --momentum --init``, for short runs on a CPU) need
            deepscope's training, not ``quirks``.
        expanded: train on the one-pixel expanded training set (250,000 images).
        runs: how many nets to train; the ensemble rung votes among them.
        ensemble: the result is the plurality vote of the ``runs`` nets.
    """
    name: str
    title: str
    book: float
    convs: tuple = ()
    fcs: tuple = (100,)
    activation: str = "sigmoid"
    p_dropout: float = 0.0
    epochs: int = 60
    mini_batch_size: int = 10
    eta: float = 0.1
    lmbda: float = 0.0
    momentum: float = 0.0
    init: str = "book"
    expanded: bool = False
    runs: int = 1
    ensemble: bool = False

    @property
    def arch(self) -> str:
        """The architecture string for :func:`deepscope.arch.build`."""
        tokens = []
        for maps, k in self.convs:
            tokens += [f"conv{maps}x{k}", "maxpool2"]
        drop = [f"dropout{self.p_dropout}"] if self.p_dropout else []
        for n in self.fcs:
            tokens += drop + [f"fc{n}"]
        tokens += drop + ["softmax10"]
        return "-".join(tokens) + f":{self.activation}"

    def network3_layers(self, mini_batch_size: int | None = None) -> list:
        """The same net as network3 layers (as the book writes it)."""
        m = mini_batch_size or self.mini_batch_size
        act = self.activation   # network3 layers take the registry's name as well as network3's function
        layers, maps, side = [], 1, 28
        for out_maps, k in self.convs:
            layers.append(n3.ConvPoolLayer(filter_shape=(out_maps, maps, k, k), image_shape=(m, maps, side, side),
                                           poolsize=(2, 2), activation_fn=act))
            maps, side = out_maps, (side - k + 1) // 2
        n_in = maps * side * side
        for n in self.fcs:
            layers.append(n3.FullyConnectedLayer(n_in=n_in, n_out=n, activation_fn=act, p_dropout=self.p_dropout))
            n_in = n
        layers.append(n3.SoftmaxLayer(n_in=n_in, n_out=10, p_dropout=self.p_dropout))
        return layers

    def settings(self) -> str:
        bits = [f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}", f"m={self.mini_batch_size}", f"η={self.eta:g}"]
        if self.lmbda:
            bits.append(f"λ={self.lmbda:g}")
        if self.momentum:
            bits.append(f"μ={self.momentum:g}")
        if self.init != "book":
            bits.append(f"init {self.init}")
        if self.expanded:
            bits.append("expanded data (250,000 images)")
        if self.runs > 1:
            bits.append(f"{self.runs} nets")
        return ", ".join(bits)


_CONV1 = ((20, 5),)
_CONV2 = ((20, 5), (40, 5))
RUNGS = {r.name: r for r in [
    Rung("baseline", "shallow net: one hidden layer of 100 sigmoid neurons", 97.80),
    Rung("conv", "one conv-pool layer (20 5x5 filters, 2x2 max-pool) before the FC layer", 98.78, convs=_CONV1),
    Rung("conv2", "a second conv-pool layer (40 5x5 filters)", 99.06, convs=_CONV2),
    Rung("relu", "rectified linear units, η=0.03, L2 λ=0.1", 99.23, convs=_CONV2, activation="relu",
         eta=0.03, lmbda=0.1),
    Rung("expanded", "training data expanded by one-pixel shifts (250,000 images)", 99.37, convs=_CONV2,
         activation="relu", eta=0.03, lmbda=0.1, expanded=True),
    Rung("fc2", "an extra fully connected layer of 100 ReLUs", 99.43, convs=_CONV2, fcs=(100, 100),
         activation="relu", eta=0.03, lmbda=0.1, expanded=True),
    Rung("dropout", "two FC layers of 1000 ReLUs with dropout 0.5, 40 epochs", 99.60, convs=_CONV2,
         fcs=(1000, 1000), activation="relu", p_dropout=0.5, epochs=40, eta=0.03, expanded=True),
    Rung("ensemble", "plurality vote of five dropout nets", 99.67, convs=_CONV2, fcs=(1000, 1000),
         activation="relu", p_dropout=0.5, epochs=40, eta=0.03, expanded=True, runs=5, ensemble=True),
]}


def get_rung(name: str, **changes) -> Rung:
    """The rung named ``name``, with the settings in ``changes`` (fields of :class:`Rung`: ``eta``,
    ``mini_batch_size``, ``momentum``, ``init``, ``expanded``; None keeps the book's) changed."""
    if name not in RUNGS:
        raise DeepscopeError(f"unknown chapter 6 step {name!r}: expected one of {', '.join(RUNGS)}")
    return dataclasses.replace(RUNGS[name], **{k: v for k, v in changes.items() if v is not None})


def list_rungs() -> str:
    """The ladder as text: name, book's accuracy, architecture and settings."""
    lines = [f"{'step':<10}{'book':>7}  what changes"]
    for r in RUNGS.values():
        lines.append(f"{r.name:<10}{r.book:>6.2f}%  {r.title}")
        lines.append(f"{'':<19}{r.arch}")
        lines.append(f"{'':<19}{r.settings()}")
    return "\n".join(lines)


# -- the vote -----------------------------------------------------------------------------------------
def ensemble_predict(predictions) -> numpy.ndarray:
    """The plurality vote of K nets, as the book's ``ensemble`` (``Counter(p).most_common(1)``).

    Args:
        predictions: K arrays, each ``(N,)`` predicted classes or ``(N, classes)`` outputs (argmax taken).

    Returns:
        ``(N,)`` the class most nets chose for each input; a tie goes to the tied class that the earliest
        net chose (what ``Counter.most_common`` returns on Python 3.7+).
    """
    votes = [numpy.asarray(backend.to_numpy(p)) for p in predictions]
    if not votes:
        raise ValueError("ensemble_predict: no predictions")
    votes = [v.argmax(axis=1) if v.ndim == 2 else v for v in votes]
    votes = numpy.stack(votes).astype(numpy.int64)  # (K, N)
    k, n = votes.shape
    counts = numpy.zeros((n, int(votes.max()) + 1), dtype=numpy.int64)
    for v in votes:
        counts[numpy.arange(n), v] += 1
    best = counts.max(axis=1)
    choice = numpy.full(n, -1, dtype=numpy.int64)
    for v in votes:  # the earliest net whose class has the top count decides
        undecided = (choice < 0) & (counts[numpy.arange(n), v] == best)
        choice[undecided] = v[undecided]
    return choice


# -- data -----------------------------------------------------------------------------------------------
def load_data(data_dir=None, train_size: int | None = None, val_size: int | None = None, verbose: bool = True):
    """MNIST's 50k/10k/10k split as ``(train, validation, test, source)``; the training set cut to its first
    ``train_size`` images and the validation set to its first ``val_size`` (the test set is never cut)."""
    mnist = load_mnist(data_dir=data_dir, verbose=verbose)
    (X, y), (Xv, yv) = mnist.train, mnist.validation
    if train_size:
        X, y = X[:train_size], y[:train_size]
    if val_size:
        Xv, yv = Xv[:val_size], yv[:val_size]
    return (X, y), (Xv, yv), mnist.test, getattr(mnist, "source", "")


# -- running a rung -------------------------------------------------------------------------------------
def _train_one(rung: Rung, train, validation, test, epochs, quirks, run, progress, verbose, more=()):
    """Train one net of the rung; return (predict, record): ``predict(X)`` gives the trained net's classes
    (final weights, as the book's ensemble used them) and record the best epoch's numbers."""
    t0 = time.perf_counter()
    if quirks:
        if rung.momentum or rung.init != "book":
            raise DeepscopeError(f"{rung.name}: momentum and init other than the book's need deepscope's training, "
                                 f"not network3's quirks")
        net = n3.Network(rung.network3_layers(), rung.mini_batch_size, quirks=True)
        res = net.SGD(train, epochs, rung.mini_batch_size, rung.eta, validation, test, lmbda=rung.lmbda,
                      verbose=verbose)
        predict = net.predict
        record = {"val_acc": res.best_validation_accuracy, "test_acc": res.test_accuracy,
                  "best_epoch": res.best_epoch + 1, "epochs_run": len(res.epochs)}
        if run is not None:
            run.write_metrics(History({**e, "epoch": e["epoch"] + 1} for e in res.epochs))
            run.save_model(net.model)  # final weights, as network3 kept them
    else:
        model = build(rung.arch, init=rung.init)
        # The preset's λ is network3's (0.5 λ Σw² / num_training_batches): the same decay per step is
        # λ/(n/m), i.e. network2's λ times m. deepscope's book_weight_decay(λ, n) alone would be m times weaker.
        num_training_batches = len(train[0]) // rung.mini_batch_size
        opt = optim.SGD(model.parameters(), lr=rung.eta, momentum=rung.momentum,
                        weight_decay=rung.lmbda / num_training_batches)
        history = fit(model, nn.LogLikelihoodCost(), opt, train, epochs=epochs, batch_size=rung.mini_batch_size,
                      validation=validation, test=test, run=run,
                      callbacks=([ProgressBar()] if progress else []) + list(more))
        best = history.best
        predict = lambda X: _predict(model, X)  # noqa: E731
        record = {"val_acc": best["val_acc"], "test_acc": best["test_acc"], "best_epoch": best["epoch"],
                  "epochs_run": len(history)}
    record["seconds"] = time.perf_counter() - t0
    return predict, record


def run_rung(rung, data=None, *, epochs: int | None = None, runs: int | None = None, train_size: int | None = None,
             val_size: int | None = None, quirks: bool = False, seed: int = 0, out=None, data_dir=None,
             progress: bool = True, verbose: bool = True, callbacks_for=None, data_source: str | None = None) -> dict:
    """Train a rung (``runs`` nets, seeds ``seed, seed+1, ...``) and return its result.

    Args:
        rung: a :class:`Rung` or its name.
        data: ``(train, validation, test)`` already loaded (else :func:`load_data` is called).
        epochs, runs: override the book's numbers (e.g. to fit a small machine).
        train_size: use only the first N training images (before any expansion).
        val_size: use only the first N validation images.
        quirks: train through network3 with its quirks instead of :func:`deepscope.train.fit`.
        seed: seed of the first net.
        out: folder for the run folders (``OUT/<rung>-<k>``); None saves nothing. A net whose run folder is
            already there continues from its checkpoint (a finished one is not trained again).

    Returns:
        a dict: rung, book, ours (mean over runs of the test accuracy at best validation, or the vote's
        accuracy for the ensemble, in percent), runs (one record per net), epochs, train_size, quirks, ...
    """
    rung = get_rung(rung) if isinstance(rung, str) else rung
    epochs = epochs or rung.epochs
    runs = runs or rung.runs
    if data is None:
        train, validation, test, source = load_data(data_dir, train_size, val_size, verbose=verbose)
    else:
        (train, validation, test), source = data, data_source or "given"   # where ``data`` came from, for the runs
        if train_size:
            train = (train[0][:train_size], train[1][:train_size])
        if val_size:
            validation = (validation[0][:val_size], validation[1][:val_size])
    n_original = len(train[0])
    if n_original < rung.mini_batch_size:  # network3 trains on whole mini-batches and scales λ by their number
        raise DataError(f"{rung.name}: {n_original} training images are fewer than the rung's mini-batch of "
                        f"{rung.mini_batch_size}; network3 trains on whole mini-batches only")
    if rung.expanded:
        backend.manual_seed(seed)
        train = n3.expanded_training_data(train)
    out = Path(out) if out is not None else None

    records, predictions = [], []
    for k in range(runs):
        backend.manual_seed(seed + k)
        run = _net_run(out / f"{rung.name}-{k + 1}") if out is not None else None
        if run is not None:
            run.write_config({
                "rung": rung.name, "arch": rung.arch, **asdict(rung), "epochs": epochs, "seed": seed + k,
                "quirks": quirks, "n_train": len(train[0]), "train_size": n_original, "data_source": source},
                "deepscope book ch6")
        if verbose:
            mode = "network3 quirks" if quirks else "deepscope fit"
            print(f"ch6 {rung.name}: net {k + 1}/{runs}, {rung.arch}, {epochs} epochs on {len(train[0]):,} images "
                  f"({mode})" + (f", run folder {run}" if run else ""))
        more = callbacks_for(run) if callbacks_for is not None and run is not None and not quirks else ()
        predict, record = _train_one(rung, train, validation, test, epochs, quirks, run, progress, verbose, more)
        if run is not None:
            run.close()
        records.append(record)
        if rung.ensemble:
            predictions.append(predict(test[0]))

    result = {"rung": rung.name, "title": rung.title, "book": rung.book, "arch": rung.arch, "quirks": quirks,
              "settings": rung.settings(), "changed": changed_settings(rung),
              "epochs": epochs, "book_epochs": rung.epochs, "train_size": n_original, "n_train": len(train[0]),
              "val_size": len(validation[0]), "seed": seed, "data_source": source, "runs": records}
    if rung.ensemble:
        votes = ensemble_predict(predictions)
        result["ours"] = 100.0 * float((votes == backend.to_numpy(test[1])).mean())
        result["members"] = [100.0 * float((p == backend.to_numpy(test[1])).mean()) for p in predictions]
    else:
        result["ours"] = 100.0 * float(numpy.mean([r["test_acc"] for r in records]))
    result["best_of_runs"] = 100.0 * max(r["test_acc"] for r in records)
    result["seconds"] = sum(r["seconds"] for r in records)
    if out is not None:
        files.write_json(out / f"{rung.name}-result.json", result)
    return result


def changed_settings(rung: Rung) -> dict:
    """The settings of ``rung`` that differ from the book's (``{}``: the book's own)."""
    book = RUNGS.get(rung.name)
    return {} if book is None else {k: v for k, v in asdict(rung).items() if v != getattr(book, k)}


def _net_run(path):
    """The run folder of one net: new, or taken back where an earlier (interrupted) ladder left it (its
    checkpoint then continues the net where it stopped)."""
    return Run.resume(path) if Run.is_run(path) else Run.create(path)


def _predict(model, X, batch_size: int = 1000):
    """Predicted classes of a trained model (the final weights, as the book's ensemble used)."""
    return numpy.asarray(backend.to_numpy(predict_logits(model, X, batch_size))).argmax(axis=1)


def format_table(results) -> str:
    """The book-vs-ours table: rung, book's number, ours, epochs run (of the book's), training images, runs."""
    head = f"{'rung':<10}{'book':>8}{'ours':>8}{'epochs':>10}{'train':>9}{'runs':>6}  mode"
    lines = [head, "-" * len(head)]
    for r in results:
        run_epochs = sorted({rec["epochs_run"] for rec in r["runs"]})
        ep = "/".join(str(e) for e in run_epochs)
        train = f"{r['n_train'] // 1000}k" if r["n_train"] >= 1000 else str(r["n_train"])
        mode = "network3 quirks" if r["quirks"] else "fit"
        lines.append(f"{r['rung']:<10}{r['book']:>7.2f}%{r['ours']:>7.2f}%{ep + '/' + str(r['book_epochs']):>10}"
                     f"{train:>9}{len(r['runs']):>6}  {mode}")
    return "\n".join(lines)
