"""Option types and the option groups the commands share: one name per idea across every command.

    --lr (alias --eta)             learning rate η
    -m / --batch-size (alias --batch)   mini-batch size m
    --train-size (aliases --n, --n-train)   use only the first N training images
    --epochs, --seed, --out, --resume, --data-dir, --dataset
    --quiet                        no progress bars; only the summary at the end (everywhere)
    --threads N                    threads for deepscope and BLAS (every training and evaluating command)
    --device cpu|cuda              where parameters and mini-batches live (every training and evaluation command)

A command adds a group with one call (``options.run_folder(p, "train")``); an option every training command
takes is one line in :func:`training`. Option types refuse a bad value at once, in one line, before any data is
read. Commands read the options and call the library with explicit arguments: the library never sees them.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

from ..errors import DataError, DeepscopeError
from ..report import live_callbacks
from ..runs import Run

# An alias's message names it as the user typed it: "--eta: must be positive" for --eta, "--lr: ..." for --lr.
ALIASES = {"--eta": "--lr", "--batch": "--batch-size", "--n": "--train-size", "--n-train": "--train-size"}


class Parser(argparse.ArgumentParser):
    """argparse, with a bad option reported in one line (and where to look) instead of the full usage."""

    _argv: list = []

    def parse_known_args(self, args=None, namespace=None):
        self._argv = list(sys.argv[1:] if args is None else args)
        namespace, rest = super().parse_known_args(args, namespace)
        # which options were typed (not defaults): --resume refuses a typed change of a run's settings
        namespace.typed = getattr(namespace, "typed", set()) | self._typed()
        return namespace, rest

    def _typed(self) -> set:
        typed = set()
        longs = [o for o in self._option_string_actions if o.startswith("--")]
        for arg in self._argv:
            if arg == "--":
                break
            name = arg.split("=", 1)[0]
            if name.startswith("--"):
                matches = [name] if name in self._option_string_actions else [o for o in longs if o.startswith(name)]
            elif name.startswith("-") and len(name) >= 2:
                matches = [name[:2]]   # -m 10, -m10
            else:
                continue
            if len(matches) == 1 and matches[0] in self._option_string_actions:
                typed.add(self._option_string_actions[matches[0]].dest)
        return typed

    def error(self, message):
        match = re.match(r"argument (\S+?): ", message)
        if match and "/" in match.group(1):  # name an alias as typed; otherwise the option's own names
            names = match.group(1).split("/")
            typed = [n for n in names if n in ALIASES and any(a == n or a.startswith(n + "=") for a in self._argv)]
            shown = typed[:1] or [n for n in names if n not in ALIASES]
            message = f"argument {'/'.join(shown)}: " + message[match.end():]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# -- option types ---------------------------------------------------------------------------------------------
def _number(kind, ok, must: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not (math.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"must be {must}, got {text}")
        return value
    parse.__name__ = f"{kind.__name__} {must}"
    return parse


positive_int = _number(int, lambda v: v >= 1, "at least 1")
nonnegative_int = _number(int, lambda v: v >= 0, "at least 0")
positive_float = _number(float, lambda v: v > 0, "positive")
nonnegative_float = _number(float, lambda v: v >= 0, "at least 0")
momentum_float = _number(float, lambda v: 0 <= v < 1, "in [0, 1)")
seed_int = _number(int, lambda v: 0 <= v < 2 ** 32, "in [0, 2^32)")


def existing_dir(text: str) -> str:
    """A folder that must exist (a typo in --data-dir must not quietly train on the embedded sample)."""
    if not Path(text).expanduser().is_dir():
        raise argparse.ArgumentTypeError(f"no such folder: {text}")
    return text


# -- option groups --------------------------------------------------------------------------------------------
def training(p, prefix: str, resumable: bool = True) -> None:
    """What every training command takes: its run folder, seed, device and output options."""
    run_folder(p, prefix, resumable)
    device(p)
    output(p)


def device(p) -> None:
    """--device cpu|cuda: where the net's parameters and each mini-batch live (cuda needs the gpu extra)."""
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cpu (NumPy) or cuda (CuPy on an NVIDIA GPU; pip install -e '.[gpu]') (default: cpu)")


