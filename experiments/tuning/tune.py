"""Tunes what neither the paper nor the authors' code fixes, on a validation split.

For each Table-1 cell (model x optimizer) a small grid over the values left
open (see GRID: the outer learning rate, gamma0, the fixed point's gamma,
HEAT's sigma), everything else at train.py's defaults. A cell's trials are
one ``train.py --sweep ... --seeds ...`` program (each trial a point of the
grid and a seed, its records in its own workdir, as if it ran alone), with
``--validation-split 10000``: each trains on the first 50,000 training
images and is scored on the last 10,000, so the test set is never looked
at. A trial's budget is short (BUDGET effective epochs, the same for every
cell of a model, before the first learning-rate decay at 60), one device:
the search ranks settings by how well they train early, which is what it
can afford on a 2-core CPU. The validation error of 10,000 images has a
standard error of about 0.1 % near 1 % error: every trial within one
standard error of the best is as good, and the earliest of them in GRID
order is chosen (the defaults come first).

The cells' programs run in workdirs under ``runs/tuning/`` (git-ignored;
the folder is named after ``--out``, or ``--runs``), and every trial's
record goes into ``experiments/tuning/tuning.json`` as soon as its cell
finishes, with the choice of every cell whose trials are all done. The
script can be stopped at any moment and started again: finished cells are
skipped, a half-done one continues with ``--resume``. ``--jobs 2`` runs two
cells at once, each pinned to its own core with ``taskset``. (The records
of ``tuning.json`` ran before the sweeps, one process per trial: the same
runs, one program each.)

Train.py flags after ``--`` go to every trial (``-- --param-init flax``:
the searches of the records ran from Flax's initialisation, train.py's
default then).

A second search, at a cell's full budget, changes the grid and the seeds:
``--budget 120 --grid lr=0.03,0.1,0.3 --grid gamma=1e-4,1e-3,1e-2 --seeds 2``
runs every setting with seeds 0 and 1 and ranks the settings by their mean
(the standard error then shrinks with the number of seeds). Give it its own
``--out``: budgets, grids and seeds are not mixed in one file.

Both searches, as their records hold them: ``bash experiments/tuning/regenerate.sh``.

Run: python experiments/tuning/tune.py [--jobs 2] [--models mnistfc lenet] [--optimizers ...]
"""

import argparse
import datetime
import itertools
import json
import math
import pathlib
import statistics
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
sys.path.insert(0, str(ROOT))
import _jobs  # noqa: E402
from training import optimizers, sweeps  # noqa: E402

VALIDATION = 10_000
BUDGET = {"mnistfc": 10.0, "lenet": 5.0}  # effective epochs per trial
# The values tried per optimizer, the current default first. Outer steps:
# Entropy-SGD's x - mu with inner Nesterov 0.9 is about the sum of the inner
# steps, so lr ~ 1 moves x per backprop as SGD with lr 0.1 does; HEAT
# (Eq. 35) averages 20 gradients, so it affords larger steps.
GRID = {
    "sgd": {"lr": [0.1, 0.03, 0.3]},
    "entropy-sgd": {"lr": [0.1, 0.3, 1.0], "gamma": [None, 1e-3, 1e-2]},
    "heat-uniform": {"lr": [0.1, 0.3, 1.0], "gamma": [None, 1e-3, 1e-2]},
    "hj": {"lr": [0.1, 0.3, 1.0], "gamma": [None, 1e-2, 1e-1]},
    "hj-fixed-point": {"lr": [0.1, 0.3, 1.0], "gamma": [10.0, 1.0, 100.0]},
    "heat": {"lr": [0.1, 0.3, 1.0], "sigma": [1e-2, 1e-3, 3e-2]},
}
ORDER = ("entropy-sgd", "sgd", "hj-fixed-point", "heat-uniform", "hj", "heat")


def _name(model, optimizer, flags):
  return "-".join([model, optimizer, *(f"{k}{v:g}" for k, v in flags.items())])


def trials(models, optimizers, seeds=1):
  """(name, model, optimizer, {flag: value}, seed) in the order they run.

  Seed 0 keeps the name it had before seeds were added (no suffix).
  """
  out = []
  for model in models:
    for optimizer in [o for o in ORDER if o in optimizers]:
      keys = list(GRID[optimizer])
      for values in itertools.product(*(GRID[optimizer][k] for k in keys)):
        flags = {k: v for k, v in zip(keys, values) if v is not None}
        name = _name(model, optimizer, flags)
        out += [(name + (f"-seed{seed}" if seed else ""), model, optimizer, flags, seed)
                for seed in range(seeds)]
  return out


