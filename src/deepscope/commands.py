"""``deepscope train``, ``deepscope evaluate RUN`` and ``deepscope predict RUN IMAGE.png``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from . import arch as _arch
from . import backend, io, nn, optim
from .cli import existing_dir, momentum_float, nonnegative_float, positive_float, positive_int
from .errors import DataError, ShapeError
from .runs import Run
from .train import Batches, DetectAnomaly, EarlyStopping, ProgressBar, Schedule, evaluate, fit, predict_logits

# The default net of `deepscope train`: chapter 6's two conv-pool layers with ReLU (the book's rung 3),
# trained with momentum so that it passes 99% on MNIST in a few epochs on two cores.
DEFAULT = dict(arch="conv20x5-maxpool2-conv40x5-maxpool2-fc100-softmax10:relu", epochs=6, batch_size=32,
               eta=0.03, momentum=0.9, lmbda=0.1, optimizer="sgd", cost=None, init="he", schedule="cosine")


def add_training_options(p: argparse.ArgumentParser, defaults: dict = DEFAULT) -> None:
    """The options every training command shares (also used by the book and recurrent commands)."""
    p.add_argument("--arch", default=defaults["arch"],
                   help="architecture string, e.g. 784-30-10:sigmoid or conv20x5-maxpool2-fc100-softmax10:relu "
                        "(default: %(default)s)")
    p.add_argument("--epochs", type=positive_int, default=None, help=f"epochs (default: {defaults['epochs']})")
    p.set_defaults(default_epochs=defaults["epochs"])
    p.add_argument("--batch-size", "-m", type=positive_int, default=defaults["batch_size"],
                   help="mini-batch size (default: %(default)s)")
    p.add_argument("--eta", type=positive_float, default=defaults["eta"], help="learning rate η (default: %(default)s)")
    p.add_argument("--lmbda", type=nonnegative_float, default=defaults["lmbda"],
                   help="L2 regularisation λ, the book's way: w <- (1 - ηλ/n) w (default: %(default)s)")
    p.add_argument("--momentum", type=momentum_float, default=defaults["momentum"], help="momentum μ (default: %(default)s)")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default=defaults["optimizer"])
    p.add_argument("--cost", choices=sorted(nn.COSTS), default=defaults["cost"],
                   help="cost (default: what the architecture's output names, else crossentropy)")
    p.add_argument("--init", choices=nn.init.SCHEMES, default=defaults["init"],
                   help="weight initialisation (default: %(default)s)")
    p.add_argument("--schedule", choices=["none", "halve", "cosine"], default=defaults.get("schedule", "none"),
                   help="'halve': the book's η/2 when validation accuracy stalls for --patience epochs; "
                        "'cosine': η falls from --eta to 0 along a half cosine over the epochs "
                        "(default: %(default)s)")
    p.add_argument("--patience", type=positive_int, default=10, help="epochs without improvement for --schedule halve")
    p.add_argument("--early-stopping", type=positive_int, default=None, metavar="N",
                   help="stop when validation accuracy has not improved for N epochs")
    p.add_argument("--dataset", choices=["mnist", "fashion"], default="mnist")
    p.add_argument("--data-dir", type=existing_dir, default=None, help="folder with the IDX files (else $DEEPSCOPE_DATA, the cache, "
                                                    "a download, or the sample shipped with deepscope)")
    p.add_argument("--train-size", type=positive_int, default=None, help="use only the first N training images")
    p.add_argument("--expand", action="store_true", help="the book's one-pixel expansion of the training set (5x)")
    p.add_argument("--no-shuffle", action="store_true", help="keep the training order fixed (network3 did)")
    p.add_argument("--seed", type=int, default=0, help="one seed for init, shuffling and dropout (default: 0)")
    p.add_argument("--out", default=None, help="run folder (default: runs/train-<date>-<time>)")
    p.add_argument("--detect-anomaly", action="store_true",
                   help="stop at the first NaN/inf, naming the layer, the step and forward or backward")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(sub) -> None:
    p = sub.add_parser("train", help="train a net on MNIST (default: a chapter 6 convolutional net)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n"
                              "  deepscope train\n"
                              "  deepscope train --arch 784-30-10:sigmoid --epochs 30 -m 10 --eta 0.1 --lmbda 5.0 "
                              "--momentum 0 --init book --schedule none\n"
                              "  deepscope train --arch 784-100-10:sigmoid --epochs 60 -m 10 --eta 0.1 --lmbda 5.0 "
                              "--momentum 0 --init book --schedule none\n"
                              "  deepscope train --resume runs/train-20261127-101500 --epochs 10")
    add_training_options(p)
    p.add_argument("--resume", metavar="RUN", default=None,
                   help="continue the run in folder RUN exactly where it stopped (its saved options are used; "
                        "--epochs may extend it)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="accuracy of a saved run on its validation and test sets")
    p.add_argument("run", help="run folder")
    p.add_argument("--data-dir", type=existing_dir, default=None,
                   help="folder with the IDX files (default: the run's, else $DEEPSCOPE_DATA, the cache, ...)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="classify a PNG image of a digit with a saved run")
    p.add_argument("run", help="run folder")
    p.add_argument("image", help="a PNG: one digit, light on dark like MNIST (dark on light is inverted)")
    p.set_defaults(func=cmd_predict)


def load_data(args):
    """The book's split of the dataset the options name, cut to --train-size and expanded if asked."""
    from .data import expand_one_pixel, load_mnist
    data = load_mnist(args.dataset, data_dir=args.data_dir)
    X, y = data.train
    if args.train_size:
        X, y = X[:args.train_size], y[:args.train_size]
    if getattr(args, "expand", False):
        X, y = expand_one_pixel(X, y)
    return data, (X, y)


