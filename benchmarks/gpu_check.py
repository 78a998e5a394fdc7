"""Everything issue 12 asks of a real GPU, in one script for one lease of the device machine.

    python benchmarks/gpu_check.py layers speed train rungs --data-dir .gpu-data/mnist --out "$OUT"

Sections (each writes ``OUT/gpu_<section>.json`` and never stops the others when it fails):

  layers  every layer and cost on CuPy against the same layer on NumPy, same weights and inputs: the output and
          every gradient (∂C/∂x and each Parameter.grad), float64 (rtol 1e-10) and float32 (rtol 1e-5);
  speed   training images/s of rung 3 and the dropout net, deepscope on CuPy against PyTorch + cuDNN on the same
          GPU, alternating, medians, at m = 10 / 64 / 256 / 1024 (the GPU synchronised before each clock read);
  tiles   the recorded GEMM's tile rule (device._tiles) against 16x16 tiles everywhere: rung 3 and the dropout
          net replayed from CUDA graphs recorded each way, alternating, at the same sizes as speed;
  train   ``deepscope train --device cuda`` (the default net, full MNIST): wall time and test accuracy;
  pytest  the layer-test harness's CuPy cases (tests/nn/test_layers.py -k cupy) and all of tests/nn/test_device.py;
  rungs   five dropout nets on expanded data as five ``deepscope train --device cuda`` processes sharing the GPU,
          then their plurality vote (the book's last two rungs; settings from ``--rung-*``: the book's 40 epochs
          at m=10 do not fit a lease).

Nothing here runs without CuPy and a GPU; on this project's CPU machines it says so and exits 2.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import deepscope as ds  # noqa: E402
from deepscope import backend, nn, optim  # noqa: E402
from deepscope.train import GraphedStep, step  # noqa: E402

TOL = {"float64": 1e-10, "float32": 1e-5}
MEASURED = {}   # (net, m) -> deepscope's training images/s in the speed section (the rungs size their epochs by it)


# -- layers ----------------------------------------------------------------------------------------------------
def layer_cases():
    """(name, constructor, input shape or integer input, integer input?) for every layer deepscope has."""
    cases = [
        ("Linear", lambda: nn.Linear(7, 5), (4, 7)),
        ("Conv2d", lambda: nn.Conv2d(2, 3, 3), (2, 2, 8, 8)),
        ("Conv2d stride 2 pad 1", lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1), (2, 2, 9, 9)),
        ("MaxPool2d", lambda: nn.MaxPool2d(2), (2, 3, 8, 8)),
        ("MaxPool2d 3/2", lambda: nn.MaxPool2d(3, 2), (2, 3, 9, 9)),
        ("AvgPool2d", lambda: nn.AvgPool2d(2), (2, 3, 8, 8)),
        ("L2Pool2d", lambda: nn.L2Pool2d(2), (2, 3, 8, 8)),
        ("ReLU", nn.ReLU, (4, 9)), ("Sigmoid", nn.Sigmoid, (4, 9)), ("Tanh", nn.Tanh, (4, 9)),
        ("Softmax", nn.Softmax, (4, 9)), ("LogSoftmax", nn.LogSoftmax, (4, 9)),
        ("Flatten", nn.Flatten, (2, 3, 4, 4)),
        ("Dropout (eval)", lambda: nn.Dropout(0.5).eval(), (4, 9)),
        ("RNN", lambda: nn.RNN(5, 6, num_layers=2, bidirectional=True), (3, 4, 5)),
        ("LSTM", lambda: nn.LSTM(5, 6, num_layers=2, bidirectional=True), (3, 4, 5)),
        ("GRU", lambda: nn.GRU(5, 6, num_layers=2, bidirectional=True), (3, 4, 5)),
        ("Embedding", lambda: nn.Embedding(11, 4), "int"),
    ]
    for name, args in (("BatchNorm1d", (6,)), ("BatchNorm2d", (3,))):
        if hasattr(nn, name):
            shape = (5, 6) if name == "BatchNorm1d" else (4, 3, 5, 5)
            cases.append((name, (lambda n=name, a=args: getattr(nn, n)(*a)), shape))
    return cases


def _grads(model, x, xp, seed):
    out = model(x)
    g = xp.asarray(np.random.default_rng(seed + 1).standard_normal(out.shape), dtype=out.dtype)
    model.zero_grad()
    dx = model.backward(g)
    return {"out": out, "dx": dx, **{k: p.grad for k, p in model.named_parameters()}}


def check_layer(name, make, shape, dtype, cupy):
    backend.set_default_dtype(dtype)
    ds.manual_seed(0)
    cpu = make()
    ds.manual_seed(0)
    gpu = make().to("cuda")
    gpu.load_state_dict(cpu.state_dict())
    rng = np.random.default_rng(0)
    x = rng.integers(0, 11, (3, 7)) if shape == "int" else rng.standard_normal(shape).astype(dtype)
    a = _grads(cpu, x, np, 0)
    b = _grads(gpu, cupy.asarray(x), cupy, 0)
    worst = 0.0
    for k, v in a.items():
        if v is None:
            assert b[k] is None, f"{k}: None on NumPy, an array on CuPy"
            continue
        w = backend.to_numpy(b[k])
        err = float(np.max(np.abs(w - v) / (np.abs(v) + 1e-30 + TOL[dtype])) if v.size else 0.0)
        worst = max(worst, err)
        np.testing.assert_allclose(w, v, rtol=TOL[dtype], atol=TOL[dtype] * max(1.0, float(np.abs(v).max(initial=0))),
                                   err_msg=f"{name} {dtype}: {k}")
    return worst


def costs(cupy):
    out = {}
    for name in ("LogLikelihoodCost", "CrossEntropyCost", "QuadraticCost"):
        for dtype in ("float64", "float32"):
            cost_cpu, cost_gpu = getattr(nn, name)(), getattr(nn, name)()
            z = np.random.default_rng(1).standard_normal((6, 10)).astype(dtype)
            y = np.arange(6) % 10
            c1, c2 = float(cost_cpu(z, y)), float(cost_gpu(cupy.asarray(z), cupy.asarray(y)))
            g1, g2 = cost_cpu.backward(), backend.to_numpy(cost_gpu.backward())
            np.testing.assert_allclose(c2, c1, rtol=TOL[dtype])
            np.testing.assert_allclose(g2, g1, rtol=TOL[dtype], atol=TOL[dtype])
            out[f"{name} {dtype}"] = "ok"
    return out


def section_layers(args, cupy):
    results = {}
    for name, make, shape in layer_cases():
        for dtype in ("float64", "float32"):
            try:
                results[f"{name} {dtype}"] = {"ok": True, "max_rel_err": check_layer(name, make, shape, dtype, cupy)}
            except Exception as e:  # recorded, not fatal: the next layer is still checked
                results[f"{name} {dtype}"] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:400]}
    backend.set_default_dtype("float32")
    try:
        results.update({k: {"ok": True} for k in costs(cupy)})
    except Exception as e:
        results["costs"] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:400]}
    results["all_ok"] = all(v.get("ok") for v in results.values() if isinstance(v, dict))
    return results


# -- speed -----------------------------------------------------------------------------------------------------
def images_per_second(fns, iters, m, repeats) -> dict:
    """Training images/s of each ``name: (step, synchronize)`` in ``fns``: ``repeats`` rounds of ``iters`` steps
    of ``m`` images, the steps taking turns at going first, the GPU synchronised before each clock read; medians."""
    times = {k: [] for k in fns}
    order = list(fns)
    for rep in range(repeats):
        for k in order[rep % len(order):] + order[:rep % len(order)]:      # each first in turn
            fn, sync = fns[k]
            sync()
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            sync()
            times[k].append(time.perf_counter() - t0)
    return {k: iters * m / statistics.median(v) for k, v in times.items()}


def section_speed(args, cupy):
    import torch
    from conv_speed import build_deepscope, build_torch
    backend.set_default_dtype("float32")
    out = {"gpu": cupy.cuda.runtime.getDeviceProperties(0)["name"].decode(), "torch": torch.__version__,
           "cudnn": torch.backends.cudnn.version()}
    for net in ("rung3", "dropout"):
        for m in args.sizes:
            ds.manual_seed(0)
            ours = build_deepscope(net)
            theirs = build_torch(net, ours).cuda()
            ours.to("cuda")
            cost, opt = nn.LogLikelihoodCost(), optim.SGD(ours.parameters(), lr=0.03)
            topt = torch.optim.SGD(theirs.parameters(), lr=0.03)
            rng = np.random.default_rng(0)
            x = rng.random((m, 1, 28, 28), dtype=np.float32)
            y = rng.integers(0, 10, m)
            xc, yc = cupy.asarray(x), cupy.asarray(y)
            xt, yt = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()

            def ds_step():
                step(ours, cost, opt, xc, yc)

            ds.manual_seed(0)
            ours_g = build_deepscope(net).to("cuda")          # the same net, its steps replayed from a CUDA graph
            graphed = GraphedStep(ours_g, nn.LogLikelihoodCost(), optim.SGD(ours_g.parameters(), lr=0.03))

            def ds_graph_step():
                graphed(xc, yc)

            def torch_step():
                loss = torch.nn.functional.cross_entropy(theirs(xt), yt)
                topt.zero_grad()
                loss.backward()
                topt.step()

            iters = max(5, min(100, 10000 // m))
            fns = {"deepscope": (ds_step, cupy.cuda.Device().synchronize),
                   "deepscope_graph": (ds_graph_step, cupy.cuda.Device().synchronize),
                   "pytorch": (torch_step, torch.cuda.synchronize)}
            for fn, sync in fns.values():
                for _ in range(3):
                    fn()
                sync()
            ips = images_per_second(fns, iters, m, args.repeats)
            MEASURED[(net, m)] = ips["deepscope"]
            MEASURED[(net, m, "graph")] = ips["deepscope_graph"] if graphed.failed is None else None
            out[f"{net} m={m}"] = {**ips, "ratio": ips["deepscope"] / ips["pytorch"],
                                   "ratio_graph": ips["deepscope_graph"] / ips["pytorch"],
                                   "graph_recorded": graphed.failed is None and bool(graphed.graphs),
                                   "graph_error": None if graphed.failed is None else repr(graphed.failed)[:300],
                                   "steps_timed": iters, "repeats": args.repeats, **step_profile(fns)}
            print(f"{net:8s} m={m:5d}  deepscope {ips['deepscope']:10,.0f} img/s  graphed {ips['deepscope_graph']:10,.0f}"
                  f"  pytorch {ips['pytorch']:10,.0f}  ratio {ips['deepscope'] / ips['pytorch']:.2f}"
                  f" / {ips['deepscope_graph'] / ips['pytorch']:.2f}  {out[f'{net} m={m}'].get('profile', '')}",
                  flush=True)
    return out


def section_graph(args, cupy):
    """GraphedStep (a step recorded as a CUDA graph and replayed) against step, kernel by kernel, on the GPU:
    rung 3 from the same weights through the same 30 mini-batches, the learning rate changed at step 15 (the
    graph is recorded again) and a mini-batch of 7 at step 20 (run eagerly): the weights must agree; and the
    dropout net replayed on one mini-batch must draw new masks on every replay."""
    from conv_speed import build_deepscope
    backend.set_default_dtype("float32")
    rng = np.random.default_rng(1)
    sizes = [10] * 20 + [7] + [10] * 9
    batches = [(cupy.asarray(rng.random((s, 1, 28, 28), dtype=np.float32)), cupy.asarray(rng.integers(0, 10, s)))
               for s in sizes]
    nets = []
    for _ in range(2):
        ds.manual_seed(0)
        model = build_deepscope("rung3").to("cuda")
        nets.append((model, optim.SGD(model.parameters(), lr=0.05, momentum=0.9), nn.LogLikelihoodCost()))
    (a, oa, ca), (b, ob, cb) = nets
    graphed = GraphedStep(b, cb, ob)
    losses = []
    for i, (x, y) in enumerate(batches):
        if i == 15:
            oa.lr = ob.lr = 0.02
        la, _ = step(a, ca, oa, x, y)
        lb, _ = graphed(x, y)
        losses.append((float(la), float(lb)))
    diff = max(float(cupy.abs(p.data - q.data).max()) for p, q in zip(a.parameters(), b.parameters()))
    scale = max(float(cupy.abs(p.data).max()) for p in a.parameters())
    out = {"rung3": {"recorded": graphed.failed is None and bool(graphed.graphs),
                     "error": None if graphed.failed is None else repr(graphed.failed)[:400],
                     "max_weight_diff": diff, "weight_scale": scale,
                     "max_cost_diff": max(abs(u - v) for u, v in losses), "steps": [oa.steps, ob.steps]}}
    # the recorded step's products run deepscope's GEMM kernel (another summation order than cuBLAS's)
    out["rung3"]["ok"] = out["rung3"]["recorded"] and diff <= 1e-4 * scale and oa.steps == ob.steps
    ds.manual_seed(0)
    d = build_deepscope("dropout").to("cuda")
    gd = GraphedStep(d, nn.LogLikelihoodCost(), optim.SGD(d.parameters(), lr=1e-9))
    x, y = batches[0]
    costs = [float(gd(x, y)[0]) for _ in range(6)]          # steps 1 eager, 2 recorded, 3-6 replayed
    out["dropout"] = {"costs": costs, "recorded": gd.failed is None and bool(gd.graphs),
                      "error": None if gd.failed is None else repr(gd.failed)[:400],
                      "ok": gd.failed is None and len(set(costs[2:])) == len(costs[2:])}
    try:
        out["gemm"] = check_gemm(cupy)
    except Exception:
        out["gemm"] = {"ok": False, "error": traceback.format_exc()[-1500:]}
    out["all_ok"] = out["rung3"]["ok"] and out["dropout"]["ok"] and out["gemm"]["ok"]
    return out


def check_gemm(cupy) -> dict:
    """deepscope.device.gemm (the recordable product) against cuBLAS's ``a @ b``: the layers' shapes, transposed
    views, a K long enough to be split, float32 and float64; and its time against cuBLAS's."""
    from deepscope import device
    rng = np.random.default_rng(2)
    r = {}
    cases = [((10, 640), (640, 100), False, False), ((20, 25), (25, 5760), False, False),
             ((20, 5760), (25, 5760), False, True), ((500, 40), (40, 640), True, False),
             ((40, 65536), (500, 65536), False, True), ((1024, 640), (1000, 640), False, True), ((3, 5), (5, 7), 0, 0),
             ((1024, 1000), (1000, 1000), False, True), ((1000, 1024), (1024, 1000), True, False),
             ((256, 640), (1000, 640), False, True)]
    ok = True
    for dtype in ("float32", "float64"):
        for sa, sb, ta, tb in cases:
            a = cupy.asarray(rng.standard_normal(sa[::-1] if ta else sa).astype(dtype))
            b = cupy.asarray(rng.standard_normal(sb).astype(dtype))
            a, b = (a.T if ta else a), (b.T if tb else b)
            got, want = device.gemm(a, b), a @ b
            bound = float((cupy.abs(a) @ cupy.abs(b)).max())
            err = float(cupy.abs(got - want).max()) / bound
            good = got.shape == want.shape and err <= (1e-6 if dtype == "float32" else 1e-14)
            ok &= good
            t = {}
            slices, kchunk = device._slices(a.shape[1])
            tiles = device._tiles(a.shape[0], b.shape[1], slices)
            for name, fn in (("gemm", lambda: device.gemm(a, b)), ("cublas", lambda: a @ b),
                             ("gemm_16x16", lambda: device._launch(a, b, slices, kchunk, 1, 1))):
                fn()
                cupy.cuda.Device().synchronize()
                t0 = time.perf_counter()
                for _ in range(20):
                    fn()
                cupy.cuda.Device().synchronize()
                t[name] = round((time.perf_counter() - t0) / 20 * 1e6, 1)
            r[f"{dtype} {tuple(a.shape)}{'ᵀ' if ta else ''} @ {tuple(b.shape)}{'ᵀ' if tb else ''}"] = {
                "rel_err": err, "ok": good, "tiles": tiles, "us_gemm": t["gemm"], "us_cublas": t["cublas"],
                "us_gemm_16x16": t["gemm_16x16"]}
    for dtype in ("float32", "float64"):        # every tile shape on sides that are no multiple of a tile, K split
        for rm, rn in ((1, 1), (4, 4), (1, 4), (4, 1)):
            for ta, tb in ((False, False), (True, True), (True, False)):
                a = cupy.asarray(rng.standard_normal((4200, 100) if ta else (100, 4200)).astype(dtype))
                b = cupy.asarray(rng.standard_normal((130, 4200) if tb else (4200, 130)).astype(dtype))
                a, b = (a.T if ta else a), (b.T if tb else b)
                got, want = device._launch(a, b, 2, 2112, rm, rn), a @ b
                err = float(cupy.abs(got - want).max()) / float((cupy.abs(a) @ cupy.abs(b)).max())
                good = got.shape == want.shape and err <= (1e-6 if dtype == "float32" else 1e-14)
                ok &= good
                r[f"{dtype} tiles {rm}x{rn} (100, 4200){'ᵀ' if ta else ''} @ (4200, 130){'ᵀ' if tb else ''}"] = {
                    "rel_err": err, "ok": good}
    r["ok"] = ok
    return r


