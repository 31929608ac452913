"""Trains the networks whose minima experiments/flatness measures.

SGD and Entropy-SGD with 2 seeds each, HEAT (the authors' uniform average,
Table 1's HEAT column) and the HJ fixed point (Table 1's HJ column) with 1,
on mnistfc and LeNet: each ``python train.py --model M --optimizer O --seed
S --devices 1`` at its Table-1 recipe and budget, the same commands as
experiments/table1 ran. The workdirs, whose final checkpoints hold the
parameters that ``measure.py`` reads, stay under ``runs/flatness/``
(git-ignored: about 20 MB per mnistfc run). Each finished run's summary
goes into ``runs.json`` here at once; stopped and started again, the script
skips finished runs and resumes a half-done one.

Run: python experiments/flatness/train_runs.py [--jobs 2] [--runs runs/flatness]
"""

import argparse
import datetime
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "experiments"))
import _jobs  # noqa: E402

# (optimizer, seeds) per network; the longest runs first, so two cores stay busy.
CELLS = [("mnistfc", "sgd", 2), ("mnistfc", "entropy-sgd", 2), ("mnistfc", "heat-uniform", 1),
         ("mnistfc", "hj-fixed-point", 1), ("lenet", "sgd", 2), ("lenet", "entropy-sgd", 2),
         ("lenet", "heat-uniform", 1), ("lenet", "hj-fixed-point", 1)]


def jobs(runs: pathlib.Path, extra: list[str]) -> list[_jobs.Job]:
  return [_jobs.Job(f"{m}-{o}-seed{s}",
                    ["--model", m, "--optimizer", o, "--seed", str(s), "--devices", "1", *extra],
                    runs / f"{m}-{o}-seed{s}")
          for seed in range(2) for m, o, seeds in CELLS for s in [seed] if s < seeds]


def main(argv: list[str] | None = None) -> None:
  own, extra = _jobs.split_argv(argv)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--jobs", type=int, default=2)
  parser.add_argument("--runs", default="runs/flatness", help="where the workdirs go")
  parser.add_argument("--out", default=str(HERE / "runs.json"))
  args = parser.parse_args(own)
  cores = _jobs.check_jobs(args.jobs)
  out = pathlib.Path(args.out)
  records = json.loads(out.read_text()) if out.exists() else {}
  todo = [j for j in jobs(pathlib.Path(args.runs), extra) if j.name not in records]

  def on_done(done: _jobs.Finished) -> None:
    records[done.job.name] = {
        "command": "python train.py " + " ".join(done.job.flags),
        "workdir": str(done.job.workdir), "summary": done.summary, "error": done.error,
        "wall_s": done.wall_s, "machine": _jobs.machine(),
        "date": datetime.date.today().isoformat()}
    out.write_text(json.dumps(dict(sorted(records.items())), indent=1) + "\n")
    print(f"{done.job.name}: {done.summary and done.summary['val_error']}%", flush=True)

  _jobs.run(todo, cores, on_done)


if __name__ == "__main__":
  main()
