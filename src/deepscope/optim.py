"""Optimisers and learning-rate schedules.

SGD with momentum and L2 weight decay (the book's ch. 3):

    v ← μ v - η (∇C + λ' w)          (λ' = weight_decay; weights only, never biases)
    w ← w + v

With μ = 0 this is network2's update w ← (1 - ηλ/n) w - η ∇C when ``weight_decay = λ/n`` (n the size of the
training set): use :func:`book_weight_decay` to express the book's λ. PyTorch's ``weight_decay`` is the same
λ' (PyTorch decays biases too unless told otherwise; we follow the book and leave biases alone).

Adam (Kingma & Ba): m ← β₁m + (1-β₁)g, v ← β₂v + (1-β₂)g², w ← w - η m̂/(√v̂ + ε), with bias-corrected m̂, v̂.

Both take ``clip_norm``: before the step, all gradients are scaled so that their global L2 norm is at most
``clip_norm`` (as ``torch.nn.utils.clip_grad_norm_``); the norm before clipping is kept in ``last_grad_norm``.
"""
from __future__ import annotations

import math

from . import backend
from .errors import ConfigError


def book_weight_decay(lmbda: float, n_train: int) -> float:
    """network2's L2 regularisation λ as a per-step weight decay: w ← (1 - ηλ/n) w means weight_decay = λ/n."""
    return lmbda / n_train


def clip_grad_norm(params, max_norm: float) -> float:
    """Scale all gradients so that their global L2 norm is at most ``max_norm``; return the norm before."""
    total = math.sqrt(sum(float((p.grad * p.grad).sum()) for p in params))
    if total > max_norm and total > 0:
        scale = max_norm / (total + 1e-6)
        for p in params:
            p.grad *= scale
    return total


def _is_weight(shape) -> bool:
    # L2 decay applies to weights (2-D and higher), never to biases (1-D), as in the book.
    return len(shape) >= 2


