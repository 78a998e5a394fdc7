"""The book's simplest deep net: one sigmoid neuron per layer, and why its gradient vanishes (or explodes).

Layer j has one weight w_j and one bias b_j; with input a_0 = x,

    z_j = w_j a_{j-1} + b_j,      a_j = σ(z_j),      j = 1 … L,

and the cost is the quadratic cost of the output, C = ½ (a_L - y)², so ∂C/∂a_L = a_L - y (with
``cost="crossentropy"``, C = -[y ln a_L + (1-y) ln(1-a_L)] and ∂C/∂a_L = (a_L - y) / (a_L (1 - a_L))).
Following the chain of changes from b_1 to C (Nielsen, ch. 5, "What's causing the vanishing gradient
problem?"):

    ∂C/∂b_1 = σ'(z_1) · w_2 σ'(z_2) · w_3 σ'(z_3) ⋯ w_L σ'(z_L) · ∂C/∂a_L.

σ'(z) ≤ 1/4, so with the usual |w_j| < 1 every factor w_j σ'(z_j) is below 1/4 and the gradient shrinks
geometrically towards the first layer. Choose w_j = 100 and biases that make every z_j = 0 (σ'(0) = 1/4)
and each factor is 25: the gradient *explodes* instead.

:func:`chain_gradient` builds the chain from deepscope's own ``Linear(1, 1)`` and ``Sigmoid`` layers, runs
backpropagation, and returns the bias gradient beside the product formula; the two agree to rounding.
"""
from __future__ import annotations

import numpy as np

from ... import backend, nn
from ...nn.activation import sigmoid


def build_chain(weights, biases) -> nn.Sequential:
    """Linear(1,1) → Sigmoid → … → Linear(1,1) with the given weights and biases, in float64.
    The last sigmoid is the cost's (deepscope's costs apply the output neuron themselves)."""
    layers = []
    for j, (w, b) in enumerate(zip(weights, biases)):
        lin = nn.Linear(1, 1, init="zeros").to("float64")
        lin.weight.data[...] = w
        lin.bias.data[...] = b
        layers.append(lin)
        if j < len(weights) - 1:
            layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


def exploding_chain(depth: int, x: float = 1.0, w: float = 100.0):
    """Weights w_j = ``w`` and biases b_1 = -w·x, b_j = -w·σ(0) = -w/2, so that every z_j = 0."""
    weights = [w] * depth
    biases = [-w * x] + [-w * 0.5] * (depth - 1)
    return weights, biases


def random_chain(depth: int, seed: int = 0):
    """Weights and biases as the book initialises them for one input: w, b ~ N(0, 1) (``init="book"``)."""
    backend.manual_seed(seed)
    layers = [nn.Linear(1, 1, init="book") for _ in range(depth)]
    return ([float(lay.weight.data[0, 0]) for lay in layers], [float(lay.bias.data[0]) for lay in layers])


def chain_gradient(weights, biases, x: float = 1.0, y: float = 0.0, cost: str = "quadratic") -> dict:
    """The factors of ∂C/∂b_1 for a one-neuron-per-layer sigmoid chain, and ∂C/∂b_1 two ways.

    Returns a dict with lists ``z``, ``sigma_prime``, ``w``, ``terms`` (w_j σ'(z_j) for j ≥ 2), the floats
    ``product`` (Π_{j≥2} w_j σ'(z_j)), ``dC_da_L``, ``formula`` (σ'(z_1) · product · ∂C/∂a_L) and
    ``backprop`` (the first layer's ``bias.grad`` after deepscope's backward pass), and ``a_L``, ``cost``.
    """
    if len(weights) != len(biases) or not weights:
        raise ValueError(f"chain: {len(weights)} weights but {len(biases)} biases (need the same number, >= 1)")
    # The formula, from the forward values.
    a, zs = float(x), []
    for w, b in zip(weights, biases):
        z = w * a + b
        zs.append(z)
        a = float(sigmoid(np.float64(z)))
    a_L = a
    sp = [float(sigmoid(np.float64(z)) * (1 - sigmoid(np.float64(z)))) for z in zs]
    terms = [w * s for w, s in zip(weights[1:], sp[1:])]
    if cost == "quadratic":
        dC_da = a_L - y
        loss_fn = nn.QuadraticCost()
    elif cost == "crossentropy":
        dC_da = (a_L - y) / (a_L * (1 - a_L))
        loss_fn = nn.CrossEntropyCost()
    else:
        raise ValueError(f"chain: cost must be 'quadratic' or 'crossentropy', got {cost!r}")
    product = float(np.prod(terms)) if terms else 1.0
    formula = sp[0] * product * dC_da

    # Backpropagation through deepscope's layers.
    model = build_chain(weights, biases)
    xin = np.array([[x]], dtype=np.float64)
    loss = loss_fn(model(xin), np.array([[y]], dtype=np.float64))
    model.zero_grad()
    model.backward(loss_fn.backward())
    backprop = float(model[0].bias.grad[0])
    return {"z": zs, "sigma_prime": sp, "w": list(map(float, weights)), "b": list(map(float, biases)),
            "terms": terms, "product": product, "a_L": a_L, "dC_da_L": dC_da, "formula": formula,
            "backprop": backprop, "cost": cost, "loss": loss}


def format_chain(r: dict) -> str:
    """A table of the factors and the two values of ∂C/∂b_1."""
    lines = [f"{'j':>3} {'z_j':>12} {'σ′(z_j)':>12} {'w_j':>12} {'w_j σ′(z_j)':>14}"]
    for j, (z, s, w) in enumerate(zip(r["z"], r["sigma_prime"], r["w"]), start=1):
        term = f"{w * s:14.6g}" if j > 1 else f"{'':>14}"
        lines.append(f"{j:>3} {z:12.6g} {s:12.6g} {w:12.6g} {term}")
    cost = "quadratic C = ½(a_L - y)²" if r["cost"] == "quadratic" else "cross-entropy"
    rel = abs(r["formula"] - r["backprop"]) / max(abs(r["formula"]), 1e-300)
    lines += [
        f"product Π_(j=2..L) w_j σ′(z_j)      = {r['product']:.10g}",
        f"a_L = {r['a_L']:.6g}; cost: {cost}; ∂C/∂a_L = {r['dC_da_L']:.10g}",
        f"∂C/∂b_1 by the formula σ′(z_1)·Π·∂C/∂a_L = {r['formula']:.12g}",
        f"∂C/∂b_1 by backprop (deepscope layers)  = {r['backprop']:.12g}",
        f"relative difference                     = {rel:.2e}",
    ]
    return "\n".join(lines)
