"""The cost of entropix.diagnostics on the paper's networks.

For mnistfc and LeNet (at their initialisation: the cost does not depend on
where the parameters are) over a fixed subset of the bundled MNIST training
set, in minibatches of 1,000 as ``train.py --diagnose`` takes them: the time
of one Hessian-vector product over the subset against one gradient over it
(the HVP's cost in backprops; target at most 3), medians of interleaved
rounds, and the wall time of the top-10 eigenvalues by Lanczos over 10,000
images (target: under 10 minutes each on this machine's 2 cores).
Writes benchmarks/records/diagnostics.json.

Run: python benchmarks/diagnostics.py [--rounds 5] [--images 10000] [--out FILE]
"""

import argparse
import datetime
import json
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import input_pipeline  # noqa: E402
import models  # noqa: E402
from entropix import diagnostics  # noqa: E402
from overhead import machine  # noqa: E402

TARGETS = {"hvp_in_backprops": 3.0, "top10_wall_s": 600.0}


def problem(name: str, images: int, batch: int = 1000):
  dataset, scaling = input_pipeline.load("mnist", "raw", 0)
  model = models.create(name)
  variables = jax.jit(model.init, static_argnames="train")(
      jax.random.key(0), scaling(dataset.train_images[:1]), train=False)
  params, stats = variables["params"], variables.get("batch_stats", {})

  def loss_fn(p, b):
    logits = model.apply({"params": p, "batch_stats": stats}, scaling(b["x"]), train=False)
    return optax.softmax_cross_entropy_with_integer_labels(logits, b["y"]).mean()

  n = images // batch
  x = dataset.train_images[:n * batch]
  batches = {"x": jnp.asarray(x.reshape(n, batch, *x.shape[1:])),
             "y": jnp.asarray(dataset.train_labels[:n * batch].reshape(n, batch).astype("int32"))}
  return loss_fn, params, batches


def time_call(fn, *args) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def measure(name: str, images: int, rounds: int) -> dict:
  loss_fn, params, batches = problem(name, images)
  product = diagnostics._flat_hvp(loss_fn, params, batches)  # the HVP the estimators call
  flat, unravel = ravel_pytree(params)

  @jax.jit
  def gradient(point, batches):
    one = lambda b: ravel_pytree(jax.grad(loss_fn)(unravel(point), b))[0]
    return diagnostics._mean_over(batches, one, flat)

  v = jax.random.normal(jax.random.key(1), flat.shape)
  time_call(product, v), time_call(gradient, flat, batches)  # compile both
  hvp_s, grad_s = [], []
  for _ in range(rounds):  # interleaved: drift hits both alike
    hvp_s.append(time_call(product, v))
    grad_s.append(time_call(gradient, flat, batches))
  start = time.perf_counter()
  top = diagnostics.hessian_eigenvalues(loss_fn, params, batches, 10, key=jax.random.key(2))
  top10 = time.perf_counter() - start
  return {"parameters": int(flat.size), "images": int(images),
          "hvp_ms": round(1e3 * statistics.median(hvp_s), 1),
          "gradient_ms": round(1e3 * statistics.median(grad_s), 1),
          "hvp_in_backprops": round(statistics.median(h / g for h, g in zip(hvp_s, grad_s)), 3),
          "top10_wall_s": round(top10, 1), "top10": [round(float(t), 5) for t in top]}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--images", type=int, default=10_000)
  parser.add_argument("--models", nargs="+", default=["mnistfc", "lenet"])
  parser.add_argument("--out", default="benchmarks/records/diagnostics.json")
  args = parser.parse_args(argv)
  results = {name: measure(name, args.images, args.rounds) for name in args.models}
  record = {"what": __doc__.splitlines()[0], "targets": TARGETS, "results": results,
            "met": {name: {k: r[k] <= v for k, v in TARGETS.items()}
                    for name, r in results.items()},
            "machine": machine(), "date": datetime.date.today().isoformat(),
            "command": "python benchmarks/diagnostics.py " + " ".join(argv or sys.argv[1:])}
  pathlib.Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
  print(json.dumps(results, indent=1))


if __name__ == "__main__":
  main()
