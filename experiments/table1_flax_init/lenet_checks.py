"""Two checks of LeNet's HJ cells, from Flax's initialisation, on the validation split.

Each check is a pair of train.py runs at the cell's full budget, seed 0, on
the validation split (the last 10,000 training images: the test set is
never looked at), one core each, side by side:

* ``lenet_fixed_point_scoping.json``: the fixed point (Table 1's HJ column)
  with scoping 0 and with the default 1e-3, which grows gamma from 10 to
  about 7,000 over the run: is scoping what keeps the cell above the paper?
* ``lenet_hj_schedule.json``: HJ as Sec. 7.2 describes it with the default
  schedule (its first lr drop at 60, where its budget ends) and with a drop
  at 45: what does the missing anneal cost?

The records' commands are those of train.py when Flax's initialisation was
its default; the runs here add ``--param-init flax`` to start from it again.
Each record is written again as each of its runs finishes; runs already in
it are skipped, a half-done one resumes.

Run: python experiments/table1_flax_init/lenet_checks.py [--jobs 2]
"""

import argparse
import datetime
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "experiments"))
import _jobs  # noqa: E402

INIT = ["--param-init", "flax"]
SPLIT = ["--validation-split", "10000"]
FIXED_POINT = ["--model", "lenet", "--optimizer", "hj-fixed-point"]
HJ = ["--model", "lenet", "--optimizer", "hj", "--seed", "0", "--devices", "1"]
# record -> (its "what", {run label: train.py flags}, the fields of each run)
CHECKS = {
    "lenet_fixed_point_scoping.json": (
        "LeNet hj-fixed-point (Table 1's HJ column) with and without scoping, on the validation "
        "split (last 10,000 training images), the full budget of 84 effective epochs, seed 0, "
        "one core each, run side by side",
        {"scoping 0": [*FIXED_POINT, "--scoping", "0", *SPLIT],
         "scoping 0.001": [*FIXED_POINT, "--scoping", "0.001", *SPLIT]},
        ("command", "val_error", "effective_epochs", "curve")),
    "lenet_hj_schedule.json": (
        "LeNet hj (HJ as Sec. 7.2 describes it, the code's HJB) with and without an lr drop "
        "within its budget of 60 effective epochs, on the validation split (last 10,000 training "
        "images), seed 0, one core each, run side by side (experiments/table1/reproduce_table1.py "
        "--models lenet --optimizers hj --seeds 1 --results ... -- --validation-split 10000 "
        "[--lr-schedule 45:0.02])",
        {"default (first lr drop at 60, after the budget)": [*HJ, *SPLIT],
         "--lr-schedule 45:0.02": [*HJ, *SPLIT, "--lr-schedule", "45:0.02"]},
        ("command", "val_error", "effective_epochs", "wall_s", "curve")),
}


def run_record(finished: _jobs.Finished, fields) -> dict:
  """One run's entry in its check's record, with ``fields`` only."""
  every = {
      "command": "python train.py " + " ".join(finished.job.flags),
      "val_error": finished.summary["val_error"],
      "effective_epochs": finished.curve[-1]["effective_epochs"],
      "wall_s": finished.summary["wall_s"],
      "curve": [{k: r[k] for k in ("effective_epochs", "val_error", "val_loss", "train_loss")}
                for r in finished.curve],
  }
  return {k: every[k] for k in fields}


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--jobs", type=int, default=2, help="runs at once, one core each")
  parser.add_argument("--out", default=str(HERE), help="folder of the records")
  parser.add_argument("--runs", default=str(ROOT / "runs" / "lenet_checks"),
                      help="folder of the runs' workdirs (default: %(default)s)")
  args = parser.parse_args(argv)
  cores = _jobs.check_jobs(args.jobs)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  records, owner, jobs = {}, {}, []
  for name, (what, runs, _) in CHECKS.items():
    path = out / name
    records[name] = json.loads(path.read_text()) if path.is_file() else {"what": what, "runs": {}}
    for label, flags in runs.items():
      if label not in records[name]["runs"]:
        owner[label] = name
        slug = re.sub(r"[^\w.]+", "-", f"{path.stem}-{label}").strip("-")
        jobs.append(_jobs.Job(label, [*flags, *INIT], pathlib.Path(args.runs) / slug))

  def on_done(finished: _jobs.Finished) -> None:
    label, name = finished.job.name, owner[finished.job.name]
    if finished.summary is None:
      sys.exit(f"{label} stopped: {finished.error}")
    runs = {**records[name]["runs"], label: run_record(finished, CHECKS[name][2])}
    records[name] = {"what": CHECKS[name][0], "machine": _jobs.machine(),
                     "date": datetime.date.today().isoformat(), "runs": runs}
    tmp = (out / name).with_suffix(".tmp")
    tmp.write_text(json.dumps(records[name], indent=1) + "\n")
    tmp.replace(out / name)
    print(label, finished.summary["val_error"], flush=True)

  _jobs.run(jobs, cores, on_done)


if __name__ == "__main__":
  main()
