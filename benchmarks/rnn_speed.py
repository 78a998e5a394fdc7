"""Recurrent-net training speed: deepscope vs PyTorch, same model, same optimizer, same data, same threads.

    python benchmarks/rnn_speed.py [--repeats 7] [--threads 1]

1. Row-by-row MNIST: RNN(28, 128, tanh) -> last step -> Linear(128, 10), log-likelihood cost, Adam(1e-3)
   with global-norm clipping 1.0, mini-batch 64: training images per second.
2. Character language model: Embedding(65, 64) -> RNN(64, 256) -> Linear(256, 65) at every step, Adam(2e-3),
   clipping 5.0, 32 streams x 100 steps, truncated BPTT with the state carried: characters per second.

Each repeat times a block of steps of deepscope and then the same block of PyTorch (alternating, so that
the load of a shared machine hits both alike); the table shows medians. Inputs are random arrays of the
real shapes (speed does not depend on the values). NumPy's BLAS threads are set through the environment
(OPENBLAS_NUM_THREADS etc., set by this script before NumPy loads) and torch.set_num_threads to the same
number. Writes ``benchmarks/results/rnn_speed.json``.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path


def _args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--mnist-steps", type=int, default=40, help="training steps per timed block")
    p.add_argument("--lm-steps", type=int, default=10, help="training steps per timed block")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "rnn_speed.json"))
    return p.parse_args()


ARGS = _args()
for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import deepscope  # noqa: E402
from deepscope import nn, optim  # noqa: E402
from deepscope.train import step  # noqa: E402
from common import write_json  # noqa: E402

torch.set_num_threads(ARGS.threads)


# -- row-by-row MNIST ----------------------------------------------------------------------------------------

def ds_step(model, cost, opt):
    """One deepscope training step (:func:`deepscope.train.step`): forward, cost, backward, update."""
    return lambda x, y: step(model, cost, opt, x, y)


def ds_mnist():
    deepscope.manual_seed(0)
    model = nn.Sequential(nn.RNN(28, 128), nn.LastStep(), nn.Linear(128, 10, init="xavier"))
    cost, opt = nn.LogLikelihoodCost(), optim.Adam(model.parameters(), lr=1e-3, clip_norm=1.0)
    return ds_step(model, cost, opt)


class TorchRowNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.RNN(28, 128, batch_first=True)
        self.fc = torch.nn.Linear(128, 10)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])


def torch_mnist():
    torch.manual_seed(0)
    model = TorchRowNet()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(x, y):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return step


# -- character language model --------------------------------------------------------------------------------

def ds_lm():
    deepscope.manual_seed(0)
    model = nn.Sequential(nn.Embedding(65, 64), nn.RNN(64, 256, stateful=True),
                          nn.Linear(256, 65, init="xavier"))
    cost, opt = nn.SequenceLogLikelihood(), optim.Adam(model.parameters(), lr=2e-3, clip_norm=5.0)
    return ds_step(model, cost, opt)


class TorchCharNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(65, 64)
        self.rnn = torch.nn.RNN(64, 256, batch_first=True)
        self.fc = torch.nn.Linear(256, 65)
        self.h = None

    def forward(self, x):
        out, h = self.rnn(self.emb(x), self.h)
        self.h = h.detach()                      # truncated BPTT: carry the state, not the gradient
        return self.fc(out)


def torch_lm():
    torch.manual_seed(0)
    model = TorchCharNet()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def step(x, y):
        loss = torch.nn.functional.cross_entropy(model(x).reshape(-1, 65), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    return step


def timed(step, batches):
    t0 = time.perf_counter()
    for x, y in batches:
        step(x, y)
    return time.perf_counter() - t0


def compare(name, unit, make_ds, make_torch, make_batch, steps, items_per_step):
    rng = np.random.default_rng(0)
    data = [make_batch(rng) for _ in range(steps)]
    ds_data = data
    th_data = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in data]
    ds_step, th_step = make_ds(), make_torch()
    timed(ds_step, ds_data[:3])          # warm up
    timed(th_step, th_data[:3])
    ds_rates, th_rates = [], []
    for _ in range(ARGS.repeats):
        ds_rates.append(steps * items_per_step / timed(ds_step, ds_data))
        th_rates.append(steps * items_per_step / timed(th_step, th_data))
    row = {"benchmark": name, "unit": unit, "deepscope": statistics.median(ds_rates),
           "torch": statistics.median(th_rates), "deepscope_all": ds_rates, "torch_all": th_rates}
    row["ratio"] = row["deepscope"] / row["torch"]
    return row


def main():
    rows = [
        compare("row-MNIST RNN(28,128)+Linear, batch 64, Adam+clip", "images/s", ds_mnist, torch_mnist,
                lambda r: (r.random((64, 28, 28), dtype=np.float32), r.integers(0, 10, 64)),
                ARGS.mnist_steps, 64),
        compare("char LM Emb(65,64)+RNN(64,256)+Linear, 32x100, Adam+clip", "chars/s", ds_lm, torch_lm,
                lambda r: (r.integers(0, 65, (32, 100)), r.integers(0, 65, (32, 100))),
                ARGS.lm_steps, 3200),
    ]
    print(f"threads: NumPy BLAS {ARGS.threads}, torch {torch.get_num_threads()}; medians of {ARGS.repeats} "
          f"alternating repeats")
    print(f"{'benchmark':58s} {'unit':>9s} {'deepscope':>10s} {'torch':>10s} {'ratio':>6s}")
    for r in rows:
        print(f"{r['benchmark']:58s} {r['unit']:>9s} {r['deepscope']:10,.0f} {r['torch']:10,.0f} {r['ratio']:6.2f}")
    result = {"threads": ARGS.threads, "repeats": ARGS.repeats, "numpy": np.__version__,
              "torch": torch.__version__, "python": sys.version.split()[0], "machine": platform.machine(),
              "cpus": os.cpu_count(), "rows": rows, "command": "python benchmarks/rnn_speed.py " +
              " ".join(sys.argv[1:])}
    Path(ARGS.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(ARGS.out, result)
    print(f"wrote {ARGS.out}")


if __name__ == "__main__":
    main()
