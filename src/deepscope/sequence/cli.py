"""``deepscope rnn mnist``, ``deepscope rnn text`` and ``deepscope rnn sample RUN``."""
from __future__ import annotations

import argparse
import time

from .. import backend, files
from ..runs import History, Run
from ..cli import existing_dir, momentum_float, nonnegative_float, nonnegative_int, positive_float, positive_int
from ..errors import DataError

VOCAB = "vocab.json"   # the characters of a char-lm run, added to its run folder

EXAMPLES = """examples:
  deepscope rnn mnist --epochs 10                      row-by-row MNIST with a 128-unit tanh RNN (~98%)
  deepscope rnn text --epochs 5                        char LM on the shipped Shakespeare excerpt
  deepscope rnn text --corpus input.txt --hidden 256   char LM on your own text
  deepscope rnn sample runs/rnn-text-20261127-101500 --length 500 --temperature 0.8 --prime ROMEO:
"""


def register(sub) -> None:
    p = sub.add_parser("rnn", help="recurrent nets: row-by-row MNIST, character language models",
                       description="Recurrent networks trained by backpropagation through time.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    rnn_sub = p.add_subparsers(dest="rnn_command", metavar="TASK")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    m = rnn_sub.add_parser("mnist", help="classify MNIST digits read row by row (28 steps of 28 pixels)")
    m.add_argument("--hidden", type=positive_int, default=128, help="hidden units (default: %(default)s)")
    m.add_argument("--nonlinearity", choices=["tanh", "relu", "sigmoid", "identity"], default="tanh")
    m.add_argument("--init", choices=["pytorch", "orthogonal", "irnn"], default="orthogonal",
                   help="pytorch: U(-1/√H, 1/√H); orthogonal: the same with an orthogonal W; irnn: identity W "
                        "(use with --nonlinearity relu) (default: %(default)s)")
    m.add_argument("--epochs", type=positive_int, default=10, help="(default: %(default)s)")
    m.add_argument("--batch-size", "-m", type=positive_int, default=64, help="(default: %(default)s)")
    m.add_argument("--lr", type=positive_float, default=1e-3, help="learning rate (default: %(default)s)")
    m.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    m.add_argument("--momentum", type=momentum_float, default=0.9, help="momentum of --optimizer sgd (default: %(default)s)")
    m.add_argument("--clip", type=nonnegative_float, default=1.0, help="clip the gradient's global norm (0 = off; "
                                                           "default: %(default)s)")
    m.add_argument("--schedule", choices=["none", "cosine"], default="cosine",
                   help="learning-rate schedule: cosine decays it to 0 over the epochs (default: %(default)s)")
    m.add_argument("--no-normalize", action="store_true",
                   help="feed raw pixels in [0, 1] (default: standardised, (x - 0.1307) / 0.3081)")
    m.add_argument("--train-size", type=positive_int, default=None, help="use only the first N training images")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--out", default=None, help="run folder (default: runs/rnn-mnist-<date>-<time>)")
    m.add_argument("--data-dir", type=existing_dir, default=None, help="folder with the MNIST IDX files")
    m.add_argument("--quiet", action="store_true", help="no progress bar")
    m.set_defaults(func=cmd_mnist)

    t = rnn_sub.add_parser("text", help="train a character-level language model")
    t.add_argument("--corpus", default=None, help="UTF-8 text file (default: the shipped Shakespeare excerpt)")
    t.add_argument("--hidden", type=positive_int, default=256, help="hidden units (default: %(default)s)")
    t.add_argument("--embedding", type=positive_int, default=64, help="embedding size (default: %(default)s)")
    t.add_argument("--layers", type=positive_int, default=1, help="stacked RNN layers (default: %(default)s)")
    t.add_argument("--seq-len", type=positive_int, default=100, help="BPTT truncation length T (default: %(default)s)")
    t.add_argument("--batch-size", "-m", type=positive_int, default=32, help="parallel streams N (default: %(default)s)")
    t.add_argument("--epochs", type=positive_int, default=10, help="(default: %(default)s)")
    t.add_argument("--lr", type=positive_float, default=2e-3, help="Adam learning rate (default: %(default)s)")
    t.add_argument("--clip", type=nonnegative_float, default=5.0, help="clip the gradient's global norm (0 = off; "
                                                           "default: %(default)s)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default=None, help="run folder (default: runs/rnn-text-<date>-<time>)")
    t.add_argument("--sample-length", type=nonnegative_int, default=300, help="characters sampled at the end "
                                                                 "(default: %(default)s)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_text)

    s = rnn_sub.add_parser("sample", help="generate text from a trained character model")
    s.add_argument("run", help="run folder written by `deepscope rnn text`")
    s.add_argument("--length", type=positive_int, default=500, help="characters to generate (default: %(default)s)")
    s.add_argument("--temperature", type=positive_float, default=0.8, help="softmax temperature τ (default: %(default)s)")
    s.add_argument("--prime", default=None, help="text to start from (default: a newline)")
    s.add_argument("--seed", type=int, default=None)
    s.set_defaults(func=cmd_sample)


def _config(args) -> dict:
    return {k: v for k, v in vars(args).items() if k not in ("func", "command", "rnn_command", "quiet")}


def cmd_mnist(args) -> int:
    from ..data import load_mnist
    from .mnist import train_row_mnist
    backend.manual_seed(args.seed)
    Run.check_new(args.out)
    data = load_mnist("mnist", data_dir=args.data_dir)
    run = Run.create(args.out, "rnn-mnist")
    run.write_config({**_config(args), "task": "row-mnist", "data_source": data.source}, "deepscope rnn mnist")
    n = args.train_size or len(data.train[1])
    print(f"deepscope: RNN({args.hidden}, {args.nonlinearity}) on {n:,} MNIST images read row by row "
          f"({data.source}); run folder {run}")
    t0 = time.perf_counter()
    _, history = train_row_mnist(data, hidden=args.hidden, epochs=args.epochs, batch_size=args.batch_size,
                                 lr=args.lr, optimizer=args.optimizer, momentum=args.momentum, clip=args.clip or None,
                                 nonlinearity=args.nonlinearity, init=args.init, run=run,
                                 callbacks=[] if args.quiet else None, train_size=args.train_size,
                                 normalize=not args.no_normalize, schedule=args.schedule)
    best, last = history.best, history.records[-1]
    print(f"best validation accuracy {best['val_acc']:.2%} at epoch {best['epoch']} (test there "
          f"{best['test_acc']:.2%}); last epoch test accuracy {last['test_acc']:.2%}; "
          f"{time.perf_counter() - t0:.0f}s")
    print(f"saved to {run}")
    return 0


def cmd_text(args) -> int:
    from ..data.text import load_corpus
    from .text import char_model, format_record, sample, train_char_lm
    backend.manual_seed(args.seed)
    Run.check_new(args.out)
    corpus = load_corpus(args.corpus)
    for split in ("train", "validation"):  # fail now, not after the first epoch
        if corpus.num_batches(split, args.batch_size, args.seq_len) == 0:
            raise DataError(f"{corpus.name}: its {split} part ({len(corpus.stream(split)):,} characters) is too "
                            f"short for -m {args.batch_size} streams of --seq-len {args.seq_len}; "
                            f"lower them or use a longer --corpus")
    run = Run.create(args.out, "rnn-text")
    run.write_config({**_config(args), "task": "char-lm", "corpus": corpus.name}, "deepscope rnn text")
    run.save_json(VOCAB, {"chars": corpus.vocab.chars})
    model = char_model(len(corpus.vocab), args.hidden, args.embedding, args.layers)
    print(f"deepscope: character RNN ({args.hidden} units) on {corpus}; run folder {run}")
    history = History()

    def on_epoch_end(epoch, record):  # save first: a closed stdout (| head) never loses a finished epoch
        history.append(record)
        if record["val_loss"] <= min(r["val_loss"] for r in history.records):
            run.save_model(model)
        run.write_metrics(history)
        if args.quiet:
            print(format_record(record), flush=True)

    t0 = time.perf_counter()
    records = train_char_lm(model, corpus, epochs=args.epochs, batch_size=args.batch_size, seq_len=args.seq_len,
                            lr=args.lr, clip=args.clip or None, progress=not args.quiet,
                            on_epoch_end=on_epoch_end)
    wall = time.perf_counter() - t0
    best_rec = min(records, key=lambda r: r["val_loss"])
    print(f"best validation {best_rec['val_loss']:.4f} nats/char ({best_rec['val_bpc']:.3f} bits/char) at epoch "
          f"{best_rec['epoch']}; {wall:.0f}s")
    if args.sample_length:
        best_model = run.load_model()
        text = sample(best_model, corpus.vocab, args.sample_length, 0.8, seed=args.seed)
        files.atomic_write(run.file("sample.txt"), text)
        print("sample (τ = 0.8):\n" + text)
    print(f"saved to {run} (deepscope rnn sample {run})")
    return 0


def cmd_sample(args) -> int:
    from ..data.text import Vocabulary
    from .text import sample
    run = Run.open(args.run) if Run.is_run(args.run) else None
    if run is None or not run.file(VOCAB).is_file():
        raise DataError(f"{args.run} is not a character-model run folder (no {VOCAB})")
    vocab = Vocabulary(run.load_json(VOCAB)["chars"])
    model = run.load_model()
    print(sample(model, vocab, args.length, args.temperature, args.prime, seed=args.seed))
    return 0
