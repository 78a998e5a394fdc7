"""Sweeps: many runs of one deepscope command, side by side, on Ray.

A sweep is a list of trials. Each trial is one call of a deepscope command (``train``, ``book ch6 …``,
``scope compare``, …) with some options changed and its own seed, made inside a Ray worker as
``main([*command, *options, "--seed", S, "--out", SWEEP/TRIAL])``, so every trial is an ordinary run folder
that ``evaluate``, ``show`` and ``report`` read like any other. The trials come from a grid
(``--grid lr=0.01,0.1``), random samples of a space (``--space lr=0.001:0.1:log``) and seeds, crossed.

Ray runs embedded in this process by default (one worker per core, one BLAS thread per trial) or joins a
running cluster given its address. Each trial is a Ray task: Ray places it on a worker, which stays up for the
next trial (deepscope imported and its data read once per worker, as in one process), and runs it again on
another worker if its worker dies (it continues from the run's last checkpoint, through the command's
``--resume``). With a scheduler (``--scheduler asha``) the trials run on Ray Tune instead, which stops the weak
ones early from the per-epoch lines of their metrics. With one worker and no cluster (or without Ray installed)
the trials run one after another in this process: the same folder and table, without Ray's start-up.

The sweep folder::

    sweep.json      the command and every trial (what ``--resume`` reads back)
    trials.json     one row per finished trial: options, seed, status, best-validation epoch, accuracies,
    trials.csv      time, the Ray node that ran it; rewritten as each trial ends (Ctrl-C keeps them)
    sweep.png       the metric against the swept options, mean and band over seeds
    logs/TRIAL.log  what the trial's command printed
    logs/TRIAL.seconds.json   the seconds of each attempt at the trial (the table's seconds are their sum)
    TRIAL/          the trial's run folder
    .tune/          Ray Tune's own bookkeeping (with a scheduler)

``resume`` runs only the trials without a row (a trial interrupted mid-run continues from its checkpoint).
"""
from __future__ import annotations

import contextlib
import csv
import gc
import importlib.util
import io as _stdio
import json
import logging
import math
import os
import re
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import figures, files
from .cpu import set_num_threads
from .errors import ConfigError, DataError
from .runs import History, Run

INSTALL_HINT = 'deepscope sweep needs Ray: pip install -e ".[sweep]"  (or pip install "ray[tune]")'
FINAL = ("done", "stopped")   # a trial with one of these statuses is never run again


@dataclass(frozen=True)
class Trial:
    """One run of the sweep's command: the options it changes (name without dashes → value) and its seed."""
    options: dict
    seed: int
    name: str = field(default="", compare=False)

    def __post_init__(self):
        if not self.name:
            parts = [f"{k}-{v}" for k, v in self.options.items()] + [f"seed-{self.seed}"]
            object.__setattr__(self, "name", re.sub(r"[^A-Za-z0-9_.=+-]", "-", "_".join(parts)))


# ---------------------------------------------------------------------------------------------- the trial list

def parse_grid(text: str) -> tuple[str, list[str]]:
    """``"lr=0.01,0.03"`` → ``("lr", ["0.01", "0.03"])``."""
    key, sep, values = text.partition("=")
    items = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not _is_key(key) or not items:
        raise ConfigError(f"--grid {text!r}: expected KEY=V1,V2,... (e.g. lr=0.01,0.1)")
    return key.strip(), items


@dataclass(frozen=True)
class Range:
    """A dimension of a random search: uniform in [low, high], or log-uniform; integers if both ends are."""
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def sample(self, rng) -> str:
        lo, hi = (math.log(self.low), math.log(self.high)) if self.log else (self.low, self.high)
        x = rng.uniform(lo, hi)
        x = math.exp(x) if self.log else x
        return str(int(round(x))) if self.integer else f"{x:.4g}"


