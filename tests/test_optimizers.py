"""Tests of training/optimizers.py: schedules and the optimizer factory."""

import jax
import jax.numpy as jnp
import optax
import pytest

import entropix
from training import config as cfg
from training import optimizers


def test_lr_schedule_is_piecewise_constant_in_effective_epochs():
  config = cfg.build_config(optimizer="sgd", lr=1.0, lr_schedule="2:0.5,3:0.25")
  schedule = optimizers.lr_schedule(config, updates_per_epoch=10.0)
  assert [float(schedule(s)) for s in (0, 19, 20, 29, 30, 10_000)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
  default = optimizers.lr_schedule(cfg.build_config(), updates_per_epoch=10.0)
  assert [float(default(s)) for s in (599, 600, 1199)] == pytest.approx([0.1, 0.02, 0.02])


def test_scoping_stops_where_the_inner_loop_would_diverge():
  hj = cfg.build_config(optimizer="hj").optimizer  # mnistfc: gamma0 1e-4, scoping 1e-3
  gamma = optimizers.gamma_schedule(hj)
  assert float(gamma(0)) == pytest.approx(1e-4)
  assert float(gamma(1000)) == pytest.approx(1e-4 * 1.001**1000, rel=1e-4)
  assert float(gamma(18_750)) == pytest.approx(1 / hj.inner_lr)  # not 1.4e4
  assert optimizers.gamma_schedule(cfg.build_config(scoping=0.0).optimizer) == 1e-4


def test_heat_sigma_squared_shrinks_by_one_plus_scoping_per_update():
  heat = cfg.build_config(optimizer="heat", sigma=0.1, scoping=0.01).optimizer
  sigma = optimizers.sigma_schedule(heat)
  assert float(sigma(10)) ** 2 == pytest.approx(0.01 / 1.01**10, rel=1e-5)


def _by_hand(name, key):
  """What the config below describes, written out with optax and entropix."""
  lr = 0.1  # the default schedule's first value; only update 0 runs here
  if name == "sgd":
    return optax.chain(optax.add_decayed_weights(0.01), optax.sgd(lr, momentum=0.9, nesterov=True))
  common = dict(momentum=0.9, weight_decay=0.01, axis_name="batch", unroll=2)
  gamma = entropix.scoping(1e-4, 1e-3, end_value=1 / {"hj": 0.25}.get(name, 0.1))
  if name == "heat":
    return entropix.heat(lr, sigma=0.01, samples=20, key=key, **common)
  if name == "hj":
    return entropix.hj(lr, gamma=gamma, inner_steps=5, inner_lr=0.25, **common)
  return entropix.entropy_sgd(lr, gamma=gamma, inner_steps=20, inner_lr=0.1, noise=1e-4,
                              alpha=0.75, key=key, **common)


@pytest.mark.parametrize("name", list(cfg.OPTIMIZERS))
def test_the_factory_builds_the_optimizer_the_config_describes(name):
  config = cfg.build_config(optimizer=name, devices=1, weight_decay=0.01,
                            **({} if name == "sgd" else {"unroll": 2}))
  key = jax.random.PRNGKey(7)
  params = {"w": jnp.array([-1.0, -0.3, 0.4, 1.2])}
  grad_fn = lambda p, i: jax.tree.map(lambda w: jnp.sin(w * (i + 1.0)), p)

  def first_update(tx):
    grads = grad_fn(params, 0)
    step = lambda s: tx.update(grads, s, params, grad_fn=grad_fn)[0]
    return jax.pmap(step, axis_name="batch")(jax.tree.map(lambda x: x[None], tx.init(params)))

  got = first_update(optimizers.make_optimizer(config, 10.0, key, "batch"))
  want = first_update(optax.with_extra_args_support(_by_hand(name, key)))
  assert jnp.all(got["w"] != 0)
  assert jnp.allclose(got["w"], want["w"], rtol=1e-6, atol=0), name
