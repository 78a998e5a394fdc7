"""What a report reads from a run folder, through :class:`deepscope.runs.Run` (the folder's owner) and
:class:`deepscope.sweep.SweepFolder`; the one place in :mod:`deepscope.report` that opens a run.

A folder is recognised by what it holds:

    train        config.json with an "arch" (``deepscope train``)
    ch6          config.json with a "rung" (``deepscope book ch6``; its parent folder expands to its rungs)
    row-mnist    config.json with task "row-mnist" (``deepscope rnn mnist``)
    char-lm      config.json with task "char-lm" (``deepscope rnn text``): vocab.json, sample.txt
    scope-speed  speed.jsonl and summary.json (``deepscope scope speed``)
    scope-compare  compare.json (``deepscope scope compare``)
    scope-time   time.json (``deepscope scope time``)
    sweep        trials.csv or trials.json (``deepscope sweep``)

and every run may hold its metrics (one record per epoch) and ``speed.jsonl`` (the learning-speed recorder's
records). Nothing here writes to a run folder.
"""
from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

import numpy as np

from .. import arch, backend, nn
from ..data import load_mnist
from ..errors import DataError
from ..runs import Run
from ..sequence.mnist import as_rows
from ..sweep import SweepFolder

# config keys that are facts about the run, not options of the command that made it
_NOT_OPTIONS = {"data_source", "data", "n_train", "task", "rung", "corpus_name", "title", "book", "runs",
                "ensemble", "expanded", "network3", "command", "func", "default_epochs", "out", "resume"}
# the command of each kind, with the config keys that are its positional arguments
COMMANDS = {"train": "deepscope train", "row-mnist": "deepscope rnn mnist", "char-lm": "deepscope rnn text",
            "scope-speed": "deepscope scope speed", "scope-compare": "deepscope scope compare",
            "scope-time": "deepscope scope time", "sweep": "deepscope sweep"}


@dataclasses.dataclass
class RunData:
    """One run as a report sees it.

    Attributes:
        path: the folder.
        kind: one of the kinds in the module docstring.
        config: what the run was asked to do (its config.json, or the experiment's own settings).
        command: the command line that makes the same run again.
        metrics: one dict per epoch (train_loss, train_acc, val_acc, test_acc, val_loss, val_bpc, lr, …).
        speed: the learning-speed records, ``{"step", "layers": {name: {...}}, "nonfinite"[, "seed"]}``.
        extras: what only some kinds have: "sample" (text), "compare" (cells), "time" (norms), "trials" (rows).
    """
    path: Path
    kind: str
    config: dict
    command: str
    metrics: list
    speed: list
    extras: dict

    @property
    def name(self) -> str:
        return self.path.name


def _jsonl(path: Path) -> list:
    """JSON lines; a last line cut short (a run still writing it) is skipped, any other bad line is an error."""
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break
            raise DataError(f"{path}, line {i + 1}: not valid JSON: {e}") from None
    return out


SPEED = "speed.jsonl"                                   # the learning-speed recorder's file in a run
_EXPERIMENTS = (("compare.json", "scope-compare"), ("time.json", "scope-time"), ("summary.json", "scope-speed"))


def _kind(path: Path) -> str | None:
    if (path / "sweep.json").is_file():
        return "sweep"
    if not Run.is_run(path):
        return None
    run = Run.open(path)
    for name, kind in _EXPERIMENTS:
        if run.file(name).is_file():
            return kind
    config = run.config
    if config.get("task") in ("row-mnist", "char-lm"):
        return config["task"]
    if "rung" in config:
        return "ch6"
    if "arch" in config:
        return "train"
    return None


def expand(paths) -> list[Path]:
    """The run folders the given paths name: a folder of runs (``deepscope book ch6``'s) stands for the runs
    inside it, in name order (a sweep stays one: its report shows its trials)."""
    out = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise DataError(f"no such run folder: {p}")
        if _kind(p) is None:
            inner = sorted(q for q in p.iterdir() if q.is_dir() and _kind(q) is not None)
            if not inner:
                raise DataError(f"{p} is not a run folder (no config.json, metrics or experiment results)")
            out.extend(inner)
        else:
            out.append(p)
    return out


def open_run(path) -> RunData:
    """Read a run folder (see the module docstring for the kinds)."""
    path = Path(path)
    kind = _kind(path)
    if kind is None:
        raise DataError(f"{path} is not a run folder deepscope report knows")
    extras, config, metrics, speed = {}, {}, [], []
    if kind == "sweep":
        config, extras["trials"], extras["runs"] = _sweep(path)
    else:
        run = Run.open(path)
        config, metrics, speed = dict(run.config), run.history.records, _jsonl(run.file(SPEED))
    # an experiment's own settings stand in for the config of folders written before experiments had one
    if kind == "scope-speed" and not config:
        config = {k: v for k, v in run.load_json("summary.json").items()
                  if k in ("layers", "activation", "init", "steps", "eta", "lmbda", "n", "seeds")}
    elif kind == "scope-compare":
        data = run.load_json("compare.json")
        config, extras["compare"] = config or data["config"], data["cells"]
    elif kind == "scope-time":
        data = run.load_json("time.json")
        extras["time"] = data.pop("norms")
        config = config or data
    elif kind == "char-lm" and run.file("sample.txt").is_file():
        extras["sample"] = run.file("sample.txt").read_text(encoding="utf-8")
    return RunData(path=path, kind=kind, config=config, command=reproduce_command(kind, config),
                   metrics=metrics, speed=speed, extras=extras)


