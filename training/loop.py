"""``train_and_evaluate``: one run, from a config to its metrics and checkpoints;
``train_group`` and ``train_seeds``: several runs (seeds, a sweep) as one compiled program."""

import contextlib
import dataclasses
import json
import os
import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

import input_pipeline
import models
from training import checkpoints, devices, optimizers, settings, steps, streams
from training.checkpoints import Checkpointer
from training.config import (VMAPPABLE, Budget, Config, ConfigError, check_one_program, flag,
                             implied_flags)
from training.metrics import MetricsWriter, TrainingDiverged, write_atomic


class TrainingResult(NamedTuple):
  """What :func:`train_and_evaluate` returns."""

  summary: dict[str, Any]  # the JSON line printed last by train.py
  history: list[dict[str, Any]]  # the records of metrics.jsonl
  # The final state, on the host; None for a run of a group that did not train
  # now (finished or stopped before, or left out).
  state: steps.TrainState | None


class Program(NamedTuple):
  """A run's initial state, its data on the devices and its mapped functions.

  With several members (seeds trained together) every host tree of the state
  and every output holds them all: a tuple of the members' trees
  (``layout="tuple"``), or stacked along ``member_axis`` (``"stacked"``: 0,
  or 1 behind the replica axis of elastic-sgd and parle).
  """

  parallel: devices.Parallel
  state: steps.TrainState  # initial, on the host
  data: steps.DeviceData  # on the devices
  train_step: Callable[[Any, steps.DeviceData], tuple[Any, dict[str, Any]]]
  evaluate: Callable[[Any, steps.DeviceData], tuple[Any, dict[str, Any]]]
  layout: str = "one"  # one run; "tuple" or "stacked": several
  member_axis: int = 0

  def members(self, tree: Any) -> list[Any]:
    """Each member's part of a host tree."""
    if self.layout == "one":
      return [tree]
    if self.layout == "tuple":
      return list(tree)
    n = np.shape(jax.tree.leaves(tree)[0])[self.member_axis]
    return [jax.tree.map(lambda x: np.asarray(np.take(x, i, self.member_axis)), tree)
            for i in range(n)]

  def stack(self, trees: Sequence[Any]) -> Any:
    """The host tree of the members' ``trees`` (the inverse of :meth:`members`)."""
    if self.layout == "one":
      (tree,) = trees
      return tree
    if self.layout == "tuple":
      return tuple(trees)
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs], self.member_axis),
                        *trees)


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