def pending(records, all_trials):
  """The trials not in ``records``, seed-major: a search stopped early has
  every setting's first seed."""
  return sorted((t for t in all_trials if t[0] not in records), key=lambda t: t[4])


def parse_grid(items: list[str], optimizers: list[str]) -> dict[str, list[float]]:
  """``["lr=0.03,0.1", ...]`` to ``{"lr": [0.03, 0.1]}``; SystemExit names a bad item."""
  grid = {}
  for item in items:
    key, _, values = item.partition("=")
    try:
      grid[key] = [float(v) for v in values.split(",")]
    except ValueError:
      sys.exit(f"--grid {item!r}: want KEY=V1,V2,... with numbers")
    for optimizer in optimizers:
      if key not in GRID[optimizer]:
        sys.exit(f"--grid {item!r}: {optimizer} tunes {sorted(GRID[optimizer])}, not {key!r}")
  return grid


def cell_job(model, optimizer, seeds, runs, extra=()):
  """One train.py process for a cell: every setting of its grid with every
  seed as one program (``--sweep``, ``--seeds``), each trial a member with its
  own workdir under the cell's (``runs/MODEL-OPTIMIZER/POINT/seed_N``). A
  grid value None is the cell's default, passed as its value."""
  defaults = optimizers.defaults(model, optimizer)
  keys = list(GRID[optimizer])
  # GRID's None is the default; where the default is also in GRID, the two
  # trials are one point of the sweep, recorded under both names.
  grid = {k: list(dict.fromkeys(defaults[k] if v is None else v for v in GRID[optimizer][k]))
          for k in keys}
  flags = ["--model", model, "--optimizer", optimizer, "--effective-epochs", str(BUDGET[model]),
           "--validation-split", str(VALIDATION), "--devices", "1",
           "--seeds", ",".join(map(str, range(seeds))),
           *(f for k in keys for f in ("--sweep", f"{k}={','.join(map(repr, grid[k]))}"))]
  workdir = runs / f"{model}-{optimizer}"
  members = []
  for values in itertools.product(*(GRID[optimizer][k] for k in keys)):
    name = _name(model, optimizer, {k: v for k, v in zip(keys, values) if v is not None})
    point = {k: defaults[k] if v is None else v for k, v in zip(keys, values)}
    where = workdir / sweeps.point_name(point)
    members += [(name + (f"-seed{seed}" if seed else ""), where / f"seed_{seed}")
                for seed in range(seeds)]
  return _jobs.Job(f"{model}-{optimizer}", [*flags, *extra], workdir, tuple(members))


def choose(records, all_trials):
  """Per cell whose trials are all done: the lowest final validation error.

  The earliest setting in GRID order within one standard error of the lowest
  is chosen. With one seed that error is the binomial one of 10,000 images.
  With several seeds a setting's error is its seeds' mean, a setting any of
  whose seeds diverged is out, and the standard error is the seeds' spread
  (their standard deviation pooled over the settings, over sqrt(seeds)): all
  settings are scored on the same images, so the binomial error is common to
  them and does not separate them; the seed does.
  """
  chosen = {}
  for (model, optimizer), group in itertools.groupby(all_trials, key=lambda t: t[1:3]):
    group = list(group)
    if not all(name in records for name, *_ in group):
      continue
    settings = {}  # flags -> the setting's trials, in GRID order
    for t in group:
      settings.setdefault(json.dumps(t[3], sort_keys=True), []).append(t)
    finished = [ts for ts in settings.values()
                if not any(records[t[0]]["diverged"] for t in ts)]
    if not finished:
      chosen[f"{model}/{optimizer}"] = {"trial": None, "note": "every trial diverged"}
      continue
    errors = [[records[t[0]]["val_error"] for t in ts] for ts in finished]
    means = [statistics.fmean(e) for e in errors]
    seeds = len(errors[0])
    if seeds > 1:
      standard_error = math.sqrt(statistics.fmean(statistics.variance(e) for e in errors) / seeds)
    else:
      lowest = min(means) / 100
      standard_error = 100 * math.sqrt(lowest * (1 - lowest) / VALIDATION)
    i = next(i for i, m in enumerate(means) if m <= min(means) + standard_error)
    chosen[f"{model}/{optimizer}"] = {"trial": finished[i][0][0], **finished[i][0][3],
                                      "val_error": round(means[i], 4),
                                      **({"standard_error": round(standard_error, 4)}
                                         if seeds > 1 else {})}
  return chosen


