"""What ``--report`` costs a training run: the live HTML report and the learning-speed recorder it turns on.

    python benchmarks/report_overhead.py [--train-size 50000] [--epochs 1] [--repeats 3] [--data-dir DIR]

The default net of ``deepscope train`` (two conv-pool layers, ReLU, m = 32, momentum 0.9) is trained by ``fit``
into a run folder, alternating three arms, each from the same seed, medians over ``--repeats``:

    bare       fit with no callback (no progress bar)
    recorder   + the learning-speed recorder, every 100 steps (what --report records)
    report     + the recorder and the live report (rewritten every epoch and every 1,000 steps, and a final
               page with the test-set pass at the end): everything --report adds

Besides wall time (noisy on a shared machine), the seconds spent inside the report's own calls are summed in
the ``report`` arm: their share of that arm's time is the cost of writing the report, whatever else the
machine is doing. Writes ``benchmarks/results/report_overhead.json``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import machine, write_json

from deepscope import arch, backend, nn, optim
from deepscope.data import load_mnist
from deepscope.report import LiveReport
from deepscope.runs import Run
from deepscope.scope import LearningSpeedRecorder
from deepscope.train import fit

ARCH = "conv20x5-maxpool2-conv40x5-maxpool2-fc100-softmax10:relu"


class Timed:
    """Wraps a callback, summing the seconds spent in its methods."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0
        for name in ("on_before_step", "on_step", "on_record", "on_fit_end"):
            if hasattr(inner, name):
                setattr(self, name, self._wrap(getattr(inner, name)))

    def _wrap(self, fn):
        def call(*args):
            t0 = time.perf_counter()
            fn(*args)
            self.seconds += time.perf_counter() - t0
        return call


def train(data, train_size, epochs, arm, folder: Path):
    backend.manual_seed(0)
    model = arch.build(ARCH, init="he")
    X, y = data.train[0][:train_size], data.train[1][:train_size]
    opt = optim.SGD(model.parameters(), lr=0.03, momentum=0.9, weight_decay=optim.book_weight_decay(0.1, len(X)))
    run = Run.create(folder / f"{arm}-{time.monotonic_ns()}", "train")
    run.write_config({"arch": ARCH, "epochs": epochs, "batch_size": 32, "eta": 0.03, "momentum": 0.9, "lmbda": 0.1,
                      "optimizer": "sgd", "init": "he", "seed": 0, "dataset": "mnist", "n_train": len(X),
                      "data_source": data.source}, "deepscope train")
    callbacks, live = [], None
    if arm in ("recorder", "report"):
        callbacks.append(LearningSpeedRecorder(model, every=100, run_dir=run.path))
    if arm == "report":
        live = Timed(LiveReport(run.path, every=1000))
        callbacks.append(live)
    t0 = time.perf_counter()
    with run:
        fit(model, nn.LogLikelihoodCost(), opt, (X, y), epochs=epochs, batch_size=32, validation=data.validation,
            test=data.test, run=run, callbacks=callbacks)
    seconds = time.perf_counter() - t0
    return seconds, (live.seconds if live else 0.0), (live.inner.writes if live else 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-size", type=int, default=50_000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    data = load_mnist(data_dir=args.data_dir)
    arms = ("bare", "recorder", "report")
    seconds = {a: [] for a in arms}
    inside, writes = [], 0
    with tempfile.TemporaryDirectory() as tmp:
        train(data, 2000, 1, "report", Path(tmp))          # warm-up: imports, the Vega bundle, caches
        for r in range(args.repeats):
            for arm in arms:
                s, ins, w = train(data, args.train_size, args.epochs, arm, Path(tmp))
                seconds[arm].append(s)
                if arm == "report":
                    inside.append(ins)
                    writes = w
                print(f"repeat {r + 1}: {arm:8s} {s:7.1f} s" + (f"  (report writing {ins:.2f} s, {w} writes)"
                                                                 if arm == "report" else ""), flush=True)
    med = {a: statistics.median(v) for a, v in seconds.items()}
    share = statistics.median(i / s for i, s in zip(inside, seconds["report"]))
    result = {
        "benchmark": "report_overhead", "arch": ARCH, "train_size": args.train_size, "epochs": args.epochs,
        "repeats": args.repeats, "seconds": seconds, "median_seconds": med,
        "report_writing_seconds": inside, "report_writes_per_run": writes,
        "report_writing_share_median": share,
        "wall_overhead_recorder": med["recorder"] / med["bare"] - 1,
        "wall_overhead_report": med["report"] / med["bare"] - 1,
        "omp_threads": os.environ.get("OMP_NUM_THREADS"), "machine": machine(),
        "command": f"python benchmarks/report_overhead.py --train-size {args.train_size} --epochs {args.epochs} "
                   f"--repeats {args.repeats}",
    }
    print(f"median: bare {med['bare']:.1f} s, + recorder {med['recorder']:.1f} s "
          f"({result['wall_overhead_recorder']:+.1%}), + recorder + live report {med['report']:.1f} s "
          f"({result['wall_overhead_report']:+.1%}); writing the report: {share:.2%} of the run "
          f"({writes} writes per run)")
    write_json("report_overhead.json", result)


if __name__ == "__main__":
    main()
