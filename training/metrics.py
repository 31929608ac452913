"""What a run reports: ``metrics.jsonl``, the progress bar, and the NaN stop."""

import contextlib
import json
import math
import pathlib
import sys
import time
from collections.abc import Iterator
from typing import Any

from tqdm import tqdm

from training import settings
from training.config import Budget


class TrainingDiverged(RuntimeError):
  """The loss became NaN or Inf; the last good checkpoint is kept."""


def write_atomic(path: pathlib.Path, text: str) -> None:
  """Replaces ``path`` by ``text`` in one step: a killed run never leaves half a file."""
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  tmp.replace(path)


class MetricsWriter:
  """One record per evaluation in ``metrics.jsonl``; a progress bar on stderr.

  The file is first rewritten with ``history`` (the records of the checkpoint
  a run resumes from, or none), then each :meth:`evaluation` appends one
  line. :meth:`update` takes each update's loss and error (those of its first
  minibatch) and raises :class:`TrainingDiverged` on NaN or Inf, or when the
  optimizer skipped :data:`training.settings.MAX_SKIPPED_IN_A_ROW` updates
  in a row as not finite (each record counts the skipped updates). The bar
  shows effective epochs, the last loss and error, backprops per second and
  the time left, both measured on training time alone (no compilation, no
  evaluation); each evaluation prints a line above it.
  """

  def __init__(self, path: pathlib.Path, history: list[dict[str, Any]], budget: Budget,
               backprops_per_update: int, start: int, progress: bool, writes: bool = True,
               label: str | None = None, position: int | None = None):
    # writes=False (every process but the first of a multi-process run): the
    # records are kept, for the checkpoints, but nothing is written or shown.
    # label, position: the bar's name and line among several runs' bars.
    self.path, self.history = path, list(history)
    self._budget, self._backprops = budget, backprops_per_update
    self._sums = [0.0, 0.0, 0]  # loss, error, updates since the last evaluation
    self._skipped: int | None = None  # updates the optimizer skipped, if it ever does
    self._clock: float | None = None  # training time starts after the first update
    self._paused, self._timed, self._eval_seconds = 0.0, 0, []
    self._progress = progress = progress and writes
    self._writes = writes
    self._file = None
    if writes:
      write_atomic(path, "".join(json.dumps(r) + "\n" for r in self.history))
      self._file = path.open("a")
    self._label = f"{label}: " if label else ""
    self._bar = tqdm(
        total=round(budget.epochs(budget.total), 2), initial=round(budget.epochs(start), 2),
        disable=not progress, file=sys.stderr, mininterval=0.5, desc=self._label or None,
        position=position,
        bar_format="{desc}{percentage:3.0f}%|{bar}| {n:.2f}/{total:.2f} effective epochs "
                   "[{elapsed}{postfix}]")

  @property
  def progress(self) -> bool:
    """Whether this writer shows a bar (and its lines) on stderr."""
    return self._progress

  def write(self, line: str) -> None:
    """A line on stderr: above the bar where it is shown (the process that writes)."""
    if self._progress:
      self._bar.write(self._label + line, file=sys.stderr)
    elif self._writes:
      print(self._label + line, file=sys.stderr, flush=True)

  def update(self, step: int, loss: float, error: float, skipped: int | None = None,
             skipped_in_a_row: int = 0) -> None:
    """Records update ``step``'s training loss and error (a fraction) and the
    updates skipped so far (all of them, and the last in a row)."""
    if not math.isfinite(loss):
      raise TrainingDiverged(f"loss is {loss} at update {step} (effective epoch "
                             f"{self._budget.epochs(step):.3f})")
    if skipped_in_a_row >= settings.MAX_SKIPPED_IN_A_ROW:
      raise TrainingDiverged(
          f"the optimizer skipped updates {step - skipped_in_a_row + 1} to {step} (effective "
          f"epoch {self._budget.epochs(step):.3f}): their inner loop was not finite; lower "
          "--gamma, --inner-lr or --scoping")
    if skipped and skipped != self._skipped:
      self.write(f"update {step}: {skipped} update(s) skipped so far, their inner loop "
                 "not finite")
    self._skipped = skipped
    self._sums[0] += loss
    self._sums[1] += error
    self._sums[2] += 1
    now = time.perf_counter()
    if self._clock is None:
      self._clock = now  # after the first (compiling) update
    else:
      self._timed += 1
    seconds = max(now - self._clock - self._paused, 1e-9)
    left = (self._budget.total - step) * seconds / max(self._timed, 1)
    if self._eval_seconds:
      evals_left = math.ceil(self._budget.epochs(self._budget.total - step)
                             / self._budget.eval_every)
      left += evals_left * sum(self._eval_seconds) / len(self._eval_seconds)
    self._bar.n = round(self._budget.epochs(step), 2)
    eta = tqdm.format_interval(left) if self._timed else "?"
    self._bar.set_postfix_str(
        f"loss={loss:.4f} err={100 * error:.2f}% "
        f"{self._timed * self._backprops / seconds:.0f} backprops/s, {eta} left", refresh=False)
    self._bar.update(0)

  @contextlib.contextmanager
  def paused(self) -> Iterator[None]:
    """A stretch (an evaluation) left out of the training time."""
    began = time.perf_counter()
    try:
      yield
    finally:
      seconds = time.perf_counter() - began
      if self._clock is not None:
        self._paused += seconds
        self._eval_seconds.append(seconds)  # the first one compiles: not counted

  def evaluation(self, step: int, lr: float, val_loss: float, val_error: float,
                 **replicas: Any) -> dict[str, Any]:
    """Appends the record of the evaluation after update ``step``; returns it.

    ``replicas``: with several replicas, their best, worst and every error (%).
    """
    if not math.isfinite(val_loss):
      raise TrainingDiverged(f"validation loss is {val_loss} after update {step} "
                             f"(effective epoch {self._budget.epochs(step):.3f})")
    loss, error, n = self._sums
    record = {
        "step": step, "backprops": step * self._backprops,
        "effective_epochs": round(self._budget.epochs(step), 6), "lr": lr,
        "train_loss": loss / n if n else None, "train_error": 100 * error / n if n else None,
        "val_loss": val_loss, "val_error": val_error, **replicas,
        **({} if self._skipped is None else {"skipped_updates": self._skipped}),
    }
    self._sums = [0.0, 0.0, 0]
    self.history.append(record)
    if self._file is not None:
      self._file.write(json.dumps(record) + "\n")
      self._file.flush()
    self.write(f"update {step} (effective epoch {record['effective_epochs']:.2f}): "
                 f"val_error {val_error:.2f}%, val_loss {val_loss:.4f}")
    return record

  def close(self) -> None:
    self._bar.close()
    if self._file is not None:
      self._file.close()
