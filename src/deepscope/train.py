"""Training: the book's ``update_mini_batch`` as :func:`step`, and :func:`fit`, mini-batch SGD built on it.

:func:`step` is one gradient-descent step on one mini-batch: the forward pass, the cost, the backward pass that
fills every ``Parameter.grad`` (the four equations of backpropagation) and the optimizer's update. Every
training loop in deepscope is a loop over :func:`step`.

:func:`fit` runs epochs of steps: each epoch reshuffles the training set (unless ``Batches(shuffle=False)``, as
network3 did), then measures the validation and test accuracy. Everything else is a callback: the progress bar
(:class:`ProgressBar`), a learning-rate schedule (:class:`Schedule`), :class:`EarlyStopping`,
:class:`DetectAnomaly`, the learning-speed recorder (:class:`deepscope.scope.LearningSpeedRecorder`), or your
own. Given a :class:`deepscope.runs.Run`, ``fit`` saves every epoch into it (checkpoint, metrics, best weights)
before anything is printed, and continues a run that has a checkpoint exactly where it stopped.

The book's protocol: report the test accuracy at the epoch of best validation accuracy (:attr:`History.best`).

A callback is any object with some of these methods (all optional)::

    on_fit_start(model, optimizer, epoch)    before training; ``epoch`` = epochs already done (resumed run)
    on_epoch_start(epoch, epochs, n)         before the first mini-batch of an epoch of ``n`` examples
    on_before_step(step, model, optimizer)   after backward, before the update
    on_step(step, model, optimizer)          after the update
    on_batch_end(m, loss, accuracy)          ``m`` examples done; running mean loss and accuracy of the epoch
    on_epoch_end(epoch, record)              may change state (a schedule) and return a reason to stop (str)
    on_record(epoch, record)                 the epoch is saved: report it (print, plot)
    on_fit_end(history, stopped)             ``stopped``: a reason (str), an exception, or None
    state_dict() / load_state_dict(state)    JSON state, saved in the run's checkpoints
"""
from __future__ import annotations

import math
import time
import warnings

import numpy as np
from tqdm.auto import tqdm

from . import backend, cpu, device, nn
from .errors import ConfigError, DataError, NonFiniteError, ShapeError
from .nn.module import hooked
from .optim import SGD
from .runs import History
from .scope.anomaly import AnomalyDetector

__all__ = ["step", "GraphedStep", "fit", "Batches", "History", "ProgressBar", "Schedule", "EarlyStopping", "DetectAnomaly",
           "evaluate", "predict_logits"]


def step(model, cost, optimizer, x, y, before_update=None):
    """One step of gradient descent on the mini-batch ``(x, y)`` (the book's ``update_mini_batch``).

    The gradients zeroed, forward pass, cost C, ∇C by backpropagation into every ``Parameter.grad``, then the
    optimizer's update (the gradients stay readable after it, until the next step).

    Args:
        model, cost, optimizer: a module, a cost from :mod:`deepscope.nn.loss`, an optimizer on the model's
            parameters.
        x, y: the mini-batch (arrays of the model's array module).
        before_update: ``before_update(loss)`` is called after the backward pass and before the update (it may
            raise to stop). Default: stop with :class:`NonFiniteError` if the cost is not finite, naming the
            first layer whose gradient is not.

    Returns:
        ``(loss, out)``: the cost of the mini-batch and the model's outputs. The cost is a float on the CPU; on a
        GPU it stays a 0-d device array (``float(loss)`` reads it, and reading waits for the GPU), so that the
        host can queue the next steps while the GPU works.
    """
    optimizer.zero_grad()       # first, while the gradient is still in the cache from the last update (rung 1 at m=64,
                                # Zen 3, 2 threads: 141 -> 83 us; after the forward it had been evicted)
    out = model(x)
    loss = cost(out, y)
    if type(loss) is not float and backend.xp_of(out) is np:
        loss = float(loss)
    model.backward(cost.backward())
    if before_update is not None:
        before_update(loss)
    elif not math.isfinite(loss):
        raise NonFiniteError(nonfinite_cost(loss, model, f"step {optimizer.steps + 1}"))
    optimizer.step()
    return loss, out


def nonfinite_cost(loss, model, where: str) -> str:
    return (f"the cost became {loss} at {where}; first layer with a non-finite gradient: "
            f"{first_nonfinite_layer(model)}")


