"""``grad_fn`` for the usual case: a stack of minibatches and a loss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from entropix import _base
from entropix import _leaves


def minibatch_grad_fn(
    loss_fn: Callable[..., jax.Array], batches: Any, *, key: jax.Array | int | None = None,
    microbatches: int = 1,
) -> _base.GradFn:
  r"""The ``grad_fn`` of one update, from its minibatches and the loss.

  .. math::
    \mathtt{grad\_fn}(\theta, i) = \nabla_\theta\,
      \ell(\theta, b_i\,[, k_i]) , \qquad k_i = \mathrm{fold\_in}(k, i) ,

  where :math:`b_i` is minibatch ``i`` of ``batches`` (every leaf indexed on
  its leading axis) and :math:`k_i` a key of its own for each ``i``, so
  dropout draws a fresh mask at every inner step. Pass a new ``key`` per
  update (``jax.random.fold_in(key, step)``). Local entropy calls it for
  ``i = 1 .. L - 1`` (index 0 is the gradient you pass as ``updates``), the
  fixed point for ``i = 1 .. L``, HEAT for ``i = 0 .. samples - 1``; the
  returned function says how many minibatches it holds, and a transform
  that would index past them refuses with an error instead of JAX's silent
  clamp to the last one.

  The gradient is taken with respect to the floating-point leaves of
  ``params``; any other leaf (an int, bool or key array, as an Equinox model
  holds) gets ``None``, as ``eqx.filter_grad`` gives it, and reaches
  ``loss_fn`` as it is.

  ``params`` is whatever the optimizer passes: the params pytree under optax,
  the ``nnx.State`` of the parameters under ``nnx.Optimizer`` (merge it with
  the graph def inside ``loss_fn``: ``nnx.merge(graphdef, params)``).
  Only the gradient comes back: state a loss updates on the side (BatchNorm's
  running statistics) is not kept from the inner steps; re-estimate it
  before evaluating, as ``train.py`` does.

  Gradient accumulation: with ``microbatches=k`` each minibatch is split
  along its second axis into k equal micro-batches, whose gradients are
  summed in a ``lax.scan`` (float32) and divided by k. For a loss that is a
  mean over examples this is the minibatch's gradient, at the memory of one
  micro-batch; every inner step gets it, as it should. (Wrapping the
  optimizer in ``optax.MultiSteps`` instead would accumulate the gradient at
  x alone and run the inner loop k times: entropix refuses it.) Micro-batch
  m of minibatch i draws its key as ``fold_in(k_i, m)``; statistics a layer
  takes over the batch (BatchNorm) are then those of the micro-batch.

  Example:
    >>> import jax, jax.numpy as jnp, optax, entropix
    >>> xs = jnp.linspace(-1, 1, 80).reshape(4, 20)      # 4 minibatches of 20
    >>> batches = {"x": xs, "y": 3.0 * xs}
    >>> loss = lambda w, b: jnp.mean((w * b["x"] - b["y"]) ** 2)
    >>> grad_fn = entropix.minibatch_grad_fn(loss, batches)
    >>> opt = entropix.entropy_sgd(1.0, gamma=1.0, inner_steps=4, noise=0.0)
    >>> @jax.jit
    ... def step(w, state):
    ...   updates, state = opt.update(grad_fn(w, 0), state, w, grad_fn=grad_fn)
    ...   return optax.apply_updates(w, updates), state
    >>> w = jnp.array(0.0)
    >>> state = opt.init(w)
    >>> for _ in range(100):
    ...   w, state = step(w, state)
    >>> print(f"{float(w):.3f}")
    3.000

  Args:
    loss_fn: ``loss_fn(params, batch)``, or ``loss_fn(params, batch, key)``
      when ``key`` is given; returns a scalar.
    batches: a pytree whose leaves share their leading axis, the minibatch
      index.
    key: a PRNG key or int seed; ``None`` (default) calls ``loss_fn`` without one.
    microbatches: k >= 1, micro-batches per minibatch (gradient accumulation);
      every leaf of ``batches`` needs a second axis divisible by k.

  Returns:
    ``grad_fn(params, i)``, with the attribute ``minibatches`` (the leading
    axis' length).
  """
  if not callable(loss_fn):
    raise TypeError(f"loss_fn must be callable (params, batch[, key]) -> loss, got {loss_fn!r}")
  leaves = jax.tree.leaves(batches)
  if not leaves:
    raise ValueError(f"batches must hold arrays with a leading minibatch axis, got {batches!r}")
  shapes = [np.shape(leaf) for leaf in leaves]
  if any(len(s) == 0 or s[0] != shapes[0][0] for s in shapes):
    raise ValueError(f"every leaf of batches needs the same leading (minibatch) axis, got "
                     f"shapes {shapes}")
  k = _base.check_int("microbatches", microbatches, 1)
  if k > 1 and any(len(s) < 2 or s[1] % k for s in shapes):
    raise ValueError(f"microbatches={k} splits the second (example) axis of every leaf of "
                     f"batches into {k} equal parts; their shapes are {shapes}")
  if key is not None:
    _base.check_key(key)
    key = _base.as_raw_key(key)

  def gradient(params, batch, batch_key):
    # With respect to the float leaves; None for the others (int, bool, keys),
    # as eqx.filter_grad gives.
    args = (batch,) if batch_key is None else (batch, batch_key)
    return jax.grad(lambda part: loss_fn(_leaves.merge(part, params), *args))(
        _leaves.float_part(params, params))

  def grad_fn(params, i):
    batch = jax.tree.map(lambda b: b[i], batches)
    batch_key = None if key is None else jax.random.fold_in(key, i)
    if k == 1:
      return gradient(params, batch, batch_key)
    micro = jax.tree.map(lambda b: b.reshape(k, b.shape[0] // k, *b.shape[1:]), batch)

    def add(total, m):
      part = jax.tree.map(lambda b: b[m], micro)
      g = gradient(params, part, None if batch_key is None else jax.random.fold_in(batch_key, m))
      return jax.tree.map(lambda t, g_: t + g_, total, g), None

    part = _leaves.float_part(params, params)
    total, _ = lax.scan(add, _base.float32_zeros(part), jnp.arange(k))
    return jax.tree.map(lambda t, p: (t / k).astype(jnp.result_type(p)), total, part)

  grad_fn.minibatches = shapes[0][0]
  return grad_fn
