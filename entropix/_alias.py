"""Ready optimizers of the paper's Table 1: an entropix transform + Nesterov SGD."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from entropix import _base
from entropix import _compose
from entropix import _leaves
from entropix import _noise
from entropix._fixed_point import hopf_lax_fixed_point
from entropix._local_entropy import Average, local_entropy
from entropix._smoothing import gaussian_smoothing


def skip_if_not_finite(
    inner: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
  """``inner``, skipped when the updates it is given are not finite; the skips counted.

  What ``optax.apply_if_finite(inner, max_consecutive_errors=inf)`` does,
  with its state (``optax.ApplyIfFiniteState``): a NaN or Inf anywhere in
  ``updates`` makes this update zero and leaves ``inner``'s state as it
  was; ``notfinite_count`` counts such updates in a row, ``total_notfinite``
  all of them. It never gives up, since a NaN applied would stay in the
  params. Selects instead of ``lax.cond``: on an elementwise ``inner``
  (``optax.sgd``) they join its own pass over the params, and no branch
  holds a collective that some devices would skip.
  """
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return optax.ApplyIfFiniteState(
        notfinite_count=jnp.zeros([], jnp.int32), last_finite=jnp.array(True),
        total_notfinite=jnp.zeros([], jnp.int32), inner_state=inner.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    finite = _base.all_finite(updates)
    new_updates, inner_state = inner.update(updates, state.inner_state, params, **extra_args)
    skip = lambda new, old: jnp.where(finite, new, old)
    new_updates = jax.tree.map(lambda u: skip(u, jnp.zeros_like(u)), new_updates)
    return new_updates, optax.ApplyIfFiniteState(
        notfinite_count=skip(0, optax.safe_increment(state.notfinite_count)),
        last_finite=finite,
        total_notfinite=skip(state.total_notfinite, optax.safe_increment(state.total_notfinite)),
        inner_state=jax.tree.map(skip, inner_state, state.inner_state))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def outer_sgd(
    learning_rate: optax.ScalarOrSchedule, momentum: float
) -> optax.GradientTransformation:
  """The ready optimizers' outer step: Nesterov SGD that skips a non-finite direction.

  A direction with a NaN or Inf (an inner loop that diverged) leaves the
  params and the momentum as they were; ``total_notfinite`` and
  ``notfinite_count`` (in a row) count it (:func:`skip_if_not_finite`).
  """
  _base.check("learning_rate", learning_rate, lambda v: v > 0, "> 0", schedule=True)
  _base.check("momentum", momentum, lambda v: 0 <= v < 1, "in [0, 1)")
  return skip_if_not_finite(optax.sgd(learning_rate, momentum=momentum, nesterov=True))


def ready(
    *transforms: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    momentum: float,
    name: str,
) -> optax.GradientTransformationExtraArgs:
  """A ready optimizer: ``transforms``, then :func:`outer_sgd`, on the float leaves
  (:func:`entropix._leaves.float_leaves_only`; ``name`` for its errors), marked as
  skipping a non-finite update itself (so ``optax.apply_if_finite`` may wrap it)."""
  return _compose.guarded(_leaves.float_leaves_only(
      optax.chain(*transforms, outer_sgd(learning_rate, momentum)), name))


def entropy_sgd(
    learning_rate: optax.ScalarOrSchedule,
    *,
    gamma: optax.ScalarOrSchedule,
    inner_steps: int = 20,
    inner_lr: float = 0.1,
    noise: float = 1e-4,
    alpha: float = 0.75,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    inner_momentum: float = 0.0,
    reset_inner_momentum: bool = True,
    average: Average = "exponential",
    key: int | jax.Array = 0,
    axis_name: str | None = None,
    sampler: _noise.Sampler = "binomial",
    unroll: int | bool = False,
    grad_transform: optax.GradientTransformation | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Entropy-SGD: descent on the local entropy (paper Sec. 7.1).

  ``optax.chain(local_entropy(gamma, ...), outer_sgd(learning_rate,
  momentum))``: the inner Langevin chain estimates
  :math:`x - \langle y \rangle = \nabla f_\gamma(x) / \gamma` and Nesterov SGD
  steps along it. ``weight_decay`` acts inside the inner loop, where the
  authors' code puts it. See :func:`entropix.local_entropy` for the gradient
  protocol (``update(..., grad_fn=grad_fn)``) and the other arguments.

  ``outer_sgd`` is ``optax.sgd(learning_rate, momentum, nesterov=True)``
  that skips a non-finite direction, as ``optax.apply_if_finite`` would
  without ever giving up (its state, ``optax.ApplyIfFiniteState``): an
  update whose direction is not finite (an inner chain that diverged) is
  skipped, params and momentum as they were, and counted in the state
  (``total_notfinite``; ``notfinite_count`` in a row). The same holds for
  every optimizer here.

  Example:
    >>> import jax, jax.numpy as jnp, optax, entropix
    >>> batches = jnp.linspace(-1.0, 1.0, 40).reshape(20, 2)
    >>> loss = lambda p, b: jnp.mean((p - b) ** 2)
    >>> grad_fn = lambda p, i: jax.grad(loss)(p, batches[i])
    >>> opt = entropix.entropy_sgd(1.0, gamma=entropix.scoping(0.03, 1e-3))
    >>> params = jnp.ones(2)
    >>> state = opt.init(params)
    >>> for _ in range(3):
    ...   updates, state = opt.update(grad_fn(params, 0), state, params,
    ...                               grad_fn=grad_fn)
    ...   params = optax.apply_updates(params, updates)
    >>> print(" ".join(f"{v:.4f}" for v in params))  # from (1, 1) towards 0
    0.0699 0.1238

  Args:
    learning_rate: outer learning rate (a float or schedule); it absorbs gamma.
    gamma: coupling strength, a float or schedule (:func:`entropix.scoping`).
    inner_steps: gradient evaluations per update (the paper's L = 20).
    inner_lr: inner step size.
    noise: Langevin noise scale (temperature noise**2).
    alpha: averaging factor of the inner iterates.
    momentum: Nesterov momentum of the outer step.
    weight_decay: L2 coefficient inside the inner loop.
    inner_momentum: Nesterov momentum of the inner chain.
    reset_inner_momentum: ``False`` keeps the inner buffer across updates
      (the authors' code).
    average: ``"exponential"`` (factor ``alpha``; Entropy-SGD) or
      ``"uniform"`` (the mean of x and the iterates: the authors' HEAT class,
      Table 1's HEAT column).
    key: seed or PRNG key of the noise.
    axis_name: pmap axis over which gradients are averaged.
    sampler: law of the noise increments (see :func:`entropix.local_entropy`).
    unroll: inner loop iterations per compiled body (see :func:`entropix.local_entropy`).
    grad_transform: an optax transform applied to every gradient the inner
      loop takes, e.g. ``optax.clip_by_global_norm(1.0)`` (a transform
      chained before this optimizer sees the gradient at x alone).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  return ready(
      local_entropy(
          gamma,
          inner_steps=inner_steps,
          inner_lr=inner_lr,
          noise=noise,
          alpha=alpha,
          inner_momentum=inner_momentum,
          reset_inner_momentum=reset_inner_momentum,
          average=average,
          weight_decay=weight_decay,
          key=key,
          axis_name=axis_name,
          sampler=sampler,
          unroll=unroll,
          grad_transform=grad_transform,
      ),
      learning_rate=learning_rate, momentum=momentum, name="entropy_sgd",
  )


def hj(
    learning_rate: optax.ScalarOrSchedule,
    *,
    gamma: optax.ScalarOrSchedule,
    inner_steps: int = 5,
    inner_lr: float = 0.25,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    inner_momentum: float = 0.0,
    reset_inner_momentum: bool = True,
    axis_name: str | None = None,
    unroll: int | bool = False,
    grad_transform: optax.GradientTransformation | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""HJ: descent on the non-viscous Hamilton-Jacobi solution (paper Sec. 7.2).

  :func:`entropix.local_entropy` without noise and with the last iterate
  (``noise=0``, ``alpha=0``): the inner loop is gradient descent on
  :math:`f(y) + \tfrac\gamma2 |x - y|^2`, so the update direction is
  :math:`x - y_L \approx x - \mathrm{prox}_{f/\gamma}(x) = \nabla u(x,
  1/\gamma) / \gamma`, the gradient of the Hopf-Lax formula (paper Lemma 2-3).
  Defaults follow the paper and the authors' code: L = 5, inner_lr = 0.25.
  ``weight_decay`` acts inside the inner loop; a non-finite update is skipped
  as in :func:`entropix.entropy_sgd`. This is the form the paper's
  text describes (the code's ``HJB`` class); Table 1's HJ column came from
  the fixed-point form, :func:`entropix.hj_fixed_point`.

  Example:
    >>> import jax, jax.numpy as jnp, optax, entropix
    >>> grad_fn = lambda p, i: jax.grad(lambda q: jnp.sum(q ** 2))(p)
    >>> opt = entropix.hj(0.5, gamma=1.0)
    >>> params = jnp.ones(3)
    >>> state = opt.init(params)
    >>> updates, state = opt.update(grad_fn(params, 0), state, params,
    ...                             grad_fn=grad_fn)
    >>> print(" ".join(f"{v:.4f}" for v in updates))  # x - prox = 2/3, 5 steps: 0.63
    -0.6327 -0.6327 -0.6327

  Args:
    learning_rate: outer learning rate (a float or schedule).
    gamma: coupling strength, a float or schedule.
    inner_steps: gradient evaluations per update.
    inner_lr: inner step size.
    momentum: Nesterov momentum of the outer step.
    weight_decay: L2 coefficient inside the inner loop.
    inner_momentum: Nesterov momentum of the inner descent.
    reset_inner_momentum: ``False`` keeps the inner buffer across updates
      (the authors' code).
    axis_name: pmap axis over which gradients are averaged.
    unroll: inner loop iterations per compiled body (see :func:`entropix.local_entropy`).
    grad_transform: an optax transform applied to every gradient the inner
      loop takes, e.g. ``optax.clip_by_global_norm(1.0)`` (a transform
      chained before this optimizer sees the gradient at x alone).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  return ready(
      local_entropy(
          gamma,
          inner_steps=inner_steps,
          inner_lr=inner_lr,
          noise=0.0,
          alpha=0.0,
          inner_momentum=inner_momentum,
          reset_inner_momentum=reset_inner_momentum,
          weight_decay=weight_decay,
          axis_name=axis_name,
          unroll=unroll,
          grad_transform=grad_transform,
      ),
      learning_rate=learning_rate, momentum=momentum, name="hj",
  )


def hj_fixed_point(
    learning_rate: optax.ScalarOrSchedule,
    *,
    gamma: optax.ScalarOrSchedule,
    inner_steps: int = 5,
    damping: float = 0.75,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    axis_name: str | None = None,
    unroll: int | bool = False,
    grad_transform: optax.GradientTransformation | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""HJ as Table 1 ran it: the Hopf-Lax gradient by damped fixed point (Remark 21).

  ``optax.chain(hopf_lax_fixed_point(gamma, ...), outer_sgd(learning_rate,
  momentum))``: :math:`p = \nabla f(x - p/\gamma)` iterated
  ``inner_steps`` times from the gradient at x, then a Nesterov SGD step
  along p, skipped if p is not finite (see :func:`entropix.entropy_sgd`).
  The authors' ``FP`` class, whose runs are Table 1's HJ column. One update
  costs ``inner_steps + 1`` gradient evaluations. See
  :func:`entropix.hopf_lax_fixed_point` for the maths and the gradient
  protocol; :func:`entropix.hj` is the paper's Sec. 7.2 form.

  Example:
    >>> import jax, jax.numpy as jnp, optax, entropix
    >>> grad_fn = lambda p, i: jax.grad(lambda q: jnp.sum(q ** 2))(p)
    >>> opt = entropix.hj_fixed_point(0.5, gamma=1.0)
    >>> params = jnp.ones(2)
    >>> state = opt.init(params)
    >>> updates, state = opt.update(grad_fn(params, 0), state, params,
    ...                             grad_fn=grad_fn)
    >>> print(" ".join(f"{v:.4f}" for v in updates))  # -0.5 x 1.9 x p, p = 0.668 (2/3 in the limit)
    -0.6346 -0.6346

  Args:
    learning_rate: outer learning rate (a float or schedule).
    gamma: coupling strength, a float or schedule (:func:`entropix.scoping`).
    inner_steps: damped fixed-point iterations (gradients beyond the first).
    damping: weight kept on the previous iterate (the code's 0.75).
    momentum: Nesterov momentum of the outer step.
    weight_decay: L2 coefficient added to every gradient at its point.
    axis_name: pmap axis over which gradients are averaged.
    unroll: inner loop iterations per compiled body (see :func:`entropix.local_entropy`).
    grad_transform: an optax transform applied to every gradient the inner
      loop takes, e.g. ``optax.clip_by_global_norm(1.0)`` (a transform
      chained before this optimizer sees the gradient at x alone).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  return ready(
      hopf_lax_fixed_point(
          gamma, inner_steps=inner_steps, damping=damping, weight_decay=weight_decay,
          axis_name=axis_name, unroll=unroll, grad_transform=grad_transform,
      ),
      learning_rate=learning_rate, momentum=momentum, name="hj_fixed_point",
  )


def heat(
    learning_rate: optax.ScalarOrSchedule,
    *,
    sigma: optax.ScalarOrSchedule,
    samples: int = 20,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    key: int | jax.Array = 0,
    axis_name: str | None = None,
    sampler: _noise.Sampler = "normal",
    unroll: int | bool = False,
    grad_transform: optax.GradientTransformation | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""HEAT: descent on the heat-smoothed loss (paper Sec. 7.3, Eq. 35).

  ``optax.chain(gaussian_smoothing(sigma, ...), optax.add_decayed_weights(
  weight_decay), outer_sgd(learning_rate, momentum))``: the
  gradient is averaged over ``samples`` Gaussian perturbations of the
  parameters; ``weight_decay`` acts on the outer step (there is no inner
  loop), which is skipped if the estimate is not finite (see
  :func:`entropix.entropy_sgd`). The ``updates`` passed in are ignored: pass
  zeros (see :func:`entropix.gaussian_smoothing`).

  Example:
    >>> import jax, jax.numpy as jnp, optax, entropix
    >>> grad_fn = lambda p, i: jax.grad(lambda q: -jnp.sum(jnp.cos(3 * q)))(p)
    >>> opt = entropix.heat(0.1, sigma=0.3, samples=4)
    >>> params = jnp.ones(3)
    >>> state = opt.init(params)
    >>> updates, state = opt.update(optax.tree.zeros_like(params), state,
    ...                             params, grad_fn=grad_fn)
    >>> print(updates.shape, updates.dtype)  # 4 perturbations: a noisy estimate
    (3,) float32

  Args:
    learning_rate: outer learning rate (a float or schedule).
    sigma: perturbation scale (sigma**2 is the paper's gamma for HEAT).
    samples: gradient evaluations per update (the paper's L = 20).
    momentum: Nesterov momentum of the outer step.
    weight_decay: L2 coefficient added to the smoothed gradient.
    key: seed or PRNG key of the perturbations.
    axis_name: pmap axis over which gradients are averaged.
    sampler: law of the perturbations (see :func:`entropix.gaussian_smoothing`).
    unroll: loop iterations per compiled body (see :func:`entropix.gaussian_smoothing`).
    grad_transform: an optax transform applied to every gradient the update
      takes, e.g. ``optax.clip_by_global_norm(1.0)`` (a transform
      chained before this optimizer sees the gradient at x alone).

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  _base.check("weight_decay", weight_decay, lambda v: v >= 0, ">= 0")
  # Always in the chain, so that the state has one structure whatever
  # inject_hyperparams makes of weight_decay; 0 costs one fused multiply-add.
  return ready(
      gaussian_smoothing(
          sigma, samples=samples, key=key, axis_name=axis_name, sampler=sampler,
          unroll=unroll, grad_transform=grad_transform,
      ),
      optax.add_decayed_weights(weight_decay),
      learning_rate=learning_rate, momentum=momentum, name="heat",
  )
