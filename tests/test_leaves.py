"""Leaves that are not float arrays, and the user's buffers, as optax.sgd treats them.

Every entropix transform and ready optimizer, with an int, bool or PRNG-key
leaf beside a float one, and its gradient as each tool gives it (None from
``eqx.filter_grad``, float0 from ``jax.grad(allow_int=True)``, zeros by
hand): the leaf stays as it was, its update is what ``optax.sgd`` gives it,
and the float leaf follows the same path as without the extra leaf.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import entropix
from test_optax_common import FACTORIES

W = jnp.array([1.0, -2.0])
REPLICATED = {
    "elastic": lambda: optax.chain(entropix.elastic(0.5, axis_name="r"), optax.sgd(0.1)),
    "elastic_sgd": lambda: entropix.elastic_sgd(0.1, rho=0.5, axis_name="r"),
    "parle": lambda: entropix.parle(0.5, gamma=1.0, rho=0.5, axis_name="r", inner_steps=3),
    "parle_l0": lambda: entropix.parle(0.1, gamma=1.0, rho=0.5, axis_name="r", inner_steps=0,
                                       grad_transform=optax.clip_by_global_norm(10.0)),
}


def w_grad(params):
  return 2.0 * (params["w"] - 3.0)
def apply(params, updates):
  """optax.apply_updates, and eqx.apply_updates's None: the leaf as it is."""
  return jax.tree.map(lambda u, p: p if u is None else optax.apply_updates(p, u), updates,
                      params, is_leaf=lambda x: x is None)


def float0(leaf):
  return np.zeros(jnp.shape(leaf), jax.dtypes.float0)


# The table: leaf kind -> (the leaf, its gradient as a tool gives it). All sit
# beside a float leaf "w" in one params tree.
KINDS = {
    "int, None gradient (eqx.filter_grad)": (jnp.arange(3), lambda leaf: None),
    "int, float0 gradient (jax.grad allow_int)": (jnp.arange(3), float0),
    "int, zero gradient": (jnp.arange(3), jnp.zeros_like),
    "bool, zero gradient": (jnp.array([True, False, True, True]), jnp.zeros_like),
    "bool, None gradient": (jnp.array([True, False]), lambda leaf: None),
    "key, None gradient": (jax.random.key(3), lambda leaf: None),
    "key, float0 gradient": (jax.random.key(3), float0),
    "raw key, None gradient": (jax.random.PRNGKey(3), lambda leaf: None),
}
NAMES = {kind: f"x{n}" for n, kind in enumerate(KINDS)}


def key_safe(leaf):
  return jax.random.key_data(leaf) if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key) else leaf


def train(opt, params, kinds, steps=3, axis=False):
  def grads(p):
    out = {"w": w_grad(p)}
    out.update({NAMES[kind]: KINDS[kind][1](p[NAMES[kind]]) for kind in kinds})
    return out

  def step(p, state):
    updates, state = opt.update(grads(p), state, p, grad_fn=lambda q, i: grads(q))
    return apply(p, updates), state, updates

  if axis:  # two replicas along "r"
    params = jax.tree.map(lambda l: jnp.stack([l, l]), params)
    state = jax.vmap(opt.init)(params)
    step = jax.vmap(step, axis_name="r")
  else:
    state = opt.init(params)
  step = jax.jit(step)
  for _ in range(steps):
    params, state, updates = step(params, state)
  return params, updates, step


def with_leaves(kinds):
  return {"w": W, **{NAMES[kind]: KINDS[kind][0] for kind in kinds}}


@functools.cache
def sgd_update(kind):
  """The update optax.sgd(0.1, momentum=0.9) gives the leaf; "crashes" for a float0 gradient."""
  try:
    _, updates, _ = train(optax.sgd(0.1, momentum=0.9), with_leaves([kind]), [kind])
  except TypeError:
    return "crashes"
  return updates[NAMES[kind]]


