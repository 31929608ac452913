"""Several runs as one compiled program: ``--seeds`` and ``--sweep``.

:func:`train_group` trains runs that share a program (seeds, a sweep's points),
on top of :mod:`training.loop`'s pieces for one run; :func:`train_seeds` is
one config with several seeds. The rest turns train.py's flags into runs:

``--sweep lr=0.1,0.3 --sweep gamma=0.03,0.1`` trains the grid of every
combination (here 4 runs), each at its own values and otherwise the flags
given, as one program (:func:`train_group`); with ``--seeds``
every point of the grid trains with each seed. Only settings that change no
shape, loop length, budget or evaluation step can be swept
(:data:`training.config.SWEEPABLE`).
"""

import argparse
import dataclasses
import itertools
import json
import os
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

import input_pipeline
from training import devices, loop, optimizers, steps
from training.config import (SWEEPABLE, VMAPPABLE, Config, ConfigError, build_config,
                             check_one_program, flag, implied_flags)
from training.loop import Run, TrainingResult
from training.metrics import write_atomic

# In the workdir of a run of a group that stopped (NaN or Inf): its reason, as JSON.
STOPPED = "stopped.json"


def seed_list(text: str) -> list[int]:
  """``--seeds 0,1,2``: the seeds (an ``argparse`` type)."""
  try:
    return [int(s) for s in text.split(",")]
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r}: want integers and commas, e.g. 0,1,2") from None


def sweep_axis(text: str) -> tuple[str, list[float]]:
  """``--sweep NAME=V,V,...``: the setting and its values (an ``argparse`` type)."""
  name, _, values = text.partition("=")
  name = name.strip().lstrip("-").replace("-", "_")
  floats = [n for n in SWEEPABLE if n not in ("seed", "lr_schedule")]
  if name not in floats:
    raise argparse.ArgumentTypeError(
        f"{text!r}: sweep one of {', '.join(n.replace('_', '-') for n in floats)} as "
        "NAME=V,V,... (--seeds sweeps the seed)")
  try:
    numbers = [float(v) for v in values.split(",")]
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r}: want NAME=V,V,... with numbers") from None
  return name, numbers


def point_name(point: dict[str, float]) -> str:
  """A sweep point's folder name: ``lr=0.1,gamma=0.03``."""
  return ",".join(f"{name.replace('_', '-')}={value:g}" for name, value in point.items())


def grid(flags: dict[str, Any], axes: Sequence[tuple[str, list[float]]],
         seeds: Sequence[int] | None, workdir: str | pathlib.Path
         ) -> tuple[list[Config], list[pathlib.Path], list[str]]:
  """The configs, workdirs and labels of the runs of ``--sweep`` (and ``--seeds``).

  Point p (``lr=0.1,gamma=0.03``) trains in ``workdir/p``, with seeds in
  ``workdir/p/seed_n``; each config is ``build_config(**flags)`` with the
  point's values (and seed) over the flags, so a default that follows
  another flag (the lr schedule the lr) follows the swept value.

  Raises:
    ConfigError: a setting swept twice or also given as its flag, a value
      out of range (naming the point), or points that cannot share a program.
  """
  names = [name for name, _ in axes]
  for name in names:
    if names.count(name) > 1:
      raise ConfigError(f"--sweep {name.replace('_', '-')}: swept twice")
    if flags.get(name) is not None:
      raise ConfigError(f"{flag(name)} and --sweep {name.replace('_', '-')}: give one")
  if seeds is not None:
    seeds = check_seeds(seeds)
  configs, workdirs, labels, points = [], [], [], {}
  for values in itertools.product(*(v for _, v in axes)):
    point = dict(zip(names, values))
    if point_name(point) in points:  # names keep 6 digits: 0.1 and 0.1000001 would share one
      raise ConfigError(f"--sweep points {points[point_name(point)]} and {point}: one folder "
                        f"name, {point_name(point)}; give values apart in 6 digits")
    points[point_name(point)] = point
    for seed in seeds if seeds is not None else [None]:
      try:
        configs.append(build_config(**{**flags, **point,
                                       **({} if seed is None else {"seed": seed})}))
      except ConfigError as e:
        raise ConfigError(f"--sweep point {point_name(point)}: {e}") from None
      where = pathlib.Path(workdir) / point_name(point)
      workdirs.append(where if seed is None else where / f"seed_{seed}")
      labels.append(point_name(point) + ("" if seed is None else f" seed {seed}"))
  return configs, workdirs, labels


