"""Where each minimum's sharpest directions live: the Hessian's top eigenvectors.

For each run of ``runs.json`` (or those named), at its final checkpoint and
for the loss that ``train.py --diagnose`` measures (the evaluated network,
the first 10,000 training images): the top 3 eigenpairs
(``entropix.diagnostics.hessian_eigenvalues(vectors=True)``, 30 Lanczos
steps) with each one's residual |Hv - lambda v|; for each eigenvector the
share of its squared norm in each parameter array, and in the one unit
(index of the last axis: a layer's output unit) of the array holding most
of it; and for each BatchNorm layer how many units have a running variance
of 0 or below 1e-2, the median variance, and the largest gain
|scale| / sqrt(var + eps) of a unit whose variance is not 0.

Writes ``sharpest.json`` here, a run at a time as each lands; a run already
there is skipped.

Run: python experiments/flatness/sharpest.py [NAME ...]
"""

import argparse
import json
import pathlib
import sys

import jax
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent
RECORDS = HERE / "sharpest.json"
sys.path.insert(0, str(ROOT))
from entropix import diagnostics  # noqa: E402
from training import diagnose  # noqa: E402

TOP, STEPS = 3, 30
BATCH_NORM_EPS = 1e-5  # models.layers.batch_norm's
# The BatchNorm each weight layer's units pass through (after ReLU and pooling):
# in mnistfc both hidden layers', in LeNet the two convolutions' (its dense layers have none).
NORMALISED_BY = {"mnistfc": {"Dense_0": "BatchNorm_0", "Dense_1": "BatchNorm_1"},
                 "lenet": {"Conv_0": "BatchNorm_0", "Conv_1": "BatchNorm_1"}}


def _name(path) -> str:
  return ".".join(str(getattr(k, "key", k)) for k in path)


def where(vector, params, stats, model: str) -> dict:
  """The shares of a unit eigenvector's squared norm: per array, and its largest unit."""
  squares = {_name(p): np.asarray(v, np.float64) ** 2
             for p, v in jax.tree_util.tree_leaves_with_path(vector)}
  shares = {name: float(s.sum()) for name, s in squares.items()}
  top = max(shares, key=shares.get)
  per_unit = squares[top].reshape(-1, squares[top].shape[-1]).sum(0)
  unit = int(per_unit.argmax())
  out = {"arrays": dict(sorted(shares.items(), key=lambda kv: -kv[1])),
         "top_array": top, "top_unit": unit, "top_unit_share": float(per_unit.max())}
  norm = NORMALISED_BY[model].get(top.split(".")[0])
  if norm is not None:
    var = float(stats[norm]["var"][unit])
    out["top_unit_batch_norm"] = {
        "layer": norm, "running_variance": var,
        "gain": float(abs(params[norm]["scale"][unit]) / np.sqrt(var + BATCH_NORM_EPS))}
  return out


def batch_norms(params, stats) -> dict:
  out = {}
  for layer, s in stats.items():
    var = np.asarray(s["var"], np.float64)
    gain = np.abs(np.asarray(params[layer]["scale"])) / np.sqrt(var + BATCH_NORM_EPS)
    out[layer] = {"units": int(var.size), "zero_variance": int(np.sum(var == 0)),
                  "variance_below_1e-2": int(np.sum(var < 1e-2)),
                  "median_variance": float(np.median(var)),
                  "largest_gain": float(gain[var > 0].max()) if np.any(var > 0) else None}
  return out


def sharpest(workdir: pathlib.Path) -> dict:
  loss_fn, params, batches, about, stats = diagnose.network_loss(workdir, diagnose.Settings())
  values, vectors = diagnostics.hessian_eigenvalues(
      loss_fn, params, batches, TOP, key=jax.random.key(0), num_iterations=STEPS, vectors=True)
  product = diagnostics.hvp(loss_fn, params, batches)
  directions = []
  for i, value in enumerate(values):
    v = jax.tree.map(lambda x: x[i], vectors)
    residual = jax.tree.map(lambda hv, x: hv - value * x, product(v), v)
    directions.append({"eigenvalue": float(value),
                       "residual": float(np.sqrt(sum(np.sum(np.square(r))
                                                     for r in jax.tree.leaves(residual)))),
                       **where(v, params, stats, about["model"])})
  return {**{k: about[k] for k in ("model", "optimizer", "seed", "step")},
          "directions": directions, "batch_norm": batch_norms(params, stats)}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("names", nargs="*", help="runs of runs.json (default: all)")
  args = parser.parse_args(argv)
  runs = json.loads((HERE / "runs.json").read_text())
  unknown = sorted(set(args.names) - set(runs))
  if unknown:
    sys.exit(f"not runs of runs.json: {', '.join(unknown)}")
  records = json.loads(RECORDS.read_text()) if RECORDS.exists() else {}
  for name in args.names or list(runs):
    if name in records:
      continue
    records[name] = sharpest(ROOT / runs[name]["workdir"])
    RECORDS.write_text(json.dumps(dict(sorted(records.items())), indent=1) + "\n")
    top = records[name]["directions"][0]
    print(f"{name}: {top['eigenvalue']:.4g}, {top['top_array']} unit {top['top_unit']} "
          f"{top['top_unit_share']:.2f}", flush=True)


if __name__ == "__main__":
  main()
