"""Parle with n replicas against Entropy-SGD on LeNet/MNIST, at equal epochs per replica.

Two train.py runs (seed 0, constant lr 0.1: the Table-1 recipe's first 60
epochs, so a short budget is not cut by an lr decay that falls elsewhere):

* ``entropy-sgd``: ``--effective-epochs E`` on one device;
* ``parle``: ``--replicas n --devices n`` (the authors' Parle defaults:
  L = 25, gamma 0.01 -> 1, rho 1 -> 10), ``--effective-epochs n * E``:
  effective epochs count every replica's backprops, so each replica does E.

Both evaluate every 5 effective epochs per replica. On a CPU the n devices
are simulated (``XLA_FLAGS=--xla_force_host_platform_device_count=n``, set
here) and share the cores the script may use: Parle's wall time is then
the compute of all n replicas, n devices' worth of work on one core. The
record of each finished run goes into ``--results`` at once (a stopped
script resumes the half-done run); the comparison table is printed and
stored beside the runs. Train.py flags after ``--`` go to both runs
(``-- --param-init flax``: the record's runs started from Flax's
initialisation, train.py's default then).

Run: taskset -c 1 python experiments/parle_vs_entropy_sgd/parle_vs_entropy_sgd.py [--epochs 20]
[--replicas 4]
"""

import argparse
import datetime
import json
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "experiments"))
import _jobs  # noqa: E402

EVAL_EVERY = 5.0  # effective epochs per replica


def flags(name: str, epochs: float, replicas: int, seed: int) -> list[str]:
  """train.py flags of the ``entropy-sgd`` or ``parle`` run."""
  common = ["--model", "lenet", "--seed", str(seed), "--lr-schedule", "none"]
  if name == "entropy-sgd":
    return [*common, "--optimizer", "entropy-sgd", "--devices", "1",
            "--effective-epochs", f"{epochs:g}", "--eval-every", f"{EVAL_EVERY:g}"]
  return [*common, "--optimizer", "parle", "--replicas", str(replicas),
          "--devices", str(replicas), "--effective-epochs", f"{epochs * replicas:g}",
          "--eval-every", f"{EVAL_EVERY * replicas:g}"]


def comparison(runs: dict[str, dict]) -> list[dict]:
  """One row per evaluation mark (every EVAL_EVERY effective epochs per replica);
  each run's evaluation falls on the first update at or past the mark."""
  rows: dict[float, dict] = {}
  for name, run in runs.items():
    for record in run["curve"]:
      epochs = record["effective_epochs"] / run["replicas"]
      mark = round(epochs / EVAL_EVERY) * EVAL_EVERY
      row = rows.setdefault(mark, {"epochs_per_replica": mark})
      row[f"{name}_epochs"] = round(epochs, 3)
      row[f"{name}_val_error"] = record["val_error"]
      if "val_error_best" in record:
        row[f"{name}_best"] = record["val_error_best"]
        row[f"{name}_worst"] = record["val_error_worst"]
  return [rows[e] for e in sorted(rows)]


def main(argv: list[str] | None = None) -> None:
  ours, extra = _jobs.split_argv(argv)
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   usage="%(prog)s [options] [-- train.py flags for both runs]")
  parser.add_argument("--epochs", type=float, default=20.0,
                      help="effective epochs per replica (default: %(default)s)")
  parser.add_argument("--replicas", type=int, default=4, help="Parle's (default: %(default)s)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--results", default=str(HERE / "parle_vs_entropy_sgd.json"))
  parser.add_argument("--runs", default=str(ROOT / "runs" / "parle"),
                      help="folder of the two workdirs (default: %(default)s)")
  args = parser.parse_args(ours)
  if not args.epochs > 0:
    parser.error(f"--epochs {args.epochs}: must be > 0")
  if args.replicas < 1:
    parser.error(f"--replicas {args.replicas}: must be >= 1")
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_"
                             f"device_count={args.replicas}").strip()
  results = pathlib.Path(args.results)
  done = json.loads(results.read_text()) if results.is_file() else {"runs": {}}
  replicas = {"entropy-sgd": 1, "parle": args.replicas}

  def on_done(finished: _jobs.Finished) -> None:
    name = finished.job.name
    if finished.summary is None:
      sys.exit(f"{name} stopped: {finished.error}")
    done["runs"][name] = {
        "command": "python train.py " + " ".join(finished.job.flags),
        "replicas": replicas[name], "summary": finished.summary,
        "wall_s": finished.summary["wall_s"], "curve": finished.curve,
    }
    done.update(machine=_jobs.machine(), date=datetime.date.today().isoformat(),
                cores=sorted(os.sched_getaffinity(0)), comparison=comparison(done["runs"]))
    tmp = results.with_suffix(".tmp")
    tmp.write_text(json.dumps(done, indent=1) + "\n")
    tmp.replace(results)
    print(name, finished.summary["val_error"], f"{finished.summary['wall_s']:.0f} s", flush=True)

  jobs = [_jobs.Job(name, [*flags(name, args.epochs, args.replicas, args.seed), *extra],
                    pathlib.Path(args.runs) / name)
          for name in replicas if name not in done["runs"]]
  # One job at a time, on every core this process may use: Parle's devices share them.
  _jobs.run(jobs, [0], on_done, pin=False)
  for row in done.get("comparison", []):
    print(json.dumps(row))


if __name__ == "__main__":
  main()
