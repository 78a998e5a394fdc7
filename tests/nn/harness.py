"""The declarative layer-test harness: a layer test is a :class:`Case` (constructor, input shapes, options);
tests/nn/test_layers.py runs every case through the same checks (Chainer's ``check_backward`` +
``inject_backend_tests``):

1. float64 central finite differences of the input and every parameter gradient (always);
2. PyTorch parity, forward and every gradient, same weights (when torch imports; the case is skipped,
   not failed, otherwise — torch is imported inside the test, never at the top of a module);
3. the same forward and backward under CuPy, against NumPy (when CuPy and a GPU are available);
4. float32 in, float32 out: the output and every gradient keep the parameters' dtype.

The PyTorch twin of a case is built by :func:`torch_twin` from deepscope's module itself (one converter
for every layer and container), and the weights are copied by state-dict key: a layer whose keys or
layouts differ from PyTorch's fails the parity check.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

import deepscope as ds
from deepscope import nn


@dataclass
class Case:
    """One layer test.

    Args:
        id: the test id.
        make: builds the deepscope module (called after ``manual_seed(seed)``).
        shapes: the input shapes (the first input is the one differentiated).
        inputs: how inputs are drawn: ``"normal"`` (N(0, scale²)), ``"distinct"`` (distinct values well
            apart, for max pooling: no ties near a finite-difference step), ``"kinkless"`` (normal, with
            values near 0 moved away, for ReLU), or ``"indices:V"`` (integers in [0, V)).
        scale: standard deviation of ``"normal"`` / ``"kinkless"`` inputs.
        train: run in training mode (False: ``eval()``).
        max_entries: finite-difference probes per tensor (random entries beyond that).
        rtol, atol: gradient tolerances of the PyTorch comparison; fwd_rtol, fwd_atol: the forward's.
        torch: False when PyTorch has no equivalent (the parity check is skipped, saying why).
    """

    id: str
    make: Callable[[], nn.Module]
    shapes: tuple
    inputs: str = "normal"
    scale: float = 1.0
    train: bool = True
    max_entries: int = 200
    rtol: float = 1e-10
    atol: float = 1e-14
    fwd_rtol: float | None = None
    fwd_atol: float | None = None
    torch: bool = True
    seed: int = 0
    notes: dict = field(default_factory=dict)

    def build(self, dtype="float64") -> nn.Module:
        ds.manual_seed(self.seed)
        module = self.make().to(dtype)
        return module.train(self.train)

    def draw(self, dtype="float64") -> list:
        """The inputs, as NumPy arrays (the same every call)."""
        rng = np.random.default_rng(self.seed + 1)
        xs = []
        for shape in self.shapes:
            if self.inputs.startswith("indices:"):
                xs.append(rng.integers(0, int(self.inputs.split(":")[1]), shape))
                continue
            if self.inputs == "distinct":
                n = int(np.prod(shape))
                x = (rng.permutation(n) / n * 4 - 2).reshape(shape) + 0.01
            else:
                x = rng.standard_normal(shape) * self.scale
                if self.inputs == "kinkless":
                    x[np.abs(x) < 1e-3] = 0.5
            xs.append(x.astype(dtype))
        return xs


def forward_backward(module, xs, g=None, seed=0):
    """``module(*xs)``, then ``backward`` of a fixed random ∂C/∂y (or ``g``). Returns
    (output, ∂C/∂y, ∂C/∂x, {parameter name: grad})."""
    module.zero_grad()
    out = module(*xs)
    if g is None:
        g = np.random.default_rng(seed + 2).standard_normal(out.shape).astype(out.dtype)
        g = ds.backend.xp_of(out).asarray(g)
    grad_x = module.backward(g)
    return out, g, grad_x, {k: p.grad.copy() for k, p in module.named_parameters()}


# -- PyTorch twins -------------------------------------------------------------------------------------
def torch_twin(module, torch):
    """The PyTorch module that computes what ``module`` computes, with its weights (float64).
    None when PyTorch has no such layer (network3's scale-at-test dropout)."""
    twin = _twin(module, torch)
    if twin is None:
        return None
    twin = twin.double().train(module.training)
    state = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in module.state_dict().items()}
    twin.load_state_dict(state, strict=True)
    return twin


