"""Tests of training/optimizers/: schedules and the optimizers the declarations build."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

import entropix
from training import config as cfg
from training import optimizers
from training.optimizers import paper


def test_lr_schedule_is_piecewise_constant_in_effective_epochs():
  config = cfg.build_config(optimizer="sgd", lr=1.0, lr_schedule="2:0.5,3:0.25")
  schedule = optimizers.lr_schedule(config, updates_per_epoch=10.0)
  assert [float(schedule(s)) for s in (0, 19, 20, 29, 30, 10_000)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
  # The default: x0.2 every 60 effective epochs, from the cell's tuned lr.
  config = cfg.build_config()
  default = optimizers.lr_schedule(config, updates_per_epoch=10.0)
  assert [float(default(s)) for s in (599, 600, 1199, 1200)] == pytest.approx(
      [config.lr, 0.2 * config.lr, 0.2 * config.lr, 0.04 * config.lr])


def test_scoping_stops_where_the_inner_loop_would_diverge():
  hj = cfg.build_config(optimizer="hj", gamma=1e-4).optimizer  # mnistfc, scoping 1e-3
  gamma = paper.gamma_schedule(hj)
  assert float(gamma(0)) == pytest.approx(1e-4)
  assert float(gamma(1000)) == pytest.approx(1e-4 * 1.001**1000, rel=1e-4)
  assert float(gamma(18_750)) == pytest.approx(1 / hj.inner_lr)  # not 1.4e4
  assert paper.gamma_schedule(cfg.build_config(gamma=1e-4, scoping=0.0).optimizer) == 1e-4
  # The fixed point has no ceiling: as gamma grows it tends to the plain gradient.
  fp = paper.gamma_schedule(cfg.build_config(optimizer="hj-fixed-point").optimizer)
  assert float(fp(10_000)) == pytest.approx(10.0 * 1.001**10_000, rel=1e-3)  # float32


def test_heat_sigma_squared_shrinks_by_one_plus_scoping_per_update():
  heat = cfg.build_config(optimizer="heat", sigma=0.1, scoping=0.01).optimizer
  sigma = paper.sigma_schedule(heat)
  assert float(sigma(10)) ** 2 == pytest.approx(0.01 / 1.01**10, rel=1e-5)


# Not the defaults anywhere, so an argument the factory forgets to pass shows.
OWN = {"gamma": 0.02, "scoping": 0.01, "inner_steps": 3, "inner_lr": 0.05, "noise": 1e-3,
       "alpha": 0.5, "sigma": 0.03, "samples": 3, "inner_momentum": 0.6, "damping": 0.4,
       "rho": 0.5, "rho_max": 2.0, "gamma_max": 0.9, "b1": 0.8, "b2": 0.99, "eps": 1e-3,
       "sam_rho": 0.07, "swa_fraction": 0.5}


def _by_hand(name, key):
  """What the config below describes, written out with optax and entropix."""
  lr = 0.3  # the first value of the default schedule; two updates run here
  sgd = optax.chain(optax.add_decayed_weights(0.01), optax.sgd(lr, momentum=0.8, nesterov=True))
  if name in ("sgd", "swa"):  # SWA steps as SGD; its average is tested below
    return sgd
  if name == "adamw":
    return optax.adamw(lr, b1=0.8, b2=0.99, eps=1e-3, weight_decay=0.01)
  if name == "sam":
    ascent = optax.chain(optax.contrib.normalize(), optax.sgd(0.07))
    return optax.contrib.sam(sgd, ascent, opaque_mode=True, batch_axis_name="batch")
  common = dict(momentum=0.8, weight_decay=0.01, axis_name="batch", unroll=2)
  gamma = entropix.scoping(0.02, 0.01, end_value=1 / 0.05)
  rho = entropix.scoping(0.5, 0.01, end_value=2.0)
  if name == "elastic-sgd":
    return entropix.elastic_sgd(lr, rho=rho, axis_name="replica", momentum=0.8, weight_decay=0.01)
  if name == "parle":
    return entropix.parle(lr, gamma=entropix.scoping(0.02, 0.01, end_value=0.9), rho=rho,
                          axis_name="replica", data_axis_name="batch", inner_steps=3,
                          inner_lr=0.05, noise=1e-3, alpha=0.5, key=key, momentum=0.8,
                          weight_decay=0.01, unroll=2, inner_momentum=0.6,
                          reset_inner_momentum=False)
  if name == "heat":
    sigma = optax.exponential_decay(0.03, 1, 1.01**-0.5)
    return entropix.heat(lr, sigma=sigma, samples=3, key=key, **common)
  kept = dict(inner_momentum=0.6, reset_inner_momentum=False)  # the authors' inner buffer
  if name == "hj":
    return entropix.hj(lr, gamma=gamma, inner_steps=3, inner_lr=0.05, **kept, **common)
  if name == "hj-fixed-point":  # no ceiling on gamma
    return entropix.hj_fixed_point(lr, gamma=entropix.scoping(0.02, 0.01), inner_steps=3,
                                   damping=0.4, **common)
  average = dict(average="uniform") if name == "heat-uniform" else dict(alpha=0.5)
  return entropix.entropy_sgd(lr, gamma=gamma, inner_steps=3, inner_lr=0.05, noise=1e-3,
                              key=key, **kept, **average, **common)


@pytest.mark.parametrize("name", list(cfg.OPTIMIZERS))
def test_the_factory_builds_the_optimizer_the_config_describes(name):
  fields = [f.name for f in dataclasses.fields(cfg.OPTIMIZERS[name])]
  declaration = cfg.OPTIMIZERS[name]
  config = cfg.build_config(optimizer=name, devices=1, weight_decay=0.01, lr=0.3,
                            **({"momentum": 0.8} if "momentum" in declaration.reads else {}),
                            **({"unroll": 2} if declaration.inner_loop else {}),
                            **{k: v for k, v in OWN.items() if k in fields})
  key = jax.random.PRNGKey(7)
  params = {"w": jnp.array([-1.0, -0.3, 0.4, 1.2])}
  grad_fn = lambda p, i: jax.tree.map(lambda w: jnp.sin(w * (i + 1.0)), p)

  def first_updates(tx, count=2):  # two updates, so scoping's k = 1 shows too
    def step(s, p):
      updates, s = tx.update(grad_fn(p, 0), s, p, grad_fn=grad_fn)
      return s, optax.apply_updates(p, updates)
    # One device, two replicas apart (so that the elastic pull shows): both
    # axes bound (elastic-sgd and parle use "replica").
    starts = [params, jax.tree.map(lambda w: 0.5 - w, params)]
    lead = lambda ts: jax.tree.map(lambda *xs: jnp.stack(xs)[None], *ts)
    state, p = lead([tx.init(x) for x in starts]), lead(starts)
    for _ in range(count):  # (a kept inner buffer shows from the second update)
      state, p = jax.pmap(jax.vmap(step, axis_name="replica"), axis_name="batch")(state, p)
    return p

  got = first_updates(optimizers.make_optimizer(config, 10.0, key, "batch"))
  want = first_updates(optax.with_extra_args_support(_by_hand(name, key)))
  assert jnp.all(got["w"][0, 0] != params["w"])
  assert jnp.allclose(got["w"], want["w"], rtol=1e-6, atol=0), name


def _updates(tx, params, grad_fn, count):
  """The params after ``count`` updates of ``tx`` (the gradient at x is grad_fn(x, 0)),
  and the state."""
  state = tx.init(params)
  for _ in range(count):
    updates, state = tx.update(grad_fn(params, 0), state, params, grad_fn=grad_fn)
    params = optax.apply_updates(params, updates)
  return params, state


def test_sam_steps_with_the_gradient_at_the_end_of_its_ascent_step():
  config = cfg.build_config(optimizer="sam", devices=1, lr=0.3, momentum=0.8,
                            weight_decay=0.01, sam_rho=0.07)
  x = jnp.array([-1.0, -0.3, 0.4, 1.2])
  grad_fn = lambda p, i: jnp.sin(3 * p) + i  # SAM takes both on minibatch 0
  got, _ = jax.pmap(lambda p: _updates(optimizers.make_optimizer(
      config, 10.0, jax.random.PRNGKey(0), "batch"), p, grad_fn, 1), axis_name="batch")(x[None])
  g = grad_fn(x, 0)
  ascent = x + 0.07 * g / jnp.linalg.norm(g)
  # SGD's first Nesterov step on the gradient there, with the weight decay at x.
  want = x - 0.3 * (1 + 0.8) * (grad_fn(ascent, 0) + 0.01 * x)
  np.testing.assert_allclose(got[0], want, rtol=1e-6)
  assert config.backprops_per_update == 2 and config.optimizer.minibatches_per_update == 1


def test_swa_averages_the_iterates_of_the_last_part_of_the_budget():
  # 4 effective epochs of 2 updates: 8 updates, the last round(0.4 * 8) = 3 averaged.
  config = cfg.build_config(optimizer="swa", devices=1, lr=0.1, effective_epochs=4.0,
                            swa_fraction=0.4, lr_schedule="none")
  x = jnp.array([-1.0, -0.3, 0.4, 1.2])
  grad_fn = lambda p, i: jnp.sin(3 * p)
  tx = optimizers.make_optimizer(config, 2.0, jax.random.PRNGKey(0))
  sgd = optax.sgd(0.1, momentum=0.9, nesterov=True)
  iterates, p, s = [], x, sgd.init(x)
  for _ in range(8):
    u, s = sgd.update(grad_fn(p, 0), s, p)
    p = optax.apply_updates(p, u)
    iterates.append(p)
  for count, averaged in ((5, 0), (6, 1), (8, 3)):
    params, state = _updates(tx, x, grad_fn, count)
    np.testing.assert_allclose(params, iterates[count - 1], rtol=1e-6)
    assert int(state.count) == averaged
    evaluated = config.optimizer.evaluated_params(params, state)
    want = jnp.mean(jnp.stack(iterates[5:count]), 0) if averaged else params
    np.testing.assert_allclose(evaluated, want, rtol=1e-6)
  # A resumed run whose budget grew averages its new window: the average
  # restarts at the new start, whatever it held.
  state = state._replace(step=jnp.int32(5), count=jnp.int32(2))
  updates, state = tx.update(grad_fn(params, 0), state, params, grad_fn=grad_fn)
  assert int(state.count) == 1
  np.testing.assert_allclose(state.average, optax.apply_updates(params, updates), rtol=1e-6)
