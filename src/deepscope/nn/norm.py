"""Batch normalisation (Ioffe & Szegedy 2015): each feature standardised over the mini-batch, then rescaled.

The book's chapter 5 ends with the unstable gradient: in a deep net the weighted inputs z drift into the
saturated tails of σ (or shrink layer after layer) and the gradient reaching the early layers vanishes.
Batch normalisation puts every feature of a layer's input back to zero mean and unit variance over the
mini-batch before the next nonlinearity, so each layer sees inputs of the same scale whatever the layers
below do, and then lets the net choose the scale and shift it wants (γ, β):

    forward (training)   μ = (1/m) Σ_i x_i                   σ² = (1/m) Σ_i (x_i - μ)²     (over the batch)
                         x̂_i = (x_i - μ) / √(σ² + ε)          y_i = γ x̂_i + β
                         running_mean ← (1 - momentum) running_mean + momentum μ
                         running_var  ← (1 - momentum) running_var  + momentum σ² m/(m-1)   (unbiased)
    forward (evaluation) x̂_i = (x_i - running_mean) / √(running_var + ε)

    backward (training, the three-term formula; every x_i moves μ and σ² too)
                         ∂C/∂β = Σ_i ∂C/∂y_i          ∂C/∂γ = Σ_i ∂C/∂y_i x̂_i
                         ∂C/∂x_i = γ / (m √(σ² + ε)) · ( m ∂C/∂y_i  -  Σ_j ∂C/∂y_j  -  x̂_i Σ_j ∂C/∂y_j x̂_j )
    backward (evaluation, the statistics are constants)
                         ∂C/∂x_i = γ / √(running_var + ε) · ∂C/∂y_i

Each statistic is taken per feature (channel) over every other axis: m = N for ``(N, C)`` inputs, m = N·L for
``(N, C, L)``, m = N·H·W for images ``(N, C, H, W)``. PyTorch's semantics and state-dict keys (``weight``,
``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``), so a state dict moves between
deepscope and ``torch.nn.BatchNorm1d/2d`` unchanged.
"""
from __future__ import annotations

from .. import backend
from .module import Module, Parameter


def channel_sum(a, b=None):
    """Σ over every axis but axis 1 (the features), of ``a`` or of the product ``a * b``: a ``(C,)`` vector.

    One pass over the batch, no temporary: ``einsum`` over ``(N, C, L)`` views (L = 1 for ``(N, C)``, H·W for
    images). NumPy's ``sum(axis=(0, 2, 3))`` is 2-5x slower on these shapes and ``(a * b).sum(...)`` writes the
    product first; einsum keeps float32 and sums with several accumulators (rounding as ``sum``'s, ~1e-7)."""
    xp = backend.xp_of(a)
    a3 = a.reshape(a.shape[0], a.shape[1], -1)
    if b is None:
        return xp.einsum("ncl->c", a3)
    return xp.einsum("ncl,ncl->c", a3, b.reshape(a3.shape))