def parse_space(text: str) -> tuple[str, Range]:
    """``"lr=0.001:0.1:log"`` → ``("lr", Range(0.001, 0.1, log=True))``; ``"epochs=2:6"`` samples integers."""
    key, sep, spec = text.partition("=")
    parts = spec.split(":")
    bad = ConfigError(f"--space {text!r}: expected KEY=LOW:HIGH or KEY=LOW:HIGH:log (e.g. lr=0.001:0.1:log)")
    if not sep or not _is_key(key) or len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "log"):
        raise bad
    try:
        low, high = float(parts[0]), float(parts[1])
    except ValueError:
        raise bad from None
    log = len(parts) == 3
    if not (math.isfinite(low) and math.isfinite(high) and low < high) or (log and low <= 0):
        raise ConfigError(f"--space {text!r}: need LOW < HIGH" + (" and LOW > 0 for :log" if log else ""))
    integer = all(re.fullmatch(r"[+-]?\d+", p.strip()) for p in parts[:2])
    return key.strip(), Range(low, high, log, integer)


def _is_key(key: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key.strip()))


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def require_ray() -> None:
    """Raise a one-line :class:`ConfigError` saying how to install Ray (Tune) when it is missing."""
    if not ray_available():
        raise ConfigError(INSTALL_HINT)


def expand(grid=(), seeds: int = 1, samples: int = 0, space=(), first_seed: int = 0,
           sample_seed: int = 0) -> list[Trial]:
    """Every trial of a sweep: the grid's cross product × ``samples`` random points of ``space`` × seeds.

    Args:
        grid: ``(key, [values])`` pairs; the trials take every combination, in order.
        seeds: seeds per configuration, ``first_seed`` … ``first_seed + seeds - 1``.
        samples: random points drawn from ``space`` (``(key, Range)`` pairs), with ``sample_seed``, so the
            trial list is the same each time (``--resume`` relies on it).
    """
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    if bool(samples) != bool(space):
        raise ConfigError("--sample N and --space KEY=LOW:HIGH go together")
    keys = [k for k, _ in grid] + [k for k, _ in space]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"an option is swept twice: {', '.join(sorted(k for k in set(keys) if keys.count(k) > 1))}")
    configs = [{}]
    for key, values in grid:
        configs = [{**c, key: v} for c in configs for v in values]
    if samples:
        rng = np.random.default_rng(sample_seed)
        points = [{k: r.sample(rng) for k, r in space} for _ in range(samples)]
        configs = [{**c, **p} for c in configs for p in points]
    trials = [Trial(c, first_seed + s) for c in configs for s in range(seeds)]
    names = [t.name for t in trials]
    if len(set(names)) != len(names):
        raise ConfigError("two trials would share a folder name (repeated values in --grid?)")
    return trials


def trial_argv(command: list[str], trial: Trial, run_dir, resume: bool) -> list[str]:
    """The command line of one trial: the command, the trial's options, its seed and its run folder."""
    argv = list(command)
    for key, value in trial.options.items():
        argv += [f"--{key}", str(value)]
    argv += ["--seed", str(trial.seed)]
    argv += ["--resume", str(run_dir)] if resume else ["--out", str(run_dir)]
    return argv


# ------------------------------------------------------------------------------------------- the sweep folder

