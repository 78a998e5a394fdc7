"""The panels of a report: what each kind of run shows, as charts (Vega-Lite specs) and small tables.

Every panel is built from the run's own records (``metrics.jsonl``, ``speed.jsonl``, the saved model, the
experiment's results) and says in its caption what it shows; a panel whose data the run does not have is
left out. Panel ids are ``<run index>-<panel>`` (e.g. ``r0-curves``), stable for the browser tests.
"""
from __future__ import annotations

import base64
import dataclasses
import math

import numpy as np

from .. import figures
from ..book.ch5.compare import variant_label
from ..train import predict_logits
from . import charts, source

MAX_STEPS = 600          # at most this many recorded steps in a heatmap (every k-th record beyond)
MAX_ERRORS = 36          # misclassified test images shown
MAX_LARGE_FILTERS = 10   # 28×28 filters (a first Linear layer) shown


@dataclasses.dataclass
class Panel:
    id: str
    title: str
    caption: str = ""
    spec: dict | None = None       # a Vega-Lite chart
    table: dict | None = None      # {"columns": [...], "rows": [[...]], "sortable": bool}
    images: list | None = None     # [{"src": data URL, "caption": str}]
    text: str | None = None        # preformatted text (a sample)


def best_epoch(run: source.RunData) -> dict | None:
    """The record of the best validation epoch (highest accuracy, or lowest loss for language models), the
    first of equals: the book's protocol reports the test accuracy there."""
    if run.kind == "char-lm":
        with_val = [r for r in run.metrics if r.get("val_loss") is not None]
        return min(with_val, key=lambda r: (r["val_loss"], r["epoch"])) if with_val else None
    with_val = [r for r in run.metrics if r.get("val_acc") is not None]
    return max(with_val, key=lambda r: (r["val_acc"], -r["epoch"])) if with_val else None


def summary(run: source.RunData) -> list[tuple[str, str]]:
    """A few headline facts for the run's header."""
    facts = [("kind", run.kind), ("epochs recorded", str(len(run.metrics)))] if run.metrics else [("kind", run.kind)]
    best = best_epoch(run)
    if best is not None and run.kind == "char-lm":
        facts.append(("best validation", f"{best['val_loss']:.4f} nats/char = {best['val_bpc']:.3f} bits/char "
                                         f"(epoch {best['epoch']})"))
    elif best is not None:
        facts.append(("best validation", f"{best['val_acc']:.2%} (epoch {best['epoch']})"))
        if best.get("test_acc") is not None:
            facts.append(("test at that epoch", f"{best['test_acc']:.2%}"))
    if run.speed:
        facts.append(("speed records", f"{len(run.speed)} (steps {run.speed[0]['step']}–{run.speed[-1]['step']})"))
    return facts


def config_panel(run, pid) -> Panel:
    rows = [[k, _short(v)] for k, v in run.config.items()]
    return Panel(pid, "Configuration", "What the run was asked to do, as recorded in the run folder.",
                 table={"columns": ["setting", "value"], "rows": rows, "sortable": False, "cls": "config"})


def _short(v) -> str:
    text = v if isinstance(v, str) else repr(v)
    return text if len(text) <= 200 else text[:197] + "…"


# -- per-epoch curves ------------------------------------------------------------------------------------

_ACC = (("train_acc", "train"), ("val_acc", "validation"), ("test_acc", "test"))
_LOSS = (("train_loss", "train"), ("val_loss", "validation"), ("test_loss", "test"))


def _long(records, fields, x="epoch"):
    return [{x: r[x], "split": split, "value": r[key]} for r in records for key, split in fields
            if r.get(key) is not None and isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]


