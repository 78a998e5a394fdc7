"""Embedding: a lookup table of vectors, one per symbol (character, word).

Looking up row i of a weight matrix E is the same as multiplying the one-hot vector e_i by Eᵀ, so an
embedding is a Linear layer without bias whose inputs are one-hot — done without building the one-hot
vectors:

    forward    a_{nt} = E[i_{nt}]                         (E: (V, D), i: integer indices)
    backward   ∂C/∂E[v] += Σ_{(n,t): i_{nt} = v} ∂C/∂a_{nt}      (rows of repeated symbols add up)

There is no gradient with respect to the indices (they are integers); ``backward`` returns None.

Accumulating rows: a plain ``E.grad[i] += δ`` is wrong when a symbol repeats (only one of its rows would
count). On NumPy we sort the indices and sum each run of equal ones with ``add.reduceat``: O(NT log NT +
NT·D), the same for any vocabulary size, and measured about 6x faster than ``numpy.add.at`` (4.3 ms vs
0.7 ms for 3200 steps, V = 65, D = 64); a one-hot GEMM is as fast for tiny vocabularies but costs
V·NT·D, so it does not scale to word vocabularies. On CuPy ``xp.add.at`` is an atomic scatter-add.
"""
from __future__ import annotations

import numpy

from .. import backend
from ..errors import DataError
from .module import Module, Parameter


class Embedding(Module):
    """A table of ``num_embeddings`` vectors of size ``embedding_dim``; ``forward(i)`` returns ``E[i]``.

    Args:
        num_embeddings: vocabulary size V.
        embedding_dim: vector size D.

    Shape:
        - Input: integer indices of any shape ``(*)``, values in [0, V).
        - Output: ``(*, D)``.

    Attributes:
        weight: ``(V, D)`` — PyTorch's layout; initialised N(0, 1) from the global generator, like PyTorch.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int):
        super().__init__()
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        values = backend.rng().standard_normal((self.num_embeddings, self.embedding_dim))
        self.weight = Parameter(backend.asarray(values, dtype=backend.default_dtype()))

    def forward(self, x):
        xp = backend.xp_of(x)
        x = xp.asarray(x)
        if x.dtype.kind not in "iu":
            raise DataError(f"{self.describe()}: expected integer indices, got dtype {x.dtype}")
        if x.size and (int(x.min()) < 0 or int(x.max()) >= self.num_embeddings):
            bad = int(x.max()) if int(x.max()) >= self.num_embeddings else int(x.min())
            raise DataError(f"{self.describe()}: index {bad} is out of range for {self.num_embeddings} "
                            f"embeddings (0..{self.num_embeddings - 1})")
        self._index = x
        return self.weight.data[x]

    def backward(self, grad_output):
        xp = backend.xp_of(grad_output)
        index = self._index.reshape(-1)
        delta = grad_output.reshape(-1, self.embedding_dim)
        if index.size == 0:
            return None
        if xp is not numpy:
            xp.add.at(self.weight.grad, index, delta)
            return None
        order = numpy.argsort(index, kind="stable")
        sorted_index = index[order]
        starts = numpy.flatnonzero(numpy.r_[True, sorted_index[1:] != sorted_index[:-1]])
        # ∂C/∂E[v] += Σ of δ over the steps that read symbol v (one sum per run of equal indices)
        self.weight.grad[sorted_index[starts]] += numpy.add.reduceat(delta[order], starts, axis=0)
        return None

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"
