"""Every transform of entropix under Flax NNX's ``nnx.Optimizer`` (needs flax)."""

import jax
import jax.numpy as jnp
from flax import nnx

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
