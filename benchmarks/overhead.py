"""Overhead of entropix over plain SGD, per gradient evaluation.

Measures, in one process on a network the size of mnistfc (784-1024-1024-10
MLP, batch 128; the model's BatchNorm and dropout are left out: they cost the
same under every optimizer):

* the time of one jitted ``optax.sgd`` step (Nesterov momentum 0.9): one
  backprop and the update;
* the time of one jitted update of each entropix optimizer, divided by its
  gradient evaluations (``inner_steps`` or ``samples``);
* the noise samplers alone, for all parameters (the alternatives weighed);
* compile time of ``entropy_sgd`` with inner_steps=50 against inner_steps=2.

Every figure is the median over rounds that interleave the variants, so that
drift on a shared machine hits them alike. Writes benchmarks/records/overhead.json.

Run: python benchmarks/overhead.py [--rounds 7] [--out benchmarks/records/overhead.json]
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import entropix
from entropix import _noise

SIZES = (784, 1024, 1024, 10)
BATCH = 128
# Bars: time per gradient evaluation over one SGD step's, and compile time
# with inner_steps 50 over 2.
TARGETS = {
    "entropy_sgd": 1.10,
    "entropy_sgd_noise0": 1.05,
    "hj": 1.05,
    "compile_50_over_2": 1.5,
}


def init_mlp(key):
  params = []
  for k, (m, n) in zip(jax.random.split(key, len(SIZES) - 1), zip(SIZES[:-1], SIZES[1:])):
    params.append({"w": jax.random.normal(k, (m, n)) * np.sqrt(2.0 / m), "b": jnp.zeros(n)})
  return params


def loss(params, batch):
  x, y = batch
  for layer in params[:-1]:
    x = jax.nn.relu(x @ layer["w"] + layer["b"])
  logits = x @ params[-1]["w"] + params[-1]["b"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def make_batches(key, n):
  kx, ky = jax.random.split(key)
  return (
      jax.random.normal(kx, (n, BATCH, SIZES[0])),
      jax.random.randint(ky, (n, BATCH), 0, SIZES[-1]),
  )


def make_step(opt):
  """One jitted optimizer update: the caller's gradient on minibatch 0 + grad_fn."""

  def step(params, state, batches):
    grad_fn = lambda p, i: jax.grad(loss)(p, jax.tree.map(lambda b: b[i], batches))
    updates, state = opt.update(grad_fn(params, 0), state, params, grad_fn=grad_fn)
    return optax.apply_updates(params, updates), state

  return jax.jit(step, donate_argnums=(0, 1))


def time_calls(fn, carry, args, calls):
  """Seconds per call of fn(*carry, *args) -> carry, over `calls` chained calls."""
  jax.block_until_ready(carry)
  start = time.perf_counter()
  for _ in range(calls):
    carry = fn(*carry, *args)
  jax.block_until_ready(carry)
  return (time.perf_counter() - start) / calls, carry


def compile_seconds(inner_steps, params, batches):
  opt = entropix.entropy_sgd(0.1, gamma=0.03, inner_steps=inner_steps)
  state = opt.init(params)
  start = time.perf_counter()
  make_step(opt).lower(params, state, batches).compile()
  return time.perf_counter() - start


def machine():
  cpu = platform.processor()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return {
      "cpu": cpu,
      "cores": os.cpu_count(),
      "platform": platform.platform(),
      "python": sys.version.split()[0],
      "jax": jax.__version__,
      "optax": optax.__version__,
      "device": str(jax.devices()[0]),
  }


def variants():
  """Each optimizer measured, with its gradient evaluations per update."""
  return {
      "sgd": (optax.sgd(0.1, momentum=0.9, nesterov=True), 1),
      "entropy_sgd": (entropix.entropy_sgd(0.1, gamma=0.03, inner_steps=20), 20),
      "entropy_sgd_normal_sampler": (
          entropix.entropy_sgd(0.1, gamma=0.03, inner_steps=20, sampler="normal"), 20),
      "entropy_sgd_threefry_sampler": (
          entropix.entropy_sgd(0.1, gamma=0.03, inner_steps=20, sampler="threefry"), 20),
      "entropy_sgd_noise0": (entropix.entropy_sgd(0.1, gamma=0.03, inner_steps=20, noise=0.0), 20),
      "hj": (entropix.hj(0.1, gamma=0.03), 5),
      "heat": (entropix.heat(0.1, sigma=1e-3, samples=20), 20),
  }


