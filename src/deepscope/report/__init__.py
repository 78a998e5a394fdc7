"""deepscope.report: one self-contained HTML page per run (or several runs side by side).

    write_report(["runs/train-20261127-101500"])      # -> runs/train-20261127-101500/report.html

What it shows, as the run has it: the config and the command that makes the run again; accuracy and loss per
epoch with the best-validation epoch marked; layer × step heatmaps of the speed of learning ‖∂C/∂b‖ and of
‖ΔW‖/‖W‖ (depth order, log colour) with per-layer lines; saturated and dead units; the first layer's filters
at initialisation, trained, and their change; misclassified test images and the confusion matrix; a text
model's sample and bits per character; an experiment's results; a sweep's trials. :class:`LiveReport` rewrites
it while a net trains.
"""
from .live import LiveReport, live_callbacks
from .page import render, write_report

__all__ = ["LiveReport", "live_callbacks", "render", "write_report"]
