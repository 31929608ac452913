"""Equinox's training loop, as its docs write it, with entropix (the guide's recipe).

``eqx.partition`` the model, give entropix the arrays, rebuild the model
inside ``grad_fn`` with ``eqx.combine``; ``eqx.apply_updates`` applies the
update. The mistakes a user makes first are refused with a message.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import entropix

L, BATCH = 4, 16


class Model(eqx.Module):
  """An MLP with an int array (a step counter) and a PRNG key among its fields."""

  mlp: eqx.nn.MLP
  seen: jax.Array
  key: jax.Array

  def __init__(self, key):
    self.mlp = eqx.nn.MLP(3, 2, 16, 1, key=key)
    self.seen = jnp.zeros((), jnp.int32)
    self.key = jax.random.key(5)

  def __call__(self, x):
    return jax.vmap(self.mlp)(x)


def loss(model, x, y):
  return jnp.mean((model(x) - y) ** 2)


def data(key=1):
  x = jax.random.normal(jax.random.PRNGKey(key), (L, BATCH, 3))
  y = jnp.stack([x[..., 0] * x[..., 1], jnp.sin(x[..., 2])], -1)
  return x, y


def train(model, opt, steps, filter_spec=eqx.is_array):
  """The recipe of docs/guides/using.md, "Equinox"."""
  params, static = eqx.partition(model, filter_spec)
  opt_state = opt.init(params)

  @eqx.filter_jit
  def make_step(model, opt_state, xs, ys):         # xs, ys: L minibatches
    params, static = eqx.partition(model, filter_spec)

    def param_loss(p, batch):
      return loss(eqx.combine(p, static), *batch)

    grad_fn = entropix.minibatch_grad_fn(param_loss, (xs, ys))
    updates, opt_state = opt.update(grad_fn(params, 0), opt_state, params, grad_fn=grad_fn)
    return eqx.apply_updates(model, updates), opt_state

  xs, ys = data()
  for _ in range(steps):
    model, opt_state = make_step(model, opt_state, xs, ys)
  return model


@pytest.mark.parametrize("filter_spec", [eqx.is_array, eqx.is_inexact_array],
                         ids=["is_array", "is_inexact_array"])
def test_the_equinox_recipe_trains_and_holds_the_other_arrays(filter_spec):
  model = Model(jax.random.PRNGKey(0))
  opt = entropix.entropy_sgd(1.0, gamma=0.1, inner_steps=L, noise=0.0)
  xs, ys = data()
  before = float(jnp.mean(jax.vmap(lambda x, y: loss(model, x, y))(xs, ys)))
  trained = train(model, opt, 40, filter_spec)
  after = float(jnp.mean(jax.vmap(lambda x, y: loss(trained, x, y))(xs, ys)))
  assert after < 0.5 * before
  assert int(trained.seen) == 0
  np.testing.assert_array_equal(jax.random.key_data(trained.key), jax.random.key_data(model.key))


def test_both_partitions_move_the_float_arrays_alike():
  model = Model(jax.random.PRNGKey(0))
  opt = entropix.entropy_sgd(1.0, gamma=0.1, inner_steps=L)
  a = train(model, opt, 3, eqx.is_array)
  b = train(model, opt, 3, eqx.is_inexact_array)
  for x, y in zip(jax.tree.leaves(eqx.filter(a, eqx.is_inexact_array)),
                  jax.tree.leaves(eqx.filter(b, eqx.is_inexact_array))):
    np.testing.assert_array_equal(x, y)


def test_the_whole_model_as_params_is_refused_with_the_recipe():
  model = Model(jax.random.PRNGKey(0))  # its MLP holds jax.nn.relu, a function
  with pytest.raises(TypeError, match=r"\.mlp\.activation.*eqx\.partition\(model, "
                     r"eqx\.is_inexact_array\).*eqx\.combine\(params, static\)"):
    entropix.entropy_sgd(1.0, gamma=0.1).init(model)


def test_a_grad_fn_that_expects_the_model_carries_a_note():
  model = Model(jax.random.PRNGKey(0))
  params, static = eqx.partition(model, eqx.is_array)
  opt = entropix.entropy_sgd(1.0, gamma=0.1, inner_steps=L)
  xs, ys = data()
  # The mistake: grad_fn treats what it receives as the model, not the filtered tree.
  grad_fn = lambda m, i: eqx.filter_grad(loss)(m, xs[i], ys[i])
  grads = eqx.filter_grad(loss)(model, xs[0], ys[0])
  with pytest.raises(TypeError) as info:
    opt.update(eqx.filter(grads, eqx.is_array), opt.init(params), params, grad_fn=grad_fn)
  note = "\n".join(info.value.__notes__)
  assert "raised inside your grad_fn(params, i), which entropy_sgd called with params" in note
  assert "a Model of arrays" in note and "eqx.combine(params, static)" in note
