"""Tests of the ready optimizers entropy_sgd, hj and heat."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import entropix

X = jnp.array([0.5, -1.5, 2.0])


def grad_fn(p, i):
  return jnp.sin(p) * (1.0 + 0.1 * i) + p


def two_updates(opt):
  state, params, out = opt.init(X), X, []
  for _ in range(2):
    updates, state = opt.update(grad_fn(params, 0), state, params, grad_fn=grad_fn)
    params = optax.apply_updates(params, updates)
    out.append(updates)
  return out


def assert_same(a, b):
  for u, v in zip(a, b):
    np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7)


def test_entropy_sgd_is_local_entropy_then_nesterov_sgd():
  # Every argument away from its default, so one the alias drops shows.
  kw = dict(inner_steps=4, inner_lr=0.05, noise=1e-2, alpha=0.5, weight_decay=1e-2,
            inner_momentum=0.5, reset_inner_momentum=False, key=3, sampler="normal", unroll=2)
  assert_same(
      two_updates(entropix.entropy_sgd(0.7, gamma=0.3, momentum=0.8, **kw)),
      two_updates(optax.chain(entropix.local_entropy(0.3, **kw), optax.sgd(0.7, 0.8, nesterov=True))),
  )


def test_hj_is_noiseless_last_iterate_with_the_papers_defaults():
  expected = optax.chain(
      entropix.local_entropy(0.3, inner_steps=5, inner_lr=0.25, noise=0.0, alpha=0.0),
      optax.sgd(0.7, 0.9, nesterov=True),
  )
  assert_same(two_updates(entropix.hj(0.7, gamma=0.3)), two_updates(expected))
  kw = dict(inner_steps=3, inner_lr=0.1, weight_decay=0.05, inner_momentum=0.5,
            reset_inner_momentum=False, unroll=2)
  expected = optax.chain(entropix.local_entropy(0.3, noise=0.0, alpha=0.0, **kw),
                         optax.sgd(0.7, 0.8, nesterov=True))
  assert_same(two_updates(entropix.hj(0.7, gamma=0.3, momentum=0.8, **kw)), two_updates(expected))


def test_hj_fixed_point_is_the_transform_then_nesterov_sgd():
  kw = dict(inner_steps=3, damping=0.5, weight_decay=1e-2, unroll=2)
  assert_same(
      two_updates(entropix.hj_fixed_point(0.7, gamma=0.3, momentum=0.8, **kw)),
      two_updates(optax.chain(entropix.hopf_lax_fixed_point(0.3, **kw),
                              optax.sgd(0.7, 0.8, nesterov=True))),
  )


def test_heat_decays_weights_on_the_outer_step():
  kw = dict(samples=3, key=1, sampler="binomial", unroll=2)
  expected = optax.chain(
      entropix.gaussian_smoothing(0.2, **kw),
      optax.add_decayed_weights(0.1),
      optax.sgd(0.7, 0.8, nesterov=True),
  )
  assert_same(
      two_updates(entropix.heat(0.7, sigma=0.2, weight_decay=0.1, momentum=0.8, **kw)),
      two_updates(expected),
  )


def test_entropy_sgd_weight_decay_acts_inside_the_inner_loop():
  # With one inner step, mu = alpha x + (1 - alpha) y_1 and
  # x - mu = (1 - alpha) lr_in (g + wd x): the decay enters scaled like g.
  opt = entropix.local_entropy(1.0, inner_steps=1, inner_lr=0.1, noise=0.0, alpha=0.5,
                               weight_decay=0.2)
  out, _ = opt.update(grad_fn(X, 0), opt.init(X), X, grad_fn=grad_fn)
  np.testing.assert_allclose(out, 0.5 * 0.1 * (grad_fn(X, 0) + 0.2 * X), rtol=1e-6)


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: entropix.entropy_sgd(0.0, gamma=1.0), "learning_rate"),
        (lambda: entropix.entropy_sgd(0.1, gamma=-1.0), "gamma"),
        (lambda: entropix.hj(0.1, gamma=1.0, momentum=1.0), "momentum"),
        (lambda: entropix.hj(0.1, gamma=1.0, inner_steps=0), "inner_steps"),
        (lambda: entropix.heat(-0.1, sigma=0.1), "learning_rate"),
        (lambda: entropix.heat(0.1, sigma=0.1, weight_decay=-1.0), "weight_decay"),
        (lambda: entropix.heat(0.1, sigma=-0.1), "sigma"),
        (lambda: entropix.heat(0.1, sigma=0.1, samples=0), "samples"),
    ],
)
def test_bad_hyperparameters_are_refused_by_name(make, name):
  with pytest.raises(ValueError, match=name):
    make()


OPTIMIZERS = {
    "entropy_sgd": lambda **kw: entropix.entropy_sgd(0.5, gamma=0.3, noise=1e-2, inner_steps=5, **kw),
    "hj": lambda **kw: entropix.hj(0.5, gamma=0.3, **kw),
    "heat": lambda **kw: entropix.heat(0.5, sigma=0.1, samples=5, **kw),
}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("unroll", [2, True])
def test_unrolling_the_loop_changes_no_number(name, unroll):
  make = OPTIMIZERS[name]
  # Both compiled: eager op-by-op arithmetic rounds differently from XLA's fusions.
  assert_same(jax.jit(lambda: two_updates(make(unroll=unroll)))(),
              jax.jit(lambda: two_updates(make()))())


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("bad", [0, -1, 1.5, "all"])
def test_bad_unroll_is_refused_by_name(name, bad):
  with pytest.raises(ValueError, match="unroll"):
    OPTIMIZERS[name](unroll=bad)
