"""A run folder and its one owner, :class:`Run`.

Every training run writes one folder; only this module knows what is in it::

    config.json              which command made the run, its options, the absolute path and identity of its data
    metrics.jsonl            one strict JSON object per finished epoch (``null`` where a number is NaN)
    checkpoint.safetensors   model, optimizer and callback (schedule, early stopping) state, RNG state and the
                             history: a run continues from here exactly where it stopped
    the model                the weights at the best validation epoch, saved into the folder by
                             :func:`deepscope.save` (``deepscope.load(run)`` reads them)
    .deepscope.lock          held (``flock``) by the one process writing the run; names it (pid, command)

plus whatever a command adds through :meth:`Run.file` / :meth:`Run.save_json` (figures, a vocabulary, a
sample). A run is made three ways:

* :meth:`Run.create` reserves a new folder atomically (``os.mkdir`` of a fresh name, so two processes started
  in the same second never share one; or ``out``, which must be missing, empty, or a run that never began)
  and holds it as the single writer;
* :meth:`Run.resume` takes an existing run back for writing (``--resume``);
* :meth:`Run.open` reads one (``evaluate``, ``show``, ``predict``).

Every file is written atomically (:mod:`deepscope.files`), and the checkpoint before the metrics that it
contains, so a crash at any moment leaves a run that resumes to the same numbers.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from safetensors import safe_open

from . import backend, files, io
from .errors import DataError

try:
    import fcntl
except ImportError:  # not on Windows: runs are then not protected against a second writer
    fcntl = None

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.safetensors"
LOCK = ".deepscope.lock"
_OURS = {CONFIG, METRICS, CHECKPOINT, LOCK}
_MODEL = {"model.json", "model.safetensors"}   # what deepscope.save writes into a run folder


class History:
    """Per-epoch metrics of a run, and the book's "test accuracy at the best validation epoch"."""

    def __init__(self, records=None):
        self.records: list[dict] = list(records or [])

    def append(self, record: dict) -> None:
        self.records.append(record)

    @property
    def best(self) -> dict | None:
        """The record of the epoch with the best validation accuracy (the last epoch if there is none)."""
        if not self.records:
            return None
        with_val = [r for r in self.records if r.get("val_acc") is not None]
        if not with_val:
            return self.records[-1]
        return max(with_val, key=lambda r: (r["val_acc"], -r["epoch"]))

    def __len__(self):
        return len(self.records)

    def __repr__(self):
        return f"History({len(self.records)} epochs, best={self.best})"


class Checkpoint:
    """What :meth:`Run.load_checkpoint` restored: the last finished ``epoch``, the ``history`` up to it and the
    callbacks' ``state`` (a dict of JSON values by callback name)."""

    def __init__(self, epoch: int, history: History, state: dict):
        self.epoch, self.history, self.state = epoch, history, state


