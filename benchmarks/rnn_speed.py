"""Recurrent-net training speed: deepscope vs PyTorch, same model, same optimizer, same data, same threads.

    python benchmarks/rnn_speed.py [--cells rnn,lstm,gru] [--threads 1,2] [--repeats 5] [--blas-core auto|SkylakeX]

For each cell C (RNN tanh, LSTM, GRU):
1. Row-by-row MNIST: C(28, 128) -> last step -> Linear(128, 10), log-likelihood cost, Adam(1e-3) with global-norm
   clipping 1.0, mini-batch 64: training images per second.
2. Character language model: Embedding(65, 64) -> C(64, 256) -> Linear(256, 65) at every step, Adam(2e-3),
   clipping 5.0, 32 streams x 100 steps, truncated BPTT with the state carried: characters per second.

Each repeat times a block of steps of deepscope and then the same block of PyTorch (alternating, so that the load
of a shared machine hits both alike); the table shows medians. Inputs are random arrays of the real shapes (speed
does not depend on the values). Every thread count runs in the same process: ``deepscope.set_num_threads(n)``
(deepscope's pool, BLAS at one thread per shard: the LSTM and the GRU run 2 blocks of the batch through time on
2 threads, the RNN's loop over time runs on one) and ``torch.set_num_threads(n)``. Writes ``benchmarks/results/rnn_speed.json``.

The GEMMs are most of a recurrent layer's time, and NumPy's OpenBLAS picks its kernels from the CPU when it is
loaded, unless ``OPENBLAS_CORETYPE`` names them. On this machine's AMD EPYC (Zen 5, AVX-512) OpenBLAS 0.3.31's own
choice is its AVX-512 "SkylakeX" kernels, but the build machines of this project set ``OPENBLAS_CORETYPE=Haswell``
(and ``OPENBLAS_L2_SIZE``) in the environment, for older OpenBLAS builds, so that a plain run gets the AVX2
kernels (the LSTM's per-step GEMMs ~1.7x slower). ``--blas-core auto`` removes both variables before NumPy loads
OpenBLAS (OpenBLAS's own choice, what a user's machine gets); ``--blas-core NAME`` sets ``OPENBLAS_CORETYPE=NAME``.
The table and the JSON name the kernels that ran and the variables as they were. PyTorch (MKL, oneDNN) is not
affected.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path


def _blas_core_from_argv(argv):
    """``--blas-core NAME`` from the command line, read before NumPy is imported (OpenBLAS reads
    ``OPENBLAS_CORETYPE`` when it is loaded)."""
    for i, a in enumerate(argv):
        if a == "--blas-core" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--blas-core="):
            return a.split("=", 1)[1]
    return None


OPENBLAS_ENV = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}   # as the run found them
if _blas_core_from_argv(sys.argv) == "auto":
    for _k in OPENBLAS_ENV:
        os.environ.pop(_k, None)
elif _blas_core_from_argv(sys.argv):
    os.environ["OPENBLAS_CORETYPE"] = _blas_core_from_argv(sys.argv)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_info  # noqa: E402

import deepscope  # noqa: E402
from deepscope import nn, optim  # noqa: E402
from deepscope.train import step  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import portable, write_json  # noqa: E402

TORCH_CELLS = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
DS_CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def _args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default: 1,2)")
    p.add_argument("--cells", default="rnn,lstm,gru")
    p.add_argument("--mnist-steps", type=int, default=20, help="training steps per timed block")
    p.add_argument("--lm-steps", type=int, default=4, help="training steps per timed block")
    p.add_argument("--out", default="rnn_speed.json", help="file name under benchmarks/results/")
    p.add_argument("--blas-core", default=None,
                   help="auto: OpenBLAS's own choice of kernels (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed); "
                        "NAME: OPENBLAS_CORETYPE=NAME, e.g. SkylakeX (default: the environment's)")
    return p.parse_args()


def ds_step(model, cost, opt):
    """One deepscope training step (:func:`deepscope.train.step`): forward, cost, backward, update. The data needs
    no gradient (``deepscope.train.fit`` sets this flag too; PyTorch's inputs do not require grad)."""
    model.needs_input_grad = False
    return lambda x, y: step(model, cost, opt, x, y)


# -- row-by-row MNIST ----------------------------------------------------------------------------------------

def ds_mnist(cell):
    deepscope.manual_seed(0)
    model = nn.Sequential(DS_CELLS[cell](28, 128), nn.LastStep(), nn.Linear(128, 10, init="xavier"))
    cost, opt = nn.LogLikelihoodCost(), optim.Adam(model.parameters(), lr=1e-3, clip_norm=1.0)
    return ds_step(model, cost, opt)


class TorchRowNet(torch.nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.rnn = TORCH_CELLS[cell](28, 128, batch_first=True)
        self.fc = torch.nn.Linear(128, 10)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])


def torch_mnist(cell):
    torch.manual_seed(0)
    model = TorchRowNet(cell)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(x, y):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return step


# -- character language model --------------------------------------------------------------------------------

