"""Quick start: the four optimizers of the paper's Table 1 on a small problem.

Trains one small MLP on two interleaved spirals with SGD, Entropy-SGD, HJ and
HEAT, each for the same budget of gradient evaluations (the paper's
"effective epochs"), and prints each one's training loss and its accuracy on
held-out spirals (another draw of the same distribution).

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


def spirals(n=256, seed=0):
  rng = np.random.default_rng(seed)
  t = np.sqrt(rng.uniform(0.05, 1.0, n)) * 3 * np.pi
  label = rng.integers(0, 2, n)
  sign = 2 * label - 1
  x = np.stack([sign * t * np.cos(t), sign * t * np.sin(t)], 1) / (3 * np.pi)
  return jnp.asarray(x + 0.06 * rng.normal(size=x.shape), jnp.float32), jnp.asarray(label)


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


def train(opt, evals_per_update, x, y, key, gradient_at_x=True):
  """Runs BUDGET gradient evaluations of `opt`; grad_fn reads minibatch i.

  HEAT (``gradient_at_x=False``) uses only gradients at perturbed points:
  it gets zeros in place of the gradient at x, which is then not computed.
  """
  params = init(jax.random.PRNGKey(0))
  state = opt.init(params)

  @jax.jit
  def update(params, state, key):
    idx = jax.random.randint(key, (evals_per_update, BATCH), 0, x.shape[0])
    grad_fn = entropix.minibatch_grad_fn(lambda p, b: loss(p, *b), (x[idx], y[idx]))
    at_x = grad_fn(params, 0) if gradient_at_x else optax.tree.zeros_like(params)
    updates, state = opt.update(at_x, state, params, grad_fn=grad_fn)
    return optax.apply_updates(params, updates), state

  for k in jax.random.split(key, BUDGET // evals_per_update):
    params, state = update(params, state, k)
  return params


def main():
  x, y = spirals()
  x_test, y_test = spirals(n=1024, seed=1)
  optimizers = {
      "SGD": (optax.sgd(0.1, momentum=0.9, nesterov=True), 1, True),
      "Entropy-SGD": (entropix.entropy_sgd(1.0, gamma=entropix.scoping(0.03, 1e-2),
                                           inner_steps=20, noise=1e-3), 20, True),
      "HJ": (entropix.hj(0.1, gamma=entropix.scoping(0.1, 1e-3)), 5, True),
      "HEAT": (entropix.heat(0.5, sigma=0.01, samples=20), 20, False),
  }
  print(f"{'optimizer':<12} {'updates':>8} {'backprops':>9} {'train loss':>10} "
        f"{'test accuracy':>13} {'s':>5}")
  for name, (opt, evals, at_x) in optimizers.items():
    start = time.perf_counter()
    params = train(opt, evals, x, y, jax.random.PRNGKey(1), at_x)
    accuracy = jnp.mean(jnp.argmax(logits(params, x_test), -1) == y_test)
    print(f"{name:<12} {BUDGET // evals:>8} {BUDGET:>9} {float(loss(params, x, y)):>10.4f} "
          f"{float(accuracy):>13.3f} {time.perf_counter() - start:>5.1f}")


if __name__ == "__main__":
  main()
