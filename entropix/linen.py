"""Flax Linen integration: a ``TrainState`` whose ``apply_gradients`` forwards ``grad_fn``,
and BatchNorm statistics re-estimated after entropix's inner loops.

This module imports Flax; ``import entropix`` does not import it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn
from flax import traverse_util
from flax.linen.fp8_ops import OVERWRITE_WITH_GRADIENT
from flax.training import train_state
from jax import lax

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


def recompute_batch_stats(
    apply_fn: Callable[[Any, Any], tuple[Any, Any]], variables: Any, batches: Any
) -> Any:
  r"""BatchNorm's statistics re-estimated: the mean of its statistics over ``batches``.

  For each ``nn.BatchNorm`` of the model, with :math:`\mu_k, \sigma^2_k` the
  mean and variance it normalises minibatch :math:`k` of :math:`n` with in
  training,

  .. math::
    \text{mean} = \frac1n \sum_{k} \mu_k , \qquad
    \text{var} = \frac1n \sum_{k} \sigma^2_k ,

  PyTorch's cumulative average (``momentum=None``), with every minibatch seen
  by the parameters as they are now. An entropix update keeps BatchNorm's
  running averages only from your gradient at x (the inner steps' are thrown
  away), so they lag behind the parameters: re-estimate them before you
  evaluate, as the paper's code does (``train.py`` does it with this
  function). Each pass starts from zeroed statistics, and BatchNorm's update
  :math:`m \cdot 0 + (1 - m)\,\mu_k` is divided by :math:`1 - m` with each
  layer's own momentum :math:`m`, read from the layer as it runs. Every
  ``nn.Dropout`` is off for the passes (it returns its input), so
  ``apply_fn`` may run the model as in training.

  Example:
    >>> import jax, jax.numpy as jnp, flax.linen as nn, entropix.linen
    >>> model = nn.Sequential([nn.Dense(3), nn.BatchNorm(use_running_average=False)])
    >>> batches = jnp.arange(24.0).reshape(4, 3, 2)  # 4 minibatches of 3
    >>> variables = model.init(jax.random.key(0), batches[0])
    >>> apply_fn = lambda v, b: model.apply(v, b, mutable=["batch_stats"])
    >>> stats = entropix.linen.recompute_batch_stats(apply_fn, variables, batches)
    >>> features = nn.Dense(3).apply({"params": variables["params"]["layers_0"]},
    ...                              batches.reshape(-1, 2))
    >>> bool(jnp.allclose(stats["layers_1"]["mean"], features.mean(0), rtol=1e-5))
    True

  Args:
    apply_fn: ``apply_fn(variables, batch)``: the model on one minibatch in
      training mode, with ``mutable=["batch_stats"]``,
      returning ``(output, mutated)`` as ``model.apply`` does.
    variables: the model's variables (``params``, ``batch_stats``, ...).
    batches: a pytree whose leaves share a leading minibatch axis (an index
      array works: ``apply_fn`` may gather its minibatch itself).

  Returns:
    The new ``batch_stats``, shaped like ``variables["batch_stats"]``.
  """
  leaves = jax.tree.leaves(batches)
  if not leaves or any(jnp.ndim(l) == 0 or jnp.shape(l)[0] != jnp.shape(leaves[0])[0]
                       for l in leaves):
    raise ValueError("recompute_batch_stats: every leaf of batches needs the same leading "
                     f"(minibatch) axis, got shapes {[jnp.shape(l) for l in leaves]}")
  if "batch_stats" not in variables:
    raise ValueError("recompute_batch_stats: variables hold no batch_stats (no nn.BatchNorm)")
  count = jnp.shape(leaves[0])[0]
  momenta: dict[tuple[str, ...], float] = {}

  def record(next_fun, args, kwargs, context):
    if context.method_name == "__call__":
      if isinstance(context.module, nn.BatchNorm):
        momenta[tuple(context.module.path)] = context.module.momentum
      elif isinstance(context.module, nn.Dropout):
        return args[0] if args else kwargs["inputs"]  # a deterministic dropout
    return next_fun(*args, **kwargs)

  zeros = jax.tree.map(jnp.zeros_like, variables["batch_stats"])

  def add(total, batch):
    with nn.intercept_methods(record):
      _, mutated = apply_fn({**variables, "batch_stats": zeros}, batch)
    return jax.tree.map(jnp.add, total, mutated["batch_stats"]), None

  total, _ = lax.scan(add, zeros, batches)
  flat = traverse_util.flatten_dict(total)
  missing = sorted({path[:-1] for path in flat} - set(momenta))
  if missing:
    raise ValueError(f"recompute_batch_stats: batch_stats at {missing} belong to no "
                     "nn.BatchNorm that apply_fn ran")
  return traverse_util.unflatten_dict(
      {path: t / (count * (1 - momenta[path[:-1]])) for path, t in flat.items()})
