"""The composition matrix: entropix inside the optax wrappers users reach for.

Each row of ``ROWS`` is a wrapper; each column of ``COLUMNS`` an entropix
optimizer. A cell either equals a reference assembled by hand from the bare
optimizer ("works") or is refused at ``init`` or at the first ``update``
with a TypeError that names the wrapper and says what to write instead
("refused"). docs/guides/composing.md is this table in words; the Flax and orbax
rows are in test_composition_flax.py.

Speed: ``run`` compiles one update and calls it once per step, and the
references repeat programs the rows compile anyway, which the compilation
cache then serves.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import entropix

L, B = 6, 8  # minibatches per update, examples per minibatch
REPLICAS = 2


def loss(params, batch):
  hidden = jnp.tanh(batch["x"] @ params["body"]["w"])
  return jnp.mean((hidden @ params["head"]["w"] - batch["y"]) ** 2)


def make_params(seed):
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  return {"body": {"w": jax.random.normal(k1, (3, 4))}, "head": {"w": jax.random.normal(k2, (4,))}}


def make_batches(seed):
  x = jax.random.normal(jax.random.PRNGKey(100 + seed), (L, B, 3))
  return {"x": x, "y": jnp.sin(x[..., 0]) + x[..., 1] * x[..., 2]}


def stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


PARAMS = make_params(0)
BATCHES = make_batches(0)
REPLICA_PARAMS = stack([make_params(r) for r in range(REPLICAS)])
REPLICA_BATCHES = stack([make_batches(r) for r in range(REPLICAS)])


def local_entropy_then_guarded_sgd(learning_rate, gamma, inner_steps, noise, inner_momentum,
                                   reset_inner_momentum, axis_name=None, grad_transform=None):
  """A bare transform as the docs tell users to chain it: a guard after it."""
  return optax.chain(
      entropix.local_entropy(gamma, inner_steps=inner_steps, noise=noise,
                             inner_momentum=inner_momentum,
                             reset_inner_momentum=reset_inner_momentum, axis_name=axis_name,
                             grad_transform=grad_transform),
      optax.apply_if_finite(optax.sgd(learning_rate), 3))


class Column(NamedTuple):
  factory: Callable[..., optax.GradientTransformation]
  defaults: dict[str, Any]
  static: tuple[str, ...] = ("inner_steps",)  # for optax.inject_hyperparams
  replicated: bool = False  # runs under vmap over the replicas, axis "r"
  inner_loop: bool = True  # takes grad_fn
  guarded: bool = True  # an entropix optimizer: skips a non-finite update itself

  def make(self, **overrides):
    return self.factory(**{**self.defaults, **overrides})


COLUMNS = {
    "local_entropy": Column(
        local_entropy_then_guarded_sgd,
        dict(learning_rate=0.3, gamma=0.5, inner_steps=3, noise=1e-3, inner_momentum=0.5,
             reset_inner_momentum=False),
        static=("inner_steps", "reset_inner_momentum"), guarded=False),
    "entropy_sgd": Column(entropix.entropy_sgd,
                          dict(learning_rate=0.3, gamma=0.5, inner_steps=3, noise=1e-3)),
    "hj": Column(entropix.hj, dict(learning_rate=0.3, gamma=0.5, inner_steps=3)),
    "hj_fixed_point": Column(entropix.hj_fixed_point,
                             dict(learning_rate=0.1, gamma=1.0, inner_steps=3)),
    "heat": Column(entropix.heat, dict(learning_rate=0.1, sigma=0.05, samples=3),
                   static=("samples",)),
    "parle": Column(entropix.parle,
                    dict(learning_rate=0.3, gamma=0.5, rho=0.5, axis_name="r", inner_steps=3),
                    replicated=True),
    "elastic_sgd": Column(entropix.elastic_sgd, dict(learning_rate=0.1, rho=0.5, axis_name="r"),
                          static=(), replicated=True, inner_loop=False),
}


def initial_params(column):
  return REPLICA_PARAMS if column.replicated else PARAMS


def per_replica(column, fn, *args):
  """``fn(*args, batches)`` once, or on every replica (vmap, axis "r") with its own batches."""
  if column.replicated:
    return jax.vmap(fn, axis_name="r")(*args, REPLICA_BATCHES)
  return fn(*args, BATCHES)


def run(column, opt, steps=2, *, params=None, state=None, grad_fn_for=None, gradient_at=None,
        extra_for=None, states=None):
  """``steps`` updates of ``opt``: (params, state, the last updates).

  ``states``, a list, receives the state after each update.

  One compiled update, called ``steps`` times. ``grad_fn_for(grad_fn, params)``
  adapts each update's grad_fn; ``gradient_at(grad_fn, params)`` is the
  gradient passed as ``updates`` (default: ``grad_fn(params, 0)``);
  ``extra_for(step)`` adds keyword arguments to ``update``.
  """
  params = initial_params(column) if params is None else params
  if state is None:
    state = jax.jit(lambda p: per_replica(column, lambda p, _: opt.init(p), p))(params)

  @jax.jit
  def step(params, state, extra):
    def one(params, state, extra, batches):
      grad_fn = entropix.minibatch_grad_fn(loss, batches)
      if grad_fn_for is not None:
        grad_fn = grad_fn_for(grad_fn, params)
      gradient = grad_fn(params, 0) if gradient_at is None else gradient_at(grad_fn, params)
      if column.inner_loop:
        extra = {**extra, "grad_fn": grad_fn}
      updates, state = opt.update(gradient, state, params, **extra)
      return optax.apply_updates(params, updates), state, updates

    if column.replicated:
      return jax.vmap(one, axis_name="r", in_axes=(0, 0, None, 0))(params, state, extra,
                                                                   REPLICA_BATCHES)
    return one(params, state, extra, BATCHES)

  updates = None
  for k in range(steps):
    params, state, updates = step(params, state, {} if extra_for is None else extra_for(k))
    if states is not None:
      states.append(state)
  return params, state, updates


def assert_trees_close(actual, expected, rtol=1e-5, atol=1e-6):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(e, np.float32),
                               rtol=rtol, atol=atol)


def assert_refused(column, opt, wrapper, instead, **run_kwargs):
  with pytest.raises(TypeError) as error:
    run(column, opt, **run_kwargs)
  message = str(error.value)
  assert wrapper in message and "Write instead" in message and instead in message, message


def all_finite(tree):
  return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree)
             if jnp.issubdtype(leaf.dtype, jnp.inexact))


def bare(column, steps=2):
  """The optimizer alone: the reference most rows start from."""
  return run(column, column.make(), steps)


def clip(tree, max_norm=0.05):
  norm = jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(tree)))
  return jax.tree.map(lambda g: g * jnp.minimum(1.0, max_norm / norm), tree)


def nan_after_first(grad_fn, params):
  """The gradient at x as it is, NaN at every inner point: a chain that diverges."""
  del params
  return lambda p, i: jax.tree.map(lambda g: jnp.where(i > 0, jnp.nan, g), grad_fn(p, i))


# The part of the params the masked rows train; the mask is a prefix of them.
MASK = {"body": False, "head": True}


class HeadOnly(NamedTuple):
  """By hand: ``opt`` on params["head"] alone, the body held where it is;
  the body's updates are ``body(gradient at the body)``."""

  opt: Any
  body: Callable[[Any], Any]

  def init(self, params):
    return self.opt.init(params["head"])

  def update(self, gradient, state, params, grad_fn=None):
    head_grad_fn = lambda q, i: grad_fn({**params, "head": q}, i)["head"]
    head, state = self.opt.update(gradient["head"], state, params["head"],
                                  grad_fn=head_grad_fn)
    return {"body": self.body(gradient["body"]), "head": head}, state


