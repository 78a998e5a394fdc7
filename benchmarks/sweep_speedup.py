"""The chapter 5 comparison grid over seeds: on 2 local Ray workers against the same grid serially.

    python benchmarks/sweep_speedup.py [--seeds 5] [--repeats 1] [--runs serial,serial1,ray[,started]]
                                       [--data-dir ../shared/data/mnist] [-- OPTIONS]

Runs, alternating, each ``--repeats`` times, as a user types them (a fresh process each, Ray's start-up and
shut-down included where Ray is used):

* ``serial``: ``deepscope scope compare --seeds K --workers 1``: the trials one after another in one process,
  without Ray (what a user without Ray gets), with deepscope's default threads (all cores);
* ``serial, 1 thread``: the same with ``--threads 1`` (whichever serial run is faster is the baseline);
* ``ray, 2 workers``: ``deepscope scope compare --seeds K --workers 2``: Ray started inside the process, two
  trials at a time, one thread each;
* ``ray started, 2 workers`` (``--runs ...,started``; not a default): the same with ``--address``, joining a Ray
  that this script starts once beforehand (``ray start --head --num-cpus 2``) and stops at the end: what a sweep
  costs without Ray's start-up.

Every run must give the same table (``compare.md``). Options after ``--`` go to every run (e.g. ``--steps
3000``). Besides the wall time of each run, the sum of its trials' seconds (``trials.json``: each trial's
command, timed inside the process that ran it) and what the run spent outside its trials: wall minus that sum
over the trials run at a time (1 or 2): start-up, Ray's start and stop, the table and figure, and, for Ray,
a worker waiting for the other at the end. Prints a table and writes benchmarks/results/sweep_speedup.json
(``--name`` changes the name).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, median, table, write_json  # noqa: E402


def variants(seeds: int, data_dir: str, extra: list[str], address: str) -> dict:
    base = ["deepscope", "scope", "compare", "--seeds", str(seeds), "--data-dir", data_dir, "--quiet", *extra]
    return {"serial": base + ["--workers", "1"], "serial, 1 thread": base + ["--workers", "1", "--threads", "1"],
            "ray, 2 workers": base + ["--workers", "2"],
            "ray started, 2 workers": base + ["--workers", "2", "--address", address]}


AT_A_TIME = {"serial": 1, "serial, 1 thread": 1, "ray, 2 workers": 2, "ray started, 2 workers": 2}
SHORT = {"serial": "serial", "serial1": "serial, 1 thread", "ray": "ray, 2 workers",
         "started": "ray started, 2 workers"}   # --runs names


@contextlib.contextmanager
def ray_head(needed: bool):
    """A Ray head node of 2 CPUs for the ``started`` run (``ray start --block``, stopped when its process ends:
    never ``ray stop``, which stops every Ray of the machine); its address."""
    if not needed:
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    head = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", "--head", "--port", str(port),
                             "--num-cpus", "2", "--include-dashboard=false", "--disable-usage-stats", "--block"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(8)                    # its start-up, not counted in any run
        yield f"127.0.0.1:{port}"
    finally:
        head.terminate()
        head.wait(60)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "mnist"))
    ap.add_argument("--name", default="sweep_speedup")
    ap.add_argument("--runs", default="serial,serial1,ray",
                    help="which runs, from serial, serial1 (serial at 1 thread), ray, started (Ray started "
                         "beforehand, joined with --address) (default: serial,serial1,ray)")
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    chosen = [SHORT[r] for r in args.runs.split(",") if r in SHORT]
    if not any(AT_A_TIME[c] == 1 for c in chosen) or "ray, 2 workers" not in chosen:
        ap.error("--runs: name ray and at least one of serial, serial1")
    times = {name: [] for name in chosen}
    trial_seconds = {name: [] for name in chosen}
    tables = {}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="sweep-speedup-") as root, \
            ray_head("ray started, 2 workers" in chosen) as address:
        runs = {name: cmd for name, cmd in variants(args.seeds, str(Path(args.data_dir).resolve()), extra,
                                                    address).items() if name in chosen}
        for k in range(args.repeats):
            for name, command in runs.items():
                out = Path(root) / f"{name.replace(' ', '').replace(',', '-')}-{k}"
                t0 = time.perf_counter()
                subprocess.run([*command, "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
                times[name].append(time.perf_counter() - t0)
                tables[name] = (out / "compare.md").read_text()
                trial_seconds[name].append(sum(r["seconds"] for r in json.loads((out / "trials.json").read_text())))
                load.append(os.getloadavg()[0])
                print(f"  {name}: {times[name][-1]:.1f} s (load average {load[-1]:.1f})", flush=True)
    same = len(set(tables.values())) == 1
    serial = min((n for n in runs if AT_A_TIME[n] == 1), key=lambda n: median(times[n]))
    rows = [{"run": name, "command": " ".join(cmd), "median s": median(times[name]),
             "trials s (sum)": median(trial_seconds[name]),
             "outside trials s": median([w - t / AT_A_TIME[name] for w, t in zip(times[name], trial_seconds[name])]),
             "speed-up": median(times[serial]) / median(times[name])} for name, cmd in runs.items()]
    print(f"{os.cpu_count()} CPUs, load average {min(load):.1f}-{max(load):.1f}; medians of {args.repeats}; "
          f"baseline: {serial}; tables identical: {same}")
    print(table(rows, ["run", "median s", "trials s (sum)", "outside trials s", "speed-up"]))
    write_json(f"{args.name}.json", {
        "command": "python benchmarks/sweep_speedup.py " + " ".join(argv), "cpu_count": os.cpu_count(),
        "load_average_1min": load, "seeds": args.seeds, "repeats": args.repeats, "baseline": serial,
        "tables_identical": same, "rows": rows, "raw": times, "raw_trial_seconds": trial_seconds})
    if not same:
        sys.exit("the runs gave different tables")


if __name__ == "__main__":
    main()