class GraphedStep:
    """:func:`step` recorded once as a CUDA graph and replayed: ``graphed(x, y)`` does what
    ``step(model, cost, optimizer, x, y)`` does, on a GPU, for plain SGD.

    At the book's mini-batches a GPU step is a few hundred small kernels, and Python issues them more slowly
    than the GPU runs them (an H200 waited on the host for rung 3 at m=10: 7.7 ms a step, where PyTorch issues
    its step in 2.1 ms). A CUDA graph records the kernels of one step once; every later step copies its
    mini-batch into the recorded input arrays and launches the whole graph with one call.

    What a recording fixes, and how this class keeps it right:

    - the shapes: the first mini-batch of each shape runs eagerly (it compiles the kernels and makes the
      optimizer's state), the second is recorded; a shape seen once (an epoch's short last batch) stays eager;
    - the numbers the update reads from Python (learning rate, momentum, weight decay) and the arrays it
      writes (the flat parameter buffers): recorded again when any of them changes (a schedule's new η);
    - memory: the recording allocates from a memory pool of its own that nothing else uses, so the arrays the
      graph writes on every replay are never handed to anyone else;
    - matrix products: CuPy refuses to record cuBLAS, so inside a recording they run deepscope's own GEMM
      kernel (:mod:`deepscope.device`);
    - nothing may be read back to the host while recording: the labels' range is checked on the host before
      (:meth:`check_labels`), not per step; dropout masks come from CuPy's generator, whose state lives on the
      GPU, so every replay draws new ones.

    Args:
        model, cost, optimizer: as for :func:`step`; ``optimizer`` a :class:`deepscope.optim.SGD` without
        ``clip_norm`` (:meth:`supports`).
    """

    def __init__(self, model, cost, optimizer):
        if not self.supports(model, optimizer, cost):
            raise ConfigError("GraphedStep needs a model on a GPU, plain SGD without gradient clipping, and layers "
                              f"and a cost checked in a recording ({', '.join(c.__name__ for c in self.PROVEN)})")
        import cupy    # lazy: CuPy is the optional gpu extra
        self.cupy, self.model, self.cost, self.optimizer = cupy, model, cost, optimizer
        self.seen, self.graphs, self.failed = set(), {}, None

    # The layers and costs whose recorded step was checked against the eager one on a GPU (benchmarks/gpu_check.py
    # 'graph': rung 3 and the dropout net, H200). Other nets step eagerly until a lease checks them.
    PROVEN = (nn.Sequential, nn.Conv2d, nn.MaxPool2d, nn.ReLU, nn.Flatten, nn.Linear, nn.Dropout,
              nn.LogLikelihoodCost)

    @classmethod
    def supports(cls, model, optimizer, cost=None) -> bool:
        """Whether a step of ``model`` by ``optimizer`` (and ``cost``) can be recorded: on a GPU, plain SGD without
        clipping, and only layers (and a cost) in :attr:`PROVEN`."""
        return (model.xp is not np and type(optimizer) is SGD and optimizer.clip_norm is None
                and all(type(m) in cls.PROVEN for m in model.modules())
                and (cost is None or type(cost) in cls.PROVEN))

    def _key(self):
        o = self.optimizer
        return (o.lr, o.momentum, o.weight_decay, o.momentum_form, id(o.flat.data))

    def __call__(self, x, y):
        shape = (x.shape, x.dtype, y.shape, y.dtype)
        rec = self.graphs.get(shape)
        if rec is None or rec["key"] != self._key():
            if self.failed is not None or shape not in self.seen:
                self.seen.add(shape)
                return step(self.model, self.cost, self.optimizer, x, y)
            rec = self._record(x, y)
            if rec is None:
                return step(self.model, self.cost, self.optimizer, x, y)
            self.graphs[shape] = rec
        rec["x"][...] = x
        rec["y"][...] = y
        rec["graph"].launch()
        self.optimizer.steps += 1
        return rec["loss"], rec["out"]

    def _record(self, x, y):
        """Record one step on a side stream into a graph (nothing runs); None, and eager steps from then on, if
        CUDA (or CuPy) refuses to record it."""
        cupy, opt = self.cupy, self.optimizer
        pool, stream = cupy.cuda.MemoryPool(), cupy.cuda.Stream(non_blocking=True)
        xs, ys = x.copy(), y.copy()                      # the graph's inputs, filled before every launch
        steps, previous = opt.steps, cupy.cuda.get_allocator()
        try:
            device.prepare(x.dtype)                      # the recordable GEMM, loaded (waits for the GPU: once)
            cupy.cuda.set_allocator(pool.malloc)
            with stream, device.capturing():
                stream.begin_capture()
                try:
                    loss, out = step(self.model, self.cost, opt, xs, ys, before_update=lambda loss: None)
                finally:
                    graph = stream.end_capture()
        except Exception as e:   # a call that cannot be recorded: say so once, train eagerly
            self.failed = e
            warnings.warn(f"deepscope: the training step could not be recorded as a CUDA graph "
                          f"({type(e).__name__}: {e}); it runs kernel by kernel", stacklevel=3)
            return None
        finally:
            cupy.cuda.set_allocator(previous)
            opt.steps = steps
        return {"graph": graph, "x": xs, "y": ys, "loss": loss, "out": out, "pool": pool, "stream": stream,
                "key": self._key()}

    def check_labels(self, y, classes: int) -> None:
        """Integer labels must lie in 0..classes-1 (checked once on the host: a recorded step cannot read them)."""
        y = np.asarray(y)
        if y.ndim == 1 and y.size:
            self.cost.check_label_range(y, classes)