# --- the rows: each takes a column ------------------------------------------


def chain_then_scale(column):
  actual = run(column, optax.chain(column.make(), optax.scale(-2.0)), steps=1)[2]
  assert_trees_close(actual, jax.tree.map(lambda u: -2.0 * u, bare(column, steps=1)[2]))


def clip_chained_before(column):
  # As documented: a transform chained before sees the gradient at x alone.
  actual = run(column, optax.chain(optax.clip_by_global_norm(0.05), column.make()))[0]
  by_hand = run(column, column.make(), gradient_at=lambda g, p: clip(g(p, 0)))[0]
  assert_trees_close(actual, by_hand)


def clip_every_gradient(column):
  actual = run(column, column.make(grad_transform=optax.clip_by_global_norm(0.05)))[0]
  by_hand = run(column, column.make(),
                grad_fn_for=lambda grad_fn, _: lambda p, i: clip(grad_fn(p, i)))[0]
  assert_trees_close(actual, by_hand)


def masked_weight_decay_after(column):
  mask = lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
  actual = run(column, optax.chain(column.make(), optax.add_decayed_weights(0.1, mask)),
               steps=1)[2]
  decay = jax.tree.map(lambda p: 0.1 * p if p.ndim > 1 + column.replicated else 0 * p,
                       initial_params(column))
  assert_trees_close(actual, jax.tree.map(jnp.add, bare(column, steps=1)[2], decay))


