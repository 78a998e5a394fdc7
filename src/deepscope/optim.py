"""Optimisers and learning-rate schedules.

SGD with momentum and L2 weight decay (the book's ch. 3). Two ways of writing momentum are in use; with a constant
η they take the same steps, and they part when η changes (a schedule):

    momentum_form="pytorch" (default; torch.optim.SGD):   v ← μ v + (∇C + λ' w),   w ← w - η v
    momentum_form="book" (the book's ch. 3):               v ← μ v - η (∇C + λ' w),  w ← w + v

(λ' = weight_decay; weights only, never biases.) In the book's form the velocity carries the η of past steps, so
after η is halved the weights still move by the old η's velocity, and at η = 0 they keep moving; in PyTorch's
form η scales the whole step when it is taken, so η = 0 stops the weights at once.

With μ = 0 both are network2's update w ← (1 - ηλ/n) w - η ∇C when ``weight_decay = λ/n`` (n the size of the
training set): use :func:`book_weight_decay` to express the book's λ. PyTorch's ``weight_decay`` is the same
λ' (PyTorch decays biases too unless told otherwise; we follow the book and leave biases alone).

Adam (Kingma & Ba): m ← β₁m + (1-β₁)g, v ← β₂v + (1-β₂)g², w ← w - η m̂/(√v̂ + ε), with bias-corrected m̂, v̂.

Both take ``clip_norm``: before the step, all gradients are scaled so that their global L2 norm is at most
``clip_norm`` (as ``torch.nn.utils.clip_grad_norm_``); the norm before clipping is kept in ``last_grad_norm``.
"""
from __future__ import annotations

import math

from . import backend, cpu
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


def check_number(owner: str, name: str, value, ok, must: str) -> float:
    """``value`` as a float if it is a finite number for which ``ok(value)`` holds; else a ConfigError in one line."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{owner}: {name} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(number) or not ok(number):
        raise ConfigError(f"{owner}: {name} must be {must}, got {value!r}")
    return number


ALIGN = 16     # each parameter starts at a multiple of this many entries of the flat buffers (FlatParameters):
               # 64 bytes of float32, 128 of float64, so a cache line's start in either dtype (Module.to may recast)


def _is_weight(shape) -> bool:
    # L2 decay applies to weights (2-D and higher), never to biases (1-D), as in the book.
    return len(shape) >= 2


class FlatParameters:
    """All parameters' values in one flat buffer and all their gradients in another: each ``Parameter.data``
    and ``.grad`` becomes a view into them, so that zeroing the gradients and the update are one call each
    (one pass over memory, split over the CPU's threads). The weights come first (entries ``[0, n_decayed)``,
    where L2 decay applies), then the biases. Every parameter starts on a 64-byte boundary (a cache line, one
    AVX-512 vector; the entries between two parameters stay 0 and the updates keep them 0): a vector that
    straddles two cache lines is read and written twice, and Linear's compiled loops ran 64x784 by 784x30's
    W.grad += δᵀx in ~20 us with W.grad aligned and x aligned, ~25-27 us otherwise (Zen 5, 1 thread).

    Whoever replaces a parameter's array (``load_state_dict``, ``Module.to``) breaks the view; :meth:`sync`
    notices and gathers the parameters into new buffers, carrying the optimizer's state along (recast to the
    parameters' dtype and array module).
    """

    def __init__(self, params):
        unique = list({id(p): p for p in params}.values())        # a shared parameter is updated once
        self.params = [p for p in unique if _is_weight(p.data.shape)] + \
                      [p for p in unique if not _is_weight(p.data.shape)]
        self.spans, start, self.n_decayed = [], 0, 0
        for p in self.params:
            self.spans.append((start, start + p.data.size))
            start += -(-p.data.size // ALIGN) * ALIGN        # the next parameter on the next 64-byte boundary
            if _is_weight(p.data.shape):
                self.n_decayed = start
        self.size = start
        self.data = self.grad = None
        self._views = []
        self.sync()

    def sync(self) -> bool:
        """Make every parameter a view of the buffers again if someone replaced its arrays; True if it did."""
        for p, (d, g) in zip(self.params, self._views):
            if p.data is not d or p.grad is not g:
                break
        else:
            if self._views:
                return False
        xp = backend.xp_of(*(p.data for p in self.params))
        dtypes = {p.data.dtype for p in self.params}
        if len(dtypes) > 1:
            raise ConfigError(f"optimizer: parameters of different dtypes {sorted(map(str, dtypes))}: "
                              f"cast the model with Module.to(dtype) first")
        dtype = dtypes.pop()
        self.data, self.grad = cpu.zeros_aligned(self.size, dtype, xp), cpu.zeros_aligned(self.size, dtype, xp)
        for p, (s, e) in zip(self.params, self.spans):
            self.data[s:e] = xp.asarray(p.data).reshape(-1)
            self.grad[s:e] = xp.asarray(p.grad).reshape(-1)
            p.data, p.grad = self.data[s:e].reshape(p.data.shape), self.grad[s:e].reshape(p.grad.shape)
        self._views = [(p.data, p.grad) for p in self.params]
        return True

    def state(self, flat=None):
        """A new flat state buffer (zeros), or ``flat`` recast to the buffers' dtype and array module."""
        xp = backend.xp_of(self.data)
        if flat is None:
            return cpu.zeros_aligned(self.size, self.data.dtype, xp)
        if backend.xp_of(flat) is not xp or flat.dtype != self.data.dtype:   # Module.to moved or cast the model
            flat = backend.to_device(flat, xp, dtype=self.data.dtype)
        return flat

    def views(self, flat, order):
        """``flat`` cut into one array per parameter, in the order of ``order`` (the caller's parameters)."""
        where = {id(p): span for p, span in zip(self.params, self.spans)}
        return [flat[where[id(p)][0]:where[id(p)][1]].reshape(p.data.shape) for p in order]

    def load(self, flat, arrays, order) -> None:
        """Copy per-parameter ``arrays`` (in the order of ``order``) into ``flat``."""
        for v, a in zip(self.views(flat, order), arrays):
            v[...] = backend.xp_of(v).asarray(backend.to_numpy(a), dtype=v.dtype).reshape(v.shape)


