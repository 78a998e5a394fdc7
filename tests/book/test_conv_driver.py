"""deepscope.book.conv: chapter 6's driver functions, and network3's Theano names mapped to deepscope."""
from __future__ import annotations

import numpy as np
import pytest

import deepscope
from deepscope.book import conv, network3
from deepscope.book.ch6 import ensemble_predict
from deepscope.data.mnist import load_sample
from deepscope.errors import ConfigError


@pytest.fixture
def small(book_folder, monkeypatch, make_book_pickle, tmp_path):
    """conv's data: 100 training, 50 validation and 200 test images of the sample; a small expanded file."""
    sample = load_sample()
    for name, (X, y), n in zip(("training_data", "validation_data", "test_data"),
                               (sample.train, sample.validation, sample.test), (100, 50, 200)):
        monkeypatch.setattr(conv, name, network3.shared((X[:n], y[:n])), raising=False)
    make_book_pickle(tmp_path / "data" / "mnist_expanded.pkl.gz", n_train=120)
    return sample


def test_the_drivers_train_the_books_architectures(small, capsys):
    deepscope.manual_seed(0)
    nets = conv.shallow(n=1, epochs=1)
    assert len(nets) == 1 and [type(x).__name__ for x in nets[0].layers] == ["FullyConnectedLayer", "SoftmaxLayer"]
    net = conv.basic_conv(n=1, epochs=1)
    assert net.layers[0].filter_shape == (20, 1, 5, 5) and net.layers[1].n_in == 20 * 12 * 12
    assert conv.omit_FC(runs=1, epochs=1).layers[1].n_in == 2880
    net = conv.dbl_conv(activation_fn=network3.ReLU, runs=1, epochs=1)
    assert net.layers[1].filter_shape == (40, 20, 5, 5) and net.layers[2].activation_fn is network3.ReLU
    conv.dbl_conv_relu(lmbdas=(0.1,), runs=1, epochs=1)
    conv.regularized_dbl_conv(lmbdas=(1.0,), runs=1, epochs=1)
    assert conv.expanded_data(n=30, runs=1, epochs=1).layers[2].n_out == 30
    conv.expanded_data_double_fc(n=30, runs=1, epochs=1)
    out = capsys.readouterr().out
    for line in ("A shallow net with 100 hidden neurons", "Conv + FC architecture", "Conv only, no FC",
                 "Conv + Conv + FC num 0, relu, with regularization 0.1",
                 "Training with expanded data, 30 neurons in two FC layers, run num 0"):
        assert line in out
    assert out.count("Finished training network.") == 8


def test_dropout_ensemble_and_the_two_figures(small, tmp_path, capsys):
    deepscope.manual_seed(1)
    nets = conv.double_fc_dropout(0.5, 0.5, 0.5, 3, epochs=1)
    assert len(nets) == 3 and nets[2].layers[3].p_dropout == 0.5
    error_locations, erroneous_predictions = conv.ensemble(nets)
    test_x, test_y = small.test[0][:200], small.test[1][:200]
    vote = ensemble_predict([net.predict(test_x) for net in nets])
    assert error_locations == [j for j in range(200) if vote[j] != test_y[j]]
    assert erroneous_predictions == [int(vote[j]) for j in error_locations]
    assert f"Accuracy is {1 - len(error_locations) / 200:.2%}" in capsys.readouterr().out
    plt = conv.plot_errors(error_locations, erroneous_predictions)
    assert len(plt.gcf().axes) == min(40, len(error_locations))
    plt.savefig(tmp_path / "ensemble_errors.png")
    plt = conv.plot_filters(nets[0], 1, 8, 5)
    axes = plt.gcf().axes
    assert len(axes) == 40
    np.testing.assert_array_equal(axes[3].images[0].get_array(), nets[0].layers[1].w.eval()[3][0])
    plt.savefig(tmp_path / "net_full_layer_1.png")
    plt.close("all")


def test_network3_theano_names_map_to_deepscope(small):
    test_x, test_y = conv.test_data
    assert isinstance(test_y.eval(), np.ndarray) and type(test_y.eval()) is np.ndarray
    np.testing.assert_array_equal(test_y.eval(), small.test[1][:200])
    assert test_x.get_value(borrow=True).shape == (200, 1, 28, 28)
    net = network3.Network([network3.FullyConnectedLayer(784, 20), network3.SoftmaxLayer(20, 10)], 10)
    w = net.layers[0].w
    assert w.eval().shape == (784, 20)                       # network3's (n_in, n_out)
    np.testing.assert_array_equal(w.eval(), w.data.T)        # deepscope's (n_out, n_in)
    w.set_value(np.ones((784, 20)))
    assert float(net.model[0].weight.data.sum()) == 784 * 20
    with pytest.raises(AttributeError, match=r"net\.predict\(X\)"):
        net.x
    with pytest.raises(AttributeError, match=r"net\.predict\(X\)"):
        net.layers[-1].y_out
    a = np.ones((4, 1000))
    kept = network3.dropout_layer(a, 0.25)
    assert set(np.unique(kept)) <= {0.0, 1.0} and 0.7 < kept.mean() < 0.8


def test_gpu_flag_asks_for_the_gpu(monkeypatch):
    monkeypatch.setattr(network3, "GPU", True)
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy present: the flag would move the net")
    except ImportError:
        pass
    with pytest.raises(ConfigError, match="cuda"):
        network3.Network([network3.FullyConnectedLayer(784, 20), network3.SoftmaxLayer(20, 10)], 10)


def test_data_is_loaded_on_first_use(book_folder, monkeypatch):
    for name in ("training_data", "validation_data", "test_data"):
        monkeypatch.delitem(vars(conv), name, raising=False)
    assert conv.training_data[0].shape == (5000, 1, 28, 28)   # ../data/mnist.pkl.gz of the book folder
    with pytest.raises(AttributeError):
        conv.no_such_thing
    for name in ("training_data", "validation_data", "test_data"):
        monkeypatch.delitem(vars(conv), name, raising=False)