class Optimizer:
    def __init__(self, params, lr: float, weight_decay: float, clip_norm):
        self.params = list(params)
        if not self.params:
            raise ConfigError(f"{type(self).__name__}: no parameters to optimise")
        if lr <= 0:
            raise ConfigError(f"{type(self).__name__}: learning rate must be positive, got {lr}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.clip_norm = clip_norm
        self.last_grad_norm = None
        self.steps = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad[...] = 0

    @staticmethod
    def _like(states, i, p):
        """``states[i]``, moved to ``p``'s device and dtype if the model was moved or cast (``Module.to``) after
        this optimizer was made; otherwise in-place updates would fail across devices or silently keep the
        state in the old precision."""
        xp = backend.xp_of(p.data)
        if states[i].dtype != p.data.dtype or backend.xp_of(states[i]) is not xp:
            states[i] = backend.to_device(states[i], xp, dtype=p.data.dtype)
        return states[i]

    def _clip(self) -> None:
        if self.clip_norm is not None:
            self.last_grad_norm = clip_grad_norm(self.params, self.clip_norm)

    def _decay(self, p) -> float:
        """The weight decay that applies to ``p``: λ' for weights, 0 for biases."""
        return self.weight_decay if self.weight_decay and _is_weight(p.data.shape) else 0.0

    def state_dict(self) -> dict:
        """Optimizer state (arrays as NumPy, scalars as numbers) for checkpoints."""
        return {"lr": self.lr, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.lr = float(state["lr"])
        self.steps = int(state["steps"])


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum and L2 weight decay.

    Args:
        params: the parameters (``model.parameters()``).
        lr: η, the learning rate.
        momentum: μ (0 = plain SGD).
        weight_decay: λ' added as λ'w to each weight's gradient (see :func:`book_weight_decay`).
        clip_norm: clip the global gradient norm to this value before each step (None = off).
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, clip_norm=None):
        super().__init__(params, lr, weight_decay, clip_norm)
        self.momentum = float(momentum)
        self.velocity = [backend.xp_of(p.data).zeros_like(p.data) for p in self.params] if momentum else None

    def step(self) -> None:
        self.steps += 1
        self._clip()
        lr = self.lr
        for i, p in enumerate(self.params):
            decay = self._decay(p)
            if self.velocity is None:
                if decay:
                    p.data *= 1.0 - lr * decay          # network2: w <- (1 - ηλ/n) w - η ∇C
                p.data -= lr * p.grad
            else:
                v = self._like(self.velocity, i, p)
                v *= self.momentum
                v -= lr * p.grad
                if decay:
                    v -= (lr * decay) * p.data
                p.data += v

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self.velocity is not None:
            state["velocity"] = [backend.to_numpy(v) for v in self.velocity]
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self.velocity is not None and "velocity" in state:
            self.velocity = [backend.xp_of(p.data).asarray(v, dtype=p.data.dtype)
                             for p, v in zip(self.params, state["velocity"])]


class Adam(Optimizer):
    """Adam, with optional L2 weight decay (added to the gradient, as PyTorch's ``Adam(weight_decay=)``).

    Args:
        params, lr (default 1e-3), betas (β₁, β₂), eps, weight_decay, clip_norm: as in PyTorch.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, clip_norm=None):
        super().__init__(params, lr, weight_decay, clip_norm)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.m = [backend.xp_of(p.data).zeros_like(p.data) for p in self.params]
        self.v = [backend.xp_of(p.data).zeros_like(p.data) for p in self.params]

    def step(self) -> None:
        self.steps += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.steps, 1 - b2 ** self.steps
        self._clip()
        for i, p in enumerate(self.params):
            g = p.grad + self._decay(p) * p.data if self._decay(p) else p.grad
            xp = backend.xp_of(g)
            m, v = self._like(self.m, i, p), self._like(self.v, i, p)
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p.data -= (self.lr / c1) * m / (xp.sqrt(v / c2) + self.eps)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["m"] = [backend.to_numpy(a) for a in self.m]
        state["v"] = [backend.to_numpy(a) for a in self.v]
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.m = [backend.xp_of(p.data).asarray(a, dtype=p.data.dtype) for p, a in zip(self.params, state["m"])]
        self.v = [backend.xp_of(p.data).asarray(a, dtype=p.data.dtype) for p, a in zip(self.params, state["v"])]


# -- learning-rate schedules: called once per epoch with the epoch's metrics ----------------------------
class Schedule:
    """A learning-rate schedule: ``step(metrics)`` once per epoch, ``stop()`` when training should end, and its
    progress as ``state_dict()`` / ``load_state_dict()`` (numbers only) for checkpoints."""

    _state: tuple = ()   # the attributes that change as the schedule runs

    def step(self, metrics: dict) -> None:
        raise NotImplementedError

    def stop(self) -> bool:
        return False

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in self._state}

    def load_state_dict(self, state: dict) -> None:
        for k in self._state:
            if k in state:
                setattr(self, k, state[k])


class HalveOnPlateau(Schedule):
    """The book's schedule (ch. 3): divide η by ``factor`` (2) when the validation accuracy has not improved for
    ``patience`` epochs; ``stop()`` is True once η has fallen below ``min_lr`` (the book stops at η/128)."""

    def __init__(self, optimizer: Optimizer, patience: int = 10, factor: float = 2.0, min_lr=None):
        self.optimizer, self.patience, self.factor = optimizer, int(patience), float(factor)
        self.min_lr = min_lr
        self.best, self.bad_epochs = -math.inf, 0

    def state_dict(self) -> dict:
        return {"best": None if self.best == -math.inf else self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best = -math.inf if state.get("best") is None else state["best"]
        self.bad_epochs = int(state.get("bad_epochs", 0))

    def step(self, metrics: dict) -> None:
        acc = metrics.get("val_acc")
        if acc is None:
            return
        if acc > self.best:
            self.best, self.bad_epochs = acc, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            self.optimizer.lr /= self.factor
            self.bad_epochs = 0

    def stop(self) -> bool:
        return self.min_lr is not None and self.optimizer.lr < self.min_lr


class StepLR(Schedule):
    """Multiply η by ``gamma`` every ``step_size`` epochs (PyTorch's StepLR)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        self.optimizer, self.step_size, self.gamma = optimizer, int(step_size), float(gamma)
        self.epoch = 0

    _state = ("epoch",)

    def step(self, metrics: dict) -> None:
        self.epoch += 1
        if self.epoch % self.step_size == 0:
            self.optimizer.lr *= self.gamma


class CosineLR(Schedule):
    """Cosine annealing of η from its initial value to ``eta_min`` over ``epochs`` epochs."""

    def __init__(self, optimizer: Optimizer, epochs: int, eta_min: float = 0.0):
        self.optimizer, self.epochs, self.eta_min = optimizer, int(epochs), float(eta_min)
        self.base = optimizer.lr
        self.epoch = 0

    _state = ("epoch", "base")

    def step(self, metrics: dict) -> None:
        self.epoch += 1
        t = min(self.epoch, self.epochs) / self.epochs
        self.optimizer.lr = self.eta_min + 0.5 * (self.base - self.eta_min) * (1 + math.cos(math.pi * t))
