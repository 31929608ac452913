"""``train_and_evaluate``: one run, from a config to its metrics and checkpoints.

It reads top to bottom: the data (checked against the network and any
checkpoint), the program (initial state, data on the devices, the compiled
step and evaluation), then :func:`train`, the loop of updates, evaluations
and checkpoints. :mod:`training.sweeps` trains several runs (seeds, a sweep)
as one program with the same pieces.
"""

import contextlib
import functools
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
from training import checkpoints, devices, diagnose, optimizers, settings, steps, streams
from training.checkpoints import Checkpointer
from training.config import Budget, Config, ConfigError
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


class Parts(NamedTuple):
  """What a program is built from: the shared pieces, and one entry per run."""

  parallel: devices.Parallel
  data: steps.DeviceData  # on the devices
  model: Any  # the Flax module
  updates_per_epoch: float
  states: list[steps.TrainState]  # initial, on the host
  train_steps: list[Callable[..., Any]]  # (state, data, keys) -> (state, metrics)
  keys: list[Any]  # each run's per-device stream keys (streams.seed_keys)
  evaluate: Callable[[Any, steps.DeviceData], tuple[Any, dict[str, Any]]]


def program_parts(runs: Sequence[Config], dataset: input_pipeline.Dataset,
                  scaling: input_pipeline.Scaling) -> Parts:
  """The network, each run's initial state, optimizer and step, and the data
  on the devices, for ``runs`` that share a program (the first sets the
  network, devices and evaluation)."""
  config, num_train = runs[0], dataset.train_images.shape[0]
  model = models.create(config.model, axis_name=devices.AXIS, param_init=config.param_init,
                        num_classes=dataset.num_classes)
  updates_per_epoch = config.updates_per_epoch(num_train)
  init = jax.jit(model.init, static_argnames="train")  # eager init is slow (2-3 s)
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
  return Parts(parallel, data, model, updates_per_epoch, list(states),
               [steps.make_train_step(model, tx, run, num_train, scaling)
                for tx, run in zip(txs, runs)],
               [streams.seed_keys(run) for run in runs],
               steps.make_evaluate(model, config, num_train, scaling, eval_batch))


def build_program(config: Config, dataset: input_pipeline.Dataset,
                  scaling: input_pipeline.Scaling) -> Program:
  """The initial state, the data on the devices and the step and evaluation of one run."""
  parts = program_parts([config], dataset, scaling)
  step, keys = parts.train_steps[0], parts.keys[0]
  return Program(parts.parallel, parts.states[0], parts.data,
                 parts.parallel.map(lambda state, data: step(state, data, keys)),
                 parts.parallel.map(parts.evaluate))


class Run:
  """One run: its config, workdir, checkpoints and records (``label`` and
  ``position`` name its progress bar among several)."""

  def __init__(self, config: Config, workdir: str | os.PathLike[str], label: str | None = None,
               position: int | None = None):
    self.config, self.workdir = config, pathlib.Path(workdir)
    self.label, self.position = label, position
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

  def open(self, budget: Budget, step: int) -> None:
    """Creates the workdir, writes config.json and opens metrics.jsonl at ``step``."""
    primary = jax.process_index() == 0  # the one process that writes files and output
    self.workdir.mkdir(parents=True, exist_ok=True)
    if primary:
      write_atomic(self.workdir / "config.json", _config_json(self.config.flags()))
    self.metrics = MetricsWriter(
        self.workdir / "metrics.jsonl", [] if self.saved is None else self.saved.history,
        budget, self.config.backprops_per_update, step, self.config.run.progress, primary,
        label=self.label, position=self.position)

  def close(self) -> None:
    if self.metrics is not None:
      self.metrics.close()
    self.checkpointer.close()


def train_and_evaluate(config: Config, workdir: str | os.PathLike[str]) -> TrainingResult:
  """Trains and evaluates ``config``; writes metrics and checkpoints to ``workdir``.

  Every check (workdir, resume, data) runs before anything is written. An
  evaluation (BatchNorm statistics re-estimated, then the test set) runs at
  update 0, every ``eval_every`` effective epochs and at the end; each one
  appends a record to ``metrics.jsonl`` (with the sharpness where
  ``--sharpness-every`` asks for it) and saves a checkpoint.

  Raises:
    ConfigError: a workdir that already holds checkpoints without ``resume``,
      a resume with other flags or data, or a budget under one update.
    input_pipeline.DataError: a missing or corrupt data file, or data that
      does not fit the config (a batch larger than the training set).
    TrainingDiverged: the loss became NaN or Inf (the last good checkpoint is kept).
  """
  if not isinstance(config, Config):
    raise TypeError(f"config must be a training.Config from build_config, got {config!r}")
  start = time.perf_counter()
  run = Run(config, workdir)
  dataset, scaling, budget, data_id = load_data(config, [run])
  program = build_program(config, dataset, scaling)
  (result,) = train(program, [run], dataset, scaling, budget, data_id, start)
  if run.stopped:
    raise TrainingDiverged(run.stopped)
  return result


