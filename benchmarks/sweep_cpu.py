"""CPU seconds of every process a command starts (a sweep's driver, Ray's daemons, its workers), by kind.

    python benchmarks/sweep_cpu.py [--interval 0.25] [--name sweep_cpu.json] -- COMMAND [ARGS]
    e.g. python benchmarks/sweep_cpu.py -- deepscope scope compare --seeds 5 --workers 2 --quiet \\
             --data-dir ../shared/data/mnist --out /tmp/s

Wall time on a shared 2-core machine moves with the other users' load; the CPU seconds a process spends move
far less, so this is how a sweep's cost is compared while the machine is busy: the command runs as a child,
every ``--interval`` seconds the user + system time of each process descended from it is read from
``/proc/PID/stat`` (the last reading kept: a process that ends between two readings loses at most one
interval), and the total per kind of process (``deepscope`` the driver or a serial run, ``default_worker`` Ray's
workers and raylet, ``gcs_server``, ``dashboard``, ``log_monitor``, ...) is printed and written to
benchmarks/results/NAME. Linux only.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table, write_json  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
KINDS = ("default_worker", "ray::", "gcs_server", "dashboard/agent", "dashboard.py", "log_monitor", "monitor.py",
         "runtime_env/agent", "raylet", "deepscope")   # the first that the command line holds names the kind


def stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process, None if it has ended."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def kind(pid: int) -> str:
    try:
        line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "?"
    return next((k for k in KINDS if k in line), Path(line.split(" ")[0]).name or "?")


def account(command: list[str], interval: float) -> tuple[float, int, dict]:
    """Run ``command``; its wall seconds, exit code and {pid: [kind, CPU seconds]} of its process tree."""
    t0 = time.perf_counter()
    child = subprocess.Popen(command)
    tree, cpu = {child.pid}, {}
    while True:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            s = stat(pid)
            if s is None:
                continue
            if pid not in tree and s[0] in tree:
                tree.add(pid)
            if pid in tree:
                entry = cpu.setdefault(pid, [kind(pid), 0.0])
                entry[1] = max(entry[1], s[1])
        if child.poll() is not None:
            return time.perf_counter() - t0, child.returncode, cpu
        time.sleep(interval)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        sys.exit("usage: python benchmarks/sweep_cpu.py [--interval S] [--name NAME] -- COMMAND [ARGS]")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interval", type=float, default=0.25)
    ap.add_argument("--name", default="sweep_cpu.json")
    args = ap.parse_args(argv[:argv.index("--")])
    command = argv[argv.index("--") + 1:]
    load0 = os.getloadavg()[0]
    wall, code, cpu = account(command, args.interval)
    kinds: dict[str, list] = {}
    for k, seconds in cpu.values():
        kinds.setdefault(k, [0, 0.0])
        kinds[k][0] += 1
        kinds[k][1] += seconds
    rows = [{"kind": k, "processes": n, "CPU s": s} for k, (n, s) in sorted(kinds.items(), key=lambda x: -x[1][1])]
    rows.append({"kind": "all", "processes": len(cpu), "CPU s": sum(s for _, s in cpu.values())})
    print(f"wall {wall:.1f} s, exit code {code}, load average {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    print(table(rows, ["kind", "processes", "CPU s"]))
    write_json(args.name, {"command": command, "wall_s": wall, "exit_code": code, "cpu_count": os.cpu_count(),
                           "load_average_1min": [load0, os.getloadavg()[0]], "rows": rows})
    sys.exit(code)


if __name__ == "__main__":
    main()
