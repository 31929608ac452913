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


@pytest.mark.parametrize("name", list(COUNTS))
def test_batch_split_across_devices_changes_nothing(name):
  # 4 devices x 2 examples give the logits and BatchNorm statistics of one
  # batch of 8: BN reduces over the device axis and each example's dropout
  # mask depends only on its position in the global batch.
  _, variables, x = init(name, batch=8)
  rngs = {"dropout": jax.random.PRNGKey(5)}
  want = models.create(name).apply(variables, x, train=True, rngs=rngs, mutable=["batch_stats"])
  split = models.create(name, axis_name="batch")

  def apply(xs):
    return split.apply(variables, xs, train=True, rngs=rngs, mutable=["batch_stats"])

  got = jax.pmap(apply, axis_name="batch", devices=jax.devices()[:4])(x.reshape(4, 2, *x.shape[1:]))
  np.testing.assert_allclose(got[0].reshape(8, -1), want[0], rtol=1e-4, atol=1e-5)
  for g, w in zip(jax.tree.leaves(got[1]), jax.tree.leaves(want[1])):
    np.testing.assert_allclose(g[0], w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", list(COUNTS))
def test_dropout_false_keeps_batch_statistics(name):
  model, variables, x = init(name)
  run = lambda **kw: model.apply(variables, x, train=True, mutable=["batch_stats"], **kw)
  quiet, stats = run(dropout=False)  # no "dropout" rng needed
  no_drop = models.create(name).clone(**({} if name == "allcnn" else {"dropout_rate": 0.0}))
  if name != "allcnn":
    np.testing.assert_allclose(
        quiet, no_drop.apply(variables, x, train=True, mutable=["batch_stats"])[0], rtol=1e-6)
  assert not np.allclose(quiet, model.apply(variables, x, train=False), atol=1e-3)  # batch stats
  assert not np.allclose(quiet, run(rngs={"dropout": jax.random.PRNGKey(0)})[0], atol=1e-3)


def test_unknown_model_is_refused_by_name():
  with pytest.raises(ValueError, match="resnet"):
    models.create("resnet")


def _dense_and_norm_layers(name, param_init):
  x = jnp.zeros((1, *SHAPES[name]))
  params = models.create(name, param_init=param_init).init(
      jax.random.PRNGKey(0), x, train=False)["params"]
  norms = [p for layer, p in params.items() if layer.startswith("BatchNorm")]
  return [p for layer, p in params.items() if not layer.startswith("BatchNorm")], norms


@pytest.mark.parametrize("name", list(COUNTS))
def test_flax_init_is_flaxs_defaults(name):
  # --param-init flax (the runs in experiments/table1_flax_init/): kernels LeCun normal,
  # biases 0, BatchNorm scales 1.
  layers, norms = _dense_and_norm_layers(name, "flax")
  for p in layers:
    fan_in = np.prod(p["kernel"].shape[:-1])
    assert float(p["kernel"].std()) * np.sqrt(fan_in) == pytest.approx(1.0, rel=0.1)
    assert not p["bias"].any()
  assert all((n["scale"] == 1).all() and not n["bias"].any() for n in norms)


@pytest.mark.parametrize("name", list(COUNTS))
def test_pytorch_legacy_init_draws_as_pytorch_0x(name):
  # Kernels and biases U(-b, b), b = 1 / sqrt(fan_in); BatchNorm scale U(0, 1), bias 0.
  layers, norms = _dense_and_norm_layers(name, "pytorch-legacy")
  for p in layers:
    bound = 1 / np.sqrt(np.prod(p["kernel"].shape[:-1]))
    kernel, bias = np.abs(p["kernel"]), np.abs(p["bias"])
    assert kernel.max() <= bound and kernel.max() > 0.99 * bound
    assert float(p["kernel"].std()) == pytest.approx(bound / np.sqrt(3), rel=0.1)
    assert bias.max() <= bound and bias.max() > 0.5 * bound
    if bias.size >= 96:
      assert float(p["bias"].std()) == pytest.approx(bound / np.sqrt(3), rel=0.2)
  for n in norms:
    assert 0 <= n["scale"].min() and n["scale"].max() < 1
    assert float(n["scale"].std()) == pytest.approx(np.sqrt(1 / 12), rel=0.3)
    assert not n["bias"].any()


def test_unknown_param_init_is_refused_by_name():
  with pytest.raises(ValueError, match="'torch'.*pytorch-legacy"):
    models.create("lenet", param_init="torch")


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_dropout_keeps_one_minus_rate_and_rescales_by_it(rate):
  from models.layers import Dropout

  x = jnp.ones((64, 2048))
  y = Dropout(rate).apply({}, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(0)})
  kept = np.asarray(y) != 0
  n = kept.size
  # Within 5 standard errors of 1 - rate; every kept unit scaled by 1 / (1 - rate).
  assert abs(kept.mean() - (1 - rate)) < 5 * np.sqrt(rate * (1 - rate) / n)
  np.testing.assert_allclose(np.asarray(y)[kept], 1 / (1 - rate), rtol=1e-6)
  # Examples draw their own masks: rows differ, and so do columns.
  assert not np.array_equal(kept[0], kept[1]) and not np.array_equal(kept[:, 0], kept[:, 1])
  np.testing.assert_array_equal(Dropout(rate).apply({}, x, deterministic=True), x)


