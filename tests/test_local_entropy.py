"""Tests of entropix.local_entropy against the PDE solutions of the paper."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import entropix
from entropix import pde


def tilted_double_well(y):
  return 0.25 * (y**2 - 1) ** 2 + 0.15 * y


def tilted_double_well_grad(y):
  return y * (y**2 - 1) + 0.15


def run_update(transform, x, grad, grad_fn=None):
  grad_fn = grad_fn or (lambda p, i: grad(p))

  @jax.jit
  def update(x):
    return transform.update(grad(x), transform.init(x), x, grad_fn=grad_fn)

  return update(x)


@pytest.mark.parametrize("sampler", ["binomial", "normal"])
def test_inner_chain_samples_the_local_entropy_law(sampler):
  # Thousands of independent chains (one per coordinate, f separable) start at
  # the same x; their mean estimates <y> under exp(-beta H(x, y)).
  beta, gamma, chains = 4.0, 2.0, 16_000
  xs = np.array([-2.0, -1.2, -0.5, 0.5, 1.2, 2.0])  # both sides of the barrier
  x = jnp.repeat(jnp.asarray(xs, jnp.float32), chains)
  transform = entropix.local_entropy(
      gamma, inner_steps=3000, inner_lr=0.01, noise=beta**-0.5, alpha=0.995,
      key=1, sampler=sampler,
  )
  out, _ = run_update(transform, x, tilted_double_well_grad)
  estimate = gamma * np.asarray(out).reshape(len(xs), chains).mean(axis=1)
  grid = np.linspace(-6, 6, 24001)
  _, reference = pde.viscous_hj(tilted_double_well, xs, grid, gamma=gamma, beta=beta)
  np.testing.assert_allclose(estimate, reference, rtol=0.03, atol=0.005)
  # The law is not the zero-temperature one: the test can tell them apart.
  _, prox = pde.hopf_lax(tilted_double_well, xs, grid, gamma=gamma)
  assert np.max(np.abs(prox - reference)) > 0.1


@pytest.mark.parametrize(
    "f, df, gamma",
    [
        (lambda y: np.log(np.cosh(2 * y)) + 0.3 * y, lambda y: 2 * jnp.tanh(2 * y) + 0.3, 1.0),
        (lambda y: -np.cos(2 * y) + 0.1 * y**2, lambda y: 2 * jnp.sin(2 * y) + 0.2 * y, 5.0),
    ],
    ids=["convex", "nonconvex"],
)
def test_hj_is_the_hopf_lax_gradient(f, df, gamma):
  # f'' + gamma > 0: the inner problem is convex, the descent converges to the
  # proximal point (paper Lemma 2-3) and gamma (x - y_L) is grad u(x, 1/gamma).
  xs = np.linspace(-2.5, 2.5, 11)
  transform = entropix.local_entropy(
      gamma, inner_steps=2000, inner_lr=0.05, noise=0.0, alpha=0.0
  )
  out, _ = run_update(transform, jnp.asarray(xs, jnp.float32), df)
  _, reference = pde.hopf_lax(f, xs, np.linspace(-6, 6, 120_001), gamma=gamma)
  np.testing.assert_allclose(gamma * np.asarray(out), reference, atol=1e-4)


def test_quadratic_last_iterate_is_the_lemma_4_mean():
  # f(y) = p.y + Q/2 |y - x0|^2 around x = x0: mu = x - (Q + gamma)^-1 p.
  gamma = 0.5
  q = jnp.array([0.1, 1.0, 3.0, 10.0])
  p = jnp.array([1.0, -2.0, 0.5, 4.0])
  x = jnp.array([0.3, -0.2, 1.0, 2.0])
  grad = lambda y: p + q * (y - x)
  transform = entropix.local_entropy(
      gamma, inner_steps=3000, inner_lr=0.05, noise=0.0, alpha=0.0
  )
  out, _ = run_update(transform, x, grad)
  np.testing.assert_allclose(out, p / (q + gamma), rtol=1e-5)


def test_quadratic_noisy_chain_has_the_lemma_4_gaussian_law():
  # With noise, y is Gaussian with mean x - (Q + gamma)^-1 p and, for the
  # Euler-Maruyama chain of step eta, variance eps^2 / (k (1 - eta k / 2)),
  # k = Q + gamma (-> eps^2 (Q + gamma)^-1 as eta -> 0).
  gamma, q, p, eps, eta, chains = 1.0, 3.0, 2.0, 0.2, 0.02, 50_000
  x = jnp.zeros(chains)
  grad = lambda y: p + q * y
  transform = entropix.local_entropy(
      gamma, inner_steps=1000, inner_lr=eta, noise=eps, alpha=0.0, key=3
  )
  out, _ = run_update(transform, x, grad)
  y = -np.asarray(out)
  k = q + gamma
  assert abs(y.mean() - (-p / k)) < 4 * eps / np.sqrt(k * chains)
  np.testing.assert_allclose(y.var(), eps**2 / (k * (1 - eta * k / 2)), rtol=0.03)


def test_one_update_by_hand():
  # Two inner steps, weight decay and Nesterov momentum, no noise.
  gamma, lr, wd, m, alpha = 0.5, 0.1, 0.01, 0.9, 0.75
  x = jnp.array([1.0, -2.0])
  grads = {0: lambda y: 2 * y, 1: lambda y: 3 * y}
  transform = entropix.local_entropy(
      gamma, inner_steps=2, inner_lr=lr, noise=0.0, alpha=alpha,
      inner_momentum=m, weight_decay=wd,
  )
  grad_fn = lambda y, i: jax.lax.switch(i, [grads[0], grads[1]], y)
  out, state = transform.update(grads[0](x), transform.init(x), x, grad_fn=grad_fn)
  y, mu, v = x, x, jnp.zeros(2)
  for i in range(2):
    d = grads[i](y) + wd * y + gamma * (y - x)
    v = m * v + d
    y = y - lr * (d + m * v)
    mu = alpha * mu + (1 - alpha) * y
  np.testing.assert_allclose(out, x - mu, rtol=1e-6)
  assert int(state.count) == 1


def test_the_inner_buffer_persists_across_updates_when_asked():
  # Two updates of one inner step each, Nesterov m, no noise: by hand.
  gamma, lr, m = 0.5, 0.1, 0.9
  x = jnp.array([1.0, -2.0])
  grad = lambda y, i=0: 2 * y + 1
  kw = dict(inner_steps=1, inner_lr=lr, noise=0.0, alpha=0.0, inner_momentum=m)
  kept = entropix.local_entropy(gamma, reset_inner_momentum=False, **kw)
  reset = entropix.local_entropy(gamma, **kw)
  state_kept, state_reset, v = kept.init(x), reset.init(x), jnp.zeros(2)
  assert state_reset.inner_velocity == ()
  for update in range(2):
    out_kept, state_kept = kept.update(grad(x), state_kept, x, grad_fn=grad)
    out_reset, state_reset = reset.update(grad(x), state_reset, x, grad_fn=grad)
    d = grad(x)  # y_0 = x: no coupling term
    v = m * v + d
    np.testing.assert_allclose(out_kept, lr * (d + m * v), rtol=1e-6)
    np.testing.assert_allclose(state_kept.inner_velocity, v, rtol=1e-6)
    np.testing.assert_allclose(out_reset, lr * (1 + m) * d, rtol=1e-6)
  assert not np.allclose(out_kept, out_reset)  # the second update tells them apart


def test_the_uniform_average_is_the_mean_of_x_and_the_iterates():
  gamma, lr = 0.5, 0.1
  x = jnp.array([1.0, -2.0])
  grads = [lambda y: 2 * y, lambda y: 3 * y + 1, lambda y: y**2]
  grad_fn = lambda y, i: jax.lax.switch(i, grads, y)
  transform = entropix.local_entropy(gamma, inner_steps=3, inner_lr=lr, noise=0.0,
                                     alpha=0.3, average="uniform")
  out, _ = transform.update(grads[0](x), transform.init(x), x, grad_fn=grad_fn)
  y, iterates = x, [x]
  for k in range(3):
    y = y - lr * (grads[k](y) + gamma * (y - x))
    iterates.append(y)
  np.testing.assert_allclose(out, x - sum(iterates) / 4, rtol=1e-6)  # alpha is unused


@pytest.mark.parametrize("inner_steps", [1, 2, 7])
def test_exactly_inner_steps_gradient_evaluations(inner_steps):
  calls = []

  def grad_fn(p, i):
    jax.debug.callback(lambda i: calls.append(int(i)), i)
    return 2 * p

  transform = entropix.local_entropy(1.0, inner_steps=inner_steps)
  x = jnp.ones(3)
  update = jax.jit(lambda g, s, p: transform.update(g, s, p, grad_fn=grad_fn))
  state = transform.init(x)
  for _ in range(2):
    calls.clear()
    caller_grad = 2 * x  # the caller's evaluation at x, minibatch 0
    jax.block_until_ready(update(caller_grad, state, x))
    # The caller's one plus grad_fn's, on minibatches 1 .. inner_steps - 1.
    assert 1 + len(calls) == inner_steps
    assert sorted(calls) == list(range(1, inner_steps))


def test_same_key_same_numbers_and_the_key_advances():
  transform = entropix.local_entropy(1.0, inner_steps=5, noise=0.1, key=7)
  x = jnp.linspace(-1, 1, 64)
  grad_fn = lambda p, i: jnp.sin(p)
  update = jax.jit(lambda s, p: transform.update(jnp.sin(p), s, p, grad_fn=grad_fn))
  s0 = transform.init(x)
  a1, s1 = update(s0, x)
  b1, _ = update(transform.init(x), x)
  a2, _ = update(s1, x)
  np.testing.assert_array_equal(a1, b1)
  assert not np.array_equal(a1, a2)
  c1, _ = entropix.local_entropy(1.0, inner_steps=5, noise=0.1, key=8).update(
      jnp.sin(x), s0._replace(rng_key=jax.random.PRNGKey(8)), x, grad_fn=grad_fn
  )
  assert not np.array_equal(a1, c1)


def test_accepts_typed_and_raw_keys():
  x = jnp.ones(4)
  typed = entropix.local_entropy(1.0, key=jax.random.key(5)).init(x)
  raw = entropix.local_entropy(1.0, key=jax.random.PRNGKey(5)).init(x)
  seed = entropix.local_entropy(1.0, key=5).init(x)
  np.testing.assert_array_equal(typed.rng_key, seed.rng_key)
  np.testing.assert_array_equal(raw.rng_key, seed.rng_key)
  with pytest.raises(ValueError, match="key"):
    entropix.local_entropy(1.0, key="five").init(x)


def test_gamma_schedule_is_evaluated_at_the_update_count():
  # With noise=0, alpha=0 and a quadratic, the output is p / (q + gamma_k).
  schedule = entropix.scoping(0.5, 1.0)  # 0.5, 1, 2, 4, ...
  transform = entropix.local_entropy(
      schedule, inner_steps=400, inner_lr=0.1, noise=0.0, alpha=0.0
  )
  x = jnp.zeros(1)
  grad = lambda y: 1.0 + y
  update = jax.jit(lambda s: transform.update(grad(x), s, x, grad_fn=lambda p, i: grad(p)))
  state = transform.init(x)
  for k in range(4):
    out, state = update(state)
    np.testing.assert_allclose(out, 1.0 / (1.0 + 0.5 * 2**k), rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": -1.0}, "gamma"),
        ({"gamma": float("nan")}, "gamma"),
        ({"gamma": lambda k: -0.1 + 0 * k}, "gamma"),
        ({"inner_steps": 0}, "inner_steps"),
        ({"inner_lr": 0.0}, "inner_lr"),
        ({"noise": -1e-4}, "noise"),
        ({"alpha": 1.0}, "alpha"),
        ({"alpha": -0.1}, "alpha"),
        ({"inner_momentum": 1.0}, "inner_momentum"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"sampler": "uniform"}, "sampler"),
        ({"average": "mean"}, "average"),
        ({"reset_inner_momentum": 1}, "reset_inner_momentum"),
    ],
)
def test_bad_hyperparameters_are_refused_by_name(kwargs, name):
  args = {"gamma": 1.0, **kwargs}
  with pytest.raises(ValueError, match=name):
    entropix.local_entropy(args.pop("gamma"), **args)


def test_missing_grad_fn_says_how_to_pass_it():
  transform = optax.chain(entropix.local_entropy(1.0), optax.sgd(0.1))
  x = jnp.ones(2)
  with pytest.raises(TypeError, match=r"grad_fn=grad_fn"):
    transform.update(x, transform.init(x), x)
  with pytest.raises(ValueError, match="params"):
    entropix.local_entropy(1.0).update(x, transform.init(x)[0], None, grad_fn=lambda p, i: p)


def _langevin_increments(**kw):
  """One noise increment per parameter: x = 0, f = 0, inner_lr 1/2, noise 1, last iterate."""
  x = jnp.zeros(200_000)
  opt = entropix.local_entropy(1e-6, inner_steps=2, inner_lr=0.5, noise=1.0, alpha=0.0, key=5, **kw)
  zero = lambda p, i: jnp.zeros_like(p)
  updates, _ = opt.update(zero(x, 0), opt.init(x), x, grad_fn=zero)
  return -np.asarray(updates, np.float64)  # x - y_1 = -sqrt(2 * 1/2) * xi


def test_the_default_noise_is_the_standardised_binomial():
  # (k - 16) / sqrt(8) for k ~ Binomial(32, 1/2): every increment on that lattice.
  on_lattice = lambda z: np.abs(z * np.sqrt(8) - np.round(z * np.sqrt(8))) < 1e-4
  assert on_lattice(_langevin_increments()).all()
  assert on_lattice(_langevin_increments(sampler="normal")).mean() < 0.01


def test_the_chain_runs_in_float32_for_bfloat16_params():
  # Steps of 1e-3 from 1.0: below bfloat16's resolution there (2**-8), so a
  # chain kept in bfloat16 would never move.
  grad = lambda p, i: jnp.full_like(p, 0.01)

  def update(dtype):
    x = jnp.ones(4, dtype)
    opt = entropix.local_entropy(1e-3, inner_steps=20, inner_lr=0.1, noise=0.0, alpha=0.0)
    updates, _ = opt.update(grad(x, 0), opt.init(x), x, grad_fn=grad)
    assert updates.dtype == dtype
    return np.asarray(updates, np.float32)

  want = update(jnp.float32)
  np.testing.assert_allclose(want, 20 * 1e-3, rtol=1e-2)  # 20 steps of inner_lr * 0.01
  np.testing.assert_allclose(update(jnp.bfloat16), want, rtol=1e-2)


def test_the_compiled_update_does_not_grow_with_inner_steps():
  # The loop is a lax.scan: L = 50 compiles the same program as L = 2 (the
  # benchmark measures the compile times; this checks the cause).
  x = jnp.ones(8)
  grad = lambda p, i: jnp.sin(p) * i

  def program(steps):
    opt = entropix.local_entropy(0.1, inner_steps=steps)
    update = lambda s: opt.update(grad(x, 0), s, x, grad_fn=grad)
    return jax.jit(update).lower(opt.init(x)).as_text()

  short, long = program(2), program(50)
  assert len(long) == pytest.approx(len(short), rel=0.01)
  assert program(3) != short  # and it does depend on L (the trip count)


@pytest.mark.parametrize("grad_transform", [None, optax.trace(0.5)])
def test_a_diverged_chain_goes_out_as_it_is_and_its_buffers_restart(grad_transform):
  transform = entropix.local_entropy(1.0, inner_steps=3, inner_momentum=0.9,
                                     reset_inner_momentum=False, grad_transform=grad_transform)
  x = jnp.array([1.0, -2.0])
  finite = lambda p, i: p
  state = transform.init(x)
  _, state = transform.update(finite(x, 0), state, x, grad_fn=finite)  # buffers that moved
  assert np.any(np.asarray(state.inner_velocity) != 0)
  nan_inside = lambda p, i: jnp.where(i > 1, jnp.nan, p)
  updates, after = transform.update(finite(x, 0), state, x, grad_fn=nan_inside)
  assert not np.all(np.isfinite(updates))  # for a guard downstream to refuse
  fresh = transform.init(x)
  for restarted, initial in zip(jax.tree.leaves((after.inner_velocity, after.grad_state)),
                                jax.tree.leaves((fresh.inner_velocity, fresh.grad_state))):
    np.testing.assert_array_equal(restarted, initial)
  assert int(after.count) == 2 and not np.array_equal(after.rng_key, state.rng_key)


def test_grad_transform_acts_on_every_gradient_and_keeps_its_state():
  # Gradients that do not depend on the point: c_0 (the caller's), c_1, c_2.
  c = jnp.array([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
  seen = []
  record = optax.GradientTransformation(
      lambda p: optax.EmptyState(),
      lambda g, s, p=None: (seen.append(g) or g, s))
  transform = entropix.local_entropy(1.0, inner_steps=3, noise=0.0, alpha=0.0,
                                     grad_transform=optax.chain(record, optax.trace(0.5)))
  x = jnp.zeros(2)
  state = transform.init(x)
  _, state = jax.jit(lambda s: transform.update(c[0], s, x, grad_fn=lambda p, i: c[i]))(state)
  assert len(seen) == 2  # the caller's gradient, and the loop body's (traced once)
  # optax.trace over c_0, c_1, c_2: t = c_2 + 0.5 c_1 + 0.25 c_0.
  np.testing.assert_allclose(state.grad_state[1].trace, c[2] + 0.5 * c[1] + 0.25 * c[0])
  # The chain stepped along the traced gradients, not the raw ones.
  plain = entropix.local_entropy(1.0, inner_steps=3, noise=0.0, alpha=0.0)
  traced = [c[0], c[1] + 0.5 * c[0], c[2] + 0.5 * c[1] + 0.25 * c[0]]
  want, _ = plain.update(traced[0], plain.init(x), x, grad_fn=lambda p, i: jnp.stack(traced)[i])
  got, _ = transform.update(c[0], transform.init(x), x, grad_fn=lambda p, i: c[i])
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_a_mean_over_one_device_is_no_all_reduce():
  # The gradient mean over a one-device axis is the gradient; XLA would still
  # copy it through an all-reduce on every inner step.
  tx = entropix.entropy_sgd(0.1, gamma=1.0, inner_steps=2, axis_name="b")
  params, data = jnp.ones(3), jnp.arange(6.0).reshape(1, 2, 3)

  def step(params, state, data):
    grad_fn = lambda p, i: jax.grad(lambda p: jnp.sum((p - data[i]) ** 2))(p)
    updates, state = tx.update(jnp.zeros(3), state, params, grad_fn=grad_fn)
    return optax.apply_updates(params, updates), state

  stacked = lambda tree: jax.tree.map(lambda x: x[None], tree)
  mapped = jax.pmap(step, axis_name="b")
  args = (stacked(params), stacked(tx.init(params)), data)
  assert "all-reduce" not in mapped.lower(*args).compile().as_text()
  want = mapped(*args)[0][0]
  shard_map = getattr(jax, "shard_map", None)
  if shard_map is not None:  # its type check: the mean still makes the gradient invariant
    from jax.sharding import Mesh, PartitionSpec as P

    mesh = Mesh(np.array(jax.devices()[:1]), ("b",))
    checked = jax.jit(shard_map(step, mesh=mesh, in_specs=(P(), P(), P("b")),
                                out_specs=(P(), P()), check_vma=True))
    np.testing.assert_allclose(checked(params, tx.init(params), data[0])[0], want, rtol=1e-6)
  # Two devices' mean is an all-reduce (the CPU simulates devices in the tests).
  if jax.local_device_count() >= 2:
    two = jax.pmap(step, axis_name="b", devices=jax.local_devices()[:2])
    args2 = (jax.tree.map(lambda x: jnp.concatenate([x, x]), args[0]),
             jax.tree.map(lambda x: jnp.concatenate([x, x]), args[1]),
             jnp.concatenate([data, data]))
    assert "all-reduce" in two.lower(*args2).compile().as_text()