def curve_panels(run, prefix) -> list[Panel]:
    if not run.metrics:
        return []
    best = best_epoch(run)
    label = f"best validation: epoch {best['epoch']}" if best else None
    rule = best["epoch"] if best else None
    out = []
    acc = _long(run.metrics, _ACC)
    if acc:
        out.append(Panel(f"{prefix}-accuracy", "Accuracy per epoch",
                         "Training accuracy (running, over the epoch's mini-batches), validation and test accuracy "
                         "after each epoch; the dashed line marks the best validation epoch, where the book's "
                         "protocol reads the test accuracy.",
                         spec=charts.lines("accuracy", acc, "epoch", "value", "split", x_title="epoch",
                                           y_title="accuracy", rule_x=rule, rule_label=label, y_format=".2%",
                                           color_sort=["train", "validation", "test"])))
    loss = _long(run.metrics, _LOSS)
    if loss:
        unit = "nats/char" if run.kind == "char-lm" else "cost"
        caption = ("Mean cost per character in nats (divide by ln 2 = 0.693 for bits per character): training "
                   "(over the epoch) and validation (after it)." if run.kind == "char-lm" else
                   "Training cost, averaged over the epoch's mini-batches (without the L2 term).")
        out.append(Panel(f"{prefix}-loss", "Loss per epoch", caption,
                         spec=charts.lines("loss", loss, "epoch", "value", "split", x_title="epoch", y_title=unit,
                                           rule_x=rule, rule_label=label, color_sort=["train", "validation", "test"])))
    if run.kind == "char-lm":
        bits = [{"epoch": r["epoch"], "split": "validation", "value": r["val_bpc"]} for r in run.metrics
                if r.get("val_bpc") is not None]
        if bits:
            out.append(Panel(f"{prefix}-bits", "Bits per character (validation)",
                             "The validation cost in bits per character (nats / ln 2).",
                             spec=charts.lines("bits", bits, "epoch", "value", "split", x_title="epoch",
                                               y_title="bits/char", rule_x=rule, rule_label=label)))
    return out


# -- the learning-speed recorder's records ------------------------------------------------------------

def layer_label(name: str, entry: dict) -> str:
    module = entry.get("module", "").split(" [layer")[0].replace("kernel_size=", "")
    return f"{name}: {module}" if module else name


def speed_rows(records) -> tuple[list, list, int]:
    """Rows ``{step, step_end, layer, depth, bias_grad, weight_grad, update_ratio, saturated, dead}``, one per
    (record, layer), in depth order; records of several seeds (an experiment's) are averaged per step.
    Returns (rows, layer labels in depth order, the stride k: every k-th recorded step is kept)."""
    by_step: dict[int, list] = {}
    for r in records:
        by_step.setdefault(r["step"], []).append(r)
    steps = sorted(by_step)
    stride = max(1, math.ceil(len(steps) / MAX_STEPS))
    steps = steps[::stride]
    labels, rows = [], []
    for i, s in enumerate(steps):
        group = by_step[s]
        end = steps[i + 1] if i + 1 < len(steps) else s + (steps[i] - steps[i - 1] if i else 1)
        for depth, (name, entry) in enumerate(group[0]["layers"].items()):
            label = layer_label(name, entry)
            if label not in labels:
                labels.append(label)
            row = {"step": s, "step_end": end, "layer": label, "depth": depth}
            for key in ("bias_grad", "weight_grad", "update_ratio", "saturated", "dead"):
                values = [g["layers"].get(name, {}).get(key) for g in group]
                values = [v for v in values if v is not None]
                if values:
                    row[key] = float(np.mean(values)) if len(values) > 1 else values[0]
            rows.append(row)
    return rows, labels, stride