def train_group(configs: Sequence[Config], workdirs: Sequence[str | os.PathLike[str]],
                labels: Sequence[str] | None = None,
                vmap: bool | None = None) -> list[TrainingResult]:
  """Trains ``configs`` as one compiled program, each into its own workdir.

  The configs may differ only in the seed and float hyper-parameters
  (:data:`training.config.SWEEPABLE`: the same updates, evaluations and
  shapes). Each run keeps its own parameters, optimizer state, minibatch
  order, dropout and noise, and ends with the numbers of
  :func:`train_and_evaluate` of its config alone up to float
  reassociation, its records in its workdir in the same layout. On a CPU
  (``vmap=False``) the program holds one copy of the step per run, one after
  another; ``vmap=True`` (the default elsewhere, for runs that differ only
  in the seed) stacks the runs' states and ``jax.vmap``-s one step over them
  (:func:`training.steps.over_members`). A run whose loss becomes NaN or Inf
  stops alone: its records and checkpoints end there, its summary says why
  (``"stopped"``), and the others go on. With ``resume``, every run
  continues from its newest checkpoint (see :func:`_common_step` for runs
  that stopped apart). ``labels`` name the runs' progress bars.

  Returns:
    One :class:`TrainingResult` per run that trained, in the order given.

  Raises:
    ConfigError: configs that cannot share a program, repeated workdirs, and
      everything :func:`train_and_evaluate` raises but
      :class:`TrainingDiverged`.
  """
  configs = list(configs)
  if not configs or not all(isinstance(c, Config) for c in configs):
    raise TypeError(f"configs must be training.Configs from build_config, got {configs!r}")
  names = [str(w) for w in workdirs]
  if len(names) != len(configs) or (labels is not None and len(labels) != len(configs)):
    raise ConfigError(f"one workdir (and label) per run: {len(configs)} runs, {len(names)} "
                      f"workdirs{'' if labels is None else f', {len(labels)} labels'}")
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise ConfigError(f"one workdir per run, each its own: {repeated[0]} is given twice")
  check_one_program(configs)
  _check_vmap(configs, vmap)
  start = time.perf_counter()
  runs = [Run(c, w, None if labels is None else labels[i], position=i)
          for i, (c, w) in enumerate(zip(configs, workdirs))]
  for run in runs:  # a sweep point's summary names its values (not those they imply)
    flags = run.config.flags()
    run.swept = {name: flags[name] for name in _differing(configs)
                 if name not in implied_flags(flags)}
  dataset, scaling, budget, data_id = loop.load_data(configs[0], runs)
  todo = _resumable(runs, budget.total)
  for run in runs:
    if run not in todo:
      run.close()
  trained = {}
  if todo:
    program = build_group_program([r.config for r in todo], dataset, scaling, vmap)
    results = loop.train(program, todo, dataset, scaling, budget, data_id, start)
    trained = dict(zip(map(id, todo), results))
    for run in todo if jax.process_index() == 0 else []:
      if run.stopped:  # so that a resume leaves it be
        write_atomic(run.workdir / STOPPED, json.dumps({"stopped": run.stopped}) + "\n")
  wall_s = time.perf_counter() - start
  return [trained[id(r)] if id(r) in trained else _report(r, wall_s) for r in runs]