class SweepFolder:
    """The folder of a sweep: its command and trials (``sweep.json``) and the table of results."""

    def __init__(self, path, command: list[str], trials: list[Trial], rows: dict | None = None):
        self.path = Path(path)
        self.command = list(command)
        self.trials = list(trials)
        self.rows = dict(rows or {})          # trial name → row

    @classmethod
    def create(cls, path, command: list[str], trials: list[Trial]) -> "SweepFolder":
        path = Path(path)
        if (path / "sweep.json").exists():
            raise DataError(f"{path} already holds a sweep; continue it with deepscope sweep --resume {path}")
        if path.exists() and any(path.iterdir()):
            raise DataError(f"{path} exists and is not empty; choose another --out")
        path.mkdir(parents=True, exist_ok=True)
        folder = cls(path, command, trials)
        files.write_json(path / "sweep.json", {"command": folder.command, "trials": [asdict(t) for t in trials]})
        return folder

    @classmethod
    def open(cls, path) -> "SweepFolder":
        path = Path(path)
        try:
            saved = json.loads((path / "sweep.json").read_text())
            trials = [Trial(t["options"], t["seed"], t["name"]) for t in saved["trials"]]
            command = saved["command"]
        except FileNotFoundError:
            raise DataError(f"{path} is not a sweep folder (no sweep.json)") from None
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(f"{path / 'sweep.json'} is damaged: {e}") from None
        rows = {}
        if (path / "trials.json").exists():
            try:
                rows = {r["trial"]: r for r in json.loads((path / "trials.json").read_text())}
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise DataError(f"{path / 'trials.json'} is damaged: {e}") from None
        return cls(path, command, trials, rows)

    @property
    def keys(self) -> list[str]:
        """The swept options, in the order they were given."""
        keys = []
        for t in self.trials:
            keys += [k for k in t.options if k not in keys]
        return keys

    def missing(self) -> list[Trial]:
        """The trials still to run: those without a final row."""
        return [t for t in self.trials if self.rows.get(t.name, {}).get("status") not in FINAL]

    def run_dir(self, trial: Trial) -> Path:
        return self.path / trial.name

    def log_path(self, trial: Trial) -> Path:
        return self.path / "logs" / f"{trial.name}.log"

    def ordered_rows(self) -> list[dict]:
        """The rows of the trials that have one, in the trials' order."""
        return [self.rows[t.name] for t in self.trials if t.name in self.rows]

    def record(self, row: dict) -> None:
        """Add (or replace) a trial's row and rewrite the tables at once, atomically."""
        self.rows[row["trial"]] = row
        ordered = self.ordered_rows()
        files.write_json(self.path / "trials.json", ordered)
        columns = ["trial"] + self.keys + ["seed", "status", "best_epoch", "val_acc", "test_acc", "seconds",
                                           "attempts", "resumed_after_epoch", "node_id", "error"]
        text = _stdio.StringIO()
        w = csv.DictWriter(text, columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in ordered:
            w.writerow({**r.get("options", {}), **r})
        files.atomic_write(self.path / "trials.csv", text.getvalue())


# --------------------------------------------------------------------------------- a trial, in a Ray worker

def _run_metrics(run_dir: Path) -> list[dict]:
    """The per-epoch records a trial's run has written so far (none before its folder exists)."""
    return Run.open(run_dir).history.records if Run.is_run(run_dir) else []


def _has_checkpoint(run_dir: Path) -> bool:
    return Run.is_run(run_dir) and Run.open(run_dir).has_checkpoint


def _best(records: list[dict]) -> dict:
    """The numbers of the book's protocol: the epoch of best validation accuracy (the last if none has one)."""
    best = History(records).best
    if best is None:
        return {}
    row = {k: v for k, v in best.items() if isinstance(v, (int, float)) and k != "seconds"}
    row["best_epoch"] = best.get("epoch")
    return row


def _call(main, argv: list[str], log_path: Path) -> int:
    """``main(argv)`` with its output appended to ``log_path``; its exit code (argparse's 2 when it rejects an
    option). Exceptions, Ctrl-C included, go to the caller."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        print(f"[deepscope sweep] pid {os.getpid()}: deepscope {' '.join(argv)}", flush=True)
        try:
            return int(main(argv) or 0)
        except SystemExit as e:          # argparse rejecting an option
            return e.code if isinstance(e.code, int) else 2


class _Command(threading.Thread):
    """The trial's command (:func:`_call`), run in a thread of this worker process while the worker reports."""

    def __init__(self, main, argv, log_path: Path):
        super().__init__(daemon=True)
        self.main, self.argv, self.log_path = main, argv, log_path
        self.exit_code: int | None = None
        self.error: BaseException | None = None

    def run(self):
        try:
            self.exit_code = _call(self.main, self.argv, self.log_path)
        except BaseException as e:       # a bug: raised again by the worker (see _attempt_in_worker)
            self.error = e


class _Clock:
    """The seconds a trial has run over all its attempts (a worker killed mid-trial and the trial restarted,
    Ctrl-C then ``--resume``): ``logs/TRIAL.seconds.json`` holds one number per attempt, this attempt's
    rewritten each time :meth:`tick` is called, so an attempt that dies keeps the time it had run."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.before = [float(x) for x in json.loads(path.read_text())]
        except (OSError, ValueError, TypeError):
            self.before = []
        self.t0 = time.perf_counter()

    def tick(self) -> list[float]:
        attempts = self.before + [time.perf_counter() - self.t0]
        files.write_json(self.path, attempts)
        return attempts


class _Attempt:
    """One attempt at a trial: its run folder taken back from its checkpoint if an earlier attempt left one
    (else started afresh), its command line, and its row once the command has returned."""

    def __init__(self, folder: SweepFolder, trial: Trial):
        self.folder, self.trial = folder, trial
        self.run_dir = folder.run_dir(trial)
        resume = _has_checkpoint(self.run_dir)
        if self.run_dir.exists() and not resume:
            shutil.rmtree(self.run_dir)  # an attempt that died before its first checkpoint: nothing in it to keep
        self.resumed_after = len(_run_metrics(self.run_dir)) if resume else 0
        self.argv = trial_argv(folder.command, trial, self.run_dir, resume)
        self.log_path = folder.log_path(trial)
        self.clock = _Clock(folder.path / "logs" / f"{trial.name}.seconds.json")

    def row(self, exit_code: int, node) -> dict:
        attempts = self.clock.tick()
        row = _best(_run_metrics(self.run_dir))
        row.update(exit_code=exit_code, finished=1, node_id=node, seconds=sum(attempts), attempts=len(attempts),
                   resumed_after_epoch=self.resumed_after)
        return row


def _attempt_in_worker(main, sweep_dir: str, command: list[str], trial: Trial, on_tick=None) -> dict:
    """One attempt at a trial, in a Ray worker: the command in a thread, the attempt's clock ticking every half
    second (a worker killed now loses at most that much of the trial's time), ``on_tick(attempt, node)`` after
    each tick; the trial's row once the command has returned. A command that raised (a bug) raises here."""
    from ray import get_runtime_context   # lazy: Ray is the optional `sweep` extra

    set_num_threads(1)   # one thread per trial (BLAS included): Ray runs one trial per CPU it holds
    if gc.get_freeze_count() == 0:
        # the worker's first trial: Ray's modules and deepscope's, imported by now, never become garbage; out
        # of the collector's reach, no full collection of a trial walks them again (~200,000 objects in a Ray
        # worker; the trials' GC a sweep of the chapter 5 grid: 1.4 -> 0.9-1.1 CPU-s). Only once: a later
        # freeze would keep whatever garbage the trials before had left for the collector
        gc.freeze()
    attempt = _Attempt(SweepFolder(sweep_dir, command, []), trial)
    node = get_runtime_context().get_node_id()
    cmd = _Command(main, attempt.argv, attempt.log_path)
    attempt.clock.tick()
    cmd.start()
    while cmd.is_alive():
        cmd.join(0.25 if on_tick else 0.5)
        attempt.clock.tick()
        if on_tick:
            on_tick(attempt, node)
    if cmd.error is not None:
        raise cmd.error
    return attempt.row(cmd.exit_code, node)


def trial_task(main, sweep_dir: str, command: list[str], trial: dict) -> dict:
    """The Ray task of one trial (see :func:`_attempt_in_worker`)."""
    return _attempt_in_worker(main, sweep_dir, command, Trial(**trial))


def run_trial(config: dict, main, sweep_dir: str, command: list[str]) -> None:
    """Tune's function for one trial, with a scheduler that stops trials early: each new epoch of the run
    reported as it ends (what the scheduler reads), then the trial's row."""
    from ray import tune   # lazy: Ray Tune is the optional `sweep` extra
    reported = []

    def report_epochs(attempt, node):
        records = _run_metrics(attempt.run_dir)
        for r in records[attempt.resumed_after + len(reported):]:
            tune.report({**{k: v for k, v in r.items() if isinstance(v, (int, float))}, "node_id": node})
            reported.append(r)

    tune.report(_attempt_in_worker(main, sweep_dir, command, Trial(**config["trial"]), on_tick=report_epochs))


# ------------------------------------------------------------------------------------------------ the driver

def _tune_callback(folder: SweepFolder, bar):
    """A Tune callback that writes each trial's row when it ends and keeps the progress bar current."""
    from ray import tune   # lazy: optional extra

    class Progress(tune.Callback):
        def __init__(self):
            self.running, self.failed, self.last = set(), 0, {}

        def _show(self):
            bar.set_postfix_str(f"running {len(self.running)}, failed {self.failed}")

        def on_trial_start(self, iteration, trials, trial, **info):
            self.running.add(trial.trial_id)
            self._show()

        def on_trial_restore(self, iteration, trials, trial, **info):
            self.on_trial_start(iteration, trials, trial)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.last[trial.trial_id] = result

        def on_trial_complete(self, iteration, trials, trial, **info):
            result = self.last.get(trial.trial_id, {})
            self._end(trial, _status(result), result)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._end(trial, "error", self.last.get(trial.trial_id, {}), error=_last_error_line(trial))

        def _end(self, trial, status, result, error=None):
            self.running.discard(trial.trial_id)
            folder.record(_row(Trial(**trial.config["trial"]), status, result, error))
            if status in ("failed", "error"):
                self.failed += 1
            bar.update(1)
            self._show()

    return Progress()


def _status(result: dict) -> str:
    """done (the command ended with exit code 0), failed (another exit code) or stopped (ended early by the
    scheduler, so without the final report)."""
    if not result.get("finished"):
        return "stopped"
    return "done" if result.get("exit_code") == 0 else "failed"


def _row(trial: Trial, status: str, result: dict, error: str | None = None) -> dict:
    """A trial's row of the table, from the last result it reported."""
    row = {"trial": trial.name, "options": trial.options, "seed": trial.seed, "status": status}
    metrics = _best([result]) if status == "stopped" else result
    keep = ("best_epoch", "val_acc", "test_acc", "seconds", "attempts", "resumed_after_epoch", "node_id",
            "exit_code")
    row.update({k: metrics[k] for k in keep if k in metrics})
    row.update({k: v for k, v in metrics.items() if k not in row and not k.startswith(_TUNE_KEYS)
                and isinstance(v, (int, float)) and k not in ("finished", "epoch", "done")})
    if status == "stopped":
        row["node_id"] = result.get("node_id")
    if status == "failed":
        row["error"] = f"exit code {result.get('exit_code')}; see logs/{trial.name}.log"
    if error:
        row["error"] = error
    return row


def _last_error_line(trial) -> str:
    """The last line of the exception Tune saved for a failed trial (its type and message)."""
    path = getattr(trial, "error_file", None)
    try:
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()] if path else []
    except OSError:
        lines = []
    return (lines[-1].strip() if lines else "the trial's worker failed")[:300]


_TUNE_KEYS = ("time_", "timestamp", "training_iteration", "iterations_since_restore", "pid", "date", "hostname",
              "node_ip", "trial_id", "config", "experiment_tag", "checkpoint_dir_name", "should_checkpoint")


@dataclass
class SweepResult:
    rows: list[dict]           # one per trial of the sweep that has a row, in trial order
    ran: int                   # trials run this time
    interrupted: bool
    seconds: float


def in_process(address: str | None = None, workers: int | None = None, scheduler: str | None = None) -> bool:
    """Whether :func:`run` runs the trials one after another in this process, without Ray: with one worker
    and neither a cluster nor a scheduler (Ray would add only its start-up and a round trip per trial), or
    when Ray is not installed."""
    return address is None and scheduler is None and (workers == 1 or not ray_available())


def run(folder: SweepFolder, main, *, address: str | None = None, workers: int | None = None,
        scheduler: str | None = None, metric: str = "val_acc", max_failures: int = 3,
        progress: bool = True, longest_first=None) -> SweepResult:
    """Run the trials of ``folder`` that have no row yet, as Ray tasks (on Ray Tune with a scheduler; here, see
    :func:`in_process`); return every row.

    Args:
        folder: the sweep (see :meth:`SweepFolder.create` / :meth:`SweepFolder.open`).
        main: the command's entry point, ``main(argv) -> exit code`` (``deepscope.cli.main``); it is sent to
            the workers by reference, so every node must have deepscope installed.
        address: a running Ray cluster (``ray start --head`` …); None starts Ray inside this process.
        workers: trials at a time (default: one per CPU of the cluster); 1 without ``address``: one after
            another in this process, without Ray.
        scheduler: None (every trial runs to the end) or ``"asha"`` (stops weak trials early, on ``metric``).
        max_failures: restarts of a trial whose worker died (each continues from the run's checkpoint); a
            command that raises is not run again (its row says why), except under a scheduler (Tune's rule).
        longest_first: ``trial -> its expected cost`` (any number): the trials start in decreasing order of
            it, so that the last to end are short ones and no worker waits long for the last trial.
    """
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    if scheduler not in (None, "asha"):
        raise ConfigError(f"unknown scheduler {scheduler!r}: choose asha")
    todo = folder.missing()
    if longest_first is not None:
        todo = sorted(todo, key=longest_first, reverse=True)     # stable: equal costs keep their order
    if not todo:
        return SweepResult(folder.ordered_rows(), 0, False, 0.0)
    bar = tqdm(total=len(todo), desc="trials", unit="trial", disable=not progress, dynamic_ncols=True)
    try:
        if in_process(address, workers, scheduler):
            return _run_here(folder, main, todo, bar)
        return _run_on_ray(folder, main, todo, bar, address=address, workers=workers, scheduler=scheduler,
                           metric=metric, max_failures=max_failures)
    finally:
        bar.close()


def _run_here(folder: SweepFolder, main, todo: list[Trial], bar) -> SweepResult:
    """The trials one after another in this process, with this process's threads (the serial path: what a
    user without Ray gets). Ctrl-C stops the sweep; the trial it interrupted keeps its checkpoint."""
    t0, interrupted = time.perf_counter(), False
    for trial in todo:
        attempt = _Attempt(folder, trial)
        bar.set_postfix_str(f"running {trial.name}")
        try:
            exit_code = _call(main, attempt.argv, attempt.log_path)
        except KeyboardInterrupt:
            attempt.clock.tick()
            interrupted = True
            break
        except Exception as e:           # a bug in the command: the trial's row says so, the sweep goes on
            attempt.clock.tick()
            folder.record(_row(trial, "error", {}, error=_one_line(e)))
        else:
            if exit_code == 130:         # the command caught Ctrl-C itself (train: "interrupted; continue …")
                attempt.clock.tick()
                interrupted = True
                break
            result = attempt.row(exit_code, None)
            folder.record(_row(trial, _status(result), result))
        bar.update(1)
    rows = folder.ordered_rows()
    return SweepResult(rows, len(todo), interrupted, time.perf_counter() - t0)


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0][:300]


