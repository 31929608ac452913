"""BatchNorm statistics re-estimated (entropix.linen and entropix.nnx): the mean of the
minibatches' own means and variances, dropout off, whatever each layer's momentum."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import entropix.linen
import entropix.nnx

N, B = 5, 16
BATCHES = jax.random.normal(jax.random.key(0), (N, B, 3)) * 3.0 + 1.0


def expected(features):
  """Per-feature mean over minibatches of each minibatch's mean and (biased) variance."""
  return features.mean(1).mean(0), features.var(1).mean(0)


class LinenNet(nn.Module):
  @nn.compact
  def __call__(self, x, train):
    x = nn.Dense(4, name="first")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.7, name="bn1")(x)
    x = nn.Dropout(0.5, deterministic=not train)(x)
    x = nn.Dense(2, name="second")(nn.relu(x))
    return nn.BatchNorm(use_running_average=not train, name="bn2")(x)  # momentum 0.99


def test_linen_statistics_are_the_minibatches_mean_with_dropout_off():
  model = LinenNet()
  variables = model.init(jax.random.key(1), BATCHES[0], train=False)
  apply_fn = lambda v, b: model.apply(v, b, train=True, mutable=["batch_stats"],
                                      rngs={"dropout": jax.random.key(2)})
  stats = entropix.linen.recompute_batch_stats(apply_fn, variables, BATCHES)
  first = BATCHES @ variables["params"]["first"]["kernel"] + variables["params"]["first"]["bias"]
  mean, var = expected(first)
  np.testing.assert_allclose(stats["bn1"]["mean"], mean, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(stats["bn1"]["var"], var, rtol=1e-5)
  # The second layer's inputs, computed with bn1 in training mode and no dropout.
  normed = (first - first.mean(1, keepdims=True)) / jnp.sqrt(first.var(1, keepdims=True) + 1e-5)
  normed = normed * variables["params"]["bn1"]["scale"] + variables["params"]["bn1"]["bias"]
  second = (jax.nn.relu(normed) @ variables["params"]["second"]["kernel"]
            + variables["params"]["second"]["bias"])
  mean, var = expected(second)
  np.testing.assert_allclose(stats["bn2"]["mean"], mean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(stats["bn2"]["var"], var, rtol=1e-4)


def test_linen_refuses_stats_no_batchnorm_ran():
  model = LinenNet()
  variables = model.init(jax.random.key(1), BATCHES[0], train=False)
  with pytest.raises(ValueError, match="same leading"):
    entropix.linen.recompute_batch_stats(lambda v, b: None, variables, {"a": jnp.ones((2, 3)),
                                                                        "b": jnp.ones((3, 3))})
  with pytest.raises(ValueError, match="no batch_stats"):
    entropix.linen.recompute_batch_stats(lambda v, b: None, {"params": {}}, BATCHES)


class NNXNet(nnx.Module):
  def __init__(self, rngs):
    self.first = nnx.Linear(3, 4, rngs=rngs)
    self.bn = nnx.BatchNorm(4, momentum=0.7, rngs=rngs)
    self.dropout = nnx.Dropout(0.5, rngs=rngs)

  def __call__(self, x):
    return self.bn(self.dropout(self.first(x)))  # dropout would change the statistics


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_nnx_statistics_are_the_minibatches_mean_in_place(mode):
  model = NNXNet(nnx.Rngs(0))
  getattr(model, mode)()
  entropix.nnx.recompute_batch_stats(model, BATCHES)
  mean, var = expected(model.first(BATCHES))
  np.testing.assert_allclose(model.bn.mean[...], mean, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(model.bn.var[...], var, rtol=1e-5)
  # The model's modes and momentum are as they were.
  assert model.bn.momentum == 0.7
  assert model.bn.use_running_average == (mode == "eval")
  assert model.dropout.deterministic == (mode == "eval")


def test_nnx_refuses_a_model_without_batchnorm():
  with pytest.raises(ValueError, match="no nnx.BatchNorm"):
    entropix.nnx.recompute_batch_stats(nnx.Linear(3, 2, rngs=nnx.Rngs(0)), BATCHES)
