"""Elastic coupling of replicas across a mapped axis (paper Sec. 4.3; Parle)."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from entropix import _base
from entropix import _compose
from entropix import _leaves
from entropix._alias import ready
from entropix._local_entropy import local_entropy

Center = Literal["params", "targets"]
CENTERS = ("params", "targets")


class ElasticState(NamedTuple):
  """State of :func:`elastic`: the update count (for a schedule of ``rho``)."""

  count: jax.Array


def elastic(
    rho: optax.ScalarOrSchedule, *, axis_name: str, center: Center = "params"
) -> optax.GradientTransformation:
  r"""Pulls each replica towards the mean of the replicas.

  Replica :math:`a` of :math:`n` (one per index of the mapped axis
  ``axis_name``) adds the elastic force to its update:

  .. math::
    u_a \leftarrow u_a + \rho\,(x_a - c), \qquad
    c = \frac1n \sum_b x_b \ \ (\texttt{center="params"}) \quad\text{or}\quad
    c = \frac1n \sum_b (x_b - u_b) \ \ (\texttt{center="targets"}).

  With ``"params"`` and :math:`u_a = \nabla f(x_a)` this is Elastic-SGD, the
  gradient of the paper's Eq. 20 with :math:`\rho = 1/\gamma`; Sec. 4.3 shows
  that its replicas' average plays the part of local entropy's time average.
  With ``"targets"`` after :func:`entropix.local_entropy`, whose update is
  :math:`u_b = x_b - \langle y \rangle_b`, the centre is the mean of the
  replicas' :math:`\langle y\rangle_b`: Parle's coupling. ``rho = 0`` leaves
  the updates unchanged. The mean is one ``lax.pmean`` over ``axis_name``
  per update, so call ``update`` inside ``jax.pmap``, ``shard_map`` or
  ``vmap`` with that axis name.

  Example:
    >>> import jax, jax.numpy as jnp, optax, entropix
    >>> opt = optax.chain(entropix.elastic(1.0, axis_name="r"), optax.sgd(0.1))
    >>> xs = jnp.array([0.0, 4.0])                     # two replicas
    >>> state = jax.vmap(opt.init)(xs)
    >>> step = lambda g, s, x: opt.update(g, s, x)
    >>> updates, _ = jax.vmap(step, axis_name="r")(jnp.zeros(2), state, xs)
    >>> print(updates)                                 # -0.1 * (x_a - 2)
    [ 0.2 -0.2]

  Args:
    rho: coupling strength :math:`\rho \ge 0`, a float or a schedule (a
      ceiling as Parle's: ``entropix.scoping(rho0, rate, end_value=rho_max)``).
    axis_name: the mapped axis of the replicas.
    center: ``"params"`` (Elastic-SGD) or ``"targets"`` (Parle, after
      ``local_entropy``).

  Returns:
    An ``optax.GradientTransformation``; ``update`` needs ``params``.
  """
  _base.check("rho", rho, lambda v: v >= 0, ">= 0", schedule=True)
  if not isinstance(axis_name, str):
    raise ValueError(f"axis_name must name the replicas' mapped axis, got {axis_name!r}")
  if center not in CENTERS:
    raise ValueError(f"center must be one of {CENTERS}, got {center!r}")

  def init_fn(params: optax.Params) -> ElasticState:
    del params
    _compose.refuse_wrappers("elastic", init=True, collective=True, inner_loop=False)
    return ElasticState(count=jnp.zeros([], jnp.int32))

  def update_fn(
      updates: optax.Updates, state: ElasticState, params: optax.Params | None = None
  ) -> tuple[optax.Updates, ElasticState]:
    _compose.refuse_wrappers("elastic", collective=True, inner_loop=False)
    _base.require_params(params, "elastic")
    strength = _base.at_count(rho, state.count)
    x = _base.at_least_float32(params)
    u = _base.at_least_float32(updates)
    own = x if center == "params" else jax.tree.map(jnp.subtract, x, u)
    mean = lax.pmean(own, axis_name)
    new = jax.tree.map(lambda u_, x_, c: u_ + strength * (x_ - c), u, x, mean)
    return _base.cast_like(new, updates), ElasticState(count=optax.safe_increment(state.count))

  return _leaves.float_leaves_only(optax.GradientTransformation(init_fn, update_fn), "elastic")


def elastic_sgd(
    learning_rate: optax.ScalarOrSchedule,
    *,
    rho: optax.ScalarOrSchedule,
    axis_name: str,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
  r"""Elastic-SGD (Zhang et al., 2015; paper Sec. 4.3, Eq. 20-21).

  ``optax.chain(optax.add_decayed_weights(weight_decay), elastic(rho,
  axis_name=axis_name), outer_sgd(learning_rate, momentum))``:
  replica :math:`a` steps along :math:`\nabla f(x_a) + \lambda x_a +
  \rho\,(x_a - \bar x)`, each on its own minibatches (do not average the
  gradients over ``axis_name``). It is :func:`parle` with no inner loop. A
  replica whose step is not finite skips it and counts it, as
  :func:`entropix.entropy_sgd` does; the check comes after the replicas'
  mean, so no collective sits inside a branch.

  Example:
    >>> import jax, jax.numpy as jnp, entropix
    >>> opt = entropix.elastic_sgd(0.1, rho=1.0, axis_name="r")
    >>> xs = jnp.array([1.0, 3.0])
    >>> state = jax.vmap(opt.init)(xs)
    >>> grads = xs - jnp.array([0.0, 2.0])    # replica a minimises (x - t_a)^2 / 2
    >>> updates, _ = jax.vmap(opt.update, axis_name="r")(grads, state, xs)
    >>> print(updates)        # -0.1 * 1.9 * (grad + (x_a - 2)): Nesterov's first step
    [-0.   -0.38]

  Args:
    learning_rate: the outer learning rate, a float or schedule.
    rho: the elastic coupling, a float or schedule.
    axis_name: the mapped axis of the replicas.
    momentum: Nesterov momentum of the outer step.
    weight_decay: L2 coefficient.

  Returns:
    An ``optax.GradientTransformation``.
  """
  _base.check("weight_decay", weight_decay, lambda v: v >= 0, ">= 0")
  return ready(optax.add_decayed_weights(weight_decay),
               elastic(rho, axis_name=axis_name, center="params"),
               learning_rate=learning_rate, momentum=momentum, name="elastic_sgd")


def parle(
    learning_rate: optax.ScalarOrSchedule,
    *,
    gamma: optax.ScalarOrSchedule,
    rho: optax.ScalarOrSchedule,
    axis_name: str,
    inner_steps: int = 25,
    inner_lr: float = 0.1,
    noise: float = 0.0,
    alpha: float = 0.0,
    inner_momentum: float = 0.9,
    reset_inner_momentum: bool = False,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    data_axis_name: str | None = None,
    key: Any = 0,
    unroll: int | bool = False,
    grad_transform: optax.GradientTransformation | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Parle: Entropy-SGD on every replica, coupled elastically (Chaudhari et al., 2017).

  Replica :math:`a` runs the local-entropy loop of :func:`local_entropy` from
  its own :math:`x_a`, on its own minibatches and noise, to
  :math:`\langle y\rangle_a`, then steps along

  .. math::
    d_a = (x_a - \langle y \rangle_a) + \rho\,\Big(x_a - \frac1n \sum_b
      \langle y \rangle_b\Big)

  with Nesterov momentum: ``optax.chain(local_entropy(gamma, ...),
  elastic(rho, center="targets"), outer_sgd(learning_rate, momentum))``,
  whose last step skips a non-finite direction (see
  :func:`entropix.entropy_sgd`; the replicas' mean comes first, so they
  all skip it together). The defaults are the authors' Parle code's
  (``DistributedESGD``): L = 25, inner lr 0.1, no noise, the last iterate
  (``alpha = 0``), the inner loop with Nesterov momentum 0.9 whose buffer is
  kept from one update to the next; their schedules
  :math:`\gamma = \min(\gamma_0 (1+\dot g)^t, \gamma_{max})` and
  :math:`\rho = \min(\rho_0 (1 + \dot g)^t, \rho_{max})` are
  ``entropix.scoping(0.01, gdot, end_value=1.0)`` and
  ``entropix.scoping(1.0, gdot, end_value=10.0)``, with ``gdot = 0.5 /
  (minibatches per epoch)``. One replica with ``rho = 0`` is Entropy-SGD;
  ``inner_steps=0`` is :func:`elastic_sgd` (the gradient at :math:`x_a` in
  place of :math:`x_a - \langle y\rangle_a`, and :math:`\bar x` as the centre).

  Gradients are not averaged over the replicas (``axis_name``); give
  ``data_axis_name`` when each replica spans several devices, to average
  them over that axis. Each replica's noise depends on its index along
  ``axis_name``.

  Example:
    >>> import jax, jax.numpy as jnp, entropix
    >>> targets = jnp.array([[0.0, 1.0, 2.0], [4.0, 5.0, 6.0]])  # 2 replicas x 3 minibatches
    >>> opt = entropix.parle(0.5, gamma=1.0, rho=0.5, axis_name="r", inner_steps=3)
    >>> def replica(x, t):                     # f_i(x) = (x - t_i)^2 / 2 on replica a
    ...   grad_fn = lambda p, i: p - t[i]
    ...   def step(carry, _):
    ...     x, state = carry
    ...     updates, state = opt.update(grad_fn(x, 0), state, x, grad_fn=grad_fn)
    ...     return (x + updates, state), None
    ...   (x, _), _ = jax.lax.scan(step, (x, opt.init(x)), length=100)
    ...   return x
    >>> xs = jax.jit(jax.vmap(replica, axis_name="r"))(jnp.array([1.0, 5.0]), targets)
    >>> print([round(float(v), 2) for v in xs])  # 2.53 apart; uncoupled (rho=0): 4 apart
    [1.97, 4.5]

  Args:
    learning_rate: the outer learning rate, a float or schedule.
    gamma: coupling of each replica's inner loop, a float or schedule.
    rho: elastic coupling between the replicas, a float or schedule.
    axis_name: the mapped axis of the replicas.
    inner_steps: gradient evaluations per update (L); 0 is Elastic-SGD.
    inner_lr: inner step size.
    noise: Langevin noise scale of the inner loop.
    alpha: averaging factor of the inner iterates (0: the last iterate).
    inner_momentum: Nesterov momentum of the inner loop.
    reset_inner_momentum: start the inner buffer at zero every update
      (``False``: kept across updates, as the authors' code).
    momentum: Nesterov momentum of the outer step.
    weight_decay: L2 coefficient (inside the inner loop; on the gradient
      when ``inner_steps=0``).
    data_axis_name: the axis over which a replica's devices average gradients.
    key: seed or PRNG key of the noise.
    unroll: inner loop iterations per compiled body.
    grad_transform: an optax transform applied to every gradient the update
      takes (see :func:`entropix.local_entropy`), e.g.
      ``optax.clip_by_global_norm(1.0)``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (``update`` takes ``grad_fn``).
  """
  steps = _base.check_int("inner_steps", inner_steps, 0)  # 0: Elastic-SGD
  if steps == 0:
    opt = elastic_sgd(learning_rate, rho=rho, axis_name=axis_name, momentum=momentum,
                      weight_decay=weight_decay)
    if grad_transform is not None:  # on the one gradient of an update
      opt = _leaves.float_leaves_only(
          optax.chain(_base.check_grad_transform(grad_transform), opt), "parle")
    return optax.with_extra_args_support(opt)
  return ready(
      local_entropy(gamma, inner_steps=steps, inner_lr=inner_lr, noise=noise,
                    alpha=alpha, inner_momentum=inner_momentum,
                    reset_inner_momentum=reset_inner_momentum, weight_decay=weight_decay, key=key,
                    axis_name=data_axis_name, noise_axis=axis_name, unroll=unroll,
                    grad_transform=grad_transform),
      elastic(rho, axis_name=axis_name, center="targets"),
      learning_rate=learning_rate, momentum=momentum, name="parle",
  )