@pytest.mark.parametrize("name", list(FACTORIES) + list(REPLICATED))
def test_a_leaf_that_is_not_float_is_held_as_optax_sgd_holds_it(name):
  make, axis = (REPLICATED[name], True) if name in REPLICATED else (FACTORIES[name], False)
  params, updates, step = train(make(), with_leaves(KINDS), KINDS, axis=axis)
  alone, _, _ = train(make(), {"w": W}, [], axis=axis)
  np.testing.assert_array_equal(params["w"], alone["w"])  # the float leaf's path is its own
  assert step._cache_size() == 1  # one structure and dtype of state throughout
  for kind, (leaf, _) in KINDS.items():
    got, update = params[NAMES[kind]], updates[NAMES[kind]]
    if axis:
      got, update = got[0], None if update is None else update[0]
    np.testing.assert_array_equal(key_safe(got), key_safe(leaf), err_msg=kind)  # never changed
    expected = sgd_update(kind)
    if isinstance(expected, str):  # optax.sgd cannot add float0; ours is a zero or None
      assert update is None or not np.any(key_safe(update)), kind
    elif expected is None:  # a None gradient
      assert update is None, kind
    else:  # zeros, as optax.sgd's
      np.testing.assert_array_equal(update, expected, err_msg=kind)


@pytest.mark.parametrize("name", ["entropy_sgd", "local_entropy", "heat", "hj_fixed_point"])
def test_a_leaf_that_is_not_an_array_is_refused_at_init_by_its_path(name):
  params = {"w": W, "layers": [{"activation": jax.nn.relu}]}
  with pytest.raises(TypeError, match=r"\['layers'\]\[0\]\['activation'\].*eqx.is_inexact_array"):
    FACTORIES[name]().init(params)


@pytest.mark.parametrize("bad, problem", [
    ({"w": jnp.ones(3)}, r"at \['w'\] params have shape \(2,\), the result \(3,\)"),
    ({"w": None}, r"at \['w'\] params have a float array, the result None"),
    ({"v": jnp.ones(2)}, r"params have a leaf at \['w'\], the result at \['v'\]"),
])
@pytest.mark.parametrize("name", list(FACTORIES))
def test_the_gradient_at_x_is_checked_against_the_params(name, bad, problem):
  opt = FACTORIES[name]()
  params = {"w": W}
  with pytest.raises(TypeError, match=r"updates \(the gradient at params\).*" + problem):
    opt.update(bad, opt.init(params), params, grad_fn=lambda p, i: {"w": w_grad(p)})


@pytest.mark.parametrize("name", list(FACTORIES))
def test_an_error_inside_grad_fn_says_what_entropix_passed(name):
  opt = FACTORIES[name]()
  params = {"w": W, "n": jnp.arange(3)}

  def grad_fn(p, i):
    return p.model(i)  # as if p were the model

  with pytest.raises(AttributeError) as info:
    opt.update({"w": w_grad(params), "n": None}, opt.init(params), params, grad_fn=grad_fn)
  note = "\n".join(getattr(info.value, "__notes__", []))
  assert "raised inside your grad_fn(params, i)" in note
  assert "a dict of arrays [int32[3], float32[2]]" in note  # what it got: the params
  assert "eqx.combine(params, static)" in note and "docs/guides/using.md" in note


@pytest.mark.parametrize("key", [jax.random.key(7), jax.random.PRNGKey(7)],
                         ids=["typed key", "raw key"])
@pytest.mark.parametrize("factory", [
    functools.partial(entropix.entropy_sgd, 0.5, gamma=1.0, inner_steps=3),
    functools.partial(entropix.heat, 0.1, sigma=0.01, samples=3),
    lambda key: optax.chain(entropix.local_entropy(1.0, inner_steps=3, key=key), optax.sgd(0.1)),
    lambda key: optax.chain(entropix.gaussian_smoothing(0.01, samples=3, key=key),
                            optax.sgd(0.1)),
], ids=["entropy_sgd", "heat", "local_entropy", "gaussian_smoothing"])
def test_init_copies_the_key_so_a_donated_step_leaves_the_users_key_alive(factory, key):
  opt = factory(key=key)
  params = {"w": W}

  @functools.partial(jax.jit, donate_argnums=(0, 1))
  def step(params, state):
    grad_fn = lambda p, i: {"w": w_grad(p)}
    updates, state = opt.update(grad_fn(params, 0), state, params, grad_fn=grad_fn)
    return optax.apply_updates(params, updates), state

  first = opt.init(params)
  step({"w": W + 0.0}, first)
  key_data = key_safe(key)  # raises if the key's buffer was donated away
  np.testing.assert_array_equal(key_data, key_safe(key))
  again = opt.init(params)  # a second init from the same key works
  leaves = [l for l in jax.tree.leaves(again) if l.shape == (2,) and l.dtype == jnp.uint32]
  np.testing.assert_array_equal(leaves[0], jax.random.key_data(key) if key.dtype != jnp.uint32
                                else key)