@pytest.mark.parametrize("shape,window", [((4, 24, 24, 5), 3), ((4, 8, 8, 7), 2), ((3, 7, 8, 2), 3)])
def test_max_pool_equals_flax_in_values_and_gradients_ties_included(shape, window):
  import flax.linen as nn

  from models.layers import max_pool

  rng = np.random.default_rng(0)
  x = np.maximum(rng.normal(size=shape), 0).astype(np.float32)  # ReLU output: tied zeros
  x[:, ::2] = np.round(x[:, ::2])  # and tied integers
  reference = lambda x: nn.max_pool(x, (window, window), strides=(window, window))
  np.testing.assert_array_equal(max_pool(jnp.asarray(x), window), reference(x))
  cotangent = rng.normal(size=reference(x).shape).astype(np.float32)
  grad = lambda pool: jax.grad(lambda x: jnp.sum(pool(x) * cotangent))(jnp.asarray(x))
  np.testing.assert_array_equal(grad(lambda x: max_pool(x, window)), grad(reference))


def test_dropout_masks_are_independent_across_examples_units_and_minibatches():
  from models.layers import Dropout

  rate, shape = 0.25, (256, 8, 8, 20)  # LeNet's first dropout, batch 256
  masks = [np.asarray(Dropout(rate).apply({}, jnp.ones(shape), deterministic=False,
                                          rngs={"dropout": jax.random.PRNGKey(k)}) != 0)
           for k in (0, 1)]
  keep = masks[0].reshape(shape[0], -1).astype(np.float64)
  n = keep.size

  def corr(a, b):
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    return (a @ b) / np.sqrt((a @ a) * (b @ b))

  assert abs(keep.mean() - (1 - rate)) < 5 * np.sqrt(rate * (1 - rate) / n)
  # Neighbouring examples, neighbouring units, units one example's width
  # apart diagonally (a counter e + u would repeat there), two minibatch keys:
  # every correlation within 5 standard errors (1 / sqrt(pairs)) of 0.
  pairs = {
      "examples": (keep[1:], keep[:-1]),
      "units": (keep[:, 1:], keep[:, :-1]),
      "diagonal": (keep[1:, :-1], keep[:-1, 1:]),
      "minibatches": (masks[0], masks[1]),
  }
  for name, (a, b) in pairs.items():
    assert abs(corr(a, b)) < 5 / np.sqrt(a.size), name


@pytest.mark.parametrize("rate", [-0.1, 1.0])
def test_dropout_rate_outside_0_1_is_refused_by_value(rate):
  from models.layers import Dropout

  with pytest.raises(ValueError, match=str(rate)):
    Dropout(rate).apply({}, jnp.ones((2, 3)), deterministic=False,
                        rngs={"dropout": jax.random.PRNGKey(0)})


@pytest.mark.parametrize("kernel,strides,padding", [
    ((5, 5, 1, 20), (1, 1), "VALID"), ((5, 5, 20, 50), (1, 1), "VALID"),
    ((3, 3, 3, 4), (2, 2), "SAME"), ((3, 2, 3, 4), (1, 2), ((1, 0), (2, 1)))])
def test_patch_conv_equals_lax_in_values_and_gradients(kernel, strides, padding):
  from jax import lax

  from models.layers import patch_conv

  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 12, 11, kernel[2])).astype(np.float32))
  w = jnp.asarray(rng.normal(size=kernel).astype(np.float32))
  dn = ("NHWC", "HWIO", "NHWC")
  conv = lambda f: lambda x, w: f(x, w, strides, padding, dimension_numbers=dn)
  ours, ref = conv(patch_conv), conv(lax.conv_general_dilated)
  want = ref(x, w)
  np.testing.assert_allclose(ours(x, w), want, rtol=1e-5, atol=1e-5)
  cotangent = jnp.asarray(rng.normal(size=want.shape).astype(np.float32))
  grads = lambda f: jax.grad(lambda x, w: jnp.sum(f(x, w) * cotangent), (0, 1))(x, w)
  for g, r in zip(grads(ours), grads(ref)):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)
  # Dilation is not patched: it goes to lax unchanged.
  dilated = patch_conv(x, w, strides, padding, rhs_dilation=(2, 1), dimension_numbers=dn)
  np.testing.assert_array_equal(dilated, lax.conv_general_dilated(
      x, w, strides, padding, rhs_dilation=(2, 1), dimension_numbers=dn))


def test_the_cnn_is_flax_mnist_examples_network(load_script):
  # The fourth network, declared like the paper's three: the example's own
  # CNN (examples/flax_mnist) with the same parameters gives the same logits.
  example = load_script("examples/flax_mnist/linen_sgd.py").CNN()
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 28, 28, 1))
  ours = models.create("cnn")
  variables = ours.init(jax.random.PRNGKey(1), x, train=False)
  assert jax.tree.structure(variables) == jax.tree.structure(
      example.init(jax.random.PRNGKey(1), x))
  assert sum(p.size for p in jax.tree.leaves(variables)) == 824_458
  np.testing.assert_allclose(ours.apply(variables, x[..., 0], train=True),
                             example.apply(variables, x), rtol=1e-5, atol=1e-6)
  network = models.NETWORKS["cnn"]
  assert (network.input_shape, network.data) == ((28, 28), "mnist")
  assert list(models.NETWORKS)[:3] == ["mnistfc", "lenet", "allcnn"]


@pytest.mark.parametrize("name", ["mnistfc", "lenet", "allcnn", "cnn"])
def test_the_outputs_are_the_classes_asked_for(name):
  shape = models.NETWORKS[name].input_shape
  model = models.create(name, num_classes=7)
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((2, *shape)),
                                                train=False))
  logits = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, *shape)), train=False),
                          variables)
  assert logits.shape == (2, 7)
