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
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
# Experiments and benchmarks name their machine alike in every record.
from overhead import machine  # noqa: E402, F401


class Job(NamedTuple):
  name: str
  flags: list[str]  # train.py flags, without --workdir and --resume
  workdir: pathlib.Path
  # A program of several runs (train.py --seeds / --sweep): each run's name and
  # workdir, under ``workdir``; each is reported to ``on_done`` as a job of its own.
  members: tuple[tuple[str, pathlib.Path], ...] = ()


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


class Ended(NamedTuple):
  returncode: int
  stdout: str
  stderr: str
  wall_s: float


def run_commands(commands: Sequence[tuple[Any, list[str]]], cores: Sequence[int],
                 on_end: Callable[[Any, Ended], None], pin: bool = True) -> None:
  """Runs each ``(key, argv)`` of ``commands`` in order, one per core of
  ``cores`` at a time, and calls ``on_end(key, Ended(...))`` as each ends.

  Output goes to temporary files, not pipes: a pipe nobody reads while the
  process runs would fill and block it. An exception in ``on_end`` (a
  failure it will not record) stops the processes still running.
  """
  todo, running = list(commands), {}
  try:
    while todo or running:
      for core in [c for c in cores if c not in running]:
        if not todo:
          break
        key, argv = todo.pop(0)
        out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        process = subprocess.Popen([*(["taskset", "-c", str(core)] if pin else []), *argv],
                                   cwd=ROOT, stdout=out, stderr=err)
        running[core] = (key, process, out, err, time.perf_counter())
      time.sleep(0.2)
      for core, (key, process, out, err, began) in list(running.items()):
        if process.poll() is None:
          continue
        del running[core]
        wall_s = round(time.perf_counter() - began, 1)
        on_end(key, Ended(process.returncode, _text(out), _text(err), wall_s))
  finally:
    for _, process, out, err, _ in running.values():
      process.terminate()
      try:
        process.wait(timeout=10)
      except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
      out.close()
      err.close()


def _text(f) -> str:
  """What a process wrote to the temporary file ``f``, which it closes; bytes
  that are not UTF-8 are replaced rather than failing the batch."""
  f.seek(0)
  text = f.read().decode("utf-8", errors="replace")
  f.close()
  return text


def run(jobs: Sequence[Job], cores: Sequence[int], on_done: Callable[[Finished], None],
        pin: bool = True) -> None:
  """Runs ``jobs`` in order, one per core of ``cores`` at a time.

  ``pin=False`` lets each job use every core (a GPU machine running one job
  at a time: the host work, CIFAR-10's whitening, then gets all of them).

  A run that stops with NaN or Inf (train.py's exit status 1 and its
  message) is a result; any other failure stops the script with its stderr.
  """
  def command(job: Job) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *job.flags, "--no-progress",
            "--workdir", str(job.workdir), *(["--resume"] if job.workdir.exists() else [])]

  def on_end(job: Job, ended: Ended) -> None:
    try:
      finished = _finished(job, ended.returncode, ended.stdout, ended.stderr, ended.wall_s)
    except _Failed as e:
      sys.exit(str(e))
    for done in finished:
      on_done(done)

  run_commands([(job, command(job)) for job in jobs], cores, on_end, pin)


class _Failed(Exception):
  pass


def _fail(name: str, stderr: str) -> None:
  raise _Failed(f"{name}: train.py failed:\n{stderr[-2000:]}")


def _finished(job: Job, returncode: int, stdout: str, stderr: str,
              wall_s: float) -> list[Finished]:
  """What a train.py process that ended leaves: one Finished per run (a job
  of several runs, one per member). A run that stopped with NaN or Inf
  (train.py's exit status 1 and its message) is a result; any other failure
  stops the script with its stderr, and the other running jobs with it."""
  curve = lambda workdir: [json.loads(line)
                           for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  if not job.members:
    diverged = returncode == 1 and "loss is" in stderr
    if returncode and not diverged:
      _fail(job.name, stderr)
    return [Finished(job, None if diverged else json.loads(stdout.splitlines()[-1]),
                     stderr.strip()[-300:] if diverged else "", curve(job.workdir), wall_s)]
  summaries = {}
  for line in stdout.splitlines():
    if line.startswith("{"):
      summary = json.loads(line)
      summaries[summary["workdir"]] = summary
  if returncode not in (0, 1) or any(str(w) not in summaries for _, w in job.members):
    _fail(job.name, stderr)
  out = []
  for name, workdir in job.members:
    summary = summaries[str(workdir)]
    stopped = summary.get("stopped", "")
    out.append(Finished(Job(name, job.flags, workdir), None if stopped else summary,
                        stopped[-300:], curve(workdir), wall_s))
  return out
