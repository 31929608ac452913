"""Ready optimizers of the paper's Table 1: an entropix transform + Nesterov SGD."""

import jax
import numpy as np
import optax

from entropix import _base
from entropix import _compose
from entropix import _noise
from entropix._fixed_point import hopf_lax_fixed_point
from entropix._local_entropy import Average, local_entropy
from entropix._smoothing import gaussian_smoothing


# optax.apply_if_finite gives up after this many non-finite updates in a row:
# never, since applying one would leave NaN params for good.
NEVER_GIVE_UP = int(np.iinfo(np.int32).max)


def outer_sgd(
    learning_rate: optax.ScalarOrSchedule, momentum: float
) -> optax.GradientTransformation:
  """The ready optimizers' outer step: Nesterov SGD that skips a non-finite direction.

  ``optax.apply_if_finite`` around ``optax.sgd``: a direction with a NaN or
  Inf (an inner loop that diverged) leaves the params and the momentum as
  they were; ``total_notfinite`` and ``notfinite_count`` (in a row) count it.
  """
  _base.check("learning_rate", learning_rate, lambda v: v > 0, "> 0", schedule=True)
  _base.check("momentum", momentum, lambda v: 0 <= v < 1, "in [0, 1)")
  return optax.apply_if_finite(optax.sgd(learning_rate, momentum=momentum, nesterov=True),
                               NEVER_GIVE_UP)


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

  ``outer_sgd`` is ``optax.apply_if_finite(optax.sgd(learning_rate, momentum,
  nesterov=True), ...)`` that never gives up: an update whose direction is
  not finite (an inner chain that diverged) is skipped, params and momentum
  as they were, and counted in the state (``total_notfinite``;
  ``notfinite_count`` in a row). The same holds for every optimizer here.

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
  return _compose.guarded(optax.chain(
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
      outer_sgd(learning_rate, momentum),
  ))


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
  return _compose.guarded(optax.chain(
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
      outer_sgd(learning_rate, momentum),
  ))


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
  along p, skipped if p is not finite (see :func:`entropix.entropy_sgd`). The authors' ``FP`` class, whose runs are Table 1's HJ column.
  One update costs ``inner_steps + 1`` gradient evaluations. See
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
  return _compose.guarded(optax.chain(
      hopf_lax_fixed_point(
          gamma, inner_steps=inner_steps, damping=damping, weight_decay=weight_decay,
          axis_name=axis_name, unroll=unroll, grad_transform=grad_transform,
      ),
      outer_sgd(learning_rate, momentum),
  ))


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
  :func:`entropix.entropy_sgd`). The ``updates`` passed in are ignored: pass zeros (see
  :func:`entropix.gaussian_smoothing`).

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
  return _compose.guarded(optax.chain(
      gaussian_smoothing(
          sigma, samples=samples, key=key, axis_name=axis_name, sampler=sampler,
          unroll=unroll, grad_transform=grad_transform,
      ),
      optax.add_decayed_weights(weight_decay),
      outer_sgd(learning_rate, momentum),
  ))
