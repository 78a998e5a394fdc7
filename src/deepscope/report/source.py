"""What a report reads from a run folder: the one place in :mod:`deepscope.report` that knows a run's files.

A folder is recognised by what it holds:

    train        config.json with an "arch" (``deepscope train``)
    ch6          config.json with a "rung" (``deepscope book ch6``; its parent folder expands to its rungs)
    row-mnist    config.json with task "row-mnist" (``deepscope rnn mnist``)
    char-lm      config.json with task "char-lm" (``deepscope rnn text``): vocab.json, sample.txt
    scope-speed  speed.jsonl and summary.json (``deepscope scope speed``)
    scope-compare  compare.json (``deepscope scope compare``)
    scope-time   time.json (``deepscope scope time``)
    sweep        trials.csv or trials.json (``deepscope sweep``)

and every run may hold ``metrics.jsonl`` (one record per epoch) and ``speed.jsonl`` (the learning-speed
recorder's records). Nothing here writes to a run folder.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import shlex
from pathlib import Path

import numpy as np

from ..errors import DataError

# config keys that are facts about the run, not options of the command that made it
_NOT_OPTIONS = {"data_source", "n_train", "task", "rung", "title", "book", "runs", "ensemble", "expanded",
                "network3", "command", "func", "default_epochs", "out", "resume"}
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

    @property
    def has_model(self) -> bool:
        return (self.path / "model.safetensors").is_file()


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON: {e}") from None


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


def _kind(path: Path, config: dict) -> str | None:
    if (path / "trials.csv").is_file() or (path / "trials.json").is_file():
        return "sweep"
    if (path / "compare.json").is_file():
        return "scope-compare"
    if (path / "time.json").is_file():
        return "scope-time"
    if (path / "summary.json").is_file() and (path / "speed.jsonl").is_file():
        return "scope-speed"
    if config.get("task") in ("row-mnist", "char-lm"):
        return config["task"]
    if "rung" in config:
        return "ch6"
    if "arch" in config:
        return "train"
    return None


def expand(paths) -> list[Path]:
    """The run folders the given paths name: a folder of runs (``deepscope book ch6``'s, a sweep's trials are
    not expanded) stands for the runs inside it, in name order."""
    out = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise DataError(f"no such run folder: {p}")
        if _kind(p, _config_of(p)) is None:
            inner = sorted(q for q in p.iterdir() if q.is_dir() and _kind(q, _config_of(q)) is not None)
            if not inner:
                raise DataError(f"{p} is not a run folder (no config.json, metrics.jsonl or experiment results)")
            out.extend(inner)
        else:
            out.append(p)
    return out


def _config_of(path: Path) -> dict:
    cfg = path / "config.json"
    return _json(cfg) if cfg.is_file() else {}


def open_run(path) -> RunData:
    """Read a run folder (see the module docstring for the kinds)."""
    path = Path(path)
    config = _config_of(path)
    kind = _kind(path, config)
    if kind is None:
        raise DataError(f"{path} is not a run folder deepscope report knows")
    extras = {}
    speed = _jsonl(path / "speed.jsonl")
    if kind == "scope-speed":
        config = {k: v for k, v in _json(path / "summary.json").items()
                  if k in ("layers", "activation", "init", "steps", "eta", "lmbda", "n", "seeds")}
    elif kind == "scope-compare":
        data = _json(path / "compare.json")
        config, extras["compare"] = data["config"], data["cells"]
    elif kind == "scope-time":
        data = _json(path / "time.json")
        extras["time"] = data.pop("norms")
        config = data
    elif kind == "sweep":
        config, extras["trials"], extras["runs"] = _sweep(path)
    elif kind == "char-lm":
        if (path / "sample.txt").is_file():
            extras["sample"] = (path / "sample.txt").read_text(encoding="utf-8")
    return RunData(path=path, kind=kind, config=config, command=reproduce_command(kind, config),
                   metrics=_jsonl(path / "metrics.jsonl"), speed=speed, extras=extras)


def _sweep(path: Path):
    """A sweep folder (``deepscope sweep``): its settings, its trials as flat dicts (an option ``lr`` becomes
    the column ``options.lr``) and the trials' own run folders."""
    saved = _json(path / "sweep.json") if (path / "sweep.json").is_file() else {}
    if (path / "trials.json").is_file():
        trials = _json(path / "trials.json")
        trials = trials.get("trials", trials) if isinstance(trials, dict) else trials
    else:
        with open(path / "trials.csv", newline="", encoding="utf-8") as f:
            trials = [{k: _number(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    trials = [_flat(t) for t in trials]
    keys = list(dict.fromkeys(k for t in saved.get("trials", []) for k in t.get("options", {})))
    config = {"trial command": shlex.join(["deepscope", *saved.get("command", [])]) if saved.get("command") else None,
              "options": keys, "trials": len(saved.get("trials", [])) or len(trials), "metric": "val_acc"}
    runs = [open_run(path / str(t["trial"])) for t in trials
            if t.get("trial") is not None and (path / str(t["trial"]) / "metrics.jsonl").is_file()]
    return config, trials, runs


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _number(text):
    for kind in (int, float):
        try:
            return kind(text)
        except (TypeError, ValueError):
            pass
    return text


def reproduce_command(kind: str, config: dict) -> str:
    """The command line that makes this run again: the one the run recorded, else one rebuilt from its config."""
    if kind == "sweep":
        return f"{config.get('trial command')}  (one run per trial, each with its options, --seed and --out)"
    if config.get("command"):
        cmd = config["command"]
        return shlex.join(cmd) if isinstance(cmd, list) else str(cmd)
    if kind == "ch6":
        parts = ["deepscope", "book", "ch6", config["rung"], "--epochs", str(config.get("epochs")),
                 "--seed", str(config.get("seed", 0))]
        if config.get("train_size") and config.get("train_size") != 50_000:
            parts += ["--train-size", str(config["train_size"])]
        if config.get("quirks"):
            parts.append("--quirks")
        return shlex.join(parts)
    parts = COMMANDS[kind].split()
    for key, value in config.items():
        if key in _NOT_OPTIONS or value is None or value is False:
            continue
        if kind == "scope-speed" and key == "layers":
            value = ",".join(map(str, value))
        elif kind == "scope-speed" and key == "seeds":
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
    """The run's saved model (its best-validation weights)."""
    from .. import io
    return io.load(run.path)


def initial_model(run: RunData):
    """The run's net as it was before its first step, rebuilt from the seed and architecture in its config
    (``deepscope train`` and ``book ch6`` seed the generator and build the net before anything else draws from
    it); None when the run does not say how (network3's quirks, recurrent nets built elsewhere)."""
    from .. import arch, backend
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
    from .. import backend, nn
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
    from ..data import load_mnist
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
        from ..sequence.mnist import as_rows
        return as_rows(X, normalize=not cfg.get("no_normalize", False)), y, data.classes, X
    return X, y, data.classes, X