def main(argv: list[str] | None = None) -> None:
  ours, extra = _jobs.split_argv(argv)
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      usage="%(prog)s [options] [-- train.py flags for every trial]")
  parser.add_argument("--jobs", type=int, default=1, help="trials at once, one core each")
  parser.add_argument("--models", nargs="+", default=list(BUDGET), choices=list(BUDGET))
  parser.add_argument("--optimizers", nargs="+", default=list(ORDER), choices=list(ORDER))
  parser.add_argument("--out", default=str(ROOT / "experiments" / "tuning" / "tuning.json"))
  parser.add_argument("--budget", type=float, metavar="E",
                      help="effective epochs per trial for every model "
                           "(default: BUDGET; do not mix budgets in one --out)")
  parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                      help="the values to try for KEY instead of GRID's, for every optimizer "
                           "chosen (repeatable)")
  parser.add_argument("--seeds", type=int, default=1, help="seeds 0 .. N-1 for every setting")
  parser.add_argument("--runs", metavar="DIR",
                      help="where the cells' workdirs go (default: runs/ and --out's name)")
  args = parser.parse_args(ours)
  if args.seeds < 1:
    parser.error(f"--seeds {args.seeds}: want >= 1")
  if args.budget:
    BUDGET.update({model: args.budget for model in BUDGET})
  grid = parse_grid(args.grid, args.optimizers)
  for optimizer in args.optimizers:
    GRID[optimizer] = {**GRID[optimizer], **grid}
  cores = _jobs.check_jobs(args.jobs)
  out = pathlib.Path(args.out)
  result = json.loads(out.read_text()) if out.is_file() else {}
  records = result.get("trials", {})
  todo = pending(records, trials(args.models, args.optimizers, args.seeds))
  cells = {name: (model, optimizer, flags, seed) for name, model, optimizer, flags, seed in todo}
  # One program per cell with a trial to do, its whole grid (a finished
  # trial's record is kept as it was).
  todo_cells = list(dict.fromkeys((model, optimizer) for _, model, optimizer, _, _ in todo))

  def save():
    result.update({
        "what": "train.py runs on a validation split; see experiments/tuning/tune.py",
        "validation_split": VALIDATION, "budget_effective_epochs": BUDGET, "grid": GRID,
        "seeds": args.seeds, "machine": _jobs.machine(), "trials": records,
        "chosen": choose(records, trials(list(BUDGET), list(ORDER), args.seeds)),
    })
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(out)  # at once and whole: a stop keeps every finished trial

  def on_done(done):
    name = done.job.name
    if name not in cells:  # finished before, in an earlier run of the cell's program
      return
    model, optimizer, flags, seed = cells[name]
    if done.summary is None:
      print(f"{name}: stopped: {done.error}", flush=True)
    records[name] = {
        "model": model, "optimizer": optimizer, "flags": flags, "seed": seed,
        "val_error": done.summary["val_error"] if done.summary else None,
        "diverged": done.summary is None,
        "best_val_error": min(r["val_error"] for r in done.curve),
        "effective_epochs": done.curve[-1]["effective_epochs"],
        "process_wall_s": done.wall_s,
        "curve": [{k: r[k] for k in ("effective_epochs", "val_error", "val_loss", "train_loss")}
                  for r in done.curve],
        "date": datetime.date.today().isoformat(),
    }
    save()
    print(name, records[name]["val_error"], flush=True)

  # Workdirs named after --out: a trial run of the script never resumes the real ones.
  runs = pathlib.Path(args.runs) if args.runs else ROOT / "runs" / out.stem
  jobs = [cell_job(model, optimizer, args.seeds, runs, extra) for model, optimizer in todo_cells]
  _jobs.run(jobs, cores, on_done)
  save()


if __name__ == "__main__":
  main()
