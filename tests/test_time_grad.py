"""Gradient through time (sequence.time_grad): ‖∂C/∂h_(T-k)‖ for RNN, LSTM and GRU, and gate saturation."""
import numpy as np
import pytest

import deepscope
from deepscope import nn
from deepscope.cli.main import main
from deepscope.scope.speed import gate_saturation
from deepscope.sequence import time_grad


def _batch(T=15, N=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, T, 28)), rng.integers(0, 10, N)


def test_gradient_through_time_vanishes_in_a_fresh_tanh_rnn():
    deepscope.manual_seed(0)
    model = nn.Sequential(nn.RNN(28, 20), nn.LastStep(), nn.Linear(20, 10))
    norms = time_grad.state_gradient_norms(model, *_batch())
    assert norms.shape == (15,) and np.all(norms > 0)
    assert norms[-1] / norms[0] < 1e-3                # vanishes geometrically


@pytest.mark.parametrize("name", list(time_grad.NETS))
def test_k0_is_the_last_step_gradient(name):
    """k = 0 is ∂C/∂h_T = Vᵀ δ_out, computed here by hand from the head."""
    deepscope.backend.set_default_dtype("float64")
    try:
        deepscope.manual_seed(4)
        model = time_grad.time_model(name, hidden=6)
        x, y = _batch(T=5, N=3, seed=4)
        norms = time_grad.state_gradient_norms(model, x, y)
        cost = nn.LogLikelihoodCost()
        cost(model(x), y)
        assert norms[0] == pytest.approx(np.linalg.norm(cost.backward() @ model[2].weight.data), rel=1e-10)
    finally:
        deepscope.backend.set_default_dtype("float32")


def test_gate_saturation_names_every_gate_and_counts_a_fraction():
    deepscope.manual_seed(0)
    model = time_grad.time_model("lstm", hidden=8)
    x, _ = _batch()
    model(x * 100)                                       # huge inputs: the gates saturate
    sat = gate_saturation(model[0])
    assert set(sat) == {"i", "f", "g", "o"} and all(0.5 < v <= 1 for v in sat.values())
    model(x * 0)
    assert all(v < 0.5 for v in gate_saturation(model[0]).values())


def test_cli_time(tmp_path, capsys):
    assert main(["scope", "time", "--hidden", "6", "--batch-size", "4", "--train-steps", "2", "--train-size", "100",
                 "--out", str(tmp_path / "t")]) == 0
    out = capsys.readouterr().out
    assert "lstm" in out and "gru" in out and "saturated gates" in out
    assert (tmp_path / "t" / "time.png").exists() and (tmp_path / "t" / "time-trained.png").exists()
