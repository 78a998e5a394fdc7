"""What Ray costs a sweep on this machine: starting Ray, and the time it adds to every trial.

    python benchmarks/sweep_overhead.py [--trials 20] [--repeats 3]

* start-up: ``ray.init`` as ``deepscope sweep`` makes it (local, no dashboard); shut-down, alternating: Ray's own
  ``ray.shutdown`` and the sweep's (``sweep._stop_ray``: the autoscaler monitor first), medians;
* to the first trial: with Ray running, from the start of a sweep to its first trial's command (a worker taking
  the trial's task: what a sweep waits for after ``ray.init``);
* per trial, empty: a sweep of ``--trials`` trials whose command returns at once, on Ray with 2 workers (Ray
  already running: the task's round trip, the worker, the sweep's table) and in this process
  (``--workers 1``: the sweep's own bookkeeping only);
* per trial, real: ``--trials`` short ``deepscope train`` runs (the shipped MNIST sample) through the sweep on
  Ray with 2 workers, through the sweep in this process (``--workers 1``), and called one after another
  directly: wall time per trial of each.

Prints a table and writes benchmarks/results/sweep_overhead.json.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.update({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})  # as in a trial
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median, table, write_json  # noqa: E402

import ray  # noqa: E402

from deepscope import sweep  # noqa: E402
from deepscope.cli import main  # noqa: E402
from deepscope.data import mnist as mnist_module  # noqa: E402

TRAIN = ["train", "--arch", "784-30-10:sigmoid", "--epochs", "1", "-m", "10", "--momentum", "0",
         "--schedule", "none", "--train-size", "1000", "--quiet"]


def nothing(argv) -> int:
    """A command that does nothing (but note when it ran, beside its run folder): what is left of a trial's time
    is the sweep's own."""
    with open(Path(argv[-1]).parent / "started.txt", "a") as f:
        f.write(f"{time.time()}\n")
    return 0


def timed_sweep(root: Path, name: str, command, fn, trials: int, workers: int) -> tuple[float, float | None]:
    """The sweep's wall time, and (for ``nothing``) the seconds from its start to its first trial's command."""
    folder = sweep.SweepFolder.create(root / name, command, sweep.expand(seeds=trials))
    t0, start = time.perf_counter(), time.time()
    result = sweep.run(folder, fn, workers=workers, progress=False)
    seconds = time.perf_counter() - t0
    assert all(r["status"] == "done" for r in result.rows) and len(result.rows) == trials, result.rows
    started = folder.path / "started.txt"
    first = min(float(t) for t in started.read_text().split()) - start if started.exists() else None
    return seconds, first


def main_(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="sweep-overhead-"))
    try:
        starts, stops = [], {"ray": [], "sweep": []}
        for _ in range(args.repeats):
            for how, stop in (("ray", ray.shutdown), ("sweep", sweep._stop_ray)):
                t0 = time.perf_counter()
                sweep._start_ray(None, None)
                t1 = time.perf_counter()
                stop()
                starts.append(t1 - t0)
                stops[how].append(time.perf_counter() - t1)

        data = mnist_module.write_sample_folder(root / "data")
        command = [*TRAIN, "--data-dir", str(data)]
        empty = {1: [], 2: []}
        first = []
        real = {1: [], 2: []}
        direct = []
        for k in range(args.repeats):
            sweep._start_ray(None, None)     # started once per repeat: the 2-worker sweeps below join it
            for w in (2, 1):
                seconds, to_first = timed_sweep(root, f"empty-{w}-{k}", ["nothing"], nothing, args.trials, w)
                empty[w].append(seconds)
                if w == 2:
                    first.append(to_first)
                real[w].append(timed_sweep(root, f"real-{w}-{k}", command, main, args.trials, w)[0])
            sweep._stop_ray()
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                for s in range(args.trials):   # (a trial's output goes to its log file, not the terminal)
                    assert main([*command, "--seed", str(s), "--out", str(root / f"direct-{k}" / str(s))]) == 0
            direct.append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    n = args.trials
    rows = [
        {"what": "ray.init (local, no dashboard)", "seconds": median(starts)},
        {"what": "ray.shutdown (Ray's own)", "seconds": median(stops["ray"])},
        {"what": "shutdown as a sweep makes it (monitor first)", "seconds": median(stops["sweep"])},
        {"what": "Ray running: sweep start to first trial, 2 workers", "seconds": median(first)},
        {"what": "per empty trial, Ray, 2 workers", "seconds": median(empty[2]) / n},
        {"what": "per empty trial, in this process (--workers 1)", "seconds": median(empty[1]) / n},
        {"what": "per train trial, Ray, 2 workers (wall / trials)", "seconds": median(real[2]) / n},
        {"what": "per train trial, in this process (--workers 1)", "seconds": median(real[1]) / n},
        {"what": "per train trial, called directly in one process", "seconds": median(direct) / n},
    ]
    print(f"Ray {ray.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
          f"(the machine is shared: numbers are noisy); {n} trials, medians of {args.repeats}")
    print(table(rows, ["what", "seconds"]))
    write_json("sweep_overhead.json", {
        "command": "python benchmarks/sweep_overhead.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "ray": ray.__version__, "cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
        "trials": n, "repeats": args.repeats, "train_command": TRAIN + ["--data-dir", "<the shipped sample>"],
        "rows": rows, "raw": {"ray_init": starts, "ray_shutdown": stops["ray"], "sweep_shutdown": stops["sweep"],
                              "to_first_trial": first, "empty_in_process": empty[1],
                              "empty_ray_2_workers": empty[2], "train_in_process": real[1],
                              "train_ray_2_workers": real[2], "train_direct": direct}})


if __name__ == "__main__":
    main_()