def _twin(m, torch):
    T = torch.nn
    if isinstance(m, nn.Sequential):
        parts = [_twin(c, torch) for c in m]
        return None if any(p is None for p in parts) else T.Sequential(*parts)
    if isinstance(m, nn.Residual):
        return _residual(torch)(_twin(m.block, torch), None if m.shortcut is None else _twin(m.shortcut, torch))
    if isinstance(m, nn.Concat):
        return _concat(torch)([_twin(c, torch) for c in m.children()], m.dim)
    if isinstance(m, nn.Linear):
        return T.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    if isinstance(m, nn.Conv2d):
        return T.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, bias=m.bias is not None)
    if isinstance(m, nn.MaxPool2d):
        return T.MaxPool2d(m.kernel_size, m.stride)
    if isinstance(m, nn.AvgPool2d):
        return T.AvgPool2d(m.kernel_size, m.stride)
    if isinstance(m, nn.L2Pool2d):
        return T.LPPool2d(2, m.kernel_size, m.stride)
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        cls = T.BatchNorm1d if isinstance(m, nn.BatchNorm1d) else T.BatchNorm2d
        return cls(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
    if isinstance(m, nn.Embedding):
        return T.Embedding(m.num_embeddings, m.embedding_dim)
    if isinstance(m, nn.Dropout):
        return None if m.scale_at_test else T.Dropout(m.p)
    if isinstance(m, nn.Softmax):
        return T.Softmax(dim=-1)
    if isinstance(m, nn.LogSoftmax):
        return T.LogSoftmax(dim=-1)
    simple = {nn.Sigmoid: T.Sigmoid, nn.Tanh: T.Tanh, nn.ReLU: T.ReLU, nn.Identity: T.Identity,
              nn.Flatten: T.Flatten}
    if type(m) in simple:
        return simple[type(m)]()
    raise NotImplementedError(f"no PyTorch twin for {type(m).__name__}: add it to tests/nn/harness.py")


def _residual(torch):
    class Residual(torch.nn.Module):
        def __init__(self, block, shortcut):
            super().__init__()
            self.block, self.shortcut = block, shortcut

        def forward(self, x):
            return self.block(x) + (x if self.shortcut is None else self.shortcut(x))
    return Residual


def _concat(torch):
    class Concat(torch.nn.ModuleList):
        def __init__(self, branches, dim):
            super().__init__(branches)
            self.dim = dim

        def forward(self, x):
            return torch.cat([b(x) for b in self], dim=self.dim)
    return Concat


# -- the cases -----------------------------------------------------------------------------------------
def _conv_cases():
    # (in, out, kernel, stride, padding, input (N, H, W))
    shapes = [
        (1, 3, 3, 1, 0, (2, 7, 7)),
        (1, 4, 5, 2, 2, (2, 9, 11)),          # stride 2, padding 2, non-square input
        (3, 2, (2, 3), 1, 2, (2, 6, 5)),      # 3 channels, non-square kernel
        (3, 5, (3, 2), (2, 1), (0, 1), (3, 8, 7)),   # tuple stride and padding
        (1, 2, 4, 3, 0, (1, 10, 10)),         # stride 3: some input rows unused
        (2, 3, 1, 1, 0, (2, 4, 3)),           # 1x1 kernel
    ]
    cases = []
    for i, (cin, cout, k, s, p, (n, h, w)) in enumerate(shapes):
        for bias in (True, False):
            cases.append(Case(f"conv{i}-{'bias' if bias else 'nobias'}",
                              lambda cin=cin, cout=cout, k=k, s=s, p=p, bias=bias:
                              nn.Conv2d(cin, cout, k, stride=s, padding=p, bias=bias),
                              ((n, cin, h, w),), max_entries=60, atol=1e-12))
    return cases


def _pool_cases():
    # (kernel, stride, input shape): tiling, overlapping, non-square, windows that leave rows unused
    windows = [(2, None, (2, 3, 8, 6)), (3, 1, (2, 2, 7, 8)), ((2, 3), (1, 2), (1, 3, 6, 9)),
               (3, 2, (2, 2, 9, 7)), (2, 3, (1, 2, 8, 8)), (1, 1, (1, 1, 3, 4))]
    cases = []
    for cls in (nn.MaxPool2d, nn.AvgPool2d, nn.L2Pool2d):
        for i, (k, s, shape) in enumerate(windows):
            cases.append(Case(f"{cls.__name__}-{i}", lambda cls=cls, k=k, s=s: cls(k, s), (shape,),
                              inputs="distinct", max_entries=80, fwd_rtol=1e-12))
    return cases


def _activation_cases():
    acts = [nn.Sigmoid, nn.Tanh, nn.ReLU, nn.Identity, nn.Softmax, nn.LogSoftmax]
    return [Case(cls.__name__, cls, ((6, 5),), inputs="kinkless", scale=3.0, fwd_atol=0.0) for cls in acts]


CASES = [
    Case("Linear-1x1", lambda: nn.Linear(1, 1), ((1, 1),), atol=0.0),
    Case("Linear-5x3", lambda: nn.Linear(5, 3), ((7, 5),), atol=0.0),
    Case("Linear-13x9", lambda: nn.Linear(13, 9), ((4, 13),), atol=0.0),
    Case("Linear-3d-input", lambda: nn.Linear(4, 3), ((2, 5, 4),), atol=0.0),
    Case("Linear-nobias", lambda: nn.Linear(6, 2, bias=False), ((3, 6),), atol=0.0),
    Case("Flatten", nn.Flatten, ((3, 2, 4, 5),)),
    *_activation_cases(),
    *_conv_cases(),
    *_pool_cases(),
    Case("Dropout-eval", lambda: nn.Dropout(0.3), ((4, 5),), train=False),
    Case("Dropout-network3-eval", lambda: nn.Dropout(0.3, scale_at_test=True), ((4, 5),), train=False,
         torch=False, notes={"why": "PyTorch has no scale-at-test dropout (network3's convention)"}),
    Case("Embedding", lambda: nn.Embedding(7, 4), ((3, 5),), inputs="indices:7"),
    Case("BatchNorm1d", lambda: nn.BatchNorm1d(5), ((8, 5),), scale=3.0),
    Case("BatchNorm1d-sequence", lambda: nn.BatchNorm1d(4, momentum=None), ((3, 4, 6),)),
    Case("BatchNorm1d-no-affine", lambda: nn.BatchNorm1d(5, affine=False), ((6, 5),)),
    Case("BatchNorm2d", lambda: nn.BatchNorm2d(3), ((4, 3, 5, 5),), scale=2.0),
    Case("BatchNorm2d-eval", lambda: nn.BatchNorm2d(3), ((4, 3, 5, 5),), train=False),
    Case("Residual-batchnorm-same", lambda: nn.Residual(nn.Sequential(
        nn.Conv2d(2, 2, 3, padding="same", bias=False), nn.BatchNorm2d(2), nn.ReLU(),   # (a bias before batch
        nn.Conv2d(2, 2, 3, padding="same", bias=False), nn.BatchNorm2d(2))),   # norm has a zero gradient)
        ((3, 2, 5, 5),), inputs="kinkless"),
    Case("Residual-identity", lambda: nn.Residual(nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 4))),
         ((5, 4),), atol=1e-13),
    Case("Residual-shortcut", lambda: nn.Residual(nn.Sequential(nn.Linear(4, 3), nn.Sigmoid()),
                                                  shortcut=nn.Linear(4, 3, bias=False)), ((5, 4),), atol=1e-13),
    Case("Residual-conv", lambda: nn.Residual(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.ReLU(),
                                                            nn.Conv2d(2, 2, 3, padding=1))),
         ((2, 2, 5, 5),), inputs="kinkless", max_entries=60, atol=1e-12),
    Case("Concat-features", lambda: nn.Concat(nn.Linear(4, 3), nn.Sequential(nn.Linear(4, 2), nn.Tanh()),
                                              nn.Identity()), ((5, 4),), atol=1e-13),
    Case("Concat-channels", lambda: nn.Concat(nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 1, 1)),
         ((2, 2, 5, 5),), max_entries=60, atol=1e-12),
    Case("Concat-last-dim", lambda: nn.Concat(nn.Linear(4, 2), nn.Linear(4, 3), dim=-1), ((2, 3, 4),),
         atol=1e-13),
    Case("Sequential-convnet", lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.Sigmoid(),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(6 * 3 * 3, 5)),
         ((3, 1, 14, 14),), max_entries=40, atol=1e-12),
]
