"""Which optimizer should a user pick? Seven at equal gradient evaluations.

SGD, AdamW, SAM, SWA, Entropy-SGD, the HJ fixed point (Table 1's HJ) and
HEAT as Table 1 ran it (the Entropy-SGD loop, uniform average), on three
cells: mnistfc and LeNet on MNIST, LeNet on Fashion-MNIST. Fair by
construction:

* **the same budget of gradient evaluations**: every run trains BUDGET
  effective epochs, backprops * batch_size / N_train, which counts SAM's two
  backprops per update and the inner loops' L (train.py's budget);
* **the same tuning budget**: every optimizer gets TRIALS trials, a small
  grid over its own main hyper-parameters (GRID, the same for every cell),
  seed 0, trained on the first 50,000 training images and scored on the
  last 10,000 (``--validation-split 10000``): the test set is never looked
  at while choosing. A cell's trials are one ``train.py --sweep`` program.
  The choice is tuning's rule: the lowest validation error, or the earliest
  trial in GRID order within one binomial standard error of it (about 0.1%
  near 1% error), a diverged trial being out;
* then SEEDS seeds at the chosen setting on the whole training set, scored
  on the test set every effective epoch, the top Hessian eigenvalue and
  trace measured along the way every SHARPNESS_EVERY (``--sharpness-every``),
  one ``train.py --seeds`` program per cell.

Stages (``--stage``): ``tune`` writes ``tuning.json`` (every trial's curve,
each cell's choice), ``final`` writes ``finals.json`` (every seed's curve
and summary), ``measure`` writes ``minima.json`` (each final network's
minimum measured by ``training.diagnose`` with SETTINGS: loss, top Hessian
eigenvalue and trace, perturbation sharpness absolute and relative, the
same eigenvalue and trace per layer, the parameters' norms; one process per
run, pinned to its core); each record lands the moment its program ends, so the script
can be stopped at any time and started again: finished programs are
skipped, a half-done one continues with ``--resume``. ``--jobs 2`` runs two
programs at once, each pinned to its own core. ``--cells`` and
``--optimizers`` restrict every stage, measuring included. Workdirs go under
``runs/which_optimizer/`` (git-ignored).

Run: python experiments/which_optimizer/compare.py --stage tune --jobs 2
"""

import argparse
import dataclasses
import datetime
import itertools
import json
import math
import pathlib
import sys
from collections.abc import Sequence

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
sys.path.insert(0, str(ROOT))
import _jobs  # noqa: E402
from training import diagnose, sweeps  # noqa: E402

HERE = ROOT / "experiments" / "which_optimizer"
CELLS = (("mnist", "mnistfc"), ("mnist", "lenet"), ("fashion_mnist", "lenet"))
OPTIMIZERS = ("sgd", "adamw", "sam", "swa", "entropy-sgd", "hj-fixed-point", "heat-uniform")
BUDGET = 10.0  # effective epochs, every run: before the default lr drop at 60
VALIDATION = 10_000
TRIALS = 4
# Each optimizer's own main hyper-parameters, TRIALS settings each. The
# learning rates bracket the recipes' values of mnistfc and LeNet (SGD 0.03
# and 0.1; Entropy-SGD's x - <y> is about the sum of its inner steps, so its
# outer lr is of another scale); SAM's rho and SWA's averaged fraction at
# their papers' default and a larger one; the local-entropy family's gamma
# at the recipes' two values.
GRID = {
    "sgd": {"lr": [0.01, 0.03, 0.1, 0.3]},
    "adamw": {"lr": [1e-4, 3e-4, 1e-3, 3e-3]},
    "sam": {"lr": [0.03, 0.1], "sam_rho": [0.05, 0.2]},
    "swa": {"lr": [0.03, 0.1], "swa_fraction": [0.25, 0.5]},
    "entropy-sgd": {"lr": [0.1, 0.3], "gamma": [1e-3, 1e-2]},
    "hj-fixed-point": {"lr": [0.1, 0.3], "gamma": [1.0, 10.0]},
    "heat-uniform": {"lr": [0.1, 0.3], "gamma": [1e-3, 1e-2]},
}
SEEDS = (0, 1, 2)
# The minima, measured on the first 1,024 training images in 2 minibatches
# (train.py --diagnose's defaults take 10,000 and would cost more than the runs).
SETTINGS = diagnose.Settings(images=1024, batch=512, top_k=1, lanczos_steps=20, probes=10,
                             perturbations=8, layer_lanczos_steps=10)
