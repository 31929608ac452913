"""Gaussian smoothing: the gradient of the heat-equation solution (HEAT)."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from entropix import _base
from entropix import _noise


class GaussianSmoothingState(NamedTuple):
  """State of :func:`gaussian_smoothing`.

  Attributes:
    count: number of updates done so far (the argument of a ``sigma`` schedule).
    rng_key: raw ``uint32[2]`` PRNG key, split on every update.
  """

  count: jax.Array
  rng_key: jax.Array


def gaussian_smoothing(
    sigma: optax.ScalarOrSchedule,
    *,
    samples: int = 20,
    key: int | jax.Array = 0,
    axis_name: str | None = None,
    sampler: _noise.Sampler = "normal",
    unroll: int | bool = False,
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
  ``samples`` gradient evaluations. The loop is a ``lax.scan``.

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

  def init_fn(params: optax.Params) -> GaussianSmoothingState:
    del params
    return GaussianSmoothingState(
        count=jnp.zeros([], jnp.int32), rng_key=_base.as_raw_key(key)
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
    _base.require_params(params, "gaussian_smoothing")
    grad_fn = _base.require_grad_fn(grad_fn, "gaussian_smoothing", params, count)
    scale = _base.at_count(sigma, state.count)
    next_key, step_key = jax.random.split(state.rng_key)

    # The loop carries the next perturbed point, drawn at the end of the
    # previous iteration, rather than drawing it just before its gradient:
    # the same numbers, but XLA:CPU ran train.py's LeNet update (20 samples)
    # in 228 ms instead of 329 ms (2-core CPU, one process, both variants).
    # One draw past the last sample is wasted.
    def point(i):
      e = _noise.tree_noise(jax.random.fold_in(step_key, i), params, sampler)
      return jax.tree.map(lambda p, z: (p + scale * z).astype(p.dtype), params, e)

    def body(carry, i):
      total, perturbed = carry
      grads = _base.pmean(grad_fn(perturbed, i), axis_name)
      return (jax.tree.map(lambda t, g: t + g, total, grads), point(i + 1)), None

    (total, _), _ = lax.scan(body, (_base.float32_zeros(params), point(0)), jnp.arange(count, dtype=jnp.int32),
                             unroll=unroll)
    mean = jax.tree.map(lambda t: t / count, total)
    return _base.cast_like(mean, params), GaussianSmoothingState(
        count=optax.safe_increment(state.count), rng_key=next_key
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