def _run_on_ray(folder: SweepFolder, main, todo: list[Trial], bar, *, address, workers, scheduler, metric,
                max_failures) -> SweepResult:
    try:
        import ray                 # lazy: Ray is the optional `sweep` extra
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    t0 = time.perf_counter()
    wait_ray_stopped()             # the Ray of this process's last sweep, if it is still stopping
    started = not ray.is_initialized()
    if started:
        _start_ray(address, workers)
    try:
        if scheduler is None:
            interrupted = _run_tasks(folder, main, todo, bar, workers=workers, max_failures=max_failures)
        else:
            interrupted = _run_tune(folder, main, todo, bar, workers=workers, scheduler=scheduler, metric=metric,
                                    max_failures=max_failures)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if started:
            _stop_ray_soon()
    return SweepResult(folder.ordered_rows(), len(todo), interrupted, time.perf_counter() - t0)


def _run_tasks(folder: SweepFolder, main, todo: list[Trial], bar, *, workers, max_failures) -> bool:
    """The trials as Ray tasks, ``workers`` at a time (default: one per CPU of the cluster), in ``todo``'s order;
    each row written as its trial ends. Whether the sweep was interrupted (Ctrl-C)."""
    import ray   # lazy: optional extra
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    at_once = workers or cpus
    # SPREAD: on a cluster, the trials go to every node rather than filling the first; a task whose worker
    # dies runs again (max_retries), a task whose command raised does not (a bug: its row says so)
    task = ray.remote(trial_task).options(num_cpus=1, max_retries=max_failures, scheduling_strategy="SPREAD")
    sweep_dir = str(folder.path.resolve())
    # One trial queued behind each running one when the cluster's CPUs are what keeps the rest waiting: Ray
    # hands it to the worker that ends a trial at once (the same lease), rather than after this loop has
    # recorded the row and submitted another (20-60 ms a trial here, more on a busy machine). Still in todo's
    # order: Ray runs one driver's tasks first in, first out. With fewer workers than CPUs, this loop's count
    # is the limit.
    in_flight = 2 * at_once if at_once >= cpus else at_once
    waiting, running, failed = list(todo), {}, 0
    # Ctrl-C: the trials still running are not cancelled here (cancelling a task as it completes crashed
    # Ray's core worker: 'Tried to complete task that was not pending', 1 run in 4); stopping the Ray the sweep
    # started ends them, as Ray ends a finished driver's tasks on a cluster joined with --address, and each
    # keeps its last epoch's checkpoint.
    while waiting or running:
        while waiting and len(running) < in_flight:
            trial = waiting.pop(0)
            running[task.remote(main, sweep_dir, folder.command, asdict(trial))] = trial
        bar.set_postfix_str(f"running {min(len(running), at_once)}, failed {failed}")
        done, _ = ray.wait(list(running), num_returns=1)
        for ref in done:
            trial = running.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as e:      # the command raised
                row = _row(trial, "error", {}, error=_one_line(e.cause or e))
            except ray.exceptions.RayError as e:          # its worker died more than max_failures times
                row = _row(trial, "error", {}, error=_one_line(e))
            else:
                if result.get("exit_code") == 130:        # the command caught Ctrl-C itself: no result
                    return True
                row = _row(trial, _status(result), result)
            folder.record(row)
            failed += row["status"] in ("failed", "error")
            bar.update(1)
    return False


