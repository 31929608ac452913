"""Tests of entropix.elastic, elastic_sgd and parle: replicas coupled over a mapped axis."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import entropix

N = 4  # replicas
TARGETS = jnp.arange(N, dtype=jnp.float32)[:, None] * 2.0 + jnp.linspace(-1, 1, 6)  # (N, 6)


def grad_fn_of(targets):
  # Replica a, minibatch i: f(x) = |x - t_{a,i}|^2 / 2 for x of shape (2,).
  return lambda p, i: {"w": p["w"] - targets[i]}


def run(opt, x0, updates=20, targets=TARGETS, mapper="vmap"):
  """Every replica's params after ``updates`` updates, mapped over axis "r"."""

  def replica(x, t):
    grad_fn = grad_fn_of(t)

    def step(carry, _):
      x, state = carry
      u, state = opt.update(grad_fn(x, 0), state, x, grad_fn=grad_fn)
      return (optax.apply_updates(x, u), state), None

    (x, _), _ = jax.lax.scan(step, (x, opt.init(x)), None, length=updates)
    return x

  if mapper == "vmap":
    return jax.jit(jax.vmap(replica, axis_name="r"))(x0, targets)
  return jax.pmap(replica, axis_name="r")(x0, targets)


def x0(spread=1.0):
  return {"w": jnp.stack([jnp.full(2, spread * a) for a in range(N)]).astype(jnp.float32)}


@pytest.mark.parametrize("center", ["params", "targets"])
def test_elastic_adds_rho_times_the_distance_to_the_centre(center):
  rho = 0.3
  params = jax.random.normal(jax.random.PRNGKey(0), (N, 3))
  updates = jax.random.normal(jax.random.PRNGKey(1), (N, 3))
  tx = entropix.elastic(rho, axis_name="r", center=center)
  got, _ = jax.vmap(tx.update, axis_name="r")(updates, jax.vmap(tx.init)(params), params)
  own = params if center == "params" else params - updates
  want = updates + rho * (params - own.mean(axis=0))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  zero = entropix.elastic(0.0, axis_name="r", center=center)
  same, _ = jax.vmap(zero.update, axis_name="r")(updates, jax.vmap(zero.init)(params), params)
  np.testing.assert_array_equal(same, updates)  # rho = 0 changes nothing


def test_rho_follows_its_schedule():
  tx = entropix.elastic(entropix.scoping(1.0, 1.0, end_value=3.0), axis_name="r")
  params, updates = jnp.array([0.0, 2.0]), jnp.zeros(2)
  state = jax.vmap(tx.init)(params)
  seen = []
  for _ in range(4):
    u, state = jax.vmap(tx.update, axis_name="r")(updates, state, params)
    seen.append(float(u[1]))  # rho * (2 - 1)
  assert seen == [1.0, 2.0, 3.0, 3.0]  # 1, 2, 4 capped at 3


def test_parle_with_one_replica_and_no_coupling_is_entropy_sgd():
  gamma = entropix.scoping(0.5, 0.01)
  parle = entropix.parle(0.3, gamma=gamma, rho=0.0, axis_name="r", inner_steps=5)
  esgd = entropix.entropy_sgd(0.3, gamma=gamma, inner_steps=5, noise=0.0, alpha=0.0,
                              inner_momentum=0.9, reset_inner_momentum=False)
  start = {"w": jnp.array([[3.0, -1.0]])}
  for updates in (1, 7):
    a = run(parle, start, updates, TARGETS[:1])
    b = run(esgd, start, updates, TARGETS[:1])
    np.testing.assert_allclose(a["w"], b["w"], rtol=1e-6)


def test_elastic_sgd_is_parle_with_no_inner_loop():
  a = run(entropix.parle(0.1, gamma=1.0, rho=0.5, axis_name="r", inner_steps=0), x0(), 10)
  b = run(entropix.elastic_sgd(0.1, rho=0.5, axis_name="r"), x0(), 10)
  np.testing.assert_array_equal(a["w"], b["w"])


def spread(params):
  w = params["w"]
  return float(jnp.sqrt(jnp.mean((w - w.mean(axis=0)) ** 2)))


@pytest.mark.parametrize("make", [
    lambda rho: entropix.parle(0.2, gamma=1.0, rho=rho, axis_name="r", inner_steps=3),
    lambda rho: entropix.elastic_sgd(0.05, rho=rho, axis_name="r"),
])
def test_coupling_shrinks_the_replicas_spread_and_none_keeps_it(make):
  start = {"w": TARGETS[:, :2] * 0 + TARGETS.mean(axis=1, keepdims=True)}  # at their minima
  before = spread(start)
  free = spread(run(make(0.0), start, 40))
  coupled = spread(run(make(3.0), start, 40))
  assert free > 0.9 * before
  assert coupled < 0.5 * before


def test_replicas_on_devices_match_the_vmapped_ones():
  opt = entropix.parle(0.2, gamma=1.0, rho=0.5, axis_name="r", inner_steps=3, noise=1e-2)
  a = run(opt, x0(), 5, mapper="pmap")
  b = run(opt, x0(), 5)
  np.testing.assert_allclose(a["w"], b["w"], rtol=1e-5, atol=1e-6)


def test_each_replica_draws_its_own_noise():
  opt = entropix.parle(0.2, gamma=1.0, rho=0.0, axis_name="r", inner_steps=3, noise=0.1)
  same_start = {"w": jnp.zeros((N, 2))}
  same_data = jnp.zeros_like(TARGETS)
  w = run(opt, same_start, 3, same_data)["w"]
  assert len({tuple(np.asarray(row).round(6)) for row in w}) == N


@pytest.mark.parametrize("build, message", [
    (lambda: entropix.elastic(-1.0, axis_name="r"), "rho must be >= 0"),
    (lambda: entropix.elastic(1.0, axis_name=None), "axis_name must name"),
    (lambda: entropix.elastic(1.0, axis_name="r", center="mean"), "center must be one of"),
    (lambda: entropix.parle(0.1, gamma=1.0, rho=1.0, axis_name="r", inner_steps=-1),
     "inner_steps must be an int >= 0"),
    (lambda: entropix.elastic_sgd(0.1, rho=1.0, axis_name="r", weight_decay=-1.0),
     "weight_decay must be >= 0"),
])
def test_bad_arguments_are_named(build, message):
  with pytest.raises((ValueError, TypeError), match=message):
    build()