def inject_hyperparams(column):
  # Every numeric argument injected (learning rate, gamma, rho, noise, ...):
  # the numbers do not change.
  opt = optax.inject_hyperparams(column.factory, static_args=column.static)(**column.defaults)
  assert_trees_close(run(column, opt)[0], bare(column)[0])


def masked_without_helper(column):
  opt = optax.masked(column.make(), MASK)
  if column.inner_loop:
    assert_refused(column, opt, "optax.masked", "entropix.masked_grad_fn")
  else:  # Elastic-SGD takes no grad_fn: masked as any optax transform
    assert_trees_close(run(column, opt)[0], run(column, HeadOnly(column.make(), lambda g: g))[0])


def masked_with_helper(column):
  actual = run(column, optax.masked(column.make(), MASK), grad_fn_for=entropix.masked_grad_fn)
  # Outside the mask optax.masked passes the gradient through.
  assert_trees_close(actual[0], run(column, HeadOnly(column.make(), lambda g: g))[0])


def multi_transform_with_helper(column):
  opt = optax.multi_transform({"entropix": column.make(), "frozen": optax.set_to_zero()},
                              {"body": "frozen", "head": "entropix"})
  actual = run(column, opt, grad_fn_for=entropix.masked_grad_fn)[0]
  zeros = lambda g: jax.tree.map(jnp.zeros_like, g)
  assert_trees_close(actual, run(column, HeadOnly(column.make(), zeros))[0])
  assert_trees_close(actual["body"], initial_params(column)["body"], rtol=0, atol=0)


def multi_steps(column):
  opt = optax.MultiSteps(column.make(), 2)
  if column.inner_loop:
    assert_refused(column, opt, "optax.MultiSteps", "microbatches=k")
    return
  # No inner loop: the mean of the two gradients (equal here: the params do
  # not move in between), applied once.
  assert_trees_close(run(column, opt)[0], bare(column, steps=1)[0])


def apply_if_finite_around(column):
  opt = optax.apply_if_finite(column.make(), 3)
  if column.replicated:  # a mean over the replicas inside the wrapper's branch
    assert_refused(column, opt, "optax.apply_if_finite", "entropix's optimizers skip")
    return
  if not column.guarded:  # the wrapper would not see the inner loop diverge
    assert_refused(column, opt, "optax.apply_if_finite", "optax.apply_if_finite(opt, k)")
    return
  assert_trees_close(run(column, opt)[0], bare(column)[0])
  # An inner loop that diverges: not applied, counted, no NaN kept.
  params, state, _ = run(column, opt, steps=1, grad_fn_for=nan_after_first)
  assert_trees_close(params, initial_params(column), rtol=0, atol=0)
  assert all_finite(state)
  assert int(state.notfinite_count) == 0  # optax's: the gradient at x was finite
  assert int(optax.tree.get(state.inner_state, "total_notfinite")) == 1  # entropix's


def diverging_inner_loop(column):
  # No wrapper: the optimizer (or the guard after the bare transform) skips
  # the update and counts it; the state keeps no NaN.
  if column.inner_loop:
    params, state, _ = run(column, column.make(), grad_fn_for=nan_after_first)
    np.testing.assert_array_equal(optax.tree.get(state, "total_notfinite"),
                                  np.full(REPLICAS, 2) if column.replicated else 2)
    assert_trees_close(params, initial_params(column), rtol=0, atol=0)
  else:  # Elastic-SGD's one gradient, NaN on replica 0 alone: replica 0 skips
    nan_on_0 = lambda g, _: lambda p, i: jax.tree.map(
        lambda x: jnp.where(jax.lax.axis_index("r") == 0, jnp.nan, x), g(p, i))
    params, state, _ = run(column, column.make(), grad_fn_for=nan_on_0)
    np.testing.assert_array_equal(optax.tree.get(state, "total_notfinite"), [2, 0])
    assert_trees_close(jax.tree.map(lambda p: p[0], params),
                       jax.tree.map(lambda p: p[0], initial_params(column)), rtol=0, atol=0)
  assert all_finite(state) and all_finite(params)