def load_data(config: Config, runs: Sequence[Run]) -> tuple[
    input_pipeline.Dataset, input_pipeline.Scaling, Budget, str]:
  """The dataset of ``config``, its scaling, the budget in updates and the
  data's fingerprint; raises before anything is written if the data does not
  fit the network or a run's checkpoint (other data, or past the budget)."""
  dataset, scaling = input_pipeline.load(config.run.data_dir, config.input_scaling,
                                         config.validation_split)
  dataset.check(batch_size=config.batch_size)
  shape = models.NETWORKS[config.model].input_shape
  if dataset.train_images.shape[1:] != shape:
    raise ConfigError(f"--model {config.model} takes images of shape "
                      f"{shape}; --data-dir {config.run.data_dir} "
                      f"holds {dataset.train_images.shape[1:]}")
  budget = Budget.of(config, dataset.train_images.shape[0])
  data_id = checkpoints.fingerprint(dataset)
  for run in (r for r in runs if r.saved is not None):
    run.checkpointer.check_data(run.saved, data_id)
    if run.saved.step > budget.total:
      raise ConfigError(f"--effective-epochs {config.effective_epochs}: the checkpoint in "
                        f"{run.workdir} is already at {budget.epochs(run.saved.step):.3f} "
                        "effective epochs")
  return dataset, scaling, budget, data_id


def train(program: Program, runs: Sequence[Run], dataset: input_pipeline.Dataset,
          scaling: input_pipeline.Scaling, budget: Budget, data_id: str,
          start: float) -> list[TrainingResult]:
  """Trains ``runs``, the members of ``program``, to ``budget.total`` updates.

  From each run's checkpoint (all at one update) or afresh, then evaluated at
  update 0; one compiled update at a time, its metrics read one update late
  so that the host never waits; every ``eval_every`` effective epochs and at
  the end an evaluation that appends to each run's metrics.jsonl and saves
  its checkpoint. A run whose loss becomes NaN or Inf stops
  (``run.stopped``), the others go on. ``start``: when the run began, for
  ``wall_s``.
  """
  par, step = program.parallel, 0 if runs[0].saved is None else runs[0].saved.step
  state = program.stack([like if r.saved is None else r.checkpointer.restore(step, like)
                         for r, like in zip(runs, program.members(program.state))])
  for run in runs:
    run.open(budget, step)
  lrs = [optimizers.lr_schedule(r.config, budget.updates_per_epoch) for r in runs]
  measure = functools.partial(_sharpness, dataset=dataset, scaling=scaling, budget=budget)
  evaluate = functools.partial(_evaluate, program, runs, lrs, data_id,
                               dataset.test_images.shape[0], measure)
  device_state = par.put_state(state)
  try:
    if runs[0].saved is None:
      device_state = evaluate(device_state, step)  # the curves' start, a first checkpoint
    pending = None  # the last update's metrics, read one update late
    while step < budget.total and any(r.live for r in runs):
      device_state, out = program.train_step(device_state, program.data)
      step += 1
      if pending is not None:
        _record(program, runs, *pending)
      pending = (step, out)
      if budget.is_eval(step):
        _record(program, runs, *pending)
        pending = None
        device_state = evaluate(device_state, step)
  finally:
    for run in runs:
      run.close()
  wall_s = time.perf_counter() - start
  return [TrainingResult(summary(run, run.metrics.history, wall_s), run.metrics.history, final)
          for run, final in zip(runs, program.members(par.get_state(device_state)))]


def _sharpness(run: Run, state: Any, step: int, *, dataset: input_pipeline.Dataset,
               scaling: input_pipeline.Scaling, budget: Budget) -> dict[str, Any] | None:
  """``--sharpness-every``: the top Hessian eigenvalue and trace of the network
  just evaluated, at update 0, the first evaluation past each multiple of
  the interval, and the last; None elsewhere."""
  every = run.config.run.sharpness_every
  if every is None or not budget.is_mark(step, every):
    return None
  images = min(settings.SHARPNESS_IMAGES, dataset.train_images.shape[0])  # one minibatch
  network = diagnose.evaluated_network(run.config, dataset, scaling, state, step, images, images)
  key = jax.random.fold_in(streams.of(streams.seed_key(run.config.seed)).measure, step)
  return diagnose.sharpness(network, key, settings.SHARPNESS_LANCZOS_STEPS,
                            settings.SHARPNESS_PROBES)


def _record(program: Program, runs: Sequence[Run], step: int, out: dict[str, Any]) -> None:
  """Each live run's loss and error of update ``step`` into its records."""
  for run, member in zip(runs, program.members(program.parallel.get(out))):
    if run.live:
      loss, error, skips = _losses(member)
      try:
        run.metrics.update(step, loss, error, **skips)
      except TrainingDiverged as e:
        run.stop(e)


def _evaluate(program: Program, runs: Sequence[Run], lrs: Sequence[optax.Schedule],
              data_id: str, n_test: int, measure: Callable[..., dict[str, Any] | None],
              device_state: Any, step: int) -> Any:
  """Evaluates every run (BatchNorm statistics re-estimated, then the test
  set; the sharpness where ``measure`` says), records and checkpoints each
  live one; returns the state."""
  par = program.parallel
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
        sharp = measure(run, member_state, step)
        run.metrics.evaluation(step, float(f"{float(lr(max(step - 1, 0))):.7g}"),
                               **_errors(member_totals, n_test),
                               **({} if sharp is None else {"sharpness": sharp}))
        if sharp is not None:
          run.metrics.write(f"update {step}: top Hessian eigenvalue {sharp['top_eigenvalue']:.4g}"
                            f", trace {sharp['trace']:.4g} +- {sharp['trace_stderr']:.2g} "
                            f"({sharp['images']} training images, {sharp['seconds']:.1f} s)")
        run.checkpointer.save(step, member_state, run.config.flags(), data_id,
                              run.metrics.history)
      except TrainingDiverged as e:
        run.stop(e)
  return device_state


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


def summary(run: Run, history: list[dict[str, Any]], wall_s: float) -> dict[str, Any]:
  """The JSON summary of ``run`` (train.py prints it last).

  A run stopped at its first evaluation has no record: its fields are None.
  """
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
