"""Character-level language model: a recurrent net that predicts the next character of a text.

    e_t = E[c_t]                                   (an embedding of the character read at step t)
    s_t = tanh(U e_t + W s_{t-1} + b)              (the recurrent state)
    z_t = V s_t + d,   P(c_{t+1} | c_1..c_t) = softmax(z_t)

trained to minimise the mean of -ln P(next character) over every step (nats per character; divide by
ln 2 for bits per character) by truncated backpropagation through time: the text is read in chunks of
``seq_len`` characters, the state is carried from one chunk to the next, and the gradient flows back only
within a chunk. Sampling runs the net one step at a time, drawing each character from softmax(z_t / τ)
(temperature τ < 1 makes the text more conservative) and feeding it back in.
"""
from __future__ import annotations

import math
import time

import numpy
from tqdm import tqdm

from .. import backend, nn, optim
from ..errors import ConfigError, DataError, NonFiniteError
from ..runs import History
from ..train import call_callbacks, step
from .mnist import recurrent_layer


def char_model(vocab_size: int, hidden: int = 256, embedding: int = 64, num_layers: int = 1,
               nonlinearity: str = "tanh", cell: str = "rnn"):
    """``Embedding(V, E) -> RNN|LSTM|GRU(E, H, stateful) -> Linear(H, V)`` (logits at every step)."""
    return nn.Sequential(nn.Embedding(vocab_size, embedding),
                         recurrent_layer(cell, embedding, hidden, num_layers, nonlinearity, stateful=True),
                         nn.Linear(hidden, vocab_size, init="xavier"))


def _rnn_of(model) -> nn.Recurrent:
    for m in model.modules():
        if isinstance(m, nn.Recurrent):
            return m
    raise DataError("the model has no recurrent layer")


