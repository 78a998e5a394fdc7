"""Stop at the first NaN or infinity, and say where it came from.

A net that "suddenly gives NaN" usually went wrong many layers and steps before the cost shows it: a
learning rate so large that a weighted input z overflows, an e^z without the max subtracted, a log of 0.
:class:`AnomalyDetector` hooks every leaf module and checks, on every step,

    forward    the module's output                                   (in forward order)
    backward   the gradient it returns for its input, ∂C/∂a^{l-1},
               and the gradients of its own parameters ∂C/∂w, ∂C/∂b   (in backward order)

raising :class:`deepscope.errors.NonFiniteError` at the first non-finite value, naming the layer, the step
and the direction. If a module's *input* is already non-finite (bad data), the message says so.

    det = AnomalyDetector(model)
    for step, (x, y) in enumerate(batches):
        det.step = step
        ...                      # forward / backward as usual; raises at the first NaN
    det.remove()

``deepscope.train.fit(..., detect_anomaly=True)`` does exactly this. Checking every array costs a pass
over it, so use the detector to find a fault, not on every run.
"""
from __future__ import annotations

from .. import backend
from ..errors import NonFiniteError


def _finite(a) -> bool:
    return bool(backend.xp_of(a).isfinite(a).all())


def _arrays(x):
    """The arrays in a hook's argument (an array, or a tuple/list of them, or None)."""
    if x is None:
        return []
    if isinstance(x, (tuple, list)):
        return [a for item in x for a in _arrays(item)]
    return [x] if hasattr(x, "dtype") else []


class AnomalyDetector:
    """Raise :class:`NonFiniteError` at the first non-finite forward output or backward gradient.

    Args:
        model: any :class:`deepscope.nn.Module`; every module without children is watched.

    Attributes:
        step: the current training step, set by the training loop (it appears in the message).
    """

    def __init__(self, model):
        self.model = model
        self.step = 0
        self._handles = []
        leaves = [m for m in model.modules() if not m._modules] or [model]
        for m in leaves:
            self._handles.append(m.register_forward_hook(self._forward_hook))
            self._handles.append(m.register_backward_hook(self._backward_hook))

    def _where(self, module) -> str:
        return module.describe() if hasattr(module, "describe") else type(module).__name__

    def _forward_hook(self, module, inputs, output):
        if all(_finite(a) for a in _arrays(output)):
            return
        if not all(_finite(a) for a in _arrays(inputs)):
            raise NonFiniteError(f"forward, step {self.step}: the input to {self._where(module)} is already "
                                 f"non-finite (NaN or inf in the data?)")
        raise NonFiniteError(f"forward, step {self.step}: {self._where(module)} produced a non-finite output "
                             f"(NaN or inf) from a finite input")

    def _backward_hook(self, module, grad_input, grad_output):
        if not all(_finite(a) for a in _arrays(grad_output)):
            # Normally caught at the module above; reached when the cost's own gradient is bad.
            raise NonFiniteError(f"backward, step {self.step}: the gradient arriving at {self._where(module)} "
                                 f"is non-finite (check the cost)")
        for pname, p in module._parameters.items():
            if p is not None and not _finite(p.grad):
                raise NonFiniteError(f"backward, step {self.step}: {self._where(module)} produced a non-finite "
                                     f"gradient for its parameter {pname!r}")
        if not all(_finite(a) for a in _arrays(grad_input)):
            raise NonFiniteError(f"backward, step {self.step}: {self._where(module)} produced a non-finite "
                                 f"gradient for its input")

    def check_loss(self, loss) -> None:
        """Raise if the cost value itself is not finite."""
        if not _finite(backend.xp_of(loss).asarray(loss)):
            raise NonFiniteError(f"forward, step {self.step}: the cost is {loss}")

    def remove(self) -> None:
        """Detach every hook."""
        for h in self._handles:
            h.remove()
        self._handles = []
