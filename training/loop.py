"""``train_and_evaluate``: one run, from a config to its metrics and checkpoints."""

import dataclasses
import json
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

import input_pipeline
import models
from training import checkpoints, devices, optimizers, settings, steps
from training.checkpoints import Checkpointer
from training.config import REPLICATED, Budget, Config, ConfigError
from training.metrics import MetricsWriter, TrainingDiverged, write_atomic


class TrainingResult(NamedTuple):
  """What :func:`train_and_evaluate` returns."""

  summary: dict[str, Any]  # the JSON line printed last by train.py
  history: list[dict[str, Any]]  # the records of metrics.jsonl
  state: steps.TrainState  # the final state, on the host


class Program(NamedTuple):
  """A run's initial state, its data on the devices and its mapped functions."""

  parallel: devices.Parallel
  state: steps.TrainState  # initial, on the host
  data: steps.DeviceData  # on the devices
  train_step: Callable[[Any, steps.DeviceData], tuple[Any, dict[str, Any]]]
  evaluate: Callable[[Any, steps.DeviceData], tuple[Any, dict[str, Any]]]


def build_program(config: Config, dataset: input_pipeline.Dataset,
                  scaling: input_pipeline.Scaling) -> Program:
  """The initial state, the data on the devices and the step and evaluation."""
  num_train = dataset.train_images.shape[0]
  seed_key = jax.random.PRNGKey(config.seed)
  model = models.create(config.model, axis_name=devices.AXIS, param_init=config.param_init)
  tx = optimizers.make_optimizer(config, config.updates_per_epoch(num_train),
                                 jax.random.fold_in(seed_key, 3), devices.AXIS)
  init = jax.jit(model.init, static_argnames="train")  # eager init is slow (2-3 s)

  def initial_state(key: jax.Array) -> steps.TrainState:
    variables = init(jax.random.fold_in(key, 0), scaling(dataset.train_images[:1]), train=False)
    return steps.TrainState(
        step=np.zeros((), np.int32), params=variables["params"],
        batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(variables["params"]),
        perm=np.zeros(num_train, np.int32), perm_epoch=np.full((), -1, np.int32))

  replicas = None
  if isinstance(config.optimizer, REPLICATED):
    # Replica r starts from its own initialisation, PRNGKey(seed + r) (steps.replica_key).
    replicas = config.replicas
    copies = [initial_state(jax.random.PRNGKey(s)) for s in steps.replica_seeds(config)]
    state = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *copies)
  else:
    state = initial_state(seed_key)
  parallel = devices.Parallel(devices.run_devices(config.run.devices), config.run.spmd,
                              replicas)
  # Each replica evaluates over its own devices: pad for that many.
  n_test, n = dataset.test_images.shape[0], config.run.devices // config.replicas
  eval_batch = min(settings.EVAL_BATCH, n_test)  # a small test set is not padded to 1000
  pad = -n_test % (steps.eval_rows_per_device(n, eval_batch) * n)
  padded = lambda a: np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)])
  data = parallel.put(steps.DeviceData(
      dataset.train_images, dataset.train_labels.astype(np.int32),
      padded(dataset.test_images), padded(dataset.test_labels.astype(np.int32)),
      padded(np.ones(n_test, np.float32))))
  step = steps.make_train_step(model, tx, config, num_train, scaling, seed_key)
  evaluate = steps.make_evaluate(model, config, num_train, scaling, eval_batch)
  return Program(parallel, jax.tree.map(np.asarray, state), data,
                 parallel.map(step), parallel.map(evaluate))


def _losses(par: devices.Parallel, out: dict[str, Any]) -> tuple[float, float, dict[str, int]]:
  """The loss and error of one update (the mean over replicas) and the counts
  of skipped updates, on the host (this waits for that update)."""
  first = {k: np.ravel(v)[0] for k, v in par.get(out).items()}
  skips = {k: int(v) for k, v in first.items() if k.startswith("skipped")}
  return float(first["loss"]), float(first["error"]), skips


def _errors(totals: dict[str, Any], n_test: int) -> dict[str, Any]:
  """The evaluation record's fields from the summed test loss and error counts."""
  first = lambda v: float(np.ravel(v)[0])  # with replicas, every replica holds the average's
  record = {"val_loss": first(totals["loss"]) / n_test,
            "val_error": 100 * round(first(totals["wrong"])) / n_test}
  if "replica_wrong" in totals:
    errors = [100 * round(float(w)) / n_test for w in totals["replica_wrong"]]
    record.update(val_error_best=min(errors), val_error_worst=max(errors),
                  val_error_replicas=errors)
  return record


