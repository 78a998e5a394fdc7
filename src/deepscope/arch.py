"""Architecture strings: a whole net named in one line, wherever a net is named (CLI, Python).

Grammar (tokens joined by ``-``; an optional ``:act`` after a token sets that layer's activation; the
activation written on the LAST token is the default for every hidden layer that names none; sigmoid if
none is written anywhere, as in the book)::

    784-30-30-10:sigmoid        fully connected: input size, hidden sizes, output size
    conv20x5-maxpool2-fc100-softmax10
    conv20x5-maxpool2-conv40x5-maxpool2-fc100-softmax10:relu
    conv32x3p1:relu-maxpool2-dropout0.5-fc100-fc10
    784-100bn*20-10:sigmoid     20 hidden layers, each Linear -> BatchNorm1d -> sigmoid
    784-100-res100*14-10:relu   a residual net: 14 blocks of two layers with identity skips
    conv32x3samebn-res32x3bn*2-maxpool2-fc100bn-softmax10:relu      a small residual conv net, batch norm

    token                 layer(s)
    N (first token)       the input has N features (the input is flattened)
    N (later)             Linear(·, N) + activation; the last one is the output layer
    conv{C}x{K}[s{S}][p{P}|same]   Conv2d(·, C, K, stride S, padding P or "same") + activation (after the
                          pooling that follows it, if any: network3's ConvPoolLayer)
    maxpool{K}[s{S}]      MaxPool2d(K, S)   (also avgpool, l2pool)
    fc{N}                 Flatten (if needed) + Linear(·, N) + activation
    dropout{P}            Dropout(P)
    softmax{N} | sigmoid{N} | fc{N} (last)   the output Linear(·, N); softmax/sigmoid name the output
                          neuron, and so the cost (log-likelihood / cross-entropy), applied by the cost
    res{N}                a fully connected residual block (He et al. 2016), input and output N features:
                          act(x + Linear(act(Linear(x))))  (nn.Residual; the input must have N features).
                          Without bn the block's second map starts at zero weights and biases, so every block
                          starts as the identity (Fixup, Zhang et al. 2019: otherwise the variance of the
                          activations doubles with every block); with bn, the usual init
    res{C}x{K}            a convolutional residual block, two Conv2d(C, C, K, padding "same"):
                          act(x + conv(act(conv(x)))); a 1x1 Conv2d shortcut when the input has other than C
                          channels
    …bn (suffix)          on N (not the first), fc{N}, conv…, res…: batch normalisation after every linear
                          map of the token, before its activation (BatchNorm1d after Linear, BatchNorm2d after
                          Conv2d; inside a residual block after each of its two maps, before the sum)
    …*{R} (suffix)        the token R times (after bn, before :act): 100*20, res100bn*14

Activations: sigmoid, tanh, relu, linear. Inputs to conv strings are ``(N, 1, 28, 28)`` unless
``input_shape`` says otherwise. The output layer gives logits; the cost applies the output neuron.
"""
from __future__ import annotations

import re

from . import nn
from .errors import ArchitectureError
from .nn.activation import ACTIVATIONS

_ACTS = tuple(ACTIVATIONS)
_PATTERNS = [
    ("number", re.compile(r"(\d+)")),
    ("conv", re.compile(r"conv(\d+)x(\d+)(?:s(\d+))?(?:p(\d+)|(same))?")),
    ("res", re.compile(r"res(\d+)(?:x(\d+))?")),
    ("pool", re.compile(r"(max|avg|l2)pool(\d+)(?:s(\d+))?")),
    ("fc", re.compile(r"fc(\d+)")),
    ("dropout", re.compile(r"dropout(0?\.\d+|0)")),
    ("out", re.compile(r"(softmax|sigmoid)(\d+)")),
]
OUTPUT_COSTS = {"softmax": "loglikelihood", "sigmoid": "crossentropy"}


_BN_KINDS = ("number", "fc", "conv", "res")


