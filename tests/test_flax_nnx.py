"""Every transform of entropix under Flax NNX's ``nnx.Optimizer`` (needs flax)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import entropix

from test_optax_common import ALL, FACTORIES


class TinyModel(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.linear = nnx.Linear(3, 2, rngs=rngs)

  def __call__(self, x):
    return self.linear(x)


@ALL
def test_flax_nnx_optimizer(name):
  model = TinyModel(nnx.Rngs(0))
  batches = jax.random.normal(jax.random.PRNGKey(1), (20, 8, 3))
  targets = batches @ jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
  graphdef, _ = nnx.split(model, nnx.Param)

  def loss(m, i):
    return jnp.mean((m(batches[i]) - targets[i]) ** 2)

  def grad_fn(params, i):  # params: the pure nnx.State the optimizer passes
    return jax.grad(lambda p: loss(nnx.merge(graphdef, p), i))(params)

  optimizer = nnx.Optimizer(model, FACTORIES[name](), wrt=nnx.Param)
  before = float(jnp.mean(jax.vmap(lambda i: loss(model, i))(jnp.arange(20))))
  @nnx.jit
  def train_step(model, optimizer):
    grads = nnx.grad(loss)(model, 0)
    optimizer.update(model, grads, grad_fn=grad_fn)

  for _ in range(30):
    train_step(model, optimizer)
  after = float(jnp.mean(jax.vmap(lambda i: loss(model, i))(jnp.arange(20))))
  assert after < 0.5 * before


def test_freezing_a_layer_with_a_label_function_of_the_nnx_state():
  """The guide's recipe: labels from a function of nnx.State (a dict is no prefix of it)."""
  model = TinyModel(nnx.Rngs(0))
  model.head = nnx.Linear(2, 1, rngs=nnx.Rngs(1))
  batches = jax.random.normal(jax.random.PRNGKey(1), (5, 8, 3))
  targets = jnp.sum(jnp.sin(batches), -1, keepdims=True)

  def labels(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "frozen" if path[0].key == "linear" else "train", params)

  tx = optax.multi_transform({"train": FACTORIES["entropy_sgd"](), "frozen": optax.set_to_zero()},
                             labels)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    loss = lambda m, i: jnp.mean((m.head(m(batches[i])) - targets[i]) ** 2)
    grad_fn = lambda p, i: jax.grad(lambda q: loss(nnx.merge(graphdef, q, rest), i))(p)
    optimizer.update(model, grad_fn(params, 0), grad_fn=entropix.masked_grad_fn(grad_fn, params))

  frozen, head = model.linear.kernel[...], model.head.kernel[...]
  for _ in range(5):
    train_step(model, optimizer)
  np.testing.assert_array_equal(model.linear.kernel[...], frozen)
  assert not np.allclose(model.head.kernel[...], head)


def test_randomness_inside_grad_fn_from_its_key_draws_a_mask_per_minibatch():
  """An nnx.Rngs built inside grad_fn from minibatch_grad_fn's key: one dropout mask per i."""
  model = TinyModel(nnx.Rngs(0))
  dropout = nnx.Dropout(0.5)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  batch = jnp.ones((4, 8, 3))  # the same minibatch four times: only the mask differs

  def param_loss(p, b, key):
    m = nnx.merge(graphdef, p, rest, copy=True)
    return jnp.sum(dropout(m(b), rngs=nnx.Rngs(dropout=key)))

  grad_fn = entropix.minibatch_grad_fn(param_loss, batch, key=jax.random.PRNGKey(3))
  grads = [jax.jit(grad_fn)(params, i) for i in range(4)]
  kernels = [g["linear"]["kernel"][...] for g in grads]
  assert all(not np.allclose(kernels[0], k) for k in kernels[1:])
  np.testing.assert_array_equal(jax.jit(grad_fn)(params, 2)["linear"]["kernel"][...], kernels[2])