def _config_json(flags: dict[str, Any]) -> str:
  return "{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in flags.items()) + "\n}\n"


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
  start = time.perf_counter()
  if not isinstance(config, Config):
    raise TypeError(f"config must be a training.Config from build_config, got {config!r}")
  workdir = pathlib.Path(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise ConfigError(f"--workdir {workdir}: exists and is not a directory")
  checkpointer = Checkpointer(workdir)
  saved = checkpointer.resume_point(config)
  dataset, scaling = input_pipeline.load(config.run.data_dir, config.input_scaling,
                                         config.validation_split)
  dataset.check(batch_size=config.batch_size, num_classes=10)
  if dataset.train_images.shape[1:] != models.INPUT_SHAPES[config.model]:
    raise ConfigError(f"--model {config.model} takes images of shape "
                      f"{models.INPUT_SHAPES[config.model]}; --data-dir {config.run.data_dir} "
                      f"holds {dataset.train_images.shape[1:]}")
  budget = Budget.of(config, dataset.train_images.shape[0])
  data_id = checkpoints.fingerprint(dataset)
  if saved is not None:
    checkpointer.check_data(saved, data_id)
    if saved.step > budget.total:
      raise ConfigError(f"--effective-epochs {config.effective_epochs}: the checkpoint is "
                        f"already at {budget.epochs(saved.step):.3f} effective epochs")

  program = build_program(config, dataset, scaling)
  state, history = program.state, []
  if saved is not None:
    state, history = checkpointer.restore(saved.step, state), saved.history
  flags = config.flags()
  workdir.mkdir(parents=True, exist_ok=True)
  primary = jax.process_index() == 0  # the one process that writes files and output
  if primary:
    write_atomic(workdir / "config.json", _config_json(flags))
  lr = optimizers.lr_schedule(config, budget.updates_per_epoch)
  par, n_test = program.parallel, dataset.test_images.shape[0]
  step = int(np.ravel(state.step)[0])  # with replicas, each holds the count
  device_state = par.put_state(state)
  metrics = MetricsWriter(workdir / "metrics.jsonl", history, budget,
                          config.backprops_per_update, step, config.run.progress, primary)

  def evaluate(device_state: Any, step: int) -> Any:
    with metrics.paused():
      device_state, totals = program.evaluate(device_state, program.data)
      metrics.evaluation(step, float(f"{float(lr(max(step - 1, 0))):.7g}"),
                         **_errors(par.get_state(totals), n_test))
      checkpointer.save(step, par.get_state(device_state), flags, data_id, metrics.history)
    return device_state

  try:
    if not history:
      device_state = evaluate(device_state, step)  # the curves' start, a first checkpoint
    pending = None  # the last update's metrics, read one update late: the host never waits
    while step < budget.total:
      device_state, out = program.train_step(device_state, program.data)
      step += 1
      if pending is not None:
        loss, error, skips = _losses(par, pending[1])
        metrics.update(pending[0], loss, error, **skips)
      pending = (step, out)
      if budget.is_eval(step):
        loss, error, skips = _losses(par, out)
        metrics.update(step, loss, error, **skips)
        pending = None
        device_state = evaluate(device_state, step)
  except TrainingDiverged as e:
    raise TrainingDiverged(f"{e}; stopped: {checkpointer.describe_latest()}") from None
  finally:
    metrics.close()
    checkpointer.close()

  last = metrics.history[-1]
  summary = {
      "model": config.model, "optimizer": config.optimizer.name, "seed": config.seed,
      "val_error": last["val_error"], "val_loss": last["val_loss"],
      "effective_epochs": last["effective_epochs"], "backprops": last["backprops"],
      "updates": last["step"], "devices": config.run.devices,
      **({"replicas": config.replicas, "val_error_best": last["val_error_best"],
          "val_error_worst": last["val_error_worst"]}
         if isinstance(config.optimizer, REPLICATED) else {}),
      "evaluated_on": (f"validation: the last {config.validation_split} training examples"
                       if config.validation_split else "test"),
      "wall_s": round(time.perf_counter() - start, 3), "workdir": str(workdir),
  }
  return TrainingResult(summary, metrics.history, par.get_state(device_state))
