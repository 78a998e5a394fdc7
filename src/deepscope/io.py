"""Save and load models with no pickle anywhere.

A model is saved as two files: ``NAME.safetensors`` (the state dict, PyTorch's keys) and ``NAME.json`` (the
architecture, from :meth:`Module.config`: class names and constructor arguments). :func:`load` rebuilds the
model by looking each class name up among deepscope's own layers (:mod:`deepscope.nn`) and the classes a
program registered with :func:`register` -- never importing or instantiating anything else a file names --
then loads the weights. Every file is written atomically (:func:`deepscope.files.atomic_write`), so an
interrupted save never leaves a half-written file where a good one was.

A user's own module saves and loads once its class is registered::

    @deepscope.register
    class Block(deepscope.nn.Module):
        def __init__(self, features: int): ...

Its constructor arguments (numbers, strings, lists, other modules) are recorded when it is made, and
:func:`load` calls the constructor with them again. :func:`save` refuses, with one line, a model that
contains a class :func:`load` could not rebuild.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from . import backend, files, nn
from .errors import ConfigError, DataError


def save_arrays(path, arrays: dict, metadata: dict | None = None) -> None:
    """Save NumPy arrays (and string metadata) as one safetensors file, atomically."""
    arrays = {k: np.require(backend.to_numpy(v), requirements="C") for k, v in arrays.items()}  # keeps 0-d
    files.atomic_write(path, lambda tmp: save_file(arrays, tmp, metadata=metadata))


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


_REGISTERED: dict = {}   # class name -> class: the user's modules that load may build


def register(cls):
    """Let :func:`load` rebuild ``cls``, a subclass of :class:`deepscope.nn.Module`, from a saved model.

    Returns ``cls``, so it also works as a decorator (``@deepscope.register``). Registering a class whose
    name is already taken (by a deepscope layer or another registered class) is a :class:`ConfigError`.
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(f"register: expected a subclass of deepscope.nn.Module, got {cls!r}")
    name = cls.__name__
    taken = _classes().get(name)
    if taken is not None and taken is not cls:
        raise ConfigError(f"register: the name {name!r} is already taken by {taken.__module__}.{taken.__qualname__}; "
                          f"rename {cls.__module__}.{cls.__qualname__}")
    _REGISTERED[name] = cls
    return cls


def _classes() -> dict:
    """Every class :func:`load` may build, by name: deepscope.nn's modules and the registered ones."""
    own = {k: v for k, v in vars(nn).items() if isinstance(v, type) and issubclass(v, nn.Module)}
    return {**own, **_REGISTERED}


def _types(cfg):
    """Every class name that :func:`build_from_config` will look up for ``cfg``."""
    yield cfg["type"]
    for child in cfg.get("modules", []) + cfg.get("branches", []) + [cfg.get("block"), cfg.get("shortcut")]:
        if child is not None:
            yield from _types(child)
    for arg in _module_args(cfg.get("args", {})):
        yield from _types(arg)


