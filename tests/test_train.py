"""fit, checkpoints, resume, Ctrl-C, non-finite loss, save/load, architecture strings."""
import json

import numpy as np
import pytest

import deepscope as ds
from deepscope import arch, nn, optim
from deepscope.runs import Run
from deepscope.train import Batches, EarlyStopping, Schedule, evaluate, fit


def blobs(n=600, k=3, d=8, seed=0):
    """A separable toy problem: k Gaussian blobs in d dimensions."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, d)) * 3
    y = rng.integers(0, k, n)
    X = (centres[y] + rng.standard_normal((n, d))).astype(np.float32)
    return X, y


def make(seed=0):
    ds.manual_seed(seed)
    model = arch.build("8-16-3:sigmoid")
    opt = optim.SGD(model.parameters(), lr=0.5, momentum=0.5, weight_decay=1e-3)
    return model, nn.CrossEntropyCost(), opt


def test_fit_learns_and_writes_run(tmp_path):
    X, y = blobs()
    model, cost, opt = make()
    hist = fit(model, cost, opt, (X[:500], y[:500]), epochs=3, batch_size=10,
               validation=(X[500:], y[500:]), test=(X[500:], y[500:]), run=Run.create(tmp_path), callbacks=[])
    assert hist.best["val_acc"] > 0.9
    lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert {"train_loss", "train_acc", "val_acc", "test_acc", "seconds", "lr"} <= set(lines[0])
    loaded = ds.load(tmp_path)
    assert evaluate(loaded, X[500:], y[500:]) == pytest.approx(hist.best["val_acc"])


def test_best_is_the_books_protocol():
    h = ds.train.History([{"epoch": 1, "val_acc": 0.9, "test_acc": 0.5},
                          {"epoch": 2, "val_acc": 0.95, "test_acc": 0.6},
                          {"epoch": 3, "val_acc": 0.95, "test_acc": 0.7},
                          {"epoch": 4, "val_acc": 0.93, "test_acc": 0.9}])
    assert h.best["epoch"] == 2 and h.best["test_acc"] == 0.6


def test_same_seed_same_numbers():
    X, y = blobs()
    runs = []
    for _ in range(2):
        model, cost, opt = make(seed=5)
        fit(model, cost, opt, (X, y), epochs=2, batch_size=16, callbacks=[])
        runs.append(model.state_dict())
    for k in runs[0]:
        np.testing.assert_array_equal(runs[0][k], runs[1][k])


def test_resume_continues_exactly(tmp_path):
    X, y = blobs()
    model, cost, opt = make()
    ds.manual_seed(0)
    with Run.create(tmp_path / "a") as run:
        fit(model, cost, opt, (X, y), epochs=3, batch_size=16, validation=(X, y), run=run, callbacks=[])
    straight = model.state_dict()

    model, cost, opt = make()
    ds.manual_seed(0)
    with Run.create(tmp_path / "b") as run:
        fit(model, cost, opt, (X, y), epochs=1, batch_size=16, validation=(X, y), run=run, callbacks=[])
    model, cost, opt = make(seed=99)  # a fresh process: different init, everything comes from the checkpoint
    ds.manual_seed(123)
    with Run.resume(tmp_path / "b") as run:
        hist = fit(model, cost, opt, (X, y), epochs=3, batch_size=16, validation=(X, y), run=run, callbacks=[])
    assert [r["epoch"] for r in hist.records] == [1, 2, 3]
    for k, v in straight.items():
        np.testing.assert_array_equal(model.state_dict()[k], v)


def test_interrupt_keeps_last_good_checkpoint(tmp_path):
    X, y = blobs()
    model, cost, opt = make()

    class Interrupt:
        def on_step(self, step, model, optimizer):
            if step == 50:  # during epoch 2 (38 steps per epoch)
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), Run.create(tmp_path) as run:
        fit(model, cost, opt, (X, y), epochs=5, batch_size=16, validation=(X, y), run=run,
            callbacks=[Interrupt()])
    from safetensors import safe_open
    with safe_open(str(tmp_path / "checkpoint.safetensors"), framework="numpy") as f:
        assert json.loads(f.metadata()["state"])["epoch"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    model2, cost, opt = make()
    with Run.resume(tmp_path) as run:
        fit(model2, cost, opt, (X, y), epochs=2, batch_size=16, validation=(X, y), run=run, callbacks=[])


def test_non_finite_loss_stops_and_names_first_layer():
    X, y = blobs()
    model, cost, opt = make()
    model[1].weight.data[0, 0] = np.nan
    with pytest.raises(ds.NonFiniteError, match=r"cost became nan at epoch 1, step 1; first layer with a "
                                                r"non-finite gradient: Linear\(8, 16\) \[layer 1\] \(weight\)"):
        fit(model, cost, opt, (X, y), epochs=1, batch_size=16, callbacks=[])


def test_shuffle_false_keeps_order():
    X, y = blobs(n=40)
    seen = []
    model, cost, opt = make()
    fit(model, cost, opt, Batches(X, y, shuffle=False, augment=lambda xb: seen.append(xb.copy()) or xb),
        epochs=2, batch_size=40, callbacks=[])
    np.testing.assert_array_equal(seen[0], X)
    np.testing.assert_array_equal(seen[1], X)


def test_early_stopping():
    X, y = blobs()
    model, cost, opt = make()
    opt.lr = 1e-9  # nothing improves
    hist = fit(model, cost, opt, (X, y), epochs=20, batch_size=100, validation=(X, y),
               callbacks=[EarlyStopping(2)])
    assert len(hist) == 3


def test_save_load_round_trip(tmp_path):
    model = arch.build("784-30-30-10:tanh", init="xavier")
    ds.save(model, tmp_path / "net")
    assert (tmp_path / "net.safetensors").exists() and (tmp_path / "net.json").exists()
    back = ds.load(tmp_path / "net")
    x = np.random.default_rng(0).random((3, 784), dtype=np.float32)
    np.testing.assert_array_equal(model.eval()(x), back(x))


def test_load_refuses_unknown_types(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"model": {"type": "os.system", "args": {}}}))
    with pytest.raises(ds.DataError, match="unknown layer type 'os.system'"):
        ds.load(tmp_path / "m")


@pytest.mark.parametrize("bad,msg", [
    ("784-30x-10", r"token 2 '30x' \(character 5\)"),
    ("784-30-10:swish", r"unknown activation 'swish' in token 3"),
    ("conv20x5-maxpool2", "must end with an output layer"),
    ("conv20x30-softmax10", "does not fit the input"),
    ("784-conv20x5-softmax10", "needs an image input"),
    ("", "empty architecture string"),
])
def test_bad_architecture_strings(bad, msg):
    with pytest.raises(ds.ArchitectureError, match=msg):
        arch.build(bad)


def test_fc_architecture_string():
    m = arch.build("784-30-30-10:tanh")
    kinds = [type(l).__name__ for l in m]
    assert kinds == ["Flatten", "Linear", "Tanh", "Linear", "Tanh", "Linear"]
    assert arch.output_cost("784-10") is None
    assert arch.output_cost("conv20x5-maxpool2-softmax10") == "loglikelihood"


# -- resume and one-hot targets (moved from the core review's test_edge_cases.py) ---------------------
def _early_run(tmp_path, name, stop_first_at=None):
    X, y = blobs(300)

    def make(seed):
        ds.manual_seed(seed)
        model = arch.build("8-16-3:sigmoid")
        opt = optim.Adam(model.parameters(), lr=0.05)
        return model, opt, optim.HalveOnPlateau(opt, patience=1)

    kw = dict(batch_size=50, validation=(X[:100], y[:100]))
    model, opt, sched = make(0)
    ds.manual_seed(0)
    with Run.create(tmp_path / name) as run:
        if stop_first_at is None:
            return fit(model, nn.CrossEntropyCost(), opt, (X, y), epochs=12, run=run,
                       callbacks=[Schedule(sched), EarlyStopping(2)], **kw)
        fit(model, nn.CrossEntropyCost(), opt, (X, y), epochs=stop_first_at, run=run,
            callbacks=[Schedule(sched), EarlyStopping(2)], **kw)
    model, opt, sched = make(9)
    with Run.resume(tmp_path / name) as run:
        return fit(model, nn.CrossEntropyCost(), opt, (X, y), epochs=12, run=run,
                   callbacks=[Schedule(sched), EarlyStopping(2)], **kw)


def test_resume_keeps_the_early_stopping_count(tmp_path):
    straight = [(r["epoch"], r["val_acc"], r["lr"]) for r in _early_run(tmp_path, "a").records]
    stopped = straight[-1][0]
    assert 2 <= stopped < 12
    resumed = [(r["epoch"], r["val_acc"], r["lr"]) for r in _early_run(tmp_path, "b", stopped - 1).records]
    assert resumed == straight


def test_resume_rewrites_metrics_from_the_checkpoint(tmp_path):
    X, y = blobs(300)
    ds.manual_seed(0)
    model = arch.build("8-16-3:sigmoid")
    opt = optim.SGD(model.parameters(), lr=0.5)
    with Run.create(tmp_path) as run:
        fit(model, nn.CrossEntropyCost(), opt, (X, y), epochs=1, batch_size=50, run=run, callbacks=[])
    # Ctrl-C after the metrics line of epoch 2 was written but before its checkpoint was
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"epoch": 2, "train_loss": 0.0}) + "\n")
    with Run.resume(tmp_path) as run:
        fit(model, nn.CrossEntropyCost(), opt, (X, y), epochs=3, batch_size=50, run=run, callbacks=[])
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_evaluate_and_fit_accept_one_hot_targets():
    X, y = blobs(300)
    Y = np.eye(3, dtype=np.float32)[y]
    ds.manual_seed(0)
    model = arch.build("8-16-3")
    hist = fit(model, nn.CrossEntropyCost(), optim.SGD(model.parameters(), lr=0.5), (X, Y), epochs=2,
               batch_size=10, validation=(X, Y), callbacks=[])
    assert hist.records[-1]["train_acc"] > 0.9
    assert hist.records[-1]["val_acc"] == ds.train.evaluate(model, X, y) > 0.9
    with pytest.raises(ds.ShapeError, match=r"evaluate: labels of shape \(300, 2\) do not match"):
        ds.train.evaluate(model, X, Y[:, :2])


# -- fit's one-piece step of network2's nets (train.SigmoidNetStep) against the layer path -------------------------
def _fit_both(build, X, y, monkeypatch, dtype=np.float32, epochs=2, batch_size=16, callbacks=(), weight_decay=0.0,
              momentum=0.0, cost=nn.CrossEntropyCost, params=lambda model: model.parameters()):
    """(parameters, gradients, records, steps taken as one piece) of the same fit with train.SIGMOID_NET_STEP on and
    off; an exception a fit raises is returned in place of its records."""
    from deepscope import train
    calls = []
    real = train.SigmoidNetStep.__call__
    monkeypatch.setattr(train.SigmoidNetStep, "__call__", lambda self, *a: calls.append(1) or real(self, *a))
    out = []
    for on in (True, False):
        monkeypatch.setattr(train, "SIGMOID_NET_STEP", on)
        ds.manual_seed(0)
        model = build().to(dtype)
        opt = optim.SGD(params(model), lr=0.5, weight_decay=weight_decay, momentum=momentum)
        try:
            records = [{k: v for k, v in r.items() if k != "seconds"} for r in fit(
                model, cost(), opt, (X, y), epochs=epochs, batch_size=batch_size, callbacks=list(callbacks)).records]
        except Exception as e:                                      # noqa: BLE001 - compared below
            records = f"{type(e).__name__}: {e}"
        out.append(([p.data.copy() for p in model.parameters()], [p.grad.copy() for p in model.parameters()],
                    records, len(calls)))
        calls.clear()
    return out


def _assert_same(a, b):
    for p, q in zip(a[0] + a[1], b[0] + b[1]):
        np.testing.assert_array_equal(p, q)             # bit for bit (NaN where NaN)
    assert a[2] == b[2]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("net, batch_size, decay", [("784-30-10", 64, 0.0), ("784-30-10", 10, 1e-3),
                                                    ("784-30-10", 100, 0.0), ("300-20-7-5", 13, 0.0)])
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("avx512", [True, False])
def test_sigmoid_net_step_equals_the_layer_path(monkeypatch, dtype, net, batch_size, decay, threads, avx512):
    """[Flatten →] (Linear → Sigmoid)+ → Linear with the cross-entropy cost and plain SGD (weight decay too), fit
    as one piece and layer by layer: the same weights, gradients, losses and accuracies, bit for bit, at 1 and 3
    threads (the short last mini-batch too), with the loops' choices of a CPU with AVX-512 and of one without (at
    m=100 the first layer's W.grad by BLAS without AVX-512: its rule set to at most 64 rows by the loops)."""
    from deepscope import cpu
    if cpu.kernels() is None:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(cpu, "_loops_win", True)         # Linear's loops (the one-piece step), whatever this machine
    monkeypatch.setattr(cpu, "_avx512_host", avx512)
    monkeypatch.setattr(cpu, "AVX2_GRAD_LOOPS_ROWS", 64)
    blas = []
    monkeypatch.setattr(cpu, "grads_by_blas", lambda *a, f=cpu.grads_by_blas: blas.append(1) or f(*a))
    was = cpu.get_num_threads()
    cpu.set_num_threads(threads)
    try:
        n_in = int(net.split("-")[0])
        rng = np.random.default_rng(1)
        X = rng.random((150, 1, 1, n_in) if net.startswith("784") else (150, n_in)).astype(dtype)
        y = rng.integers(0, int(net.split("-")[-1]), 150)
        fast, layers = _fit_both(lambda: arch.build(net + ":sigmoid"), X, y, monkeypatch, dtype, batch_size=batch_size,
                                 weight_decay=decay)
    finally:
        cpu.set_num_threads(was)
    assert fast[3] == 2 * -(-150 // batch_size) and layers[3] == 0   # every step as one piece
    assert bool(blas) == (batch_size == 100 and not avx512)
    _assert_same(fast, layers)


@pytest.mark.parametrize("which", ["all", "last layer's", "one more"])
def test_sigmoid_net_step_zeroes_the_gradients_as_zero_grad(monkeypatch, which):
    """The one-piece step writes W.grad = δᵀa (zero_grad in the loops) only where the optimizer holds the Linears'
    parameters and no other; else it zeroes the optimizer's gradients and adds, as the layer path: a layer outside the
    optimizer keeps adding up its gradients, a parameter outside the model keeps its gradient at 0."""
    from deepscope import train
    rng = np.random.default_rng(4)
    X, y = rng.random((60, 50)).astype(np.float32), rng.integers(0, 4, 60)
    extra = nn.Parameter(np.ones((3, 2), np.float32))
    params = {"all": lambda model: model.parameters(), "last layer's": lambda model: model[2].parameters(),
              "one more": lambda model: [*model.parameters(), extra]}[which]
    build = lambda: nn.Sequential(nn.Linear(50, 6), nn.Sigmoid(), nn.Linear(6, 4))   # noqa: E731
    model = build()
    assert train.SigmoidNetStep.of(model, nn.CrossEntropyCost(), optim.SGD(params(model), lr=0.5))._fresh == \
        (which == "all")
    fast, layers = _fit_both(build, X, y, monkeypatch, batch_size=8, params=params)
    assert fast[3] == 2 * 8 and layers[3] == 0
    _assert_same(fast, layers)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf, 1e30])