class SigmoidNetStep:
    """:func:`step` for network2.py's nets on the CPU as one piece: ``[Flatten →] (Linear → Sigmoid)+ → Linear`` with
    :class:`~deepscope.nn.CrossEntropyCost` and plain SGD (no momentum, no clipping; weight decay as SGD's kernel
    takes it), the same compiled loops and NumPy calls as the layers, the cost and :class:`SGD` make (the loops of
    Linear's products, NumPy's exp and the σ kernel of nn/fuse.py's LinearSigmoid, Sigmoid's backward line (by its
    kernel, which computes it bit for bit), the cost's compiled pass, the update's kernel), called one after another
    from here:

        forward   a⁰ = x (flattened),  aˡ = σ(aˡ⁻¹ Wˡᵀ + bˡ),  z = aᴸ⁻¹ Wᴸᵀ + bᴸ;  C and δᴸ = (σ(z) - y)/n
        backward  Wˡ.grad += δˡᵀ aˡ⁻¹,  bˡ.grad += Σ δˡ  (BP4, BP3);  δˡ⁻¹ = (δˡ Wˡ) ⊙ aˡ⁻¹(1 - aˡ⁻¹)  (BP2, BP1)
        update    W ← W - η ∇C  (SGD's kernel)

    Why: at network2's sizes a call from Python costs about what its arithmetic does. The Sequential, each
    module's ``__call__`` and public ``backward``, the runs' ``applies``, each product's choice between the loops and
    BLAS, the cost's and the optimizer's checks were ~17 of the ~86 us that ``fit`` took for a ``[784,30,10]`` step at
    m=64 (Zen 5, 1 thread, OpenBLAS's own kernels, loaded, CPU time a step, alternating in one process: 86.2 layer by
    layer, 69.0 as one piece). The choices depend only on the
    mini-batch's shape and dtype and the thread count: they are made once for each (:meth:`applies`), by the
    functions the layers ask. The loss, outputs, gradients and updated weights are the layer path's, bit for bit.

    :func:`fit` uses it where :meth:`of` finds such a net, cost and optimizer and no callback looks between the
    backward pass and the update, for each mini-batch it :meth:`applies` to: none of the modules (nor the
    Sequential) has a hook, the first Linear's input needs no gradient and the others' do (as ``fit`` sets them),
    the mini-batch is a row-major NumPy float array of the weights' dtype with integer labels, and each product runs
    the loops in one call (or, for δ W, NumPy's one product; for the first layer's W.grad, BLAS, where Linear
    takes it: a CPU without AVX-512), as the layers then do. Otherwise the step runs layer
    by layer, which also says what is wrong with a bad input; a label out of range stops it with the cost's error.
    The modules' own caches (their last input and output) are not filled."""

    def __init__(self, model, flatten: bool, linears, cost, optimizer):
        self.model, self.flatten, self.linears, self.cost, self.optimizer = model, flatten, linears, cost, optimizer
        self.modules = tuple(model)
        self._needing = self.modules[2 if flatten else 1:]     # the modules whose input needs its gradient
        self._routes, self._route = {}, None
        # zero_grad in the weight-gradient loops (W.grad = δᵀa, not +=) where the optimizer holds the Linears'
        # parameters and no other, none twice: every gradient is then written each step (the flat buffer's padding
        # between them stays 0). [784,30,10] at m=64: memset of 95 KB of gradients, ~0.9 us a step (Zen 5)
        own = [p for m in linears for p in (m.weight, m.bias) if p is not None]
        self._fresh = len({id(p) for p in own}) == len(own) and \
            {id(p) for p in own} == {id(p) for p in optimizer.flat.params}
        self.right = 0       # the last step's rows whose output picks the label (_correct's number, counted by the cost)

    @classmethod
    def of(cls, model, cost, optimizer):
        """The fast step of ``model`` (a Sequential of ``[Flatten →] (Linear → Sigmoid)+ → Linear`` whose widths
        match) by ``cost`` (a CrossEntropyCost) and ``optimizer`` (SGD), or None."""
        if type(model) is not nn.Sequential or type(cost) is not nn.CrossEntropyCost or type(optimizer) is not SGD:
            return None
        modules = list(model)
        flatten = bool(modules) and type(modules[0]) is nn.Flatten
        chain = modules[1:] if flatten else modules
        if len(chain) < 3 or len(chain) % 2 == 0:
            return None
        linears = chain[0::2]
        if (any(type(m) is not nn.Linear for m in linears) or any(type(m) is not nn.Sigmoid for m in chain[1::2])
                or any(a.out_features != b.in_features for a, b in zip(linears, linears[1:]))):
            return None
        return cls(model, flatten, linears, cost, optimizer)

    def applies(self, x, y) -> bool:
        """Whether this mini-batch steps as one piece (see the class docstring)."""
        model, opt, first = self.model, self.optimizer, self.linears[0]
        if (type(x) is not np.ndarray or type(y) is not np.ndarray or opt._v is not None or opt.clip_norm is not None
                or first._needs_input_grad or tuple(model._modules.values()) != self.modules
                or hooked((model, *self.modules))):
            return False
        for m in self._needing:
            if not m._needs_input_grad:
                return False
        if not (x.flags.c_contiguous and (self.flatten or x.ndim == 2) and y.ndim == 1 and y.dtype.kind in "iu"
                and len(y) == len(x)):
            return False
        opt._sync()                                   # (the parameters' arrays, if someone replaced them)
        key = (x.shape, x.dtype, opt.flat.data.dtype, cpu.get_num_threads(), cpu.fast(), cpu.FUSE_LINEAR_SIGMOID)
        route = self._routes.get(key)
        if route is None:
            route = self._routes[key] = self._plan(x)
        self._route = route
        return route is not False

    def _plan(self, x):
        """For each Linear whether δ W runs the loops (else NumPy's one product) and whether W.grad does (else BLAS:
        the first Linear only), as ``cpu.linear_backward`` would choose; whether the loops write the gradients fresh
        (no zero_grad: all by the loops); and the step's arrays that no one sees after it, made once for this shape
        (a new array each step cost ~0.2 us apiece): each hidden Linear's z, e^{-|z|} and σ(z), the cost's δ, each
        ∂C/∂a = δ W and the δ of Sigmoid's backward (with the flat views its kernel takes). False where any of the
        layers' products would not run so (or x does not fit)."""
        rows, w = len(x), self.linears[0].weight.data
        h = x.reshape(rows, -1) if self.flatten and x.size else x
        if rows == 0 or h.ndim != 2 or h.shape[1] != self.linears[0].in_features or not cpu.fast(h, w):
            return False
        by_loops, grads_by_loops, forward, backward = [], [], [], []
        for linear in self.linears:
            w, b = linear.weight, linear.bias
            out = np.empty((rows, linear.out_features), w.data.dtype)
            first, hidden = linear is self.linears[0], linear is not self.linears[-1]
            forward.append((np.empty_like(out), np.empty_like(out), out) if hidden else None)
            g, d = np.empty_like(h), np.empty_like(h)                 # ∂C/∂a and δ of the Sigmoid before it
            backward.append((g, d, (g.reshape(-1), h.reshape(-1), d.reshape(-1))) if not first else None)
            if not ((cpu.linear_sigmoid_applies(h, w.data, _data(b)) if hidden else
                     cpu.linear_runs_loops(h, w.data, _data(b), forward=True))
                    and cpu.tiles_in_one_call(rows, w.data.size)):
                return False
            grads = cpu.linear_runs_loops(h, w.grad, out, _grad(b))   # else (the first layer only) BLAS's
            if not (grads and cpu.tiles_in_one_call(w.data.shape[0], h.size) or first and not grads):
                return False
            grads_by_loops.append(grads)
            loops = cpu.input_grad_by_loops(out, w.data)
            if not first and not (loops or cpu.matmul_is_plain(out, w.data)):
                return False
            by_loops.append(loops)
            h = out
        fresh = self._fresh and all(grads_by_loops)
        return by_loops, grads_by_loops, fresh, forward, np.empty_like(out), backward

    def __call__(self, x, y, before_update):
        """One step on ``(x, y)`` (where :meth:`applies`): ``(loss, out)`` as :func:`step` returns them."""
        k, opt, flat, linears, rows = cpu.kernels(), self.optimizer, self.optimizer.flat, self.linears, len(x)
        h = x.reshape(rows, -1) if self.flatten else x
        by_loops, grads_by_loops, fresh, forward, delta, backward = self._route     # (the arrays: _plan's)
        inputs = []
        for linear, arrays in zip(linears[:-1], forward):            # aˡ = σ(aˡ⁻¹ Wˡᵀ + bˡ): LinearSigmoid's pass
            inputs.append(h)
            h = cpu.linear_sigmoid(h, linear.weight.data, _data(linear.bias), arrays)
        inputs.append(h)
        last = linears[-1]
        z = np.empty((rows, last.out_features), h.dtype)              # z = aᴸ⁻¹ Wᴸᵀ + bᴸ: Linear's loops
        k.linear_forward(h, last.weight.data, cpu.loops_bias(_data(last.bias), h.dtype), z, cpu._NO_NEG_ABS[h.dtype],
                         0, rows)
        loss, bad, self.right = k.crossentropy(z, y, delta)           # C, δᴸ: the cost's compiled pass (and the
                                                                      # rows z gets right: fit's accuracy)
        if bad >= 0:
            raise self.cost._out_of_range(int(y[bad]), z.shape[1])
        loss /= rows
        if not fresh:
            cpu.zero(flat.grad)                                       # zero_grad (else: by the loops, fresh)
        for i in range(len(linears) - 1, -1, -1):
            linear, a = linears[i], inputs[i]
            # BP4: W.grad += δᵀ a,  BP3: b.grad += Σ δ (Linear's loops, or BLAS and NumPy's sum as Linear runs them)
            if grads_by_loops[i]:
                k.linear_weight_grad(delta, a, linear.weight.grad, cpu.loops_bias(_grad(linear.bias), a.dtype),
                                     0, linear.out_features, fresh)
            else:
                cpu.grads_by_blas(delta, a, linear.weight.grad, _grad(linear.bias))
            if i == 0:
                break
            w = linear.weight.data
            g, d, flat_views = backward[i]
            if by_loops[i]:                                           # BP2: ∂C/∂a = δ W
                k.linear_input_grad(delta, w, g)
            else:
                np.matmul(delta, w, out=g)
            k.sigmoid_backward(*flat_views)                           # δ = ∂C/∂a ⊙ a(1-a) into d: Sigmoid's
            delta = d                                                 # backward line, its kernel (the same numbers)
        before_update(loss)
        opt.steps += 1                                                # SGD.step's kernel, as it calls it
        w = flat.data
        k.sgd(w, flat.grad, w[:0], opt.lr, opt.momentum, opt.weight_decay, flat.n_decayed)
        return loss, z