def lookahead_by_hand(column):
  """Two fast steps of the bare optimizer; then slow <- slow + (fast - slow) / 2, fast <- slow."""
  slow, fast = initial_params(column), bare(column)[0]
  synced = jax.tree.map(lambda s, f: s + 0.5 * (f - s), slow, fast)
  return optax.LookaheadParams(fast=synced, slow=synced)


def at_fast(grad_fn, params):
  return grad_fn(params.fast, 0)


def lookahead_direct(column):
  opt = optax.lookahead(column.make(), sync_period=2, slow_step_size=0.5)
  params = optax.LookaheadParams.init_synced(initial_params(column))
  if column.inner_loop:
    assert_refused(column, opt, "optax.lookahead", "entropix.forward_extra_args",
                   params=params, gradient_at=at_fast)
  else:
    actual = run(column, opt, params=params, gradient_at=at_fast)[0]
    assert_trees_close(actual, lookahead_by_hand(column))


def lookahead_forwarded(column):
  opt = entropix.forward_extra_args(optax.lookahead, column.make(), sync_period=2,
                                    slow_step_size=0.5)
  params = optax.LookaheadParams.init_synced(initial_params(column))
  actual = run(column, opt, params=params, gradient_at=at_fast)[0]
  assert_trees_close(actual, lookahead_by_hand(column))


class Scaled(NamedTuple):
  """By hand: ``opt``'s updates times a scale that the caller passes."""

  opt: Any

  def init(self, params):
    return self.opt.init(params)

  def update(self, gradient, state, params, grad_fn=None, scale=1.0):
    extra = {} if grad_fn is None else {"grad_fn": grad_fn}
    updates, state = self.opt.update(gradient, state, params, **extra)
    return jax.tree.map(lambda u: scale * u, updates), state


def reduce_on_plateau_after(column):
  opt = optax.chain(column.make(),
                    optax.contrib.reduce_on_plateau(factor=0.5, patience=1, cooldown=0))
  values = [1.0, 2.0, 3.0]  # no improvement after the first: the scale drops
  states = []
  actual = run(column, opt, steps=3, extra_for=lambda k: {"value": values[k]}, states=states)[0]
  # Every replica sees the same values: one scale.
  scales = [float(np.ravel(optax.tree.get(state, "scale"))[0]) for state in states]
  assert scales[0] == 1.0 and scales[2] < 1.0
  by_hand = run(column, Scaled(column.make()), steps=3,
                extra_for=lambda k: {"scale": scales[k]})[0]
  assert_trees_close(actual, by_hand)


def flatten(column):
  opt = optax.flatten(column.make())
  if column.inner_loop:
    assert_refused(column, opt, "optax.flatten", "drop optax.flatten")
  else:
    assert_trees_close(run(column, opt)[0], bare(column)[0])


def jit_matches_eager(column):
  if column.replicated:
    pytest.skip("vmapped over their replicas in every row; test_replicas.py runs them on devices")
  opt = column.make()
  grad_fn = entropix.minibatch_grad_fn(loss, BATCHES)
  state = opt.init(PARAMS)
  eager, _ = opt.update(grad_fn(PARAMS, 0), state, PARAMS, grad_fn=grad_fn)
  assert_trees_close(bare(column, steps=1)[2], eager)


def vmap_over_models(column):
  if column.replicated:
    pytest.skip("vmapped over their replicas in every row")
  opt = column.make()
  models = REPLICA_PARAMS  # two models, trained alike on the same data

  def one(params):
    grad_fn = entropix.minibatch_grad_fn(loss, BATCHES)
    updates, _ = opt.update(grad_fn(params, 0), opt.init(params), params, grad_fn=grad_fn)
    return updates

  together = jax.jit(jax.vmap(one))(models)
  alone = run(column, column.make(), steps=1, params=jax.tree.map(lambda x: x[1], models))[2]
  assert_trees_close(jax.tree.map(lambda x: x[1], together), alone)


