"""Training throughput of fully connected nets: deepscope vs PyTorch (CPU) vs a network2.py-style
per-example loop, same nets, same data, same process, alternating; medians of repeats.

    python benchmarks/fc_speed.py [--repeats 5] [--images 10000]

Nets: [784,30,10] and [784,100,10], sigmoid, the book's cross-entropy cost, plain SGD, mini-batch 10 and 64.
Data: random images in [0,1] with random labels (throughput does not depend on the pixels).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

import deepscope as ds
from deepscope import arch, nn, optim
from deepscope.train import fit

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import alternate, machine, median, table, write_json  # noqa: E402


def deepscope_run(sizes, X, y, m):
    ds.manual_seed(0)
    model = arch.build("-".join(map(str, sizes)) + ":sigmoid")
    opt = optim.SGD(model.parameters(), lr=0.1)
    return lambda: fit(model, nn.CrossEntropyCost(), opt, (X, y), epochs=1, batch_size=m, callbacks=[])


def torch_run(sizes, X, y, m):
    torch.manual_seed(0)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.Sigmoid()]
    model = torch.nn.Sequential(*layers[:-1])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    onehot = torch.nn.functional.one_hot(yt, sizes[-1]).float()
    gen = torch.Generator().manual_seed(0)

    def run():
        order = torch.randperm(len(Xt), generator=gen)
        for i in range(0, len(Xt), m):
            idx = order[i:i + m]
            out = model(Xt[idx])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out, onehot[idx], reduction="sum") / len(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return run


def network2_run(sizes, X, y, m):
    """Nielsen's network2.py update_mini_batch/backprop: one example at a time, column vectors."""
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((b, a)) / np.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [rng.standard_normal((b, 1)) for b in sizes[1:]]
    data = [(x.reshape(-1, 1).astype(np.float64), np.eye(sizes[-1])[[t]].T) for x, t in zip(X, y)]
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731

    def backprop(x, t):
        activation, activations, zs = x, [x], []
        for b, w in zip(biases, weights):
            z = np.dot(w, activation) + b
            zs.append(z)
            activation = sig(z)
            activations.append(activation)
        delta = activations[-1] - t
        nb, nw = [None] * len(biases), [None] * len(weights)
        nb[-1], nw[-1] = delta, np.dot(delta, activations[-2].T)
        for l in range(2, len(sizes)):
            sp = sig(zs[-l]) * (1 - sig(zs[-l]))
            delta = np.dot(weights[-l + 1].T, delta) * sp
            nb[-l], nw[-l] = delta, np.dot(delta, activations[-l - 1].T)
        return nb, nw

    def run():
        order = rng.permutation(len(data))
        for i in range(0, len(data), m):
            batch = [data[j] for j in order[i:i + m]]
            nabla_b = [np.zeros(b.shape) for b in biases]
            nabla_w = [np.zeros(w.shape) for w in weights]
            for x, t in batch:
                db, dw = backprop(x, t)
                nabla_b = [nb + d for nb, d in zip(nabla_b, db)]
                nabla_w = [nw + d for nw, d in zip(nabla_w, dw)]
            for k in range(len(weights)):
                weights[k] -= (0.1 / len(batch)) * nabla_w[k]
                biases[k] -= (0.1 / len(batch)) * nabla_b[k]
    return run


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--images", type=int, default=10000, help="images per timed epoch")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for deepscope (deepscope.set_num_threads) and torch (default: each its own)")
    p.add_argument("--out", default="fc_speed.json", help="file name under benchmarks/results/")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
        ds.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    X = rng.random((args.images, 784), dtype=np.float32)
    y = rng.integers(0, 10, args.images)
    rows = []
    for sizes in ([784, 30, 10], [784, 100, 10]):
        for m in (10, 64):
            fns = {"deepscope": deepscope_run(sizes, X, y, m), "torch": torch_run(sizes, X, y, m),
                   "network2": network2_run(sizes, X, y, m)}
            for fn in fns.values():  # warm-up
                fn()
            times = alternate(fns, args.repeats)
            ips = {k: args.images / median(v) for k, v in times.items()}
            rows.append({"net": str(sizes), "batch": m, "deepscope img/s": ips["deepscope"],
                         "torch img/s": ips["torch"], "network2 img/s": ips["network2"],
                         "vs torch": ips["deepscope"] / ips["torch"],
                         "vs network2": ips["deepscope"] / ips["network2"],
                         "times": {k: v for k, v in times.items()}})
            print(table(rows[-1:], ["net", "batch", "deepscope img/s", "torch img/s", "network2 img/s",
                                    "vs torch", "vs network2"]).splitlines()[-1], flush=True)
    cols = ["net", "batch", "deepscope img/s", "torch img/s", "network2 img/s", "vs torch", "vs network2"]
    print()
    print(table(rows, cols))
    info = {"machine": machine(), "deepscope_threads": ds.get_num_threads(),
            "command": "python " + " ".join(sys.argv), "repeats": args.repeats, "images": args.images}
    path = write_json(args.out, {**info, "rows": rows})
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