def speed_panels(run, prefix) -> list[Panel]:
    if not run.speed:
        return []
    rows, labels, stride = speed_rows(run.speed)
    seeds = sorted({r.get("seed") for r in run.speed if r.get("seed") is not None})
    note = (f" Mean over {len(seeds)} seeds." if len(seeds) > 1 else "") + \
           (f" Every {stride}th recorded step is shown." if stride > 1 else "")
    out = []
    for key, symbol, title, what in (
            ("bias_grad", "‖∂C/∂b‖", "Speed of learning ‖∂C/∂b‖ per layer",
             "The book's speed of learning: the length of each layer's bias gradient (the mini-batch mean), "
             "layers in depth order (the input layer on top), log colour scale."),
            ("update_ratio", "‖ΔW‖/‖W‖", "Update size ‖ΔW‖/‖W‖ per layer",
             "The size of one optimizer step relative to the layer's weights (weight decay included); about "
             "1e-3 is the usual rule of thumb for a healthy learning rate. Log colour scale.")):
        data = [r for r in rows if r.get(key, 0) and r[key] > 0]
        if not data:
            continue
        out.append(Panel(f"{prefix}-{key}-heatmap", title, what + note,
                         spec=charts.heatmap(f"{key}_heat", data, x="step", x2="step_end", y="layer", value=key,
                                             y_sort=labels, x_title="step", value_title=symbol)))
        out.append(Panel(f"{prefix}-{key}-lines", title.split(" per layer")[0] + ": one line per layer",
                         "The same records as lines (log scale); click a layer in the legend to pick it out.",
                         spec=charts.lines(f"{key}_lines", data, "step", key, "layer", x_title="step",
                                           y_title=symbol, log_y=True, color_sort=labels, height=240)))
    health = []
    for r in rows:
        for key in ("saturated", "dead"):
            if r.get(key) is not None:
                health.append({"step": r["step"], "layer": f"{r['layer']} ({key})", "value": r[key]})
    if health:
        out.append(Panel(f"{prefix}-health", "Saturated and dead units",
                         "Per layer, the fraction of its sigmoid/tanh outputs in the flat tails (σ' tiny: sigmoid "
                         "a < 0.01 or > 0.99, tanh |a| > 0.99) or of its ReLU units that output 0 for every "
                         "example of the mini-batch (they pass no gradient)." + note,
                         spec=charts.lines("health", health, "step", "value", "layer", x_title="step",
                                           y_title="fraction", height=220, y_format=".0%")))
    return out


# -- what the trained net does ------------------------------------------------------------------------

def correlations(trained: np.ndarray, initial: np.ndarray) -> np.ndarray:
    """Pearson correlation of each trained filter with the same filter at initialisation."""
    a = trained.reshape(len(trained), -1).astype(np.float64)
    b = initial.reshape(len(initial), -1).astype(np.float64)
    a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
    return (a * b).sum(axis=1) / np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))


def filter_panel(run, prefix) -> list[Panel]:
    model = source.load_model(run)
    trained = source.first_layer_filters(model) if model is not None else None
    if trained is None:
        return []
    init_model = source.initial_model(run)
    initial = source.first_layer_filters(init_model) if init_model is not None else None
    if initial is not None and initial.shape != trained.shape:
        initial = None
    large = trained.shape[-1] >= 28
    k = min(len(trained), MAX_LARGE_FILTERS) if large else len(trained)
    trained = trained[:k]
    rows = []
    for f in range(k):
        for i in range(trained.shape[1]):
            for j in range(trained.shape[2]):
                row = {"filter": f, "row": i, "col": j, "trained": float(trained[f, i, j])}
                if initial is not None:
                    row["init"] = float(initial[f, i, j])
                    row["change"] = row["trained"] - row["init"]
                rows.append(row)
    titles = {"trained": "trained (best-validation weights)"}
    caption = (f"The first layer's {k} filters{' (the first ' + str(k) + ')' if large else ''}: "
               "light = small, dark = large weight.")
    if initial is not None:
        initial = initial[:k]
        r = correlations(trained, initial)
        titles = {"init": "at initialisation", **titles, "change": "change: trained − initial (red +, blue −)"}
        caption += (f" The initial weights are rebuilt from the run's seed and architecture. Each trained filter "
                    f"correlates {r.min():.2f}–{r.max():.2f} (median {np.median(r):.2f}) with its initial "
                    f"self, so the trained grid mostly shows the random start: the change row is what "
                    f"training wrote into them.")
    size = 60 if large else 40
    return [Panel(f"{prefix}-filters", "First-layer filters and what training changed", caption,
                  spec=charts.filter_grids("filters", rows, columns=10, size=size, titles=titles))]