def pmap_data_parallel(column):
  if column.replicated:
    pytest.skip("Parle and Elastic-SGD on devices: test_replicas.py")
  devices = jax.devices()[:2]
  assert len(devices) == 2, "conftest.py simulates 8 CPU devices"
  opt = column.make(axis_name="d")
  # Each device half of every minibatch; the transform averages over "d".
  halves = jax.tree.map(lambda b: b.reshape(L, 2, B // 2, *b.shape[2:]).swapaxes(0, 1), BATCHES)

  def on_device(halves):
    grad_fn = entropix.minibatch_grad_fn(loss, halves)
    updates, _ = opt.update(grad_fn(PARAMS, 0), opt.init(PARAMS), PARAMS, grad_fn=grad_fn)
    return updates

  actual = jax.pmap(on_device, axis_name="d", devices=devices)(halves)
  for d in range(2):
    assert_trees_close(jax.tree.map(lambda u: u[d], actual), bare(column, steps=1)[2],
                       rtol=1e-4, atol=1e-6)


def bfloat16_params(column):
  params16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), initial_params(column))
  params, state, updates = run(column, column.make(), params=params16)
  assert all(u.dtype == jnp.bfloat16 for u in jax.tree.leaves(updates))
  assert all(p.dtype == jnp.bfloat16 for p in jax.tree.leaves(params))
  assert all_finite(state)
  assert_trees_close(params, bare(column)[0], rtol=5e-2, atol=2e-2)


ROWS = {
    "chain_then_scale": chain_then_scale,
    "clip_chained_before": clip_chained_before,
    "clip_every_gradient": clip_every_gradient,
    "masked_weight_decay_after": masked_weight_decay_after,
    "inject_hyperparams": inject_hyperparams,
    "masked_without_helper": masked_without_helper,
    "masked_with_helper": masked_with_helper,
    "multi_transform_with_helper": multi_transform_with_helper,
    "multi_steps": multi_steps,
    "apply_if_finite_around": apply_if_finite_around,
    "diverging_inner_loop": diverging_inner_loop,
    "lookahead_direct": lookahead_direct,
    "lookahead_forwarded": lookahead_forwarded,
    "reduce_on_plateau_after": reduce_on_plateau_after,
    "flatten": flatten,
    "vmap_over_models": vmap_over_models,
    "pmap_data_parallel": pmap_data_parallel,
    "bfloat16_params": bfloat16_params,
}
# Elastic-SGD takes no grad_fn: nothing to clip inside, to mask or to forward.
NOT_APPLICABLE = {("clip_every_gradient", "elastic_sgd"), ("masked_with_helper", "elastic_sgd"),
                  ("multi_transform_with_helper", "elastic_sgd"),
                  ("lookahead_forwarded", "elastic_sgd")}


@pytest.mark.parametrize("column", list(COLUMNS))
@pytest.mark.parametrize("row", list(ROWS))
def test_composition_matrix(row, column):
  if (row, column) in NOT_APPLICABLE:
    pytest.skip("does not apply")
  ROWS[row](COLUMNS[column])