def _module_args(obj):
    """The configs of the modules passed as constructor arguments (recorded as ``{"module": config}``)."""
    if isinstance(obj, dict):
        if set(obj) == {"module"} and isinstance(obj["module"], dict):
            yield obj["module"]
        else:
            for v in obj.values():
                yield from _module_args(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _module_args(v)


def save(model, path) -> Path:
    """Save ``model`` as ``path.safetensors`` + ``path.json`` (``path`` may be a run folder). Returns the stem."""
    cfg = model.config()
    known = _classes()
    for kind in _types(cfg):
        if known.get(kind) is None:
            raise ConfigError(f"save: {kind} is not a deepscope layer, so load could not rebuild it: call "
                              f"deepscope.register({kind}) first")
    stem = _stem(path)
    files.write_json(_with(stem, ".json"), {"format": "deepscope-model-1", "model": cfg})
    save_arrays(_with(stem, ".safetensors"), model.state_dict())
    return stem


def _with(stem: Path, suffix: str) -> Path:
    return stem.with_name(stem.name + suffix)


# A layer's constructor arguments bound what it allocates. Before a model described in a file is built, the
# product of each layer's integer arguments (in_features × out_features, channels × kernel, ...) must be at most
# this many times the number of values in its weights file (or 2^22): a 150-byte model.json cannot make us
# allocate gigabytes before load_state_dict finds that the weights do not fit.
_ALLOC_SLACK, _ALLOC_FLOOR = 16, 1 << 22
MAX_DESCRIPTION_BYTES = 1 << 24  # a model.json describes layers, not weights: 16 MB is plenty


def _declared_size(args) -> int:
    """The product of the positive integers in a layer's arguments (nested in lists too)."""
    size = 1
    for v in (args.values() if isinstance(args, dict) else args):
        if isinstance(v, (list, tuple)):
            size *= _declared_size(v)
        elif isinstance(v, int) and not isinstance(v, bool) and v > 0:
            size *= v
    return size


def _stored_values(path) -> int:
    """How many values the safetensors file ``path`` holds, read from its header alone."""
    try:
        with safe_open(str(path), framework="numpy") as f:
            return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise DataError(f"cannot read {path}: {e}") from None


def build_from_config(cfg: dict, max_size: int | None = None):
    """Rebuild a module from :meth:`Module.config` output, admitting only deepscope.nn's classes and the
    registered ones (the name read from the file is looked up in that table, never imported).
    ``max_size``: refuse a layer whose arguments declare more (see ``_declared_size``) before building it."""
    kind = cfg.get("type") if isinstance(cfg, dict) else None
    cls = _classes().get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise DataError(f"model description names an unknown layer type {kind!r} (deepscope's layers and "
                        f"classes registered with deepscope.register only)")
    if kind == "Sequential":
        return cls(*[build_from_config(c, max_size) for c in cfg["modules"]])
    if kind == "Residual":
        shortcut = cfg.get("shortcut")
        return cls(build_from_config(cfg["block"], max_size),
                   None if shortcut is None else build_from_config(shortcut, max_size))
    if kind == "Concat":
        return cls(*[build_from_config(c, max_size) for c in cfg["branches"]], dim=cfg.get("dim", 1))
    args = cfg.get("args", {})
    if not isinstance(args, dict):
        raise DataError(f"model description: the arguments of {kind} must be an object, got {args!r}")
    if max_size is not None and _declared_size(args) > max_size:
        raise DataError(f"model description declares {kind}({', '.join(f'{k}={v!r}' for k, v in args.items())}), "
                        f"far larger than the weights saved with it")
    args = _modules_in(args, max_size)
    try:
        return cls(**args)
    except TypeError as e:
        raise DataError(f"cannot build {kind} from the arguments {cfg.get('args')}: {e}") from None


def _modules_in(obj, max_size=None):
    """Constructor arguments with every ``{"module": config}`` (a module argument) rebuilt."""
    if isinstance(obj, dict):
        if set(obj) == {"module"} and isinstance(obj["module"], dict):
            return build_from_config(obj["module"], max_size)
        return {k: _modules_in(v, max_size) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_modules_in(v, max_size) for v in obj]
    return obj


def load(path):
    """Rebuild a model saved by :func:`save` (or the model of a run folder), in the dtype it was saved in.

    Loading leaves the global random generator as it was (the layers' initial draws are restored).
    """
    stem = _stem(path)
    desc_path = _with(stem, ".json")
    if not desc_path.exists():
        raise DataError(f"no saved model at {path} (expected {desc_path})")
    if desc_path.stat().st_size > MAX_DESCRIPTION_BYTES:
        raise DataError(f"{desc_path}: {desc_path.stat().st_size:,} bytes is too large for a model description "
                        f"(at most {MAX_DESCRIPTION_BYTES:,})")
    try:
        desc = json.loads(desc_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise DataError(f"{desc_path} is not valid JSON: {e}") from None
    weights = _with(stem, ".safetensors")
    max_size = max(_ALLOC_SLACK * _stored_values(weights), _ALLOC_FLOOR) if weights.exists() else _ALLOC_FLOOR
    rng_state = backend.get_rng_state()
    try:
        model = build_from_config(desc["model"], max_size)
    except DataError as e:
        raise DataError(str(e) if str(e).startswith(str(desc_path)) else f"{desc_path}: {e}") from None
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as e:
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