def run_folder(p, prefix: str, resumable: bool = True) -> None:
    """--out, --resume and --seed."""
    p.add_argument("--out", default=None, metavar="DIR",
                   help=f"run folder: new, or empty (default: runs/{prefix}-<date>-<time>)")
    if resumable:
        p.add_argument("--resume", metavar="DIR", default=None,
                       help="continue the run in DIR exactly where it stopped (its saved options are used; "
                            "--epochs may extend it)")
    p.add_argument("--seed", type=seed_int, default=0,
                   help="one seed for initialisation, shuffling, dropout and augmentation (default: %(default)s)")


def output(p) -> None:
    """--quiet and --threads: the same meaning in every command."""
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars and no line per epoch: only the summary at the end")
    threads(p)


def threads(p) -> None:
    """--threads: how many threads deepscope (and BLAS within them) runs on; main() applies it."""
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="threads for deepscope's work, BLAS included (default: $OMP_NUM_THREADS, else all cores)")


def report(p) -> None:
    """--report and --report-every: the live HTML report of a training run."""
    p.add_argument("--report", action="store_true",
                   help="keep RUN/report.html up to date while training (it reloads itself in a browser) and "
                        "record every layer's speed of learning for it (RUN/speed.jsonl)")
    p.add_argument("--report-every", type=positive_int, default=1000, metavar="N",
                   help="with --report, also rewrite the page every N steps, for its speed panels "
                        "(default: %(default)s)")
    p.add_argument("--speed-every", type=positive_int, default=100, metavar="N",
                   help="with --report, record the speed of learning every N steps (default: %(default)s)")


def report_callbacks(args, model, run, test=None) -> list:
    """The callbacks --report adds (none without it), saying where the page is. ``test``: the command's test
    set ``(X, y, class names)``, for the final page."""
    if not args.report:
        return []
    callbacks = live_callbacks(model, run.path, every=args.report_every, speed_every=args.speed_every, test=test)
    print(f"deepscope: live report {callbacks[-1].out} (open it in a browser; it reloads itself)")
    return callbacks


def data(p, train_size: int | None = None, dataset: bool = True) -> None:
    """--data-dir, --train-size and (for image commands) --dataset."""
    if dataset:
        p.add_argument("--dataset", choices=["mnist", "fashion"], default="mnist")
    p.add_argument("--data-dir", type=existing_dir, default=None,
                   help="folder with the IDX files (else $DEEPSCOPE_DATA, the cache, a download, or the sample "
                        "shipped with deepscope)")
    p.add_argument("--train-size", "--n", "--n-train", dest="train_size", type=positive_int, default=train_size,
                   metavar="N", help="use only the first N training images"
                                     + (" (default: %(default)s)" if train_size else ""))


def optimisation(p, lr: float, batch_size: int, epochs: int | None, epochs_default: int | None = None) -> None:
    """--lr (alias --eta), -m/--batch-size (alias --batch) and --epochs. ``epochs=None`` leaves --epochs unset
    when not given (a resumed run keeps its own), ``epochs_default`` is then shown in the help."""
    learning_rate(p, lr)
    p.add_argument("--batch-size", "-m", "--batch", dest="batch_size", type=positive_int, default=batch_size,
                   metavar="M", help="mini-batch size m (default: %(default)s)")
    shown = epochs if epochs is not None else epochs_default
    p.add_argument("--epochs", type=positive_int, default=epochs, help=f"epochs (default: {shown})")


def learning_rate(p, default: float) -> None:
    """--lr (alias --eta)."""
    p.add_argument("--lr", "--eta", dest="lr", type=positive_float, default=default, metavar="η",
                   help="learning rate η (default: %(default)s)")


def experiment(p, prefix: str, train_size: int | None = None) -> None:
    """What an instrument's experiment takes: MNIST (--data-dir, --train-size), --out, --seed, --quiet."""
    if train_size is not None:
        data(p, train_size=train_size, dataset=False)
    run_folder(p, prefix, resumable=False)
    output(p)


def ints(text: str, what: str) -> list[int]:
    """Comma-separated positive integers (layer sizes, depths)."""
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise DeepscopeError(f"{what}: expected comma-separated integers like 784,30,10, got {text!r}") from None
    if not values or min(values) < 1:
        raise DeepscopeError(f"{what}: expected comma-separated integers of at least 1, got {text!r}")
    return values


