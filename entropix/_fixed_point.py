"""The Hopf-Lax gradient as a damped fixed point (paper Remark 21): Table 1's HJ."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from entropix import _base
from entropix import _leaves
from entropix import _compose


class HopfLaxFixedPointState(NamedTuple):
  """State of :func:`hopf_lax_fixed_point`.

  Attributes:
    count: number of updates done so far (the argument of a ``gamma`` schedule).
    grad_state: the state of ``grad_transform`` (``()`` without one).
  """

  count: jax.Array
  grad_state: Any = ()


def hopf_lax_fixed_point(
    gamma: optax.ScalarOrSchedule,
    *,
    inner_steps: int = 5,
    damping: float = 0.75,
    weight_decay: float = 0.0,
    axis_name: str | None = None,
    unroll: int | bool = False,
    grad_transform: optax.GradientTransformation | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Replaces the gradient at ``x`` by the gradient of the Hopf-Lax solution.

  The non-viscous Hamilton-Jacobi equation :math:`u_t = -\tfrac12 |\nabla
  u|^2`, :math:`u(\cdot, 0) = f`, has at time :math:`t = 1/\gamma` the
  Hopf-Lax solution :math:`u(x) = \min_y f(y) + \tfrac\gamma2 |x - y|^2`.
  Where the minimiser :math:`y^* = x - p/\gamma` is unique, its gradient
  :math:`p = \nabla u(x) = \gamma (x - y^*)` solves the fixed-point equation
  (paper Lemma 1, Eq. 28 and Remark 21)

  .. math::
    p = \nabla f(x - p / \gamma) ,

  unique while :math:`\nabla^2 f > -\gamma` (paper Lemma 3). This
  transform iterates it with damping :math:`\delta`, as the authors' code
  (its ``FP`` class, the one that produced Table 1's HJ column) does:
  :math:`p_0 = \nabla f_0(x) + \lambda x`, then for :math:`k = 1, \dots, L`

  .. math::
    w_k = x - p_{k-1} / \gamma , \qquad
    p_k = \delta\, p_{k-1} + (1 - \delta)\big(\nabla f_k(w_k) + \lambda w_k\big),

  with :math:`\delta` = ``damping``, :math:`\lambda` = ``weight_decay``,
  :math:`L` = ``inner_steps`` and :math:`\nabla f_k` the gradient on the k-th
  minibatch. It emits :math:`p_L`, a gradient (not divided by
  :math:`\gamma`, unlike :func:`entropix.local_entropy`'s :math:`x - \mu`):
  the outer learning rate is an SGD learning rate. As :math:`\gamma \to
  \infty`, :math:`p_L \to \nabla f(x)`.

  This is the code's form of the paper's Remark 21 (Eq. 34, whose
  :math:`\gamma` is the time :math:`1/\gamma` here): Eq. 34's :math:`y^k` is
  :math:`p/\gamma` and its step :math:`\eta_y = (1 - \delta)/\gamma`; the
  code then steps x along p rather than along a last gradient at
  :math:`x - y`. Sec. 7.2's HJ, the other form, is :func:`entropix.hj`.

  Gradient protocol: ``updates`` is the gradient at ``x`` on minibatch 0 and
  ``grad_fn(params, i)`` returns the gradient on minibatch ``i`` for
  ``i = 1 .. inner_steps``. One update costs exactly ``inner_steps + 1``
  gradient evaluations, the caller's included. The loop is a ``lax.scan``.
  A non-finite :math:`p_L` goes out as it is (for ``optax.apply_if_finite``
  after this transform to refuse), and ``grad_state`` restarts as at ``init``.

  Example:
    >>> import jax, jax.numpy as jnp, optax, entropix
    >>> grad_fn = lambda p, i: jax.grad(lambda q: jnp.sum(q ** 2))(p)
    >>> opt = entropix.hopf_lax_fixed_point(1.0, inner_steps=50)
    >>> params = jnp.ones(2)
    >>> state = opt.init(params)
    >>> updates, state = opt.update(grad_fn(params, 0), state, params,
    ...                             grad_fn=grad_fn)
    >>> print(" ".join(f"{v:.4f}" for v in updates))  # p = 2 (x - p), p = 2/3
    0.6667 0.6667

  Args:
    gamma: coupling strength :math:`\gamma > 0` (PDE time :math:`1/\gamma`),
      a float or a schedule of the update count (:func:`entropix.scoping`).
      Near a fixed point the iteration converges where every curvature
      :math:`c` of f has :math:`-\gamma < c < \gamma (1+\delta)/(1-\delta)`
      (:math:`7\gamma` for :math:`\delta = 0.75`).
    inner_steps: :math:`L \ge 1` damped iterations, one gradient each.
    damping: :math:`\delta` in [0, 1): the weight kept on the previous p
      (the code's 0.75).
    weight_decay: :math:`\lambda \ge 0`, added to every gradient at the
      point it is taken, as the code does.
    axis_name: if set, every gradient (``updates`` and ``grad_fn``'s) is
      ``lax.pmean``-ed over this axis.
    unroll: loop iterations per compiled loop body, passed to ``lax.scan``
      (see :func:`entropix.local_entropy`).
    grad_transform: an optax transform applied to each of the L + 1
      minibatch gradients (after the ``axis_name`` mean, before weight decay
      joins it), with the point as its params, e.g.
      ``optax.clip_by_global_norm(1.0)``; its state is kept in ``grad_state``.
      A transform chained before this one sees only the gradient at x.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` takes the
    keyword argument ``grad_fn``. With ``optax.inject_hyperparams`` pass
    ``static_args=("inner_steps",)``.
  """
  _base.check("gamma", gamma, lambda v: v > 0, "> 0 (the coupling strength)", schedule=True)
  steps = _base.check_int("inner_steps", inner_steps, 1)
  _base.check("damping", damping, lambda v: 0 <= v < 1, "in [0, 1)")
  _base.check("weight_decay", weight_decay, lambda v: v >= 0, ">= 0")
  unroll = _base.check_unroll(unroll)
  per_gradient = _base.check_grad_transform(grad_transform)
  use_decay = _base.concrete(weight_decay) != 0.0

  def init_fn(params: optax.Params) -> HopfLaxFixedPointState:
    _compose.refuse_wrappers("hopf_lax_fixed_point", init=True, collective=axis_name is not None)
    return HopfLaxFixedPointState(
        count=jnp.zeros([], jnp.int32),
        grad_state=per_gradient.init(_base.at_least_float32(params)) if per_gradient else ())

  def update_fn(
      updates: optax.Updates,
      state: HopfLaxFixedPointState,
      params: optax.Params | None = None,
      *,
      grad_fn: _base.GradFn | None = None,
      **extra_args: Any,
  ) -> tuple[optax.Updates, HopfLaxFixedPointState]:
    del extra_args
    _compose.refuse_wrappers("hopf_lax_fixed_point", grad_fn, collective=axis_name is not None)
    _base.require_params(params, "hopf_lax_fixed_point")
    _compose.require_whole_params(params, grad_fn, "hopf_lax_fixed_point")
    grad_fn = _base.require_grad_fn(grad_fn, "hopf_lax_fixed_point", steps + 1)
    coupling = _base.at_count(gamma, state.count)
    x = _base.at_least_float32(params)

    def gradient(grads, point, grad_state):
      grads = _base.at_least_float32(grads)
      if per_gradient:
        grads, grad_state = per_gradient.update(grads, grad_state, point)
      if use_decay:
        grads = jax.tree.map(lambda g, w: g + weight_decay * w, grads, point)
      return grads, grad_state

    def body(carry, i):
      p, grad_state = carry
      w = jax.tree.map(lambda x_, p_: x_ - p_ / coupling, x, p)
      g, grad_state = gradient(
          _base.pmean(grad_fn(_base.cast_like(w, params), i), axis_name), w, grad_state)
      p = jax.tree.map(lambda p_, g_: damping * p_ + (1 - damping) * g_, p, g)
      return (p, grad_state), None

    carry = gradient(_base.pmean(updates, axis_name), x, state.grad_state)
    (p, grad_state), _ = lax.scan(body, carry, jnp.arange(1, steps + 1, dtype=jnp.int32),
                                  unroll=unroll)
    return _base.cast_like(p, params), HopfLaxFixedPointState(
        count=optax.safe_increment(state.count),
        grad_state=_base.fresh_if_not_finite(grad_state, lambda: per_gradient.init(x)))

  return _leaves.float_leaves_only(
      optax.GradientTransformationExtraArgs(init_fn, update_fn), "hopf_lax_fixed_point")