def build_program(config: Config, dataset: input_pipeline.Dataset,
                  scaling: input_pipeline.Scaling, members: Sequence[Config] | None = None,
                  vmap: bool | None = None) -> Program:
  """The initial state, the data on the devices and the step and evaluation.

  ``members``: train these configs (``config`` and others that differ from it
  only in :data:`training.config.SWEEPABLE` settings) as one program
  (``None``: ``config`` alone): the step and evaluation ``jax.vmap``-ed over
  a member axis if ``vmap`` (members that differ only in the seed and
  :data:`VMAPPABLE` settings, which the step then takes as values), else one
  copy of them per member (:func:`training.steps.over_members`).
  ``vmap=None``: vmap where the members allow it, but on a CPU.
  """
  num_train = dataset.train_images.shape[0]
  model = models.create(config.model, axis_name=devices.AXIS, param_init=config.param_init)
  updates_per_epoch = config.updates_per_epoch(num_train)
  init = jax.jit(model.init, static_argnames="train")  # eager init is slow (2-3 s)
  runs = [config] if members is None else list(members)
  replicated = config.optimizer.replicated

  def initial_state(run: Config) -> tuple[steps.TrainState, optax.GradientTransformation]:
    # The optimizer's noise key is set at init, from the seed; its update is
    # the same for every seed.
    tx = optimizers.make_optimizer(
        run, updates_per_epoch, streams.of(streams.seed_key(run.seed)).optimizer, devices.AXIS)

    def one(key: jax.Array) -> steps.TrainState:
      variables = init(streams.of(key).init, scaling(dataset.train_images[:1]), train=False)
      return steps.TrainState(
          step=np.zeros((), np.int32), params=variables["params"],
          batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(variables["params"]),
          perm=np.zeros(num_train, np.int32), perm_epoch=np.full((), -1, np.int32))

    if not replicated:
      return jax.tree.map(np.asarray, one(streams.seed_key(run.seed))), tx
    # Replica r starts from its own initialisation, seed + r's (streams.seed_keys).
    copies = [one(streams.seed_key(s)) for s in streams.replica_seeds(run)]
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *copies), tx

  states, txs = zip(*map(initial_state, runs))
  parallel = devices.Parallel(devices.run_devices(config.run.devices), config.run.spmd,
                              config.replicas if replicated else None)
  # Each replica evaluates over its own devices: pad for that many.
  n_test, n = dataset.test_images.shape[0], config.run.devices // config.replicas
  eval_batch = min(settings.EVAL_BATCH, n_test)  # a small test set is not padded to 1000
  pad = -n_test % (steps.eval_rows_per_device(n, eval_batch) * n)
  padded = lambda a: np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)])
  data = parallel.put(steps.DeviceData(
      dataset.train_images, dataset.train_labels.astype(np.int32),
      padded(dataset.test_images), padded(dataset.test_labels.astype(np.int32)),
      padded(np.ones(n_test, np.float32))))
  train_steps = [steps.make_train_step(model, tx, run, num_train, scaling)
                 for tx, run in zip(txs, runs)]
  evaluate = steps.make_evaluate(model, config, num_train, scaling, eval_batch)
  keys = [streams.seed_keys(run) for run in runs]
  if members is None:
    return Program(parallel, states[0], data,
                   parallel.map(lambda s, d: train_steps[0](s, d, keys[0])),
                   parallel.map(evaluate))
  vmappable = _check_vmap(runs, vmap)
  if vmap is None:
    vmap = vmappable and parallel.devices[0].platform != "cpu"
  if vmap:
    values = {name: np.asarray([_value(r, name) for r in runs], np.float32)
              for name in _differing(runs)}

    def member_step(state, data, member):
      if not values:  # seeds alone: the first run's step serves every one
        return train_steps[0](state, data, member["keys"])
      run = _with_values(config, member["values"])  # the optimizer's key is in the state
      tx = optimizers.make_optimizer(run, updates_per_epoch, keys[0][0], devices.AXIS)
      return steps.make_train_step(model, tx, run, num_train, scaling)(state, data,
                                                                     member["keys"])

    step = steps.over_members(member_step, {"keys": np.stack(keys), "values": values},
                              vmap=True)
    evaluate_members = jax.vmap(evaluate, in_axes=(0, None))
  else:
    step = steps.over_members(train_steps, np.stack(keys), vmap=False)
    evaluate_members = lambda states, data: tuple(zip(*[evaluate(s, data) for s in states]))
  program = Program(parallel, states[0], data, parallel.map(step),
                    parallel.map(evaluate_members), layout="stacked" if vmap else "tuple",
                    member_axis=1 if replicated else 0)
  return program._replace(state=program.stack(states))


def _losses(out: dict[str, Any]) -> tuple[float, float, dict[str, int]]:
  """The loss and error of one update of one run (the mean over replicas) and
  the counts of skipped updates, from the host copy of the step's output."""
  first = {k: np.ravel(v)[0] for k, v in out.items()}
  skips = {k: int(v) for k, v in first.items() if k.startswith("skipped")}
  return float(first["loss"]), float(first["error"]), skips


def _errors(totals: dict[str, Any], n_test: int) -> dict[str, Any]:
  """The evaluation record's fields from the summed test loss and error counts."""
  first = lambda v: float(np.ravel(v)[0])  # with replicas, every replica holds the average's
  record = {"val_loss": first(totals["loss"]) / n_test,
            "val_error": 100 * round(first(totals["wrong"])) / n_test}
  if "replica_wrong" in totals:
    errors = [100 * round(float(w)) / n_test for w in np.ravel(totals["replica_wrong"])]
    record.update(val_error_best=min(errors), val_error_worst=max(errors),
                  val_error_replicas=errors)
  return record


def _config_json(flags: dict[str, Any]) -> str:
  return "{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in flags.items()) + "\n}\n"


# In the workdir of a run of a group that stopped (NaN or Inf): its reason, as JSON.
STOPPED = "stopped.json"