def build_runners(params):
  """[step, carry, batches, evals] per variant, each step compiled and warmed up."""
  runners = {}
  for name, (opt, evals) in variants().items():
    p = jax.tree.map(jnp.copy, params)
    batches = make_batches(jax.random.PRNGKey(1), evals)
    step = make_step(opt)
    carry = (p, opt.init(p))
    carry = step(*carry, batches)  # compile and warm up
    runners[name] = [step, carry, batches, evals]
  return runners


def build_samplers(key, params):
  """The noise samplers alone, for all parameters, compiled."""
  leaves = jax.tree.leaves(params)
  samplers = {
      "threefry_normal": jax.jit(
          lambda k: [jax.random.normal(jax.random.fold_in(k, i), x.shape) for i, x in enumerate(leaves)]),
      "hash_binomial": jax.jit(lambda k: _noise.tree_noise(k, leaves, "binomial")),
      "hash_normal": jax.jit(lambda k: _noise.tree_noise(k, leaves, "normal")),
  }
  for fn in samplers.values():
    jax.block_until_ready(fn(key))
  return samplers


def interleaved_rounds(runners, samplers, key, rounds, calls):
  """Seconds per gradient evaluation and sampler milliseconds, per round."""
  per_grad = {name: [] for name in runners}
  noise_ms = {name: [] for name in samplers}
  for _ in range(rounds):
    for name, runner in runners.items():
      step, carry, batches, evals = runner
      seconds, runner[1] = time_calls(step, carry, (batches,), max(1, calls // evals))
      per_grad[name].append(seconds / evals)
    for name, fn in samplers.items():
      start = time.perf_counter()
      for i in range(5):
        jax.block_until_ready(fn(jax.random.fold_in(key, i)))
      noise_ms[name].append((time.perf_counter() - start) / 5 * 1e3)
  return per_grad, noise_ms


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--calls", type=int, default=40, help="gradient evaluations per timing")
  parser.add_argument("--out", default="benchmarks/records/overhead.json")
  args = parser.parse_args()
  if args.rounds < 1 or args.calls < 20:
    parser.error(f"--rounds must be >= 1 and --calls >= 20, got {args.rounds}, {args.calls}")

  key = jax.random.PRNGKey(0)
  params = init_mlp(key)
  n_params = sum(x.size for x in jax.tree.leaves(params))
  runners = build_runners(params)
  samplers = build_samplers(key, params)
  per_grad, noise_ms = interleaved_rounds(runners, samplers, key, args.rounds, args.calls)

  compile_s = {2: [], 50: []}
  for _ in range(3):
    for steps in compile_s:
      compile_s[steps].append(compile_seconds(steps, params, make_batches(key, steps)))

  median = {k: statistics.median(v) for k, v in per_grad.items()}
  sgd = median["sgd"]
  ratio = {k: v / sgd for k, v in median.items() if k != "sgd"}
  compile_ratio = statistics.median(compile_s[50]) / statistics.median(compile_s[2])
  result = {
      "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "machine": machine(),
      "network": {"sizes": SIZES, "batch": BATCH, "parameters": int(n_params)},
      "rounds": args.rounds,
      "ms_per_gradient_evaluation": {k: round(v * 1e3, 3) for k, v in median.items()},
      "ratio_to_sgd_step": {k: round(v, 3) for k, v in ratio.items()},
      "noise_ms_all_parameters": {k: round(statistics.median(v), 3) for k, v in noise_ms.items()},
      "compile_s": {str(k): round(statistics.median(v), 3) for k, v in compile_s.items()},
      "compile_50_over_2": round(compile_ratio, 3),
      "targets": TARGETS,
      "meets_target": {
          k: (compile_ratio if k == "compile_50_over_2" else ratio[k]) <= t
          for k, t in TARGETS.items()
      },
      "all_ms_per_gradient_evaluation": {k: [round(x * 1e3, 3) for x in v] for k, v in per_grad.items()},
  }
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
  print(json.dumps({k: result[k] for k in (
      "ms_per_gradient_evaluation", "ratio_to_sgd_step", "noise_ms_all_parameters",
      "compile_s", "compile_50_over_2", "meets_target")}, indent=2))


if __name__ == "__main__":
  main()
