"""The cures of chapter 5's unstable gradient, measured: batch normalisation and residual connections.

    python benchmarks/cures.py --pair sigmoid     784-100*20-10:sigmoid  vs  784-100bn*20-10:sigmoid
    python benchmarks/cures.py --pair relu        784-100*30-10:relu     vs  784-100-res100*14-100-10:relu

(20 hidden sigmoid layers of 100, and 30 hidden ReLU layers of 100: the residual net has the same 30 hidden
Linear maps, 28 of them in 14 two-layer blocks with identity skips.) For each net: the speed of learning of
every hidden layer, the book's ‖∂C/∂b‖ over the first 1,000 training images, at initialisation and after 500
steps (after a Linear followed by batch norm the Linear's bias gets no gradient — the normalisation removes
it — and the hidden layer's bias is the batch norm's β, so ‖∂C/∂β‖ is its speed); the ratio last/first; and
the test accuracy after training (SGD, momentum 0.9, mini-batch 64, softmax + log-likelihood, the book's
50k/10k/10k split). Prints a table, writes ``results/cures_<pair>.json`` and ``docs/figures/cures_<pair>.png``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

import deepscope as ds
from deepscope import arch, backend, nn, optim
from deepscope.data import load_mnist
from deepscope.figures import plot_layer_speeds
from deepscope.train import evaluate, step

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, table, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DEEPSCOPE_DATA", ROOT.parent / "shared/data"))
PAIRS = {
    "sigmoid": [("plain", "784-100*20-10:sigmoid"), ("batch norm", "784-100bn*20-10:sigmoid")],
    "relu": [("plain", "784-100*30-10:relu"), ("residual", "784-100-res100*14-100-10:relu")],
}
INITS = {"sigmoid": "book", "relu": "he"}


def speed_layers(model) -> list:
    """The modules whose bias gradient is each hidden layer's speed, in forward order: every Linear's bias,
    except a Linear followed by batch norm (its β instead); the output layer excluded."""
    found = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and found and isinstance(found[-1][1], nn.Linear):
            found[-1] = (name, m)                 # the bias the cost can see is β
        elif isinstance(m, nn.Linear):
            found.append((name, m))
    return [m for _, m in found[:-1]]


def layer_speeds(model, cost, X, y) -> list:
    """‖∂C/∂b‖ of every hidden layer, the gradient of the mean cost over ``(X, y)``."""
    model.train()
    model.zero_grad()
    cost(model(X), y)
    model.backward(cost.backward())
    speeds = [math.sqrt(float((m.bias.grad.astype(np.float64) ** 2).sum())) for m in speed_layers(model)]
    model.zero_grad()
    return speeds


def run_net(name, arch_string, init, data, steps_at, epochs, lr, seed):
    ds.manual_seed(seed)
    model = arch.build(arch_string, init=init)
    cost = nn.LogLikelihoodCost()
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    X, y = data.train
    Xs, ys = X[:1000], y[:1000]
    speeds = {0: layer_speeds(model, cost, Xs, ys)}
    rng = np.random.default_rng(seed)
    k, t0, m = 0, time.perf_counter(), 64
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(epochs):
            order = rng.permutation(len(X))
            for i in range(0, len(X) - m + 1, m):
                idx = order[i:i + m]
                loss, _ = step(model, cost, opt, X[idx], y[idx], before_update=lambda loss: None)
                k += 1
                if k == steps_at:
                    speeds[k] = layer_speeds(model, cost, Xs, ys)
                if not math.isfinite(loss):
                    break
            if not math.isfinite(loss):
                print(f"{name}: the cost became {loss} at step {k}; stopped", flush=True)
                break
    model.eval()
    acc = evaluate(model, *data.test)
    wall = time.perf_counter() - t0
    s0, s1 = speeds[0], speeds.get(steps_at, [float("nan")] * len(speeds[0]))
    row = {"net": name, "arch": arch_string, "init": init, "test_acc": acc, "steps": k, "wall_s": wall,
           "ratio_last_first_init": s0[-1] / s0[0], "ratio_last_first_trained": s1[-1] / s1[0],
           "first_init": s0[0], "last_init": s0[-1], "first_trained": s1[0], "last_trained": s1[-1]}
    print(f"{name:12s} {arch_string}: test {acc:.2%}, speeds last/first {row['ratio_last_first_init']:.3g} at "
          f"init, {row['ratio_last_first_trained']:.3g} after {steps_at} steps ({wall:.0f} s)", flush=True)
    return row, {"init": s0, "trained": s1, "trained_step": steps_at}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", choices=sorted(PAIRS), required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--steps-at", type=int, default=500, help="when to measure the trained speeds (steps)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    data = load_mnist(data_dir=DATA / "mnist")
    rows, curves = [], {}
    for name, a in PAIRS[args.pair]:
        row, curve = run_net(name, a, INITS[args.pair], data, args.steps_at, args.epochs, args.lr, args.seed)
        rows.append(row)
        curves[name] = curve
    print(table(rows, ["net", "test_acc", "ratio_last_first_init", "ratio_last_first_trained", "wall_s"]))
    fig = plot_layer_speeds(curves, ROOT / "docs/figures" / f"cures_{args.pair}.png",
                            title=f"Speed of learning by layer: {args.pair} nets, plain and cured")
    write_json(f"cures_{args.pair}.json", {"machine": machine(), "command": "python benchmarks/cures.py " +
                                           " ".join(sys.argv[1:] if argv is None else argv),
                                           "config": vars(args), "rows": rows, "speeds": curves})
    print(f"figure: {fig.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