def error_panels(run, prefix, test=None) -> list[Panel]:
    """Misclassified test images (true → predicted, by class name) and the confusion matrix. ``test``:
    ``(X, y, classes)`` given by the caller, else the run's test set read again."""
    model = source.load_model(run)
    if model is None:
        return []
    test = (*test, test[0]) if test is not None else source.test_set(run)
    if test is None:
        return []
    X, y, classes, images = test
    pred = predict_logits(model, X).argmax(axis=1)
    y = np.asarray(y)
    wrong = np.flatnonzero(pred != y)
    counts = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(counts, (y, pred), 1)
    names = [str(c) for c in classes]
    rows = [{"true": names[t], "predicted": names[p], "count": int(counts[t, p])}
            for t in range(len(names)) for p in range(len(names))]
    shown = wrong[:MAX_ERRORS]
    pictures = [{"src": "data:image/png;base64," + base64.b64encode(
                     figures.image_png(np.asarray(images[i]).reshape(28, 28))).decode("ascii"),
                 "caption": f"{names[y[i]]} → {names[pred[i]]}"} for i in shown]
    summary_line = (f"{len(wrong)} of {len(y):,} test images misclassified ({len(wrong) / max(len(y), 1):.2%}) "
                    f"by the saved (best-validation) weights")
    return [Panel(f"{prefix}-confusion", "Confusion matrix (test set)",
                  summary_line + "; rows: true class, columns: predicted class (log colour).",
                  spec=charts.confusion("confusion", rows, names)),
            Panel(f"{prefix}-errors", "Misclassified test images",
                  f"{summary_line}; the first {len(shown)}, each titled true → predicted.", images=pictures)]


def sample_panel(run, prefix) -> list[Panel]:
    text = run.extras.get("sample")
    if not text:
        return []
    return [Panel(f"{prefix}-sample", "Sample from the trained model",
                  "Text the best-validation model wrote at the end of training (temperature 0.8).", text=text)]


# -- experiments ---------------------------------------------------------------------------------------

def compare_panels(run, prefix) -> list[Panel]:
    cells = run.extras["compare"]
    rows = [{"depth": c["depth"], "activation": c["activation"],
             "net": variant_label(c["init"], c.get("norm", "none"), c.get("residual", "no")), "ratio": c["ratio"],
             **({"accuracy": c["accuracy"]} if not c.get("diverged") else {})} for c in cells]
    ratio_rows = [r for r in rows if r["ratio"] and r["ratio"] > 0 and math.isfinite(r["ratio"])]
    return [Panel(f"{prefix}-ratio", "Last / first hidden layer speed at initialisation",
                  "≫ 1: the first layer learns far slower (vanishing gradient); ≪ 1: exploding; ≈ 1: balanced. "
                  "Log colour scale centred on 1. Rows: the initialisation, with batch norm (bn) and residual "
                  "connections (res) where the grid has them.",
                  spec=charts.grid_heatmaps("ratio", ratio_rows, x="depth", y="net", facet="activation",
                                            value="ratio", title="ratio", log=True, scheme="redblue",
                                            domain_mid=1)),
            Panel(f"{prefix}-compare-accuracy", "Validation accuracy after short training",
                  "Diverged cells are left empty.",
                  spec=charts.grid_heatmaps("compare_accuracy", [r for r in rows if "accuracy" in r], x="depth",
                                            y="net", facet="activation", value="accuracy", title="accuracy",
                                            fmt=".2f"))]


def time_panels(run, prefix) -> list[Panel]:
    rows = [{"k": k, "network": name, "norm": v} for name, values in run.extras["time"].items()
            for k, v in enumerate(values)]
    return [Panel(f"{prefix}-time", "Gradient through time ‖∂C/∂s_(T-k)‖",
                  "How the gradient reaching the state k steps before the cost falls (or holds) in a fresh RNN.",
                  spec=charts.lines("time", rows, "k", "norm", "network", x_title="k (steps back from the cost)",
                                    y_title="‖∂C/∂s_(T-k)‖", log_y=True))]


_METRICS = ("val_acc", "best_val_acc", "validation_accuracy", "accuracy", "test_acc", "val_loss", "loss")


