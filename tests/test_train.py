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