PARTS = ("top_eigenvalues", "trace_and_diagonal", "perturbation_sharpness",
         "relative_sharpness", "layers", "parameter_norms")
EVAL_EVERY = {"tune": 2.5, "final": 1.0}  # the final curves are drawn per effective epoch
SHARPNESS_EVERY = 2.0  # the final runs' top eigenvalue and trace along the way (train.py's)


def points(optimizer: str) -> list[dict[str, float]]:
  """The grid's settings of ``optimizer``, in GRID order."""
  keys = list(GRID[optimizer])
  return [dict(zip(keys, values)) for values in itertools.product(*GRID[optimizer].values())]


def cell_name(dataset: str, model: str, optimizer: str) -> str:
  return f"{dataset}-{model}-{optimizer}"


def base_flags(dataset: str, model: str, optimizer: str, stage: str) -> list[str]:
  return ["--model", model, "--optimizer", optimizer, "--dataset", dataset,
          "--effective-epochs", str(BUDGET), "--eval-every", str(EVAL_EVERY[stage]),
          "--devices", "1"]


def tune_job(dataset: str, model: str, optimizer: str, runs: pathlib.Path,
             extra: Sequence[str] = ()) -> _jobs.Job:
  """The cell's TRIALS trials as one ``--sweep`` program, seed 0, validation split."""
  cell = cell_name(dataset, model, optimizer)
  sweep = [f for key, values in GRID[optimizer].items()
           for f in ("--sweep", f"{key}={','.join(map(repr, values))}")]
  workdir = runs / "tune" / cell
  members = tuple((f"{cell}/{sweeps.point_name(p)}", workdir / sweeps.point_name(p))
                  for p in points(optimizer))
  flags = [*base_flags(dataset, model, optimizer, "tune"),
           "--validation-split", str(VALIDATION), "--seed", "0", *sweep, *extra]
  return _jobs.Job(cell, flags, workdir, members)


def choose(trials: list[dict]) -> dict:
  """Tuning's rule over one cell's trials (in GRID order): the lowest final
  validation error, or the earliest trial within one binomial standard
  error of it; a diverged trial is out."""
  finished = [t for t in trials if not t["diverged"]]
  if not finished:
    return {"setting": None, "note": "every trial diverged"}
  lowest = min(t["val_error"] for t in finished)
  standard_error = 100 * math.sqrt(lowest / 100 * (1 - lowest / 100) / VALIDATION)
  pick = next(t for t in finished if t["val_error"] <= lowest + standard_error)
  return {"setting": pick["setting"], "val_error": pick["val_error"],
          "lowest_val_error": lowest, "standard_error": round(standard_error, 4)}


def final_job(dataset: str, model: str, optimizer: str, setting: dict[str, float],
              runs: pathlib.Path) -> _jobs.Job:
  """The cell's SEEDS seeds at ``setting`` as one ``--seeds`` program, test set."""
  cell = cell_name(dataset, model, optimizer)
  workdir = runs / "final" / cell
  flags = [*base_flags(dataset, model, optimizer, "final"),
           *(f for key, value in setting.items() for f in (f"--{key.replace('_', '-')}",
                                                            repr(value))),
           *(["--sharpness-every", str(SHARPNESS_EVERY)] if SHARPNESS_EVERY else []),
           "--seeds", ",".join(map(str, SEEDS))]
  members = tuple((f"{cell}/seed_{s}", workdir / f"seed_{s}") for s in SEEDS)
  return _jobs.Job(cell, flags, workdir, members)


