"""The CuPy path on a machine without a GPU, walked with a stand-in as strict as CuPy (tests/strict_cupy.py):
no device array turns into a host array by itself and host and device arrays never meet. It catches a NumPy
array or the global module slipping into device code (the LSTM's gate scale did, until this test); speed
and CUDA itself are benchmarks/gpu_check.py's, on a real GPU."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import deepscope as ds
from deepscope import backend, nn
from deepscope.cli.main import main

import strict_cupy

pytestmark = pytest.mark.skipif(importlib.util.find_spec("cupy") is not None,
                                reason="CuPy is installed: the real one is tested on its GPU")


@pytest.fixture
def cupy(monkeypatch):
    module = strict_cupy.install(monkeypatch)
    yield module
    backend.use_device("cpu")
    backend.set_default_dtype("float32")


def test_the_stand_in_refuses_what_cupy_refuses(cupy):
    a = cupy.asarray(np.ones(3, dtype=np.float32))
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(a)
    with pytest.raises(TypeError, match="does not mix host and device"):
        a + np.ones(3)
    with pytest.raises(TypeError, match="does not mix host and device"):
        cupy.concatenate([a, np.ones(3)])
    with pytest.raises(AttributeError, match="permutation"):
        cupy.random.default_rng(0).permutation(3)
    assert backend.xp_of(a) is cupy and type(a) is not np.ndarray
    assert float((a * 2).sum()) == 6.0 and np.array_equal(a.get(), np.ones(3))


def test_every_layer_and_cost_on_the_device_matches_numpy(cupy, gpu_check):
    result = gpu_check.section_layers(None, cupy)
    failed = {k: v for k, v in result.items() if isinstance(v, dict) and not v.get("ok")}
    assert not failed
    assert result["all_ok"] and {"LSTM float64", "Conv2d float32", "Embedding float64", "GRU float32"} <= set(result)


def test_a_step_on_the_device_keeps_everything_there(cupy):
    backend.use_device("cuda")
    ds.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.5),
                          nn.Linear(4 * 12 * 12, 10))
    opt = ds.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = cupy.asarray(np.random.default_rng(0).random((6, 1, 28, 28), dtype=np.float32))
    y = cupy.asarray(np.arange(6) % 10)
    loss, out = ds.train.step(model, nn.LogLikelihoodCost(), opt, x, y)
    assert np.isfinite(float(loss)) and isinstance(out, cupy.ndarray)
    assert all(isinstance(p.data, cupy.ndarray) and isinstance(p.grad, cupy.ndarray) for p in model.parameters())


def _config(run):
    return json.loads((Path(run) / "config.json").read_text())


def test_train_evaluate_and_predict_with_device_cuda(cupy, tmp_path, capsys):
    before = strict_cupy.OPERATIONS[0]
    assert main(["train", "--device", "cuda", "--epochs", "1", "--train-size", "200", "--out", str(tmp_path / "r"),
                 "--quiet"]) == 0
    assert strict_cupy.OPERATIONS[0] - before > 1_000          # the steps ran on the device
    assert _config(tmp_path / "r")["device"] == "cuda"
    assert main(["evaluate", str(tmp_path / "r"), "--device", "cuda"]) == 0
    assert "test       accuracy" in capsys.readouterr().out


def test_the_ensemble_trains_its_nets_on_the_device(cupy, tmp_path, capsys):
    out = tmp_path / "ens"
    assert main(["book", "ch6", "ensemble", "--device", "cuda", "--workers", "1", "--epochs", "1", "--runs", "2",
                 "--train-size", "40", "--val-size", "50", "--out", str(out), "--quiet"]) == 0
    runs = sorted(p.parent for p in out.rglob("config.json"))
    assert len(runs) == 2
    assert [_config(r)["device"] for r in runs] == ["cuda", "cuda"]
    assert "ensemble (plurality vote of 2 nets)" in capsys.readouterr().out


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_a_character_model_trains_on_the_device(cupy, tmp_path, cell):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(("To be, or not to be, that is the question. " * 400))
    assert main(["rnn", "text", "--device", "cuda", "--cell", cell, "--hidden", "16", "--layers", "2",
                 "--seq-len", "20", "-m", "4", "--epochs", "1", "--corpus", str(corpus),
                 "--out", str(tmp_path / "r"), "--quiet"]) == 0


def _net_and_sgd(**sgd):
    ds.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 12 * 12, 10))
    return model, ds.optim.SGD(model.parameters(), **{"lr": 0.1, "momentum": 0.9, **sgd})


def test_a_graphed_step_that_cannot_be_recorded_warns_once_and_steps_as_step_does(cupy):
    backend.use_device("cuda")
    rng = np.random.default_rng(0)
    batches = [(cupy.asarray(rng.random((4, 1, 28, 28), dtype=np.float32)), cupy.asarray(rng.integers(0, 10, 4)))
               for _ in range(4)]
    eager, opt_e = _net_and_sgd()
    graphed_model, opt_g = _net_and_sgd()
    graphed = ds.train.GraphedStep(graphed_model, nn.LogLikelihoodCost(), opt_g)
    cost = nn.LogLikelihoodCost()
    with pytest.warns(UserWarning, match="could not be recorded as a CUDA graph") as warned:
        for x, y in batches:
            a, _ = ds.train.step(eager, cost, opt_e, x, y)
            b, _ = graphed(x, y)
            assert float(a) == float(b)
    assert len(warned) == 1 and graphed.failed is not None and opt_g.steps == opt_e.steps == 4
    for p, q in zip(eager.parameters(), graphed_model.parameters()):
        assert np.array_equal(p.data.get(), q.data.get())


def test_only_plain_sgd_on_a_gpu_is_graphed(cupy):
    backend.use_device("cuda")
    model, sgd = _net_and_sgd()
    assert ds.train.GraphedStep.supports(model, sgd)
    assert not ds.train.GraphedStep.supports(model, ds.optim.SGD(model.parameters(), lr=0.1, clip_norm=1.0))
    assert not ds.train.GraphedStep.supports(model, ds.optim.Adam(model.parameters(), lr=0.1))
    assert ds.train.GraphedStep.supports(model, sgd, nn.LogLikelihoodCost())
    assert not ds.train.GraphedStep.supports(model, sgd, nn.CrossEntropyCost())      # never checked in a recording
    sigmoid = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Sigmoid())
    assert not ds.train.GraphedStep.supports(sigmoid, ds.optim.SGD(sigmoid.parameters(), lr=0.1))
    lstm = nn.Sequential(nn.LSTM(4, 8), nn.LastStep(), nn.Linear(8, 10))
    assert not ds.train.GraphedStep.supports(lstm, ds.optim.SGD(lstm.parameters(), lr=0.1))
    backend.use_device("cpu")
    cpu_model, cpu_sgd = _net_and_sgd()
    assert not ds.train.GraphedStep.supports(cpu_model, cpu_sgd)
    with pytest.raises(ds.ConfigError, match="needs a model on a GPU, plain SGD"):
        ds.train.GraphedStep(cpu_model, nn.LogLikelihoodCost(), cpu_sgd)


def test_the_labels_a_graph_cannot_check_are_checked_on_the_host_first(cupy):
    backend.use_device("cuda")
    model, sgd = _net_and_sgd()
    graphed = ds.train.GraphedStep(model, nn.LogLikelihoodCost(), sgd)
    graphed.check_labels(np.arange(10), 10)
    with pytest.raises(ds.DataError, match="label 10 is out of range for 10 classes"):
        graphed.check_labels(np.array([0, 10, 3]), 10)
    with pytest.raises(ds.DataError, match="label -1 is out of range"):
        graphed.check_labels(np.array([0, -1]), 10)
