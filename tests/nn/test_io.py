"""deepscope.save / deepscope.load: dtype kept, names with dots, every layer type, bad descriptions, RNG untouched
(user modules and registration: tests/nn/test_compose.py)."""
import json

import numpy as np
import pytest

import deepscope as ds
from deepscope import backend, nn


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
