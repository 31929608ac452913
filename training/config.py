"""Flags in, one complete and checked :class:`Config` out.

:func:`build_config` takes the command line's flags by name (a flag left out
or ``None`` takes its default from :mod:`training.settings`) and returns a
frozen :class:`Config` with every value filled in: nothing is looked up
later. Each optimizer's settings are its declaration (:mod:`training.optimizers`),
a small dataclass of its hyper-parameters, so a flag applies to an optimizer
exactly when its declaration has that field. How a
run executes (:class:`RunOptions`: data location, devices, spmd, unroll,
progress bar, resume) is kept apart from the hyper-parameters, which a
``--resume`` must match.

>>> config = build_config(model="lenet", optimizer="hj", gamma=0.01)
>>> config.optimizer
HJ(gamma=0.01, scoping=0.001, inner_steps=5, inner_lr=0.25, inner_momentum=0.9)
>>> config.effective_epochs, config.backprops_per_update
(60.0, 5)
>>> build_config(**config.flags()) == config
True
"""

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax

import input_pipeline
import models
from training import optimizers, settings
from training.optimizers import (HYPERS, REGISTRY, ConfigError, Hyper, Optimizer,
                                 first_update_at, flag, hypers, updates_in)
from training.optimizers._base import AT_LEAST_ONE, FRACTION, NON_NEGATIVE, POSITIVE

# The optimizers by name: their declarations (training.optimizers).
OPTIMIZERS: dict[str, type[Optimizer]] = REGISTRY
SPMD = ("pmap", "shard_map")
# The datasets --dataset names (input_pipeline.load's names).
DATASETS = tuple(n for n in input_pipeline.NAMES if n != "tfds")
INPUT_SCALINGS = ("raw", "centered")
PARAM_INITS = models.INITS


