"""Tests of entropix.hopf_lax_fixed_point (paper Remark 21) and its alias."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import entropix
from entropix import pde


def update_once(transform, x, grad_fn):
  return jax.jit(lambda s, p: transform.update(grad_fn(p, 0), s, p, grad_fn=grad_fn))(
      transform.init(x), x)


@pytest.mark.parametrize(
    "f, df, gamma",
    [
        (lambda y: np.log(np.cosh(2 * y)) + 0.3 * y, lambda y: 2 * jnp.tanh(2 * y) + 0.3, 1.0),
        (lambda y: -np.cos(2 * y) + 0.1 * y**2, lambda y: 2 * jnp.sin(2 * y) + 0.2 * y, 5.0),
    ],
    ids=["convex", "nonconvex"],
)
def test_fixed_point_is_the_hopf_lax_gradient(f, df, gamma):
  # Curvature of f within (-gamma, 7 gamma): the damped iteration converges to
  # p = f'(x - p / gamma), the gradient of the Hopf-Lax solution (Lemma 1).
  xs = np.linspace(-2.5, 2.5, 11)
  transform = entropix.hopf_lax_fixed_point(gamma, inner_steps=400)
  out, _ = update_once(transform, jnp.asarray(xs, jnp.float32), lambda p, i: df(p))
  _, reference = pde.hopf_lax(f, xs, np.linspace(-6, 6, 120_001), gamma=gamma)
  np.testing.assert_allclose(out, reference, atol=1e-4)
  # ... which is not the plain gradient: the test can tell them apart.
  assert np.max(np.abs(np.asarray(df(jnp.asarray(xs))) - reference)) > 0.1


def test_one_update_by_hand():
  gamma, damping, wd = 0.5, 0.6, 0.1
  x = jnp.array([1.0, -2.0])
  grads = [lambda y: 2 * y, lambda y: 3 * y + 1, lambda y: y**2]
  grad_fn = lambda y, i: jax.lax.switch(i, grads, y)
  transform = entropix.hopf_lax_fixed_point(gamma, inner_steps=2, damping=damping,
                                            weight_decay=wd)
  out, state = transform.update(grads[0](x), transform.init(x), x, grad_fn=grad_fn)
  p = grads[0](x) + wd * x
  for k in (1, 2):
    w = x - p / gamma
    p = damping * p + (1 - damping) * (grads[k](w) + wd * w)
  np.testing.assert_allclose(out, p, rtol=1e-6)
  assert int(state.count) == 1


@pytest.mark.parametrize("inner_steps", [1, 3])
def test_exactly_inner_steps_plus_one_gradient_evaluations(inner_steps):
  calls = []

  def grad_fn(p, i):
    jax.debug.callback(lambda i: calls.append(int(i)), i)
    return 2 * p

  transform = entropix.hopf_lax_fixed_point(1.0, inner_steps=inner_steps)
  x = jnp.ones(3)
  update = jax.jit(lambda g, s, p: transform.update(g, s, p, grad_fn=grad_fn))
  jax.block_until_ready(update(2 * x, transform.init(x), x))
  # The caller's gradient at x (minibatch 0), then minibatches 1 .. inner_steps.
  assert sorted(calls) == list(range(1, inner_steps + 1))


def test_gamma_schedule_is_evaluated_at_the_update_count():
  # f = y^2 / 2 + y: p = 1 + x - p / gamma, so p = gamma (1 + x) / (gamma + 1).
  schedule = entropix.scoping(0.5, 1.0)  # 0.5, 1, 2, 4
  transform = entropix.hopf_lax_fixed_point(schedule, inner_steps=300)
  x = jnp.full(1, 2.0)
  grad_fn = lambda p, i: p + 1.0
  update = jax.jit(lambda s: transform.update(grad_fn(x, 0), s, x, grad_fn=grad_fn))
  state = transform.init(x)
  for k in range(4):
    out, state = update(state)
    gamma = 0.5 * 2**k
    np.testing.assert_allclose(out, gamma * 3.0 / (gamma + 1), rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": lambda k: -1.0 + 0 * k}, "gamma"),
        ({"inner_steps": 0}, "inner_steps"),
        ({"damping": 1.0}, "damping"),
        ({"damping": -0.1}, "damping"),
        ({"weight_decay": -1e-3}, "weight_decay"),
        ({"unroll": 0}, "unroll"),
    ],
)
def test_bad_hyperparameters_are_refused_by_name(kwargs, name):
  args = {"gamma": 1.0, **kwargs}
  with pytest.raises(ValueError, match=name):
    entropix.hopf_lax_fixed_point(args.pop("gamma"), **args)


def test_missing_grad_fn_says_how_to_pass_it():
  transform = entropix.hj_fixed_point(0.1, gamma=1.0)
  x = jnp.ones(2)
  with pytest.raises(TypeError, match=r"grad_fn=grad_fn"):
    transform.update(x, transform.init(x), x)


def test_a_non_finite_p_goes_out_as_it_is_and_grad_state_restarts():
  transform = entropix.hopf_lax_fixed_point(1.0, inner_steps=3,
                                            grad_transform=optax.trace(0.5))
  x = jnp.array([1.0, -2.0])
  state = transform.init(x)
  _, state = transform.update(x, state, x, grad_fn=lambda p, i: p)
  updates, after = transform.update(x, state, x, grad_fn=lambda p, i: jnp.where(i > 1, jnp.nan, p))
  assert not np.all(np.isfinite(updates))
  assert np.any(np.asarray(state.grad_state.trace) != 0)
  np.testing.assert_array_equal(after.grad_state.trace, transform.init(x).grad_state.trace)
  assert int(after.count) == 2
