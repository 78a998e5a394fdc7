"""Size and generation time of the HTML report of a 60-epoch chapter 6 ladder run.

    python benchmarks/report_size.py [--rung conv] [--epochs 60] [--train-size 1000] [--every 2] [--data-dir DIR]

Trains one rung of the ladder with the book's settings (``deepscope.book.ch6``: architecture, η, λ, m; fit's
protocol) for ``--epochs`` epochs into a temporary run folder, with the learning-speed recorder on every
``--every`` steps; ``--train-size`` cuts the training set so that the run takes minutes while the report holds
as many speed records as a full-size run recording every 100 steps (60 epochs × 5,000 steps / 100 = 3,000).
Then writes the report twice: cold (a fresh process's first report, which builds the Vega JavaScript bundle)
and warm, and records the size of the file and of its parts. Writes ``benchmarks/results/report_size.json``.
"""
from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

from common import write_json

from deepscope import arch, backend, nn, optim
from deepscope.book import ch6
from deepscope.report import write_report
from deepscope.runs import Run
from deepscope.scope import LearningSpeedRecorder
from deepscope.train import ProgressBar, fit


def train_rung(out: Path, rung_name: str, epochs: int, train_size: int, every: int, data_dir, seed: int = 0):
    rung = ch6.get_rung(rung_name)
    train, validation, test, source = ch6.load_data(data_dir, train_size, None)
    backend.manual_seed(seed)
    model = arch.build(rung.arch)
    n_batches = len(train[0]) // rung.mini_batch_size
    opt = optim.SGD(model.parameters(), lr=rung.eta, weight_decay=rung.lmbda / n_batches)
    with Run.create(out / f"{rung.name}-1") as run:
        run.write_config({"rung": rung.name, "arch": rung.arch, "epochs": epochs, "seed": seed, "quirks": False,
                          "n_train": len(train[0]), "train_size": len(train[0]), "data_source": source,
                          "eta": rung.eta, "lmbda": rung.lmbda, "mini_batch_size": rung.mini_batch_size},
                         "deepscope book ch6")
        rec = LearningSpeedRecorder(model, every=every, run_dir=run.path)
        fit(model, nn.LogLikelihoodCost(), opt, train, epochs=epochs, batch_size=rung.mini_batch_size,
            validation=validation, test=test, run=run, callbacks=[ProgressBar(), rec])
        rec.remove()
        return run.path, len(rec.history)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rung", default="conv")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--train-size", type=int, default=1000)
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run, records = train_rung(Path(tmp), args.rung, args.epochs, args.train_size, args.every, args.data_dir)
        train_seconds = time.perf_counter() - t0
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            out = write_report([run], Path(tmp) / "report.html")
            times.append(time.perf_counter() - t0)
        html = out.read_text(encoding="utf-8")
        specs = re.search(r'id="deepscope-specs">(.*?)</script>', html, re.S).group(1)
        images = sum(len(m) for m in re.findall(r'data:image/png;base64,[A-Za-z0-9+/=]+', html))
        js = re.search(r'<script>(.*?)</script>', html, re.S).group(1)
        result = {
            "benchmark": "report_size", "rung": args.rung, "epochs": args.epochs, "train_size": args.train_size,
            "speed_every": args.every, "speed_records": records, "train_seconds": train_seconds,
            "report_bytes": len(html.encode("utf-8")), "chart_data_bytes": len(specs.encode("utf-8")),
            "vega_javascript_bytes": len(js.encode("utf-8")), "image_bytes": images,
            "seconds_cold": times[0], "seconds_warm": times[1],
            "command": f"python benchmarks/report_size.py --rung {args.rung} --epochs {args.epochs} "
                       f"--train-size {args.train_size} --every {args.every}",
        }
    print(f"{args.rung}, {args.epochs} epochs, {records} speed records: report {result['report_bytes'] / 1e6:.2f} MB "
          f"(Vega JS {result['vega_javascript_bytes'] / 1e6:.2f} MB, chart data {result['chart_data_bytes'] / 1e6:.2f} MB, "
          f"images {images / 1e3:.0f} kB); written in {times[0]:.1f} s cold, {times[1]:.1f} s warm")
    write_json("report_size.json", result)


if __name__ == "__main__":
    main()