def check_fits(model, arch: str, train) -> None:
    """One forward pass on two images: a net that does not fit the data fails now, in one line."""
    X, y = train
    try:
        out = predict_logits(model, X[:2])
    except ShapeError as e:
        raise DataError(f"--arch {arch} does not fit images of shape {tuple(X.shape[1:])}: {e}") from None
    classes = int(np.max(y)) + 1
    if out.ndim != 2 or out.shape[1] < classes:
        raise DataError(f"--arch {arch} has {out.shape[-1]} outputs but the data has {classes} classes")


def make_training(args, model, n_train: int):
    """Cost and optimizer for ``model`` as the options describe."""
    cost_name = args.cost or _arch.output_cost(args.arch) or "crossentropy"
    cost = nn.COSTS[cost_name]()
    decay = optim.book_weight_decay(args.lmbda, n_train)
    if args.optimizer == "adam":
        opt = optim.Adam(model.parameters(), lr=args.eta, weight_decay=decay)
    else:
        opt = optim.SGD(model.parameters(), lr=args.eta, momentum=args.momentum, weight_decay=decay)
    return cost, opt, cost_name


def make_scheduler(args, opt):
    if args.schedule == "halve":
        return optim.HalveOnPlateau(opt, args.patience, min_lr=args.eta / 128)
    if args.schedule == "cosine":
        return optim.CosineLR(opt, args.epochs)
    return None


# What wrote a run folder, from the "task" its config.json names (runs of `deepscope train` and of
# `deepscope book ch6` name none: their nets classify (N, 1, 28, 28) images).
TASK_COMMANDS = {"row-mnist": "deepscope rnn mnist", "char-lm": "deepscope rnn text"}


def image_run_config(run, verb: str) -> dict:
    """The config.json of a run whose net classifies images; a clear error for any other folder."""
    cfg = _run_config(run)
    task = cfg.get("task")
    if task is not None:
        made_by = TASK_COMMANDS.get(task, f"a {task!r} task")
        hint = f"; try deepscope rnn sample {run}" if task == "char-lm" else ""
        raise DataError(f"{run} is a run of {made_by}: {verb} works on runs of deepscope train and "
                        f"deepscope book ch6{hint}")
    return cfg


