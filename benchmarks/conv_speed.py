"""Convolutional nets: deepscope (NumPy) against PyTorch on the CPU, the same nets in the same run.

Nets (input 1×28×28, 10 classes, log-likelihood cost = softmax + cross-entropy):
  rung1    conv(1→20, 5×5) → maxpool 2 → sigmoid → FC 2880→100 sigmoid → FC 100→10          (book ch. 6, first net)
  rung3    conv20×5 → maxpool2 → relu → conv40×5 → maxpool2 → relu → FC 640→100 relu → FC 100→10
  rung3bn  rung3 with batch norm after each conv and the FC 640→100, before the activation
           (``conv20x5bn-maxpool2-conv40x5bn-maxpool2-fc100bn-softmax10:relu``; PyTorch: BatchNorm2d/1d)
  dropout  rung3's convolutions, then dropout 0.5 before each of FC 640→1000 relu, 1000→1000 relu, 1000→10

When rung3 and rung3bn both run, a second table gives batch norm's cost: each framework's training and
inference time per image with batch norm over without (from the medians above), and deepscope / PyTorch.

For mini-batches of 10, 64 and 256 it measures
  * training images/s: forward, backward and one plain SGD step per mini-batch;
  * inference images/s: forward only, eval mode (``torch.inference_mode`` for PyTorch);
  * peak memory of one training step: the growth of the process's peak resident set (VmHWM, reset through
    /proc/self/clear_refs) over two training steps after a warm-up step at mini-batch 2 (imports, compiled
    kernels and first-call set-up are not a step's memory), in a fresh subprocess per framework, net and batch size —
    the same yardstick for both (tracemalloc cannot see PyTorch's allocations). For deepscope it also reports
    the tracemalloc peak (NumPy reports its array allocations to tracemalloc) of one step;
  * the machine's float32 GEMM peak (a 2048³ NumPy matmul, median of repeats, in the same run) and the
    fraction of it each framework reaches: FLOPs per image = 2·(multiply-adds of the conv and FC layers) for
    inference and 3× that for training (forward, ∂/∂input, ∂/∂weights).

Timings alternate deepscope and PyTorch, repeat, and report medians: the machine is shared and noisy.
Both frameworks get the same number of threads, ``--threads`` (default: the CPU cores):
``deepscope.set_num_threads`` (deepscope's threads, BLAS at one thread in each) and ``torch.set_num_threads``.
(benchmarks/cpu_speed.py measures 1 and 2 threads in one process.) The results published before issue 11 used
``--threads 1``: on the shared 2-core machine (load average 4-10) OpenBLAS with 2 threads collapsed in
training (rung3, mini-batch 256: 39-58 images/s against PyTorch's 381-1730 in quick runs), while one
thread each gave stable numbers. Input images are uniform random numbers (speed does not depend on the pixel values).

    python benchmarks/conv_speed.py            # full run, writes benchmarks/results/conv_speed.json
    python benchmarks/conv_speed.py --quick    # a few iterations, to check that it runs
    python benchmarks/conv_speed.py --threads 1 --nets rung3,rung3bn --batches 64,256 --no-memory \
        --out benchmarks/results/conv_speed_bn.json             # batch norm's cost
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

from thread_option import threads_from_argv


# OpenBLAS reads its thread count when NumPy is imported, so it is set before the import.
THREADS = threads_from_argv(sys.argv, default=os.cpu_count() or 1)
os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(THREADS)

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import deepscope as ds  # noqa: E402
from deepscope import arch, nn, optim  # noqa: E402

ds.set_num_threads(THREADS)
from deepscope.train import step  # noqa: E402
from common import write_json  # noqa: E402

NETS = ("rung1", "rung3", "rung3bn", "dropout")
RUNG3BN = "conv20x5bn-maxpool2-conv40x5bn-maxpool2-fc100bn-softmax10:relu"
BATCHES = (10, 64, 256)
ETA = 0.03


# -- the nets ----------------------------------------------------------------------------------------
def build_deepscope(name: str):
    if name == "fc100":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.Sigmoid(), nn.Linear(100, 10))
    if name == "rung1":
        return nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.Sigmoid(), nn.Flatten(),
                             nn.Linear(2880, 100), nn.Sigmoid(), nn.Linear(100, 10))
    convs = [nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(20, 40, 5), nn.MaxPool2d(2), nn.ReLU(),
             nn.Flatten()]
    if name == "rung3":
        return nn.Sequential(*convs, nn.Linear(640, 100), nn.ReLU(), nn.Linear(100, 10))
    if name == "rung3bn":       # Conv2d → BatchNorm2d → MaxPool2d → ReLU, …, Linear → BatchNorm1d → ReLU
        return arch.build(RUNG3BN)
    if name == "dropout":
        return nn.Sequential(*convs, nn.Dropout(0.5), nn.Linear(640, 1000), nn.ReLU(), nn.Dropout(0.5),
                             nn.Linear(1000, 1000), nn.ReLU(), nn.Dropout(0.5), nn.Linear(1000, 10))
    raise ValueError(name)


def build_torch(name: str, ours):
    """The same net in PyTorch, with deepscope's weights copied in."""
    import torch
    T = torch.nn
    layers = []
    for m in ours:
        if isinstance(m, nn.Conv2d):
            layers.append(T.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding))
        elif isinstance(m, nn.MaxPool2d):
            layers.append(T.MaxPool2d(m.kernel_size, m.stride))
        elif isinstance(m, nn.Linear):
            layers.append(T.Linear(m.in_features, m.out_features))
        elif isinstance(m, nn.Dropout):
            layers.append(T.Dropout(m.p))
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            cls = T.BatchNorm2d if isinstance(m, nn.BatchNorm2d) else T.BatchNorm1d
            layers.append(cls(m.num_features, eps=m.eps, momentum=m.momentum))
        else:
            layers.append({"Sigmoid": T.Sigmoid, "ReLU": T.ReLU, "Flatten": T.Flatten}[type(m).__name__]())
    net = T.Sequential(*layers)
    net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in ours.state_dict().items()})
    return net