def test_sigmoid_net_step_stops_on_a_non_finite_cost_as_the_layer_path(monkeypatch, dtype, poison):
    """A NaN or ±∞ weight: both stop at the same step with the same NonFiniteError line, the gradients the same (NaN
    where NaN), the weights not updated; a huge one (outputs far in σ's tails): the same training."""
    rng = np.random.default_rng(2)
    X, y = rng.random((40, 50)).astype(dtype), rng.integers(0, 4, 40)

    def build():
        model = nn.Sequential(nn.Linear(50, 6), nn.Sigmoid(), nn.Linear(6, 4))
        model[2].weight.data[1, 2] = poison
        return model
    fast, layers = _fit_both(build, X, y, monkeypatch, dtype, batch_size=8)
    if np.isfinite(poison):                      # outputs far in σ's tails: a finite cost, training goes on
        assert fast[3] == 2 * 5 and isinstance(fast[2], list)
    else:
        assert fast[3] == 1 and "NonFiniteError" in fast[2] and "step 1" in fast[2]
    _assert_same(fast, layers)


def test_sigmoid_net_step_says_which_label_is_out_of_range(monkeypatch):
    """A label out of range stops fit with the cost's own error line, as the layer path does."""
    rng = np.random.default_rng(3)
    X, y = rng.random((40, 50)).astype(np.float32), rng.integers(0, 4, 40)
    y[21] = 4
    fast, layers = _fit_both(lambda: nn.Sequential(nn.Linear(50, 6), nn.Sigmoid(), nn.Linear(6, 4)), X, y,
                             monkeypatch, batch_size=8)
    assert fast[2] == layers[2] == "DataError: CrossEntropyCost: label 4 is out of range for 4 classes (0..3)"
    _assert_same(fast, layers)


