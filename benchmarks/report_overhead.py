"""What ``--report`` costs a training run: the live HTML report and the learning-speed recorder it turns on.

    python benchmarks/report_overhead.py [--train-size 50000] [--epochs 1] [--repeats 3] [--data-dir DIR]

The default net of ``deepscope train`` (two conv-pool layers, ReLU, m = 32, momentum 0.9) is trained by ``fit``
into a run folder, alternating three arms, each from the same seed, medians over ``--repeats``:

    bare       fit with no callback (no progress bar)
    recorder   + the learning-speed recorder, every 100 steps (what --report records)
    report     + the recorder and the live report (rewritten every epoch and every 1,000 steps, and a final
               page with the test-set pass at the end): everything --report adds

Besides wall time (noisy on a shared machine), the seconds spent inside the callbacks' own calls are summed
in the ``report`` arm, apart: the recorder's, the live page's while training (every epoch, every 1,000 steps)
and the final page's (after the last epoch: a pass over the test set for the confusion matrix). Their share of
the bare arm's time is what each adds, whatever else the machine is doing.
Writes ``benchmarks/results/report_overhead.json``.
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
from deepscope.report import live_callbacks
from deepscope.runs import Run
from deepscope.train import fit

ARCH = "conv20x5-maxpool2-conv40x5-maxpool2-fc100-softmax10:relu"


class Timed:
    """Wraps a callback, summing the seconds spent in each of its methods."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, {}
        for name in ("on_fit_start", "on_before_step", "on_step", "on_epoch_end", "on_record", "on_fit_end"):
            if hasattr(inner, name):
                setattr(self, name, self._wrap(name, getattr(inner, name)))

    def _wrap(self, name, fn):
        def call(*args):
            t0 = time.perf_counter()
            out = fn(*args)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
            return out
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
    callbacks = [Timed(c) for c in live_callbacks(model, run.path, every=1000, speed_every=100,
                                                  test=(*data.test, data.classes))]
    callbacks = {"bare": [], "recorder": callbacks[:1], "report": callbacks}[arm]
    t0 = time.perf_counter()
    with run:
        fit(model, nn.LogLikelihoodCost(), opt, (X, y), epochs=epochs, batch_size=32, validation=data.validation,
            test=data.test, run=run, callbacks=callbacks)
    seconds = time.perf_counter() - t0
    inside = {"recorder": sum(callbacks[0].seconds.values()) if callbacks else 0.0}
    if arm == "report":
        live = callbacks[1].seconds
        inside.update(live_training=live.get("on_step", 0.0) + live.get("on_record", 0.0),
                      live_final=live.get("on_fit_end", 0.0), writes=callbacks[1].inner.writes)
    return seconds, inside


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
    inside = []
    with tempfile.TemporaryDirectory() as tmp:
        train(data, 2000, 1, "report", Path(tmp))          # warm-up: imports, the Vega bundle, caches
        for r in range(args.repeats):
            for arm in arms:
                s, ins = train(data, args.train_size, args.epochs, arm, Path(tmp))
                seconds[arm].append(s)
                if arm == "report":
                    inside.append(ins)
                print(f"repeat {r + 1}: {arm:8s} {s:7.1f} s  {ins}", flush=True)
    med = {a: statistics.median(v) for a, v in seconds.items()}
    share = {k: statistics.median(i[k] / b for i, b in zip(inside, seconds["bare"]))
             for k in ("recorder", "live_training", "live_final")}
    result = {
        "benchmark": "report_overhead", "arch": ARCH, "train_size": args.train_size, "epochs": args.epochs,
        "repeats": args.repeats, "seconds": seconds, "median_seconds": med, "inside_report_arm": inside,
        "share_of_bare_median": share,
        "wall_overhead_recorder": med["recorder"] / med["bare"] - 1,
        "wall_overhead_report": med["report"] / med["bare"] - 1,
        "omp_threads": os.environ.get("OMP_NUM_THREADS"), "machine": machine(),
        "command": f"python benchmarks/report_overhead.py --train-size {args.train_size} --epochs {args.epochs} "
                   f"--repeats {args.repeats}",
    }
    print(f"median wall: bare {med['bare']:.1f} s, + recorder {med['recorder']:.1f} s "
          f"({result['wall_overhead_recorder']:+.1%}), + recorder + live report {med['report']:.1f} s "
          f"({result['wall_overhead_report']:+.1%})")
    print(f"inside the callbacks, as a share of the bare run: recorder {share['recorder']:.2%}, live page while "
          f"training {share['live_training']:.2%}, final page {share['live_final']:.2%}")
    write_json("report_overhead.json", result)


if __name__ == "__main__":
    main()
