"""A user's Flax ``nn.Conv`` network under Entropy-SGD, against its own SGD step.

The network is the CNN of Flax's MNIST example (Linen: two 3x3 ``nn.Conv``
of 32 and 64 features, each with ReLU and 2x2 average pooling, then Dense
256 and Dense 10; ``examples/flax_mnist/linen_sgd.py``), batch 128,
MNIST-shaped inputs, on the default device.
Nothing in it is entropix's own: the convolutions are ``lax``'s, as in
anyone's model. In one process, rounds interleaving the variants, medians:

* ``sgd_step_ms``: the model's own jitted training step,
  ``optax.sgd(0.1, momentum=0.9)`` on the gradient of one minibatch;
* for each variant of a default ``entropix.entropy_sgd`` update (L = 20
  gradient evaluations, each on its own minibatch), ``update_ms``,
  ``ratio = update_ms / (L * sgd_step_ms)`` and ``compile_s`` (the first
  call: tracing and compiling):

  - ``rolled``: the default (``unroll=False``): the inner loop is one
    ``lax.scan``, whose gradients entropix evaluates with their convolutions
    in the form XLA:CPU runs fast (``entropix/_convolutions.py``);
  - ``rolled_plain``: the same loop without that rewrite (what entropix
    did before it): XLA:CPU runs the gradient's convolutions inside the loop
    body as naive loops;
  - ``unrolled``: ``unroll=True``, the loop written out L times.

``--inner-steps`` changes L (the compile times at L = 20 are the record's).

Run: PYTHONPATH=. taskset -c 1 python benchmarks/user_conv.py --out
benchmarks/records/user_conv_cpu_one_core.json (one core, as train.py's runs
are pinned); without taskset for both cores. Needs jax, flax and optax only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import statistics
import sys
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax

import entropix
from entropix import _convolutions

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples" / "flax_mnist"))
from linen_sgd import CNN  # noqa: E402  the CNN of Flax's MNIST example (Linen)


def loss_fn(params, batch):
  logits = CNN().apply({"params": params}, batch["image"])
  return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()


def make_sgd_step():
  tx = optax.sgd(0.1, momentum=0.9)

  @jax.jit
  def step(params, state, batch):
    updates, state = tx.update(jax.grad(loss_fn)(params, batch), state, params)
    return optax.apply_updates(params, updates), state

  return step, tx


def make_entropy_step(inner_steps, unroll):
  tx = entropix.entropy_sgd(1.0, gamma=0.03, inner_steps=inner_steps, unroll=unroll)

  @jax.jit
  def step(params, state, batches):
    grad_fn = entropix.minibatch_grad_fn(loss_fn, batches)
    updates, state = tx.update(grad_fn(params, 0), state, params, grad_fn=grad_fn)
    return optax.apply_updates(params, updates), state

  return step, tx


def plain(fn):
  return fn


def timed_first_call(step, *args):
  start = time.perf_counter()
  jax.block_until_ready(step(*args))
  return time.perf_counter() - start


def time_ms(step, *args, calls):
  start = time.perf_counter()
  for _ in range(calls):
    out = step(*args)
  jax.block_until_ready(out)
  return 1e3 * (time.perf_counter() - start) / calls


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", help="the JSON record to write")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--inner-steps", type=int, default=20)
  parser.add_argument("--skip-plain", action="store_true",
                      help="leave out rolled_plain, the slow loop without the rewrite")
  args = parser.parse_args()
  L = args.inner_steps
  rng = np.random.default_rng(0)
  batches = {"image": jnp.asarray(rng.random((L, 128, 28, 28, 1), np.float32)),
             "label": jnp.asarray(rng.integers(0, 10, (L, 128)), jnp.int32)}
  first = jax.tree.map(lambda b: b[0], batches)
  params = jax.jit(CNN().init)(jax.random.key(0), first["image"])["params"]

  sgd_step, sgd = make_sgd_step()
  variants = {"sgd": (sgd_step, sgd.init(params), first, 20)}
  for name, unroll, rewrite in [("rolled", False, True), ("rolled_plain", False, False),
                                ("unrolled", True, True)]:
    if name == "rolled_plain" and args.skip_plain:
      continue
    step, tx = make_entropy_step(L, unroll)
    # The rewrite is applied when the update is traced: switched off for that trace only.
    with mock.patch.object(_convolutions, "canonical_convolutions",
                           _convolutions.canonical_convolutions if rewrite else plain):
      compile_s = timed_first_call(step, params, tx.init(params), batches)
    variants[name] = (step, tx.init(params), batches, 1 if name == "rolled_plain" else 2)
    print(f"{name}: first call {compile_s:.1f} s", flush=True)
    variants[name] += (compile_s,)
  times = {name: [] for name in variants}
  for r in range(args.rounds):
    for name, (step, state, data, calls, *_) in variants.items():
      times[name].append(time_ms(step, params, state, data, calls=calls))
    print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.1f} ms" for k, v in times.items()),
          flush=True)
  sgd_ms = statistics.median(times.pop("sgd"))
  record = {
      "date": datetime.date.today().isoformat(), "jax": jax.__version__,
      "flax": __import__("flax").__version__, "device": jax.devices()[0].device_kind,
      "cpus": len(os.sched_getaffinity(0)), "batch_size": 128, "inner_steps": L,
      "rounds": args.rounds, "sgd_step_ms": round(sgd_ms, 3),
  }
  for name, samples in times.items():
    ms = statistics.median(samples)
    record[name] = {"update_ms": round(ms, 2), "ratio": round(ms / (L * sgd_ms), 3),
                    "compile_s": round(variants[name][4], 2)}
  print(json.dumps(record, indent=2))
  if args.out:
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(record, f, indent=2)
      f.write("\n")


if __name__ == "__main__":
  main()