def test_apply_if_finite_around_a_data_parallel_optimizer_is_refused_not_a_deadlock():
  # Under pmap a device whose gradient is not finite would skip the mean over
  # "d" that the others wait in: XLA aborts the process. Refused when traced.
  opt = optax.apply_if_finite(entropix.entropy_sgd(0.3, gamma=0.5, inner_steps=3,
                                                   axis_name="d"), 3)
  halves = jax.tree.map(lambda b: b.reshape(L, 2, B // 2, *b.shape[2:]).swapaxes(0, 1), BATCHES)

  def on_device(halves):
    grad_fn = entropix.minibatch_grad_fn(loss, halves)
    return opt.update(grad_fn(PARAMS, 0), opt.init(PARAMS), PARAMS, grad_fn=grad_fn)[0]

  with pytest.raises(TypeError, match="optax.apply_if_finite.*deadlock"):
    jax.pmap(on_device, axis_name="d", devices=jax.devices()[:2])(halves)


def test_masked_grad_fn_keeps_the_minibatch_count_and_takes_whole_params():
  grad_fn = entropix.minibatch_grad_fn(loss, BATCHES)
  partial = entropix.masked_grad_fn(grad_fn, PARAMS)
  assert partial.minibatches == L
  assert_trees_close(partial(PARAMS, 2), grad_fn(PARAMS, 2), rtol=0, atol=0)
  hidden = {"body": optax.MaskedNode(), "head": PARAMS["head"]}
  assert_trees_close(partial(hidden, 2)["head"], grad_fn(PARAMS, 2)["head"], rtol=0, atol=0)
  assert isinstance(partial(hidden, 2)["body"], optax.MaskedNode)
  with pytest.raises(TypeError, match="grad_fn must be callable"):
    entropix.masked_grad_fn(None, PARAMS)


def test_forward_extra_args_serves_any_wrapper_that_drops_them():
  def dropping(inner, factor):  # a wrapper in optax's style that forwards nothing
    def update(updates, state, params=None):
      updates, state = inner.update(updates, state, params)
      return jax.tree.map(lambda u: factor * u, updates), state
    return optax.GradientTransformation(inner.init, update)

  opt = entropix.forward_extra_args(dropping, COLUMNS["entropy_sgd"].make(), 3.0)
  column = COLUMNS["entropy_sgd"]
  assert_trees_close(run(column, opt, steps=1)[2],
                     jax.tree.map(lambda u: 3.0 * u, bare(column, steps=1)[2]))
  with pytest.raises(TypeError, match="a wrapper on the way dropped it"):
    run(column, optax.with_extra_args_support(dropping(column.make(), 3.0)), steps=1)


# How docs/guides/composing.md names each row: the page is this matrix in words.
DOCUMENTED_AS = {
    "chain_then_scale": "optax.chain(opt, optax.scale(s))",
    "clip_chained_before": "optax.chain(optax.clip_by_global_norm(c), opt)",
    "clip_every_gradient": "opt(..., grad_transform=t)",
    "masked_weight_decay_after": "optax.add_decayed_weights(wd, mask)",
    "inject_hyperparams": "optax.inject_hyperparams(entropix.entropy_sgd",
    "masked_without_helper": "the same with a plain `grad_fn`",
    "masked_with_helper": "grad_fn=entropix.masked_grad_fn(grad_fn, params)",
    "multi_transform_with_helper": "optax.multi_transform({...}, labels)",
    "multi_steps": "optax.MultiSteps(opt, k)",
    "apply_if_finite_around": "optax.apply_if_finite(entropy_sgd(...), k)",
    "diverging_inner_loop": "## When the inner loop diverges",
    "lookahead_direct": "optax.lookahead(opt, ...)",
    "lookahead_forwarded": "entropix.forward_extra_args(wrapper, opt, ...)",
    "reduce_on_plateau_after": "optax.contrib.reduce_on_plateau",
    "flatten": "optax.flatten(opt)",
    "vmap_over_models": "`jax.vmap` over several models",
    "pmap_data_parallel": "`jax.pmap` / `shard_map`, data parallel",
    "bfloat16_params": "bfloat16 params",
}


def test_the_docs_page_has_every_row():
  import pathlib

  root = pathlib.Path(__file__).resolve().parents[1]
  page = (root / "docs" / "guides" / "composing.md").read_text()
  assert set(DOCUMENTED_AS) == set(ROWS)
  for row, text in DOCUMENTED_AS.items():
    assert text in page, f"docs/guides/composing.md does not mention {row} ({text!r})"


@pytest.mark.parametrize("build", [
    lambda: optax.apply_if_finite(COLUMNS["elastic_sgd"].make(), 3),
    lambda: optax.apply_if_finite(COLUMNS["parle"].make(), 3),
    lambda: optax.MultiSteps(COLUMNS["entropy_sgd"].make(), 2),
    lambda: optax.lookahead(COLUMNS["hj"].make(), 2, 0.5),
    lambda: optax.flatten(COLUMNS["heat"].make()),
])
def test_a_refused_wrapper_is_refused_at_init_before_any_update(build):
  opt = build()
  with pytest.raises(TypeError, match="Write instead"):
    jax.vmap(opt.init, axis_name="r")(REPLICA_PARAMS)