@dataclasses.dataclass(frozen=True)
class RunOptions:
  """How a run executes; a ``--resume`` may change any of these.

  Another device count, spmd or unroll continues the same trajectory up to
  float reassociation; the data may move but must be the same (checked).
  """

  data_dir: str  # a directory, or a dataset name of input_pipeline.load
  devices: int
  spmd: str  # "pmap" or "shard_map"
  unroll: int | bool  # inner-loop iterations per compiled loop body
  progress: bool
  resume: bool
  keep_checkpoints: int  # the newest K evaluations' checkpoints are kept
  sharpness_every: float | None = None  # effective epochs; None: not measured


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that defines a run, complete and checked (see :func:`build_config`)."""

  model: str
  optimizer: Optimizer  # its declaration, holding its hyper-parameters
  effective_epochs: float  # the budget; a --resume may raise it
  batch_size: int
  lr: float
  lr_schedule: tuple[tuple[float, float], ...]  # (effective epoch, lr): from then on
  momentum: float | None  # None for an optimizer that reads none (its declaration's reads)
  weight_decay: float
  seed: int
  eval_every: float  # effective epochs
  input_scaling: str
  param_init: str  # parameter initialisation, one of models.INITS
  validation_split: int  # >0: evaluate on the last N training images, train on the rest
  run: RunOptions

  @property
  def replicas(self) -> int:
    """Parameter copies: 1 but for elastic-sgd and parle."""
    return getattr(self.optimizer, "replicas", 1)

  @property
  def backprops_per_update(self) -> int:
    """Gradient evaluations per update of all replicas: L (1 for SGD) x replicas."""
    return self.optimizer.backprops_per_update * self.replicas

  def updates_per_epoch(self, num_train: int) -> float:
    """Updates per effective epoch: N_train / (batch * L * replicas)."""
    return num_train / (self.batch_size * self.backprops_per_update)

  def flags(self) -> dict[str, Any]:
    """The flat flags (JSON values) that :func:`build_config` turns back into this config."""
    out = {}
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if field.name == "optimizer":
        out["optimizer"] = value.name
        out.update(dataclasses.asdict(value))
      elif field.name == "run":
        out.update(dataclasses.asdict(value))
      elif field.name == "lr_schedule":
        out["lr_schedule"] = [list(pair) for pair in value]
      elif value is not None:  # a momentum the optimizer does not read
        out[field.name] = value
    return out


# Flags that a --resume may change: the budget and the run options.
RESUMABLE = ("effective_epochs", *(f.name for f in dataclasses.fields(RunOptions)))
# Every flag, in the order of Config.flags().
FLAGS = (
    "model", "optimizer", *HYPERS,
    "effective_epochs", "batch_size", "lr", "lr_schedule", "momentum", "weight_decay", "seed",
    "eval_every", "input_scaling", "param_init", "validation_split",
    *(f.name for f in dataclasses.fields(RunOptions)),
)

# The settings every run has, declared as the optimizers' own are.
SHARED: dict[str, Hyper] = {
    "effective_epochs": Hyper("budget", POSITIVE), "lr": Hyper("outer learning rate", POSITIVE),
    "momentum": Hyper("outer Nesterov momentum", FRACTION),
    "weight_decay": Hyper("L2 coefficient", NON_NEGATIVE),
    "eval_every": Hyper("effective epochs between evaluations", POSITIVE),
    "batch_size": Hyper("global minibatch", AT_LEAST_ONE, int),
    "seed": Hyper("the run's seed", NON_NEGATIVE, int),
    "devices": Hyper("devices", AT_LEAST_ONE, int),
    "unroll": Hyper("inner-loop iterations per loop body", AT_LEAST_ONE, int),
    "validation_split": Hyper("held-out training examples", NON_NEGATIVE, int),
    "keep_checkpoints": Hyper("checkpoints kept", AT_LEAST_ONE, int),
    "sharpness_every": Hyper("effective epochs between sharpness measurements", POSITIVE),
}
_SPECS: dict[str, Hyper] = {**SHARED, **HYPERS}
# Shared settings an optimizer may not read (its declaration's ``reads``): refused if given.
_READ = ("momentum", "weight_decay")


# Settings that runs of one program (train.py --seeds, --sweep) may differ in:
# the seed and the float hyper-parameters, which change no shape, loop length,
# budget or evaluation step (the lr schedule's values, not its epochs).
SWEEPABLE = ("seed", "lr_schedule", "lr", "momentum", "weight_decay",
             *(n for n, spec in HYPERS.items() if spec.sweepable))
# The settings a vmapped step of several runs takes as traced values; the
# others (a scoping rate, a momentum that may be 0) choose Python branches.
VMAPPABLE = ("lr", "lr_schedule", "momentum", "weight_decay",
             *(n for n, spec in HYPERS.items() if spec.vmap))


def check_one_program(configs: Sequence["Config"]) -> None:
  """Raises ConfigError unless ``configs`` differ only in :data:`SWEEPABLE` settings
  (their updates, evaluations and shapes the same), naming the first difference."""
  first = configs[0].flags()
  for config in configs[1:]:
    flags = config.flags()
    for name in first:
      if name == "lr_schedule":
        epochs = lambda f: [epoch for epoch, _ in f["lr_schedule"]]
        if epochs(first) != epochs(flags):
          raise ConfigError(f"--lr-schedule: runs of one program change the lr at the same "
                            f"effective epochs, not {epochs(first)} and {epochs(flags)}")
      elif name not in SWEEPABLE and first[name] != flags[name]:
        raise ConfigError(f"{flag(name)} {first[name]!r} and {flags[name]!r}: runs of one "
                          "program may differ only in the seed and float hyper-parameters "
                          f"({', '.join(flag(n) for n in SWEEPABLE if n != 'lr_schedule')})")


def _refuse(name: str, value: Any, want: str) -> None:
  raise ConfigError(f"{flag(name)} {value!r}: must be {want}")


def _check(name: str, value: Any) -> None:
  """Raises ConfigError naming the flag when ``value`` is out of its range."""
  _SPECS[name].check(name, value)


def parse_lr_schedule(text: str) -> tuple[tuple[float, float], ...]:
  """Parses ``"EPOCH:LR,EPOCH:LR,..."``: from effective epoch EPOCH on, use LR.

  ``"none"`` (or an empty string) means a constant learning rate.

  >>> parse_lr_schedule("60:0.02,120:0.004")
  ((60.0, 0.02), (120.0, 0.004))
  """
  if text.strip().lower() in ("", "none"):
    return ()
  pairs = []
  for item in text.split(","):
    try:
      epoch, lr = (float(v) for v in item.split(":"))
    except ValueError:
      raise ConfigError(
          f"--lr-schedule {text!r}: {item!r} is not EPOCH:LR (e.g. '60:0.02,120:0.004')"
      ) from None
    pairs.append((epoch, lr))
  return _checked_schedule(pairs, repr(text))


def _checked_schedule(pairs: Sequence[Sequence[float]], shown: str) -> tuple[tuple[float, float], ...]:
  checked: list[tuple[float, float]] = []
  for epoch, lr in pairs:
    epoch, lr = float(epoch), float(lr)
    if not (math.isfinite(epoch) and epoch > 0):
      raise ConfigError(f"--lr-schedule {shown}: epoch {epoch} must be > 0")
    if not (math.isfinite(lr) and lr > 0):
      raise ConfigError(f"--lr-schedule {shown}: learning rate {lr} must be > 0")
    if checked and epoch <= checked[-1][0]:
      raise ConfigError(
          f"--lr-schedule {shown}: epochs must increase ({epoch} after {checked[-1][0]})")
    checked.append((epoch, lr))
  return tuple(checked)


def default_lr_schedule(lr: float) -> tuple[tuple[float, float], ...]:
  """The paper's annealing on the effective-epoch axis: lr / 5 every 60 (settings)."""
  return tuple((settings.LR_DECAY_EVERY * k, lr * settings.LR_DECAY**k)
               for k in range(1, settings.LR_DECAYS + 1))


