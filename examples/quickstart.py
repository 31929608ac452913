"""Quick start: the four optimizers of the paper's Table 1 on a small problem.

Trains one small MLP on two interleaved spirals with SGD, Entropy-SGD, HJ and
HEAT, each for the same budget of gradient evaluations (the paper's
"effective epochs"), and prints the training loss and accuracy of each.

Run: python examples/quickstart.py
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import entropix

BUDGET = 3000  # gradient evaluations (backprops) per optimizer
BATCH = 64


def spirals(n=1024, seed=0):
  rng = np.random.default_rng(seed)
  t = np.sqrt(rng.uniform(0.05, 1.0, n)) * 3 * np.pi
  label = rng.integers(0, 2, n)
  sign = 2 * label - 1
  x = np.stack([sign * t * np.cos(t), sign * t * np.sin(t)], 1) / (3 * np.pi)
  return jnp.asarray(x + 0.02 * rng.normal(size=x.shape), jnp.float32), jnp.asarray(label)


def init(key, sizes=(2, 64, 64, 2)):
  keys = jax.random.split(key, len(sizes) - 1)
  return [
      {"w": jax.random.normal(k, (m, n)) * np.sqrt(2 / m), "b": jnp.zeros(n)}
      for k, m, n in zip(keys, sizes[:-1], sizes[1:])
  ]


def logits(params, x):
  for layer in params[:-1]:
    x = jnp.tanh(x @ layer["w"] + layer["b"])
  return x @ params[-1]["w"] + params[-1]["b"]


def loss(params, x, y):
  return optax.softmax_cross_entropy_with_integer_labels(logits(params, x), y).mean()


def train(opt, evals_per_update, x, y, key):
  """Runs BUDGET gradient evaluations of `opt`; grad_fn reads minibatch i."""
  params = init(jax.random.PRNGKey(0))
  state = opt.init(params)

  @jax.jit
  def update(params, state, key):
    idx = jax.random.randint(key, (evals_per_update, BATCH), 0, x.shape[0])
    grad_fn = lambda p, i: jax.grad(loss)(p, x[idx[i]], y[idx[i]])
    updates, state = opt.update(grad_fn(params, 0), state, params, grad_fn=grad_fn)
    return optax.apply_updates(params, updates), state

  for k in jax.random.split(key, BUDGET // evals_per_update):
    params, state = update(params, state, k)
  accuracy = jnp.mean(jnp.argmax(logits(params, x), -1) == y)
  return float(loss(params, x, y)), float(accuracy)


def main():
  x, y = spirals()
  optimizers = {
      "SGD": (optax.sgd(0.1, momentum=0.9, nesterov=True), 1),
      "Entropy-SGD": (entropix.entropy_sgd(1.0, gamma=entropix.scoping(0.03, 1e-2),
                                           inner_steps=20, noise=1e-3), 20),
      "HJ": (entropix.hj(0.1, gamma=entropix.scoping(0.1, 1e-3)), 5),
      "HEAT": (entropix.heat(0.5, sigma=0.01, samples=20), 20),
  }
  print(f"{'optimizer':<12} {'updates':>8} {'backprops':>9} {'loss':>7} {'accuracy':>8} {'s':>5}")
  for name, (opt, evals) in optimizers.items():
    start = time.perf_counter()
    train_loss, accuracy = train(opt, evals, x, y, jax.random.PRNGKey(1))
    print(f"{name:<12} {BUDGET // evals:>8} {BUDGET:>9} {train_loss:>7.4f} "
          f"{accuracy:>8.3f} {time.perf_counter() - start:>5.1f}")


if __name__ == "__main__":
  main()