def evaluate_char_lm(model, corpus, split: str = "validation", batch_size: int = 32, seq_len: int = 100) -> float:
    """Mean cost in nats per character over ``split`` (reading it as ``batch_size`` parallel streams; fewer,
    and shorter chunks, when the split is small)."""
    n = len(corpus.stream(split)) - 1
    if n < 1:
        raise DataError(f"the {split} split of {corpus.name} has fewer than 2 characters")
    batch_size = max(1, min(batch_size, n // seq_len))
    seq_len = min(seq_len, n // batch_size)
    rnn = _rnn_of(model)
    was_training = model.training
    model.eval()
    rnn.reset_state()
    cost = nn.SequenceLogLikelihood()
    total, count = 0.0, 0
    xp = backend.xp()
    for x, y in corpus.batches(split, batch_size, seq_len):
        total += cost(model(xp.asarray(x)), xp.asarray(y)) * y.size
        count += y.size
    rnn.reset_state()
    model.train(was_training)
    return float(total) / count


def train_char_lm(model, corpus, epochs: int = 10, batch_size: int = 32, seq_len: int = 100, lr: float = 2e-3,
                  clip: float | None = 5.0, schedule: str = "none", run=None, progress: bool = True,
                  callbacks=()):
    """Train ``model`` on ``corpus`` with Adam and truncated BPTT, one :func:`deepscope.train.step` per chunk;
    return a list of per-epoch records (``train_loss``, ``val_loss`` in nats/char, ``val_bpc``, ``seconds``,
    ``chars_per_s``). ``schedule="cosine"`` decays the learning rate to 0 along a half cosine over the epochs.

    Given a :class:`deepscope.runs.Run`, every epoch is saved there (checkpoint, metrics, the model of the best
    validation loss) before it is printed, and a run with a checkpoint continues where it stopped. ``callbacks``:
    objects with :func:`deepscope.train.fit`'s ``on_fit_start``, ``on_before_step``, ``on_step``, ``on_record``
    and ``on_fit_end`` (all optional), called at the same moments (the CLI's ``--report``).
    """
    rnn = _rnn_of(model)
    if not rnn.stateful:
        raise ValueError("train_char_lm needs a stateful recurrent layer (stateful=True) for truncated BPTT")
    opt = optim.Adam(model.parameters(), lr=lr, clip_norm=clip)
    scheduler = optim.CosineLR(opt, epochs) if schedule == "cosine" else None
    cost = nn.SequenceLogLikelihood()
    xp, rng = backend.xp(), backend.rng()
    checkpoint = run.load_checkpoint(model, opt) if run is not None else None
    history = checkpoint.history if checkpoint else History()
    if checkpoint and scheduler is not None:
        scheduler.load_state_dict(checkpoint.state.get("Schedule", {}))
    call_callbacks(callbacks, "on_fit_start", model, opt, checkpoint.epoch if checkpoint else 0)
    for epoch in range((checkpoint.epoch if checkpoint else 0) + 1, epochs + 1):
        model.train()
        rnn.reset_state()
        offset = int(rng.integers(seq_len))            # a different cut of the text every epoch
        n_batches = corpus.num_batches("train", batch_size, seq_len, offset)
        bar = tqdm(total=n_batches * batch_size * seq_len, desc=f"epoch {epoch}/{epochs}", unit="char",
                   unit_scale=True, disable=not progress, leave=False, dynamic_ncols=True)
        t0 = time.perf_counter()
        loss_sum, steps = 0.0, 0
        for x, y in corpus.batches("train", batch_size, seq_len, offset):
            def finite(loss, where=f"epoch {epoch}, step {steps + 1}"):
                if not math.isfinite(loss):
                    raise NonFiniteError(f"the cost became {loss} at {where}")
                call_callbacks(callbacks, "on_before_step", opt.steps + 1, model, opt)
            loss, _ = step(model, cost, opt, xp.asarray(x), xp.asarray(y), finite)
            call_callbacks(callbacks, "on_step", opt.steps, model, opt)
            loss_sum += loss
            steps += 1
            bar.update(y.size)
            if steps % 20 == 0:
                bar.set_postfix_str(f"loss {float(loss_sum) / steps:.3f}", refresh=False)
        bar.close()
        train_seconds = time.perf_counter() - t0
        val = evaluate_char_lm(model, corpus, "validation", batch_size, seq_len)
        record = {"epoch": epoch, "train_loss": float(loss_sum) / max(steps, 1), "val_loss": val,
                  "val_bpc": val / math.log(2), "seconds": time.perf_counter() - t0,
                  "chars_per_s": steps * batch_size * seq_len / train_seconds}
        history.append(record)
        if scheduler is not None:
            scheduler.step(record)
        if run is not None:  # save first: a closed stdout (| head) never loses a finished epoch
            if val <= min(r["val_loss"] for r in history.records):
                run.save_model(model)
            run.save_checkpoint(model, opt, epoch, history,
                                {"Schedule": scheduler.state_dict()} if scheduler is not None else {})
            run.write_metrics(history)
        call_callbacks(callbacks, "on_record", epoch, record)
        if progress:
            tqdm.write(format_record(record))
    rnn.reset_state()
    call_callbacks(callbacks, "on_fit_end", history, None)
    return history.records


def format_record(record: dict) -> str:
    """One line for an epoch of a character model."""
    return (f"epoch {record['epoch']:3d}  train {record['train_loss']:.4f}  validation {record['val_loss']:.4f} "
            f"nats/char ({record['val_bpc']:.3f} bits/char)  {record['chars_per_s']:,.0f} chars/s  "
            f"{record['seconds']:.1f}s")


def sample(model, vocab, length: int = 500, temperature: float = 0.8, prime: str | None = None,
           seed: int | None = None):
    """Generate ``length`` characters after ``prime`` (which is returned too, at the start of the text).
    Without a prime, it starts from a newline (or, if the vocabulary has none, from its first character).

    Raises DataError if ``prime`` has characters the model never saw.
    """
    return "".join(generate(model, vocab, length, temperature, prime, seed))


def generate(model, vocab, length: int = 500, temperature: float = 0.8, prime: str | None = None,
             seed: int | None = None):
    """:func:`sample` as it is written: yields the prime, then each character as soon as it is drawn (so a long
    sample can be shown while it grows). p(c) ∝ exp((z_c - max z)/τ): subtracting the largest logit first keeps
    every exponent ≤ 0, so even τ → 0 (greedy) gives a distribution, never inf - inf = NaN."""
    if not temperature > 0 or not numpy.isfinite(temperature):
        raise ConfigError(f"temperature must be a positive number, got {temperature}")
    if prime is None:
        prime = "\n" if "\n" in vocab.index else vocab.chars[0]
    if not prime:
        raise DataError("the prime text must have at least one character")
    try:
        ids = vocab.encode(prime)
    except DataError as e:
        raise DataError(f"prime text {prime!r}: {e}") from None
    rnn = _rnn_of(model)
    stateful = rnn.stateful
    rnn.stateful = True
    rnn.reset_state()
    model.eval()
    rng = numpy.random.default_rng(seed)
    xp = backend.xp()
    try:
        logits = model(xp.asarray(ids[None, :]))[0, -1]      # read the prime; predict what follows
        yield prime
        for _ in range(length):
            z = backend.to_numpy(logits).astype(numpy.float64)
            with numpy.errstate(over="ignore"):   # (z - max z)/τ → -inf for tiny τ: exactly what is meant
                p = numpy.exp((z - z.max()) / temperature)
            if not numpy.isfinite(p).all():
                raise NonFiniteError("the model's outputs are not finite (its weights hold NaN or infinity)")
            c = int(rng.choice(len(p), p=p / p.sum()))
            yield vocab.chars[c]
            logits = model(xp.asarray([[c]]))[0, -1]
    finally:
        rnn.reset_state()
        rnn.stateful = stateful
