"""deepscope.book: the network3 API, its quirks, chapter 6's presets, the ensemble vote and the CLI."""
from __future__ import annotations

import argparse
import math

import numpy as np
import pytest

import deepscope
from deepscope import backend, nn
from deepscope.book import ch6
from deepscope.book import network3 as n3
from deepscope.errors import ArchitectureError, DeepscopeError

from data_paths import DATA
MNIST = DATA / "mnist"
needs_mnist = pytest.mark.skipif(not (MNIST / "train-images-idx3-ubyte.gz").exists(),
                                 reason="real MNIST not in ../shared/data/mnist")


@pytest.fixture
def sample():
    """The MNIST sample shipped with deepscope (always present)."""
    from deepscope.data.mnist import load_sample
    return load_sample()


@pytest.fixture
def float64():
    backend.set_default_dtype("float64")
    yield
    backend.set_default_dtype("float32")


def small_conv_layers(m=10, maps=4, p=0.0, act=n3.ReLU):
    return [n3.ConvPoolLayer(filter_shape=(maps, 1, 5, 5), image_shape=(m, 1, 28, 28), poolsize=(2, 2),
                             activation_fn=act),
            n3.FullyConnectedLayer(n_in=maps * 12 * 12, n_out=30, activation_fn=act, p_dropout=p),
            n3.SoftmaxLayer(n_in=30, n_out=10, p_dropout=p)]


# -- network3 API -------------------------------------------------------------------------------------
def test_network3_runs_and_prints_its_lines(sample, capsys):
    deepscope.manual_seed(0)
    X, y = sample.train
    training_data = (X[:500], y[:500])
    validation_data, test_data = (sample.validation[0][:200], sample.validation[1][:200]), sample.test
    mini_batch_size = 10
    net = n3.Network(small_conv_layers(mini_batch_size, p=0.5), mini_batch_size)
    result = net.SGD(training_data, 1, mini_batch_size, 0.03, validation_data, test_data, lmbda=0.1)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Training mini-batch number 0"
    assert out[1] == f"Epoch 0: validation accuracy {result.best_validation_accuracy:.2%}"
    assert out[2] == "This is the best validation accuracy to date."
    assert out[3] == f"The corresponding test accuracy is {result.test_accuracy:.2%}"
    assert out[4] == "Finished training network."
    assert out[5] == f"Best validation accuracy of {result.best_validation_accuracy:.2%} obtained at iteration 49"
    assert out[6] == f"Corresponding test accuracy of {result.test_accuracy:.2%}"
    assert n3.size(training_data) == 500
    assert result.best_iteration == 49 and len(result.epochs) == 1


def test_network3_best_uses_greater_or_equal_and_keeps_its_test_accuracy(sample, capsys):
    # An eta of ~0 leaves the net unchanged: every epoch ties the best, and network3 (>=) re-announces it.
    deepscope.manual_seed(0)
    X, y = sample.train
    net = n3.Network([n3.FullyConnectedLayer(784, 20), n3.SoftmaxLayer(20, 10)], 10)
    net.SGD((X[:50], y[:50]), 3, 10, 1e-12, (X[:40], y[:40]), (X[:40], y[:40]))
    out = capsys.readouterr().out
    assert out.count("This is the best validation accuracy to date.") == 3
    assert "obtained at iteration 14" in out


def test_network3_activation_functions_compute_their_values():
    z = np.array([-2.0, 0.0, 3.0])
    assert np.allclose(n3.sigmoid(z), 1 / (1 + np.exp(-z)))
    assert np.allclose(n3.tanh(z), np.tanh(z))
    assert np.allclose(n3.ReLU(z), [0, 0, 3])
    assert n3.linear(z) is z
    assert isinstance(n3.activation_module(n3.ReLU), nn.ReLU)
    assert isinstance(n3.activation_module("tanh"), nn.Tanh)
    with pytest.raises(ArchitectureError):
        n3.activation_module(abs)