def _data(p):
    return None if p is None else p.data


def _grad(p):
    return None if p is None else p.grad


DEVICE_CHUNK = 8192    # examples copied to a GPU at once (Batches.epoch)
CUDA_GRAPHS = True     # fit replays a recorded step on a GPU where it can (GraphedStep); False: kernel by kernel
SIGMOID_NET_STEP = True     # fit steps network2's nets as one piece on the CPU where it can (SigmoidNetStep); False:
                            # layer by layer (the same numbers; for an A/B)
READ_EVERY = 50        # on a GPU, fit reads the running cost and accuracy (and checks the cost) every this many steps


class Batches:
    """A training set and how :func:`fit` draws its mini-batches.

    Args:
        X, y: inputs and targets; the first axis indexes examples.
        shuffle: a new random order every epoch (False keeps network3's fixed order).
        augment: ``augment(X_batch) -> X_batch`` applied to each mini-batch (optional).
    """

    def __init__(self, X, y, shuffle: bool = True, augment=None):
        if len(X) != len(y):
            raise ShapeError(f"fit: {len(X)} training inputs but {len(y)} labels")
        self.X, self.y, self.shuffle, self.augment = X, y, shuffle, augment

    def __len__(self):
        return len(self.X)

    def epoch(self, batch_size: int, xp=None):
        """The mini-batches of one epoch, as arrays of ``xp`` (the model's array module; default the backend's).

        The data stays on the host. A GPU gets it in chunks of about ``DEVICE_CHUNK`` examples, each drawn,
        augmented and copied at once and then cut into mini-batches there: a copy to the GPU waits for the GPU
        to finish its queued work, so one copy a mini-batch would make every step wait. On the CPU a chunk is
        one mini-batch."""
        xp = backend.xp() if xp is None else xp
        n = len(self.X)
        order = backend.rng().permutation(n) if self.shuffle else np.arange(n)
        chunk = batch_size if xp is np else batch_size * max(1, DEVICE_CHUNK // batch_size)
        for c in range(0, n, chunk):
            part = order[c:c + chunk]
            X = cpu.take_rows(self.X, part)            # X[part], each row's loads started ahead
            X = self.X[part] if X is None else X
            if self.augment is not None:
                X = self.augment(X)
            X, y = xp.asarray(X), xp.asarray(self.y[part])
            if chunk == batch_size:
                yield X, y
                continue
            for i in range(0, len(part), batch_size):
                yield X[i:i + batch_size], y[i:i + batch_size]


def fit(model, cost, optimizer, train, epochs: int, batch_size: int, validation=None, test=None, run=None,
        callbacks=None) -> History:
    """Train ``model`` by mini-batch SGD (or any optimizer) and return its :class:`History`.

    Args:
        model: a :class:`deepscope.nn.Module` mapping inputs to logits.
        cost: a cost from :mod:`deepscope.nn.loss` (it applies the output neuron).
        optimizer: from :mod:`deepscope.optim`.
        train: ``(X, y)`` or :class:`Batches` (for a fixed order or augmentation).
        epochs: the number of passes over ``train`` (in all, counting those of a resumed run).
        batch_size: mini-batch size m.
        validation, test: ``(X, y)`` measured after every epoch (optional).
        run: a :class:`deepscope.runs.Run` (``Run.create(...)`` or ``Run.resume(...)``): every epoch is saved
            there; a run with a checkpoint continues from it exactly where it stopped.
        callbacks: see the module's docstring. Default: ``[ProgressBar()]``; pass ``[]`` for silence.
    """
    train = train if isinstance(train, Batches) else Batches(*train)
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"fit: {name} must be a whole number >= 1, got {value!r}")
    if len(train) == 0:
        raise ConfigError("fit: no training examples (train holds 0 inputs)")
    check_inputs("fit", train.X)
    # an empty validation or test set measures nothing: an epoch's record then has no such accuracy (not NaN)
    validation = validation if validation is not None and len(validation[1]) else None
    test = test if test is not None and len(test[1]) else None
    callbacks = [ProgressBar()] if callbacks is None else list(callbacks)
    history, start = History(), 0
    if run is not None:
        checkpoint = run.load_checkpoint(model, optimizer)
        if checkpoint is not None:
            start, history = checkpoint.epoch, checkpoint.history
            _load_states(callbacks, checkpoint.state)
            run.write_metrics(history)  # it may hold an epoch whose checkpoint was never written
    call_callbacks(callbacks, "on_fit_start", model, optimizer, start)
    # The data needs no gradient: the net's first layer skips ∂C/∂x (as PyTorch does); restored afterwards.
    flags = {m: m.needs_input_grad for m in model.modules()}
    model.needs_input_grad = False
    stopped = None
    before_step, on_step, on_batch_end = (_hooks(callbacks, h) for h in ("on_before_step", "on_step", "on_batch_end"))

    on_host = model.xp is np      # on a GPU, read the cost only every READ_EVERY steps: a read waits for the GPU

    def before_update(loss):                       # (count and epoch: the loop's, below)
        if (on_host or count % READ_EVERY == 0) and not math.isfinite(loss):
            where = f"epoch {epoch}, step {count}" if on_host else f"epoch {epoch}, by step {count}"
            raise NonFiniteError(nonfinite_cost(float(loss), model, where))
        for hook in before_step:
            hook(count, model, optimizer)

    # On a GPU, plain SGD with no per-step callback replays a recorded step (GraphedStep); the cost is read
    # after the update there, every READ_EVERY steps.
    use_graph = (CUDA_GRAPHS and not on_host and not before_step and not on_step
                 and GraphedStep.supports(model, optimizer, cost))
    graphed = GraphedStep(model, cost, optimizer) if use_graph else None
    # On the CPU, network2's nets step as one piece where they can (SigmoidNetStep: the layers' numbers, without
    # their dispatch); not where a callback looks between the backward pass and the update
    fused = SigmoidNetStep.of(model, cost, optimizer) if SIGMOID_NET_STEP and on_host and not before_step else None
    count, labels_unchecked = optimizer.steps, True
    try:
        model.train()
        for epoch in range(start + 1, epochs + 1):
            t0 = time.perf_counter()
            call_callbacks(callbacks, "on_epoch_start", epoch, epochs, len(train))
            loss_sum, correct, seen = 0.0, 0, 0
            for xb, yb in train.epoch(batch_size, model.xp):
                count, right = count + 1, None
                if fused is not None and fused.applies(xb, yb):
                    loss, out = fused(xb, yb, before_update)
                    right = fused.right                     # (counted by its cost's pass: one compiled call less)
                elif graphed is None:
                    loss, out = step(model, cost, optimizer, xb, yb, before_update)
                else:
                    loss, out = graphed(xb, yb)
                    if labels_unchecked:      # the first step runs eagerly: check every label before recording
                        graphed.check_labels(train.y, out.shape[-1])
                        labels_unchecked = False
                    before_update(loss)
                for hook in on_step:
                    hook(count, model, optimizer)
                m = len(yb)
                loss_sum += loss * m
                seen += m
                correct += _correct(out, yb) if right is None else right
                for hook in on_batch_end:
                    hook(m, loss_sum / seen, correct / seen)
            record = {"epoch": epoch, "train_loss": float(loss_sum) / max(seen, 1),
                      "train_acc": int(correct) / max(seen, 1), "lr": optimizer.lr}
            if validation is not None:
                record["val_acc"] = evaluate(model, *validation)
            if test is not None:
                record["test_acc"] = evaluate(model, *test)
            record["seconds"] = time.perf_counter() - t0
            history.append(record)
            reasons = [r for r in call_callbacks(callbacks, "on_epoch_end", epoch, record) if r]
            if run is not None:  # save before reporting: a closed stdout never loses a finished epoch
                if history.best is record:
                    run.save_model(model)
                run.save_checkpoint(model, optimizer, epoch, history, _states(callbacks))
                run.write_metrics(history)
            call_callbacks(callbacks, "on_record", epoch, record)
            if reasons:
                stopped = reasons[0]
                break
    except BaseException as e:
        call_callbacks(callbacks, "on_fit_end", history, e)
        raise
    finally:
        for m, flag in flags.items():
            m.needs_input_grad = flag      # parents first (modules() order), so children keep their own
    call_callbacks(callbacks, "on_fit_end", history, stopped)
    return history