class _BatchNorm(Module):
    """Batch normalisation over the feature axis 1 of an input with ``_DIMS`` dimensions (see the module).

    Args:
        num_features: C, the number of features (channels).
        eps: ε added to the variance (default 1e-5).
        momentum: the weight of the current batch in the running statistics (default 0.1); None: a
            cumulative average (1/num_batches_tracked), as PyTorch.
        affine: whether the layer has the learnable γ (``weight``, ones) and β (``bias``, zeros) (default True).
        track_running_stats: keep ``running_mean``/``running_var`` and use them in evaluation (default
            True); if False, batch statistics are used in evaluation too.

    Attributes:
        weight, bias: γ and β, ``(C,)``.
        running_mean, running_var: ``(C,)`` buffers (zeros and ones at the start).
        num_batches_tracked: an int64 buffer, the number of training batches seen.
    """

    _DIMS: tuple = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True):
        super().__init__()
        if int(num_features) < 1:
            raise ValueError(f"{type(self).__name__}: num_features must be positive, got {num_features}")
        if eps <= 0:
            raise ValueError(f"{type(self).__name__}: eps must be positive, got {eps}")
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"{type(self).__name__}: momentum must be in [0, 1] or None, got {momentum}")
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        xp, dtype, C = backend.xp(), backend.default_dtype(), self.num_features
        if self.affine:
            self.weight = Parameter(xp.ones(C, dtype=dtype))
            self.bias = Parameter(xp.zeros(C, dtype=dtype))
        if self.track_running_stats:
            self.register_buffer("running_mean", xp.zeros(C, dtype=dtype))
            self.register_buffer("running_var", xp.ones(C, dtype=dtype))
            self.register_buffer("num_batches_tracked", xp.zeros((), dtype="int64"))

    def _dtype(self, x):
        """The layer's dtype (its parameters' or buffers'; the input's if it has neither)."""
        if self.affine:
            return self.weight.data.dtype
        return self.running_mean.dtype if self.track_running_stats else x.dtype

    def forward(self, x):
        C = self.num_features
        if x.ndim not in self._DIMS or x.shape[1] != C:
            shapes = " or ".join({2: f"(N, {C})", 3: f"(N, {C}, L)", 4: f"(N, {C}, H, W)"}[d] for d in self._DIMS)
            raise self.shape_error(shapes, x.shape)
        xp = backend.xp_of(x)
        x = x.astype(self._dtype(x), copy=False)
        bshape = (1, -1) + (1,) * (x.ndim - 2)                      # broadcasts a (C,) vector
        m = x.size // C
        self._batch_stats = self.training or not self.track_running_stats
        if not self._batch_stats:
            return self._evaluate(x, bshape)
        if m < 2 and self.training:
            raise self.shape_error(f"more than one value per feature in training (got {m})", x.shape)
        mean = channel_sum(x) / m                                   # μ
        x_hat = x - mean.reshape(bshape)                            # x - μ (made x̂ in place below)
        var = channel_sum(x_hat, x_hat) / m                         # σ², biased: what normalises
        if self.training and self.track_running_stats:
            self._update_running(mean, var, m)
        self._inv_std = 1.0 / xp.sqrt(var + self.eps)              # 1/√(σ² + ε), (C,)
        x_hat *= self._inv_std.reshape(bshape)                      # x̂, cached for ∂C/∂γ and ∂C/∂x
        self._x_hat, self._x = x_hat, None
        if not self.affine:
            return x_hat
        y = x_hat * self.weight.data.reshape(bshape)                # y = γ x̂ + β
        y += self.bias.data.reshape(bshape)
        return y

    def _evaluate(self, x, bshape):
        """Evaluation with the running statistics, folded into one scale and shift per feature (two passes):
        y = γ (x - μ)/√(σ² + ε) + β = x · γ/√(σ² + ε) + (β - μ γ/√(σ² + ε)). x̂ is made only if backward asks."""
        xp = backend.xp_of(x)
        self._inv_std = 1.0 / xp.sqrt(self.running_var + self.eps)
        self._x, self._mean, self._x_hat = x, self.running_mean, None
        scale = self._inv_std if not self.affine else self._inv_std * self.weight.data
        shift = -self.running_mean * scale if not self.affine else self.bias.data - self.running_mean * scale
        y = x * scale.reshape(bshape)
        y += shift.reshape(bshape)
        return y

    def _update_running(self, mean, var, m):
        self.num_batches_tracked += 1
        mom = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean = (1 - mom) * self.running_mean + mom * mean.astype(self.running_mean.dtype)
        self.running_var = (1 - mom) * self.running_var + mom * (var * (m / (m - 1))).astype(self.running_var.dtype)

    def backward(self, grad_output):
        x_hat, dy = self._x_hat, grad_output
        bshape = (1, -1) + (1,) * (dy.ndim - 2)
        if x_hat is None and self.affine:                          # after evaluation: x̂ for ∂C/∂γ
            x_hat = (self._x - self._mean.reshape(bshape)) * self._inv_std.reshape(bshape)
        if self.affine or self._batch_stats:
            sum_dy = channel_sum(dy)                                # Σ ∂C/∂y
            sum_dy_xhat = channel_sum(dy, x_hat)                    # Σ ∂C/∂y x̂
        if self.affine:
            self.bias.grad += sum_dy                               # ∂C/∂β = Σ ∂C/∂y
            self.weight.grad += sum_dy_xhat                        # ∂C/∂γ = Σ ∂C/∂y x̂
        if not self.needs_input_grad:
            return None
        scale = self._inv_std if not self.affine else self._inv_std * self.weight.data   # γ / √(σ² + ε)
        if not self._batch_stats:
            return dy * scale.reshape(bshape)                      # evaluation: the statistics are constants
        m = dy.size // self.num_features
        # ∂C/∂x = γ/√(σ²+ε) (∂C/∂y - Σ ∂C/∂y / m - x̂ Σ ∂C/∂y x̂ / m)   (the three terms, 1/m taken inside; four
        # passes over the batch, no temporaries)
        dx = x_hat * (-sum_dy_xhat / m).reshape(bshape)
        dx += dy
        dx -= (sum_dy / m).reshape(bshape)
        dx *= scale.reshape(bshape)
        return dx

    def extra_repr(self) -> str:
        s = f"{self.num_features}"
        if self.eps != 1e-5:
            s += f", eps={self.eps}"
        if self.momentum != 0.1:
            s += f", momentum={self.momentum}"
        if not self.affine:
            s += ", affine=False"
        if not self.track_running_stats:
            s += ", track_running_stats=False"
        return s


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of the features of ``(N, C)`` inputs (after a ``Linear``) or of ``(N, C, L)``
    sequences, per feature C (see the module's docstring for the equations and Args).

    Shape:
        - Input: ``(N, C)`` or ``(N, C, L)``.  Output: the same.
    """

    _DIMS = (2, 3)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of images ``(N, C, H, W)`` (after a ``Conv2d``), per channel over N, H and W (see the
    module's docstring for the equations and Args).

    Shape:
        - Input: ``(N, C, H, W)``.  Output: the same.
    """

    _DIMS = (4,)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