def flops_per_image(net) -> int:
    """2 × multiply-adds of the conv and FC layers for one 1×28×28 image (forward)."""
    x = np.zeros((1, 1, 28, 28), dtype=np.float32)
    total = 0
    net.eval()                             # batch norm: one image has no batch statistics
    for m in net:
        y = m(x)
        if isinstance(m, nn.Conv2d):
            total += 2 * y.size * m.in_channels * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += 2 * m.in_features * m.out_features
        x = y
    return total


# -- one framework's steps ----------------------------------------------------------------------------
class DeepscopeRunner:
    def __init__(self, name, batch, seed=0, input_grad=True):
        ds.manual_seed(seed)
        self.net = build_deepscope(name)
        self.net.needs_input_grad = input_grad        # False: the data needs no gradient (PyTorch skips it too)
        self.cost = nn.LogLikelihoodCost()
        self.opt = optim.SGD(self.net.parameters(), lr=ETA)
        rng = np.random.default_rng(seed)
        self.x = rng.random((batch, 1, 28, 28), dtype=np.float32)
        self.y = rng.integers(0, 10, batch)

    def train_step(self):
        self.net.train()
        step(self.net, self.cost, self.opt, self.x, self.y)

    def infer_step(self):
        self.net.eval()
        return self.net(self.x)