def call_callbacks(callbacks, hook: str, *args) -> list:
    return [fn(*args) for fn in _hooks(callbacks, hook)]


def _hooks(callbacks, hook: str) -> list:
    """The callbacks' ``hook`` methods (fit looks up the per-step ones once, not at every step)."""
    return [getattr(cb, hook) for cb in callbacks if hasattr(cb, hook)]


def _names(callbacks):
    """A checkpoint key for each callback with state: its class name (numbered if the class repeats)."""
    seen: dict[str, int] = {}
    for cb in callbacks:
        if hasattr(cb, "state_dict"):
            name = type(cb).__name__
            seen[name] = seen.get(name, 0) + 1
            yield (name if seen[name] == 1 else f"{name}.{seen[name]}"), cb


def _states(callbacks) -> dict:
    return {name: cb.state_dict() for name, cb in _names(callbacks)}


def _load_states(callbacks, states: dict) -> None:
    for name, cb in _names(callbacks):
        if name in states:
            cb.load_state_dict(states[name])


def _correct(out, y):
    """How many of the mini-batch's outputs pick the right class: an int on the CPU, a 0-d array on a GPU (read
    later, as the cost)."""
    fast = cpu.correct(out, y)                     # the line below in one compiled pass
    if fast is not None:
        return fast
    xp = backend.xp_of(out)
    if out.ndim == 2 and y.ndim == 1:
        right = xp.count_nonzero(out.argmax(axis=1) == y)
    elif out.ndim == 2 and y.shape == out.shape:   # one-hot targets
        right = xp.count_nonzero(out.argmax(axis=1) == y.argmax(axis=1))
    else:
        return 0
    return int(right) if xp is np else right