def _run_tune(folder: SweepFolder, main, todo: list[Trial], bar, *, workers, scheduler, metric,
              max_failures) -> bool:
    """The trials on Ray Tune, under ``scheduler`` (which reads their epochs and stops the weak ones)."""
    from ray import tune   # lazy: optional extra
    tune_log = logging.getLogger("ray.tune")
    level, tune_log.level = tune_log.level, logging.CRITICAL   # a failed trial is a row of the table, not a traceback
    try:
        sched = tune.schedulers.ASHAScheduler(time_attr="epoch", metric=metric, mode="max", grace_period=1)
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, main=main, sweep_dir=str(folder.path.resolve()),
                                 command=folder.command), {"cpu": 1})
        attempt = len(list((folder.path / ".tune").glob("run-*"))) + 1 if (folder.path / ".tune").exists() else 1
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([asdict(t) for t in todo])},
            tune_config=tune.TuneConfig(max_concurrent_trials=workers, scheduler=sched,
                                        reuse_actors=False,   # a stopped trial's process must end
                                        trial_name_creator=lambda t: t.config["trial"]["name"],
                                        trial_dirname_creator=lambda t: t.config["trial"]["name"]),
            run_config=tune.RunConfig(
                name=f"run-{attempt}", storage_path=str((folder.path / ".tune").resolve()), verbose=0,
                failure_config=tune.FailureConfig(max_failures=max_failures),
                callbacks=[_tune_callback(folder, bar)]))
        grid = tuner.fit()
        return len(folder.missing()) > 0 and grid is not None and _was_interrupted(grid)
    finally:
        tune_log.setLevel(level)


