"""Training: mini-batch stochastic gradient descent with progress, metrics, checkpoints and resume.

One step of :func:`fit` is the book's ``update_mini_batch``: a forward pass over a mini-batch, the cost, the
backward pass that fills every ``Parameter.grad`` (the four equations of backpropagation), and an optimizer
step. Each epoch reshuffles the training set (unless ``shuffle=False``, as network3 did), then measures the
validation and test accuracy, appends a line to ``metrics.jsonl``, and writes a checkpoint atomically.

The book's protocol: report the test accuracy at the epoch of best validation accuracy
(:attr:`History.best`). A run folder holds::

    config.json       what was asked for (written by the caller, e.g. the CLI)
    metrics.jsonl     one JSON object per epoch
    checkpoint.safetensors   model, optimizer and schedule state, RNG state and history (resume from here)
    model.safetensors + model.json   the weights at the best validation epoch (``deepscope.load(run)``)
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import backend, io
from .errors import ConfigError, NonFiniteError, ShapeError


class History:
    """Per-epoch metrics of a run, and the book's "test accuracy at the best validation epoch"."""

    def __init__(self, records=None):
        self.records: list[dict] = list(records or [])

    def append(self, record: dict) -> None:
        self.records.append(record)

    @property
    def best(self) -> dict | None:
        """The record of the epoch with the best validation accuracy (the last epoch if there is none)."""
        if not self.records:
            return None
        with_val = [r for r in self.records if r.get("val_acc") is not None]
        if not with_val:
            return self.records[-1]
        return max(with_val, key=lambda r: (r["val_acc"], -r["epoch"]))

    def __len__(self):
        return len(self.records)

    def __repr__(self):
        return f"History({len(self.records)} epochs, best={self.best})"


def predict_logits(model, X, batch_size: int = 1000):
    """The model's outputs for ``X`` in evaluation mode, batch by batch (as a NumPy array)."""
    was_training = model.training
    model.eval()
    try:
        outs = [backend.to_numpy(model(backend.asarray(X[i:i + batch_size])))
                for i in range(0, len(X), batch_size)]
    finally:
        model.train(was_training)
    return np.concatenate(outs) if outs else np.zeros((0,))


def evaluate(model, X, y, batch_size: int = 1000) -> float:
    """Classification accuracy of ``model`` on ``(X, y)``, in [0, 1]. ``y`` holds integer labels, or one-hot
    vectors (network.py's training data), which count by their largest entry."""
    if len(X) != len(y):
        raise ShapeError(f"evaluate: {len(X)} inputs but {len(y)} labels")
    if len(X) == 0:
        return float("nan")
    logits = predict_logits(model, X, batch_size)
    predicted = logits.argmax(axis=-1)
    y = backend.to_numpy(y)
    if y.ndim == logits.ndim and y.shape == logits.shape:
        y = y.argmax(axis=-1)
    if y.shape != predicted.shape:
        raise ShapeError(f"evaluate: labels of shape {tuple(y.shape)} do not match the model's predictions "
                         f"{tuple(predicted.shape)} (one label, or one one-hot vector, per output)")
    return float((predicted == y).mean())


def first_nonfinite_layer(model) -> str:
    """The first layer (in forward order) whose parameter gradient holds a NaN or an infinity."""
    for name, module in model.named_modules():
        for pname, p in module._parameters.items():
            if p is not None and not bool(backend.xp_of(p.grad).isfinite(p.grad).all()):
                return f"{module.describe()} ({pname})"
    return "none (the cost itself is not finite)"


def _checkpoint_path(run_dir) -> Path:
    return Path(run_dir) / "checkpoint.safetensors"


def _save_checkpoint(run_dir, model, optimizer, scheduler, epoch, history) -> None:
    arrays = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_state = optimizer.state_dict()
    scalars = {}
    for k, v in opt_state.items():
        if isinstance(v, list):
            arrays.update({f"optim.{k}.{i}": a for i, a in enumerate(v)})
        else:
            scalars[k] = v
    meta = {
        "epoch": epoch,
        "optimizer": scalars,
        "scheduler": {k: v for k, v in vars(scheduler).items() if isinstance(v, (int, float))} if scheduler else {},
        "rng": backend.get_rng_state(),
        "history": history.records,
    }
    io.save_arrays(_checkpoint_path(run_dir), arrays, metadata={"state": json.dumps(meta)})