class _Hooks:
    """A callback that hooks the model's second layer after the third mini-batch (the steps after run layer by
    layer: the hook sees each of its layer's outputs)."""

    def __init__(self):
        self.seen, self.steps = 0, 0

    def on_fit_start(self, model, optimizer, epoch):
        self.model, self.steps = model, 0

    def on_batch_end(self, m, loss, accuracy):
        self.steps += 1
        if self.steps == 3:
            self.model[1].register_forward_hook(lambda module, inputs, out: setattr(self, "seen", self.seen + 1))


def test_sigmoid_net_step_steps_layer_by_layer_where_something_could_tell(monkeypatch):
    """Hooks (also registered mid-fit), a callback between backward and update, momentum, another cost, inputs of
    another dtype than the weights, a net of other layers: those steps run layer by layer (the same numbers)."""
    rng = np.random.default_rng(4)
    X, y = rng.random((48, 20)).astype(np.float32), rng.integers(0, 3, 48)
    build = lambda: nn.Sequential(nn.Linear(20, 5), nn.Sigmoid(), nn.Linear(5, 3))   # noqa: E731
    hooks = _Hooks()
    fast, layers = _fit_both(build, X, y, monkeypatch, epochs=1, batch_size=8, callbacks=[hooks])
    assert fast[3] == 3 and hooks.seen == 2 * 3                        # 3 steps as one piece, then 3 hooked (each fit)
    _assert_same(fast, layers)

    class Before:
        def on_before_step(self, step, model, optimizer):
            pass
    for kwargs in ({"callbacks": [Before()]}, {"momentum": 0.9}, {"cost": nn.LogLikelihoodCost},
                   {"dtype": np.float64}):
        fast, layers = _fit_both(build, X, y, monkeypatch, epochs=1, batch_size=8, **kwargs)
        assert fast[3] == 0, kwargs
        _assert_same(fast, layers)
    relu = lambda: nn.Sequential(nn.Linear(20, 5), nn.ReLU(), nn.Linear(5, 3))   # noqa: E731
    fast, layers = _fit_both(relu, X, y, monkeypatch, epochs=1, batch_size=8)
    assert fast[3] == 0
    _assert_same(fast, layers)
