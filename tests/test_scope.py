"""Tests of the instruments (deepscope.scope): recorder, anomaly detector; and of the chapter 5 experiments
that use them (deepscope.book.ch5: chain, speed experiment, compare) and their CLI."""
import gzip
import json

import numpy as np
import pytest

import deepscope
from deepscope import nn, optim
from deepscope.errors import NonFiniteError
from deepscope.book.ch5 import chain_gradient, exploding_chain, random_chain, speed_experiment
from deepscope.book.ch5 import experiment as experiment_mod
from deepscope.book.ch5.chain import build_chain
from deepscope.book.ch5.compare import cell_arch, run_compare
from deepscope.errors import ConfigError
from deepscope.scope import AnomalyDetector, LearningSpeedRecorder

from data_paths import MNIST_DIR


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def synthetic(n, d=784, k=10, seed=0):
    """Images-like data in [0, 1] whose label depends on the input (so nets can learn it)."""
    rng = np.random.default_rng(seed)
    X = (rng.random((n, d)) < 0.2).astype(np.float32) * rng.random((n, d)).astype(np.float32)
    proto = rng.random((k, d)) < 0.3
    y = rng.integers(0, k, n)
    X[proto[y]] = np.maximum(X[proto[y]], 0.6)
    return X, y.astype(np.int64)


