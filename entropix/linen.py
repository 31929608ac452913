"""Flax Linen integration: a ``TrainState`` whose ``apply_gradients`` forwards ``grad_fn``.

This module imports Flax; ``import entropix`` does not import it.
"""

from __future__ import annotations

from typing import Any

import jax
import optax
from flax.linen.fp8_ops import OVERWRITE_WITH_GRADIENT
from flax.training import train_state

from entropix import _base


class TrainState(train_state.TrainState):
  """``flax.training.train_state.TrainState`` for optimizers that take ``grad_fn``.

  The same fields and ``create``; ``apply_gradients(grads=g, grad_fn=f)``
  passes ``grad_fn`` to ``tx.update`` (Flax's own takes every keyword for a
  field to replace, so an entropix optimizer never receives it). Without
  ``grad_fn`` it does what Flax's ``apply_gradients`` does. Subclass it to
  carry more fields (``batch_stats``), as with Flax's.

  ``grad_fn(params, i)`` receives what ``tx`` updates: ``state.params``, or,
  when the params hold Flax's ``overwrite_with_gradient`` collection (fp8
  training), the whole params with that collection as it is (only the
  ``params`` part of its result is used).

  Example:
    >>> import jax, jax.numpy as jnp, flax.linen as nn, entropix, entropix.linen
    >>> model = nn.Dense(1)
    >>> xs = jnp.linspace(-1.0, 1.0, 60).reshape(3, 20, 1)   # 3 minibatches of 20
    >>> loss = lambda p, i: jnp.mean((model.apply({"params": p}, xs[i]) - 2 * xs[i]) ** 2)
    >>> grad_fn = jax.grad(loss)
    >>> state = entropix.linen.TrainState.create(
    ...     apply_fn=model.apply,
    ...     params=model.init(jax.random.key(0), xs[0])["params"],
    ...     tx=entropix.entropy_sgd(1.0, gamma=1.0, inner_steps=3))
    >>> @jax.jit
    ... def train_step(state):
    ...   return state.apply_gradients(grads=grad_fn(state.params, 0), grad_fn=grad_fn)
    >>> for _ in range(50):
    ...   state = train_step(state)
    >>> print(f"{float(state.params['kernel'][0, 0]):.3f}", int(state.step))  # towards 2
    1.987 50
  """

  def apply_gradients(self, *, grads: Any, grad_fn: _base.GradFn | None = None,
                      **kwargs: Any) -> "TrainState":
    """One update: ``tx.update(grads, opt_state, params, grad_fn=grad_fn)``, then apply it.

    Args:
      grads: the gradient at ``params`` (minibatch 0), shaped like them.
      grad_fn: ``grad_fn(params, i)``, the gradient on minibatch ``i``, for
        transforms that evaluate gradients elsewhere; None for plain optax.
      **kwargs: other fields to replace, as Flax's ``apply_gradients``.

    Returns:
      The state with ``step`` + 1 and the new ``params`` and ``opt_state``.
    """
    overwrite = not isinstance(grads, jax.Array) and OVERWRITE_WITH_GRADIENT in grads
    grads_with_opt, params_with_opt, inner_grad_fn = grads, self.params, grad_fn
    if overwrite:
      grads_with_opt, params_with_opt = grads["params"], self.params["params"]
      rest = {OVERWRITE_WITH_GRADIENT: self.params[OVERWRITE_WITH_GRADIENT]}

      def inner_grad_fn(params, i):
        return grad_fn({"params": params, **rest}, i)["params"]

      if hasattr(grad_fn, "minibatches"):
        inner_grad_fn.minibatches = grad_fn.minibatches
    extra = {} if grad_fn is None else {"grad_fn": inner_grad_fn}
    updates, new_opt_state = optax.with_extra_args_support(self.tx).update(
        grads_with_opt, self.opt_state, params_with_opt, **extra)
    new_params = optax.apply_updates(params_with_opt, updates)
    if overwrite:
      new_params = {"params": new_params, OVERWRITE_WITH_GRADIENT: grads[OVERWRITE_WITH_GRADIENT]}
    return self.replace(step=self.step + 1, params=new_params, opt_state=new_opt_state,
                        **kwargs)
