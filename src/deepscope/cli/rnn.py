"""``deepscope rnn mnist``, ``deepscope rnn text`` and ``deepscope rnn sample RUN``."""
from __future__ import annotations

import argparse
import sys
import time

from .. import backend, files
from ..data import load_mnist
from ..data.text import Vocabulary, load_corpus
from ..errors import ConfigError, DataError
from ..runs import Run
from ..sequence.mnist import CELLS, as_rows, train_row_mnist
from ..sequence.text import char_model, generate, sample, train_char_lm
from ..train import ProgressBar
from . import options
from .options import momentum_float, nonnegative_float, nonnegative_int, positive_float, positive_int

VOCAB = "vocab.json"   # the characters of a char-lm run, added to its run folder

EXAMPLES = """examples:
  deepscope rnn mnist --epochs 10                      row-by-row MNIST with a 128-unit tanh RNN (~98%)
  deepscope rnn mnist --cell lstm --epochs 20 --lr 2e-3   the same with an LSTM (~99%)
  deepscope rnn text --epochs 5                        char LM on the shipped Shakespeare excerpt
  deepscope rnn text --corpus input.txt --hidden 256   char LM on your own text
  deepscope rnn text --corpus input.txt --cell lstm --hidden 512 --schedule cosine
  deepscope rnn sample runs/rnn-text-20261127-101500 --length 500 --temperature 0.8 --prime ROMEO:
"""
MNIST, TEXT = "deepscope rnn mnist", "deepscope rnn text"
MNIST_SAVED = ("cell", "hidden", "nonlinearity", "init", "epochs", "batch_size", "lr", "optimizer", "momentum", "clip",
               "schedule", "no_normalize", "train_size", "seed", "data_dir")
TEXT_SAVED = ("corpus", "cell", "hidden", "embedding", "layers", "seq_len", "batch_size", "epochs", "lr", "clip",
              "schedule", "seed", "sample_length")