def check_seeds(seeds: Sequence[int], replicas: int = 1) -> list[int]:
  """``seeds`` as ints; raises ConfigError if empty, repeated, negative, or too
  large for ``replicas`` (replica r uses seed + r)."""
  seeds = list(seeds)
  if not seeds:
    raise ConfigError("--seeds: give at least one seed")
  for s in seeds:
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not \
        0 <= s <= 2**32 - replicas:
      raise ConfigError(f"--seeds: {s!r} is not an integer in 0 .. {2**32 - replicas}")
  if len(set(seeds)) != len(seeds):
    raise ConfigError(f"--seeds {','.join(map(str, seeds))}: a seed is repeated")
  return [int(s) for s in seeds]


def train_seeds(config: Config, seeds: Sequence[int], workdir: str | os.PathLike[str],
                vmap: bool | None = None) -> list[TrainingResult]:
  """Trains ``config`` with each of ``seeds`` as one compiled program
  (:func:`train_group`), seed n's records in ``workdir/seed_<n>``.

  Raises:
    ConfigError: bad ``seeds`` (empty, repeated, negative or too large for
      the replicas), and what :func:`train_group` raises.
  """
  if not isinstance(config, Config):
    raise TypeError(f"config must be a training.Config from build_config, got {config!r}")
  seeds = check_seeds(seeds, config.replicas)
  workdir = pathlib.Path(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise ConfigError(f"--workdir {workdir}: exists and is not a directory")
  return train_group([dataclasses.replace(config, seed=int(s)) for s in seeds],
                     [workdir / f"seed_{s}" for s in seeds], [f"seed {s}" for s in seeds],
                     vmap=vmap)


def _differing(configs: Sequence[Config]) -> list[str]:
  """The settings but the seed in which ``configs`` differ from the first."""
  first = configs[0].flags()
  return sorted({name for c in configs[1:] for name, value in c.flags().items()
                 if name != "seed" and value != first[name]})


def _check_vmap(configs: Sequence[Config], vmap: bool | None) -> bool:
  """Whether one vmapped step can train ``configs``; raises ConfigError if not and ``vmap``."""
  other = [name for name in _differing(configs) if name not in VMAPPABLE]
  if vmap and other:
    raise ConfigError(
        f"{flag(other[0])}: a vmapped step takes only {', '.join(map(flag, VMAPPABLE))} per "
        "run; runs that differ in it train as one copy of the step each (vmap=False)")
  return not other


def _value(config: Config, name: str) -> Any:
  if name == "lr_schedule":
    return [lr for _, lr in config.lr_schedule]
  return getattr(config, name) if hasattr(config, name) else getattr(config.optimizer, name)


def _with_values(config: Config, values: dict[str, Any]) -> Config:
  """``config`` with ``values`` (traced: one run of a vmapped step) in place."""
  own = {f.name for f in dataclasses.fields(config.optimizer)}
  new = dataclasses.replace(
      config, **{k: v for k, v in values.items() if k in ("lr", "momentum", "weight_decay")},
      optimizer=dataclasses.replace(config.optimizer,
                                    **{k: v for k, v in values.items() if k in own}))
  if "lr_schedule" in values:
    new = dataclasses.replace(new, lr_schedule=tuple(
        (epoch, values["lr_schedule"][i]) for i, (epoch, _) in enumerate(config.lr_schedule)))
  return new


def build_group_program(configs: Sequence[Config], dataset: input_pipeline.Dataset,
                        scaling: input_pipeline.Scaling, vmap: bool | None = None
                        ) -> loop.Program:
  """One program that trains ``configs`` (which differ only in
  :data:`training.config.SWEEPABLE` settings): the step and evaluation
  ``jax.vmap``-ed over a member axis if ``vmap`` (configs that differ only in
  the seed and :data:`VMAPPABLE` settings, which the step then takes as
  values), else one copy of them per config (:func:`training.steps.over_members`).
  ``vmap=None``: vmap where the configs allow it, but on a CPU.
  """
  parts = loop.program_parts(configs, dataset, scaling)
  vmappable, config = _check_vmap(configs, vmap), configs[0]
  if vmap is None:
    vmap = vmappable and parts.parallel.devices[0].platform != "cpu"
  if vmap:
    values = {name: np.asarray([_value(c, name) for c in configs], np.float32)
              for name in _differing(configs)}
    num_train = dataset.train_images.shape[0]

    def member_step(state, data, member):
      if not values:  # seeds alone: the first run's step serves every one
        return parts.train_steps[0](state, data, member["keys"])
      run = _with_values(config, member["values"])  # the optimizer's key is in the state
      tx = optimizers.make_optimizer(run, parts.updates_per_epoch, parts.keys[0][0],
                                     devices.AXIS)
      return steps.make_train_step(parts.model, tx, run, num_train, scaling)(
          state, data, member["keys"])

    step = steps.over_members(member_step, {"keys": np.stack(parts.keys), "values": values},
                              vmap=True)
    evaluate = jax.vmap(parts.evaluate, in_axes=(0, None))
  else:
    step = steps.over_members(parts.train_steps, np.stack(parts.keys), vmap=False)
    evaluate = lambda states, data: tuple(zip(*[parts.evaluate(s, data) for s in states]))
  program = loop.Program(parts.parallel, parts.states[0], parts.data, parts.parallel.map(step),
                         parts.parallel.map(evaluate), layout="stacked" if vmap else "tuple",
                         member_axis=1 if config.optimizer.replicated else 0)
  return program._replace(state=program.stack(parts.states))


def _resumable(runs: list[Run], total: int) -> list[Run]:
  """The runs of a group that train now (:func:`_common_step`; each left out
  says why in ``left_out``); a run at its budget already, or one that stopped
  before (its :data:`STOPPED` marker), is reported as it is and not trained
  again."""
  for run in runs:
    if (run.workdir / STOPPED).exists():
      run.stopped = json.loads((run.workdir / STOPPED).read_text())["stopped"]
  todo = [r for r in runs if r.live and not (r.saved and r.saved.step == total)]
  if not todo:
    return []
  trained, notes = _common_step(todo)
  for run in todo:
    if run not in trained:
      run.left_out = next(n for n in notes if n.startswith(f"{run.workdir}:"))
  return trained


def _common_step(runs: list[Run]) -> tuple[list[Run], list[str]]:
  """The runs that resume together, each's ``saved`` at one update, and a note
  for each left out.

  Runs of one program move in lockstep. A run whose newest checkpoint is
  ahead of another's goes back to the newest update that every run has kept;
  where there is none, the runs furthest ahead go on and the others are left
  out, each with the command that continues it alone.
  """
  latest = [0 if r.saved is None else r.saved.step for r in runs]
  if max(latest) == 0:  # none past update 0: all start afresh, evaluated at 0 alike
    for run in runs:
      run.saved = None
    return runs, []
  if len(set(latest)) == 1:
    return runs, []
  kept = [set(r.checkpointer.steps()) | ({0} if r.saved is None else set()) for r in runs]
  shared = set.intersection(*kept)
  if shared and max(shared) > 0:
    step = max(shared)
    for run in runs:
      run.saved = run.checkpointer.resume_point(run.config, step)
    return runs, []
  ahead = [r for r, s in zip(runs, latest) if s == max(latest)]
  notes = [f"{r.workdir}: left out, its newest checkpoint is at update {s}, the others' at "
           f"{max(latest)}; continue it alone with train.py --workdir {r.workdir} --resume "
           f"and the flags of its config.json"
           for r, s in zip(runs, latest) if s != max(latest)]
  return ahead, notes


def _report(run: Run, wall_s: float) -> TrainingResult:
  """The result of a run of a group that did not train now: finished before,
  stopped before, or left out (its history that of its newest checkpoint)."""
  history = [] if run.saved is None else run.saved.history
  return TrainingResult(loop.summary(run, history, wall_s), history, None)
