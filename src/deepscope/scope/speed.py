"""How fast each layer learns: the learning-speed recorder (Nielsen, ch. 5, "The vanishing gradient problem").

The book measures the *speed of learning* of hidden layer l by the length of the gradient of the cost with
respect to that layer's biases, ‖∂C/∂bˡ‖ = ‖δˡ‖ averaged over the training examples: each component
∂C/∂bˡ_j = δˡ_j says how fast neuron j's bias, and so the neuron, is changing. In a deep sigmoid net the
early layers learn much more slowly than the later ones (the vanishing gradient problem).

:class:`LearningSpeedRecorder` watches any model through hooks and ``Parameter.grad``; it never changes a
layer's code. For every module that owns parameters (Linear, Conv2d, RNN, …) it records

    speed       the book's speed of the layer: its ``bias_grad``, except for a layer followed by batch norm,
                whose bias gets no gradient (the normalisation subtracts it again): there the bias that reaches
                the neurons is the batch norm's β, and ``speed`` is its ‖∂C/∂β‖ (the batch-norm module itself
                then has ``speed`` None: it is part of the layer before it).
    bias_grad   ‖∂C/∂b‖   the book's speed. deepscope's costs average over the mini-batch, so ``bias.grad`` is
                          already the book's mean-over-examples gradient (1/n) Σ_x ∂C_x/∂b; we take its norm.
                          Bias-like parameters are those whose name starts with "bias" (Conv2d: one bias per
                          feature map, its gradient summed over positions). L2 regularisation never touches the
                          biases, so this is also the regularised cost's bias gradient — the quantity the book's
                          figure shows (its ``generate_gradient.py`` uses ``backprop``, without the L2 term).
    weight_grad ‖∂C/∂W‖   the norm of all the module's other parameters' gradients together, as held in
                          ``Parameter.grad``: the gradient of the *unregularised* cost (the L2 term λw/n is
                          added by the optimizer, not by backprop).
    update_ratio ‖ΔW‖/‖W‖ the size of one optimizer step relative to the weights (W before the step), ΔW
                          including weight decay: about 1e-3 is the usual rule of thumb for a healthy rate.
    saturated   for the sigmoid/tanh layer that follows the module: the fraction of its outputs (units ×
                examples) where σ' is tiny — sigmoid a < 0.01 or a > 0.99, tanh |a| > 0.99.
    dead        for a ReLU that follows the module: the fraction of units that output 0 for every example
                in the batch (they pass no gradient at all).
    gates       for a recurrent layer (RNN, LSTM, GRU): the fraction of saturated activations of each gate of
                its first layer, {gate: fraction} (σ < 0.01 or > 0.99, |tanh| > 0.99), from the recorded step.

and, per record, ``nonfinite``: the first module in forward order with a NaN or infinite gradient (or None).

Use it with ``deepscope.train.fit`` (it is a callback)::

    rec = LearningSpeedRecorder(model, every=100, run_dir="runs/mine")
    fit(model, cost, opt, train, epochs=30, batch_size=10, callbacks=[rec])
    rec.plot("runs/mine/speed.png")

or in a hand-written loop: ``rec.before_step()`` after backward and before ``optimizer.step()``, then
``rec.after_step()``. Record k holds the gradient computed at the weights after k updates, so record 0 is
the speed at initialisation, as in the book's figure.

Cost: the recorder arms its forward hooks only for the steps it records, so the steps in between run
exactly as without it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .. import backend
from ..figures import plot_speed
from ..nn.activation import activation_name
from ..nn.norm import BatchNorm1d, BatchNorm2d
from ..nn.recurrent import Recurrent

SIGMOID_SATURATION = (0.01, 0.99)   # σ'(z) = a(1-a) < 0.0099 outside this range
TANH_SATURATION = 0.99              # 1 - a² < 0.02 beyond this


def is_bias(name: str) -> bool:
    """A parameter is bias-like when its (last) name starts with "bias" (bias, bias_ih, bias_hh, …)."""
    return name.rsplit(".", 1)[-1].startswith("bias")


def _norm(arrays) -> float:
    """The L2 norm of several arrays taken together (as one long vector), as a Python float."""
    return math.sqrt(sum(float((a.astype("float64") ** 2).sum()) for a in arrays))


def saturated_fraction(kind: str, a) -> float:
    """The fraction of the activations ``a`` (any shape) of a ``"sigmoid"`` or ``"tanh"`` layer where σ' is tiny."""
    xp = backend.xp_of(a)
    if kind == "sigmoid":
        lo, hi = SIGMOID_SATURATION
        return float(xp.mean((a < lo) | (a > hi)))
    if kind == "tanh":
        return float(xp.mean(xp.abs(a) > TANH_SATURATION))
    raise ValueError(f"saturated_fraction: unknown activation {kind!r}")


