"""Tests of training/steps.py: the on-device sampler, step and evaluation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import input_pipeline
import models
import training
from training import steps, streams


def test_batches_are_a_fresh_permutation_every_epoch():
  config = training.build_config(optimizer="sgd", batch_size=8, effective_epochs=1.0)
  draw = jax.jit(steps.make_batch_sampler(config, 36, jax.random.PRNGKey(0)))
  perm, epoch, rows = np.zeros(36, np.int32), np.int32(-1), []
  for j in range(8):  # two epochs of 36 // 8 = 4 minibatches
    (perm, epoch), r = draw(perm, epoch, j)
    rows.append(np.asarray(r[0]))
  for first in (0, 4):
    seen = np.concatenate(rows[first:first + 4])
    assert len(set(seen)) == 32 and seen.min() >= 0 and seen.max() < 36  # no repeats
  assert not np.array_equal(rows[0], rows[4])  # reshuffled


def _mean_batch_stats(model, params, batch_stats, dataset, scaling, batch=16):
  """The training set's minibatches in order, train mode, no dropout: their mean statistics."""
  stats = []
  for k in range(dataset.train_images.shape[0] // batch):
    x = scaling(dataset.train_images[batch * k:batch * (k + 1)])
    _, state = model.apply({"params": params,
                            "batch_stats": jax.tree.map(np.zeros_like, batch_stats)},
                           x, train=True, dropout=False, mutable=["batch_stats"])
    stats.append(jax.tree.map(lambda s: s / 0.1, state["batch_stats"]))
  return jax.tree.map(lambda *s: np.mean(s, axis=0), *stats)


def _test_error_and_loss(model, params, stats, dataset, scaling):
  logits = model.apply({"params": params, "batch_stats": stats},
                       scaling(dataset.test_images), train=False)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, dataset.test_labels).mean()
  return 100 * float(np.mean(np.argmax(logits, -1) != dataset.test_labels)), float(loss)


def test_evaluation_uses_the_training_sets_mean_batch_statistics(tiny, tmp_path):
  config = tiny(optimizer="sgd", effective_epochs=0.25)
  result = training.train_and_evaluate(config, tmp_path)
  dataset, scaling = input_pipeline.load(config.run.data_dir, "centered")
  model = models.create("mnistfc", param_init=config.param_init)
  params = result.state.params
  want = _mean_batch_stats(model, params, result.state.batch_stats, dataset, scaling)
  for got, expected in zip(jax.tree.leaves(result.state.batch_stats), jax.tree.leaves(want)):
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
  error, _ = _test_error_and_loss(model, params, want, dataset, scaling)
  assert result.summary["val_error"] == pytest.approx(error, abs=1e-4)


def test_swa_is_evaluated_at_its_average_with_the_averages_statistics(tiny, tmp_path):
  # 8 updates, the last 4 averaged: the evaluation measures the average, its
  # statistics re-estimated; the last iterate scores otherwise.
  config = tiny(optimizer="swa", effective_epochs=0.5, swa_fraction=0.5)
  result = training.train_and_evaluate(config, tmp_path)
  dataset, scaling = input_pipeline.load(config.run.data_dir, "centered")
  model = models.create("mnistfc", param_init=config.param_init)
  opt_state = result.state.opt_state
  assert int(opt_state.count) == 4 and result.history[-1]["step"] == 8
  average = opt_state.average
  stats = _mean_batch_stats(model, average, result.state.batch_stats, dataset, scaling)
  for got, expected in zip(jax.tree.leaves(result.state.batch_stats), jax.tree.leaves(stats)):
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
  _, loss = _test_error_and_loss(model, average, stats, dataset, scaling)
  assert result.summary["val_loss"] == pytest.approx(loss, rel=1e-4)
  last = _mean_batch_stats(model, result.state.params, stats, dataset, scaling)
  _, last_loss = _test_error_and_loss(model, result.state.params, last, dataset, scaling)
  assert abs(last_loss - loss) > 1e-3 * loss


class _KeySpy:
  """A stand-in network that records the dropout key of every forward pass."""

  def __init__(self):
    self.keys = []

  def apply(self, variables, x, *, train, rngs, mutable):
    key = rngs["dropout"]
    jax.debug.callback(lambda k: self.keys.append(tuple(np.asarray(k))), key)
    noise = jax.random.uniform(key, (x.shape[0], 10))  # so the key matters to the loss
    logits = x.reshape(x.shape[0], -1)[:, :10] * variables["params"]["w"] + noise
    return logits, {"batch_stats": {}}


def test_each_minibatch_of_an_update_has_its_own_dropout_key(tiny):
  import entropix
  from training import devices

  config = tiny(optimizer="entropy-sgd", inner_steps=3, batch_size=4)
  spy, seed_key = _KeySpy(), jax.random.PRNGKey(config.seed)
  tx = entropix.entropy_sgd(0.1, gamma=1.0, inner_steps=3, axis_name=devices.AXIS)
  params = {"w": jnp.ones(10)}
  state = steps.TrainState(np.zeros((), np.int32), params, {}, tx.init(params),
                           np.zeros(8, np.int32), np.full((), -1, np.int32))
  data = steps.DeviceData(np.ones((8, 28, 28), np.uint8), np.zeros(8, np.int32),
                          np.ones((4, 28, 28), np.uint8), np.zeros(4, np.int32), np.ones(4))
  parallel = devices.Parallel(jax.local_devices()[:1], "pmap")
  one_step = steps.make_train_step(spy, tx, config, 8, input_pipeline.SCALINGS["raw"])
  keys = streams.seed_keys(config)
  step = parallel.map(lambda s, d: one_step(s, d, keys))
  state = parallel.put(state)
  for _ in range(2):
    state, out = step(state, parallel.put(data))
  jax.block_until_ready(out)
  dropout_key = streams.of(seed_key).dropout
  want = [tuple(np.asarray(jax.random.fold_in(dropout_key, j))) for j in range(6)]
  assert sorted(set(spy.keys)) == sorted(want)  # minibatch j of the run: fold_in(key, j)