def _choice(name: str, value: Any, choices: Sequence[str]) -> None:
  if value not in choices:
    raise ConfigError(f"{flag(name)} {value!r}: unknown; choose one of {list(choices)}")


def _optimizer_of(given: dict[str, Any]) -> tuple[str, type[Optimizer], str]:
  """(model, optimizer settings class, spmd) of the given flags, checked; and
  refuses the flags that do not apply to that optimizer."""
  model = given.get("model", "mnistfc")
  if model not in models.NETWORKS:
    raise ConfigError(f"--model {model!r}: unknown; choose one of {list(models.NETWORKS)}")
  _choice("optimizer", given.get("optimizer", "entropy-sgd"), list(OPTIMIZERS))
  cls = OPTIMIZERS[given.get("optimizer", "entropy-sgd")]
  # Replicas x devices is two mapped axes: shard_map's (pmap maps one).
  spmd = given.get("spmd", "shard_map" if cls.replicated else "pmap")
  _choice("spmd", spmd, SPMD)
  if cls.replicated and spmd != "shard_map":
    raise ConfigError(f"--spmd {spmd}: --optimizer {cls.name} maps replicas x devices, two "
                      "axes, which needs --spmd shard_map (its default)")
  network = models.NETWORKS[model].defaults  # a network may choose its own
  _choice("input_scaling", given.get("input_scaling", network.get("input_scaling", "raw")),
          INPUT_SCALINGS)
  _choice("param_init", given.get("param_init", network.get("param_init", settings.PARAM_INIT)),
          PARAM_INITS)
  for name in given:
    users = optimizers.users(name) if name in (*HYPERS, *_READ) else []
    if users and cls.name not in users:
      raise ConfigError(f"{flag(name)} does not apply to --optimizer {cls.name} "
                        f"(it applies to {', '.join(users)})")
  # A bool is the resolved default (Config.flags() gives it back); False is SGD's.
  if given.get("unroll", False) is not False and not cls.inner_loop:
    raise ConfigError(
        f"--unroll does not apply to --optimizer {cls.name} (it has no inner loop; it applies "
        f"to {', '.join(o for o, c in OPTIMIZERS.items() if c.inner_loop)})")
  return model, cls, spmd


def per_epoch(rate: float, model: str, batch_size: int, validation_split: int) -> float:
  """``rate`` per epoch as a rate per update: ``rate / (minibatches per epoch)`` of
  the model's training set less the validation split (Parle's gdot for 0.5)."""
  train = models.NETWORKS[model].train_examples - (validation_split or 0)
  return rate * batch_size / max(train, 1)


def _values(given: dict[str, Any], model: str, cls: type[Optimizer]) -> dict[str, Any]:
  """The cell's recipe with the given flags over it, each checked."""
  own = list(hypers(cls))
  defaults = optimizers.defaults(model, cls.name)
  value = {name: given.get(name, defaults.get(name))
           for name in (*defaults, *own, "devices", "unroll")}
  missing = [n for n in ("effective_epochs", "lr", "weight_decay", *own)
             if value.get(n) is None and n != "replicas"]
  if missing:
    raise ConfigError(f"--optimizer {cls.name} has no recipe for --model {model} that gives "
                      f"{', '.join(map(flag, missing))}: give them")
  for name in ("effective_epochs", "batch_size", "lr", "momentum", "weight_decay",
               "eval_every", "seed", "validation_split", *own, "devices", "unroll"):
    if (value.get(name) is not None and not (name == "unroll" and isinstance(value[name], bool))
        and not isinstance(value[name], settings.PerEpoch)):
      _check(name, value[name])
  cls.check(value)
  if isinstance(value.get("scoping"), settings.PerEpoch):  # at this batch and data
    value["scoping"] = per_epoch(value["scoping"].rate, model, value["batch_size"],
                                 value["validation_split"])
  value.update({k: float(v) for k, v in value.items()
                if k in _SPECS and _SPECS[k].kind is float and v is not None})
  if value["seed"] >= 2**32:
    _refuse("seed", value["seed"], "< 2**32")
  return value


