"""The Flax and orbax rows of the composition matrix (test_composition.py).

Flax's ``TrainState`` is refused with the class to use instead,
``entropix.linen.TrainState`` and ``nnx.Optimizer`` equal the optimizer
driven by hand, and an orbax checkpoint of the state resumes to the same
numbers, for every column where they apply.
"""

import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from flax.training import train_state

import entropix
import entropix.linen
from test_composition import BATCHES, COLUMNS, PARAMS, assert_trees_close, bare, loss, run

SINGLE = [name for name, column in COLUMNS.items() if not column.replicated]


def grad_fn():
  return entropix.minibatch_grad_fn(loss, BATCHES)


@pytest.mark.parametrize("column", SINGLE)
def test_flax_train_state_is_refused_with_the_class_to_use(column):
  state = train_state.TrainState.create(apply_fn=None, params=PARAMS, tx=COLUMNS[column].make())
  g = grad_fn()
  with pytest.raises(TypeError, match=r"TrainState.apply_gradients.*entropix\.linen\.TrainState"):
    state.apply_gradients(grads=g(PARAMS, 0), grad_fn=g)


@pytest.mark.parametrize("column", SINGLE)
def test_entropix_train_state_forwards_grad_fn(column):
  state = entropix.linen.TrainState.create(apply_fn=None, params=PARAMS,
                                           tx=COLUMNS[column].make())
  g = grad_fn()
  step = jax.jit(lambda s: s.apply_gradients(grads=g(s.params, 0), grad_fn=g))
  for _ in range(2):
    state = step(state)
  assert int(state.step) == 2
  assert_trees_close(state.params, bare(COLUMNS[column])[0])


def test_entropix_train_state_without_grad_fn_is_flaxs():
  flax_state = train_state.TrainState.create(apply_fn=None, params=PARAMS, tx=optax.adam(0.1))
  ours = entropix.linen.TrainState.create(apply_fn=None, params=PARAMS, tx=optax.adam(0.1))
  g = grad_fn()(PARAMS, 0)
  assert_trees_close(ours.apply_gradients(grads=g).params,
                     flax_state.apply_gradients(grads=g).params, rtol=0, atol=0)
  # A missing grad_fn is named by the transform that needs it.
  state = entropix.linen.TrainState.create(apply_fn=None, params=PARAMS,
                                           tx=COLUMNS["entropy_sgd"].make())
  with pytest.raises(TypeError, match="grad_fn=grad_fn"):
    state.apply_gradients(grads=g)


def test_entropix_train_state_with_flaxs_overwrite_with_gradient_collection():
  # fp8 training: the params hold a collection that the gradient overwrites;
  # grad_fn still takes the whole params.
  from flax.linen.fp8_ops import OVERWRITE_WITH_GRADIENT

  params = {"params": PARAMS, OVERWRITE_WITH_GRADIENT: {"scale": jnp.ones(())}}
  state = entropix.linen.TrainState.create(apply_fn=None, params=params,
                                           tx=COLUMNS["entropy_sgd"].make())
  seen = []

  def whole_grad_fn(p, i):
    seen.append(set(p))
    return {"params": grad_fn()(p["params"], i), OVERWRITE_WITH_GRADIENT: {"scale": 2.0}}

  grads = whole_grad_fn(params, 0)
  new = jax.jit(lambda s: s.apply_gradients(grads=grads, grad_fn=whole_grad_fn))(state)
  assert all(keys == {"params", OVERWRITE_WITH_GRADIENT} for keys in seen)
  assert float(new.params[OVERWRITE_WITH_GRADIENT]["scale"]) == 2.0
  assert_trees_close(new.params["params"], bare(COLUMNS["entropy_sgd"], steps=1)[0])


class Net(nnx.Module):
  """The matrix's network, as an NNX module: tanh(x @ body) @ head."""

  def __init__(self):
    self.body = nnx.Param(PARAMS["body"]["w"])
    self.head = nnx.Param(PARAMS["head"]["w"])

  def __call__(self, x):
    return jnp.tanh(x @ self.body[...]) @ self.head[...]


@pytest.mark.parametrize("column", SINGLE)
def test_nnx_optimizer_is_the_optimizer_by_hand(column):
  model = Net()
  graphdef, _ = nnx.split(model, nnx.Param)
  net_loss = lambda m, i: jnp.mean((m(BATCHES["x"][i]) - BATCHES["y"][i]) ** 2)

  def nnx_grad_fn(params, i):  # params: the nnx.State of plain arrays the optimizer passes
    return jax.grad(lambda p: net_loss(nnx.merge(graphdef, p), i))(params)

  optimizer = nnx.Optimizer(model, COLUMNS[column].make(), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, optimizer):
    optimizer.update(model, nnx.grad(net_loss)(model, 0), grad_fn=nnx_grad_fn)

  for _ in range(2):
    train_step(model, optimizer)
  expected = bare(COLUMNS[column])[0]
  assert_trees_close([model.body[...], model.head[...]],
                     [expected["body"]["w"], expected["head"]["w"]])


@pytest.mark.parametrize("column", list(COLUMNS))
def test_an_orbax_checkpoint_resumes_to_the_same_numbers(column, tmp_path):
  column = COLUMNS[column]
  opt = column.make()
  params, state, _ = run(column, opt, steps=1)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(tmp_path / "ckpt", {"params": params, "opt_state": state})
    checkpointer.wait_until_finished()
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                            {"params": params, "opt_state": state})
    restored = checkpointer.restore(tmp_path / "ckpt", abstract)
  assert jax.tree.structure(restored["opt_state"]) == jax.tree.structure(state)
  resumed = run(column, opt, steps=1, params=restored["params"], state=restored["opt_state"])
  assert_trees_close(resumed[0], bare(column)[0], rtol=0, atol=0)
