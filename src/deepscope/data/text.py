"""Character corpora for recurrent language models.

A :class:`CharCorpus` holds a text, its vocabulary (the sorted set of its characters), the text encoded as
integers, and a 90/10 split into a training and a validation stream. :meth:`CharCorpus.batches` cuts a
stream into mini-batches for truncated backpropagation through time:

    the stream is split into N equal, contiguous rows (N = batch size); batch b holds columns
    [b·T, (b+1)·T) of every row, so row n of batch b+1 continues row n of batch b. An RNN that carries its
    state across batches (``RNN(stateful=True)``) thus reads N long texts in parallel, T characters at a
    time, and backpropagates only through the last T steps.

Inputs are the characters, targets the same stream shifted by one (the next character).

    >>> corpus = load_corpus()                     # the shipped excerpt of Shakespeare
    >>> for x, y in corpus.batches("train", batch_size=32, seq_len=100): ...   # x, y: int64 (32, 100)
"""
from __future__ import annotations

from pathlib import Path

import numpy

from ..errors import DataError

CORPORA = Path(__file__).resolve().parent / "corpora"
DEFAULT_CORPUS = CORPORA / "shakespeare.txt"


def _short(obj) -> str:
    text = repr(obj)
    return text if len(text) <= 60 else text[:57] + "..."


class Vocabulary:
    """The characters of a corpus, each given an integer (its rank in sorted order).

    Args:
        chars: the characters (a string or a list of one-character strings), in the order of their ids.
    """

    def __init__(self, chars):
        if not isinstance(chars, (str, list, tuple)) or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise DataError(f"a vocabulary is a string or a list of one-character strings, got {_short(chars)}")
        self.chars = list(chars)
        if not self.chars:
            raise DataError("the vocabulary is empty")
        if len(set(self.chars)) != len(self.chars):
            raise DataError("vocabulary has repeated characters")
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_saved(cls, saved, where) -> "Vocabulary":
        """The vocabulary a run saved (``{"chars": [...]}``, e.g. its vocab.json); ``where`` names it in errors."""
        if not isinstance(saved, dict) or "chars" not in saved:
            raise DataError(f"{where}: expected an object with the vocabulary's \"chars\", got {_short(saved)}")
        try:
            return cls(saved["chars"])
        except DataError as e:
            raise DataError(f"{where}: {e}") from None

    @classmethod
    def from_text(cls, text: str) -> "Vocabulary":
        return cls(sorted(set(text)))

    def __len__(self):
        return len(self.chars)

    def encode(self, text: str) -> numpy.ndarray:
        """The ids of ``text``'s characters, int64. Raises DataError naming a character not in the vocabulary."""
        missing = sorted(set(text) - self.index.keys())
        if missing:
            shown = ", ".join(repr(c) for c in missing[:5])
            raise DataError(f"characters not in the vocabulary of {len(self)}: {shown}"
                            + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        return numpy.fromiter((self.index[c] for c in text), dtype=numpy.int64, count=len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


class CharCorpus:
    """A text encoded character by character, with a training/validation split.

    Args:
        text: the corpus.
        validation_fraction: the last part of the text held out for validation (default 0.1).
        vocab: a given vocabulary (default: the characters of ``text``).
        name: where the text came from (for messages and saved runs).

    Attributes:
        vocab: the :class:`Vocabulary`.
        data: the whole text encoded, int64 ``(len(text),)``.
        train, validation: the two streams (int64), 90% and 10% of ``data``.
    """

    def __init__(self, text: str, validation_fraction: float = 0.1, vocab: Vocabulary | None = None,
                 name: str = "<text>"):
        if not text:
            raise DataError(f"corpus {name} is empty")
        if not 0 <= validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
        self.name = name
        self.vocab = vocab or Vocabulary.from_text(text)
        self.data = self.vocab.encode(text)
        cut = int(round(len(self.data) * (1 - validation_fraction)))
        self.train, self.validation = self.data[:cut], self.data[cut:]

    def __repr__(self):
        return (f"CharCorpus({self.name}, {len(self.data):,} characters, vocabulary {len(self.vocab)}, "
                f"train/validation {len(self.train):,}/{len(self.validation):,})")

    def stream(self, split: str) -> numpy.ndarray:
        if split not in ("train", "validation"):
            raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
        return self.train if split == "train" else self.validation

    def batches(self, split: str, batch_size: int, seq_len: int, offset: int = 0):
        """Yield ``(x, y)`` int64 ``(N, T)`` chunks of ``split`` for truncated BPTT (see the module docstring).

        ``offset`` shifts where the rows start (a different offset each epoch shows the net other cuts).
        The last partial chunk of each row is dropped.
        """
        data = self.stream(split)[offset:]
        rows = (len(data) - 1) // max(batch_size, 1)   # characters per row, keeping one for the last target
        if batch_size < 1 or seq_len < 1 or rows < seq_len:
            raise DataError(f"{split} stream of {len(data)} characters is too short for {batch_size} rows "
                            f"of {seq_len} steps")
        x = data[: rows * batch_size].reshape(batch_size, rows)
        y = data[1: rows * batch_size + 1].reshape(batch_size, rows)
        for start in range(0, rows - seq_len + 1, seq_len):
            yield x[:, start:start + seq_len], y[:, start:start + seq_len]

    def num_batches(self, split: str, batch_size: int, seq_len: int, offset: int = 0) -> int:
        if batch_size < 1 or seq_len < 1:
            return 0
        rows = (len(self.stream(split)) - offset - 1) // batch_size
        return max(0, (rows - seq_len) // seq_len + 1) if rows >= seq_len else 0


def load_corpus(path=None, validation_fraction: float = 0.1) -> CharCorpus:
    """Read a UTF-8 text file as a :class:`CharCorpus` (default: the shipped Shakespeare excerpt)."""
    path = Path(path) if path is not None else DEFAULT_CORPUS
    if not path.is_file():
        raise DataError(f"no corpus file at {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"corpus {path} is not UTF-8 text: {e}") from None
    return CharCorpus(text, validation_fraction, name=str(path))