class Run:
    """One run folder. Make it with :meth:`create`, :meth:`resume` or :meth:`open`, never directly.

    Attributes:
        path: the folder.
        writable: True when this process holds the run (create, resume); False for :meth:`open`.
    """

    def __init__(self, path, writable: bool):
        self.path = Path(path)
        self.writable = writable
        self._lock_fd = None
        self._config = None

    def __repr__(self):
        return f"Run({str(self.path)!r}{'' if self.writable else ', read-only'})"

    def __str__(self):
        return str(self.path)

    # -- making one ---------------------------------------------------------------------------------------
    @classmethod
    def create(cls, out=None, prefix: str = "run", resume_hint: str | None = None) -> "Run":
        """Reserve a new run folder and hold it.

        Args:
            out: the folder (``--out``); it may be missing, empty, or a run that stopped before it began. None:
                a fresh ``runs/<prefix>-<date>-<time>[-k]``, reserved by ``os.mkdir`` so that two processes
                started in the same second get two folders.
            prefix: the name of the command (``train``, ``rnn-text``, ...), for the default folder name.
            resume_hint: the command that continues such a run (``deepscope train``), named in the refusal
                when ``out`` already holds one.

        Raises:
            DataError: ``out`` is a file, holds a run, holds files that are not a run's (they are never
                touched), or another process holds it.
        """
        if out is None:
            path = reserve(Path("runs") / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}")
        else:
            path = Path(out)
            cls.check_new(path, resume_hint)
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise DataError(f"cannot create the run folder {path}: {e.strerror or e}") from None
        run = cls(path, writable=True)
        run._lock()
        try:
            cls.check_new(path, resume_hint)  # again, now that we hold it: another process may have begun it
        except DataError:
            run.close()
            raise
        return run

    @staticmethod
    def check_new(out, resume_hint: str | None = None) -> None:
        """Raise :class:`DataError` unless ``out`` can hold a new run (missing, empty, or a run with nothing in
        it but its lock; None: a fresh folder will be made). Commands call it before loading data so that a
        refusal comes at once."""
        if out is None:
            return
        out = Path(out)
        if not out.exists() and not out.is_symlink():
            return
        if not out.is_dir():
            raise DataError(f"--out {out} is a file, not a folder; choose another --out")
        names = {p.name for p in out.iterdir()} - {LOCK}
        names = {n for n in names if not _temporary_of_ours(n)}  # a run another process is beginning, or a crash
        if not names:
            return
        if CONFIG in names:
            hint = f", or continue it with {resume_hint} --resume {out}" if resume_hint else ""
            raise DataError(f"{out} already holds a run; choose another --out{hint}")
        raise DataError(f"--out {out} is a folder with files that are not a deepscope run ({_some(names)}); "
                        f"deepscope writes runs only into new or empty folders: choose another --out")

    @classmethod
    def resume(cls, path) -> "Run":
        """Take the run in ``path`` back for writing (``--resume``). Raises DataError if it is not a run or
        another process holds it."""
        run = cls.open(path)
        run.writable = True
        run._lock()
        return run

    @classmethod
    def open(cls, path) -> "Run":
        """A run to read (evaluate, show, predict). Raises DataError if ``path`` is not a run folder."""
        path = Path(path)
        if not Run.is_run(path):
            raise DataError(f"{path} is not a run folder (no {CONFIG})")
        return cls(path, writable=False)

    @staticmethod
    def is_run(path) -> bool:
        """Whether ``path`` is a run folder (as opposed to, e.g., a folder holding only a saved model)."""
        return (Path(path) / CONFIG).is_file() or (Path(path) / LOCK).is_file()

    # -- the single writer -------------------------------------------------------------------------------
    def _lock(self) -> None:
        if fcntl is None:
            return
        try:
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as e:
            raise DataError(f"cannot write into the run folder {self.path}: {e.strerror or e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder(fd)
            os.close(fd)
            raise DataError(f"{self.path} is being written by another deepscope process ({holder}); wait for "
                            f"it to finish or choose another folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}: {' '.join(['deepscope', *sys.argv[1:]])}\n".encode())
        self._lock_fd = fd
        files.remove_stale_temps(self.path)  # what a crashed writer of this run left (we are now its only writer)

    def close(self) -> None:
        """Let go of the run (another process may then resume it)."""
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # at interpreter exit the modules may be gone; the OS releases the lock anyway
            pass

    def _writing(self) -> None:
        if not self.writable:
            raise DataError(f"{self.path} was opened to read (Run.open); use Run.create or Run.resume to write")

    # -- config ------------------------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        """The run's config.json (``{}`` for a run created but not yet configured)."""
        if self._config is None:
            path = self.path / CONFIG
            if not path.is_file():
                return {}
            try:
                self._config = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise DataError(f"{path} is not valid JSON: {e}") from None
            if not isinstance(self._config, dict):
                raise DataError(f"{path} does not hold a run's settings (a JSON object)")
        return self._config

    def write_config(self, config: dict, command: str) -> None:
        """Save the run's settings. ``command`` names what made the run (``deepscope train``), so that other
        commands can say what a run is; data paths in ``config`` should be absolute."""
        self._writing()
        self._config = {**config, "command": command}
        files.write_json(self.path / CONFIG, self._config)

    # -- metrics -----------------------------------------------------------------------------------------
    @property
    def history(self) -> History:
        """The metrics of every finished epoch."""
        path = self.path / METRICS
        if not path.is_file():
            return History()
        try:
            return History(json.loads(line) for line in path.read_text().splitlines() if line.strip())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{path} is not JSON lines: {e}") from None

    def write_metrics(self, history: History) -> None:
        """Rewrite the metrics file to hold exactly ``history`` (strict JSON, one line per epoch)."""
        self._writing()
        files.atomic_write(self.path / METRICS, "".join(files.to_json(r) + "\n" for r in history.records))

    # -- checkpoints -------------------------------------------------------------------------------------
    @property
    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT).is_file()

    def save_checkpoint(self, model, optimizer, epoch: int, history: History, state: dict | None = None) -> None:
        """Model, optimizer, ``state`` (JSON values: schedules, early stopping), RNG and history, atomically."""
        self._writing()
        arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
        scalars = {}
        for k, v in optimizer.state_dict().items():
            if isinstance(v, list):
                arrays.update({f"optim.{k}.{i}": a for i, a in enumerate(v)})
            else:
                scalars[k] = v
        meta = {"epoch": epoch, "optimizer": scalars, "callbacks": state or {}, "rng": backend.get_rng_state(),
                "history": history.records}
        io.save_arrays(self.path / CHECKPOINT, arrays, metadata={"state": files.to_json(meta)})

    def load_checkpoint(self, model, optimizer) -> Checkpoint | None:
        """Restore model, optimizer and RNG from the checkpoint (None if the run has none yet)."""
        path = self.path / CHECKPOINT
        if not path.is_file():
            return None
        arrays = io.load_arrays(path)
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = json.loads(f.metadata()["state"])
            model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model.")})
            opt_state = dict(meta["optimizer"])
            lists: dict[str, list] = {}
            for k in sorted((k for k in arrays if k.startswith("optim.")), key=lambda k: int(k.rsplit(".", 1)[1])):
                lists.setdefault(k.split(".")[1], []).append(arrays[k])
            opt_state.update(lists)
            optimizer.load_state_dict(opt_state)
            backend.set_rng_state(meta["rng"])
            state = meta.get("callbacks", {})
            if "scheduler" in meta:  # written before schedules had a state_dict
                state = {"Schedule": meta["scheduler"]}
            return Checkpoint(int(meta["epoch"]), History(meta["history"]), state)
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{path} does not fit this model and optimizer ({type(e).__name__}: {e})") from None

    # -- the model -----------------------------------------------------------------------------------------
    def save_model(self, model) -> None:
        """Save ``model`` as the run's model (the weights of its best epoch)."""
        self._writing()
        io.save(model, self.path)

    def load_model(self):
        """The run's saved model (raises DataError, one line, if there is none)."""
        return io.load(self.path)

    # -- what commands add ------------------------------------------------------------------------------
    def file(self, name: str) -> Path:
        """The path of a file a command adds to the run (a figure, a sample); never one of the run's own."""
        if name in _OURS or Path(name).name != name:
            raise ValueError(f"{name!r} is not a name a command may add to a run")
        return self.path / name

    def save_json(self, name: str, obj) -> Path:
        """Write ``obj`` as strict JSON to the run's file ``name`` (atomically)."""
        self._writing()
        return files.write_json(self.file(name), obj)

    def load_json(self, name: str):
        path = self.file(name)
        if not path.is_file():
            raise DataError(f"{self.path} has no {name}")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{path} is not valid JSON: {e}") from None


def reserve(base) -> Path:
    """``base``, or ``base-2``, ``base-3``, ...: the first that ``os.mkdir`` creates (atomic: two processes never
    both get one name)."""
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10_000):
        path = base if i == 1 else base.with_name(f"{base.name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise DataError(f"cannot create the run folder {path}: {e.strerror or e}") from None
    raise DataError(f"cannot find a free name for a run folder beside {base}")


def _temporary_of_ours(name: str) -> bool:
    """Whether ``name`` is the temporary file of an atomic write of one of a run's own files."""
    return name.endswith(".tmp") and any(name.startswith(f".{own}.") for own in _OURS | _MODEL)


def _some(names) -> str:
    names = sorted(names)
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _holder(fd, wait_s: float = 1.0) -> str:
    """Who holds the run's lock: the line its holder writes right after taking the lock (``pid N: command``). A
    process refused in between reads an empty file: it reads again for up to ``wait_s`` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        os.lseek(fd, 0, os.SEEK_SET)
        line = os.read(fd, 500).decode("utf-8", "replace").strip()
        if line or time.monotonic() > deadline:
            return line or "its pid not yet written"
        time.sleep(0.01)