def cmd_train(args) -> int:
    resume = args.resume is not None
    if resume:
        run = Run.resume(args.resume)
        saved = run.config
        if "arch" not in saved or "task" in saved or "rung" in saved:
            made_by = TASK_COMMANDS.get(saved.get("task"), "deepscope book ch6" if "rung" in saved else None)
            run.close()
            raise DataError(f"cannot resume {run}: " + (f"it is a run of {made_by}; " if made_by else "")
                            + "--resume continues runs of deepscope train")
        if args.epochs is not None:  # --epochs extends a resumed run
            if saved.get("schedule") == "cosine" and args.epochs > saved.get("epochs", args.epochs):
                run.close()
                raise DataError(f"cannot extend {run} to {args.epochs} epochs: its cosine schedule was planned for "
                                f"{saved['epochs']} and has brought η to 0; start a new run with --epochs "
                                f"{args.epochs}")
            saved["epochs"] = args.epochs
        if args.data_dir is not None:  # the data may have moved
            saved["data_dir"] = args.data_dir
        defaults = {**vars(args), "epochs": args.default_epochs}
        args = argparse.Namespace(**{**defaults, **saved, "resume": str(run.path), "quiet": args.quiet})
        if not run.has_checkpoint:
            print(f"deepscope: {run} stopped before its first epoch ended; starting it again")
    else:
        Run.check_new(args.out, "deepscope train")  # refuse at once, before the data is read
        args.epochs = args.epochs if args.epochs is not None else args.default_epochs
    backend.manual_seed(args.seed)
    model = _arch.build(args.arch, init=args.init)  # a bad architecture fails before any data is read
    data, train = load_data(args)
    check_fits(model, args.arch, train)  # before anything is written to the run folder
    cost, opt, cost_name = make_training(args, model, len(train[0]))
    scheduler = make_scheduler(args, opt)
    if not resume:
        run = Run.create(args.out, "train", "deepscope train")
    config = {k: v for k, v in vars(args).items()
              if k not in ("func", "command", "resume", "quiet", "default_epochs")}
    if config.get("data_dir") is not None:
        config["data_dir"] = str(Path(config["data_dir"]).expanduser().resolve())
    config.update(cost=cost_name, data_source=data.source, n_train=len(train[0]))
    run.write_config(config, "deepscope train")  # on --resume: the same, with --epochs and --data-dir updated
    print(f"deepscope: training {args.arch} on {len(train[0]):,} {args.dataset} images ({data.source}); "
          f"run folder {run}")
    callbacks = [] if args.quiet else [ProgressBar()]
    if scheduler is not None:
        callbacks.append(Schedule(scheduler))
    if args.early_stopping:
        callbacks.append(EarlyStopping(args.early_stopping))
    if args.detect_anomaly:
        callbacks.append(DetectAnomaly())
    try:
        with run:
            history = fit(model, cost, opt, Batches(*train, shuffle=not args.no_shuffle), epochs=args.epochs,
                          batch_size=args.batch_size, validation=data.validation, test=data.test, run=run,
                          callbacks=callbacks)
    except KeyboardInterrupt:
        start = "" if args.quiet else "\n"  # below the progress bar, not glued to it
        if run.has_checkpoint:
            print(f"{start}deepscope: interrupted; continue with: deepscope train --resume {run}", file=sys.stderr)
        else:
            print(f"{start}deepscope: interrupted before the first epoch ended; nothing saved to resume",
                  file=sys.stderr)
        return 130
    best = history.best
    if best is None:
        print("deepscope: nothing trained")
        return 0
    print(f"best validation accuracy {best['val_acc']:.2%} at epoch {best['epoch']}; "
          f"test accuracy there {best['test_acc']:.2%}")
    print(f"saved to {run} (deepscope evaluate {run})")
    return 0


def _run_config(run) -> dict:
    return Run.open(run).config


def cmd_evaluate(args) -> int:
    from .data import load_mnist
    cfg = image_run_config(args.run, "evaluate")
    model = io.load(args.run)
    data = load_mnist(cfg.get("dataset", "mnist"), data_dir=args.data_dir or cfg.get("data_dir"))
    for name, (X, y) in (("validation", data.validation), ("test", data.test)):
        print(f"{name:10s} accuracy {evaluate(model, X, y):.2%} on {len(X):,} images ({data.source})")
    return 0


def read_digit_png(path) -> np.ndarray:
    """A PNG as a (1, 1, 28, 28) float32 image in [0, 1], light digit on dark background like MNIST."""
    import matplotlib.image as mpimg
    path = Path(path)
    if not path.exists():
        raise DataError(f"no such image: {path}")
    try:
        img = mpimg.imread(str(path))
    except Exception as e:
        raise DataError(f"cannot read {path} as an image: {e}") from None
    img = np.asarray(img, dtype=np.float32)
    if img.dtype.kind in "ui" or img.max() > 1.0:
        img = img / 255.0
    if img.ndim == 3:
        img = img[..., :3].mean(axis=2)
    if img.shape != (28, 28):
        h, w = img.shape
        if h % 28 or w % 28 or h // 28 != w // 28:
            raise DataError(f"{path} is {h}x{w}: expected 28x28 (or a multiple of it, like 56x56)")
        k = h // 28
        img = img.reshape(28, k, 28, k).mean(axis=(1, 3))
    if img.mean() > 0.5:  # dark digit on a light background: invert to MNIST's convention
        img = 1.0 - img
    return img.reshape(1, 1, 28, 28)


def cmd_predict(args) -> int:
    model = io.load(args.run)  # a run folder, or a model saved with deepscope.save
    has_config = Run.is_run(args.run)
    cfg = image_run_config(args.run, "predict") if has_config else {}
    cost_name = cfg.get("cost") or (_arch.output_cost(cfg["arch"]) if "arch" in cfg else None)
    cost = nn.COSTS[cost_name or "loglikelihood"]()
    logits = predict_logits(model, read_digit_png(args.image))
    probs = backend.to_numpy(cost.activation(logits))[0]
    top = int(probs.argmax())
    print(f"{args.image}: {top}  (output {probs[top]:.3f}; all: "
          + " ".join(f"{i}:{p:.2f}" for i, p in enumerate(probs)) + ")")
    return 0
