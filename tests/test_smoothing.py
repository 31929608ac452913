"""Tests of entropix.gaussian_smoothing (HEAT, paper Eq. 35)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import entropix


def smoothed(transform, x, grad_fn):
  update = jax.jit(lambda s, p: transform.update(jnp.zeros_like(p), s, p, grad_fn=grad_fn))
  return update(transform.init(x), x)


@pytest.mark.parametrize("x0", [-1.0, 0.4, 2.0])
def test_matches_the_analytic_smoothed_gradient_of_cosine(x0):
  # f(x) = -cos(kx): E f'(x + sigma e) = k sin(kx) exp(-sigma^2 k^2 / 2).
  k, sigma, copies, samples = 3.0, 0.4, 20_000, 20
  x = jnp.full((copies,), x0)
  transform = entropix.gaussian_smoothing(sigma, samples=samples, key=2)
  out, _ = smoothed(transform, x, lambda p, i: k * jnp.sin(k * p))
  expected = k * np.sin(k * x0) * np.exp(-(sigma**2) * k**2 / 2)
  # Each element averages `samples` draws; the mean over copies is unbiased.
  stderr = k / np.sqrt(2 * copies * samples)
  assert abs(float(jnp.mean(out)) - expected) < 5 * stderr
  assert abs(expected - k * np.sin(k * x0)) > 20 * stderr  # smoothing is visible


def test_binomial_sampler_matches_its_own_kernel():
  # The standardised Binomial(32, 1/2) kernel has characteristic function
  # cos(t / (2 sqrt 8))^32 (within 1% of the Gaussian exp(-t^2/2) at t = 1.2).
  k, sigma, x0, copies, samples = 3.0, 0.4, 0.4, 20_000, 20
  transform = entropix.gaussian_smoothing(sigma, samples=samples, key=2, sampler="binomial")
  out, _ = smoothed(transform, jnp.full((copies,), x0), lambda p, i: k * jnp.sin(k * p))
  t = sigma * k
  expected = k * np.sin(k * x0) * np.cos(t / (2 * np.sqrt(8))) ** 32
  assert abs(float(jnp.mean(out)) - expected) < 5 * k / np.sqrt(2 * copies * samples)
  # That is too close to the Gaussian kernel for this test to tell the laws
  # apart; test_the_default_perturbations_are_gaussian does.


@pytest.mark.parametrize("samples", [1, 3, 20])
def test_exactly_samples_gradient_evaluations_and_updates_ignored(samples):
  calls = []

  def grad_fn(p, i):
    jax.debug.callback(lambda i: calls.append(int(i)), i)
    return p

  transform = entropix.gaussian_smoothing(0.0, samples=samples)
  x = jnp.arange(3.0)
  update = jax.jit(lambda g, s, p: transform.update(g, s, p, grad_fn=grad_fn))
  out, state = update(jnp.full(3, 1e6), transform.init(x), x)
  jax.block_until_ready(out)
  assert sorted(calls) == list(range(samples))
  np.testing.assert_allclose(out, x)  # sigma = 0: the gradient at x, not 1e6
  assert int(state.count) == 1


def test_sigma_schedule_and_key_advance():
  transform = entropix.gaussian_smoothing(lambda k: 0.1 * (k + 1), samples=4, key=0)
  x = jnp.zeros(10_000)
  update = jax.jit(lambda s: transform.update(x, s, x, grad_fn=lambda p, i: p))
  state = transform.init(x)
  stds = []
  for _ in range(3):
    out, state = update(state)
    stds.append(float(jnp.std(out)) * 2)  # mean of 4 draws of sigma e
  np.testing.assert_allclose(stds, [0.1, 0.2, 0.3], rtol=0.05)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"sigma": -0.1}, "sigma"), ({"samples": 0}, "samples"), ({"key": 1.5}, "key")],
)
def test_bad_hyperparameters_are_refused_by_name(kwargs, name):
  args = {"sigma": 0.1, **kwargs}
  with pytest.raises(ValueError, match=name):
    entropix.gaussian_smoothing(args.pop("sigma"), **args)


def test_missing_grad_fn_says_how_to_pass_it():
  transform = entropix.heat(0.1, sigma=0.1)
  x = jnp.ones(2)
  with pytest.raises(TypeError, match="grad_fn"):
    transform.update(x, transform.init(x), x)


def test_the_default_perturbations_are_gaussian():
  # f(y) = |y|^2 / 2 at x = 0 with sigma 1 and one sample: the "gradient"
  # is the perturbation itself.
  x = jnp.zeros(1_000_000)
  opt = entropix.gaussian_smoothing(1.0, samples=1, key=2)
  updates, _ = opt.update(jnp.zeros_like(x), opt.init(x), x, grad_fn=lambda p, i: p)
  z = np.asarray(updates, np.float64)
  # Not the binomial's lattice, and a Gaussian's kurtosis (the binomial's
  # excess kurtosis, -1/16, is 12 standard errors away).
  assert np.mean(np.abs(z * np.sqrt(8) - np.round(z * np.sqrt(8))) < 1e-4) < 0.01
  assert abs(np.mean(z**4) / np.mean(z**2) ** 2 - 3) < 5 * np.sqrt(24 / z.size)


def test_a_non_finite_estimate_goes_out_as_it_is_and_grad_state_restarts():
  import optax

  transform = entropix.gaussian_smoothing(0.1, samples=3, grad_transform=optax.trace(0.5))
  x = jnp.array([1.0, -2.0])
  state = transform.init(x)
  _, state = transform.update(x, state, x, grad_fn=lambda p, i: p)
  updates, after = transform.update(x, state, x, grad_fn=lambda p, i: jnp.where(i > 1, jnp.nan, p))
  assert not np.all(np.isfinite(updates))
  assert np.any(np.asarray(state.grad_state.trace) != 0)
  np.testing.assert_array_equal(after.grad_state.trace, transform.init(x).grad_state.trace)
  assert int(after.count) == 2 and not np.array_equal(after.rng_key, state.rng_key)