# -- callbacks --------------------------------------------------------------------------------------------
class ProgressBar:
    """A tqdm bar per epoch (images/s, running loss and accuracy) and one line per finished epoch."""

    def __init__(self, every: int = 50):
        self.every, self.bar, self.steps, self.done = every, None, 0, 0

    def on_fit_start(self, model, optimizer, epoch):
        self.done = epoch
        if epoch:
            tqdm.write(f"resuming after epoch {epoch}")

    def on_epoch_start(self, epoch, epochs, n):
        self.bar = tqdm(total=n, desc=f"epoch {epoch}/{epochs}", unit="img", unit_scale=True, leave=False,
                        dynamic_ncols=True)

    def on_batch_end(self, m, loss, accuracy):
        self.bar.update(m)
        self.steps += 1
        if self.steps % self.every == 0:
            self.bar.set_postfix_str(f"loss {float(loss):.4f} acc {float(accuracy):.4f}", refresh=False)

    def on_epoch_end(self, epoch, record):
        self._close()

    def on_record(self, epoch, record):
        self.done = epoch
        tqdm.write(format_record(record))

    def on_fit_end(self, history, stopped):
        self._close()
        if isinstance(stopped, str):
            tqdm.write(f"stopping: {stopped}")
        elif isinstance(stopped, KeyboardInterrupt):
            tqdm.write(f"interrupted during epoch {self.done + 1}"
                       + (f"; the checkpoint of epoch {self.done} is intact" if self.done else ""))

    def _close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Schedule:
    """A learning-rate schedule from :mod:`deepscope.optim`, stepped after every epoch (and saved with the
    run); training stops when the schedule says so (η fell below its floor)."""

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def on_epoch_end(self, epoch, record):
        self.scheduler.step(record)
        if self.scheduler.stop():
            return f"learning rate fell to {self.scheduler.optimizer.lr:g}"

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state)