def section_tiles(args, cupy):
    """The recorded GEMM's tile rule (device._tiles: 64-wide tiles for large products) against 16x16 tiles
    everywhere: rung 3 and the dropout net recorded once each way from the same weights, replayed alternately
    (training images/s, medians) and profiled (GPU ms a step)."""
    from conv_speed import build_deepscope
    from deepscope import device
    backend.set_default_dtype("float32")
    rule = device._tiles
    out = {}
    for net in ("rung3", "dropout"):
        for m in args.sizes:
            rng = np.random.default_rng(0)
            xc = cupy.asarray(rng.random((m, 1, 28, 28), dtype=np.float32))
            yc = cupy.asarray(rng.integers(0, 10, m))
            fns = {}
            for name, tiles in (("rule", rule), ("16x16", lambda M, N, slices: (1, 1))):
                ds.manual_seed(0)
                model = build_deepscope(net).to("cuda")
                g = GraphedStep(model, nn.LogLikelihoodCost(), optim.SGD(model.parameters(), lr=0.03))
                device._tiles = tiles
                try:
                    for _ in range(3):          # eager, recorded, replayed
                        g(xc, yc)
                finally:
                    device._tiles = rule
                fns[name] = ((lambda g=g: g(xc, yc)), cupy.cuda.Device().synchronize)
            ips = images_per_second(fns, max(5, min(100, 10000 // m)), m, args.repeats)
            out[f"{net} m={m}"] = {**ips, "speed-up": ips["rule"] / ips["16x16"], **step_profile(fns)}
            print(f"{net:8s} m={m:5d}  tile rule {ips['rule']:10,.0f} img/s  16x16 {ips['16x16']:10,.0f}"
                  f"  x{ips['rule'] / ips['16x16']:.2f}  {out[f'{net} m={m}'].get('profile', '')}", flush=True)
    return out


def step_profile(fns) -> dict:
    """Where a step's time goes: the host's time to issue it and the GPU's time to run it (CuPy's profiler, CUDA
    events; medians of 30 steps). A step whose host time exceeds its GPU time is launch-bound."""
    try:
        from cupyx.profiler import benchmark
    except ImportError:
        return {}
    r = {}
    for k, (fn, _) in fns.items():
        b = benchmark(fn, n_repeat=30, n_warmup=2)
        r[f"{k}_host_ms"] = round(float(np.median(b.cpu_times)) * 1e3, 3)
        r[f"{k}_gpu_ms"] = round(float(np.median(b.gpu_times[0])) * 1e3, 3)
    r["profile"] = "host/GPU ms a step: " + ", ".join(f"{k} {r[k + '_host_ms']}/{r[k + '_gpu_ms']}" for k in fns)
    return r


# -- whole runs through the CLI ----------------------------------------------------------------------------------
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _start(argv, log):
    """``deepscope ARGV`` in a child process, its output in ``log``."""
    return subprocess.Popen([sys.executable, "-m", "deepscope.cli", *argv], stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, env=ENV)


def _finish(proc, argv, log, t0, deadline):
    try:
        rc = proc.wait(timeout=max(1.0, deadline - time.perf_counter()))
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = f"killed at the section's time limit ({proc.wait()})"
    tail = Path(log).read_text(errors="replace").splitlines()[-8:]
    return {"argv": ["deepscope", *argv], "rc": rc, "wall_s": round(time.perf_counter() - t0, 1), "tail": tail}


def section_train(args, cupy):
    """``deepscope train --device cuda``: the default net on full MNIST."""
    argv = ["train", "--device", "cuda", "--data-dir", args.data_dir, "--out", str(Path(args.work) / "train-cuda"),
            "--quiet"]
    t0 = time.perf_counter()
    log = Path(args.work) / "train.log"
    return _finish(_start(argv, log), argv, log, t0, t0 + args.train_limit)


def section_pytest(args, cupy):
    """The layer-test harness's CuPy cases (tests/nn/test_layers.py: every layer case on CuPy against NumPy,
    float64) and the device tests."""
    # -k keeps test_layers.py's CuPy cases and every test of test_device.py (a -k applies to both files); the
    # project's addopts already say -q, and a second -q would drop the summary line
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests/nn/test_layers.py", "tests/nn/test_device.py",
           "-k", "cupy or test_device"]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=args.pytest_limit)
        rc, out = r.returncode, r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        rc, out = "timed out", (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else str(e.stdout)
    lines = out.splitlines()
    return {"command": " ".join(cmd[1:]), "rc": rc, "wall_s": round(time.perf_counter() - t0, 1),
            "summary": lines[-1] if lines else "", "failures": [s for s in lines if s.startswith(("FAILED", "ERROR"))][:40],
            "tail": lines[-60:]}


def section_rungs(args, cupy):
    """The book's last two rungs on the GPU: five dropout nets on expanded MNIST trained side by side as five
    ``deepscope train --device cuda`` processes sharing the GPU (each net is the dropout rung, 99.60% in the
    book), then their plurality vote (the ensemble rung, 99.67%). The book's protocol (40 epochs at m=10 with
    plain SGD, 10M images a net) does not fit a lease; the settings used are recorded with the result."""
    from deepscope.book import ch6
    from deepscope.data import load_mnist
    from deepscope.runs import Run
    rung = ch6.get_rung("ensemble")
    epochs, sized_by = args.rung_epochs, "--rung-epochs"
    if not epochs:   # as many as should fit. Five processes shared the GPU at 5.5x one eager process's speed
        # (first lease: 8.3k img/s each against 7.5k alone); replayed graphs may load the GPU more: assume
        # 1.75x one eager process's speed, or one replaying process's speed, whichever is more
        single, graph = MEASURED.get(("dropout", args.rung_batch)), MEASURED.get(("dropout", args.rung_batch, "graph"))
        share = max(single * min(1.0, 1.75 / args.rung_nets), (graph or 0) / args.rung_nets) if single else None
        epochs = max(1, min(40, int((args.rung_limit - 40) * share / 250_000))) if share else 1
        sized_by = (f"auto: one process {single:,.0f} img/s kernel by kernel, {graph or 0:,.0f} replaying a graph, "
                    f"in the speed section" if single else "auto: no speed measured")
    args.rung_epochs = epochs
    t0 = time.perf_counter()
    deadline = t0 + args.rung_limit
    argv_of = lambda k: ["train", "--arch", rung.arch, "--expand", "--device", "cuda", "--data-dir", args.data_dir,
                         "--epochs", str(args.rung_epochs), "-m", str(args.rung_batch), "--lr", str(args.rung_lr),
                         "--momentum", str(args.rung_momentum), "--lmbda", "0", "--init", "he",
                         "--schedule", "cosine", "--seed", str(k), "--out", str(Path(args.work) / f"rung-net{k}"),
                         "--quiet"] + (["--train-size", str(args.rung_train_size)] if args.rung_train_size else [])
    logs = [Path(args.work) / f"rung-net{k}.log" for k in range(args.rung_nets)]
    procs = [_start(argv_of(k), logs[k]) for k in range(args.rung_nets)]
    nets = [_finish(p, argv_of(k), logs[k], t0, deadline) for k, p in enumerate(procs)]
    X, y = load_mnist(data_dir=args.data_dir, verbose=False).test
    predictions = []
    for k, net in enumerate(nets):
        try:
            run = Run.open(Path(args.work) / f"rung-net{k}")
            history = run.history
            predictions.append(ch6._predict(run.load_model(), X))
            net.update(epochs_done=len(history), best_val=history.best["val_acc"],
                       epoch_s=[round(r["seconds"], 1) for r in history.records],
                       test=100.0 * float((predictions[-1] == y).mean()))
        except Exception as e:  # a net killed before its first epoch: no model to vote with
            net["error"] = f"{type(e).__name__}: {e}"[:300]
    vote = ch6.ensemble_predict(predictions) if predictions else None
    return {"protocol": {"arch": rung.arch, "expanded": True, "epochs": args.rung_epochs, "batch_size": args.rung_batch,
                         "lr": args.rung_lr, "momentum": args.rung_momentum, "schedule": "cosine", "init": "he",
                         "lmbda": 0, "nets": args.rung_nets, "epochs_sized_by": sized_by,
                         "book": "40 epochs, m=10, lr 0.03, plain SGD"},
            "nets": nets, "members_test": [n.get("test") for n in nets],
            "vote_test": None if vote is None else 100.0 * float((vote == y).mean()),
            "voters": len(predictions), "book": {"dropout": 99.60, "ensemble": 99.67}}


SECTIONS = {"layers": section_layers, "pytest": section_pytest, "graph": section_graph, "speed": section_speed,
            "tiles": section_tiles, "train": section_train, "rungs": section_rungs}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sections", nargs="*", default=list(SECTIONS), choices=list(SECTIONS))
    p.add_argument("--data-dir", default=str(ROOT / ".gpu-data" / "mnist"))
    p.add_argument("--out", default=os.environ.get("OUT", "gpu-results"))
    p.add_argument("--work", default="/tmp/deepscope-gpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[10, 64, 256, 1024])
    p.add_argument("--train-limit", type=float, default=240, help="seconds the train section may take")
    p.add_argument("--pytest-limit", type=float, default=120, help="seconds the pytest section may take")
    p.add_argument("--rung-epochs", type=int, default=0, help="epochs per net (0: as many as --rung-limit allows)")
    p.add_argument("--rung-batch", type=int, default=64)
    p.add_argument("--rung-lr", type=float, default=0.03)
    p.add_argument("--rung-momentum", type=float, default=0.9)
    p.add_argument("--rung-nets", type=int, default=5)
    p.add_argument("--rung-train-size", type=int, default=None, help="first N images only (a dry run)")
    p.add_argument("--rung-limit", type=float, default=240, help="seconds the five nets may train")
    args = p.parse_args()
    try:
        cupy = backend.device_module("cuda")
    except ds.DeepscopeError as e:
        print(f"gpu_check: {e}", file=sys.stderr)
        return 2
    Path(args.out).mkdir(parents=True, exist_ok=True)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    for name in args.sections:
        t0 = time.perf_counter()
        try:
            result = SECTIONS[name](args, cupy)
        except Exception:
            result = {"error": traceback.format_exc()[-2000:]}
        result = {"section": name, "seconds": round(time.perf_counter() - t0, 1), **result}
        text = json.dumps(result, indent=1, default=str)
        Path(args.out, f"gpu_{name}.json").write_text(text)
        print(f"== {name}: {result['seconds']} s\n{text[:1500]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