def test_network3_rejects_inconsistent_layers():
    with pytest.raises(ArchitectureError, match="n_in=50"):
        n3.Network([n3.FullyConnectedLayer(784, 100), n3.SoftmaxLayer(50, 10)], 10)
    with pytest.raises(ArchitectureError, match="SoftmaxLayer"):
        n3.Network([n3.FullyConnectedLayer(784, 10)], 10)
    with pytest.raises(ArchitectureError, match="input maps"):
        n3.ConvPoolLayer(filter_shape=(20, 3, 5, 5), image_shape=(10, 1, 28, 28))


def _std(p):
    return float(np.asarray(backend.to_numpy(p.data)).std())


def test_quirks_switch_changes_the_initial_scales():
    layers = lambda: [n3.ConvPoolLayer(filter_shape=(40, 20, 5, 5), image_shape=(10, 20, 12, 12)),  # noqa: E731
                      n3.FullyConnectedLayer(40 * 4 * 4, 400), n3.SoftmaxLayer(400, 10)]
    deepscope.manual_seed(1)
    quirky = n3.Network(layers(), 10, quirks=True)
    conv, fc, soft = quirky.layers
    # network3: conv N(0, 1/(40*25//4)), FC N(0, 1/n_out), biases N(0, 1), softmax all zero
    assert conv.init_std() == pytest.approx(math.sqrt(1 / 250))
    assert _std(conv.w) == pytest.approx(math.sqrt(1 / 250), rel=0.05)
    assert _std(fc.w) == pytest.approx(math.sqrt(1 / 400), rel=0.05)
    assert _std(fc.b) == pytest.approx(1.0, rel=0.15)
    assert not np.any(backend.to_numpy(soft.w.data)) and not np.any(backend.to_numpy(soft.b.data))
    deepscope.manual_seed(1)
    plain = n3.Network(layers(), 10, quirks=False)
    conv, fc, soft = plain.layers
    # deepscope's defaults: N(0, 1/n_in) everywhere, the output layer included
    assert _std(conv.w) == pytest.approx(math.sqrt(1 / (20 * 25)), rel=0.05)
    assert _std(fc.w) == pytest.approx(math.sqrt(1 / 640), rel=0.05)
    assert _std(soft.w) == pytest.approx(math.sqrt(1 / 400), rel=0.1)


def test_quirks_switch_chooses_the_dropout_convention():
    quirky = n3.Network(small_conv_layers(p=0.5), 10, quirks=True)
    plain = n3.Network(small_conv_layers(p=0.5), 10, quirks=False)
    drops = [m for m in quirky.model if isinstance(m, nn.Dropout)]
    assert len(drops) == 2 and all(d.scale_at_test and d.p == 0.5 for d in drops)
    assert all(not m.scale_at_test for m in plain.model if isinstance(m, nn.Dropout))


