"""A report that follows a run while it trains: a ``fit`` callback that rewrites the page.

    live = LiveReport(run_dir, every=1000)
    fit(model, cost, opt, train, epochs=30, batch_size=10, run_dir=run_dir, callbacks=[recorder, live])
    live.finish()                                          # the final page: no reloading, every panel

After every epoch (and every ``every`` optimizer steps, for the speed panels) the page is written again,
atomically, and reloads itself in the browser every ``refresh`` seconds. What needs a pass over the test set
(misclassified images, the confusion matrix) waits for :meth:`finish`.
"""
from __future__ import annotations

from pathlib import Path

from . import source
from .page import default_out, render
from .. import io


class LiveReport:
    """Rewrites ``out`` (default ``run_dir/report.html``) each epoch and every ``every`` steps (0: epochs only)."""

    def __init__(self, run_dir, out=None, every: int = 1000, refresh: int = 10):
        if every < 0:
            raise ValueError(f"LiveReport: every must be >= 0, got {every}")
        self.run_dir = Path(run_dir)
        self.out = Path(out) if out is not None else default_out([self.run_dir])
        self.every, self.refresh = int(every), int(refresh)
        self.pending: dict | None = None    # the epoch record fit has not written yet when it calls us
        self.writes = 0

    def write(self, live: bool = True) -> Path:
        run = source.open_run(self.run_dir)
        if self.pending is not None and all(r.get("epoch") != self.pending.get("epoch") for r in run.metrics):
            run.metrics.append(self.pending)
        html = render([run], live=live, refresh=self.refresh)
        io.atomic_write(self.out, lambda tmp: Path(tmp).write_text(html, encoding="utf-8"))
        self.writes += 1
        return self.out

    # -- deepscope.train.fit callbacks ---------------------------------------------------------------
    def on_step(self, step, model, optimizer) -> None:
        if self.every and step % self.every == 0 and (self.run_dir / "config.json").exists():
            self.write()

    def on_epoch_end(self, epoch, metrics) -> None:
        self.pending = dict(metrics)
        self.write()

    def finish(self) -> Path:
        """The final report: every panel, no reloading."""
        self.pending = None
        return self.write(live=False)