def parse(arch: str) -> list[tuple[str, tuple, str | None, str, bool]]:
    """Split an architecture string into ``(kind, numbers, activation, where, batchnorm)`` tokens (a token
    repeated with ``*R`` appears R times), or raise :class:`ArchitectureError` naming the faulty token and
    its position."""
    if not isinstance(arch, str) or not arch.strip():
        raise ArchitectureError("empty architecture string")
    tokens, pos = [], 0
    for i, raw in enumerate(arch.strip().split("-")):
        where = f"token {i + 1} {raw!r} (character {pos + 1}) of {arch!r}"
        body, _, act = raw.partition(":")
        if act and act not in _ACTS:
            raise ArchitectureError(f"unknown activation {act!r} in {where}: expected one of {', '.join(_ACTS)}")
        body, star, times = body.partition("*")
        if star and not (times.isdigit() and int(times) >= 1):
            raise ArchitectureError(f"{where}: a repeat count *R needs a whole number R >= 1")
        bn = body.endswith("bn")
        if bn:
            body = body[:-2]
        for kind, pat in _PATTERNS:
            m = pat.fullmatch(body)
            if m:
                if bn and (kind not in _BN_KINDS or (kind == "number" and not tokens)):
                    raise ArchitectureError(f"{where}: bn follows a hidden layer (N, fc{{N}}, conv…, res…)")
                tokens += [(kind, m.groups(), act or None, where, bn)] * (int(times) if star else 1)
                break
        else:
            raise ArchitectureError(f"cannot read {where}: expected a number, conv{{C}}x{{K}}, res{{N}}, "
                                    f"maxpool{{K}}, avgpool{{K}}, l2pool{{K}}, fc{{N}}, dropout{{P}}, "
                                    f"softmax{{N}} or sigmoid{{N}} (optionally with bn and *R)")
        pos += len(raw) + 1
    return tokens


def output_cost(arch: str) -> str | None:
    """The cost an architecture's output token implies: ``"loglikelihood"`` for ``softmax10``,
    ``"crossentropy"`` for ``sigmoid10``, None when it does not say."""
    kind, groups, _, _, _ = parse(arch)[-1]
    return OUTPUT_COSTS.get(groups[0]) if kind == "out" else None