class _Run:
  """One run of a program: its config, workdir, checkpoints and records."""

  def __init__(self, config: Config, workdir: str | os.PathLike[str], label: str | None = None):
    self.config, self.workdir, self.label = config, pathlib.Path(workdir), label
    if self.workdir.exists() and not self.workdir.is_dir():
      raise ConfigError(f"--workdir {self.workdir}: exists and is not a directory")
    self.checkpointer = Checkpointer(self.workdir, keep=config.run.keep_checkpoints)
    self.saved = self.checkpointer.resume_point(config)
    self.metrics: MetricsWriter | None = None
    self.stopped: str | None = None  # why it stopped before its budget
    self.left_out: str | None = None  # why it did not train with the others
    self.swept: dict[str, Any] = {}  # in a group: its values of the settings the runs differ in

  @property
  def live(self) -> bool:
    return self.stopped is None

  def stop(self, error: TrainingDiverged) -> None:
    self.stopped = f"{error}; stopped: {self.checkpointer.describe_latest()}"
    if self.label is not None and self.metrics is not None:  # one of several: say it now
      self.metrics.write(f"{self.workdir}: {self.stopped}")

  @property
  def marker(self) -> pathlib.Path:
    """Where a run of a group that stopped says why, so that a resume leaves it be."""
    return self.workdir / STOPPED

  def close(self) -> None:
    if self.metrics is not None:
      self.metrics.close()
    self.checkpointer.close()


def _common_step(runs: list[_Run]) -> tuple[list[_Run], list[str]]:
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