def sweep_panels(run, prefix) -> list[Panel]:
    trials = run.extras["trials"]
    if not trials:
        return []
    columns = list(dict.fromkeys(k for t in trials for k in t))
    metric = run.config.get("metric")
    metric = metric if metric in columns else next((m for m in _METRICS if m in columns), None)
    options = [f"options.{k}" for k in run.config.get("options", []) if f"options.{k}" in columns] or [
        c for c in columns if c.startswith("options.")]
    out = [Panel(f"{prefix}-trials", f"Trials ({len(trials)})", "One row per finished trial; click a column's "
                 "name to sort by it (again to reverse).",
                 table={"columns": columns, "rows": [[t.get(c) for c in columns] for t in trials],
                        "sortable": True})]
    if metric is not None and options:
        rows = [{"trial": str(t.get("trial", i)), "option": o.split(".", 1)[1], "value": str(t.get(o)),
                 "metric": t[metric]} for i, t in enumerate(trials) for o in options
                if isinstance(t.get(metric), (int, float))]
        out.append(Panel(f"{prefix}-by-option", f"{metric} against each option",
                         f"Every trial's {metric} (at its best validation epoch), one panel per swept option.",
                         spec=charts.by_option("by_option", rows, metric_title=metric)))
    runs = run.extras.get("runs", [])
    curves = [{"epoch": r["epoch"], "run": t.name, "value": r["val_acc"]} for t in runs for r in t.metrics
              if r.get("val_acc") is not None]
    if curves:
        out.append(Panel(f"{prefix}-trial-curves", "Validation accuracy of every trial",
                         "One line per trial, from its run folder's metrics.jsonl.",
                         spec=charts.lines("trial_curves", curves, "epoch", "value", "run", x_title="epoch",
                                           y_title="validation accuracy", y_format=".2%")))
    return out


def run_panels(run: source.RunData, index: int, live: bool = False, test=None) -> list[Panel]:
    """Every panel the run has data for, in reading order (``test``: see :func:`error_panels`)."""
    p = f"r{index}"
    panels = [config_panel(run, f"{p}-config")]
    panels += curve_panels(run, p)
    panels += speed_panels(run, p)
    if run.kind == "scope-compare":
        panels += compare_panels(run, p)
    if run.kind == "scope-time":
        panels += time_panels(run, p)
    if run.kind == "sweep":
        panels += sweep_panels(run, p)
    panels += filter_panel(run, p)
    if not live:     # a pass over the test set: at the end of training, not every epoch
        panels += error_panels(run, p, test)
    panels += sample_panel(run, p)
    return panels


def comparison_panels(runs) -> list[Panel]:
    """With several runs: their validation curves overlaid and the settings in which they differ."""
    rows = []
    for run in runs:
        key = "val_loss" if run.kind == "char-lm" else "val_acc"
        rows += [{"epoch": r["epoch"], "run": run.name, "value": r[key], "metric": key} for r in run.metrics
                 if r.get(key) is not None]
    out = []
    if rows:
        metric = "validation accuracy" if all(r["metric"] == "val_acc" for r in rows) else "validation metric"
        out.append(Panel("all-validation", f"Runs side by side: {metric}",
                         "One line per run (click a run in the legend to pick it out).",
                         spec=charts.lines("runs", rows, "epoch", "value", "run", x_title="epoch",
                                           y_title=metric, color_sort=[r.name for r in runs])))
    keys = list(dict.fromkeys(k for r in runs for k in r.config))
    differ = [k for k in keys if len({repr(r.config.get(k)) for r in runs}) > 1]
    out.append(Panel("all-config", "Settings that differ between the runs",
                     "" if differ else "The runs have the same settings.",
                     table={"columns": ["setting"] + [r.name for r in runs],
                            "rows": [[k] + [_short(r.config.get(k)) for r in runs] for k in differ] +
                                    [["best validation"] + [_best_text(r) for r in runs]],
                            "sortable": False}))
    return out


def _best_text(run) -> str:
    best = best_epoch(run)
    if best is None:
        return "–"
    if run.kind == "char-lm":
        return f"{best['val_loss']:.4f} nats/char (epoch {best['epoch']})"
    return f"{best['val_acc']:.2%} (epoch {best['epoch']})"
