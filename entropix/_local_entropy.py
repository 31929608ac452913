"""Local entropy: the gradient of the viscous Hamilton-Jacobi smoothing."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from entropix import _base
from entropix import _leaves
from entropix import _compose
from entropix import _noise


class LocalEntropyState(NamedTuple):
  """State of :func:`local_entropy`.

  Attributes:
    count: number of updates done so far (the argument of a ``gamma`` schedule).
    rng_key: raw ``uint32[2]`` PRNG key, split on every update.
    inner_velocity: the inner Nesterov buffer, float32 and shaped like the
      params, kept across updates when ``reset_inner_momentum=False``;
      ``()`` otherwise.
    grad_state: the state of ``grad_transform`` (``()`` without one).
  """

  count: jax.Array
  rng_key: jax.Array
  inner_velocity: Any = ()
  grad_state: Any = ()


Average = Literal["exponential", "uniform"]
AVERAGES: tuple[str, ...] = ("exponential", "uniform")


def local_entropy(
    gamma: optax.ScalarOrSchedule,
    *,
    inner_steps: int = 20,
    inner_lr: float = 0.1,
    noise: float = 1e-4,
    alpha: float = 0.75,
    inner_momentum: float = 0.0,
    reset_inner_momentum: bool = True,
    average: Average = "exponential",
    weight_decay: float = 0.0,
    key: int | jax.Array = 0,
    axis_name: str | None = None,
    sampler: _noise.Sampler = "binomial",
    unroll: int | bool = False,
    noise_axis: str | None = None,
    grad_transform: optax.GradientTransformation | None = None,
) -> optax.GradientTransformationExtraArgs:
  r"""Replaces the gradient at ``x`` by the gradient of the local entropy.

  The local entropy of a loss :math:`f` at coupling strength :math:`\gamma`
  and inverse temperature :math:`\beta = 1 / \text{noise}^2` is

  .. math::
    f_\gamma(x) = -\beta^{-1} \log \int \exp\big(-\beta f(y)
      - \tfrac{\beta\gamma}{2} |x - y|^2\big)\, dy ,

  the solution at time :math:`t = 1/\gamma` of the viscous Hamilton-Jacobi
  equation :math:`u_t = -\tfrac12 |\nabla u|^2 + \tfrac{1}{2\beta} \Delta u`,
  :math:`u(\cdot, 0) = f` (paper Lemma 1). Its gradient is
  :math:`\nabla f_\gamma(x) = \gamma\,(x - \langle y \rangle)`, the mean taken
  under :math:`\rho(y) \propto \exp(-\beta f(y) - \tfrac{\beta\gamma}{2}
  |x-y|^2)`. An inner Langevin chain estimates it, started at
  :math:`y_0 = \mu_0 = x`, for :math:`k = 0, \dots, L-1`:

  .. math::
    y_{k+1} &= y_k - \eta' \big(\nabla f_k(y_k) + \lambda y_k
      + \gamma (y_k - x)\big) + \sqrt{2\eta'}\,\varepsilon\,\xi_k , \\
    \mu_{k+1} &= \alpha \mu_k + (1 - \alpha) y_{k+1} ,

  with :math:`\eta'` = ``inner_lr``, :math:`\varepsilon` = ``noise``,
  :math:`\lambda` = ``weight_decay``, :math:`L` = ``inner_steps`` and
  :math:`\nabla f_k` the gradient on the k-th minibatch. The transform emits
  :math:`x - \mu_L`; the outer learning rate absorbs :math:`\gamma`. This
  exponential average (``average="exponential"``) is the paper's (Sec. 7.1)
  and the authors' Entropy-SGD; ``average="uniform"`` emits
  :math:`x - \mu` with :math:`\mu = (x + y_1 + \dots + y_L) / (L + 1)`, the
  authors' HEAT class, which produced Table 1's HEAT column. With
  ``noise=0`` and ``alpha=0`` the chain is gradient descent on
  :math:`f(y) + \tfrac\gamma2 |x-y|^2` and :math:`\gamma(x - y_L)` tends to
  the gradient of the Hopf-Lax solution (a proximal step, paper Lemma 2-3).

  Gradient protocol: ``updates`` is the gradient at ``x`` on minibatch 0 (it is
  :math:`\nabla f_0(y_0)`) and ``grad_fn(params, i)`` returns the gradient on
  minibatch ``i`` for ``i = 1 .. inner_steps - 1`` (``i`` is a traced int32
  scalar). One update costs exactly ``inner_steps`` gradient evaluations, the
  caller's included. The loop is a ``lax.scan``: compile time does not grow
  with ``inner_steps``. ``params`` in ``grad_fn(params, i)`` is the point, in
  the form the optimizer holds the parameters: the ``params`` given to
  ``update`` under ``optax.chain`` and ``optax.inject_hyperparams``, the
  ``nnx.State`` of the parameters (plain arrays, not the model) under
  ``nnx.Optimizer``. It must return the gradient alone, shaped like
  ``params`` (a ``TypeError`` names what differs);
  :func:`entropix.minibatch_grad_fn` builds it from a loss and a stack of
  minibatches.

  The coupling alone makes the chain diverge once :math:`\eta' (\gamma +
  \lambda)` reaches 2, or :math:`2(1 + m)/(1 + 2m)` with inner momentum
  :math:`m` (1.357 for 0.9); such values (gamma's first, for a schedule) are
  refused when the transform is built. A chain that diverges all the
  same emits its non-finite direction, so that ``optax.apply_if_finite``
  placed after this transform refuses it, and restarts ``inner_velocity``
  and ``grad_state`` as at ``init``: no NaN stays in them, nor the buffer
  that led the chain astray (``count`` and the key advance, as after any
  update). The ready optimizers
  (:func:`entropix.entropy_sgd` and the others) skip such an update
  themselves and count it.

  Example:
    >>> import jax, jax.numpy as jnp, optax, entropix
    >>> batches = jnp.linspace(-1.0, 1.0, 20).reshape(5, 4)  # 5 minibatches
    >>> loss = lambda p, b: jnp.mean((p["w"] - b) ** 2)
    >>> grad_fn = lambda p, i: jax.grad(loss)(p, batches[i])
    >>> opt = optax.chain(entropix.local_entropy(1.0, inner_steps=5),
    ...                   optax.sgd(0.5))
    >>> params = {"w": jnp.array(2.0)}
    >>> state = opt.init(params)
    >>> updates, state = opt.update(grad_fn(params, 0), state, params,
    ...                             grad_fn=grad_fn)
    >>> params = optax.apply_updates(params, updates)
    >>> print(f"{float(params['w']):.4f}", int(state[0].count))  # towards 0
    1.6442 1

  Args:
    gamma: coupling strength :math:`\gamma > 0`, a float or a schedule of the
      update count (see :func:`entropix.scoping`). The PDE time is 1/gamma.
      The chain is stable only while ``inner_lr * (gamma + curvature of f)``
      stays below 2: mind how far a scoping schedule lets gamma grow
      (``entropix.scoping(..., inner_lr=inner_lr)`` caps it).
    inner_steps: :math:`L \ge 1`, gradient evaluations per update.
    inner_lr: step size :math:`\eta' > 0` of the inner chain.
    noise: :math:`\varepsilon \ge 0`; the chain samples at temperature
      :math:`\varepsilon^2`. With a concrete 0 the noise path is not built.
    alpha: averaging factor in [0, 1) of ``average="exponential"``; 0 keeps
      the last iterate (HJ).
    inner_momentum: Nesterov momentum :math:`m` in [0, 1) on the inner drift
      :math:`d_k` (the bracket above): :math:`v \leftarrow m v + d_k`, then
      :math:`y_{k+1} = y_k - \eta' (d_k + m v)` plus the noise, which does not
      go through the buffer.
    reset_inner_momentum: ``True`` starts the buffer :math:`v` at zero every
      update, like the chain. ``False`` keeps it in the state from one update
      to the next, as the authors' code does; the state then holds a float32
      copy of the params (for any ``inner_momentum``, so that its structure
      does not depend on a hyper-parameter). A bool, static.
    average: ``"exponential"`` (the paper's :math:`\mu_k`, factor ``alpha``)
      or ``"uniform"`` (the mean of :math:`x` and the L iterates; ``alpha`` is
      then unused).
    weight_decay: :math:`\lambda \ge 0`, added to the inner gradient.
    key: int seed or PRNG key for the noise.
    axis_name: if set, every gradient (``updates`` and ``grad_fn``'s) is
      ``lax.pmean``-ed over this axis and the noise is identical on every
      device of it, so replicated parameters stay identical under pmap.
    sampler: law of the noise increments, ``"binomial"`` (a standardised
      Binomial(32, 1/2): same weak order as a Gaussian, fastest), ``"normal"``
      (Gaussian from the same hash) or ``"threefry"`` (``jax.random.normal``,
      slowest); see ``entropix/_noise.py``.
    unroll: loop iterations per compiled loop body, passed to ``lax.scan``
      (``True``: the whole loop). ``False`` (1; a bool, so that
      ``optax.inject_hyperparams`` leaves it static) keeps compile time
      independent of the loop length; unrolling helps where XLA runs a loop body slower than
      straight-line code, e.g. convolutions on CPU (jax-ml/jax#12868).
    noise_axis: if set, the index along this mapped axis is folded into the
      noise key, so that each member of it (Parle's replicas) draws its own
      noise; ``None``: the same noise wherever the key is the same.
    grad_transform: an optax transform applied to each of the L minibatch
      gradients :math:`\nabla f_k(y_k)` (after the ``axis_name`` mean, before
      coupling and decay join it), with :math:`y_k` as its params, e.g.
      ``optax.clip_by_global_norm(1.0)``. Its state is carried through the
      loop and kept in ``grad_state``. A transform chained *before* this one
      sees only ``updates``, the gradient at x, and none of the other L - 1.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` takes the
    keyword argument ``grad_fn``. With ``optax.inject_hyperparams`` pass
    ``static_args=("inner_steps",)``.

  References:
    Chaudhari et al., `Deep Relaxation: partial differential equations for
    optimizing deep neural networks <https://arxiv.org/abs/1704.04932>`_, 2018.
  """
  _base.check("gamma", gamma, lambda v: v > 0, "> 0 (the coupling strength)", schedule=True)
  steps = _base.check_int("inner_steps", inner_steps, 1)
  _base.check("inner_lr", inner_lr, lambda v: v > 0, "> 0")
  _base.check("noise", noise, lambda v: v >= 0, ">= 0")
  _base.check("alpha", alpha, lambda v: 0 <= v < 1, "in [0, 1)")
  _base.check("inner_momentum", inner_momentum, lambda v: 0 <= v < 1, "in [0, 1)")
  if not isinstance(reset_inner_momentum, bool):
    raise ValueError(
        f"reset_inner_momentum must be a bool (static; with optax.inject_hyperparams pass "
        f"static_args=('reset_inner_momentum',)), got {reset_inner_momentum!r}")
  if average not in AVERAGES:
    raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
  _base.check("weight_decay", weight_decay, lambda v: v >= 0, ">= 0")
  check_stable(gamma, inner_lr, inner_momentum, weight_decay)
  _noise.check_sampler(sampler)
  unroll = _base.check_unroll(unroll)
  _base.check_key(key)
  if noise_axis is not None and not isinstance(noise_axis, str):
    raise ValueError(f"noise_axis must be an axis name (str) or None, got {noise_axis!r}")
  per_gradient = _base.check_grad_transform(grad_transform)
  # Terms that are concretely zero are left out of the compiled loop.
  use_noise = _base.concrete(noise) != 0.0
  uniform = average == "uniform"
  use_average = uniform or _base.concrete(alpha) != 0.0
  keep_velocity = not reset_inner_momentum
  use_momentum = keep_velocity or _base.concrete(inner_momentum) != 0.0
  use_decay = _base.concrete(weight_decay) != 0.0

  def fresh_buffers(params):
    """The inner buffer and ``grad_state`` of a transform that has not run yet."""
    velocity = _base.float32_zeros(params) if keep_velocity else ()
    return velocity, per_gradient.init(_base.at_least_float32(params)) if per_gradient else ()

  def init_fn(params: optax.Params) -> LocalEntropyState:
    _compose.refuse_wrappers("local_entropy", init=True, collective=axis_name is not None)
    velocity, grad_state = fresh_buffers(params)
    return LocalEntropyState(count=jnp.zeros([], jnp.int32), rng_key=_base.as_raw_key(key),
                             inner_velocity=velocity, grad_state=grad_state)

  def update_fn(
      updates: optax.Updates,
      state: LocalEntropyState,
      params: optax.Params | None = None,
      *,
      grad_fn: _base.GradFn | None = None,
      **extra_args: Any,
  ) -> tuple[optax.Updates, LocalEntropyState]:
    del extra_args
    _compose.refuse_wrappers("local_entropy", grad_fn, collective=axis_name is not None)
    _base.require_params(params, "local_entropy")
    _compose.require_whole_params(params, grad_fn, "local_entropy")
    grad_fn = _base.require_grad_fn(grad_fn, "local_entropy", steps)
    coupling = _base.at_count(gamma, state.count)
    next_key, step_key = jax.random.split(state.rng_key)
    if noise_axis is not None:  # independent noise along that axis (replicas)
      step_key = jax.random.fold_in(step_key, lax.axis_index(noise_axis))
    noise_scale = jnp.sqrt(2.0 * inner_lr) * noise
    x = _base.at_least_float32(params)

    def step(carry, grads, k):
      y, mu, velocity, grad_state = carry
      if per_gradient:  # on the gradient alone, before coupling and decay join it
        grads, grad_state = per_gradient.update(_base.at_least_float32(grads), grad_state, y)
      drift = jax.tree.map(lambda g, y_, x_: g + coupling * (y_ - x_), grads, y, x)
      if use_decay:
        drift = jax.tree.map(lambda d, y_: d + weight_decay * y_, drift, y)
      if use_momentum:  # Nesterov, as torch.optim.SGD(nesterov=True)
        velocity = jax.tree.map(lambda v, d: inner_momentum * v + d, velocity, drift)
        drift = jax.tree.map(lambda d, v: d + inner_momentum * v, drift, velocity)
      y = jax.tree.map(lambda y_, d: y_ - inner_lr * d, y, drift)
      if use_noise:
        xi = _noise.tree_noise(jax.random.fold_in(step_key, k), y, sampler)
        y = jax.tree.map(lambda y_, z: y_ + noise_scale * z, y, xi)
      if uniform:  # mu carries the sum x + y_1 + ... + y_k
        mu = jax.tree.map(jnp.add, mu, y)
      elif use_average:
        mu = jax.tree.map(lambda m, y_: alpha * m + (1 - alpha) * y_, mu, y)
      return y, mu, velocity, grad_state

    def to_params(tree):
      return _base.cast_like(tree, params)

    if keep_velocity:
      velocity = state.inner_velocity
    else:
      velocity = _base.float32_zeros(params) if use_momentum else None
    carry = (x, x if use_average else None, velocity, state.grad_state)
    carry = step(carry, _base.pmean(updates, axis_name), 0)

    def body(carry, i):
      grads = _base.pmean(grad_fn(to_params(carry[0]), i), axis_name)
      return step(carry, grads, i), None

    if steps > 1:
      indices = jnp.arange(1, steps, dtype=jnp.int32)
      carry, _ = lax.scan(body, carry, indices, unroll=unroll)
    y, mu, velocity, grad_state = carry
    if uniform:
      mu = jax.tree.map(lambda s: s / (steps + 1), mu)
    mean = mu if use_average else y
    # A diverged chain's direction goes out as it is, for a guard downstream
    # to refuse; its buffers start afresh. A NaN or Inf anywhere in the
    # chain reaches y_L and so the direction, which the guard checks too.
    direction = jax.tree.map(jnp.subtract, x, mean)
    buffers = _base.fresh_if_not_finite(
        (velocity if keep_velocity else (), grad_state),
        lambda: fresh_buffers(params),
        direction, grad_state)
    new_updates = to_params(direction)
    return new_updates, LocalEntropyState(
        count=optax.safe_increment(state.count), rng_key=next_key,
        inner_velocity=buffers[0], grad_state=buffers[1],
    )

  return _leaves.float_leaves_only(
      optax.GradientTransformationExtraArgs(init_fn, update_fn), "local_entropy")


def stability_limit(inner_momentum: float) -> float:
  r"""The largest :math:`\eta' (\gamma + \lambda)` at which the inner chain's coupling is stable.

  On a flat loss the drift is :math:`(\gamma + \lambda)(y - c)`, a quadratic
  of curvature :math:`h = \gamma + \lambda`. Plain steps contract while
  :math:`a = \eta' h < 2`. With Nesterov momentum :math:`m` (as
  ``torch.optim.SGD``: :math:`v' = m v + h e`, :math:`e' = e - \eta'(h e + m
  v')`) the error and the scaled buffer :math:`w = \eta' v` evolve by the
  matrix :math:`\begin{pmatrix} 1 - a(1+m) & -m^2 \\ a & m \end{pmatrix}`,
  whose trace is :math:`1 + m - a(1+m)` and determinant :math:`m(1 - a)`;
  Jury's conditions hold iff :math:`0 < a < 2(1 + m)/(1 + 2m)`: 2 for
  :math:`m = 0`, 1.357 for :math:`m = 0.9`. The loss's own curvature adds
  to :math:`h`, so a chain near this limit diverges on a sharp loss.
  """
  return 2.0 * (1.0 + inner_momentum) / (1.0 + 2.0 * inner_momentum)


def check_stable(gamma: optax.ScalarOrSchedule, inner_lr: Any, inner_momentum: Any,
                 weight_decay: Any) -> None:
  """Raises ValueError when the coupling alone makes the inner chain diverge."""
  values = [_base.first_value(gamma), _base.concrete(inner_lr),
            _base.concrete(inner_momentum), _base.concrete(weight_decay)]
  if None in values:  # traced (optax.inject_hyperparams): checked when init ran
    return
  g, lr, m, wd = values
  limit, product = stability_limit(m), lr * (g + wd)
  if product < limit:
    return
  which = ", gamma's first value," if callable(gamma) else ""
  rule = (f"2 (1 + m) / (1 + 2 m) with inner Nesterov momentum m = {m:g}" if m
          else "2 for plain steps")
  raise ValueError(
      f"inner_lr * (gamma + weight_decay) = {lr:g} * ({g:g}{which} + {wd:g}) = {product:.4g} "
      f"is at or beyond {limit:.4g}, the inner chain's stability limit "
      f"({rule}): the coupling alone makes y diverge from x. Lower gamma or inner_lr (gamma < "
      f"{limit / lr - wd:.4g} at inner_lr {lr:g}); to let gamma grow, cap it: "
      f"entropix.scoping(gamma0, gamma1, inner_lr={lr:g}) stops at 1 / inner_lr.")