def register(sub) -> None:
    p = sub.add_parser("rnn", help="recurrent nets: row-by-row MNIST, character language models",
                       description="Recurrent networks trained by backpropagation through time.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    rnn_sub = p.add_subparsers(dest="rnn_command", metavar="TASK")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    m = rnn_sub.add_parser("mnist", help="classify MNIST digits read row by row (28 steps of 28 pixels)")
    _cell(m)
    m.add_argument("--hidden", type=positive_int, default=128, help="hidden units (default: %(default)s)")
    m.add_argument("--nonlinearity", choices=["tanh", "relu", "sigmoid", "identity"], default="tanh",
                   help="f of --cell rnn (default: %(default)s)")
    m.add_argument("--init", choices=["pytorch", "orthogonal", "irnn"], default="orthogonal",
                   help="pytorch: U(-1/√H, 1/√H); orthogonal: the same with an orthogonal W (each gate's block); "
                        "irnn: identity W (--cell rnn --nonlinearity relu only) (default: %(default)s)")
    options.optimisation(m, lr=1e-3, batch_size=64, epochs=None, epochs_default=10)
    m.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    m.add_argument("--momentum", type=momentum_float, default=0.9,
                   help="momentum of --optimizer sgd (default: %(default)s)")
    m.add_argument("--clip", type=nonnegative_float, default=1.0,
                   help="clip the gradient's global norm (0 = off; default: %(default)s)")
    m.add_argument("--schedule", choices=["none", "cosine"], default="cosine",
                   help="learning-rate schedule: cosine decays it to 0 over the epochs (default: %(default)s)")
    m.add_argument("--no-normalize", action="store_true",
                   help="feed raw pixels in [0, 1] (default: standardised, (x - 0.1307) / 0.3081)")
    options.data(m, dataset=False)
    options.training(m, "rnn-mnist")
    options.report(m)
    m.set_defaults(func=cmd_mnist)

    t = rnn_sub.add_parser("text", help="train a character-level language model")
    t.add_argument("--corpus", default=None, help="UTF-8 text file (default: the shipped Shakespeare excerpt)")
    _cell(t)
    t.add_argument("--hidden", type=positive_int, default=256, help="hidden units (default: %(default)s)")
    t.add_argument("--embedding", type=positive_int, default=64, help="embedding size (default: %(default)s)")
    t.add_argument("--layers", type=positive_int, default=1, help="stacked recurrent layers (default: %(default)s)")
    t.add_argument("--seq-len", type=positive_int, default=100, help="BPTT truncation length T (default: %(default)s)")
    options.optimisation(t, lr=2e-3, batch_size=32, epochs=None, epochs_default=10)
    t.add_argument("--clip", type=nonnegative_float, default=5.0,
                   help="clip the gradient's global norm (0 = off; default: %(default)s)")
    t.add_argument("--schedule", choices=["none", "cosine"], default="none",
                   help="learning-rate schedule: cosine decays it to 0 over the epochs (default: %(default)s)")
    t.add_argument("--sample-length", type=nonnegative_int, default=300,
                   help="characters sampled at the end (default: %(default)s)")
    options.training(t, "rnn-text")
    options.report(t)
    t.set_defaults(func=cmd_text)

    s = rnn_sub.add_parser("sample", help="generate text from a trained character model")
    s.add_argument("run", help="run folder written by `deepscope rnn text`")
    s.add_argument("--length", type=positive_int, default=500, help="characters to generate (default: %(default)s)")
    s.add_argument("--temperature", type=positive_float, default=0.8, help="softmax temperature τ (default: %(default)s)")
    s.add_argument("--prime", default=None, help="text to start from (default: a newline)")
    s.add_argument("--seed", type=options.seed_int, default=None)
    options.device(s)
    s.set_defaults(func=cmd_sample)


def _cell(p) -> None:
    p.add_argument("--cell", choices=list(CELLS), default="rnn",
                   help="rnn: the Elman RNN (--nonlinearity); lstm; gru (default: %(default)s)")


def _describe(opts) -> str:
    cell = opts.get("cell", "rnn")
    if cell == "rnn":
        return f"RNN({opts['hidden']}, {opts.get('nonlinearity', 'tanh')})"
    return f"{cell.upper()}({opts['hidden']})"


def cmd_mnist(args) -> int:
    run, opts = options.start(args, MNIST, "rnn-mnist", {k: getattr(args, k) for k in MNIST_SAVED}, 10)
    if opts["cell"] != "rnn" and opts["init"] == "irnn":
        raise ConfigError(f"--init irnn is for --cell rnn; the {opts['cell']} takes pytorch or orthogonal")
    backend.manual_seed(opts["seed"])
    data = load_mnist("mnist", data_dir=opts["data_dir"])
    run = run or Run.create(args.out, "rnn-mnist", MNIST)
    opts["data_dir"] = options.absolute(opts["data_dir"])
    run.write_config({**opts, "task": "row-mnist", "data_source": data.source, "data": data.identity}, MNIST)
    n = opts["train_size"] or len(data.train[1])
    print(f"deepscope: {_describe(opts)} on {n:,} MNIST images read row by row "
          f"({data.source}); run folder {run}")
    t0 = time.perf_counter()
    callbacks = ([] if args.quiet else [ProgressBar()]) + options.report_callbacks(   # the net: at fit's start
        args, None, run, test=(as_rows(data.test[0], not opts["no_normalize"]), data.test[1], data.classes))
    with run:
        _, history = train_row_mnist(
            data, hidden=opts["hidden"], epochs=opts["epochs"], batch_size=opts["batch_size"], lr=opts["lr"],
            optimizer=opts["optimizer"], momentum=opts["momentum"], clip=opts["clip"] or None,
            nonlinearity=opts["nonlinearity"], init=opts["init"], run=run, callbacks=callbacks,
            train_size=opts["train_size"], normalize=not opts["no_normalize"], schedule=opts["schedule"],
            cell=opts["cell"])
    best, last = history.best, history.records[-1]
    print(f"best validation accuracy {best['val_acc']:.2%} at epoch {best['epoch']} (test there "
          f"{best['test_acc']:.2%}); last epoch test accuracy {last['test_acc']:.2%}; "
          f"{time.perf_counter() - t0:.0f}s")
    print(f"saved to {run}")
    return 0


def cmd_text(args) -> int:
    run, opts = options.start(args, TEXT, "rnn-text", {k: getattr(args, k) for k in TEXT_SAVED}, 10)
    backend.manual_seed(opts["seed"])
    corpus = load_corpus(opts["corpus"])
    for split in ("train", "validation"):  # fail now, not after the first epoch
        if corpus.num_batches(split, opts["batch_size"], opts["seq_len"]) == 0:
            raise DataError(f"{corpus.name}: its {split} part ({len(corpus.stream(split)):,} characters) is too "
                            f"short for -m {opts['batch_size']} streams of --seq-len {opts['seq_len']}; "
                            f"lower them or use a longer --corpus")
    run = run or Run.create(args.out, "rnn-text", TEXT)
    opts["corpus"] = options.absolute(opts["corpus"])
    run.write_config({**opts, "task": "char-lm"}, TEXT)
    run.save_json(VOCAB, {"chars": corpus.vocab.chars})
    model = char_model(len(corpus.vocab), opts["hidden"], opts["embedding"], opts["layers"], cell=opts["cell"])
    print(f"deepscope: character {_describe(opts)} on {corpus}; run folder {run}")
    t0 = time.perf_counter()
    report = options.report_callbacks(args, model, run)
    with run:
        records = train_char_lm(model, corpus, epochs=opts["epochs"], batch_size=opts["batch_size"],
                                seq_len=opts["seq_len"], lr=opts["lr"], clip=opts["clip"] or None,
                                schedule=opts["schedule"], run=run,
                                progress=not args.quiet, callbacks=report)
        best = min(records, key=lambda r: r["val_loss"])
        text = sample(run.load_model(), corpus.vocab, opts["sample_length"], 0.8, seed=opts["seed"]) \
            if opts["sample_length"] else None
        if text is not None:
            files.atomic_write(run.file("sample.txt"), text)
            if report:
                report[-1].write(live=False)   # the final page, with the sample
    print(f"best validation {best['val_loss']:.4f} nats/char ({best['val_bpc']:.3f} bits/char) at epoch "
          f"{best['epoch']}; {time.perf_counter() - t0:.0f}s")
    if text is not None:
        print("sample (τ = 0.8):\n" + text)
    print(f"saved to {run} (deepscope rnn sample {run})")
    return 0


def cmd_sample(args) -> int:
    run = Run.open(args.run) if Run.is_run(args.run) else None
    if run is None or not run.file(VOCAB).is_file():
        raise DataError(f"{args.run} is not a character-model run folder (no {VOCAB})")
    vocab = Vocabulary.from_saved(run.load_json(VOCAB), run.file(VOCAB))
    model = run.load_model()
    for text in generate(model, vocab, args.length, args.temperature, args.prime, seed=args.seed):
        sys.stdout.write(text)   # as it is drawn: a long sample shows at once, and can be cut short
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