class EarlyStopping:
    """Stop when the validation accuracy has not improved for ``patience`` epochs."""

    def __init__(self, patience: int):
        if patience < 1:
            raise ConfigError(f"EarlyStopping: patience must be >= 1, got {patience}")
        self.patience, self.best, self.bad_epochs = patience, None, 0

    def on_epoch_end(self, epoch, record):
        acc = record.get("val_acc")
        if acc is None:
            return None
        if self.best is None or acc > self.best:
            self.best, self.bad_epochs = acc, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            return f"no improvement in validation accuracy for {self.bad_epochs} epochs (early stopping)"
        return None

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs = state.get("best"), int(state.get("bad_epochs", 0))


class DetectAnomaly:
    """Stop at the first non-finite forward output or gradient, naming the layer, the step and the direction
    (:class:`deepscope.scope.AnomalyDetector` attached for the length of the training)."""

    def __init__(self):
        self.detector = None

    def on_fit_start(self, model, optimizer, epoch):
        self.detector = AnomalyDetector(model)
        self.detector.step = optimizer.steps + 1

    def on_step(self, step, model, optimizer):
        self.detector.step = step + 1

    def on_fit_end(self, history, stopped):
        if self.detector is not None:
            self.detector.remove()
            self.detector = None


# -- measuring --------------------------------------------------------------------------------------------
def predict_logits(model, X, batch_size: int = 1000):
    """The model's outputs for ``X`` in evaluation mode, batch by batch (as a NumPy array)."""
    was_training = model.training
    model.eval()
    try:
        outs = [backend.to_numpy(model(model.xp.asarray(X[i:i + batch_size])))
                for i in range(0, len(X), batch_size)]
    finally:
        model.train(was_training)
    return np.concatenate(outs) if outs else np.zeros((0,))