def _schedule(given: dict[str, Any], lr: float) -> tuple[tuple[float, float], ...]:
  if "lr_schedule" not in given:
    return default_lr_schedule(lr)
  if isinstance(given["lr_schedule"], str):
    return parse_lr_schedule(given["lr_schedule"])
  return _checked_schedule(given["lr_schedule"], repr(given["lr_schedule"]))


def _device_count(value: dict[str, Any], cls: type[Optimizer]) -> int:
  """The run's device count, checked against this machine, the replicas and the
  batch; sets ``value["replicas"]`` for the replicated optimizers."""
  available = jax.devices()  # every process's, in a multi-process run
  devices = value["devices"] or len(available)
  if devices > len(available):
    raise ConfigError(
        f"--devices {devices}: only {len(available)} {available[0].platform} device(s); "
        "on a CPU, simulate more with "
        f"XLA_FLAGS=--xla_force_host_platform_device_count={devices}")
  if jax.process_count() > 1 and devices != len(available):
    raise ConfigError(f"--devices {devices}: a run across {jax.process_count()} processes "
                      f"uses all their {len(available)} devices")
  hint = "" if value["devices"] else " (all devices; choose fewer with --devices)"
  if cls.replicated:
    value["replicas"] = replicas = value["replicas"] or devices  # one replica per device
    if devices % replicas:
      raise ConfigError(f"--replicas {replicas}: must divide --devices {devices}{hint}")
    if value["seed"] + replicas > 2**32:
      _refuse("seed", value["seed"], f"< 2**32 - replicas ({replicas}): replica r uses seed + r")
  per_replica = devices // (value["replicas"] if cls.replicated else 1)
  if value["batch_size"] % per_replica:
    each = f" / --replicas {value['replicas']}" if cls.replicated else ""
    raise ConfigError(f"--batch-size {value['batch_size']} is not divisible by --devices "
                      f"{devices}{each}{hint}")
  return devices


def build_config(**flags: Any) -> Config:
  """The complete, checked config of a run from its flags (see ``train.py --help``).

  Args:
    **flags: flag names with ``_`` for ``-`` (``inner_lr=0.1``; ``dataset``
      names a dataset, stored as the ``data_dir`` it is loaded from); a flag left
      out or ``None`` takes its default, the (model, optimizer) cell's recipe
      in :mod:`training.settings`. ``lr_schedule`` is the command line's text
      or a sequence of (effective epoch, lr) pairs.

  Raises:
    ConfigError: naming the flag, for unknown names, values out of range,
      optimizer flags given to an optimizer they do not apply to, and device
      counts this machine cannot give.
  """
  unknown = sorted(set(flags) - {*FLAGS, "dataset"})
  if unknown:
    raise ConfigError(f"unknown setting(s) {unknown}; the flags are {list(FLAGS)}")
  given = {k: v for k, v in flags.items() if v is not None}
  model, cls, spmd = _optimizer_of(given)
  value = _values(given, model, cls)
  schedule = _schedule(given, float(value["lr"]))
  network = models.NETWORKS[model]
  if "dataset" in given:  # a dataset by name: where its files are is the loader's business
    _choice("dataset", given["dataset"], DATASETS)
    if "data_dir" in given:
      raise ConfigError(f"--dataset {given['dataset']} and --data-dir {given['data_dir']}: give "
                        "one (a dataset by name, or a directory of its files)")
  data_dir = given.get("data_dir", given.get("dataset", network.data))
  if data_dir is None:
    raise ConfigError(f"--model {model} needs {network.data_help or 'its data: pass --data-dir'}")
  devices = _device_count(value, cls)
  keep = given.get("keep_checkpoints", settings.KEEP_CHECKPOINTS)
  _check("keep_checkpoints", keep)
  sharpness_every = _sharpness_every(given.get("sharpness_every"), value["eval_every"], cls)
  unroll = value["unroll"]
  if unroll is None:
    unroll = (cls.inner_loop and jax.devices()[0].platform == "cpu"
              and network.unroll_on_cpu)
  return Config(
      model=model, optimizer=cls(**{f.name: value[f.name] for f in dataclasses.fields(cls)}),
      effective_epochs=value["effective_epochs"], batch_size=value["batch_size"],
      lr=value["lr"], lr_schedule=schedule, momentum=value.get("momentum"),
      weight_decay=value["weight_decay"], seed=value["seed"],
      eval_every=value["eval_every"],
      input_scaling=given.get("input_scaling", network.defaults.get("input_scaling", "raw")),
      param_init=given.get("param_init", network.defaults.get("param_init", settings.PARAM_INIT)),
      validation_split=value["validation_split"],
      run=RunOptions(data_dir=str(data_dir), devices=devices,
                     spmd=spmd, unroll=unroll,
                     progress=bool(given.get("progress", True)),
                     resume=bool(given.get("resume", False)),
                     keep_checkpoints=keep, sharpness_every=sharpness_every),
  )


