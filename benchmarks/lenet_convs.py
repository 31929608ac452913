"""LeNet with its patch convolutions against lax convolutions, on any device.

``models.layers.patch_conv`` was chosen on a CPU, where XLA's convolution
gradients are slow and, inside a ``lax.scan``, slower still. This measures on
the default device, batch 128, medians: a bare backprop of LeNet (BatchNorm
and dropout on) and an Entropy-SGD update (L = 20, a rolled ``lax.scan``) with
each convolution, and the largest relative difference between the two
convolutions' gradients there (a GPU's default float32 matmul precision shows
here). Needs only jax, flax, optax and the repository on PYTHONPATH, so it
runs on a machine that installs nothing.

Run: PYTHONPATH=. python benchmarks/lenet_convs.py --out FILE.json. Its records:
``PYTHONPATH=. python benchmarks/lenet_convs.py --out benchmarks/records/lenet_convs_h200.json``
on an NVIDIA H200, and ``PYTHONPATH=. taskset -c 1 python benchmarks/lenet_convs.py --out
benchmarks/records/lenet_convs_cpu_one_core.json`` on one CPU core.
"""

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import entropix
import models
import models.lenet
from models.layers import patch_conv

BATCH, INNER_STEPS = 128, 20
CONVS = {"patches": patch_conv, "lax": lax.conv_general_dilated}


def median_ms(fn, *args, calls=20, rounds=5):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(rounds):
    start = time.perf_counter()
    for _ in range(calls):
      out = fn(*args)
    jax.block_until_ready(out)
    times.append((time.perf_counter() - start) / calls)
  return 1e3 * statistics.median(times)


def measure(conv, images, labels):
  # LeNet builds its nn.Conv layers with the module-level name patch_conv,
  # looked up whenever it is traced: swapped for the whole measurement.
  models.lenet.patch_conv = conv
  try:
    return _measure(images, labels)
  finally:
    models.lenet.patch_conv = patch_conv


def _measure(images, labels):
  net = models.create("lenet")
  variables = jax.jit(lambda k: net.init(k, images[0], train=False))(jax.random.PRNGKey(0))
  key = jax.random.PRNGKey(1)

  def loss(params, key, x, y):
    logits, _ = net.apply({**variables, "params": params}, x, train=True,
                          rngs={"dropout": key}, mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  bare = median_ms(jax.jit(jax.grad(loss)), variables["params"], key, images[0], labels[0])
  tx = entropix.entropy_sgd(0.1, gamma=0.03, inner_steps=INNER_STEPS, inner_momentum=0.9, key=0)

  @jax.jit
  def update(params, state):
    grad_fn = lambda p, i: jax.grad(loss)(p, jax.random.fold_in(key, i), images[i], labels[i])
    updates, state = tx.update(grad_fn(params, 0), state, params, grad_fn=grad_fn)
    return optax.apply_updates(params, updates), state

  state = tx.init(variables["params"])
  start = time.perf_counter()
  jax.block_until_ready(update(variables["params"], state))
  first = time.perf_counter() - start
  step = median_ms(update, variables["params"], state, calls=5)
  return {"bare_backprop_ms": round(bare, 3), "esgd_update_ms": round(step, 2),
          "ratio": round(step / (INNER_STEPS * bare), 3), "first_call_s": round(first, 1)}


def gradient_difference(rng):
  x = jnp.asarray(rng.normal(size=(4, 12, 12, 20)).astype(np.float32))
  w = jnp.asarray(rng.normal(size=(5, 5, 20, 50)).astype(np.float32))
  dn = ("NHWC", "HWIO", "NHWC")
  ours = lambda x, w: jnp.sum(patch_conv(x, w, (1, 1), "VALID", dimension_numbers=dn) ** 2)
  exact = lambda x, w: jnp.sum(lax.conv_general_dilated(
      x, w, (1, 1), "VALID", dimension_numbers=dn, precision="highest") ** 2)
  pairs = zip(jax.grad(ours, (0, 1))(x, w), jax.grad(exact, (0, 1))(x, w))
  return float(max(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)) for a, b in pairs))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True, help="the JSON file to write")
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(INNER_STEPS, BATCH, 28, 28, 1)).astype(np.float32))
  labels = jnp.asarray(rng.integers(0, 10, (INNER_STEPS, BATCH)))
  result = {"date": time.strftime("%Y-%m-%d"), "jax": jax.__version__,
            "device": jax.devices()[0].device_kind, "batch_size": BATCH,
            "inner_steps": INNER_STEPS}
  for name, conv in CONVS.items():
    result[name] = measure(conv, images, labels)
    print(name, result[name], flush=True)
  result["max_relative_gradient_difference"] = gradient_difference(rng)
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=2)
  print(json.dumps(result))


if __name__ == "__main__":
  main()
