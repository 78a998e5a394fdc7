"""Class 11 of issue 9 (library side): each case that used to end in a traceback from inside NumPy or
matplotlib now raises one of deepscope's errors, with one line naming what is wrong."""
import numpy as np
import pytest

import deepscope as ds
from deepscope import figures, nn
from deepscope.book import ch6
from deepscope.data.text import Vocabulary
from deepscope.errors import ConfigError, DataError
from deepscope.sequence.text import generate, sample


@pytest.mark.parametrize("seed", [-1, 2.5, "7", True])
def test_seed_must_be_a_whole_number(seed):
    with pytest.raises(ConfigError) as err:
        ds.manual_seed(seed)
    assert str(err.value) == f"the seed must be a whole number >= 0, got {seed!r}"


def char_model(vocab_size=5, hidden=8):
    ds.manual_seed(0)
    return nn.Sequential(nn.Embedding(vocab_size, 4), nn.RNN(4, hidden, batch_first=True), nn.Linear(hidden, vocab_size))


def test_tiny_temperature_samples_greedily_instead_of_nan():
    vocab = Vocabulary("\nabcd")
    model = char_model()
    text = sample(model, vocab, 20, temperature=1e-308, seed=0)
    assert len(text) == 21 and set(text) <= set(vocab.chars)
    assert text == sample(model, vocab, 20, temperature=1e-300, seed=5)  # greedy: the seed does not matter


@pytest.mark.parametrize("temperature", [0, -1, float("nan"), float("inf")])
def test_temperature_must_be_positive_and_finite(temperature):
    with pytest.raises(ConfigError, match=rf"^temperature must be a positive number, got {temperature}$"):
        sample(char_model(), Vocabulary("\nabcd"), 5, temperature=temperature)


def test_sampling_streams_characters_as_they_are_drawn():
    chunks = generate(char_model(), Vocabulary("\nabcd"), 10**9, seed=0, prime="ab")  # a billion: lazily
    assert next(chunks) == "ab"
    assert all(len(next(chunks)) == 1 for _ in range(5))
    chunks.close()


def test_sampling_a_model_with_nan_weights_says_so():
    model = char_model()
    model[2].weight.data[...] = np.nan
    with pytest.raises(ds.NonFiniteError, match="^the model's outputs are not finite"):
        sample(model, Vocabulary("\nabcd"), 5)


@pytest.mark.parametrize("saved, message", [
    (["a", "b"], "vocab.json: expected an object with the vocabulary's \"chars\", got ['a', 'b']"),
    ({"chars": 5}, "vocab.json: a vocabulary is a string or a list of one-character strings, got 5"),
    ({"chars": ["ab", "c"]}, "vocab.json: a vocabulary is a string or a list of one-character strings, got ['ab', 'c']"),
    ({"chars": []}, "vocab.json: the vocabulary is empty"),
    ({"chars": ["a", "a"]}, "vocab.json: vocabulary has repeated characters"),
])
def test_tampered_vocabulary_is_one_line(saved, message):
    with pytest.raises(DataError) as err:
        Vocabulary.from_saved(saved, "vocab.json")
    assert str(err.value) == message


def test_book_rung_with_fewer_images_than_its_mini_batch():
    rng = np.random.default_rng(0)
    data = tuple((rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)) for n in (30, 10, 10))
    with pytest.raises(DataError) as err:
        ch6.run_rung("baseline", data, epochs=1, train_size=5, progress=False, verbose=False)
    assert str(err.value) == ("baseline: 5 training images are fewer than the rung's mini-batch of 10; "
                              "network3 trains on whole mini-batches only")


@pytest.mark.parametrize("name, message", [
    ("x.txt", "x.txt: a figure is written as .png or .svg; name the file with one of them"),
    ("noext", "noext: a figure is written as .png or .svg; name the file with one of them"),
])
def test_figure_path_must_name_an_image(tmp_path, monkeypatch, name, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as err:
        figures.plot_filters(np.zeros((4, 5, 5)), name)
    assert str(err.value) == message
    assert list(tmp_path.iterdir()) == []
