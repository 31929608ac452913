"""Flax's MNIST examples (Linen, NNX) with SGD and with Entropy-SGD at equal gradient evaluations.

Runs each of ``linen_sgd.py``, ``linen_entropix.py``, ``nnx_sgd.py`` and
``nnx_entropix.py`` for the same number of epochs (passes over the training
set: N / B gradient evaluations each, whatever the optimizer) and seeds, one
process each, and writes each run's per-epoch records to
``runs/<example>/seed_<s>/records.json`` as it finishes (a run whose records
exist is skipped: the comparison resumes). ``--table`` prints the README's
table from the records.

Run (the README's numbers): taskset -c 1 python examples/flax_mnist/compare.py --epochs 10 --seeds 0
then python examples/flax_mnist/compare.py --table
"""

import argparse
import json
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
EXAMPLES = ["linen_sgd", "linen_entropix", "nnx_sgd", "nnx_entropix"]


def run_dir(example, seed):
  return HERE / "runs" / example / f"seed_{seed}"


def train(epochs, seeds, examples=EXAMPLES):
  for seed in seeds:
    for example in examples:
      out = run_dir(example, seed)
      if (out / "records.json").exists():
        print(f"{example} seed {seed}: done already", flush=True)
        continue
      start = time.time()
      subprocess.run([sys.executable, str(HERE / f"{example}.py"), "--epochs", str(epochs),
                      "--seed", str(seed), "--workdir", str(out)], check=True)
      (out / "wall_s.txt").write_text(f"{time.time() - start:.0f}\n")


def table():
  rows = ["| example | optimizer | seed | epochs (gradient evaluations) | test accuracy, as the "
          "example evaluates (%) | with re-estimated BatchNorm statistics (%) | wall s |",
          "|---|---|---|---|---|---|---|"]
  for example in EXAMPLES:
    for path in sorted((HERE / "runs" / example).glob("seed_*/records.json")):
      last = json.loads(path.read_text())[-1]
      wall = path.parent / "wall_s.txt"
      recomputed = last.get("test_accuracy_recomputed_stats")
      rows.append(
          f"| {example.split('_')[0]} | {'SGD' if example.endswith('sgd') else 'Entropy-SGD'} "
          f"| {path.parent.name[5:]} | {last['epoch']:g} ({last['gradient_evaluations']}) "
          f"| {100 * last['test_accuracy']:.2f} "
          f"| {'no BatchNorm' if recomputed is None else f'{100 * recomputed:.2f}'} "
          f"| {wall.read_text().strip() if wall.exists() else '-'} |")
  rows += ["", "| example | optimizer | seeds | test accuracy, mean (min-max) (%) | re-estimated "
           "statistics, mean (min-max) (%) | after epoch 1: as evaluated / re-estimated, mean (%) |",
           "|---|---|---|---|---|---|"]
  for example in EXAMPLES:
    runs = [json.loads(p.read_text())
            for p in sorted((HERE / "runs" / example).glob("seed_*/records.json"))]
    if not runs:
      continue

    def summary(key, epoch=-1):
      values = [100 * r[epoch][key] for r in runs]
      return sum(values) / len(values), min(values), max(values)

    def spread(key):
      mean, low, high = summary(key)
      return f"{mean:.2f} ({low:.2f}-{high:.2f})"

    recomputed = "test_accuracy_recomputed_stats" in runs[0][-1]
    first = (f"{summary('test_accuracy', 0)[0]:.2f} / "
             f"{summary('test_accuracy_recomputed_stats', 0)[0]:.2f}" if recomputed else "-")
    rows.append(f"| {example.split('_')[0]} | "
                f"{'SGD' if example.endswith('sgd') else 'Entropy-SGD'} | {len(runs)} | "
                f"{spread('test_accuracy')} | "
                f"{spread('test_accuracy_recomputed_stats') if recomputed else '-'} | {first} |")
  return "\n".join(rows)


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--epochs", type=float, default=10)
  parser.add_argument("--seeds", default="0", help="comma-separated seeds")
  parser.add_argument("--examples", default=",".join(EXAMPLES),
                      help="comma-separated examples to run (default: all four)")
  parser.add_argument("--table", action="store_true", help="print the table of the records")
  args = parser.parse_args()
  unknown = sorted(set(args.examples.split(",")) - set(EXAMPLES))
  if unknown:
    parser.error(f"--examples: unknown {unknown}; choose from {EXAMPLES}")
  if args.table:
    print(table())
  else:
    train(args.epochs, [int(s) for s in args.seeds.split(",")], args.examples.split(","))