def check_inputs(who: str, X) -> None:
    """Refuse inputs a net would take without complaint and answer wrongly: raw uint8 pixels (0..255, where the
    nets expect [0, 1]) and NaN or infinite values (whose outputs would count as some class)."""
    dtype = getattr(X, "dtype", None)
    if dtype is None:
        return
    if dtype == np.uint8:
        raise DataError(f"{who}: the inputs are uint8 (raw pixel values 0..255?): scale them to floats in [0, 1] "
                        f"first, e.g. X.astype('float32') / 255")
    if dtype.kind in "fc" and len(X):
        xp = backend.xp_of(X)
        squares = cpu.sum_of_squares(X)                     # NaN and ±∞ reach the sum of squares (and an overflow of
        if squares is None:                                 # huge values only sends us on to the exact count): one
            flat = X.reshape(-1)                            # fast pass, compiled where it can be
            squares = xp.dot(flat, flat)
        if bool(xp.isfinite(squares)):
            return
        bad = ~xp.isfinite(X).reshape(len(X), -1).all(axis=1)
        if bool(bad.any()):
            raise DataError(f"{who}: {int(bad.sum()):,} of {len(X):,} inputs hold NaN or infinity "
                            f"(the first is input {int(xp.argmax(bad))})")


def evaluate(model, X, y, batch_size: int = 1000) -> float:
    """Classification accuracy of ``model`` on ``(X, y)``, in [0, 1]. ``y`` holds integer labels, or one-hot
    vectors (network.py's training data), which count by their largest entry."""
    if len(X) != len(y):
        raise ShapeError(f"evaluate: {len(X)} inputs but {len(y)} labels")
    if len(X) == 0:
        return float("nan")
    check_inputs("evaluate", X)
    logits = predict_logits(model, X, batch_size)
    predicted = logits.argmax(axis=-1)
    y = backend.to_numpy(y)
    if y.ndim == logits.ndim and y.shape == logits.shape:
        y = y.argmax(axis=-1)
    if y.shape != predicted.shape:
        raise ShapeError(f"evaluate: labels of shape {tuple(y.shape)} do not match the model's predictions "
                         f"{tuple(predicted.shape)} (one label, or one one-hot vector, per output)")
    return float((predicted == y).mean())


def first_nonfinite_layer(model) -> str:
    """The first layer (in forward order) whose parameter gradient holds a NaN or an infinity."""
    for name, module in model.named_modules():
        for pname, p in module._parameters.items():
            if p is not None and not bool(backend.xp_of(p.grad).isfinite(p.grad).all()):
                return f"{module.describe()} ({pname})"
    return "none (the cost itself is not finite)"


def format_record(r: dict) -> str:
    """One line for an epoch: loss, training, validation and test accuracy, seconds."""
    parts = [f"epoch {r['epoch']:3d}", f"loss {r['train_loss']:.4f}", f"train {r['train_acc']:.2%}"]
    if r.get("val_acc") is not None:
        parts.append(f"validation {r['val_acc']:.2%}")
    if r.get("test_acc") is not None:
        parts.append(f"test {r['test_acc']:.2%}")
    parts.append(f"{r['seconds']:.1f}s")
    return "  ".join(parts)