def _record(done: _jobs.Finished) -> dict:
  return {
      "val_error": done.summary["val_error"] if done.summary else None,
      "diverged": done.summary is None,
      **({"stopped": done.error} if done.summary is None else {}),
      "effective_epochs": done.curve[-1]["effective_epochs"],
      "backprops": done.curve[-1]["backprops"],
      "program_wall_s": done.wall_s,
      "curve": [{k: r[k] for k in ("effective_epochs", "backprops", "val_error", "val_loss",
                                   "train_loss", "train_error", "sharpness") if k in r}
                for r in done.curve],
      "date": datetime.date.today().isoformat(),
  }


def _save(path: pathlib.Path, result: dict) -> None:
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(result, indent=1) + "\n")
  tmp.replace(path)  # at once and whole: a stop keeps every finished program


def _about(stage: str) -> dict:
  return {"what": f"experiments/which_optimizer/compare.py --stage {stage}",
          "budget_effective_epochs": BUDGET, "eval_every": EVAL_EVERY[stage],
          "machine": _jobs.machine()}


def tune(cells, optimizers, cores, runs, out: pathlib.Path, extra) -> None:
  result = json.loads(out.read_text()) if out.is_file() else {}
  records = result.setdefault("trials", {})
  result.update(_about("tune"), validation_split=VALIDATION, grid=GRID, trials_per_cell=TRIALS)
  todo = [(d, m, o) for d, m in cells for o in optimizers
          if not all(f"{cell_name(d, m, o)}/{sweeps.point_name(p)}" in records
                     for p in points(o))]
  settings = {f"{cell_name(d, m, o)}/{sweeps.point_name(p)}": (d, m, o, p)
              for d, m in cells for o in optimizers for p in points(o)}

  def on_done(done):
    dataset, model, optimizer, setting = settings[done.job.name]
    records[done.job.name] = {"dataset": dataset, "model": model, "optimizer": optimizer,
                              "setting": setting, "seed": 0, **_record(done)}
    result["chosen"] = chosen(records)
    _save(out, result)
    print(done.job.name, records[done.job.name]["val_error"], flush=True)

  _jobs.run([tune_job(d, m, o, runs, extra) for d, m, o in todo], cores, on_done)
  result["chosen"] = chosen(records)
  _save(out, result)


def chosen(records: dict) -> dict:
  """Each cell whose trials are all recorded: its choice."""
  out = {}
  for d, m in CELLS:
    for o in OPTIMIZERS:
      names = [f"{cell_name(d, m, o)}/{sweeps.point_name(p)}" for p in points(o)]
      if all(n in records for n in names):
        out[cell_name(d, m, o)] = choose([records[n] for n in names])
  return out


def final(cells, optimizers, cores, runs, out: pathlib.Path, tuning: pathlib.Path,
          extra) -> None:
  choices = json.loads(tuning.read_text()).get("chosen", {}) if tuning.is_file() else {}
  result = json.loads(out.read_text()) if out.is_file() else {}
  records = result.setdefault("runs", {})
  result.update(_about("final"), seeds=list(SEEDS), chosen=choices)
  jobs, cell_of = [], {}
  for d, m in cells:
    for o in optimizers:
      choice = choices.get(cell_name(d, m, o))
      if choice is None or choice["setting"] is None:
        print(f"{cell_name(d, m, o)}: no choice yet (tune it first)", flush=True)
        continue
      job = final_job(d, m, o, choice["setting"], runs)
      if all(name in records for name, _ in job.members):
        continue
      jobs.append(job._replace(flags=[*job.flags, *extra]))
      cell_of.update({name: (d, m, o, choice["setting"], int(name.rsplit("_", 1)[1]))
                      for name, _ in job.members})

  def on_done(done):
    dataset, model, optimizer, setting, seed = cell_of[done.job.name]
    records[done.job.name] = {"dataset": dataset, "model": model, "optimizer": optimizer,
                              "setting": setting, "seed": seed, "workdir": str(done.job.workdir),
                              **_record(done)}
    _save(out, result)
    print(done.job.name, records[done.job.name]["val_error"], flush=True)

  _jobs.run(jobs, cores, on_done)
  _save(out, result)


