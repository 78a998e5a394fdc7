"""The one way deepscope writes a file: atomically.

:func:`atomic_write` writes to a temporary file in the destination's folder, flushes it to disk (``fsync``), and
moves it onto the destination with ``os.replace``: a reader, a crash or Ctrl-C sees the old file or the new one,
never half of one. On any failure the temporary file is removed. The new file gets the mode an ordinary
``open(path, "w")`` would give (``0o666`` less the umask), and a symbolic link at the destination is replaced
by the file, never followed out of the folder.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path, content) -> Path:
    """Write ``content`` to ``path`` in one step and return ``path``.

    Args:
        path: the destination (its folder is created if missing).
        content: ``bytes``, ``str`` (written as UTF-8), or a callable ``write(tmp_path)`` that writes the file
            itself (e.g. ``safetensors.numpy.save_file`` or a download); an exception from it leaves the
            destination as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMP_SUFFIX, dir=path.parent)
    mode = 0o666 & ~_umask()
    try:
        os.fchmod(fd, mode)                # mkstemp makes 0600: follow the umask like open() does
        if callable(content):
            os.close(fd)
            fd = -1
            content(Path(tmp))
            os.chmod(tmp, mode)            # the writer may have made the file anew (safetensors does, 0600)
            fd = os.open(tmp, os.O_RDONLY)
        else:
            data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)              # rename(2) replaces a symlink at ``path``; it never follows it
    except BaseException:
        if fd >= 0:
            os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


_TEMP_SUFFIX = ".tmp"


def remove_stale_temps(folder) -> list:
    """Remove the temporary files that writes in ``folder`` left behind when their process was killed
    (``kill -9`` or a power cut during :func:`atomic_write`: nothing can clean up then). Only for a folder no
    other process is writing to, e.g. a run this process holds. Returns the paths removed."""
    removed = []
    for tmp in Path(folder).glob(f".*.*{_TEMP_SUFFIX}"):
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def strict(value):
    """``value`` with every NaN or infinite float replaced by ``None``, so that it is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


def to_json(obj, indent=None) -> str:
    """Strict JSON (``null`` where a float is NaN or infinite; never a bare ``NaN`` token)."""
    return json.dumps(strict(obj), indent=indent, allow_nan=False)


def write_json(path, obj) -> Path:
    """``obj`` as strict JSON, atomically."""
    return atomic_write(path, to_json(obj, indent=1) + "\n")