def _sweep(path: Path):
    """A sweep folder (``deepscope sweep``): its settings, its trials as flat dicts (an option ``lr`` becomes
    the column ``options.lr``) and the trials' own runs."""
    folder = SweepFolder.open(path)
    trials = [_flat(row) for row in folder.ordered_rows()]
    config = {"trial command": shlex.join(["deepscope", *folder.command]), "options": folder.keys,
              "trials": len(folder.trials), "metric": "val_acc"}
    runs = [open_run(folder.run_dir(t)) for t in folder.trials
            if t.name in folder.rows and _kind(folder.run_dir(t)) is not None]
    return config, trials, runs


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def reproduce_command(kind: str, config: dict) -> str:
    """The command line that makes this run again: the command the run names (or its kind's), with the
    options its config records."""
    if kind == "sweep":
        return f"{config.get('trial command')}  (one run per trial, each with its options, --seed and --out)"
    if kind == "ch6":
        parts = ["deepscope", "book", "ch6", config["rung"], "--epochs", str(config.get("epochs")),
                 "--seed", str(config.get("seed", 0))]
        if config.get("train_size") and config.get("train_size") != 50_000:
            parts += ["--train-size", str(config["train_size"])]
        if config.get("quirks"):
            parts.append("--quirks")
        return shlex.join(parts)
    parts = str(config.get("command") or COMMANDS[kind]).split()
    for key, value in config.items():
        if key in _NOT_OPTIONS or value is None or value is False:
            continue
        if kind == "scope-speed" and key == "layers":
            value = ",".join(map(str, value))
        elif kind == "scope-speed" and key == "seeds" and isinstance(value, list):
            value = len(value)
        elif kind == "scope-compare" and isinstance(value, list):
            value = ",".join(map(str, value))
        elif kind == "scope-compare" and key == "batch_size":
            continue
        option = "--" + key.replace("_", "-")
        parts += [option] if value is True else [option, str(value)]
    return shlex.join(parts)


# -- the model of a run and what it was before training -----------------------------------------------------

def load_model(run: RunData):
    """The run's saved model (its best-validation weights), or None when it has none."""
    if run.kind in ("sweep", "scope-speed", "scope-compare", "scope-time"):
        return None
    try:
        return Run.open(run.path).load_model()
    except DataError:
        return None


def initial_model(run: RunData):
    """The run's net as it was before its first step, rebuilt from the seed and architecture in its config
    (``deepscope train`` and ``book ch6`` seed the generator and build the net before anything else draws from
    it); None when the run does not say how (network3's quirks, recurrent nets built elsewhere)."""
    cfg = run.config
    if run.kind == "train" and "arch" in cfg:
        backend.manual_seed(cfg.get("seed", 0))
        return arch.build(cfg["arch"], init=cfg.get("init", "book"))
    if run.kind == "ch6" and not cfg.get("quirks") and "arch" in cfg:
        backend.manual_seed(cfg.get("seed", 0))
        return arch.build(cfg["arch"])
    return None


def first_layer_filters(model) -> np.ndarray | None:
    """The first layer's receptive fields as images ``(k, h, w)``: a Conv2d's kernels (input channels
    averaged), or a Linear layer's rows seen as 28×28 images when it reads MNIST pixels; None otherwise."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return backend.to_numpy(m.weight.data).mean(axis=1)
        if isinstance(m, nn.Linear):
            if m.in_features == 784:
                return backend.to_numpy(m.weight.data).reshape(-1, 28, 28)
            return None
    return None


def test_set(run: RunData):
    """``(X, y, class names, images)`` of the test set the run was measured on: X as its net reads it (rows for a
    recurrent net), images as (N, 1, 28, 28); None when the run is not an image classifier or its data cannot be
    found on this machine."""
    if run.kind not in ("train", "ch6", "row-mnist"):
        return None
    cfg = run.config
    data_dir = cfg.get("data_dir")
    if data_dir is None and cfg.get("data_source") not in (None, "embedded sample", "given"):
        data_dir = cfg["data_source"]
    try:
        data = load_mnist(cfg.get("dataset", "mnist"), data_dir=data_dir, download=False, verbose=False)
    except DataError:
        return None
    X, y = data.test
    if run.kind == "row-mnist":
        return as_rows(X, normalize=not cfg.get("no_normalize", False)), y, data.classes, X
    return X, y, data.classes, X
