"""Regression tests from the core review: each test pins one bug that was found and fixed."""
import json

import numpy as np
import pytest

import deepscope as ds
from deepscope import arch, backend, nn, optim
from deepscope.gradcheck import check_module
from deepscope.runs import Run
from deepscope.train import DetectAnomaly, EarlyStopping, Schedule, fit
from test_train import blobs


# -- bad input gives one clear deepscope error, not a ZeroDivisionError --------------------------------
@pytest.mark.parametrize("bad", ["784-0-10", "0-10", "conv0x5-10", "conv20x5s0-10", "conv20x0-10",
                                 "conv20x5-maxpool0-10", "conv20x5-maxpool2s0-10", "784-fc0-10"])
def test_architecture_with_zero_sizes_is_an_architecture_error(bad):
    with pytest.raises(ds.ArchitectureError, match=r"must be at least 1"):
        arch.build(bad)


def test_layers_with_no_features_are_a_value_error():
    with pytest.raises(ValueError, match=r"Linear: in_features and out_features must be positive"):
        nn.Linear(0, 3)
    with pytest.raises(ValueError, match=r"Conv2d: in_channels and out_channels must be positive"):
        nn.Conv2d(1, 0, 3)


def test_char_batches_with_zero_batch_size_is_a_data_error():
    from deepscope.data.text import CharCorpus
    corpus = CharCorpus("hello world " * 20)
    with pytest.raises(ds.DataError, match="too short for 0 rows"):
        list(corpus.batches("train", 0, 5))
    assert corpus.num_batches("train", 0, 5) == 0


# -- save / load ---------------------------------------------------------------------------------------
def test_load_keeps_a_float64_model_float64(tmp_path):
    ds.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).to("float64")
    model[0].weight.data[0, 0] = 1 + 1e-12      # not representable in float32
    ds.save(model, tmp_path / "m")
    loaded = ds.load(tmp_path / "m")
    assert loaded.dtype == np.float64
    np.testing.assert_array_equal(loaded[0].weight.data, model[0].weight.data)


def test_save_names_with_dots_do_not_collide(tmp_path):
    ds.save(nn.Linear(2, 3), tmp_path / "net-p0.3")
    ds.save(nn.Linear(4, 5), tmp_path / "net-p0.5")
    assert ds.load(tmp_path / "net-p0.3").in_features == 2
    assert ds.load(tmp_path / "net-p0.5").in_features == 4


def test_load_round_trips_every_layer_type(tmp_path):
    ds.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(1, 2, (3, 2), stride=(2, 1), padding=1, bias=False, init="he"), nn.ReLU(),
                         nn.MaxPool2d(2, stride=1), nn.AvgPool2d((1, 2)), nn.L2Pool2d(1),
                         nn.Dropout(0.3, scale_at_test=True), nn.Flatten(), nn.Linear(18, 5, init="xavier"))
    rnn = nn.Sequential(nn.Embedding(7, 4), nn.RNN(4, 5, num_layers=2, nonlinearity="relu", bidirectional=True,
                                                     batch_first=False, init="orthogonal"),
                        nn.LastStep(batch_first=False), nn.Linear(10, 3, bias=False))
    cases = [(conv, np.random.default_rng(0).random((2, 1, 7, 7)).astype(np.float32)),
             (rnn, np.random.default_rng(0).integers(0, 7, (3, 2)))]
    for i, (model, x) in enumerate(cases):
        ds.save(model, tmp_path / f"m{i}")
        loaded = ds.load(tmp_path / f"m{i}")
        assert loaded.config() == model.config()
        model.eval()
        np.testing.assert_array_equal(loaded(x), model(x))


def test_load_of_a_bad_description_is_a_data_error(tmp_path):
    ds.save(nn.Sequential(nn.Linear(2, 3)), tmp_path / "m")
    desc = {"format": "deepscope-model-1", "model": {"type": "Sequential", "modules": [
        {"type": "Linear", "args": {"in_features": 2, "out_features": 3}},
        {"type": "Linear", "args": {"in_features": 3, "out_features": 3}}]}}
    (tmp_path / "m.json").write_text(json.dumps(desc))
    with pytest.raises(ds.DataError, match="missing keys"):
        ds.load(tmp_path / "m")
    desc["model"] = {"type": "Linear", "args": {"features": 2}}
    (tmp_path / "m.json").write_text(json.dumps(desc))
    with pytest.raises(ds.DataError, match="cannot build Linear"):
        ds.load(tmp_path / "m")


def test_load_does_not_disturb_the_global_generator(tmp_path):
    ds.save(nn.Sequential(nn.Linear(5, 5), nn.Dropout(0.5)), tmp_path / "m")
    ds.manual_seed(0)
    a = backend.rng().random()
    ds.manual_seed(0)
    ds.load(tmp_path / "m")
    assert backend.rng().random() == a


# -- gradcheck -----------------------------------------------------------------------------------------
def test_gradcheck_handles_non_contiguous_inputs():
    ds.manual_seed(0)
    x = np.asfortranarray(np.random.default_rng(0).standard_normal((4, 3)))
    check_module(nn.Linear(3, 2), x)


def test_gradcheck_handles_modules_without_an_input_gradient():
    ds.manual_seed(0)
    layer = nn.Linear(3, 2)
    layer.needs_input_grad = False
    grads = check_module(layer, np.random.default_rng(0).standard_normal((4, 3)))
    assert grads["input"] is None
    check_module(nn.Embedding(5, 3), np.array([[0, 1, 1], [4, 0, 2]]))


def test_gradcheck_still_catches_a_wrong_parameter_gradient():
    class Wrong(nn.Linear):
        def backward(self, grad_output):
            out = super().backward(grad_output)
            self.weight.grad *= 1.01
            return out
    with pytest.raises(AssertionError, match="gradient of weight"):
        check_module(Wrong(3, 2), np.asfortranarray(np.random.default_rng(0).standard_normal((4, 3))))


# -- fit ------------------------------------------------------------------------------------------------
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


# -- one-hot targets (network.py's training data) -------------------------------------------------------
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
