"""Save and load models with no pickle anywhere.

A model is saved as two files: ``NAME.safetensors`` (the state dict, PyTorch's keys) and ``NAME.json`` (the
architecture, from :meth:`Module.config`: class names and constructor arguments). :func:`load` rebuilds the
model by looking each class up in :mod:`deepscope.nn` — only classes defined there can be named — then loads
the weights. Every file is written atomically (a temporary file, then ``os.replace``), so an interrupted save
never leaves a half-written file where a good one was.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from . import backend
from .errors import DataError


def atomic_write(path, write) -> None:
    """Call ``write(tmp_path)`` then move the temporary file onto ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def run_dir(out=None, prefix: str = "run") -> Path:
    """The folder a run writes to: ``out`` if given, else a new ``runs/<prefix>-<date>-<time>[-k]``."""
    if out is not None:
        return Path(out)
    return fresh_dir(Path("runs") / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}")


def fresh_dir(base) -> Path:
    """``base``, or ``base-2``, ``base-3``, … : the first that does not exist yet."""
    run, i = Path(base), 1
    while run.exists():
        i += 1
        run = run.with_name(f"{Path(base).name}-{i}")
    return run


def write_json(path, obj) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
    atomic_write(path, write)


def save_arrays(path, arrays: dict, metadata: dict | None = None) -> None:
    """Save NumPy arrays (and string metadata) as one safetensors file, atomically."""
    arrays = {k: np.ascontiguousarray(backend.to_numpy(v)) for k, v in arrays.items()}
    atomic_write(path, lambda tmp: save_file(arrays, tmp, metadata=metadata))


def load_arrays(path) -> dict:
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise DataError(f"cannot read {path}: {e}") from None


def _stem(path) -> Path:
    """A run folder means its ``model``; ``x.safetensors``/``x.json``/``x`` all mean ``x`` (and ``net-p0.5``
    means ``net-p0.5``: the files are named by appending, never by replacing what follows a dot)."""
    path = Path(path)
    if path.is_dir():
        return path / "model"
    if path.suffix in (".safetensors", ".json"):
        return path.with_suffix("")
    return path


def save(model, path) -> Path:
    """Save ``model`` as ``path.safetensors`` + ``path.json`` (``path`` may be a run folder). Returns the stem."""
    stem = _stem(path)
    write_json(_with(stem, ".json"), {"format": "deepscope-model-1", "model": model.config()})
    save_arrays(_with(stem, ".safetensors"), model.state_dict())
    return stem


def _with(stem: Path, suffix: str) -> Path:
    return stem.with_name(stem.name + suffix)


def build_from_config(cfg: dict):
    """Rebuild a module from :meth:`Module.config` output, admitting only classes of :mod:`deepscope.nn`."""
    from . import nn
    kind = cfg.get("type")
    cls = getattr(nn, kind, None) if isinstance(kind, str) else None
    if cls is None or not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise DataError(f"model description names an unknown layer type {kind!r}")
    if kind == "Sequential":
        return nn.Sequential(*[build_from_config(c) for c in cfg["modules"]])
    try:
        return cls(**cfg.get("args", {}))
    except TypeError as e:
        raise DataError(f"cannot build {kind} from the arguments {cfg.get('args')}: {e}") from None


def load(path):
    """Rebuild a model saved by :func:`save` (or the model of a run folder), in the dtype it was saved in.

    Loading leaves the global random generator as it was (the layers' initial draws are restored).
    """
    stem = _stem(path)
    desc_path = _with(stem, ".json")
    if not desc_path.exists():
        raise DataError(f"no saved model at {path} (expected {desc_path})")
    try:
        desc = json.loads(desc_path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{desc_path} is not valid JSON: {e}") from None
    rng_state = backend.get_rng_state()
    try:
        model = build_from_config(desc["model"])
    except DataError:
        raise
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{desc_path}: cannot build the model it describes ({type(e).__name__}: {e})") from None
    finally:
        backend.set_rng_state(rng_state)   # building drew initial weights that the saved ones replace
    arrays = load_arrays(_with(stem, ".safetensors"))
    dtypes = {a.dtype for a in arrays.values() if a.dtype.kind == "f"}
    if len(dtypes) == 1:
        model.to(dtypes.pop())
    try:
        model.load_state_dict(arrays)
    except KeyError as e:
        raise DataError(f"{_with(stem, '.safetensors')} does not fit {desc_path}: {e.args[0]}") from None
    return model.eval()