# -- what a run folder given as an argument is -------------------------------------------------------------------
_LEGACY = {"row-mnist": "deepscope rnn mnist", "char-lm": "deepscope rnn text"}  # runs that predate "command"


def made_by(config: dict) -> str | None:
    """The command that made a run (``deepscope train``, ``deepscope rnn text``, ...), from its config."""
    if config.get("command"):
        return config["command"]
    if "task" in config:
        return _LEGACY.get(config["task"], f"a {config['task']!r} task")
    if "rung" in config:
        return "deepscope book ch6"
    return "deepscope train" if "arch" in config else None


IMAGE_COMMANDS = ("deepscope train", "deepscope book ch6", "deepscope rnn mnist")   # their nets classify MNIST


def image_run(path, verb: str) -> Run:
    """The run in ``path``, which must be one whose net classifies images; one clear line for any other."""
    run = Run.open(path)
    command = made_by(run.config)
    if command is not None and command not in IMAGE_COMMANDS:
        hint = f"; try deepscope rnn sample {path}" if command == "deepscope rnn text" else ""
        raise DataError(f"{path} is a run of {command}: {verb} works on runs of deepscope train, "
                        f"deepscope book ch6 and deepscope rnn mnist{hint}")
    return run


def absolute(path) -> str | None:
    """A data path as the run records it: absolute, so that the run can be evaluated from any folder."""
    return None if path is None else str(Path(path).expanduser().resolve())


def start(args, command: str, prefix: str, given: dict, default_epochs: int | None = None):
    """The run a training command writes and the options it trains with: ``(run, options)``.

    With ``--resume DIR`` the run in DIR is taken back and its saved options replace ``given``, except
    ``--epochs`` (which may extend it) and ``--data-dir`` (the data may have moved). Otherwise ``--out`` is
    checked at once (before any data is read) and the run is None: the command makes it with
    ``Run.create(args.out, prefix)`` once the data has loaded and the net fits it.
    """
    if args.resume is None:
        Run.check_new(args.out, command)
        if "epochs" in given and given["epochs"] is None:
            given = {**given, "epochs": default_epochs}
        return None, given
    run = Run.resume(args.resume)
    try:
        saved = dict(run.config)
        if not saved:
            raise DataError(f"cannot resume {run}: it stopped before it began (no config.json); start it again: "
                            f"{command} --out {run} ...")
        if "eta" in saved and "lr" not in saved:   # runs written before --lr was the one name
            saved["lr"] = saved.pop("eta")
        if made_by(saved) != command:
            made = made_by(saved)
            raise DataError(f"cannot resume {run}: " + (f"it is a run of {made}; " if made else "")
                            + f"--resume continues runs of {command}")
        opts = {**given, **{k: v for k, v in saved.items() if k in given and k not in ("epochs", "data_dir")}}
        for key in sorted(getattr(args, "typed", set()) & given.keys() - {"epochs", "data_dir"}):
            if key in saved and given[key] != saved[key]:
                flag = "--" + key.replace("_", "-")
                raise DataError(f"cannot resume {run} with {flag} {given[key]}: it was trained with {flag} "
                                f"{saved[key]}, and a resumed run continues with its own settings; leave out "
                                f"{flag}, or start a new run")
        done = len(run.history)
        if given.get("epochs") is not None and given["epochs"] < done:
            raise DataError(f"cannot resume {run} for {given['epochs']} epochs: it has already trained {done}; "
                            f"give --epochs {done} or more")
        if "epochs" in given:
            opts["epochs"] = given["epochs"] or saved.get("epochs") or default_epochs
            if given["epochs"] is not None and saved.get("schedule") == "cosine" \
                    and given["epochs"] > saved.get("epochs", given["epochs"]):
                raise DataError(f"cannot extend {run} to {given['epochs']} epochs: its cosine schedule was planned "
                                f"for {saved['epochs']} and has brought η to 0; start a new run with --epochs "
                                f"{given['epochs']}")
        if "data_dir" in given:
            opts["data_dir"] = given["data_dir"] if given["data_dir"] is not None else saved.get("data_dir")
    except DataError:
        run.close()
        raise
    if not run.has_checkpoint:
        print(f"deepscope: {run} stopped before its first epoch ended; starting it again")
    return run, opts