def _sharpness_every(every: float | None, eval_every: float,
                     cls: type[Optimizer]) -> float | None:
  """``--sharpness-every``, checked: a multiple of ``--eval-every`` (it measures
  at evaluations), for a single network."""
  if every is None:
    return None
  _check("sharpness_every", every)
  multiple = every / eval_every
  if abs(multiple - round(multiple)) > 1e-9 * multiple or round(multiple) < 1:
    raise ConfigError(f"--sharpness-every {every}: must be a multiple of --eval-every "
                      f"{eval_every} (it measures at evaluations)")
  if cls.replicated:
    raise ConfigError(f"--sharpness-every {every}: {cls.name} trains replicas; the sharpness "
                      "is measured for a single network")
  return float(every)


def implied_flags(flags: dict[str, Any]) -> set[str]:
  """The names in ``flags`` (a :meth:`Config.flags`) whose values are the defaults
  that other flags imply: the lr schedule of the lr, a per-epoch scoping of the
  batch size and data."""
  implied = set()
  lr, batch_size = flags.get("lr"), flags.get("batch_size")
  if lr is not None and flags.get("lr_schedule") == [
      list(pair) for pair in default_lr_schedule(float(lr))]:
    implied.add("lr_schedule")
  scoping = (optimizers.defaults(flags["model"], flags["optimizer"]).get("scoping")
             if flags.get("optimizer") in REGISTRY and "model" in flags else None)
  if isinstance(scoping, settings.PerEpoch) and batch_size is not None and flags.get(
      "scoping") == per_epoch(scoping.rate, flags["model"], batch_size,
                              flags.get("validation_split", 0)):
    implied.add("scoping")
  return implied


@dataclasses.dataclass(frozen=True)
class Budget:
  """A run's length in updates, and when it evaluates, for ``num_train`` examples.

  >>> budget = Budget.of(build_config(optimizer="sgd", effective_epochs=2.0), 1280)
  >>> budget.total, budget.epochs(5), budget.is_eval(10), budget.is_eval(11)
  (20, 0.5, False, False)
  """

  updates_per_epoch: float
  total: int  # updates
  eval_every: float  # effective epochs

  @classmethod
  def of(cls, config: Config, num_train: int) -> "Budget":
    """Raises ConfigError when the budget is less than one update."""
    per_epoch = config.updates_per_epoch(num_train)
    one_update = 1 / per_epoch
    if config.effective_epochs < one_update:
      raise ConfigError(f"--effective-epochs {config.effective_epochs}: less than one update, "
                        f"which costs {one_update:.4g} effective epochs here")
    total = updates_in(config.effective_epochs, per_epoch)
    return cls(per_epoch, total, config.eval_every)

  def epochs(self, step: int) -> float:
    """Effective epochs done after ``step`` updates."""
    return step / self.updates_per_epoch

  def is_eval(self, step: int) -> bool:
    """The last update, and the first update at or past each multiple of eval_every."""
    return self.is_mark(step, self.eval_every)

  def is_mark(self, step: int, every: float) -> bool:
    """The last update, and the first update at or past each multiple of
    ``every`` effective epochs (with ``every`` a multiple of eval_every, an
    evaluation's)."""
    marks = lambda s: math.floor(s / (every * self.updates_per_epoch) + 1e-9)
    return step == self.total or marks(step) > marks(step - 1)