class TorchRunner:
    def __init__(self, name, batch, seed=0):
        import torch
        self.torch = torch
        ds.manual_seed(seed)
        self.net = build_torch(name, build_deepscope(name))
        self.opt = torch.optim.SGD(self.net.parameters(), lr=ETA)
        rng = np.random.default_rng(seed)
        self.x = torch.from_numpy(rng.random((batch, 1, 28, 28), dtype=np.float32))
        self.y = torch.from_numpy(rng.integers(0, 10, batch))

    def train_step(self):
        self.net.train()
        loss = self.torch.nn.functional.cross_entropy(self.net(self.x), self.y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()

    def infer_step(self):
        self.net.eval()
        with self.torch.inference_mode():
            return self.net(self.x)


def _timed(fn, iters):
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return time.perf_counter() - t0


def speed(names, batch, repeats, images):
    """Median images/s for training and inference of the nets ``names``, deepscope and PyTorch, every runner
    timed in turn (the order reversed every repeat), so that ratios between them are taken at the same load.
    Returns ``{name: {framework: {mode: images/s, mode_seconds: [seconds of each repeat]}}}``."""
    iters = max(2, images // batch)
    runners = {(name, fw): cls(name, batch) for name in names
               for fw, cls in (("deepscope", DeepscopeRunner), ("pytorch", TorchRunner))}
    out = {}
    for mode in ("train", "infer"):
        times = {k: [] for k in runners}
        for r in runners.values():                      # warm up (allocations, first-call costs)
            for _ in range(2):
                getattr(r, f"{mode}_step")()
        for rep in range(repeats):
            order = list(runners) if rep % 2 == 0 else list(reversed(runners))
            for k in order:
                times[k].append(_timed(getattr(runners[k], f"{mode}_step"), iters))
        for (name, fw), ts in times.items():
            out.setdefault(name, {}).setdefault(fw, {})[mode] = iters * batch / statistics.median(ts)
            out[name][fw][f"{mode}_seconds"] = ts
    return out


# -- memory, in a fresh process ------------------------------------------------------------------------
def _vm(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(framework, name, batch):
    """Run in a subprocess: print peak-RSS growth over two training steps (and deepscope's tracemalloc peak),
    after a warm-up step at mini-batch 2 and ``malloc_trim``: imports, compiled kernels and first-call set-up are
    not a step's memory (as ``cpu_speed.memory`` measures it)."""
    if framework == "pytorch":
        import torch
        torch.set_num_threads(THREADS)
        make = TorchRunner
    else:
        make = DeepscopeRunner
    warm = make(name, 2)
    warm.train_step()
    r = make(name, batch)
    del warm
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)   # hand freed heap back, so the peak below is the step's own
    result = {}
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                      # reset VmHWM (peak RSS) to the current RSS
    base = _vm("VmRSS")
    r.train_step()
    r.train_step()
    result["rss_peak_growth"] = _vm("VmHWM") - base
    if framework == "deepscope":          # NumPy's own count of the bytes its arrays hold, one step
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        r.train_step()
        result["tracemalloc_peak"] = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    print(json.dumps(result))


def memory(framework, name, batch):
    out = subprocess.run([sys.executable, __file__, "--threads", str(THREADS), "--memory-child", framework,
                          name, str(batch)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def gemm_peak(repeats=5, n=2048):
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = np.random.default_rng(1).random((n, n), dtype=np.float32)
    a @ b
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(ts)


def _row(name, batch, s, peak, with_memory) -> dict:
    """One net and mini-batch size: speeds (``s``: {framework: {mode: images/s}}), ratios and memory; printed."""
    fpi = flops_per_image(build_deepscope(name))
    row = {"net": name, "batch": batch, "flops_per_image_forward": fpi}
    for fw in ("deepscope", "pytorch"):
        row[fw] = {"train_images_per_s": s[fw]["train"], "infer_images_per_s": s[fw]["infer"],
                   "train_seconds": s[fw]["train_seconds"], "infer_seconds": s[fw]["infer_seconds"],
                   "train_fraction_of_gemm_peak": s[fw]["train"] * 3 * fpi / peak,
                   "infer_fraction_of_gemm_peak": s[fw]["infer"] * fpi / peak}
        if with_memory:
            row[fw].update(memory(fw, name, batch))
    row["train_ratio"] = s["deepscope"]["train"] / s["pytorch"]["train"]
    row["infer_ratio"] = s["deepscope"]["infer"] / s["pytorch"]["infer"]
    mem = "      n/a     n/a    n/a"
    if with_memory:
        md, mt = row["deepscope"]["rss_peak_growth"], row["pytorch"]["rss_peak_growth"]
        row["memory_ratio"] = md / max(mt, 1)
        mem = f"{md / 1e6:9.1f} {mt / 1e6:7.1f} {row['memory_ratio']:6.2f}"
    d, t = row["deepscope"], row["pytorch"]
    print(f"{name:8} {batch:4d} | {d['train_images_per_s']:14.0f} {t['train_images_per_s']:8.0f} "
          f"{row['train_ratio']:6.2f} | {d['infer_images_per_s']:14.0f} {t['infer_images_per_s']:8.0f} "
          f"{row['infer_ratio']:6.2f} | {mem} | {100 * d['train_fraction_of_gemm_peak']:10.1f}% "
          f"{100 * t['train_fraction_of_gemm_peak']:5.1f}%", flush=True)
    return row


def batchnorm_cost(rows) -> list[dict]:
    """Batch norm's cost from the rung3 and rung3bn rows of each mini-batch size (timed together): per framework
    and mode, the time with batch norm / without as the median over repeats of the ratio of each repeat's two
    timings (paired, so that a change of load between repeats cancels), and the extra microseconds per image
    from the medians; printed as a table."""
    by = {(r["net"], r["batch"]): r for r in rows}
    out = []
    for batch in sorted({b for n, b in by if n == "rung3bn" and ("rung3", b) in by}):
        plain, bn = by[("rung3", batch)], by[("rung3bn", batch)]
        row = {"batch": batch}
        for fw in ("deepscope", "pytorch"):
            for mode in ("train", "infer"):
                pairs = zip(bn[fw][f"{mode}_seconds"], plain[fw][f"{mode}_seconds"])
                row[f"{fw}_{mode}_time_ratio"] = statistics.median(b / p for b, p in pairs)
                p, b = plain[fw][f"{mode}_images_per_s"], bn[fw][f"{mode}_images_per_s"]
                row[f"{fw}_{mode}_extra_us_per_image"] = 1e6 * (1 / b - 1 / p)
        for mode in ("train", "infer"):
            row[f"{mode}_ratio_bn_net"] = bn[f"{mode}_ratio"]            # deepscope / PyTorch speed, with bn
            row[f"{mode}_ratio_plain_net"] = plain[f"{mode}_ratio"]
        out.append(row)
    if out:
        print("\nbatch norm's cost in rung3 (time with bn / without, median of paired repeats; extra µs per image "
              "from the medians; speed deepscope/PyTorch of each net)")
        print(f"{'mb':>4} {'mode':5} | {'ds bn/plain':>11} {'ds +µs':>8} | {'torch bn/plain':>14} {'torch +µs':>9} | "
              f"{'ds/torch plain':>14} {'ds/torch bn':>11}")
        for r in out:
            for mode in ("train", "infer"):
                print(f"{r['batch']:4d} {mode:5} | {r[f'deepscope_{mode}_time_ratio']:11.2f} "
                      f"{r[f'deepscope_{mode}_extra_us_per_image']:8.0f} | {r[f'pytorch_{mode}_time_ratio']:14.2f} "
                      f"{r[f'pytorch_{mode}_extra_us_per_image']:9.0f} | {r[f'{mode}_ratio_plain_net']:14.2f} "
                      f"{r[f'{mode}_ratio_bn_net']:11.2f}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few iterations per timing (checks that it runs)")
    ap.add_argument("--repeats", type=int, default=None, help="timings per framework (median taken; default 7, "
                                                               "3 with --quick)")
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--threads", type=int, default=THREADS,
                    help="threads for deepscope (deepscope.set_num_threads) and PyTorch (default: CPU cores)")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/conv_speed.json"))
    ap.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        fw, name, batch = args.memory_child
        return memory_child(fw, name, int(batch))

    import torch
    torch.set_num_threads(THREADS)
    repeats = args.repeats or (3 if args.quick else 7)
    images = 320 if args.quick else 1280
    nets = args.nets.split(",")
    batches = [int(b) for b in args.batches.split(",")]

    peak = gemm_peak()
    print(f"float32 GEMM peak (NumPy 2048^3 matmul): {peak / 1e9:.1f} GFLOP/s; threads: {THREADS}; "
          f"repeats: {repeats}; ~{images} images per timing")
    header = (f"{'net':8} {'mb':>4} | {'train img/s ds':>14} {'torch':>8} {'ratio':>6} | "
              f"{'infer img/s ds':>14} {'torch':>8} {'ratio':>6} | {'mem MB ds':>9} {'torch':>7} {'ratio':>6} | "
              f"{'%peak tr ds':>11} {'torch':>6}")
    print(header)
    print("-" * len(header))
    # rung3 and rung3bn are timed together (interleaved), so that batch norm's cost is read at one load
    groups = [["rung3", "rung3bn"]] if {"rung3", "rung3bn"} <= set(nets) else []
    groups += [[n] for n in nets if not any(n in g for g in groups)]
    groups.sort(key=lambda g: nets.index(g[0]))
    rows = []
    for group in groups:
        for batch in batches:
            measured = speed(group, batch, repeats, images)
            for name in group:
                rows.append(_row(name, batch, measured[name], peak, not args.no_memory))
    bn_cost = batchnorm_cost(rows)
    result = {
        "command": "python benchmarks/conv_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": args.quick, "repeats": repeats, "images_per_timing": images, "threads": THREADS,
        "gemm_peak_flops": peak, "numpy": np.__version__, "torch": torch.__version__,
        "machine": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
        "memory_measure": "peak RSS growth (VmHWM after /proc/self/clear_refs) over two training steps, "
                          "fresh subprocess per framework/net/batch; deepscope also: tracemalloc peak of one step",
        "flops_measure": "forward = 2 x multiply-adds of conv+FC layers per image; training = 3 x forward",
        "rows": rows, "batchnorm_cost": bn_cost,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