def _load_checkpoint(run_dir, model, optimizer, scheduler):
    arrays = io.load_arrays(_checkpoint_path(run_dir))
    from safetensors import safe_open
    with safe_open(str(_checkpoint_path(run_dir)), framework="numpy") as f:
        meta = json.loads(f.metadata()["state"])
    model.load_state_dict({k[6:]: v for k, v in arrays.items() if k.startswith("model.")})
    opt_state = dict(meta["optimizer"])
    lists: dict[str, list] = {}
    for k in sorted((k for k in arrays if k.startswith("optim.")), key=lambda k: int(k.rsplit(".", 1)[1])):
        lists.setdefault(k.split(".")[1], []).append(arrays[k])
    opt_state.update(lists)
    optimizer.load_state_dict(opt_state)
    if scheduler is not None:
        for k, v in meta["scheduler"].items():
            setattr(scheduler, k, v)
    backend.set_rng_state(meta["rng"])
    return meta["epoch"], History(meta["history"])


def fit(model, cost, optimizer, train, epochs: int, batch_size: int, validation=None, test=None,
        run_dir=None, shuffle: bool = True, augment=None, scheduler=None, early_stopping: int | None = None,
        callbacks=(), progress: bool = True, detect_anomaly: bool = False, resume: bool = False,
        eval_batch_size: int = 1000) -> History:
    """Train ``model`` by mini-batch SGD (or any optimizer) and return its :class:`History`.

    Args:
        model: a :class:`deepscope.nn.Module` mapping inputs to logits.
        cost: a cost from :mod:`deepscope.nn.loss` (it applies the output neuron).
        optimizer: from :mod:`deepscope.optim`.
        train: ``(X, y)``; X's first axis indexes examples.
        epochs: number of passes over ``train``.
        batch_size: mini-batch size m.
        validation, test: ``(X, y)`` measured after every epoch (optional).
        run_dir: folder for metrics.jsonl, checkpoints and the best model (optional).
        shuffle: reshuffle the training set each epoch (False keeps network3's fixed order).
        augment: ``augment(X_batch) -> X_batch`` applied to each training mini-batch (optional).
        scheduler: a learning-rate schedule from :mod:`deepscope.optim`, stepped after each epoch.
        early_stopping: stop when validation accuracy has not improved for this many epochs.
        callbacks: objects with any of ``on_before_step(step, model, optimizer)`` (after backward, before the
            update), ``on_step(step, model, optimizer)`` and ``on_epoch_end(epoch, metrics)``.
        progress: show a tqdm bar (images/s, running loss and accuracy) and a line per epoch.
        detect_anomaly: stop at the first non-finite value, naming the layer, step and direction.
        resume: continue from ``run_dir``'s checkpoint exactly where it stopped.
    """
    X, y = train
    n = len(X)
    if len(y) != n:
        raise ShapeError(f"fit: {n} training inputs but {len(y)} labels")
    if batch_size < 1:
        raise ConfigError(f"fit: batch_size must be >= 1, got {batch_size}")
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)

    history, start = History(), 0
    if resume:
        if run_dir is None or not _checkpoint_path(run_dir).exists():
            raise ConfigError(f"fit: nothing to resume: no checkpoint in {run_dir}")
        start, history = _load_checkpoint(run_dir, model, optimizer, scheduler)
        # metrics.jsonl may hold a line of an epoch whose checkpoint was never written (Ctrl-C between the two)
        io.atomic_write(run_dir / "metrics.jsonl", lambda tmp: Path(tmp).write_text(
            "".join(json.dumps(r) + "\n" for r in history.records)))
        if progress:
            tqdm.write(f"resuming {run_dir} after epoch {start}")

    detector = None
    if detect_anomaly:
        from .scope import AnomalyDetector
        detector = AnomalyDetector(model)

    # The data needs no gradient: the net's first layer skips ∂C/∂x (as PyTorch does); restored afterwards.
    flags = {m: m.needs_input_grad for m in model.modules()}
    model.needs_input_grad = False
    rng = backend.rng()
    step = optimizer.steps
    best_val, bad_epochs = -1.0, 0
    for r in history.records:  # a resumed run picks up the early-stopping count where it was
        if r.get("val_acc") is not None:
            best_val, bad_epochs = (r["val_acc"], 0) if r["val_acc"] > best_val else (best_val, bad_epochs + 1)
    bar = None
    model.train()
    try:
        for epoch in range(start + 1, epochs + 1):
            t0 = time.perf_counter()
            order = rng.permutation(n) if shuffle else np.arange(n)
            loss_sum, correct, seen = 0.0, 0, 0
            bar = tqdm(total=n, desc=f"epoch {epoch}/{epochs}", unit="img", unit_scale=True,
                       disable=not progress, leave=False, dynamic_ncols=True)
            for i in range(0, n, batch_size):
                idx = order[i:i + batch_size]
                xb, yb = X[idx], y[idx]
                if augment is not None:
                    xb = augment(xb)
                xb, yb = backend.asarray(xb), backend.asarray(yb)
                step += 1
                if detector is not None:
                    detector.step = step
                out = model(xb)
                loss = cost(out, yb)
                optimizer.zero_grad()
                model.backward(cost.backward())
                if not math.isfinite(loss):
                    raise NonFiniteError(f"the cost became {loss} at epoch {epoch}, step {step}; first layer "
                                         f"with a non-finite gradient: {first_nonfinite_layer(model)}")
                for cb in callbacks:
                    if hasattr(cb, "on_before_step"):
                        cb.on_before_step(step, model, optimizer)
                optimizer.step()
                for cb in callbacks:
                    if hasattr(cb, "on_step"):
                        cb.on_step(step, model, optimizer)
                m = len(idx)
                loss_sum += loss * m
                seen += m
                if out.ndim == 2 and yb.ndim == 1:
                    correct += int((out.argmax(axis=1) == yb).sum())
                elif out.ndim == 2 and yb.shape == out.shape:   # one-hot targets
                    correct += int((out.argmax(axis=1) == yb.argmax(axis=1)).sum())
                bar.update(m)
                if step % 50 == 0:
                    bar.set_postfix_str(f"loss {loss_sum / seen:.4f} acc {correct / seen:.4f}", refresh=False)
            bar.close()
            bar = None

            record = {"epoch": epoch, "train_loss": loss_sum / max(seen, 1),
                      "train_acc": correct / max(seen, 1), "lr": optimizer.lr}
            if validation is not None:
                record["val_acc"] = evaluate(model, *validation, batch_size=eval_batch_size)
            if test is not None:
                record["test_acc"] = evaluate(model, *test, batch_size=eval_batch_size)
            record["seconds"] = time.perf_counter() - t0
            history.append(record)
            if progress:
                tqdm.write(_format_record(record))

            improved = record.get("val_acc", 0.0) > best_val or validation is None
            if validation is not None:
                if record["val_acc"] > best_val:
                    best_val, bad_epochs = record["val_acc"], 0
                else:
                    bad_epochs += 1
            for cb in callbacks:
                if hasattr(cb, "on_epoch_end"):
                    cb.on_epoch_end(epoch, record)
            if scheduler is not None:
                scheduler.step(record)
            if run_dir is not None:
                with open(run_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                if improved:
                    io.save(model, run_dir / "model")
                _save_checkpoint(run_dir, model, optimizer, scheduler, epoch, history)
            if early_stopping is not None and bad_epochs >= early_stopping:
                if progress:
                    tqdm.write(f"early stopping: no improvement in validation accuracy for {bad_epochs} epochs")
                break
            if scheduler is not None and scheduler.stop():
                if progress:
                    tqdm.write(f"stopping: learning rate fell to {optimizer.lr:g}")
                break
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        if progress:
            done = history.records[-1]["epoch"] if history.records else start
            where = f"; the checkpoint of epoch {done} in {run_dir} is intact" if run_dir and done else ""
            tqdm.write(f"interrupted during epoch {done + 1}{where}")
        raise
    finally:
        for m, flag in flags.items():
            m.needs_input_grad = flag      # parents first (modules() order), so children keep their own
        if detector is not None:
            detector.remove()
    return history


def _format_record(r: dict) -> str:
    parts = [f"epoch {r['epoch']:3d}", f"loss {r['train_loss']:.4f}", f"train {r['train_acc']:.2%}"]
    if "val_acc" in r:
        parts.append(f"validation {r['val_acc']:.2%}")
    if "test_acc" in r:
        parts.append(f"test {r['test_acc']:.2%}")
    parts.append(f"{r['seconds']:.1f}s")
    return "  ".join(parts)
