"""``deepscope report RUN [RUN ...] [--out FILE]``: one self-contained HTML page of runs of any kind."""
from __future__ import annotations

import argparse
import time

from ..report import write_report

EPILOG = """examples:
  deepscope report runs/train-20261127-101500            writes runs/train-20261127-101500/report.html
  deepscope report runs/book-ch6-all --out ladder.html   every rung of a ladder run, side by side
  deepscope report runs/sweep-20261127-113000            a sweep: its trials table and metric per option
"""


def register(sub) -> None:
    p = sub.add_parser(
        "report", help="one self-contained HTML page of runs: curves, speed of learning, filters, errors",
        description="Write one HTML file (no network needed to open it: mail it, open it from disk) showing "
                    "what the runs recorded: config and the command that makes each again, accuracy and loss per "
                    "epoch, layer × step heatmaps of the speed of learning and of ‖ΔW‖/‖W‖, saturated and dead "
                    "units, first-layer filters and their change from initialisation, misclassified test "
                    "images and the confusion matrix, a text model's sample, an experiment's results, a sweep's "
                    "trials. Several runs: side by side.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run folders (of train, book ch6, rnn, scope, sweep); a folder of runs stands for them all")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="the HTML file (default: RUN/report.html for one run, ./report.html for several); an "
                        "existing file is replaced only if it is a deepscope report")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    t0 = time.perf_counter()
    out = write_report(args.runs, args.out)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s); "
          f"open it in a browser")
    return 0