def build(arch: str, input_shape=None, init: str = "book"):
    """Build the :class:`~deepscope.nn.Sequential` an architecture string describes.

    Args:
        arch: the string (grammar above).
        input_shape: shape of one input without the batch axis, e.g. ``(1, 28, 28)`` (default for conv
            strings) or ``(784,)``.
        init: the initialisation scheme of every layer (see :mod:`deepscope.nn.init`).
    """
    tokens = parse(arch)
    default_act = tokens[-1][2] or "sigmoid"
    if tokens[-1][0] in ("conv", "pool", "dropout", "res") or tokens[-1][4]:
        raise ArchitectureError(f"{arch!r} must end with an output layer (a number, fc{{N}}, softmax{{N}} or "
                                f"sigmoid{{N}}), not {tokens[-1][3].split()[2]}")
    for kind, g, _, where, _ in tokens:  # sizes, kernels and strides of 0 would build layers with no neurons
        sizes = [v for v in (g[1:3] if kind == "pool" else g[:3] if kind == "conv" else g if kind == "res"
                             else g[-1:]) if v is not None]
        if kind != "dropout" and any(int(v) < 1 for v in sizes):
            raise ArchitectureError(f"{where}: sizes, kernels and strides must be at least 1")
    if tokens[0][0] == "number":
        shape = (int(tokens[0][1][0]),)
        tokens = tokens[1:]
        if not tokens:
            raise ArchitectureError(f"{arch!r} names an input size but no layers")
        layers = [nn.Flatten()]
    else:
        shape = tuple(input_shape) if input_shape is not None else (1, 28, 28)
        layers = []
    pending_act = None  # a conv's activation waits for the pooling that follows it
    for i, (kind, g, act, where, bn) in enumerate(tokens):
        last = i == len(tokens) - 1
        act_cls = ACTIVATIONS[act or default_act]
        if kind != "pool" and pending_act is not None:
            layers.append(pending_act())
            pending_act = None
        if kind == "conv":
            if len(shape) != 3:
                raise ArchitectureError(f"{where}: a convolution needs an image input (C, H, W), "
                                        f"but its input has shape {shape}")
            c, k = int(g[0]), int(g[1])
            s, p = int(g[2] or 1), int(g[3] or 0)
            if g[4] and (s != 1 or k % 2 == 0):
                raise ArchitectureError(f"{where}: padding 'same' needs stride 1 and an odd kernel")
            if g[4]:
                p = (k - 1) // 2
            ho, wo = (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1
            if ho < 1 or wo < 1:
                raise ArchitectureError(f"{where}: a {k}x{k} kernel does not fit the input {shape}")
            layers.append(nn.Conv2d(shape[0], c, k, stride=s, padding="same" if g[4] else p, init=init))
            if bn:
                layers.append(nn.BatchNorm2d(c))
            shape = (c, ho, wo)
            pending_act = act_cls
        elif kind == "res":
            block, shape = _residual(g, shape, bn, act_cls, init, where)
            layers += [block, act_cls()]
        elif kind == "pool":
            if len(shape) != 3:
                raise ArchitectureError(f"{where}: pooling needs an image input (C, H, W), got {shape}")
            k, s = int(g[1]), int(g[2] or g[1])
            cls = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d, "l2": nn.L2Pool2d}[g[0]]
            ho, wo = (shape[1] - k) // s + 1, (shape[2] - k) // s + 1
            if ho < 1 or wo < 1:
                raise ArchitectureError(f"{where}: a {k}x{k} pool does not fit the input {shape}")
            layers.append(cls(k, s))
            shape = (shape[0], ho, wo)
        elif kind == "dropout":
            layers.append(nn.Dropout(float(g[0])))
        else:  # number, fc, out: a fully connected layer
            n_out = int(g[-1])
            if len(shape) != 1:
                layers.append(nn.Flatten())
                shape = (shape[0] * shape[1] * shape[2],)
            layers.append(nn.Linear(shape[0], n_out, init=init))
            shape = (n_out,)
            if kind == "out" and not last:
                raise ArchitectureError(f"{where}: {g[0]}{{N}} names the output layer and must come last")
            if bn:
                layers.append(nn.BatchNorm1d(n_out))
            if not last:
                layers.append(act_cls())
    if pending_act is not None:
        layers.append(pending_act())
    return nn.Sequential(*layers)


def _residual(g, shape, bn, act_cls, init, where):
    """A ``res{N}`` or ``res{C}x{K}`` token as an :class:`~deepscope.nn.Residual` block and its output shape."""
    from . import nn

    n, k = int(g[0]), g[1]
    if k is None:  # fully connected
        if len(shape) != 1 or shape[0] != n:
            raise ArchitectureError(f"{where}: res{n} needs an input of {n} features, got shape {shape}")
        maps = [nn.Linear(n, n, init=init), nn.Linear(n, n, init=init if bn else "zeros")]
        norm, shortcut = nn.BatchNorm1d, None
    else:
        k = int(k)
        if len(shape) != 3:
            raise ArchitectureError(f"{where}: a convolutional residual block needs an image input (C, H, W), "
                                    f"but its input has shape {shape}")
        if k % 2 == 0:
            raise ArchitectureError(f"{where}: a residual block keeps the image size, so its kernel must be odd")
        maps = [nn.Conv2d(shape[0], n, k, padding="same", init=init),
                nn.Conv2d(n, n, k, padding="same", init=init if bn else "zeros")]
        norm = nn.BatchNorm2d
        shortcut = nn.Conv2d(shape[0], n, 1, init=init) if shape[0] != n else None
        shape = (n,) + tuple(shape[1:])
    first = [maps[0], norm(n), act_cls()] if bn else [maps[0], act_cls()]
    second = [maps[1], norm(n)] if bn else [maps[1]]
    return nn.Residual(nn.Sequential(*first, *second), shortcut), shape
