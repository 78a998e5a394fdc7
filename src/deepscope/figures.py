"""Every matplotlib figure deepscope draws, in one place.

Each function takes plain arrays (never a model, a run folder or options), draws one figure and writes it
to ``path`` (PNG, or SVG when the path ends in ``.svg``), returning the path. The interactive HTML report
(:mod:`deepscope.report`) draws its charts in the browser; these are the still pictures a run folder keeps
and the README shows.

    plot_speed      the book's "Speed of learning": ‖∂C/∂b‖ per layer against steps, log y
    plot_time       the gradient through time ‖∂C/∂s_(T-k)‖ against k, one line per network
    plot_compare    depth × activation × init × norm × residual: speed-ratio and accuracy heatmaps
    plot_filters    first-layer filters (at initialisation, trained, and their change)
    plot_errors     misclassified images titled "true → predicted"
    image_png       one greyscale image as PNG bytes (the HTML report embeds them)
    plot_sweep      a sweep's metric against its swept options, mean and band over seeds
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from .errors import DataError

LAYER_COLORS = ["#2A6EA6", "#FFA933", "#FF5555", "#55AA55", "#5555FF", "#AA55AA", "#555555"]


def _pyplot():
    # matplotlib takes ~0.5 s to import: loaded only when a figure is drawn, so that `import deepscope` stays quick
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


FORMATS = (".png", ".svg")


def check_path(path) -> Path:
    """``path`` as a Path if a figure can be written there (a .png or .svg name), else a DataError in one line;
    commands call it before the work that makes the figure."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise DataError(f"{path}: a figure is written as {' or '.join(FORMATS)}; name the file with one of them")
    if path.is_dir():
        raise DataError(f"{path} is a folder; name a {' or '.join(FORMATS)} file to write the figure to")
    return path


def _save(plt, fig, path, title: str | None = None, tight_bbox: bool = False) -> Path:
    path = check_path(path)
    if title is not None:
        fig.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight" if tight_bbox else None)
    plt.close(fig)
    return path


