"""Chapter 5 of the book, "Why are deep neural networks hard to train?", as experiments.

* :func:`speed_experiment` — the book's ``fig/generate_gradient.py``: the speed of learning ‖∂C/∂bˡ‖ of each
  hidden layer at initialisation and during 500 full-batch steps (``deepscope scope speed``);
* :func:`run_compare` — depth × activation × initialisation: the speed ratio at initialisation and the
  accuracy after a short training (``deepscope scope compare``);
* :func:`chain_gradient` — one sigmoid neuron per layer: ∂C/∂b_1 as the product of w_j σ'(z_j), the
  vanishing (and exploding) gradient in one line (``deepscope scope chain``).

They train through :func:`deepscope.train.fit` and watch the nets with the instruments of
:mod:`deepscope.scope` (:class:`~deepscope.scope.LearningSpeedRecorder`).
"""
from .chain import build_chain, chain_gradient, exploding_chain, format_chain, random_chain
from .compare import run_cell, run_compare, table
from .experiment import build_net, full_batch_gradient, hidden_speeds, mnist_subset, speed_experiment, summarize

__all__ = ["build_chain", "chain_gradient", "exploding_chain", "format_chain", "random_chain", "run_cell",
           "run_compare", "table", "build_net", "full_batch_gradient", "hidden_speeds", "mnist_subset",
           "speed_experiment", "summarize"]
