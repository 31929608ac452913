"""Layers shared by the networks, configured as in the authors' PyTorch code."""

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

# Flax's BatchNorm momentum: running = BN_MOMENTUM * running + (1 - BN_MOMENTUM) * batch
# (PyTorch's momentum 0.1). The evaluation inverts it to read a batch's statistics.
BN_MOMENTUM = 0.9


def batch_norm(train: bool, axis_name: str | None) -> nn.BatchNorm:
  """BatchNorm with PyTorch's defaults (momentum 0.1 there is 0.9 here, eps 1e-5).

  In training it normalises with the batch statistics, reduced over
  ``axis_name`` (the global batch under pmap); in evaluation with the running
  ones.
  """
  return nn.BatchNorm(
      use_running_average=not train, momentum=BN_MOMENTUM, epsilon=1e-5, axis_name=axis_name
  )


class Dropout(nn.Module):
  """Inverted dropout whose mask for an example depends only on its global position.

  ``nn.Dropout`` draws one mask for the local batch, so splitting a batch
  across devices changes every mask. Here row r of the local batch on device
  d is example ``d * rows + r`` of the global batch, and its mask is drawn
  from ``fold_in(key, d * rows + r)``: 1 device and N devices (``axis_name``
  under pmap or shard_map) drop the same units of the same example.

  Attributes:
    rate: probability of zeroing a unit.
    axis_name: device axis the global batch is split over (None: one device).
  """

  rate: float
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    key = self.make_rng("dropout")
    rows = x.shape[0]
    first = 0 if self.axis_name is None else lax.axis_index(self.axis_name) * rows
    keep_prob = 1.0 - self.rate

    def mask(example):
      return jax.random.bernoulli(jax.random.fold_in(key, example), keep_prob, x.shape[1:])

    keep = jax.vmap(mask)(first + jnp.arange(rows))
    return jnp.where(keep, x / keep_prob, jnp.zeros_like(x))


def max_pool(x: jax.Array, window: int) -> jax.Array:
  """Max pooling over disjoint ``window`` x ``window`` patches of NHWC ``x`` (VALID).

  The same values and gradients as ``nn.max_pool(x, (window, window),
  strides=(window, window))``, ties included: the gradient goes to the first
  maximum of each patch in row-major order, as XLA's select-and-scatter sends
  it. XLA:CPU runs select-and-scatter slowly; here the backward pass is one
  elementwise select (LeNet's 3x3 pool, batch 128: 1.4 ms against 9.2 ms).
  """
  n, h, w, c = x.shape
  rows, cols = h // window, w // window
  patches = x[:, :rows * window, :cols * window].reshape(n, rows, window, cols, window, c)
  patches = patches.transpose(0, 1, 3, 5, 2, 4).reshape(n, rows, cols, c, window * window)
  first = jnp.argmax(patches, axis=-1)[..., None] == jnp.arange(window * window)
  return jnp.where(first, patches, 0).sum(axis=-1)


def norm_and_dropout(
    train: bool, dropout: bool | None, axis_name: str | None
) -> tuple[Callable[[], nn.BatchNorm], Callable[[jax.Array, float], jax.Array]]:
  """``(new_norm, drop)``: the BatchNorm and dropout of a network called with ``train``, ``dropout``.

  ``new_norm()`` is a new BatchNorm (batch statistics when ``train``);
  ``drop(x, rate)`` applies :class:`Dropout` at ``rate`` when ``dropout``
  (default: ``train``). Call them inside the network's ``nn.compact`` method.
  """
  deterministic = not (train if dropout is None else dropout)
  new_norm = lambda: batch_norm(train, axis_name)
  drop = lambda x, rate: Dropout(rate, axis_name)(x, deterministic=deterministic)
  return new_norm, drop