def plot_speed(steps, speeds, labels, path, title="Speed of learning", xlabel="Number of steps of training") -> Path:
    """Plot speeds ``(seeds, steps, layers)``: the mean over seeds per layer and, with several seeds, a band
    from the smallest to the largest. Log y, one colour per layer, like the book's figure."""
    plt = _pyplot()
    speeds = np.asarray(speeds, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for j, label in enumerate(labels):
        c = LAYER_COLORS[j % len(LAYER_COLORS)]
        ax.plot(steps, speeds[:, :, j].mean(axis=0), color=c, label=label)
        if speeds.shape[0] > 1:
            ax.fill_between(steps, speeds[:, :, j].min(axis=0), speeds[:, :, j].max(axis=0), color=c, alpha=0.2,
                            linewidth=0)
    ax.set_yscale("log")
    ax.set_xlim(steps[0], steps[-1] if len(steps) > 1 else steps[0] + 1)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("‖∂C/∂b‖")
    if speeds.shape[0] > 1:
        title += f" (mean of {speeds.shape[0]} seeds, band: min–max)"
    ax.set_title(title)
    ax.legend(loc="upper right")
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_time(norms: dict, path, hidden: int, title: str | None = None) -> Path:
    """‖∂C/∂s_(T-k)‖ against k (log y), one line per network in ``norms`` (name -> values for k = 0 … T-1)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, v in norms.items():
        ax.plot(np.arange(len(v)), v, label=name)
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_xlabel("k (steps back from the cost)")
    ax.set_ylabel("‖∂C/∂s_(T-k)‖")
    ax.set_title(title or f"Gradient through time: fresh RNN, {hidden} units")
    ax.legend()
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_compare(cells, depths, activations, variants, path, labels=None) -> Path:
    """Heatmaps, one column per activation: log10 of the last/first speed ratio at initialisation (top) and
    after the short training (middle), and the accuracy (bottom); one heatmap row per variant.
    ``cells``: dicts with depth, activation, init, norm, residual, ratio, ratio_trained, accuracy, diverged;
    ``variants``: the ``(init, norm, residual)`` rows, or plain init names; ``labels``: their names."""
    plt = _pyplot()
    depths, activations = list(depths), list(activations)
    variants = [(v, "none", "no") if isinstance(v, str) else tuple(v) for v in variants]
    labels = labels or [", ".join(v) for v in variants]
    fig, axes = plt.subplots(3, len(activations), figsize=(3.2 * len(activations) + 1.5,
                                                           3 * (1.2 + 0.28 * len(variants))), squeeze=False)
    lookup = {(c["depth"], c["activation"], c["init"], c.get("norm", "none"), c.get("residual", "no")): c
              for c in cells}

    def log_ratio(r):
        return math.log10(r) if r is not None and r > 0 and math.isfinite(r) else np.nan

    for col, act in enumerate(activations):
        ratio = np.full((len(variants), len(depths)), np.nan)
        trained, acc = np.full_like(ratio, np.nan), np.full_like(ratio, np.nan)
        for i, v in enumerate(variants):
            for j, d in enumerate(depths):
                c = lookup.get((d, act, *v))
                if c:
                    ratio[i, j] = log_ratio(c["ratio"])
                    trained[i, j] = log_ratio(c.get("ratio_trained"))
                    acc[i, j] = np.nan if c["diverged"] else c["accuracy"]
        for row, (m, cmap, vmin, vmax, fmt, what) in enumerate(
                [(ratio, "coolwarm", -3, 3, "{:.1f}", "log10 last/first speed, init"),
                 (trained, "coolwarm", -3, 3, "{:.1f}", "log10 last/first, trained"),
                 (acc, "viridis", 0, 1, "{:.2f}", "accuracy")]):
            ax = axes[row, col]
            ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
            for i in range(len(variants)):
                for j in range(len(depths)):
                    v = m[i, j]      # white text where the colour is dark: both ends of coolwarm, viridis' low end
                    dark = not np.isnan(v) and (abs(v) > 2 if cmap == "coolwarm" else v < 0.45)
                    ax.text(j, i, "–" if np.isnan(v) else fmt.format(v), ha="center", va="center", fontsize=8,
                            color="white" if dark else "black")
            ax.set_xticks(range(len(depths)), [str(d) for d in depths])
            ax.set_yticks(range(len(variants)), labels, fontsize=8)
            ax.set_xlabel("hidden layers")
            ax.set_title(f"{act}: {what}", fontsize=9)
    fig.suptitle("Speed ratio at initialisation and after short training, and accuracy")
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_filters(filters: np.ndarray, path, title: str = "first-layer filters", initial: np.ndarray | None = None
                 ) -> Path:
    """A grid of filters ``(k, h, w)`` in one shared grey scale (light = small, dark = large weight, as in the
    book). With ``initial`` (the same filters before training), three grids: at initialisation, trained (one
    grey scale for both), and the change trained − initial in its own scale centred on 0 (red +, blue −) —
    what training wrote into them, which the trained grid alone hides when they stay close to their start."""
    plt = _pyplot()
    k = len(filters)
    cols = min(k, 10)
    rows = math.ceil(k / cols)
    grids = [("trained", filters, "Greys", None)]
    if initial is not None:
        change = filters - initial
        m = float(np.abs(change).max()) or 1.0
        grids = [("at initialisation", initial, "Greys", None), grids[0],
                 ("change: trained − initial (own scale, red +, blue −)", change, "RdBu_r", (-m, m))]
    both = np.concatenate([g[1] for g in grids[:2]]) if initial is not None else filters
    lo, hi = float(both.min()), float(both.max())
    fig, axes = plt.subplots(rows * len(grids), cols, figsize=(cols * 0.9, len(grids) * (rows * 0.9 + 0.35) + 0.3),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for g, (label, images, cmap, limits) in enumerate(grids):
        vmin, vmax = limits or (lo, hi)
        for i, f in enumerate(images):
            ax = axes[g * rows + i // cols, i % cols]
            ax.imshow(f, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        if len(grids) > 1:
            axes[g * rows, 0].set_title(label, fontsize=8, loc="left", x=0.0, ha="left")
    return _save(plt, fig, path, title, tight_bbox=True)


def plot_errors(images: np.ndarray, true, pred, path, title: str) -> Path:
    """Images (28×28 each) with "true → predicted" above each (labels or class names)."""
    plt = _pyplot()
    k = max(len(images), 1)
    cols = min(k, 9)
    rows = math.ceil(k / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.25 + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (img, t, p) in enumerate(zip(images, true, pred)):
        ax = axes.ravel()[i]
        ax.imshow(img.reshape(28, 28), cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{t} → {p}", fontsize=8)
    return _save(plt, fig, path, title, tight_bbox=True)


def image_png(image: np.ndarray, vmin: float = 0.0, vmax: float = 1.0) -> bytes:
    """One greyscale image ``(h, w)`` as PNG bytes, one pixel per value, dark = large (the grey scale of the
    figures above), for a page to embed."""
    # Pillow (a dependency of matplotlib) encodes it directly: pyplot's import would cost ~1 s per process
    from PIL import Image
    scaled = (np.asarray(image, dtype=np.float64) - vmin) / ((vmax - vmin) or 1.0)
    grey = np.round(255 * (1 - np.clip(scaled, 0, 1))).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def plot_sweep(summary, keys, metric: str, path) -> Path:
    """A sweep's ``metric`` against its swept options: the first option along x, one panel per value of the
    second, one line per combination of the others; each point the mean over seeds, the band min–max.
    ``summary``: dicts with the option values (by key) and ``mean``, ``min``, ``max``, ``n``."""
    plt = _pyplot()
    keys = list(keys) or ["(none)"]
    x_key, panel_key, line_keys = keys[0], (keys[1] if len(keys) > 1 else None), keys[2:]
    rows = [{"(none)": "", **r} for r in summary]
    xs = list(dict.fromkeys(r[x_key] for r in rows))
    numeric = all(_is_number(x) for x in xs)
    if numeric:
        xs = sorted(xs, key=float)
    position = {x: (float(x) if numeric else i) for i, x in enumerate(xs)}
    panels = list(dict.fromkeys(r[panel_key] for r in rows)) if panel_key else [None]
    lines = list(dict.fromkeys(tuple(r[k] for k in line_keys) for r in rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1.2, 3.8), squeeze=False, sharey=True)
    for ax, panel in zip(axes[0], panels):
        for j, line in enumerate(lines):
            pts = sorted((position[r[x_key]], r) for r in rows if (panel_key is None or r[panel_key] == panel)
                         and tuple(r[k] for k in line_keys) == line)
            if not pts:
                continue
            x = [p for p, _ in pts]
            c = LAYER_COLORS[j % len(LAYER_COLORS)]
            label = ", ".join(f"{k}={v}" for k, v in zip(line_keys, line)) or None
            ax.plot(x, [r["mean"] for _, r in pts], "o-", color=c, label=label, markersize=4)
            ax.fill_between(x, [r["min"] for _, r in pts], [r["max"] for _, r in pts], color=c, alpha=0.2,
                            linewidth=0)
        if numeric and min(map(float, xs)) > 0 and max(map(float, xs)) / min(map(float, xs)) > 20:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(xs)), xs)
        ax.set_xlabel(x_key)
        ax.grid(True, alpha=0.3)
        if panel_key:
            ax.set_title(f"{panel_key} = {panel}", fontsize=9)
    axes[0, 0].set_ylabel(metric)
    if any(line for line in lines):
        axes[0, -1].legend(fontsize=7, loc="best")
    seeds = sorted({r["n"] for r in rows})
    n = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    fig.suptitle(f"{metric}: mean over {n} seed(s), band min–max", fontsize=10)
    fig.tight_layout()
    return _save(plt, fig, path)


def _is_number(text) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def plot_layer_speeds(nets: dict, path, title="Speed of learning by layer") -> Path:
    """‖∂C/∂b‖ of every hidden layer against its depth (log y), at initialisation (dashed) and after training
    (solid), one colour per net. ``nets``: name -> {"init": [speeds], "trained": [speeds], "trained_step": k}."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for j, (name, v) in enumerate(nets.items()):
        c = LAYER_COLORS[j % len(LAYER_COLORS)]
        ax.plot(np.arange(1, len(v["init"]) + 1), v["init"], "--", color=c, label=f"{name}, at initialisation")
        ax.plot(np.arange(1, len(v["trained"]) + 1), v["trained"], color=c,
                label=f"{name}, after {v['trained_step']} steps")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_xlabel("hidden layer")
    ax.set_ylabel("‖∂C/∂b‖ (batch norm: ‖∂C/∂β‖)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(plt, fig, path)
