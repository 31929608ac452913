"""Runs train.py jobs side by side, each pinned to its own core, resumable.

Shared by the experiments' drivers that spend hours of CPU in train.py runs
(``tuning/tune.py``, ``table1/reproduce_table1.py``, ...): a job is a
train.py command with its own workdir; a workdir that exists is continued
with ``--resume``, so a stopped script picks up where it stopped. The caller
records each finished job at once (``on_done``), so a stop keeps everything
that finished.
"""

import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
# Experiments and benchmarks name their machine alike in every record.
from overhead import machine  # noqa: E402, F401


class Job(NamedTuple):
  name: str
  flags: list[str]  # train.py flags, without --workdir and --resume
  workdir: pathlib.Path


class Finished(NamedTuple):
  job: Job
  summary: dict | None  # train.py's JSON line; None when the run stopped (diverged)
  error: str  # the end of stderr when it stopped
  curve: list[dict]  # the records of metrics.jsonl
  wall_s: float


def split_argv(argv: list[str] | None) -> tuple[list[str], list[str]]:
  """The script's own flags, and the train.py flags after ``--`` for every run."""
  argv = sys.argv[1:] if argv is None else argv
  if "--" not in argv:
    return argv, []
  return argv[:argv.index("--")], argv[argv.index("--") + 1:]


def check_jobs(jobs: int) -> list[int]:
  """The cores to pin ``jobs`` jobs to; raises SystemExit naming a bad count."""
  cores = sorted(os.sched_getaffinity(0))
  if not 1 <= jobs <= len(cores):
    sys.exit(f"--jobs {jobs}: must be in 1 .. {len(cores)} (the cores this process may use)")
  return cores[:jobs]


def run(jobs: Sequence[Job], cores: Sequence[int], on_done: Callable[[Finished], None],
        pin: bool = True) -> None:
  """Runs ``jobs`` in order, one per core of ``cores`` at a time.

  ``pin=False`` lets each job use every core (a GPU machine running one job
  at a time: the host work, CIFAR-10's whitening, then gets all of them).

  A run that stops with NaN or Inf (train.py's exit status 1 and its
  message) is a result; any other failure stops the script with its stderr.
  """
  todo, running = list(jobs), {}
  while todo or running:
    for core in [c for c in cores if c not in running]:
      if not todo:
        break
      job = todo.pop(0)
      argv = [*job.flags, "--no-progress", "--workdir", str(job.workdir),
              *(["--resume"] if job.workdir.exists() else [])]
      process = subprocess.Popen(
          [*(["taskset", "-c", str(core)] if pin else []), sys.executable, str(ROOT / "train.py"), *argv],
          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      running[core] = (job, process, time.perf_counter())
    time.sleep(1.0)
    for core, (job, process, began) in list(running.items()):
      if process.poll() is None:
        continue
      del running[core]
      stdout, stderr = process.communicate()
      diverged = process.returncode == 1 and "loss is" in stderr
      if process.returncode and not diverged:
        for _, other, _ in running.values():
          other.terminate()
        sys.exit(f"{job.name}: train.py failed:\n{stderr[-2000:]}")
      metrics = job.workdir / "metrics.jsonl"
      curve = [json.loads(line) for line in metrics.read_text().splitlines()]
      on_done(Finished(job, None if diverged else json.loads(stdout.splitlines()[-1]),
                       stderr.strip()[-300:] if diverged else "", curve,
                       round(time.perf_counter() - began, 1)))
