"""A run's checkpoints: orbax, behind a small object the training loop calls.

Each checkpoint holds the training state and, as JSON beside it, the run's
flags, a fingerprint of its data and the metrics history up to that update,
so a resumed run rewrites ``metrics.jsonl`` exactly as it was then.
"""

import hashlib
import pathlib
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

import input_pipeline
from training.config import RESUMABLE, Config, ConfigError, flag, implied_flags


def fingerprint(dataset: input_pipeline.Dataset) -> str:
  """A short hash of the labels and shapes: a resumed run must see the same data."""
  digest = hashlib.sha256(repr((dataset.train_images.shape, dataset.test_images.shape)).encode())
  for labels in (dataset.train_labels, dataset.test_labels):
    digest.update(np.ascontiguousarray(labels, np.int32).tobytes())
  return digest.hexdigest()[:16]


def _names(path: tuple[Any, ...]) -> tuple[str, ...]:
  """A key path as strings, whatever kind of node each key indexes."""
  return tuple(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path)


# Wrapper levels a saved optimizer state may lack: a leaf is also looked up at
# its path without them. optax.ApplyIfFiniteState guards entropix's outer
# step: its inner_state holds the SGD state, its counters start at zero.
_WRAPPED = ("inner_state",)


def carry_over(saved: Any, like: Any, where: pathlib.Path) -> Any:
  """``saved`` (a checkpoint read without a target) in the layout of ``like``.

  Each leaf of ``like`` takes the saved leaf at its path, or at that path
  without an added wrapper level (:data:`_WRAPPED`); a leaf new to the
  layout keeps its value in ``like``, the state a fresh run starts from.
  Every saved leaf must be used, with its shape.

  Raises:
    ConfigError: the checkpoint holds leaves the layout has no place for.
  """
  old = {_names(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(saved)[0]}
  unused = set(old)

  def take(path, fresh):
    names = _names(path)
    for candidate in (names, tuple(n for n in names if n not in _WRAPPED)):
      if candidate in old and np.shape(old[candidate]) == np.shape(fresh):
        unused.discard(candidate)
        return np.asarray(old[candidate], np.asarray(fresh).dtype)
    return fresh

  state = jax.tree_util.tree_map_with_path(take, like)
  if unused:
    raise ConfigError(
        f"--resume: the checkpoint {where} holds state this version has no place for "
        f"({', '.join('/'.join(p) for p in sorted(unused)[:3])}, ...): continue it with the "
        "version that wrote it, or start again in another --workdir")
  return state


def _short(value: Any) -> str:
  """A flag's value as the command line spells it; an lr schedule's first pairs."""
  if value is None:
    return "unset"
  if isinstance(value, list):  # an lr schedule: (effective epoch, lr) pairs
    pairs = [f"{epoch:g}:{lr:g}" for epoch, lr in value]
    more = f",... ({len(pairs)} pairs)" if len(pairs) > 3 else ""
    return ",".join(pairs[:3]) + more if pairs else "none"
  if isinstance(value, float) and float(f"{value:g}") == value:
    return f"{value:g}"
  return str(value)


class Saved(NamedTuple):
  """The newest checkpoint of a run to resume, before its state is read."""

  step: int
  flags: dict[str, Any]
  data: str  # the fingerprint
  history: list[dict[str, Any]]


class Checkpointer:
  """The checkpoints in ``workdir/checkpoints``, the last ``keep`` of them kept.

  Nothing is created on disk until the first :meth:`save`.
  """

  def __init__(self, workdir: str | pathlib.Path, keep: int = 2):
    self.directory = pathlib.Path(workdir).absolute() / "checkpoints"
    self._keep = keep
    self._manager: ocp.CheckpointManager | None = None

  @property
  def manager(self) -> ocp.CheckpointManager:
    if self._manager is None:
      options = ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True,
                                             enable_async_checkpointing=False)
      self._manager = ocp.CheckpointManager(self.directory, options=options)
    return self._manager

  def latest(self) -> int | None:
    """The newest saved update, or None (looks without creating anything)."""
    if self._manager is None and not self.directory.is_dir():
      return None
    return self.manager.latest_step()

  def steps(self) -> list[int]:
    """The updates of the checkpoints kept, oldest first (none: [])."""
    if self._manager is None and not self.directory.is_dir():
      return []
    return sorted(self.manager.all_steps())

  def resume_point(self, config: Config, step: int | None = None) -> Saved | None:
    """The checkpoint ``config`` continues from, the newest or that of update
    ``step``; None for a fresh run.

    Raises:
      ConfigError: there are checkpoints and ``config.run.resume`` is off, or
        they were made with other flags (other than those in ``RESUMABLE``).
    """
    latest = self.latest() if step is None else step
    if latest is None:
      return None
    workdir = self.directory.parent
    if not config.run.resume:
      raise ConfigError(f"--workdir {workdir} already holds checkpoints (newest: update "
                        f"{latest}); pass --resume to continue that run, or choose another "
                        "--workdir")
    meta = self.manager.restore(latest, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    # A checkpoint that names no initialisation started from Flax's.
    saved, now = {"param_init": "flax", **meta["config"]}, config.flags()
    # A default that follows another flag (the lr schedule the lr) changes with
    # it: only the flag the user changed is named.
    implied = implied_flags(saved) & implied_flags(now)
    changed = sorted(k for k in saved.keys() | now.keys()
                     if k not in RESUMABLE and k not in implied and saved.get(k) != now.get(k))
    if changed:
      # --replicas defaults to one per device: another device count changes it.
      hint = (f"; --replicas defaults to one per device: pass --replicas "
              f"{saved['replicas']} to continue" if "replicas" in changed else "")
      hint += (f"; pass --param-init {saved['param_init']} to continue that run"
               if "param_init" in changed else "")
      raise ConfigError("--resume: the checkpoint in {} was made with other flags: {}{}".format(
          workdir, ", ".join(f"{flag(k)} {_short(saved.get(k))} -> {_short(now.get(k))}"
                             for k in changed), hint))
    return Saved(latest, saved, meta["data"], meta["history"])

  def check_data(self, saved: Saved, data: str) -> None:
    """Raises ConfigError unless the run ``saved`` trained on data of fingerprint ``data``."""
    if saved.data != data:
      raise ConfigError(f"--resume: the checkpoint in {self.directory.parent} was trained on "
                        f"other data ({saved.data}, now {data})")

  def save(self, step: int, state: Any, flags: dict[str, Any], data: str,
           history: list[dict[str, Any]]) -> None:
    """Saves the host ``state`` of update ``step`` with the run's JSON metadata."""
    meta = {"config": flags, "data": data, "history": history}
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(jax.tree.map(np.asarray, state)),
        meta=ocp.args.JsonSave(meta)))

  def restore(self, step: int, like: Any) -> Any:
    """The state saved at ``step``, shaped like the host tree ``like`` (a fresh state).

    A checkpoint whose optimizer state has another layout is carried over
    by :func:`carry_over`.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract))).state
    except ValueError:  # orbax's word for a tree of another structure
      raw = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore())).state
      restored = carry_over(raw, like, self.directory / str(step))
    return jax.tree.map(np.asarray, restored)

  def describe_latest(self) -> str:
    """Where the newest checkpoint is, for error messages."""
    saved = self.latest()
    if saved is None:
      return "no checkpoint was written"
    return f"the last good checkpoint is {self.directory / str(saved)} (update {saved})"

  def close(self) -> None:
    if self._manager is not None:
      self._manager.close()