def gate_saturation(rnn) -> dict:
    """{gate: saturated fraction} of a recurrent layer's first layer, from its last forward (for the RNN: its
    units). Gates whose nonlinearity neither saturates (relu, identity) are left out."""
    kinds = dict(rnn.GATE_NAMES)
    return {g: saturated_fraction(kinds[g], a) for g, a in rnn.gates[0].items() if kinds[g] in ("sigmoid", "tanh")}


def dead_fraction(a) -> float:
    """The fraction of units (every axis but the first) that output 0 for every example of the batch ``a``."""
    xp = backend.xp_of(a)
    alive = xp.any(a.reshape(a.shape[0], -1) != 0, axis=0)
    return float(1.0 - xp.mean(alive))


class LearningSpeedRecorder:
    """Records each layer's speed of learning ‖∂C/∂b‖ (and more, see the module docstring) every ``every`` steps.

    Args:
        model: any :class:`deepscope.nn.Module`. Attach the recorder before training so that record 0 is
            the speed at initialisation. As a ``fit`` callback it may be left out: the recorder then watches
            the model ``fit`` trains, from its first step.
        every: record every this many optimizer steps (record k for k = 0, every, 2·every, …).
        run_dir: if given, each record is appended to ``run_dir/speed.jsonl`` as it is made.
        figure: with ``run_dir``, redraw ``run_dir/speed.png`` at the end of every epoch (the HTML report draws
            the same records itself, so ``--report`` turns this off).

    Attributes:
        layers: the names (paths in the model, e.g. ``"0"``, ``"2"``) of the modules that own parameters.
        history: the records, a list of dicts ``{"step", "layers": {name: {...}}, "nonfinite"}``.
    """

    def __init__(self, model=None, every: int = 1, run_dir=None, figure: bool = True):
        if every < 1:
            raise ValueError(f"LearningSpeedRecorder: every must be >= 1, got {every}")
        self.every = int(every)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.figure = figure
        self.model = None
        self.history: list[dict] = []
        self.steps = 0                          # optimizer steps seen so far
        self._handles = []
        if model is not None:
            self._watch(model)

    def _watch(self, model) -> None:
        self.model = model
        self._params = {}                       # module name -> (module, [(pname, Parameter)])
        self._activations = {}                  # module name -> (module, kind)
        for name, m in model.named_modules():
            own = [(p, v) for p, v in m._parameters.items() if v is not None]
            if own:
                self._params[name] = (m, own)
            kind = activation_name(m)
            if kind in ("sigmoid", "tanh", "relu"):         # the neurons that saturate or die
                self._activations[name] = (m, kind)
        if not self._params:
            raise ValueError("LearningSpeedRecorder: the model has no parameters to watch")
        self.layers = list(self._params)
        self._order: list[str] = []             # modules in forward order (learned from the hooks)
        self._seen_order = set()
        self._outputs = {}                      # activation name -> its last output (a reference, no copy)
        self._after = {}                        # activation name -> the parametrised module it follows
        self._last_layer = None                 # the last parametrised module whose forward ran
        self._before = None                     # weights before the step being recorded
        if self._due():
            self._arm()

    # -- the schedule --------------------------------------------------------------------------------
    def _due(self) -> bool:
        return self.steps % self.every == 0

    def _arm(self) -> None:
        """Snapshot the weights and attach forward hooks for the next (recorded) step."""
        self._snapshot()
        if self._handles:
            return
        self._order, self._seen_order = [], set()
        for name, (m, _) in self._params.items():
            self._handles.append(m.register_forward_hook(self._make_hook(name, None)))
        for name, (m, kind) in self._activations.items():
            if name not in self._params:
                self._handles.append(m.register_forward_hook(self._make_hook(name, kind)))

    def _disarm(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _make_hook(self, name, kind):
        def hook(module, inputs, output):
            if name not in self._seen_order:
                self._seen_order.add(name)
                self._order.append(name)
            if kind is None:
                self._last_layer = name
            else:
                self._outputs[name] = output
                self._after[name] = self._last_layer
        return hook

    def _snapshot(self) -> None:
        self._before = {name: [v.data.copy() for p, v in own if not is_bias(p)]
                        for name, (m, own) in self._params.items()}

    # -- hand-written loops ----------------------------------------------------------------------------
    def before_step(self) -> None:
        """Call after ``backward`` and before ``optimizer.step()`` (takes the weights' 'before' picture)."""
        if self._due():
            self._snapshot()

    def after_step(self) -> None:
        """Call after ``optimizer.step()``: makes a record if this step is due, then counts the step."""
        if self._due():
            self._record()
            self._disarm()
        self.steps += 1
        if self._due():
            self._arm()

    # -- deepscope.train.fit callbacks ----------------------------------------------------------------
    def on_fit_start(self, model, optimizer, epoch) -> None:
        """Watch ``model`` if no model was given, and count steps from the optimizer's (a resumed run's records
        go on from where they stopped)."""
        if self.model is None:
            self._watch(model)
        if optimizer.steps != self.steps:
            self._disarm()
            self.steps = optimizer.steps
            if self._due():
                self._arm()

    def on_before_step(self, step, model, optimizer) -> None:
        self.before_step()

    def on_step(self, step, model, optimizer) -> None:
        self.after_step()

    def on_epoch_end(self, epoch, metrics) -> None:
        if self.run_dir is not None and self.figure and self.history:
            self.plot(self.run_dir / "speed.png")

    # -- the measurement --------------------------------------------------------------------------------
    def _record(self) -> None:
        layers = {}
        for name, (m, own) in self._params.items():
            biases = [v.grad for p, v in own if is_bias(p)]
            weights = [v for p, v in own if not is_bias(p)]
            entry = {"module": m.describe() if hasattr(m, "describe") else type(m).__name__,
                     "bias_grad": _norm(biases) if biases else None,
                     "weight_grad": _norm([w.grad for w in weights]) if weights else None,
                     "update_ratio": None}
            before = (self._before or {}).get(name)
            if weights and before is not None:
                w_norm = _norm(before)
                delta = _norm([w.data - b for w, b in zip(weights, before)])
                entry["update_ratio"] = delta / w_norm if w_norm > 0 else None
            if isinstance(m, Recurrent) and m.gates is not None:
                entry["gates"] = gate_saturation(m)
            layers[name] = entry
        for act, a in self._outputs.items():
            layer = self._after.get(act)
            if layer is None or layer not in layers:
                continue
            kind = self._activations[act][1]
            layers[layer]["activation"] = kind
            if kind == "relu":
                layers[layer]["dead"] = dead_fraction(a)
            else:
                layers[layer]["saturated"] = saturated_fraction(kind, a)
        order = self._order + [n for n in self.layers if n not in self._seen_order]
        previous = None
        for name in order:                 # speed: a layer followed by batch norm learns through β
            if name not in layers:
                continue
            layers[name]["speed"] = layers[name]["bias_grad"]
            if previous is not None and isinstance(self._params[name][0], (BatchNorm1d, BatchNorm2d)):
                layers[previous]["speed"] = layers[name]["bias_grad"]
                layers[name]["speed"] = None
            previous = name
        nonfinite = None
        for name in order:
            if name in self._params and not all(
                    bool(backend.xp_of(v.grad).isfinite(v.grad).all()) for _, v in self._params[name][1]):
                nonfinite = name
                break
        record = {"step": self.steps, "layers": {n: layers[n] for n in order if n in layers},
                  "nonfinite": nonfinite}
        self.history.append(record)
        self._outputs = {}
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(self.run_dir / "speed.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def remove(self) -> None:
        """Detach the recorder's hooks (the records stay)."""
        self._disarm()

    # -- reading the history ---------------------------------------------------------------------------
    def series(self, key: str = "bias_grad", layers=None):
        """``(steps, values)``: the recorded steps and a ``(records, layers)`` array of ``key`` (NaN where absent)."""
        layers = list(layers) if layers is not None else self.layers
        steps = np.array([r["step"] for r in self.history])
        values = np.array([[_nan(r["layers"].get(n, {}).get(key)) for n in layers] for r in self.history],
                          dtype=np.float64).reshape(len(self.history), len(layers))
        return steps, values

    def save(self, path) -> None:
        """Write the whole history as JSON lines."""
        with open(path, "w") as f:
            for r in self.history:
                f.write(json.dumps(r) + "\n")

    def plot(self, path, layers=None, labels=None, title=None) -> None:
        """The book's "Speed of learning" figure: each layer's ``speed`` (‖∂C/∂b‖; ‖∂C/∂β‖ of the batch norm
        that follows it, if any) against steps, log y. Batch-norm modules are drawn as part of the layer before."""
        if layers is None:
            last = self.history[-1]["layers"] if self.history else {}
            layers = [n for n in self.layers if last.get(n, {}).get("speed", 0) is not None]
        layers = list(layers)
        steps, values = self.series("speed", layers)
        labels = labels or [f"layer {n}" for n in layers]
        plot_speed(steps, values[None], labels, path, title=title or "Speed of learning")


def _nan(v):
    return np.nan if v is None else v