def real_mnist(n):
    """The first n training images from the shared IDX files (tests only), or None."""
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        return None
    with gzip.open(MNIST_DIR / "train-images-idx3-ubyte.gz") as f:
        X = np.frombuffer(f.read(16 + n * 784), np.uint8, offset=16).reshape(n, 784)
    with gzip.open(MNIST_DIR / "train-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(8 + n), np.uint8, offset=8)
    return X.astype(np.float32) / 255, y.astype(np.int64)


def small_net(layers=(6, 5, 4, 3), act=nn.Sigmoid):
    mods = []
    for j, (a, b) in enumerate(zip(layers[:-1], layers[1:])):
        mods.append(nn.Linear(a, b))
        if j < len(layers) - 2:
            mods.append(act())
    return nn.Sequential(*mods).to("float64")


def one_step(model, cost, X, y, rec=None, opt=None):
    cost(model(X), y)
    model.zero_grad()
    model.backward(cost.backward())
    if rec:
        rec.before_step()
    if opt:
        opt.step()
    if rec:
        rec.after_step()


# ---------------------------------------------------------------------------------------------- recorder

def test_recorder_bias_norms_match_hand_backprop():
    """‖∂C/∂b^l‖ recorded equals the book's (1/n) Σ_x δ^l_x computed example by example with NumPy."""
    model = small_net()
    rng = np.random.default_rng(1)
    X, y = rng.random((7, 6)), rng.integers(0, 3, 7)
    rec = LearningSpeedRecorder(model)
    one_step(model, nn.CrossEntropyCost(), X, y, rec)
    W = [model[i].weight.data for i in (0, 2, 4)]
    b = [model[i].bias.data for i in (0, 2, 4)]
    grads_b = [np.zeros_like(v) for v in b]
    grads_w = [np.zeros_like(v) for v in W]
    for x, label in zip(X, y):                      # network2's backprop, one example at a time
        acts, a = [x], x
        for w_, b_ in zip(W, b):
            a = _sigmoid(w_ @ a + b_)
            acts.append(a)
        target = np.eye(3)[label]
        delta = acts[-1] - target                   # cross-entropy: δ^L = a - y
        for l in range(2, -1, -1):
            grads_b[l] += delta / len(X)
            grads_w[l] += np.outer(delta, acts[l]) / len(X)
            if l:
                delta = (W[l].T @ delta) * acts[l] * (1 - acts[l])
    r = rec.history[0]
    assert r["step"] == 0 and r["nonfinite"] is None
    assert list(r["layers"]) == ["0", "2", "4"]
    for name, gb, gw in zip(["0", "2", "4"], grads_b, grads_w):
        assert r["layers"][name]["bias_grad"] == pytest.approx(np.linalg.norm(gb), rel=1e-12)
        assert r["layers"][name]["weight_grad"] == pytest.approx(np.linalg.norm(gw), rel=1e-12)
    steps, speeds = rec.series()
    assert steps.tolist() == [0] and speeds.shape == (1, 3)


def test_recorder_update_ratio_and_schedule():
    model = small_net()
    rng = np.random.default_rng(2)
    X, y = rng.random((8, 6)), rng.integers(0, 3, 8)
    cost = nn.CrossEntropyCost()
    opt = optim.SGD(model.parameters(), lr=0.5, weight_decay=0.1)
    rec = LearningSpeedRecorder(model, every=3)
    expected = {}
    for k in range(7):
        armed = len(model[0]._forward_hooks) > 0
        assert armed == (k % 3 == 0)                # hooks only for the steps that are recorded
        before = model[2].weight.data.copy()
        one_step(model, cost, X, y, rec, opt)
        if k % 3 == 0:
            expected[k] = np.linalg.norm(model[2].weight.data - before) / np.linalg.norm(before)
    assert [r["step"] for r in rec.history] == [0, 3, 6]
    for r in rec.history:
        assert r["layers"]["2"]["update_ratio"] == pytest.approx(expected[r["step"]], rel=1e-10)
    rec.remove()
    assert not model[0]._forward_hooks


def test_saturation_and_dead_fractions_on_crafted_inputs():
    def net(act):
        lin = nn.Linear(3, 3).to("float64")
        lin.weight.data[...] = np.eye(3)
        lin.bias.data[...] = 0
        return nn.Sequential(lin, act(), nn.Linear(3, 2).to("float64"))

    x = np.array([[10.0, 0.0, -10.0], [-6.0, 0.1, 0.2]])     # sigmoid: 3 of 6 outside [0.01, 0.99]
    for act, xin, key, want in [
        (nn.Sigmoid, x, "saturated", 3 / 6),
        (nn.Tanh, np.array([[3.0, 0.5, -3.0], [0.1, -0.2, 2.7]]), "saturated", 3 / 6),   # |tanh| > 0.99
        (nn.ReLU, np.array([[-1.0, 2.0, -3.0], [-2.0, -1.0, 0.5]]), "dead", 1 / 3),      # unit 0 never fires
    ]:
        model = net(act)
        rec = LearningSpeedRecorder(model)
        one_step(model, nn.CrossEntropyCost(), xin, np.array([0, 1]), rec)
        entry = rec.history[0]["layers"]["0"]
        assert entry["activation"] == act.__name__.lower()
        assert entry[key] == pytest.approx(want)
        assert "activation" not in rec.history[0]["layers"]["2"]


def test_recorder_names_first_nonfinite_layer_in_forward_order():
    model = small_net()
    rec = LearningSpeedRecorder(model)
    cost = nn.CrossEntropyCost()
    X, y = np.random.default_rng(0).random((4, 6)), np.array([0, 1, 2, 0])
    cost(model(X), y)
    model.zero_grad()
    model.backward(cost.backward())
    model[4].weight.grad[0, 0] = np.inf
    model[2].bias.grad[1] = np.nan
    rec.after_step()
    assert rec.history[0]["nonfinite"] == "2"


def test_recorder_as_fit_callback_and_files(tmp_path):
    from deepscope.train import fit
    X, y = synthetic(60, d=20, k=3)
    model = nn.Sequential(nn.Linear(20, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    rec = LearningSpeedRecorder(model, every=2, run_dir=tmp_path)
    opt = optim.SGD(model.parameters(), lr=0.5)
    fit(model, nn.CrossEntropyCost(), opt, (X, y), epochs=2, batch_size=10, callbacks=[rec])
    assert [r["step"] for r in rec.history] == [0, 2, 4, 6, 8, 10]     # 12 steps, every 2
    lines = (tmp_path / "speed.jsonl").read_text().splitlines()
    assert [json.loads(s)["step"] for s in lines] == [0, 2, 4, 6, 8, 10]
    assert (tmp_path / "speed.png").stat().st_size > 1000
    assert "dead" in rec.history[0]["layers"]["2"] and "saturated" in rec.history[0]["layers"]["0"]


def test_recorder_conv_bias_is_one_per_feature_map():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2)).to("float64")
    rec = LearningSpeedRecorder(model)
    X = np.random.default_rng(0).random((5, 1, 6, 6))
    one_step(model, nn.LogLikelihoodCost(), X, np.array([0, 1, 0, 1, 1]), rec)
    assert model[0].bias.data.shape == (3,)
    assert rec.history[0]["layers"]["0"]["bias_grad"] == pytest.approx(np.linalg.norm(model[0].bias.grad))
    assert rec.history[0]["layers"]["0"]["weight_grad"] == pytest.approx(np.linalg.norm(model[0].weight.grad))


# ---------------------------------------------------------------------------------------------- anomaly

def test_anomaly_forward_names_layer_and_step():
    model = small_net()
    model[2].weight.data[0, 0] = np.inf
    det = AnomalyDetector(model)
    det.step = 7
    with pytest.raises(NonFiniteError, match=r"forward, step 7: Linear\(5, 4\) \[layer 2\]"):
        model(np.ones((2, 6)))
    model[2].weight.data[0, 0] = 0.0
    x = np.ones((2, 6))
    x[1, 3] = np.nan
    with pytest.raises(NonFiniteError, match=r"input to Linear\(6, 5\) \[layer 0\] is already non-finite"):
        model(x)
    det.remove()
    model(x)                                        # no hooks left: no error


class _Poison(nn.Module):
    """Identity forward; backward poisons its input gradient or its parameter's gradient (test helper)."""

    def __init__(self, where: str):
        super().__init__()
        self.where = where
        self.scale = nn.Parameter(np.ones(1))

    def forward(self, x):
        return x * self.scale.data

    def backward(self, g):
        if self.where == "param":
            self.scale.grad += np.nan
        return g * self.scale.data * (np.inf if self.where == "input" else 1.0)


@pytest.mark.parametrize("where,what", [("input", "its input"), ("param", "its parameter 'scale'")])
def test_anomaly_backward_names_layer(where, what):
    model = nn.Sequential(nn.Linear(3, 4).to("float64"), nn.Sigmoid(), _Poison(where), nn.Linear(4, 2).to("float64"))
    det = AnomalyDetector(model)
    det.step = 3
    cost = nn.CrossEntropyCost()
    cost(model(np.ones((2, 3))), np.array([0, 1]))
    with pytest.raises(NonFiniteError, match=rf"backward, step 3: _Poison\(where='{where}'\) \[layer 2\] produced "
                                             rf"a non-finite gradient for {what}"):
        model.backward(cost.backward())


def test_fit_detect_anomaly_uses_detector():
    from deepscope.train import DetectAnomaly, fit
    X, y = synthetic(20, d=5, k=2)
    model = nn.Sequential(nn.Linear(5, 4), nn.Sigmoid(), nn.Linear(4, 2))
    model[0].weight.data[1, 1] = np.nan
    opt = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(NonFiniteError, match=r"forward, step 1: Linear\(5, 4\) \[layer 0\]"):
        fit(model, nn.CrossEntropyCost(), opt, (X, y), epochs=1, batch_size=10, callbacks=[DetectAnomaly()])
    assert not model[0]._forward_hooks              # fit removed the detector


# ---------------------------------------------------------------------------------------------- chain

@pytest.mark.parametrize("cost", ["quadratic", "crossentropy"])
def test_chain_backprop_equals_product_random(cost):
    for seed in range(10):
        for depth in (1, 2, 4, 7):
            w, b = random_chain(depth, seed)
            x, y = float(np.random.default_rng(seed).normal()), seed % 2
            r = chain_gradient(w, b, x=x, y=y, cost=cost)
            assert r["backprop"] == pytest.approx(r["formula"], rel=1e-12, abs=1e-300)
            assert len(r["terms"]) == depth - 1
            assert all(s <= 0.25 for s in r["sigma_prime"])


def test_chain_exploding_grows_25_per_layer():
    for depth in (2, 4, 6):
        w, b = exploding_chain(depth, x=0.7)
        r = chain_gradient(w, b, x=0.7, y=0.0)
        assert np.allclose(r["z"], 0.0, atol=1e-12)
        assert np.allclose(r["terms"], 25.0)
        assert r["product"] == pytest.approx(25.0 ** (depth - 1))
        assert r["backprop"] == pytest.approx(0.25 * 25.0 ** (depth - 1) * 0.5, rel=1e-12)
        assert r["backprop"] == pytest.approx(r["formula"], rel=1e-12)


def test_chain_model_uses_deepscope_layers():
    model = build_chain([1.0, 2.0], [0.5, -0.5])
    assert [type(m).__name__ for m in model] == ["Linear", "Sigmoid", "Linear"]


# ---------------------------------------------------------------------------------------------- experiments

def test_speed_experiment_small_writes_figure_and_speeds_fall_with_depth(tmp_path):
    data = real_mnist(200) or synthetic(200)
    r = speed_experiment([784, 30, 30, 30, 10], steps=20, seeds=2, data=data, out=tmp_path, progress=False)
    assert r["speeds"].shape == (2, 20, 3)
    init = r["init_speeds"].mean(axis=0)
    assert init[0] < init[1] < init[2]              # earlier layers learn more slowly (the book's finding)
    assert (tmp_path / "speed.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ratio_last_first_mean"] > 1
    lines = (tmp_path / "speed.jsonl").read_text().splitlines()
    assert len(lines) == 40 and json.loads(lines[0])["seed"] == 0


def test_speed_experiment_regularisation_is_network2s():
    """One full-batch step with our SGD equals network2's w ← (1 - ηλ/n) w - η ∇C, b ← b - η ∇C."""
    X, y = synthetic(50, d=12, k=3)
    deepscope.manual_seed(3)
    model = experiment_mod.build_net([12, 5, 3])
    w0, b0 = model[0].weight.data.copy(), model[0].bias.data.copy()
    cost = nn.CrossEntropyCost()
    experiment_mod.full_batch_gradient(model, cost, X, y)
    gw, gb = model[0].weight.grad.copy(), model[0].bias.grad.copy()
    optim.SGD(model.parameters(), lr=0.1, weight_decay=optim.book_weight_decay(5.0, 50)).step()
    np.testing.assert_allclose(model[0].weight.data, (1 - 0.1 * 5.0 / 50) * w0 - 0.1 * gw, rtol=1e-6)
    np.testing.assert_allclose(model[0].bias.data, b0 - 0.1 * gb, rtol=1e-6)


def test_compare_small_grid(tmp_path):
    train, val = synthetic(300, seed=1), synthetic(100, seed=2)
    cells = run_compare([2, 3], ["sigmoid", "relu"], ["book", "he"], steps=30, data=(train, val), out=tmp_path,
                        progress=False)
    assert len(cells) == 8
    assert all(np.isfinite(c["ratio"]) and c["ratio"] > 0 for c in cells)
    assert (tmp_path / "compare.png").stat().st_size > 1000
    md = (tmp_path / "compare.md").read_text()
    assert md.count("\n") == 2 + 4 and "sigmoid" in md
    assert len(json.loads((tmp_path / "compare.json").read_text())["cells"]) == 8


def _count(model, cls):
    return sum(isinstance(m, cls) for _, m in model.named_modules())


@pytest.mark.parametrize("norm", ["none", "batch"])
@pytest.mark.parametrize("residual", ["no", "yes"])
@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5, 20, 50])
def test_compare_cells_build_the_nets_they_name(depth, norm, residual):
    model = deepscope.arch.build(cell_arch(depth, "relu", norm, residual), init="he")
    assert _count(model, nn.Linear) == depth + 1                     # depth hidden Linear maps and the output
    assert _count(model, nn.BatchNorm1d) == (depth if norm == "batch" else 0)
    assert _count(model, nn.Residual) == ((depth - 1) // 2 if residual == "yes" else 0)
    assert model(np.zeros((4, 784), dtype=np.float32)).shape == (4, 10)


def test_compare_plain_cell_is_the_books_net():
    """The plain cell is build_net's net, weight for weight: the grid's old cells keep their numbers."""
    deepscope.manual_seed(7)
    ours = deepscope.arch.build(cell_arch(4, "tanh"), init="book")
    deepscope.manual_seed(7)
    book = experiment_mod.build_net([784, 30, 30, 30, 30, 10], "tanh", "book")
    assert [k for k in ours.state_dict()] != [] and len(ours.state_dict()) == len(book.state_dict())
    for a, b in zip(ours.state_dict().values(), book.state_dict().values()):
        np.testing.assert_array_equal(a, b)


def test_hidden_speeds_of_a_batch_norm_net_are_its_betas():
    X, y = synthetic(64, seed=3)
    deepscope.manual_seed(0)
    model = deepscope.arch.build(cell_arch(3, "sigmoid", "batch"), init="book")
    speeds = experiment_mod.hidden_speeds(model, nn.CrossEntropyCost(), X, y)
    betas = [m.bias.grad for _, m in model.named_modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(speeds) == 3
    np.testing.assert_allclose(speeds, [np.linalg.norm(b.astype(np.float64)) for b in betas], rtol=1e-6)
    assert min(speeds) > 0


def test_compare_norm_and_residual_axes(tmp_path):
    train, val = synthetic(300, seed=1), synthetic(100, seed=2)
    cells = run_compare([3, 6], ["sigmoid"], ["book"], steps=30, data=(train, val), out=tmp_path, progress=False,
                        norms=["none", "batch"], residuals=["no", "yes"])
    assert len(cells) == 8
    by = {(c["depth"], c["norm"], c["residual"]): c for c in cells}
    assert by[(6, "batch", "yes")]["arch"] == "784-30bn-res30bn*2-30bn-10:sigmoid"
    for (depth, norm, res), c in by.items():
        assert len(c["speeds"]) == len(c["speeds_trained"]) == depth        # one speed per hidden layer
        assert np.isfinite(c["ratio"]) and np.isfinite(c["ratio_trained"]) and 0 <= c["accuracy"] <= 1
    # the axes change the nets, so the instruments read differently (same seed, same data)
    assert len({round(c["ratio"], 6) for c in cells if c["depth"] == 6}) == 4
    md = (tmp_path / "compare.md").read_text()
    assert md.count("\n") == 2 + 8
    c = by[(6, "batch", "yes")]
    assert (f"| 6 | sigmoid | batch | yes | {c['ratio']:.3g} → {c['ratio_trained']:.3g} · {c['accuracy']:.2%} |"
            in md)
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["config"]["norms"] == ["none", "batch"] and saved["config"]["residuals"] == ["no", "yes"]
    assert (tmp_path / "compare.png").stat().st_size > 1000


def test_compare_rejects_bad_grids():
    train, val = synthetic(301, seed=1), synthetic(20, seed=2)
    with pytest.raises(ConfigError, match="last mini-batch of one image"):
        run_compare([2], ["relu"], ["he"], steps=5, data=(train, val), progress=False, norms=["batch"])
    with pytest.raises(ConfigError, match="norm must be one of none, batch"):
        run_compare([2], ["relu"], ["he"], steps=5, data=(train, val), progress=False, norms=["layer"])
    with pytest.raises(ConfigError, match="unknown activation"):
        run_compare([2], ["swish"], ["he"], steps=5, data=(train, val), progress=False)


# ---------------------------------------------------------------------------------------------- CLI

def _main(argv):
    from deepscope.cli import main
    return main(argv)


@pytest.fixture
def tiny_mnist(monkeypatch):
    """Replace the MNIST subset by synthetic data so that the CLI runs in a second."""
    def fake(n_train=1000, n_val=0, data_dir=None, verbose=True):
        train = synthetic(min(n_train, 200))
        return train, (synthetic(max(n_val, 1), seed=5) if n_val else None)
    monkeypatch.setattr(experiment_mod, "mnist_subset", fake)
    import deepscope.book.ch5.compare as compare_mod
    monkeypatch.setattr(compare_mod, "mnist_subset", fake)


def test_cli_speed(tmp_path, tiny_mnist, capsys):
    assert _main(["scope", "speed", "--layers", "784,30,30,10", "--steps", "5", "--seeds", "2", "--workers", "1",
                  "--out", str(tmp_path)]) == 0   # --seeds with --steps: a sweep; one worker runs it here
    out = capsys.readouterr().out
    assert "hidden layer 2" in out and "ratio last hidden / first hidden" in out
    assert (tmp_path / "speed.png").exists()


def test_cli_speed_init_only(tmp_path, tiny_mnist, capsys):
    assert _main(["scope", "speed", "--layers", "784,30,30,10", "--steps", "0", "--seeds", "3"]) == 0
    out = capsys.readouterr().out
    assert "(mean ± std over 3 seeds)" in out and "updates" not in out


def test_cli_chain(capsys):
    assert _main(["scope", "chain", "--depth", "4", "--exploding"]) == 0
    out = capsys.readouterr().out
    assert "15625" in out and "relative difference" in out
    assert _main(["scope", "chain", "--weights", "1,2", "--biases", "0,0", "--cost", "crossentropy"]) == 0


def test_cli_compare(tmp_path, tiny_mnist, capsys):
    assert _main(["scope", "compare", "--depths", "2", "--activations", "tanh", "--inits", "book,he",
                  "--steps", "10", "--out", str(tmp_path)]) == 0
    assert "| 2 | tanh |" in capsys.readouterr().out


def test_cli_compare_norms_and_residual(tmp_path, tiny_mnist, capsys):
    assert _main(["scope", "compare", "--depths", "3", "--activations", "relu", "--inits", "he", "--norms",
                  "none,batch", "--residual", "no,yes", "--steps", "10", "--train-size", "200",
                  "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for norm in ("none", "batch"):
        for res in ("no", "yes"):
            assert f"| 3 | relu | {norm} | {res} |" in out
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["norm"], r["residual"]) for r in records] == [("none", "no"), ("none", "yes"), ("batch", "no"),
                                                             ("batch", "yes")]


@pytest.mark.parametrize("argv,msg", [
    (["--norms", "layer"], "--norms: unknown ['layer']; choose from none, batch"),
    (["--residual", "maybe"], "--residual: unknown ['maybe']; choose from no, yes"),
    (["--depths", "5,0"], "--depths: expected comma-separated integers of at least 1"),
    (["--norms", "batch", "--train-size", "201"], "201 training images leave a last mini-batch of one image"),
])
def test_cli_compare_bad_axes_are_one_line(tmp_path, tiny_mnist, capsys, argv, msg):
    assert _main(["scope", "compare", *argv, "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert msg in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_cli_errors_are_one_line(capsys):
    assert _main(["scope", "speed", "--layers", "784,x,10"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("deepscope: error: --layers") and err.count("\n") == 1
    assert _main(["scope", "chain", "--weights", "1,2", "--biases", "0"]) == 1