class Optimizer:
    def __init__(self, params, lr: float, weight_decay: float, clip_norm):
        self.params = list(params)
        if not self.params:
            raise ConfigError(f"{type(self).__name__}: no parameters to optimise")
        owner = type(self).__name__
        self.lr = check_number(owner, "lr", lr, lambda v: v > 0, "a positive number")
        self.weight_decay = check_number(owner, "weight_decay", weight_decay, lambda v: v >= 0, "at least 0")
        self.clip_norm = None if clip_norm is None else check_number(owner, "clip_norm", clip_norm, lambda v: v > 0,
                                                                     "a positive number (or None)")
        self.last_grad_norm = None
        self.steps = 0
        self.flat = FlatParameters(self.params)

    def zero_grad(self) -> None:
        self._sync()
        g = self.flat.grad
        if not cpu.fast(g):
            g.fill(0)
        elif cpu.one_shard(g.size, cpu.ELEMENTS_PER_SHARD):
            cpu.zero(g)
        else:           # on the threads, in the update's shards (the dropout net: 6.7 MB, 173 -> 122 us)
            cpu.parallel(lambda s, e: cpu.zero(g[s:e]), g.size, cpu.ELEMENTS_PER_SHARD)

    def _sync(self) -> None:
        """Follow the parameters if their arrays were replaced (the state is recast with them)."""
        if self.flat.sync():
            self._recast_state()

    def _recast_state(self) -> None:
        """Subclasses: recast their flat state with ``self.flat.state(old)``."""

    def _clip(self) -> None:
        if self.clip_norm is not None:
            g = self.flat.grad
            total = math.sqrt(float((g * g).sum()))
            if total > self.clip_norm and total > 0:
                g *= self.clip_norm / (total + 1e-6)
            self.last_grad_norm = total

    def _update(self, kernel, *flats, reference):
        """Run ``kernel(*shards, n_decayed_in_shard)`` over shards of the flat buffers on the CPU's threads
        (NumPy arrays with the compiled kernels), else ``reference()`` over whole buffers (CuPy, no numba)."""
        if not cpu.fast(*flats):
            return reference()
        nd = self.flat.n_decayed
        if cpu.one_shard(self.flat.size, cpu.ELEMENTS_PER_SHARD):
            return kernel(*flats, nd)
        cpu.parallel(lambda s, e: kernel(*(f[s:e] for f in flats), max(0, min(nd, e) - s)),
                     self.flat.size, cpu.ELEMENTS_PER_SHARD)

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
        lr: η, the learning rate (positive).
        momentum: μ in [0, 1) (0 = plain SGD).
        weight_decay: λ' ≥ 0 added as λ'w to each weight's gradient (see :func:`book_weight_decay`).
        clip_norm: clip the global gradient norm to this value before each step (None = off).
        momentum_form: ``"pytorch"`` (default: v ← μv + ∇C, w ← w - ηv, as ``torch.optim.SGD``) or ``"book"``
            (v ← μv - η∇C, w ← w + v); see the module's docstring for where they differ.
    """

    FORMS = ("pytorch", "book")

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0, clip_norm=None,
                 momentum_form: str = "pytorch"):
        super().__init__(params, lr, weight_decay, clip_norm)
        self.momentum = check_number("SGD", "momentum", momentum, lambda v: 0 <= v < 1, "in [0, 1)")
        if momentum_form not in self.FORMS:
            raise ConfigError(f"SGD: momentum_form must be one of {', '.join(map(repr, self.FORMS))}, "
                              f"got {momentum_form!r}")
        self.momentum_form = momentum_form
        self._v = self.flat.state() if momentum else None

    @property
    def velocity(self):
        """v per parameter (views of the flat state), None without momentum."""
        return None if self._v is None else self.flat.views(self._v, self.params)

    def _recast_state(self) -> None:
        if self._v is not None:
            self._v = self.flat.state(self._v)

    def step(self) -> None:
        self._sync()
        self.steps += 1
        self._clip()
        w, g, nd = self.flat.data, self.flat.grad, self.flat.n_decayed
        lr, mu, decay = self.lr, self.momentum, self.weight_decay
        v = self._v

        def reference():
            if v is None:
                if decay:
                    w[:nd] *= 1.0 - lr * decay                  # network2: w <- (1 - ηλ/n) w - η ∇C
                w[...] -= lr * g
            elif book:
                v[...] *= mu                                    # v <- μ v - η (∇C + λ' w)
                v[...] -= lr * g
                if decay:
                    v[:nd] -= (lr * decay) * w[:nd]
                w[...] += v                                     # w <- w + v
            else:
                v[...] *= mu                                    # v <- μ v + (∇C + λ' w)
                v[...] += g
                if decay:
                    v[:nd] += decay * w[:nd]
                w[...] -= lr * v                                # w <- w - η v

        book = self.momentum_form == "book"
        k = cpu.kernels()
        kernel = k and (k.sgd if book or v is None else k.sgd_pytorch)
        self._update(lambda w_, g_, v_, n: kernel(w_, g_, v_, lr, mu, decay, n), w, g,
                     w[:0] if v is None else v, reference=reference)       # (w[:0]: the kernel's "no velocity")

    def state_dict(self) -> dict:
        state = super().state_dict()
        if self._v is not None:
            state["momentum_form"] = self.momentum_form
            state["velocity"] = [backend.to_numpy(v).copy() for v in self.velocity]
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        if self._v is not None and "velocity" in state:
            velocity = state["velocity"]
            saved_form = state.get("momentum_form", "book")  # checkpoints written before the two forms existed
            if saved_form != self.momentum_form:  # the same motion in the other convention: v_book = -η v_pytorch
                scale = -self.lr if self.momentum_form == "book" else -1.0 / self.lr
                velocity = [backend.to_numpy(v) * scale for v in velocity]
            self._sync()
            self.flat.load(self._v, velocity, self.params)


class Adam(Optimizer):
    """Adam, with optional L2 weight decay (added to the gradient, as PyTorch's ``Adam(weight_decay=)``).

    Args:
        params, lr (default 1e-3), betas (β₁, β₂), eps, weight_decay, clip_norm: as in PyTorch.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, clip_norm=None):
        super().__init__(params, lr, weight_decay, clip_norm)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ConfigError(f"Adam: betas must be a pair (β₁, β₂), got {betas!r}")
        self.betas = tuple(check_number("Adam", f"betas[{i}]", b, lambda v: 0 <= v < 1, "in [0, 1)")
                           for i, b in enumerate(betas))
        self.eps = check_number("Adam", "eps", eps, lambda v: v > 0, "a positive number")
        self._m, self._v = self.flat.state(), self.flat.state()

    @property
    def m(self):
        """The first moment per parameter (views of the flat state)."""
        return self.flat.views(self._m, self.params)

    @property
    def v(self):
        """The second moment per parameter (views of the flat state)."""
        return self.flat.views(self._v, self.params)

    def _recast_state(self) -> None:
        self._m, self._v = self.flat.state(self._m), self.flat.state(self._v)

    def step(self) -> None:
        self._sync()
        self.steps += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1 ** self.steps, 1 - b2 ** self.steps
        self._clip()
        w, g, m, v, nd = self.flat.data, self.flat.grad, self._m, self._v, self.flat.n_decayed
        lr, eps, decay = self.lr, self.eps, self.weight_decay

        def reference():
            xp = backend.xp_of(g)
            gd = g.copy()
            if decay:
                gd[:nd] += decay * w[:nd]                       # g = ∇C + λ' w (weights only)
            m[...] *= b1
            m[...] += (1 - b1) * gd
            v[...] *= b2
            v[...] += (1 - b2) * gd * gd
            w[...] -= (lr / c1) * m / (xp.sqrt(v / c2) + eps)

        kernel = cpu.kernels() and cpu.kernels().adam
        self._update(lambda w_, g_, m_, v_, n: kernel(w_, g_, m_, v_, lr / c1, b1, b2, c2, eps, decay, n),
                     w, g, m, v, reference=reference)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["m"] = [backend.to_numpy(a).copy() for a in self.m]
        state["v"] = [backend.to_numpy(a).copy() for a in self.v]
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._sync()
        self.flat.load(self._m, state["m"], self.params)
        self.flat.load(self._v, state["v"], self.params)


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
