"""Local entropy: the gradient of the viscous Hamilton-Jacobi smoothing."""

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from entropix import _base
from entropix import _noise


class LocalEntropyState(NamedTuple):
  """State of :func:`local_entropy`.

  Attributes:
    count: number of updates done so far (the argument of a ``gamma`` schedule).
    rng_key: raw ``uint32[2]`` PRNG key, split on every update.
    inner_velocity: the inner Nesterov buffer, float32 and shaped like the
      params, kept across updates when ``reset_inner_momentum=False``;
      ``()`` otherwise.
  """

  count: jax.Array
  rng_key: jax.Array
  inner_velocity: Any = ()


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
      stays below 2: mind how far a scoping schedule lets gamma grow.
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
  _noise.check_sampler(sampler)
  unroll = _base.check_unroll(unroll)
  _base.check_key(key)
  if noise_axis is not None and not isinstance(noise_axis, str):
    raise ValueError(f"noise_axis must be an axis name (str) or None, got {noise_axis!r}")
  # Terms that are concretely zero are left out of the compiled loop.
  use_noise = _base.concrete(noise) != 0.0
  uniform = average == "uniform"
  use_average = uniform or _base.concrete(alpha) != 0.0
  keep_velocity = not reset_inner_momentum
  use_momentum = keep_velocity or _base.concrete(inner_momentum) != 0.0
  use_decay = _base.concrete(weight_decay) != 0.0

  def init_fn(params: optax.Params) -> LocalEntropyState:
    velocity = _base.float32_zeros(params) if keep_velocity else ()
    return LocalEntropyState(
        count=jnp.zeros([], jnp.int32), rng_key=_base.as_raw_key(key),
        inner_velocity=velocity,
    )

  def update_fn(
      updates: optax.Updates,
      state: LocalEntropyState,
      params: optax.Params | None = None,
      *,
      grad_fn: _base.GradFn | None = None,
      **extra_args: Any,
  ) -> tuple[optax.Updates, LocalEntropyState]:
    del extra_args
    _base.require_params(params, "local_entropy")
    grad_fn = _base.require_grad_fn(grad_fn, "local_entropy", params, steps)
    coupling = _base.at_count(gamma, state.count)
    next_key, step_key = jax.random.split(state.rng_key)
    if noise_axis is not None:  # independent noise along that axis (replicas)
      step_key = jax.random.fold_in(step_key, lax.axis_index(noise_axis))
    noise_scale = jnp.sqrt(2.0 * inner_lr) * noise
    x = _base.at_least_float32(params)

    def step(carry, grads, k):
      y, mu, velocity = carry
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
      return y, mu, velocity

    def to_params(tree):
      return _base.cast_like(tree, params)

    if keep_velocity:
      velocity = state.inner_velocity
    else:
      velocity = _base.float32_zeros(params) if use_momentum else None
    carry = (x, x if use_average else None, velocity)
    carry = step(carry, _base.pmean(updates, axis_name), 0)

    def body(carry, i):
      grads = _base.pmean(grad_fn(to_params(carry[0]), i), axis_name)
      return step(carry, grads, i), None

    if steps > 1:
      indices = jnp.arange(1, steps, dtype=jnp.int32)
      carry, _ = lax.scan(body, carry, indices, unroll=unroll)
    y, mu, velocity = carry
    if uniform:
      mu = jax.tree.map(lambda s: s / (steps + 1), mu)
    mean = mu if use_average else y
    new_updates = to_params(jax.tree.map(jnp.subtract, x, mean))
    return new_updates, LocalEntropyState(
        count=optax.safe_increment(state.count), rng_key=next_key,
        inner_velocity=velocity if keep_velocity else (),
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
