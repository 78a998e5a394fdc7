"""``deepscope show``: pictures of a trained run.

    deepscope show filters RUN     the first convolutional layer's kernels as a grid (the book's figure of the
                                   20 local receptive fields: light = small weight, dark = large), with, for a
                                   run of train or book ch6, the same kernels at initialisation and the change
                                   training made (trained − initial, own scale): what was learned
    deepscope show errors RUN      the test images the net gets wrong, each titled "true → predicted"

Both write a PNG (into the run folder unless ``--out`` says otherwise) and print where it went.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import load
from ..data import load_mnist
from ..data.mnist import load_recorded
from ..errors import DataError
from ..figures import check_path, plot_errors, plot_filters
from ..report import source as report_source
from ..report.panels import correlations
from ..report.source import first_layer_filters
from ..runs import Run
from ..train import predict_logits
from . import options
from .options import existing_dir, nonnegative_int
from .train import model_input


def register(sub) -> None:
    show = sub.add_parser("show", help="pictures of a trained run: first-layer filters, misclassified digits")
    kinds = show.add_subparsers(dest="what", metavar="WHAT")
    show.set_defaults(func=lambda args: show.print_help() or 2)

    p = kinds.add_parser("filters", help="the first layer's kernels as a grid PNG: at initialisation, trained, "
                                         "and their change")
    p.add_argument("run", help="run folder (or saved model path)")
    p.add_argument("--out", default=None, help="PNG path (default: RUN/filters.png)")
    p.set_defaults(func=cmd_filters)

    p = kinds.add_parser("errors", help="misclassified test images with true and predicted labels")
    p.add_argument("run", help="run folder (or saved model path)")
    p.add_argument("--out", default=None, help="PNG path (default: RUN/errors.png)")
    p.add_argument("--max", type=nonnegative_int, default=36, help="at most this many images (default 36)")
    p.add_argument("--data-dir", type=existing_dir, default=None,
                   help="folder with the MNIST files (default: the run's)")
    p.set_defaults(func=cmd_errors)


def _out_path(args, default_name):
    """Where the figure goes, checked (a .png or .svg name) before any work is done."""
    if args.out:
        return check_path(args.out)
    run = Path(args.run)
    return (run if run.is_dir() else run.parent) / default_name


def cmd_filters(args) -> int:
    out = _out_path(args, "filters.png")
    model = load(args.run)  # raises DataError (one line) when there is no saved model there
    filters = first_layer_filters(model)
    if filters is None:
        raise DataError("the model has no Conv2d layer (nor a first Linear layer on 28x28 images) to show")
    run = report_source.open_run(args.run) if Run.is_run(args.run) else None
    init_model = report_source.initial_model(run) if run is not None else None
    initial = first_layer_filters(init_model) if init_model is not None else None
    title = f"{len(filters)} first-layer filters of {Path(args.run).name}"
    if initial is not None:
        r = correlations(filters, initial)
        title += (f": at initialisation (rebuilt from the run's seed), trained, and the change\n"
                  f"(each trained filter correlates {r.min():.2f}–{r.max():.2f} with its initial self)")
    path = plot_filters(filters, out, title, initial=initial)
    print(f"wrote {path}")
    return 0


def cmd_errors(args) -> int:
    # a run folder (a recurrent run is named for what it is), or a folder or stem holding a saved model
    out = _out_path(args, "errors.png")
    cfg = options.image_run(args.run, "show errors").config if Run.is_run(args.run) else {}
    model = load(args.run)
    data = load_recorded(cfg, data_dir=args.data_dir) if cfg else load_mnist(data_dir=args.data_dir)
    X, y = data.test
    pred = np.argmax(predict_logits(model, model_input(cfg)(X)), axis=1)
    wrong = np.flatnonzero(pred != y)
    shown = wrong[:args.max]
    title = (f"{len(wrong)} of {len(y):,} test images misclassified ({data.source}); "
             f"showing {len(shown)}: true → predicted")
    path = plot_errors(X[shown], y[shown], pred[shown], out, title)
    print(f"{len(wrong)} of {len(y):,} test images misclassified ({len(wrong) / max(len(y), 1):.2%})")
    print(f"wrote {path}")
    return 0
