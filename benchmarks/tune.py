"""Tunes what neither the paper nor the authors' code fixes, on a validation split.

For each Table-1 cell (model x optimizer) a small grid over the values left
open (see GRID: the outer learning rate, gamma0, the fixed point's gamma,
HEAT's sigma), everything else at train.py's defaults. Each trial is one
``train.py`` run with ``--validation-split 10000``: it trains on the first
50,000 training images and is scored on the last 10,000, so the test set is
never looked at. A trial's budget is short (BUDGET effective epochs, the
same for every cell of a model, before the first learning-rate decay at 60),
one seed, one device: the search ranks settings by how well they train
early, which is what it can afford on a 2-core CPU. The validation error of
10,000 images has a standard error of about 0.1 % near 1 % error: every
trial within one standard error of the best is as good, and the earliest of
them in GRID order is chosen (the defaults come first).

Every trial runs in its own workdir under ``runs/tuning/`` (git-ignored; the
folder is named after ``--out``) and
its record goes into ``results/tuning.json`` as soon as it finishes, with
the choice of every cell whose trials are all done. The script can be
stopped at any moment and started again: finished trials are skipped, a
half-done one continues with ``--resume``. ``--jobs 2`` runs two trials at
once, each pinned to its own core with ``taskset``.

Run: python benchmarks/tune.py [--jobs 2] [--models mnistfc lenet] [--optimizers ...]
"""

import argparse
import datetime
import itertools
import json
import math
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import _jobs  # noqa: E402
from overhead import machine  # noqa: E402

VALIDATION = 10_000
BUDGET = {"mnistfc": 10.0, "lenet": 5.0}  # effective epochs per trial
# The values tried per optimizer, the current default first. Outer steps:
# Entropy-SGD's x - mu with inner Nesterov 0.9 is about the sum of the inner
# steps, so lr ~ 1 moves x per backprop as SGD with lr 0.1 does (REFERENCE
# section 5); HEAT (Eq. 35) averages 20 gradients, so it affords larger steps.
GRID = {
    "sgd": {"lr": [0.1, 0.03, 0.3]},
    "entropy-sgd": {"lr": [0.1, 0.3, 1.0], "gamma": [None, 1e-3, 1e-2]},
    "heat-uniform": {"lr": [0.1, 0.3, 1.0], "gamma": [None, 1e-3, 1e-2]},
    "hj": {"lr": [0.1, 0.3, 1.0], "gamma": [None, 1e-2, 1e-1]},
    "hj-fixed-point": {"lr": [0.1, 0.3, 1.0], "gamma": [10.0, 1.0, 100.0]},
    "heat": {"lr": [0.1, 0.3, 1.0], "sigma": [1e-2, 1e-3, 3e-2]},
}
ORDER = ("entropy-sgd", "sgd", "hj-fixed-point", "heat-uniform", "hj", "heat")


def trials(models, optimizers):
  """(name, model, optimizer, {flag: value}) in the order they run."""
  out = []
  for model in models:
    for optimizer in [o for o in ORDER if o in optimizers]:
      keys = list(GRID[optimizer])
      for values in itertools.product(*(GRID[optimizer][k] for k in keys)):
        flags = {k: v for k, v in zip(keys, values) if v is not None}
        name = "-".join([model, optimizer, *(f"{k}{v:g}" for k, v in flags.items())])
        out.append((name, model, optimizer, flags))
  return out


def flags_of(model, optimizer, flags):
  args = ["--model", model, "--optimizer", optimizer, "--effective-epochs", str(BUDGET[model]),
          "--validation-split", str(VALIDATION), "--seed", "0", "--devices", "1"]
  for key, value in flags.items():
    args += ["--" + key.replace("_", "-"), repr(value)]
  return args


def choose(records, all_trials):
  """Per cell whose trials are all done: the lowest final validation error."""
  chosen = {}
  for (model, optimizer), group in itertools.groupby(all_trials, key=lambda t: t[1:3]):
    group = list(group)
    if not all(name in records for name, *_ in group):
      continue
    finished = [t for t in group if not records[t[0]]["diverged"]]
    if not finished:
      chosen[f"{model}/{optimizer}"] = {"trial": None, "note": "every trial diverged"}
      continue
    error = lambda t: records[t[0]]["val_error"]
    lowest = min(error(t) for t in finished) / 100
    standard_error = 100 * math.sqrt(lowest * (1 - lowest) / VALIDATION)
    best = next(t for t in finished if error(t) <= 100 * lowest + standard_error)
    chosen[f"{model}/{optimizer}"] = {"trial": best[0], **best[3],
                                      "val_error": records[best[0]]["val_error"]}
  return chosen


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--jobs", type=int, default=1, help="trials at once, one core each")
  parser.add_argument("--models", nargs="+", default=list(BUDGET), choices=list(BUDGET))
  parser.add_argument("--optimizers", nargs="+", default=list(ORDER), choices=list(ORDER))
  parser.add_argument("--out", default=str(ROOT / "results" / "tuning.json"))
  parser.add_argument("--budget", type=float, metavar="E",
                      help="effective epochs per trial for every model, to try the script "
                           "(default: BUDGET; do not mix budgets in one --out)")
  args = parser.parse_args()
  if args.budget:
    BUDGET.update({model: args.budget for model in BUDGET})
  cores = _jobs.check_jobs(args.jobs)
  out = pathlib.Path(args.out)
  result = json.loads(out.read_text()) if out.is_file() else {}
  records = result.get("trials", {})
  todo = [t for t in trials(args.models, args.optimizers) if t[0] not in records]
  cells = {name: (model, optimizer, flags) for name, model, optimizer, flags in todo}

  def save():
    result.update({
        "what": "train.py runs on a validation split; see benchmarks/tune.py",
        "validation_split": VALIDATION, "budget_effective_epochs": BUDGET, "grid": GRID,
        "machine": machine(), "trials": records,
        "chosen": choose(records, trials(list(BUDGET), list(ORDER))),
    })
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(out)  # at once and whole: a stop keeps every finished trial

  def on_done(done):
    name = done.job.name
    model, optimizer, flags = cells[name]
    if done.summary is None:
      print(f"{name}: stopped: {done.error}", flush=True)
    records[name] = {
        "model": model, "optimizer": optimizer, "flags": flags,
        "val_error": done.summary["val_error"] if done.summary else None,
        "diverged": done.summary is None,
        "best_val_error": min(r["val_error"] for r in done.curve),
        "effective_epochs": done.curve[-1]["effective_epochs"],
        "process_wall_s": done.wall_s,
        "curve": [{k: r[k] for k in ("effective_epochs", "val_error", "val_loss")}
                  for r in done.curve],
        "date": datetime.date.today().isoformat(),
    }
    save()
    print(name, records[name]["val_error"], flush=True)

  # Workdirs named after --out: a trial run of the script never resumes the real ones.
  jobs = [_jobs.Job(name, flags_of(*cells[name]), ROOT / "runs" / out.stem / name)
          for name, *_ in todo]
  _jobs.run(jobs, cores, on_done)
  save()


if __name__ == "__main__":
  main()