def test_network3_dropout_scales_the_weighted_input_by_one_minus_p_at_test_time(sample):
    # network3's test-time output is softmax((1-p) x·w + b): compare with the same net without dropout.
    deepscope.manual_seed(3)
    fc = [n3.FullyConnectedLayer(784, 30, activation_fn=n3.ReLU, p_dropout=0.25), n3.SoftmaxLayer(30, 10)]
    net = n3.Network(fc, 10)
    net.model[-1].weight.data += 0.1  # the softmax layer starts at zero; make it matter
    X = sample.test[0][:20]
    lin1, lin2 = [m for m in net.model if isinstance(m, nn.Linear)]
    a = np.maximum(0, 0.75 * X.reshape(20, -1) @ backend.to_numpy(lin1.weight.data).T + backend.to_numpy(lin1.bias.data))
    z = a @ backend.to_numpy(lin2.weight.data).T + backend.to_numpy(lin2.bias.data)
    assert np.allclose(net.feedforward(X), z, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("quirks", [True, False])
def test_network3_sgd_step_matches_torch(float64, sample, quirks, capsys):
    """One mini-batch of network3's SGD = one torch step on mean NLL + 0.5 λ Σw² / (num_training_batches
    with quirks, n without), with conv -> maxpool -> σ (network3's order)."""
    torch = pytest.importorskip("torch")
    deepscope.manual_seed(5)
    layers = [n3.ConvPoolLayer(filter_shape=(3, 1, 5, 5), image_shape=(10, 1, 28, 28), activation_fn=n3.sigmoid),
              n3.FullyConnectedLayer(3 * 12 * 12, 20, activation_fn=n3.tanh), n3.SoftmaxLayer(20, 10)]
    net = n3.Network(layers, 10, quirks=quirks)
    net.model[-1].weight.data[...] = backend.rng().standard_normal((10, 20)) * 0.3  # move off zero
    conv, _, _, _, lin1, _, lin2 = net.model
    before = {k: torch.tensor(v, requires_grad=True) for k, v in net.model.state_dict().items()}
    X, y = sample.train[0][:10].astype(np.float64), sample.train[1][:10]
    eta, lmbda = 0.5, 2.0
    net.SGD((X, y), 1, 10, eta, (X, y), None, lmbda=lmbda, verbose=False)

    F = torch.nn.functional
    xt = torch.tensor(X)
    h = torch.sigmoid(F.max_pool2d(F.conv2d(xt, before["0.weight"], before["0.bias"]), 2))
    h = torch.tanh(F.linear(h.flatten(1), before["4.weight"], before["4.bias"]))
    z = F.linear(h, before["6.weight"], before["6.bias"])
    num_training_batches, n = 1, 10
    divisor = num_training_batches if quirks else n
    l2 = sum((before[k] ** 2).sum() for k in ("0.weight", "4.weight", "6.weight"))
    cost = F.cross_entropy(z, torch.tensor(y)) + 0.5 * lmbda * l2 / divisor
    cost.backward()
    after = net.model.state_dict()
    for k, p in before.items():
        np.testing.assert_allclose(after[k], (p - eta * p.grad).detach().numpy(), rtol=1e-7, atol=1e-10)


def test_network3_quirks_keep_the_order_and_drop_the_remainder(sample):
    X, y = sample.train[0][:35], sample.train[1][:35]
    for quirks, expected_same in ((True, True), (False, False)):
        deepscope.manual_seed(0)
        net = n3.Network([n3.FullyConnectedLayer(784, 5), n3.SoftmaxLayer(5, 10)], 10, quirks=quirks)
        seen = []
        net.model[0].register_forward_hook(lambda m, inp, out: seen.append(backend.to_numpy(inp[0]).copy())
                                           if m.training else None)
        net.SGD((X, y), 2, 10, 0.1, (X, y), None, verbose=False)
        epoch1, epoch2 = np.concatenate(seen[:len(seen) // 2]), np.concatenate(seen[len(seen) // 2:])
        if quirks:
            assert len(seen) == 6 and epoch1.shape[0] == 30  # 35 // 10 mini-batches, the last 5 unused
            assert np.array_equal(epoch1, X[:30].reshape(30, -1))
        else:
            assert len(seen) == 6
        assert np.array_equal(epoch1, epoch2) == expected_same


def test_load_data_shared_reads_a_folder_and_the_books_pickle(tmp_path, sample):
    import gzip
    import pickle
    flat = lambda s: (s[0][:30].reshape(30, 784), s[1][:30])  # noqa: E731
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump((flat(sample.train), flat(sample.validation), flat(sample.test)), f)
    tr, va, te = n3.load_data_shared(str(path))
    assert tr[0].shape == (30, 1, 28, 28) and tr[0].dtype == np.float32 and tr[1].dtype == np.int64
    assert np.array_equal(va[0], sample.validation[0][:30])
    tr2, _, _ = n3.load_data_shared(str(tmp_path))  # a folder holding the pickle
    assert np.array_equal(tr2[0], tr[0])


def test_expanded_training_data_is_five_times_larger_and_shuffled(sample):
    deepscope.manual_seed(0)
    X, y = sample.train[0][:40], sample.train[1][:40]
    X5, y5 = n3.expanded_training_data((X, y))
    assert X5.shape == (200, 1, 28, 28)
    assert np.array_equal(np.bincount(y5, minlength=10), 5 * np.bincount(y, minlength=10))
    assert not np.array_equal(y5, np.repeat(y, 5))  # shuffled once, as expand_mnist.py did


# -- chapter 6 ----------------------------------------------------------------------------------------
def test_ch6_presets_follow_the_book():
    assert list(ch6.RUNGS) == ["baseline", "conv", "conv2", "relu", "expanded", "fc2", "dropout", "ensemble"]
    assert [r.book for r in ch6.RUNGS.values()] == [97.80, 98.78, 99.06, 99.23, 99.37, 99.43, 99.60, 99.67]
    r = ch6.RUNGS["relu"]
    assert (r.epochs, r.mini_batch_size, r.eta, r.lmbda, r.activation) == (60, 10, 0.03, 0.1, "relu")
    d = ch6.RUNGS["dropout"]
    assert (d.epochs, d.lmbda, d.p_dropout, d.expanded, d.fcs) == (40, 0.0, 0.5, True, (1000, 1000))
    assert ch6.RUNGS["ensemble"].runs == 5 and ch6.RUNGS["ensemble"].ensemble
    assert ch6.RUNGS["conv2"].arch == "conv20x5-maxpool2-conv40x5-maxpool2-fc100-softmax10:sigmoid"
    text = ch6.list_rungs()
    assert all(name in text for name in ch6.RUNGS) and "99.67%" in text
    with pytest.raises(DeepscopeError, match="unknown chapter 6 step"):
        ch6.get_rung("resnet")


@pytest.mark.parametrize("name", ["baseline", "conv", "fc2", "dropout"])
def test_ch6_arch_string_and_network3_layers_describe_the_same_net(name):
    from deepscope.arch import build
    rung = ch6.RUNGS[name]
    a = build(rung.arch)
    b = n3.Network(rung.network3_layers(), rung.mini_batch_size).model
    shapes = lambda m: [tuple(p.shape) for p in m.parameters()]  # noqa: E731
    assert shapes(a) == shapes(b)
    assert sum(isinstance(m, nn.Dropout) for m in a) == sum(isinstance(m, nn.Dropout) for m in b)


def test_ensemble_plurality_vote_on_crafted_predictions():
    nets = [np.array([0, 1, 2, 3, 7]),
            np.array([0, 2, 2, 4, 8]),
            np.array([1, 2, 3, 5, 8])]
    # 0 wins 2-1; 2 wins 2-1; 2 wins 2-1; 3/4/5 tie -> the first net's 3; 8 wins 2-1
    assert ensemble_predict_list(nets) == [0, 2, 2, 3, 8]
    # ties between two classes go to the earlier net's choice, as Counter.most_common does
    assert ensemble_predict_list([np.array([4]), np.array([6])]) == [4]
    assert ensemble_predict_list([np.array([4]), np.array([6]), np.array([6]), np.array([4])]) == [4]
    # outputs (N, classes) are turned into classes by argmax
    logits = [np.eye(3)[[0, 1]], np.eye(3)[[2, 1]], np.eye(3)[[2, 0]]]
    assert ensemble_predict_list(logits) == [2, 1]
    with pytest.raises(ValueError):
        ch6.ensemble_predict([])


def ensemble_predict_list(preds):
    return ch6.ensemble_predict(preds).tolist()


def test_ch6_run_rung_on_a_tiny_slice_and_the_table(sample, tmp_path):
    data = (sample.train, (sample.validation[0][:100], sample.validation[1][:100]), sample.test)
    r = ch6.run_rung("baseline", data, epochs=1, train_size=300, out=tmp_path, progress=False, verbose=False)
    assert r["n_train"] == 300 and r["epochs"] == 1 and r["runs"][0]["epochs_run"] == 1
    assert 0 <= r["ours"] <= 100 and r["book"] == 97.80
    assert (tmp_path / "baseline-1" / "metrics.jsonl").exists()
    assert (tmp_path / "baseline-1" / "config.json").exists()
    q = ch6.run_rung("baseline", data, epochs=1, train_size=300, quirks=True, out=tmp_path / "q",
                     progress=False, verbose=False)
    assert (tmp_path / "q" / "baseline-1" / "model.safetensors").exists()
    table = ch6.format_table([r, q])
    assert "baseline" in table and "97.80%" in table and "1/60" in table and "network3 quirks" in table
    loaded = deepscope.load(tmp_path / "q" / "baseline-1")
    assert loaded is not None


def test_ch6_ensemble_rung_votes_among_its_nets(sample, monkeypatch):
    # A cheap stand-in for the ensemble rung (same code path): 3 small dropout nets, 1 epoch each.
    small = ch6.Rung("ensemble", "test", 99.67, fcs=(20,), activation="relu", p_dropout=0.5, epochs=1, eta=0.1,
                     runs=3, ensemble=True)
    data = (sample.train, (sample.validation[0][:100], sample.validation[1][:100]), sample.test)
    r = ch6.run_rung(small, data, train_size=300, progress=False, verbose=False)
    assert len(r["members"]) == 3 and len(r["runs"]) == 3
    assert 0 <= r["ours"] <= 100


# -- CLI ----------------------------------------------------------------------------------------------
def _parser():
    from deepscope.cli import book as cli
    p = argparse.ArgumentParser()
    cli.register(p.add_subparsers())
    return p


def test_cli_lists_the_steps(capsys):
    args = _parser().parse_args(["book", "ch6", "--list"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "baseline" in out and "ensemble" in out and "97.80%" in out


def test_cli_rejects_unknown_steps_and_bad_numbers():
    args = _parser().parse_args(["book", "ch6", "resnet"])
    with pytest.raises(DeepscopeError, match="unknown chapter 6 step"):
        args.func(args)
    args = _parser().parse_args(["book", "ch6", "conv", "--epochs", "0"])
    with pytest.raises(DeepscopeError, match="--epochs"):
        args.func(args)


@needs_mnist
def test_cli_runs_a_step_and_saves_its_runs(tmp_path, capsys):
    args = _parser().parse_args(["book", "ch6", "baseline", "--epochs", "1", "--train-size", "1000",
                                 "--val-size", "500", "--out", str(tmp_path), "--data-dir", str(MNIST),
                                 "--quiet"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "baseline" in out and "97.80%" in out and "1/60" in out
    folder = tmp_path  # --out names the run folder itself, as in every training command (was OUT/ch6-STEP)
    assert (folder / "results.json").exists() and (folder / "table.txt").exists()
    assert (folder / "baseline-1" / "metrics.jsonl").exists()


# -- real MNIST ---------------------------------------------------------------------------------------
def _small_conv_rung(eta=0.1, mini_batch_size=10):
    return ch6.Rung("small", "CI", 0.0, convs=((8, 5),), fcs=(100,), activation="relu", epochs=1, eta=eta,
                    lmbda=0.1, mini_batch_size=mini_batch_size)


@needs_mnist
def test_one_epoch_of_a_small_conv_net_on_4k_real_images_is_far_above_chance():
    # CI-sized (~15 s on an idle 2-core machine): 400 SGD steps of a conv net (8 maps) on real MNIST.
    train, validation, test, _ = ch6.load_data(MNIST, train_size=4_000, val_size=1_000, verbose=False)
    test = (test[0][:1000], test[1][:1000])
    r = ch6.run_rung(_small_conv_rung(), (train, validation, test), seed=0, progress=False, verbose=False)
    assert r["runs"][0]["val_acc"] > 0.85, r


@pytest.mark.slow
@needs_mnist
def test_one_epoch_of_a_small_conv_net_on_10k_real_images_beats_90_percent():
    train, validation, test, _ = ch6.load_data(MNIST, train_size=10_000, val_size=2_000, verbose=False)
    test = (test[0][:2000], test[1][:2000])
    r = ch6.run_rung(_small_conv_rung(), (train, validation, test), seed=0, progress=False, verbose=False)
    assert r["runs"][0]["val_acc"] > 0.90, r


@pytest.mark.slow
@needs_mnist
def test_network3_quirks_conv_net_on_10k_real_images(capsys):
    train, validation, test, _ = ch6.load_data(MNIST, train_size=10_000, val_size=2_000, verbose=False)
    deepscope.manual_seed(0)
    net = n3.Network(small_conv_layers(10, maps=20), 10)
    result = net.SGD(train, 2, 10, 0.03, validation, (test[0][:2000], test[1][:2000]), lmbda=0.1)
    assert result.best_validation_accuracy > 0.90
