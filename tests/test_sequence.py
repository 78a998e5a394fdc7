"""Character corpora, the character language model, row-by-row MNIST and the `deepscope rnn` commands."""
from pathlib import Path

import numpy as np
import pytest

import deepscope
from deepscope import nn
from deepscope.cli import main
from deepscope.data.text import DEFAULT_CORPUS, CharCorpus, Vocabulary, load_corpus
from deepscope.errors import DataError
from deepscope.sequence import char_model, evaluate_char_lm, sample, train_char_lm

from data_paths import DATA as SHARED


# -- corpus --------------------------------------------------------------------------------------------

def test_vocabulary_roundtrip_and_unknown_character():
    v = Vocabulary.from_text("hello world")
    assert v.chars == sorted(set("hello world"))
    ids = v.encode("world hello")
    assert ids.dtype == np.int64 and v.decode(ids) == "world hello"
    with pytest.raises(DataError, match=r"not in the vocabulary.*'z'"):
        v.encode("lazy")


def test_corpus_split_and_empty():
    c = CharCorpus("abcdefghij" * 10)
    assert len(c.train) == 90 and len(c.validation) == 10
    np.testing.assert_array_equal(np.concatenate([c.train, c.validation]), c.data)
    with pytest.raises(DataError, match="empty"):
        CharCorpus("")


def test_batches_are_contiguous_rows_for_truncated_bptt():
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    c = CharCorpus(text, validation_fraction=0.0)
    batches = list(c.batches("train", batch_size=4, seq_len=10))
    assert len(batches) == c.num_batches("train", 4, 10) == 24
    x0, y0 = batches[0]
    x1, _ = batches[1]
    assert x0.shape == (4, 10) and x0.dtype == np.int64
    np.testing.assert_array_equal(y0[:, :-1], x0[:, 1:])          # targets are the next characters
    np.testing.assert_array_equal(y0[:, -1], x1[:, 0])            # row n of batch b+1 continues row n of b
    np.testing.assert_array_equal(x0[0], c.data[:10])
    with pytest.raises(DataError, match="too short"):
        list(c.batches("train", batch_size=200, seq_len=10))


def test_shipped_corpus_is_the_default():
    c = load_corpus()
    assert Path(c.name) == DEFAULT_CORPUS and 90_000 < len(c.data) < 120_000
    assert "ROMEO" in c.vocab.decode(c.data) or "First Citizen" in c.vocab.decode(c.data[:100])
    with pytest.raises(DataError, match="no corpus"):
        load_corpus("/nonexistent/corpus.txt")


# -- character language model ----------------------------------------------------------------------------

def test_char_lm_learns_a_periodic_text_and_samples_it():
    deepscope.manual_seed(0)
    corpus = CharCorpus("abcde" * 400)
    model = char_model(len(corpus.vocab), hidden=16, embedding=8)
    before = evaluate_char_lm(model, corpus, batch_size=4, seq_len=10)
    records = train_char_lm(model, corpus, epochs=3, batch_size=8, seq_len=10, lr=1e-2, progress=False)
    assert before > 1.2 and records[-1]["val_loss"] < 0.1          # ln 5 ≈ 1.61 -> nearly certain
    text = sample(model, corpus.vocab, length=20, temperature=0.5, prime="abc", seed=0)
    assert text.startswith("abc") and "deabcdeab" in text
    assert text == sample(model, corpus.vocab, length=20, temperature=0.5, prime="abc", seed=0)
    with pytest.raises(DataError, match="prime"):
        sample(model, corpus.vocab, prime="xyz")


def test_cli_text_and_sample(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("to be or not to be, that is the question. " * 60)
    run = tmp_path / "run"
    assert main(["rnn", "text", "--corpus", str(corpus), "--hidden", "16", "--embedding", "8", "--epochs", "1",
                 "--seq-len", "20", "--batch-size", "8", "--out", str(run), "--quiet", "--sample-length", "30"]) == 0
    for name in ("config.json", "vocab.json", "metrics.jsonl", "model.json", "model.safetensors", "sample.txt"):
        assert (run / name).exists(), name
    capsys.readouterr()
    assert main(["rnn", "sample", str(run), "--length", "40", "--prime", "to be", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("to be") and len(out.rstrip("\n")) >= 40
    assert main(["rnn", "sample", str(run), "--prime", "TO BE"]) == 1
    assert "prime" in capsys.readouterr().err
    assert main(["rnn", "text", "--corpus", str(tmp_path / "missing.txt")]) == 1


# -- row-by-row MNIST -------------------------------------------------------------------------------------

def test_row_mnist_one_epoch_clears_chance():
    from deepscope.data.mnist import load_sample
    from deepscope.sequence import row_mnist_model, as_rows
    from deepscope.sequence.mnist import make_optimizer
    from deepscope.train import evaluate, fit
    deepscope.manual_seed(0)
    data = load_sample()
    X, y = data.train
    X, y = X[:3000], y[:3000]
    model = row_mnist_model(hidden=64)
    opt = make_optimizer(model, "adam", 2e-3, clip=1.0)
    fit(model, nn.LogLikelihoodCost(), opt, (as_rows(X), y), epochs=1, batch_size=32, callbacks=[])
    acc = evaluate(model, as_rows(data.test[0]), data.test[1])
    assert acc > 0.5, acc  # chance is 0.1


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "mnist").exists(), reason="MNIST not in ../shared/data")
def test_row_mnist_reaches_97_percent():
    from deepscope.data import load_mnist
    from deepscope.sequence import train_row_mnist
    deepscope.manual_seed(0)
    data = load_mnist(data_dir=SHARED / "mnist", download=False)
    _, history = train_row_mnist(data, hidden=128, epochs=10, batch_size=64, lr=1e-3, clip=1.0,
                                 init="orthogonal", schedule="cosine", callbacks=[])
    assert history.best["test_acc"] >= 0.97 and history.records[-1]["test_acc"] >= 0.97


def test_char_batches_with_zero_batch_size_is_a_data_error():
    from deepscope.data.text import CharCorpus
    corpus = CharCorpus("hello world " * 20)
    with pytest.raises(DataError, match="too short for 0 rows"):
        list(corpus.batches("train", 0, 5))
    assert corpus.num_batches("train", 0, 5) == 0
