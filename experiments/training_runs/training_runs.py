"""The train.py commands the documentation quotes, run again and recorded.

Each run is ``python train.py FLAGS`` in its own workdir (under ``runs/``,
git-ignored); its JSON summary and its metrics.jsonl curve go into
``experiments/training_runs/training_runs.json`` as soon as it finishes, so
a stopped script keeps what it measured. A run whose record is already there is skipped.
Pin it to one core with ``taskset -c 1`` so other work can go on beside it
(the numbers are then those of one core: XLA splits reductions by thread
count, so the last digits differ from a two-core run). Train.py flags after
``--`` go to every run (``-- --param-init flax``: the record's runs started
from Flax's initialisation, train.py's default then).

Run: taskset -c 1 python experiments/training_runs/training_runs.py [--only NAME ...]
"""

import argparse
import datetime
import json
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "experiments"))
from _jobs import machine, split_argv  # noqa: E402

RUNS = {  # the short ones first, so they land early
    "mnistfc-entropy-sgd-3-raw": ["--effective-epochs", "3"],
    "mnistfc-entropy-sgd-3-centered": ["--effective-epochs", "3", "--input-scaling", "centered"],
    "lenet-entropy-sgd-5": ["--model", "lenet", "--optimizer", "entropy-sgd",
                            "--effective-epochs", "5"],
    "mnistfc-entropy-sgd-default": [],  # the default: 120 effective epochs
}


def main(argv: list[str] | None = None) -> None:
  ours, extra = split_argv(argv)
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                   usage="%(prog)s [options] [-- train.py flags for every run]")
  parser.add_argument("--only", nargs="*", choices=list(RUNS), help="runs to do (default: all)")
  parser.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parent
                                           / "training_runs.json"))
  args = parser.parse_args(ours)
  out = pathlib.Path(args.out)
  records = json.loads(out.read_text()) if out.is_file() else {}
  for name in args.only or RUNS:
    if name in records:
      continue
    workdir = ROOT / "runs" / f"readme-{name}"
    flags = [*RUNS[name], *extra, "--seed", "0", "--devices", "1", "--no-progress", "--workdir",
             str(workdir), *(["--resume"] if workdir.exists() else [])]
    began = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), *flags], cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode:
      sys.exit(f"{name}: train.py failed:\n{done.stderr[-2000:]}")
    curve = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    records[name] = {
        "command": "python train.py " + " ".join([*RUNS[name], *extra]),
        "summary": json.loads(done.stdout.splitlines()[-1]),
        "process_wall_s": round(time.perf_counter() - began, 1),
        "curve": [{k: r[k] for k in ("effective_epochs", "val_error", "val_loss")} for r in curve],
        "machine": machine(), "date": datetime.date.today().isoformat(),
    }
    out.write_text(json.dumps(records, indent=1) + "\n")  # at once: a stop keeps it
    print(name, records[name]["summary"]["val_error"], flush=True)


if __name__ == "__main__":
  main()
