"""deepscope.scope: instruments that show why deep nets are hard to train (Nielsen, ch. 5).

* :class:`LearningSpeedRecorder` — per layer, ‖∂C/∂b‖ (the book's speed of learning), ‖∂C/∂W‖, ‖ΔW‖/‖W‖,
  saturated sigmoid/tanh units and dead ReLUs, recorded every N steps (a ``fit`` callback).
* :class:`AnomalyDetector` — stops at the first NaN/inf, naming the layer, the step and the direction.
* :func:`chain_gradient` — the one-neuron-per-layer chain: ∂C/∂b_1 as a product of w_j σ'(z_j).
* :func:`speed_experiment`, :func:`run_compare` — the book's experiment, and a depth × activation × init grid.

They watch modules through hooks and ``Parameter.grad``; no layer knows of them.
"""
from .anomaly import AnomalyDetector
from .chain import chain_gradient, exploding_chain, random_chain
from .compare import run_compare
from .experiment import build_net, hidden_speeds, speed_experiment
from .speed import LearningSpeedRecorder, dead_fraction, plot_speed, saturated_fraction

__all__ = ["AnomalyDetector", "LearningSpeedRecorder", "chain_gradient", "exploding_chain", "random_chain",
           "run_compare", "build_net", "hidden_speeds", "speed_experiment", "dead_fraction", "saturated_fraction",
           "plot_speed"]
