"""deepscope.scope: instruments that show why deep nets are hard to train (Nielsen, ch. 5).

* :class:`LearningSpeedRecorder` — per layer, ‖∂C/∂b‖ (the book's speed of learning), ‖∂C/∂W‖, ‖ΔW‖/‖W‖,
  saturated sigmoid/tanh units and dead ReLUs, recorded every N steps (a ``fit`` callback).
* :class:`AnomalyDetector` — stops at the first NaN/inf, naming the layer, the step and the direction.

They watch modules through hooks and ``Parameter.grad``; no layer knows of them. The chapter 5 experiments
that use them (the speed of learning, the depth × activation × init grid, the one-neuron chain) are in
:mod:`deepscope.book.ch5`.
"""
from .anomaly import AnomalyDetector
from .speed import LearningSpeedRecorder, dead_fraction, plot_speed, saturated_fraction

__all__ = ["AnomalyDetector", "LearningSpeedRecorder", "dead_fraction", "saturated_fraction", "plot_speed"]
