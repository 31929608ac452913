"""optax citizenship, checked for every entropix transform and optimizer.

As optax/contrib/_common_test.py does for its optimizers: extra arguments
through combinators, schedules, inject_hyperparams, jit without recompilation,
dtypes, arbitrary pytrees and data parallelism under pmap (Flax NNX:
test_flax_nnx.py).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import entropix

FACTORIES = {
    "local_entropy": lambda: optax.chain(
        entropix.local_entropy(1.0, inner_steps=3), optax.sgd(0.5)
    ),
    "gaussian_smoothing": lambda: optax.chain(
        entropix.gaussian_smoothing(0.01, samples=3), optax.sgd(0.1)
    ),
    "entropy_sgd": lambda: entropix.entropy_sgd(0.5, gamma=1.0, inner_steps=3),
    "hj": lambda: entropix.hj(0.5, gamma=1.0),
    "heat": lambda: entropix.heat(0.1, sigma=0.01, samples=3),
    "hopf_lax_fixed_point": lambda: optax.chain(
        entropix.hopf_lax_fixed_point(1.0, inner_steps=3), optax.sgd(0.1)
    ),
    "hj_fixed_point": lambda: entropix.hj_fixed_point(0.05, gamma=1.0),
    # The authors' HEAT class: a kept inner buffer and the uniform average.
    "entropy_sgd_uniform": lambda: entropix.entropy_sgd(
        0.5, gamma=1.0, inner_steps=3, inner_momentum=0.5, reset_inner_momentum=False,
        average="uniform"),
}
ALL = pytest.mark.parametrize("name", list(FACTORIES))

TARGET = {"w": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array(0.5)}


def quadratic_grad(params, i=0):
  del i
  return jax.tree.map(lambda p, t: 2 * (p - t), params, TARGET)


def zeros_params(dtype=jnp.float32):
  return jax.tree.map(lambda t: jnp.zeros_like(t, dtype), TARGET)


def make_step(opt):
  @jax.jit
  def step(params, state):
    updates, state = opt.update(quadratic_grad(params), state, params, grad_fn=quadratic_grad)
    return optax.apply_updates(params, updates), state

  return step


def run(opt, params, steps):
  step, state = make_step(opt), opt.init(params)
  for _ in range(steps):
    params, state = step(params, state)
  return params, step


@ALL
def test_converges_on_a_quadratic_without_recompiling(name):
  params, step = run(FACTORIES[name](), zeros_params(), 150)
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(TARGET)):
    np.testing.assert_allclose(got, want, atol=2e-2)
  assert step._cache_size() == 1


@ALL
def test_inside_named_chain_beside_other_transforms(name):
  opt = optax.named_chain(
      ("clip", optax.clip_by_global_norm(10.0)),
      ("entropix", FACTORIES[name]()),
      ("decay", optax.add_decayed_weights(0.0)),
  )
  params, _ = run(opt, zeros_params(), 150)
  np.testing.assert_allclose(params["w"], TARGET["w"], atol=2e-2)
  assert set(opt.init(zeros_params())) == {"clip", "entropix", "decay"}


def test_schedules_for_gamma_sigma_and_learning_rate():
  lr = optax.piecewise_constant_schedule(0.5, {50: 0.2})
  for opt in [
      entropix.entropy_sgd(lr, gamma=entropix.scoping(0.5, 1e-2), inner_steps=3),
      entropix.hj(lr, gamma=entropix.scoping(0.5, 1e-2)),
      entropix.heat(lr, sigma=optax.linear_schedule(0.1, 0.0, 100), samples=3),
  ]:
    params, _ = run(opt, zeros_params(), 120)
    np.testing.assert_allclose(params["w"], TARGET["w"], atol=2e-2)


@pytest.mark.parametrize(
    "factory, kwargs, static",
    [
        (entropix.local_entropy, {"gamma": 1.0, "inner_steps": 3}, ("inner_steps",)),
        (entropix.gaussian_smoothing, {"sigma": 0.1, "samples": 3}, ("samples",)),
        (entropix.entropy_sgd, {"learning_rate": 0.5, "gamma": 1.0, "inner_steps": 3}, ("inner_steps",)),
        (entropix.hj, {"learning_rate": 0.5, "gamma": 1.0}, ("inner_steps",)),
        (entropix.heat, {"learning_rate": 0.1, "sigma": 0.1, "samples": 3}, ("samples",)),
        (entropix.hopf_lax_fixed_point, {"gamma": 1.0, "inner_steps": 3}, ("inner_steps",)),
        (entropix.hj_fixed_point, {"learning_rate": 0.05, "gamma": 1.0}, ("inner_steps",)),
        (entropix.entropy_sgd,
         {"learning_rate": 0.5, "gamma": 1.0, "inner_steps": 3, "inner_momentum": 0.5,
          "reset_inner_momentum": False, "average": "uniform"},
         ("inner_steps", "reset_inner_momentum", "average")),
    ],
)
def test_inject_hyperparams(factory, kwargs, static):
  opt = optax.inject_hyperparams(factory, static_args=static)(**kwargs)
  params = zeros_params()
  step, state = make_step(opt), opt.init(params)
  first, _ = step(params, state)
  # A changed hyper-parameter takes effect without recompiling.
  name = {"local_entropy": "gamma", "gaussian_smoothing": "sigma",
          "hopf_lax_fixed_point": "gamma"}.get(
      factory.__name__, "learning_rate"
  )
  state.hyperparams[name] = state.hyperparams[name] * 3
  second, _ = step(params, state)
  assert not np.allclose(first["w"], second["w"])
  assert step._cache_size() == 1


def test_inject_hyperparams_needs_static_inner_steps():
  opt = optax.inject_hyperparams(entropix.local_entropy)(gamma=1.0, inner_steps=3)
  params = zeros_params()
  with pytest.raises(ValueError, match="static_args"):
    make_step(opt)(params, opt.init(params))


@ALL
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dtypes_are_preserved(name, dtype):
  opt = FACTORIES[name]()
  params = zeros_params(dtype)
  updates, state = opt.update(
      quadratic_grad(params), opt.init(params), params, grad_fn=quadratic_grad
  )
  for u in jax.tree.leaves(updates):
    assert u.dtype == dtype
  new = optax.apply_updates(params, updates)
  assert all(p.dtype == dtype for p in jax.tree.leaves(new))
  assert not np.allclose(np.asarray(new["w"], np.float32), 0.0)


class Pair(NamedTuple):
  first: jax.Array
  second: dict


@ALL
def test_any_pytree(name):
  params = {
      "scalar": jnp.array(1.0),
      "nested": (jnp.ones((2, 3)), [jnp.ones(4), Pair(jnp.ones(1), {"z": jnp.ones((2, 2, 2))})]),
      "empty": (),
  }
  grad_fn = lambda p, i: jax.tree.map(lambda x: 2 * x, p)
  opt = FACTORIES[name]()
  updates, _ = jax.jit(lambda p, s: opt.update(grad_fn(p, 0), s, p, grad_fn=grad_fn))(
      params, opt.init(params)
  )
  assert jax.tree.structure(updates) == jax.tree.structure(params)
  for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params)):
    assert u.shape == p.shape
    assert np.all(np.asarray(u) < 0)  # every leaf moves towards 0


PMAP_FACTORIES = {
    "entropy_sgd": lambda axis: entropix.entropy_sgd(
        0.5, gamma=1.0, inner_steps=4, noise=1e-2, axis_name=axis
    ),
    "hj": lambda axis: entropix.hj(0.5, gamma=1.0, axis_name=axis),
    "heat": lambda axis: entropix.heat(0.1, sigma=0.1, samples=4, axis_name=axis),
    "hj_fixed_point": lambda axis: entropix.hj_fixed_point(
        0.05, gamma=1.0, inner_steps=3, axis_name=axis),
    "entropy_sgd_uniform": lambda axis: entropix.entropy_sgd(
        0.5, gamma=1.0, inner_steps=4, noise=1e-2, inner_momentum=0.5,
        reset_inner_momentum=False, average="uniform", axis_name=axis),
}


@pytest.mark.parametrize("name", list(PMAP_FACTORIES))
def test_pmap_keeps_replicas_bit_identical(name):
  devices = jax.devices()[:4]
  assert len(devices) == 4, "conftest.py simulates 8 CPU devices"
  steps, per_device, inner = 3, 16, 4
  data = jax.random.normal(jax.random.PRNGKey(0), (steps, inner, 4 * per_device, 5))
  w_true = jnp.arange(5.0)
  params = {"w": jnp.zeros(5), "b": jnp.zeros(())}

  def loss(p, x):
    return jnp.mean((x @ p["w"] + p["b"] - x @ w_true) ** 2)

  def train(opt, shards, axis_name):
    def one_step(carry, batches):
      p, s = carry
      grad_fn = lambda q, i: jax.grad(loss)(q, batches[i])
      u, s = opt.update(grad_fn(p, 0), s, p, grad_fn=grad_fn)
      return (optax.apply_updates(p, u), s), None

    def run_all(p, data):
      (p, _), _ = jax.lax.scan(one_step, (p, opt.init(p)), data)
      return p

    if axis_name is None:
      return jax.jit(run_all)(params, shards)
    replicated = jax.tree.map(lambda x: jnp.stack([x] * 4), params)
    return jax.pmap(run_all, axis_name=axis_name, devices=devices)(replicated, shards)

  # Each device gets a different quarter of every minibatch.
  shards = data.reshape(steps, inner, 4, per_device, 5).transpose(2, 0, 1, 3, 4)
  out = train(PMAP_FACTORIES[name]("batch"), shards, "batch")
  for leaf in jax.tree.leaves(out):
    for d in range(1, 4):
      np.testing.assert_array_equal(np.asarray(leaf[0]), np.asarray(leaf[d]))
  # ... and the run is the single-device run on the whole minibatch.
  single = train(PMAP_FACTORIES[name](None), data, None)
  for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(single)):
    np.testing.assert_allclose(a[0], b, rtol=1e-4, atol=1e-5)