def measure_one(workdir: pathlib.Path, settings: diagnose.Settings) -> dict:
  """The minimum of the run in ``workdir`` (its newest checkpoint) as a JSON record."""
  network = diagnose.network_loss(workdir, settings)
  measured = diagnose.measure(network.loss_fn, network.params, network.batches, settings, PARTS)
  return {**network.about, "settings": json.loads(json.dumps(dataclasses.asdict(settings))),
          **measured}


def measure(cells, optimizers, cores, out: pathlib.Path, finals: pathlib.Path) -> None:
  """Each finished final run of ``cells`` x ``optimizers`` not yet in ``out``,
  one process per core at a time."""
  runs = json.loads(finals.read_text()).get("runs", {}) if finals.is_file() else {}
  result = json.loads(out.read_text()) if out.is_file() else {}
  records = result.setdefault("minima", {})
  result.update(what="experiments/which_optimizer/compare.py --stage measure", parts=PARTS,
                machine=_jobs.machine())
  todo = [(name, run["workdir"]) for name, run in runs.items()
          if name not in records and not run["diverged"]
          and (run["dataset"], run["model"]) in cells and run["optimizer"] in optimizers]
  settings = json.dumps(dataclasses.asdict(SETTINGS))

  def on_end(name: str, ended: _jobs.Ended) -> None:
    if ended.returncode:
      sys.exit(f"{name}: measuring failed:\n{ended.stderr[-2000:]}")
    records[name] = {**json.loads(ended.stdout.splitlines()[-1]),
                     "process_wall_s": ended.wall_s, "date": datetime.date.today().isoformat()}
    _save(out, result)
    print(name, "measured", flush=True)

  _jobs.run_commands(
      [(name, [sys.executable, __file__, "--measure-one", workdir, "--settings", settings])
       for name, workdir in todo], cores, on_end)
  _save(out, result)


def main(argv: list[str] | None = None) -> None:
  ours, extra = _jobs.split_argv(argv)
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   usage="%(prog)s [options] [-- train.py flags for every run]")
  parser.add_argument("--stage", choices=("tune", "final", "measure"))
  parser.add_argument("--measure-one", type=pathlib.Path, metavar="WORKDIR",
                      help=argparse.SUPPRESS)  # the measure stage's child process
  parser.add_argument("--settings", help=argparse.SUPPRESS)
  parser.add_argument("--jobs", type=int, default=1, help="programs at once, one core each")
  parser.add_argument("--cells", nargs="+", default=[f"{d}-{m}" for d, m in CELLS],
                      choices=[f"{d}-{m}" for d, m in CELLS])
  parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=OPTIMIZERS)
  parser.add_argument("--out", type=pathlib.Path, metavar="DIR", default=HERE,
                      help="where tuning.json and finals.json go (default: %(default)s)")
  parser.add_argument("--runs", type=pathlib.Path, metavar="DIR",
                      default=ROOT / "runs" / "which_optimizer",
                      help="the programs' workdirs (default: %(default)s)")
  args = parser.parse_args(ours)
  if args.measure_one is not None:
    settings = diagnose.Settings(**{k: tuple(v) if isinstance(v, list) else v
                                    for k, v in json.loads(args.settings).items()})
    print(json.dumps(measure_one(args.measure_one, settings)), flush=True)
    return
  if args.stage is None:
    parser.error("--stage is required")
  cores = _jobs.check_jobs(args.jobs)
  cells = [c for c in CELLS if f"{c[0]}-{c[1]}" in args.cells]
  args.out.mkdir(parents=True, exist_ok=True)
  if args.stage == "tune":
    tune(cells, args.optimizers, cores, args.runs, args.out / "tuning.json", extra)
  elif args.stage == "measure":
    measure(cells, args.optimizers, cores, args.out / "minima.json", args.out / "finals.json")
  else:
    final(cells, args.optimizers, cores, args.runs, args.out / "finals.json",
          args.out / "tuning.json", extra)


if __name__ == "__main__":
  main()