def _summary(run: _Run, history: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
  # A run stopped at its first evaluation has no record: its fields are None.
  config, last = run.config, (history or [{}])[-1]
  return {
      "model": config.model, "optimizer": config.optimizer.name, "seed": config.seed,
      "val_error": last.get("val_error"), "val_loss": last.get("val_loss"),
      "effective_epochs": last.get("effective_epochs"), "backprops": last.get("backprops"),
      "updates": last.get("step"), "devices": config.run.devices,
      **({"replicas": config.replicas, "val_error_best": last.get("val_error_best"),
          "val_error_worst": last.get("val_error_worst")}
         if config.optimizer.replicated else {}),
      "evaluated_on": (f"validation: the last {config.validation_split} training examples"
                       if config.validation_split else "test"),
      **({} if run.live else {"stopped": run.stopped}),
      **({"left_out": run.left_out} if run.left_out else {}),
      **({"swept": run.swept} if run.swept else {}),
      "wall_s": round(wall_s, 3), "workdir": str(run.workdir),
  }


def train_and_evaluate(config: Config, workdir: str | os.PathLike[str]) -> TrainingResult:
  """Trains and evaluates ``config``; writes metrics and checkpoints to ``workdir``.

  Every check (workdir, resume, data) runs before anything is written. An
  evaluation (BatchNorm statistics re-estimated, then the test set) runs at
  update 0, every ``eval_every`` effective epochs and at the end; each one
  appends a record to ``metrics.jsonl`` and saves a checkpoint.

  Raises:
    ConfigError: a workdir that already holds checkpoints without ``resume``,
      a resume with other flags or data, or a budget under one update.
    input_pipeline.DataError: a missing or corrupt data file, or data that
      does not fit the config (a batch larger than the training set).
    TrainingDiverged: the loss became NaN or Inf (the last good checkpoint is kept).
  """
  if not isinstance(config, Config):
    raise TypeError(f"config must be a training.Config from build_config, got {config!r}")
  (result,) = _train([_Run(config, workdir)], group=False, vmap=None)
  if "stopped" in result.summary:
    raise TrainingDiverged(result.summary["stopped"])
  return result


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
  runs = [_Run(c, w, None if labels is None else labels[i])
          for i, (c, w) in enumerate(zip(configs, workdirs))]
  for run in runs:  # a sweep point's summary names its values (not those they imply)
    flags = run.config.flags()
    run.swept = {name: flags[name] for name in _differing(configs)
                 if name not in implied_flags(flags)}
  return _train(runs, group=True, vmap=vmap)


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


def _train(runs: list[_Run], group: bool, vmap: bool | None) -> list[TrainingResult]:
  """The loop of :func:`train_and_evaluate` and (``group``) :func:`train_group`."""
  start, config = time.perf_counter(), runs[0].config
  dataset, scaling = input_pipeline.load(config.run.data_dir, config.input_scaling,
                                         config.validation_split)
  dataset.check(batch_size=config.batch_size, num_classes=10)
  if dataset.train_images.shape[1:] != models.INPUT_SHAPES[config.model]:
    raise ConfigError(f"--model {config.model} takes images of shape "
                      f"{models.INPUT_SHAPES[config.model]}; --data-dir {config.run.data_dir} "
                      f"holds {dataset.train_images.shape[1:]}")
  budget = Budget.of(config, dataset.train_images.shape[0])
  data_id = checkpoints.fingerprint(dataset)
  for run in (r for r in runs if r.saved is not None):
    run.checkpointer.check_data(run.saved, data_id)
    if run.saved.step > budget.total:
      raise ConfigError(f"--effective-epochs {config.effective_epochs}: the checkpoint in "
                        f"{run.workdir} is already at {budget.epochs(run.saved.step):.3f} "
                        "effective epochs")
  everyone, runs = runs, _resumable(runs, budget.total, group)
  for run in [r for r in everyone if r not in runs]:
    run.close()
  primary = jax.process_index() == 0  # the one process that writes files and output
  if not runs:
    return [_report(run, time.perf_counter() - start) for run in everyone]
  program = build_program(config, dataset, scaling,
                          [r.config for r in runs] if group else None, vmap)
  step = 0 if runs[0].saved is None else runs[0].saved.step
  state = program.stack([like if r.saved is None else r.checkpointer.restore(step, like)
                         for r, like in zip(runs, program.members(program.state))])
  for i, run in enumerate(runs):
    run.workdir.mkdir(parents=True, exist_ok=True)
    if primary:
      write_atomic(run.workdir / "config.json", _config_json(run.config.flags()))
    run.metrics = MetricsWriter(
        run.workdir / "metrics.jsonl", [] if run.saved is None else run.saved.history, budget,
        config.backprops_per_update, step, config.run.progress, primary,
        label=run.label, position=i if group else None)
  lrs = [optimizers.lr_schedule(r.config, budget.updates_per_epoch) for r in runs]
  par, n_test = program.parallel, dataset.test_images.shape[0]
  device_state = par.put_state(state)

  def record(step: int, out: dict[str, Any]) -> None:
    for run, member in zip(runs, program.members(par.get(out))):
      if run.live:
        loss, error, skips = _losses(member)
        try:
          run.metrics.update(step, loss, error, **skips)
        except TrainingDiverged as e:
          run.stop(e)

  def evaluate(device_state: Any, step: int) -> Any:
    with contextlib.ExitStack() as paused:
      for run in runs:
        paused.enter_context(run.metrics.paused())
      device_state, totals = program.evaluate(device_state, program.data)
      members = zip(runs, lrs, program.members(par.get_state(totals)),
                    program.members(par.get_state(device_state)))
      for run, lr, member_totals, member_state in members:
        if not run.live:
          continue
        try:
          run.metrics.evaluation(step, float(f"{float(lr(max(step - 1, 0))):.7g}"),
                                 **_errors(member_totals, n_test))
          run.checkpointer.save(step, member_state, run.config.flags(), data_id,
                                run.metrics.history)
        except TrainingDiverged as e:
          run.stop(e)
    return device_state

  try:
    if runs[0].saved is None:
      device_state = evaluate(device_state, step)  # the curves' start, a first checkpoint
    pending = None  # the last update's metrics, read one update late: the host never waits
    while step < budget.total and any(r.live for r in runs):
      device_state, out = program.train_step(device_state, program.data)
      step += 1
      if pending is not None:
        record(*pending)
      pending = (step, out)
      if budget.is_eval(step):
        record(*pending)
        pending = None
        device_state = evaluate(device_state, step)
  finally:
    for run in runs:
      run.close()
  wall_s = time.perf_counter() - start
  final = dict(zip(map(id, runs), program.members(par.get_state(device_state))))
  for run in runs if group and primary else []:
    if run.stopped:
      write_atomic(run.marker, json.dumps({"stopped": run.stopped}) + "\n")
  return [TrainingResult(_summary(run, run.metrics.history, wall_s), run.metrics.history,
                         final[id(run)]) if id(run) in final else _report(run, wall_s)
          for run in everyone]


def _resumable(runs: list[_Run], total: int, group: bool) -> list[_Run]:
  """The runs of a group that train now (:func:`_common_step`; each left out
  says why in ``left_out``); a run at its budget already, or one that stopped
  before (its :data:`STOPPED` marker), is reported as it is and not trained
  again."""
  if not group:
    return runs
  for run in runs:
    if run.marker.exists():
      run.stopped = json.loads(run.marker.read_text())["stopped"]
  todo = [r for r in runs if r.live and not (r.saved and r.saved.step == total)]
  if not todo:
    return []
  trained, notes = _common_step(todo)
  for run in todo:
    if run not in trained:
      run.left_out = next(n for n in notes if n.startswith(f"{run.workdir}:"))
  return trained


def _report(run: _Run, wall_s: float) -> TrainingResult:
  """The result of a run of a group that did not train now: finished before,
  stopped before, or left out (its history that of its newest checkpoint)."""
  history = [] if run.saved is None else run.saved.history
  return TrainingResult(_summary(run, history, wall_s), history, None)
