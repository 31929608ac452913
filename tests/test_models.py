"""Tests of the paper's networks in models/."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models

SHAPES = {"mnistfc": (28, 28), "lenet": (28, 28, 1), "allcnn": (32, 32, 3)}
COUNTS = {"mnistfc": 1_867_786, "lenet": 131_220, "allcnn": 1_667_166}


def init(name, batch=4, axis_name=None):
  model = models.create(name, axis_name=axis_name)
  x = jax.random.normal(jax.random.PRNGKey(0), (batch, *SHAPES[name]))
  variables = model.init(jax.random.PRNGKey(1), x, train=False)
  return model, variables, x


@pytest.mark.parametrize("name", list(COUNTS))
def test_parameter_counts(name):
  x = jnp.zeros((1, *SHAPES[name]))
  shapes = jax.eval_shape(lambda: models.create(name).init(jax.random.PRNGKey(0), x, train=False))
  assert sum(p.size for p in jax.tree.leaves(shapes["params"])) == COUNTS[name]


@pytest.mark.parametrize("name", list(COUNTS))
def test_train_flag_switches_dropout_and_batchnorm(name):
  model, variables, x = init(name)
  apply = lambda key: model.apply(
      variables, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"]
  )
  (a, stats), (b, _) = apply(jax.random.PRNGKey(2)), apply(jax.random.PRNGKey(3))
  assert a.shape == (4, 10)
  assert not np.allclose(a, b)  # dropout masks differ
  moved = jax.tree.map(lambda s, t: not np.allclose(s, t), stats["batch_stats"],
                       variables["batch_stats"])
  assert all(jax.tree.leaves(moved))  # every BatchNorm updated its statistics
  e1 = model.apply(variables, x, train=False)
  e2 = model.apply(variables, x, train=False)
  np.testing.assert_array_equal(e1, e2)  # evaluation is deterministic
  # Evaluation uses running statistics: a sample's logits do not depend on the batch.
  np.testing.assert_allclose(model.apply(variables, x[:1], train=False), e1[:1], rtol=1e-5, atol=1e-5)


def test_batchnorm_statistics_span_devices():
  # Without dropout (whose masks depend on the split), 4 devices of 2 samples
  # give the BatchNorm statistics of one batch of 8.
  _, variables, x = init("lenet", batch=8)
  model = models.LeNet(axis_name="batch", dropout=0.0)
  single = models.LeNet(dropout=0.0)
  _, want = single.apply(variables, x, train=True, rngs={"dropout": jax.random.PRNGKey(0)},
                         mutable=["batch_stats"])

  def stats(xs):
    _, new = model.apply(variables, xs, train=True, rngs={"dropout": jax.random.PRNGKey(0)},
                         mutable=["batch_stats"])
    return new

  got = jax.pmap(stats, axis_name="batch", devices=jax.devices()[:4])(x.reshape(4, 2, 28, 28, 1))
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g[0], w, rtol=1e-4, atol=1e-6)


def test_unknown_model_is_refused_by_name():
  with pytest.raises(ValueError, match="resnet"):
    models.create("resnet")