def ds_lm(cell):
    deepscope.manual_seed(0)
    model = nn.Sequential(nn.Embedding(65, 64), DS_CELLS[cell](64, 256, stateful=True),
                          nn.Linear(256, 65, init="xavier"))
    cost, opt = nn.SequenceLogLikelihood(), optim.Adam(model.parameters(), lr=2e-3, clip_norm=5.0)
    return ds_step(model, cost, opt)


class TorchCharNet(torch.nn.Module):
    def __init__(self, cell):
        super().__init__()
        self.emb = torch.nn.Embedding(65, 64)
        self.rnn = TORCH_CELLS[cell](64, 256, batch_first=True)
        self.fc = torch.nn.Linear(256, 65)
        self.h = None

    def forward(self, x):
        out, h = self.rnn(self.emb(x), self.h)
        # truncated BPTT: carry the state, not the gradient
        self.h = tuple(a.detach() for a in h) if isinstance(h, tuple) else h.detach()
        return self.fc(out)


def torch_lm(cell):
    torch.manual_seed(0)
    model = TorchCharNet(cell)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def step(x, y):
        loss = torch.nn.functional.cross_entropy(model(x).reshape(-1, 65), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    return step


def timed(step, batches):
    """(wall seconds, CPU seconds of the whole process) for the block."""
    t0, c0 = time.perf_counter(), time.process_time()
    for x, y in batches:
        step(x, y)
    return time.perf_counter() - t0, time.process_time() - c0


def compare(name, unit, make_ds, make_torch, make_batch, steps, items_per_step, repeats):
    rng = np.random.default_rng(0)
    data = [make_batch(rng) for _ in range(steps)]
    th_data = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in data]
    ds_step, th_step = make_ds(), make_torch()
    timed(ds_step, data[:2])          # warm up
    timed(th_step, th_data[:2])
    ds_rates, th_rates, ds_cpu, th_cpu = [], [], [], []
    for _ in range(repeats):
        for step, d, rates, cpu in ((ds_step, data, ds_rates, ds_cpu), (th_step, th_data, th_rates, th_cpu)):
            wall, cpu_s = timed(step, d)
            rates.append(steps * items_per_step / wall)
            cpu.append(cpu_s)
    row = {"benchmark": name, "unit": unit, "deepscope": statistics.median(ds_rates),
           "torch": statistics.median(th_rates), "deepscope_all": ds_rates, "torch_all": th_rates,
           "deepscope_cpu_s": ds_cpu, "torch_cpu_s": th_cpu}
    row["ratio"] = row["deepscope"] / row["torch"]
    # Throughput per CPU second (torch's CPU time / ours): at one thread it hardly depends on the machine's load,
    # where the wall-clock ratio does; at more threads it also counts PyTorch's OpenMP threads spin-waiting.
    row["cpu_ratio"] = statistics.median(th_cpu) / statistics.median(ds_cpu)
    return row


def main():
    args = _args()
    blas = ", ".join(f"{i['internal_api']} {i['version']} {i.get('architecture')}" for i in threadpool_info()
                     if i["user_api"] == "blas")
    print(f"NumPy's BLAS: {blas} (environment found: {OPENBLAS_ENV}, --blas-core {args.blas_core})")
    rows = []
    print(f"{'threads':>7s} {'benchmark':52s} {'unit':>9s} {'deepscope':>10s} {'torch':>10s} {'ratio':>6s} "
          f"{'cpu ratio':>9s}")
    for n in [int(t) for t in args.threads.split(",")]:
        deepscope.set_num_threads(n)
        torch.set_num_threads(n)
        for cell in args.cells.split(","):
            C = cell.upper()
            for row in (
                compare(f"row-MNIST {C}(28,128)+Linear, batch 64, Adam+clip", "images/s", lambda: ds_mnist(cell),
                        lambda: torch_mnist(cell),
                        lambda r: (r.random((64, 28, 28), dtype=np.float32), r.integers(0, 10, 64)),
                        args.mnist_steps, 64, args.repeats),
                compare(f"char LM Emb(65,64)+{C}(64,256)+Linear, 32x100", "chars/s", lambda: ds_lm(cell),
                        lambda: torch_lm(cell), lambda r: (r.integers(0, 65, (32, 100)), r.integers(0, 65, (32, 100))),
                        args.lm_steps, 3200, args.repeats)):
                row.update(threads=n, cell=cell)
                rows.append(row)
                print(f"{n:7d} {row['benchmark']:52s} {row['unit']:>9s} {row['deepscope']:10,.0f} "
                      f"{row['torch']:10,.0f} {row['ratio']:6.2f} {row['cpu_ratio']:9.2f}", flush=True)
    print(f"medians of {args.repeats} alternating repeats; ratio = deepscope / torch in wall-clock throughput, "
          "cpu ratio = in throughput per CPU second of the process")
    result = {"repeats": args.repeats, "numpy": np.__version__, "torch": torch.__version__,
              "python": sys.version.split()[0], "machine": platform.machine(), "cpus": os.cpu_count(), "blas": blas,
              "openblas_env_found": OPENBLAS_ENV, "blas_core": args.blas_core,
              "load_average_at_end": os.getloadavg(), "rows": rows,
              "command": "python benchmarks/rnn_speed.py " + " ".join(sys.argv[1:])}
    path = write_json(args.out, result)
    print(f"wrote {portable(str(path))}")


if __name__ == "__main__":
    main()
