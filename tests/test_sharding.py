"""entropix with FSDP-style sharded parameters under jax.jit (8 simulated CPU devices).

Each weight matrix is split across the devices (``NamedSharding``), the
minibatches along their example axis. What the compiled update must show:
the optimizer's state stays sharded like the params, and the only
all-gathers are those of the backprops themselves (as many per backprop as
an SGD step has), none of the inner loop's own.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import entropix

L = 4
OPTIMIZERS = {  # name -> (optimizer, backprop sites in the compiled update)
    "entropy_sgd": (lambda: entropix.entropy_sgd(0.5, gamma=1.0, inner_steps=L), 2),
    "entropy_sgd, the authors' inner momentum and a clipped gradient": (
        lambda: entropix.entropy_sgd(0.5, gamma=1.0, inner_steps=L, inner_momentum=0.9,
                                     reset_inner_momentum=False,
                                     grad_transform=optax.clip_by_global_norm(1.0)), 2),
    "entropy_sgd(average='uniform')": (
        lambda: entropix.entropy_sgd(0.5, gamma=1.0, inner_steps=L, average="uniform"), 2),
    "hj": (lambda: entropix.hj(0.5, gamma=1.0, inner_steps=L), 2),
    "hj_fixed_point": (lambda: entropix.hj_fixed_point(0.05, gamma=1.0, inner_steps=L - 1), 2),
    # HEAT ignores the gradient at x: XLA drops that backprop.
    "heat": (lambda: entropix.heat(0.1, sigma=0.01, samples=L), 1),
    "local_entropy + adam": (lambda: optax.chain(entropix.local_entropy(1.0, inner_steps=L),
                                                 optax.adam(1e-3)), 2),
}


@pytest.fixture(scope="module")
def setup():
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices (conftest simulates them on a CPU)")
  mesh = Mesh(np.array(jax.devices()[:8]), ("fsdp",))
  put = lambda x, *spec: jax.device_put(x, NamedSharding(mesh, P(*spec)))
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  params = {"w1": put(jax.random.normal(keys[0], (64, 256)) / 8, None, "fsdp"),
            "b1": put(jnp.zeros(256), "fsdp"),
            "w2": put(jax.random.normal(keys[1], (256, 16)) / 16, "fsdp", None),
            "b2": put(jnp.zeros(16))}
  batches = {"x": put(jax.random.normal(keys[2], (L, 64, 64)), None, "fsdp"),
             "y": put(jax.random.randint(keys[3], (L, 64), 0, 16), None, "fsdp")}
  return params, batches


def loss(params, batch):
  hidden = jax.nn.relu(batch["x"] @ params["w1"] + params["b1"])
  logits = hidden @ params["w2"] + params["b2"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()


def compile_step(opt, params, state, batches):
  def step(params, state, batches):
    grad_fn = entropix.minibatch_grad_fn(loss, batches)
    updates, state = opt.update(grad_fn(params, 0), state, params, grad_fn=grad_fn)
    return optax.apply_updates(params, updates), state

  return jax.jit(step).lower(params, state, batches).compile()


def all_gathers(compiled):
  return len(re.findall(r"= \S+ all-gather(?:-start)?\(", compiled.as_text()))


def unlike_params(tree, params):
  """The leaves of ``tree`` shaped like a param but not sharded like it."""
  by_shape = {p.shape: p.sharding for p in jax.tree.leaves(params)}
  return [(leaf.shape, leaf.sharding) for leaf in jax.tree.leaves(tree)
          if leaf.shape in by_shape
          and not leaf.sharding.is_equivalent_to(by_shape[leaf.shape], leaf.ndim)]


@pytest.fixture(scope="module")
def per_backprop(setup):
  """All-gathers of an SGD step: one backprop's."""
  params, batches = setup
  sgd = optax.sgd(0.1, momentum=0.9)
  count = all_gathers(compile_step(sgd, params, sgd.init(params), batches))
  assert count > 0  # the forward pass gathers the sharded weights
  return count


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_stays_sharded_and_no_all_gather_beyond_the_backprops(name, setup, per_backprop):
  params, batches = setup

  make, sites = OPTIMIZERS[name]
  opt = make()
  state = opt.init(params)  # eager, from the sharded params: sharded like them
  assert unlike_params(state, params) == []
  compiled = compile_step(opt, params, state, batches)
  assert all_gathers(compiled) == sites * per_backprop
  new_params, new_state = compiled(params, state, batches)
  assert unlike_params(new_state, params) == []
  assert unlike_params(new_params, params) == []
  for _ in range(2):  # the compiled step takes its own output
    new_params, new_state = compiled(new_params, new_state, batches)
  assert np.isfinite(float(loss(new_params, jax.tree.map(lambda b: b[0], batches))))
