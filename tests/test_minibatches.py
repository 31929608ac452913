"""Tests of entropix.minibatch_grad_fn and of the checks on what grad_fn gets and returns."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import entropix

PARAMS = {"w": jnp.array([0.5, -1.0]), "b": jnp.array(0.2)}
XS = jax.random.normal(jax.random.PRNGKey(0), (5, 8, 2))
BATCHES = {"x": XS, "y": XS @ jnp.array([1.0, 2.0])}


def loss(p, batch):
  return jnp.mean((batch["x"] @ p["w"] + p["b"] - batch["y"]) ** 2)


def test_it_is_the_gradient_on_minibatch_i():
  grad_fn = entropix.minibatch_grad_fn(loss, BATCHES)
  assert grad_fn.minibatches == 5
  for i in (0, 3, 4):
    want = jax.grad(loss)(PARAMS, {"x": XS[i], "y": BATCHES["y"][i]})
    got = jax.jit(grad_fn)(PARAMS, jnp.int32(i))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), got, want)


def test_each_index_gets_a_key_of_its_own():
  seen = []

  def noisy_loss(p, batch, key):
    seen.append(key)
    return loss(p, batch) + 0.0 * jax.random.normal(key)

  grad_fn = entropix.minibatch_grad_fn(noisy_loss, BATCHES, key=jax.random.key(7))
  grad_fn(PARAMS, 1)
  grad_fn(PARAMS, 2)
  raw = jax.random.key_data(jax.random.key(7))
  np.testing.assert_array_equal(seen[0], jax.random.fold_in(raw, 1))
  assert not np.array_equal(seen[0], seen[1])


@pytest.mark.parametrize("batches, message", [
    ({"x": XS, "y": XS[:4]}, "same leading (minibatch) axis"),
    ({}, "leading minibatch axis"),
    ({"x": XS, "c": jnp.array(1.0)}, "same leading (minibatch) axis"),
])
def test_bad_batches_are_refused(batches, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    entropix.minibatch_grad_fn(loss, batches)


@pytest.mark.parametrize("make, needs", [
    (lambda: entropix.entropy_sgd(0.1, gamma=1.0, inner_steps=6), 6),
    (lambda: entropix.hj_fixed_point(0.1, gamma=1.0, inner_steps=5), 6),
    (lambda: entropix.heat(0.1, sigma=0.1, samples=6), 6),
])
def test_a_transform_refuses_to_index_past_the_minibatches(make, needs):
  opt = make()
  grad_fn = entropix.minibatch_grad_fn(loss, BATCHES)  # 5 minibatches
  with pytest.raises(ValueError, match=f"i up to {needs - 1}, but grad_fn holds 5 minibatches"):
    opt.update(grad_fn(PARAMS, 0), opt.init(PARAMS), PARAMS, grad_fn=grad_fn)


def test_enough_minibatches_train():
  opt = entropix.entropy_sgd(0.5, gamma=1.0, inner_steps=5, noise=0.0)
  grad_fn = entropix.minibatch_grad_fn(loss, BATCHES)
  params, state = PARAMS, opt.init(PARAMS)
  before = float(loss(params, {"x": XS[0], "y": BATCHES["y"][0]}))
  for _ in range(20):
    updates, state = opt.update(grad_fn(params, 0), state, params, grad_fn=grad_fn)
    params = optax.apply_updates(params, updates)
  assert float(loss(params, {"x": XS[0], "y": BATCHES["y"][0]})) < 0.01 * before


@pytest.mark.parametrize("bad, says", [
    (lambda p, i: (jnp.float32(0.0), jax.grad(loss)(p, {"x": XS[i], "y": XS[i, :, 0]})),
     "it returned tuple"),
    (lambda p, i: {"w": p["w"][:1], "b": p["b"]}, "at ['w'] params have shape (2,), the result (1,)"),
    (lambda p, i: {"b": p["b"]}, "params have 2 leaves, the result 1"),
    (lambda p, i: {"w": {"value": p["w"]}, "b": p["b"]}, "the result at ['w']['value']"),
])
@pytest.mark.parametrize("name", ["entropy_sgd", "hj_fixed_point", "heat"])
def test_a_wrong_grad_fn_result_is_named(bad, says, name):
  opt = {"entropy_sgd": lambda: entropix.entropy_sgd(0.1, gamma=1.0, inner_steps=2),
         "hj_fixed_point": lambda: entropix.hj_fixed_point(0.1, gamma=1.0, inner_steps=1),
         "heat": lambda: entropix.heat(0.1, sigma=0.1, samples=2)}[name]()
  with pytest.raises(TypeError) as error:
    opt.update(jax.tree.map(jnp.zeros_like, PARAMS), opt.init(PARAMS), PARAMS, grad_fn=bad)
  assert "grad_fn(params, i) must return the gradient" in str(error.value)
  assert says in str(error.value)


def test_the_tuple_error_says_to_return_grads_alone():
  opt = entropix.entropy_sgd(0.1, gamma=1.0, inner_steps=2)
  bad = lambda p, i: jax.value_and_grad(loss)(p, {"x": XS[i], "y": XS[i, :, 0]})  # noqa: E731
  with pytest.raises(TypeError, match=r"jax.value_and_grad does, return grads alone"):
    opt.update(jax.tree.map(jnp.zeros_like, PARAMS), opt.init(PARAMS), PARAMS, grad_fn=bad)


@pytest.mark.parametrize("make, name", [
    (lambda s: entropix.local_entropy(1.0, inner_lr=s), "inner_lr"),
    (lambda s: entropix.local_entropy(1.0, noise=s), "noise"),
    (lambda s: entropix.entropy_sgd(0.1, gamma=1.0, momentum=s), "momentum"),
    (lambda s: entropix.hopf_lax_fixed_point(1.0, damping=s), "damping"),
    (lambda s: entropix.hj(0.1, gamma=1.0, weight_decay=s), "weight_decay"),
])
def test_a_schedule_for_a_number_is_refused_when_built(make, name):
  with pytest.raises(TypeError, match=f"{name} takes a number, not a schedule"):
    make(optax.constant_schedule(0.1))


def test_schedules_are_taken_where_documented_and_by_inject_hyperparams():
  schedule = optax.constant_schedule(0.1)
  entropix.entropy_sgd(schedule, gamma=schedule)
  entropix.heat(schedule, sigma=schedule)
  entropix.hj_fixed_point(schedule, gamma=schedule)
  # inject_hyperparams evaluates a schedule for any numeric argument.
  opt = optax.inject_hyperparams(entropix.local_entropy, static_args=("inner_steps",))(
      gamma=1.0, inner_lr=schedule, inner_steps=2)
  grad_fn = entropix.minibatch_grad_fn(loss, BATCHES)
  opt.update(grad_fn(PARAMS, 0), opt.init(PARAMS), PARAMS, grad_fn=grad_fn)


def test_microbatches_accumulate_to_the_minibatch_gradient():
  whole = entropix.minibatch_grad_fn(loss, BATCHES)
  for k in (2, 4, 8):
    parts = entropix.minibatch_grad_fn(loss, BATCHES, microbatches=k)
    assert parts.minibatches == 5
    for i in (0, 4):
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                   jax.jit(parts)(PARAMS, jnp.int32(i)), whole(PARAMS, i))


def test_each_microbatch_gets_a_key_of_its_own():
  # A loss scaled by a draw from its key: the gradient shows which key each
  # micro-batch got, fold_in(fold_in(key, i), m).
  keyed_loss = lambda p, batch, key: loss(p, batch) * jax.random.uniform(key)
  grad_fn = entropix.minibatch_grad_fn(keyed_loss, BATCHES, key=3, microbatches=2)
  i, key_i = 1, jax.random.fold_in(jax.random.PRNGKey(3), 1)
  by_hand = [jax.tree.map(lambda g, m=m: g * jax.random.uniform(jax.random.fold_in(key_i, m)),
                          jax.grad(loss)(PARAMS, jax.tree.map(lambda b: b[i, 4 * m:4 * m + 4],
                                                              BATCHES)))
             for m in range(2)]
  want = jax.tree.map(lambda a, b: (a + b) / 2, *by_hand)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5),
               grad_fn(PARAMS, i), want)


def test_microbatches_hold_one_microbatch_of_activations():
  # A wide hidden layer on a large minibatch: activations dominate the memory.
  w = [jnp.ones((16, 512)) / 16, jnp.ones((512, 1)) / 512]
  net_loss = lambda p, b: jnp.mean((jnp.tanh(b["x"] @ p[0]) @ p[1] - b["y"]) ** 2)
  batches = {"x": jnp.ones((2, 4096, 16)), "y": jnp.ones((2, 4096, 1))}

  def temp_bytes(k):
    grad_fn = entropix.minibatch_grad_fn(net_loss, batches, microbatches=k)
    analysis = jax.jit(grad_fn).lower(w, 0).compile().memory_analysis()
    if analysis is None:
      pytest.skip("this backend reports no memory analysis")
    return analysis.temp_size_in_bytes

  assert temp_bytes(4) < 0.4 * temp_bytes(1)  # measured: 4.3 MB against 17.1 MB
