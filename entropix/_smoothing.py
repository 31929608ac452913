"""Gaussian smoothing: the gradient of the heat-equation solution (HEAT)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from entropix import _base
from entropix import _leaves
from entropix import _compose
from entropix import _noise


class GaussianSmoothingState(NamedTuple):
  """State of :func:`gaussian_smoothing`.

  Attributes:
    count: number of updates done so far (the argument of a ``sigma`` schedule).
    rng_key: raw ``uint32[2]`` PRNG key, split on every update.
    grad_state: the state of ``grad_transform`` (``()`` without one).
  """

  count: jax.Array
  rng_key: jax.Array
  grad_state: Any = ()


def gaussian_smoothing(
    sigma: optax.ScalarOrSchedule,
    *,
    samples: int = 20,
    key: int | jax.Array = 0,
    axis_name: str | None = None,
    sampler: _noise.Sampler = "normal",
    unroll: int | bool = False,
    grad_transform: optax.GradientTransformation | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Replaces the gradient by a Monte-Carlo gradient of the heat-smoothed loss.

  The heat equation :math:`v_t = \tfrac12 \Delta v`, :math:`v(\cdot, 0) = f`,
  has at time :math:`\sigma^2` the solution
  :math:`v(x) = \mathbb{E}_{e \sim N(0, I)} f(x + \sigma e)`, whose gradient
  this transform estimates without bias (paper Eq. 35, where the paper's
  :math:`\gamma` is :math:`\sigma^2`):

  .. math::
    \widehat{\nabla v}(x) = \frac1L \sum_{i=0}^{L-1}
      \nabla f_i(x + \sigma e_i), \qquad e_i \sim N(0, I)\ \text{i.i.d.},

  with :math:`L` = ``samples`` and :math:`\nabla f_i` the gradient on the i-th
  minibatch, ``grad_fn(x + sigma * e_i, i)`` for ``i = 0 .. samples - 1``.

  The incoming ``updates`` are ignored: a gradient at the unperturbed ``x``
  would bias the estimate. Pass zeros (``optax.tree.zeros_like(params)``) so
  that no gradient is computed for nothing; one update then costs exactly
  ``samples`` gradient evaluations. The loop is a ``lax.scan``. A non-finite
  estimate goes out as it is (for ``optax.apply_if_finite`` after this
  transform to refuse), and ``grad_state`` restarts as at ``init``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, entropix
    >>> loss = lambda p, i: -jnp.cos(3.0 * p["w"])
    >>> opt = optax.chain(entropix.gaussian_smoothing(0.5, samples=8),
    ...                   optax.sgd(0.1))
    >>> params = {"w": jnp.array(0.3)}
    >>> state = opt.init(params)
    >>> updates, state = opt.update(optax.tree.zeros_like(params), state,
    ...                             params, grad_fn=jax.grad(loss))
    >>> print(f"{float(updates['w']):.4f}")  # -0.1 x (8-sample smoothed gradient)
    -0.1281

  Args:
    sigma: standard deviation :math:`\sigma \ge 0` of the perturbations, a
      float or a schedule of the update count.
    samples: :math:`L \ge 1`, gradient evaluations per update.
    key: int seed or PRNG key for the perturbations.
    axis_name: if set, every gradient is ``lax.pmean``-ed over this axis and
      the perturbations are identical on every device of it.
    sampler: law of :math:`e_i`, ``"normal"`` (Gaussian, the heat kernel),
      ``"threefry"`` (``jax.random.normal``, slower) or ``"binomial"``
      (cheaper, a standardised Binomial(32, 1/2) kernel whose characteristic
      function differs from the Gaussian's by 0.5% at :math:`\sigma |k| = 1`).
    unroll: loop iterations per compiled loop body, passed to ``lax.scan``
      (``True``: the whole loop). ``False`` (1; a bool, so that
      ``optax.inject_hyperparams`` leaves it static) keeps compile time
      independent of the loop length; unrolling helps where XLA runs a loop body slower than
      straight-line code, e.g. convolutions on CPU (jax-ml/jax#12868).
    grad_transform: an optax transform applied to each of the L gradients
      (after the ``axis_name`` mean), with the perturbed point as its params,
      e.g. ``optax.clip_by_global_norm(1.0)``; its state is kept in
      ``grad_state``. A transform chained before this one acts on the
      ``updates`` it ignores.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` takes the
    keyword argument ``grad_fn``. With ``optax.inject_hyperparams`` pass
    ``static_args=("samples",)``.
  """
  _base.check("sigma", sigma, lambda v: v >= 0, ">= 0", schedule=True)
  count = _base.check_int("samples", samples, 1)
  _noise.check_sampler(sampler)
  unroll = _base.check_unroll(unroll)
  _base.check_key(key)
  per_gradient = _base.check_grad_transform(grad_transform)

  def init_fn(params: optax.Params) -> GaussianSmoothingState:
    _compose.refuse_wrappers("gaussian_smoothing", init=True, collective=axis_name is not None)
    return GaussianSmoothingState(
        count=jnp.zeros([], jnp.int32), rng_key=_base.as_raw_key(key),
        grad_state=per_gradient.init(_base.at_least_float32(params)) if per_gradient else (),
    )

  def update_fn(
      updates: optax.Updates,
      state: GaussianSmoothingState,
      params: optax.Params | None = None,
      *,
      grad_fn: _base.GradFn | None = None,
      **extra_args: Any,
  ) -> tuple[optax.Updates, GaussianSmoothingState]:
    del updates, extra_args
    _compose.refuse_wrappers("gaussian_smoothing", grad_fn, collective=axis_name is not None)
    _base.require_params(params, "gaussian_smoothing")
    _compose.require_whole_params(params, grad_fn, "gaussian_smoothing")
    grad_fn = _base.require_grad_fn(grad_fn, "gaussian_smoothing", count)
    scale = _base.at_count(sigma, state.count)
    next_key, step_key = jax.random.split(state.rng_key)

    # The loop carries the next perturbed point, drawn at the end of the
    # previous iteration, rather than drawing it just before its gradient:
    # the same numbers, in a loop that XLA:CPU runs markedly faster. One
    # draw past the last sample is wasted.
    def point(i):
      e = _noise.tree_noise(jax.random.fold_in(step_key, i), params, sampler)
      return jax.tree.map(lambda p, z: (p + scale * z).astype(p.dtype), params, e)

    def body(carry, i):
      total, perturbed, grad_state = carry
      grads = _base.pmean(grad_fn(perturbed, i), axis_name)
      if per_gradient:
        grads, grad_state = per_gradient.update(
            _base.at_least_float32(grads), grad_state, _base.at_least_float32(perturbed))
      total = jax.tree.map(lambda t, g: t + g, total, grads)
      return (total, point(i + 1), grad_state), None

    (total, _, grad_state), _ = lax.scan(
        body, (_base.float32_zeros(params), point(0), state.grad_state),
        jnp.arange(count, dtype=jnp.int32), unroll=unroll)
    mean = jax.tree.map(lambda t: t / count, total)
    return _base.cast_like(mean, params), GaussianSmoothingState(
        count=optax.safe_increment(state.count), rng_key=next_key,
        grad_state=_base.fresh_if_not_finite(
            grad_state, lambda: per_gradient.init(_base.at_least_float32(params))))

  return _leaves.float_leaves_only(
      optax.GradientTransformationExtraArgs(init_fn, update_fn), "gaussian_smoothing")
