"""Flax NNX integration: BatchNorm statistics re-estimated after entropix's inner loops.

This module imports Flax; ``import entropix`` does not import it.

An entropix update takes L gradients, of which only yours at x (minibatch 0,
taken on the model) updates BatchNorm's running averages; the inner steps'
statistics, at points y near x, are thrown away. The running averages then
lag behind the parameters more than SGD's do: after one epoch of Flax's NNX
MNIST example under Entropy-SGD they gave 90.7-96.6% test accuracy (three
seeds) where the same parameters with re-estimated statistics gave
98.6-98.7% (``examples/flax_mnist``). Re-estimate them before you evaluate, as the
paper's code does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax


def recompute_batch_stats(
    model: nnx.Module, batches: Any,
    forward: Callable[[nnx.Module, Any], Any] | None = None,
) -> None:
  r"""Sets every ``nnx.BatchNorm`` of ``model`` to the mean of its minibatch statistics.

  For each BatchNorm, with :math:`\mu_k, \sigma^2_k` the mean and variance it
  normalises minibatch :math:`k` of :math:`n` with in training,

  .. math::
    \text{mean} \leftarrow \frac1n \sum_{k} \mu_k , \qquad
    \text{var} \leftarrow \frac1n \sum_{k} \sigma^2_k ,

  PyTorch's cumulative average (``momentum=None``), with each minibatch seen
  by the model as it is now (not by an average over the path to it, as the
  running averages are). For the passes, every BatchNorm normalises with
  its minibatch's statistics and every ``nnx.Dropout`` is off, in whichever
  mode the model is. The model is updated in place, as NNX does; its modes
  are left as they were and nothing else in it changes (each pass runs on a
  copy).

  Example:
    >>> import jax, jax.numpy as jnp, entropix.nnx
    >>> from flax import nnx
    >>> model = nnx.Sequential(nnx.Linear(2, 3, rngs=nnx.Rngs(0)),
    ...                        nnx.BatchNorm(3, rngs=nnx.Rngs(0)))
    >>> batches = jnp.arange(24.0).reshape(4, 3, 2)  # 4 minibatches of 3
    >>> entropix.nnx.recompute_batch_stats(model, batches)
    >>> features = model.layers[0](batches.reshape(-1, 2))
    >>> bool(jnp.allclose(model.layers[1].mean[...], features.mean(0), rtol=1e-5))
    True

  Args:
    model: an NNX module holding ``nnx.BatchNorm`` layers.
    batches: a pytree whose leaves share a leading minibatch axis.
    forward: ``forward(model, batch)`` runs the model on one minibatch (its
      output is ignored), e.g. ``lambda m, b: m(b["image"], None)``; by default
      ``model(batch)``.
  """
  forward = forward or (lambda m, batch: m(batch))
  modules = [m for _, m in nnx.iter_modules(model)]
  norms = [m for m in modules if isinstance(m, nnx.BatchNorm)]
  dropouts = [m for m in modules if isinstance(m, nnx.Dropout)]
  if not norms:
    raise ValueError("recompute_batch_stats: the model holds no nnx.BatchNorm")
  leaves = jax.tree.leaves(batches)
  if not leaves or any(jnp.ndim(l) == 0 or jnp.shape(l)[0] != jnp.shape(leaves[0])[0]
                       for l in leaves):
    raise ValueError("recompute_batch_stats: every leaf of batches needs the same leading "
                     f"(minibatch) axis, got shapes {[jnp.shape(l) for l in leaves]}")
  count = jnp.shape(leaves[0])[0]
  saved = ([(m, "momentum", m.momentum) for m in norms]
           + [(m, "use_running_average", m.use_running_average) for m in norms]
           + [(m, "deterministic", m.deterministic) for m in dropouts])
  try:
    for m in norms:  # momentum 0: a pass leaves its minibatch's statistics
      m.momentum, m.use_running_average = 0.0, False
    for m in dropouts:
      m.deterministic = True
    graphdef, stats, rest = nnx.split(model, nnx.BatchStat, ...)

    @jax.jit
    def total(stats, rest, batches):
      def add(sum_, batch):
        copy = nnx.merge(graphdef, stats, rest, copy=True)
        forward(copy, batch)
        return jax.tree.map(jnp.add, sum_, nnx.state(copy, nnx.BatchStat)), None

      return lax.scan(add, jax.tree.map(jnp.zeros_like, stats), batches)[0]

    mean = jax.tree.map(lambda t: t / count, total(stats, rest, batches))
  finally:
    for m, name, value in saved:
      setattr(m, name, value)
  nnx.update(model, mean)