def _was_interrupted(grid) -> bool:
    """Tune ends ``fit`` quietly after Ctrl-C; trials it never finished have no result then."""
    return any(r.metrics is None or not r.metrics.get("finished") and r.error is None for r in grid)


def _start_ray(address: str | None, workers: int | None) -> None:
    import ray   # lazy: optional extra
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")   # Tune's status tables would fight the progress bar
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # No runtime_env (it would keep Ray from using the workers it starts with: ~1.5 s more per sweep here);
    # each trial sets its own threads.
    kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    if address is None:
        cpus = os.cpu_count() or 1
        # trials share files, not objects; the workers run at this command's priority, as the trials would one
        # after another in this process (Ray's default is nice 15: beside any other busy process on the
        # machine, a trial then got a small fraction of a core). Ray's worker_niceness is added to the niceness a
        # worker inherits from this process (as Ray's job manager sets it, 0 keeps it)
        kwargs.update(num_cpus=cpus, object_store_memory=80 * 2**20, _system_config={"worker_niceness": 0})
    try:
        with contextlib.redirect_stderr(_stdio.StringIO()):
            if address is not None:
                _token_auth_as_ray_start()
            # "local": a new Ray in this process, never a cluster that $RAY_ADDRESS or a stale
            # /tmp/ray/ray_current_cluster names (a dead one there made every sweep fail)
            ray.init(address=address or "local", **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise ConfigError(f"cannot reach a Ray cluster at {address}: {str(e).splitlines()[0]}") from None


def _token_auth_as_ray_start() -> None:
    """Joining a cluster, use token authentication when ``ray start`` would: Ray 2.60's ``ray start`` turns it on
    whenever a token exists and ``$RAY_AUTH_MODE`` is unset (``~/.ray/auth_token``, which any local ``ray.init()``
    leaves behind), but ``ray.init(address=...)`` does not look for one, and was refused (``InvalidAuthToken``) by
    the very cluster ``ray start`` had made on the same machine. ``$RAY_AUTH_MODE`` set by the user is left alone."""
    try:
        from ray._private.authentication.authentication_token_setup import (   # Ray's own rule (private: a
            maybe_enable_token_auth_if_token_available)                        # Ray without it has no tokens)
    except ImportError:
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _stop_ray() -> None:
    """``ray.shutdown()`` of the Ray this process started, its autoscaler monitor first. Ray stops the GCS
    before the monitor, which, told to stop, then waits on the dead GCS until Ray kills it one second later:
    1.0 of shutdown's 1.4 s here. A Ray inside one process has nothing to autoscale, so the monitor is killed
    at once while the GCS still runs (what Ray does to it after that second anyway)."""
    import ray   # lazy: optional extra
    node = getattr(ray._private.worker, "_global_node", None)   # Ray's own handle on the processes it started
    if node is not None and getattr(node, "head", False):
        try:
            node.kill_monitor(check_alive=False)
        except Exception:            # another Ray version's internals: shutdown below still stops everything
            pass
    ray.shutdown()


_stopping: list[threading.Thread] = []   # the Ray a sweep started, stopping while the sweep's caller goes on


def _stop_ray_soon() -> None:
    """:func:`_stop_ray` in a thread: a sweep returns its rows while Ray stops (~0.4 s here, most of it waiting
    on Ray's processes to end), so that its caller writes the sweep's table and figure meanwhile. The process
    waits for it before it exits (not a daemon thread); :func:`wait_ray_stopped` waits for it."""
    thread = threading.Thread(target=_stop_ray, name="deepscope-stop-ray")
    thread.start()
    _stopping.append(thread)


def wait_ray_stopped() -> None:
    """Return once the Ray that a sweep of this process started has stopped (at once if none is stopping)."""
    while _stopping:
        _stopping.pop().join()


# --------------------------------------------------------------------------------------------------- summary

def records(folder: SweepFolder) -> list[dict]:
    """Every metrics record (epoch, or cell of ``scope compare``) of every finished trial, with the trial's
    options, seed and status: for commands whose run holds several results, not only its best."""
    out = []
    for t in folder.trials:
        row = folder.rows.get(t.name, {})
        if row.get("status") in FINAL:
            out += [{**r, "options": t.options, "seed": t.seed, "status": row["status"]}
                    for r in _run_metrics(folder.run_dir(t))]
    return out


def summarize(rows: list[dict], keys: list[str], metric: str) -> list[dict]:
    """Mean, standard deviation, min and max of ``metric`` over seeds, for each configuration (``keys`` are
    swept options, or fields of the rows themselves)."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        if r.get("status") in FINAL and r.get(metric) is not None:
            config = tuple(r.get("options", {}).get(k, r.get(k)) for k in keys)
            groups.setdefault(config, []).append(float(r[metric]))
    out = []
    for config, values in groups.items():
        v = np.array(values)
        out.append({**dict(zip(keys, config)), "n": len(v), "mean": float(v.mean()), "std": float(v.std()),
                    "min": float(v.min()), "max": float(v.max())})
    return out


def write_figure(folder: SweepFolder, metric: str) -> Path | None:
    """``sweep.png``: ``metric`` against the swept options, mean and band over seeds (None: nothing to plot)."""
    summary = summarize(list(folder.rows.values()), folder.keys, metric)
    if not summary:
        return None
    return figures.plot_sweep(summary, folder.keys, metric, folder.path / "sweep.png")


def format_summary(rows: list[dict], keys: list[str], metric: str) -> list[str]:
    """One line per configuration: ``metric`` as mean ± standard deviation over its seeds, and the count."""
    lines = []
    for s in summarize(rows, keys, metric):
        config = " ".join(f"{k}={s[k]}" for k in keys) or "(no swept options)"
        lines.append(f"  {config:40s} {metric} {s['mean']:.4f} ± {s['std']:.4f}  (n={s['n']}, "
                     f"min {s['min']:.4f}, max {s['max']:.4f})")
    return lines
