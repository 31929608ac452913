"""Convolution gradients inside entropix's loops run in XLA:CPU's canonical form.

XLA:CPU canonicalizes only the entry computation's convolutions; a gradient's
convolutions inside a loop body stay naive loops unless
``entropix._convolutions`` rewrites them. These tests read the compiled
program (no timing) and compare values.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

import entropix
from entropix._convolutions import canonical_convolutions

CANONICAL = "dim_labels=b01f_01io->b01f"
NHWC = ("NHWC", "HWIO", "NHWC")


def conv(x, w, stride=1):
  return lax.conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=NHWC)


def init(key=0):
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(key), 3)
  return {"c1": 0.3 * jax.random.normal(k1, (3, 3, 1, 4)),
          "c2": 0.3 * jax.random.normal(k2, (3, 3, 4, 8)),
          "d": 0.1 * jax.random.normal(k3, (4 * 4 * 8, 10))}


def loss(params, batch, stride=2):
  x = jax.nn.relu(conv(batch["x"], params["c1"], stride))
  x = jax.nn.relu(conv(x, params["c2"], stride))
  logits = x.reshape(x.shape[0], -1) @ params["d"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()


def batches(n=4, key=1):
  kx, ky = jax.random.split(jax.random.PRNGKey(key))
  return {"x": jax.random.normal(kx, (n, 8, 16, 16, 1)),
          "y": jax.random.randint(ky, (n, 8), 0, 10)}


def conv_labels(fn, *args):
  """The dim_labels of every convolution XLA compiled for ``fn``."""
  text = jax.jit(fn).lower(*args).compile().as_text()
  return re.findall(r"convolution\(.*?(dim_labels=\S+?)[,\s]", text)


def loop(grad_fn, steps=3):
  def run(params):
    def body(p, i):
      g = grad_fn(p, i)
      return jax.tree.map(lambda a, b: a - 0.1 * b, p, g), None
    return lax.scan(body, params, jnp.arange(steps))[0]
  return run


# The gradient's convolutions inside a loop, as a user's model puts them there.
NESTINGS = {
    "plain": lambda data: lambda p, i: jax.grad(loss)(p, jax.tree.map(lambda b: b[i], data)),
    "inside jit": lambda data: jax.jit(
        lambda p, i: jax.grad(loss)(p, jax.tree.map(lambda b: b[i], data))),
    "inside checkpoint": lambda data: lambda p, i: jax.grad(jax.checkpoint(loss))(
        p, jax.tree.map(lambda b: b[i], data)),
    "inside cond": lambda data: lambda p, i: lax.cond(
        i >= 0, lambda: jax.grad(loss)(p, jax.tree.map(lambda b: b[i], data)),
        lambda: jax.tree.map(jnp.zeros_like, p)),
    "micro-batches (a scan)": lambda data: entropix.minibatch_grad_fn(loss, data, microbatches=2),
}


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's convolution form")
@pytest.mark.parametrize("nesting", list(NESTINGS))
def test_gradient_convolutions_in_a_loop_compile_to_the_canonical_form(nesting):
  params, data = init(), batches()
  grad_fn = NESTINGS[nesting](data)
  before = conv_labels(loop(grad_fn), params)
  after = conv_labels(loop(canonical_convolutions(grad_fn)), params)
  assert any(label != CANONICAL for label in before), before  # what XLA:CPU leaves in loops
  assert after and all(label == CANONICAL for label in after), after
  np.testing.assert_allclose(
      jax.flatten_util.ravel_pytree(jax.jit(loop(canonical_convolutions(grad_fn)))(params))[0],
      jax.flatten_util.ravel_pytree(jax.jit(loop(grad_fn))(params))[0], rtol=2e-5, atol=1e-6)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU's convolution form")
@pytest.mark.parametrize("factory", [
    lambda: entropix.entropy_sgd(1.0, gamma=0.03, inner_steps=4),
    lambda: entropix.hj_fixed_point(0.1, gamma=10.0, inner_steps=3),
    lambda: entropix.heat(0.1, sigma=0.01, samples=4),
], ids=["entropy_sgd", "hj_fixed_point", "heat"])
def test_every_inner_loop_runs_canonical_convolutions(factory):
  opt, params, data = factory(), init(), batches()
  grad_fn = entropix.minibatch_grad_fn(loss, data)

  def step(params, state):
    updates, state = opt.update(grad_fn(params, 0), state, params, grad_fn=grad_fn)
    return optax.apply_updates(params, updates), state

  labels = conv_labels(step, params, opt.init(params))
  assert labels and all(label == CANONICAL for label in labels), labels


@pytest.mark.parametrize("dimension_numbers, shapes", [
    (("NCHW", "OIHW", "NCHW"), ((2, 3, 9, 7), (5, 3, 3, 2))),
    (("NHWC", "HWIO", "NCHW"), ((2, 9, 7, 3), (3, 2, 3, 5))),
    (("NWC", "WIO", "NWC"), ((2, 9, 3), (3, 3, 5))),
    (("NCDHW", "OIDHW", "NCDHW"), ((2, 3, 5, 6, 4), (4, 3, 2, 3, 2))),
], ids=["NCHW", "mixed", "1-D", "3-D"])
def test_the_rewrite_computes_the_same_convolution(dimension_numbers, shapes):
  """Any dimension numbers, strides, dilations and groups: the same sums."""
  k1, k2 = jax.random.split(jax.random.PRNGKey(0))
  x, w = jax.random.normal(k1, shapes[0]), jax.random.normal(k2, shapes[1])
  spatial = len(shapes[0]) - 2

  def f(x, w):
    y = lax.conv_general_dilated(
        x, w, (2,) * spatial, [(1, 0)] * spatial, lhs_dilation=(1,) * spatial,
        rhs_dilation=(2,) + (1,) * (spatial - 1), dimension_numbers=dimension_numbers,
        precision="highest")
    return jnp.sum(jnp.sin(y))

  want = jax.jit(jax.grad(f, (0, 1)))(x, w)
  got = jax.jit(canonical_convolutions(jax.grad(f, (0, 1))))(x, w)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_a_function_without_convolutions_is_evaluated_as_traced():
  def fn(p, i):
    return jax.tree.map(lambda v: jnp.tanh(v) * i + jax.nn.relu(v), p)

  params = {"a": jnp.linspace(-1.0, 1.0, 5), "b": (jnp.ones(2), jnp.zeros(()))}
  got = jax.jit(canonical_convolutions(fn))(params, 3)
  want = jax.jit(fn)(params, 3)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)
