"""A report that follows a run while it trains: a ``fit`` callback that rewrites the page.

    live = LiveReport(run.path, every=1000)
    fit(model, cost, opt, train, epochs=30, batch_size=10, run=run, callbacks=[ProgressBar(), recorder, live])

or ``callbacks=[ProgressBar(), *live_callbacks(model, run.path)]``, which is what ``--report`` adds to a
training command.

After every epoch is saved (and every ``every`` optimizer steps, for the speed panels) the page is written
again, atomically, and reloads itself in the browser every ``refresh`` seconds. What needs a pass over the test
set (misclassified images, the confusion matrix) waits for the end of training, when the final page (no
reloading) is written.
"""
from __future__ import annotations

from pathlib import Path

from .. import files
from ..scope import LearningSpeedRecorder
from . import source
from .page import default_out, render


class LiveReport:
    """Rewrites ``out`` (default ``run_dir/report.html``) each epoch and every ``every`` steps (0: epochs only).

    ``test``: the test set the command already holds, ``(X, y, class names)`` with X as the net reads it, for
    the final page's misclassified images and confusion matrix (without it they are read from the run's data).
    """

    def __init__(self, run_dir, out=None, every: int = 1000, refresh: int = 10, test=None):
        if every < 0:
            raise ValueError(f"LiveReport: every must be >= 0, got {every}")
        self.run_dir = Path(run_dir)
        self.out = Path(out) if out is not None else default_out([self.run_dir])
        self.every, self.refresh, self.test = int(every), int(refresh), test
        self.writes = 0

    def write(self, live: bool = True, refresh: int | None = None) -> Path:
        refresh = self.refresh if refresh is None else refresh
        html = render([source.open_run(self.run_dir)], live=live, refresh=refresh, test=self.test)
        files.atomic_write(self.out, html)
        self.writes += 1
        return self.out

    # -- deepscope.train.fit callbacks ---------------------------------------------------------------
    def on_step(self, step, model, optimizer) -> None:
        if self.every and step % self.every == 0:
            self.write()

    def on_record(self, epoch, record) -> None:
        self.write()

    def on_fit_end(self, history, stopped) -> None:
        if not history.records:
            return
        if isinstance(stopped, BaseException):   # interrupted or failed: stop reloading, skip the test-set pass
            self.write(live=True, refresh=0)
        else:
            self.write(live=False)


def live_callbacks(model, run_dir, every: int = 1000, speed_every: int = 100, test=None) -> list:
    """What ``--report`` adds to a training run: the learning-speed recorder (a record every ``speed_every``
    steps, into the run's ``speed.jsonl``) and the live page (rewritten every epoch and every ``every`` steps;
    ``test`` as for :class:`LiveReport`)."""
    return [LearningSpeedRecorder(model, every=speed_every, run_dir=run_dir, figure=False),
            LiveReport(run_dir, every=every, test=test)]
