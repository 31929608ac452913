r"""Trains one of the paper's networks with one of its optimizers (Table 1).

``python train.py`` trains mnistfc with Entropy-SGD on the bundled MNIST for
the paper's budget of 120 effective epochs; ``python train.py --help`` lists
every flag with its default. The budget is counted in effective epochs,
backprops * batch_size / N_train (paper Remark 22): one update of Entropy-SGD
or HEAT costs L = 20 backprops, of HJ L = 5, of SGD 1.

The step is data parallel over ``--devices`` local devices (axis ``batch``):
each device holds the whole training set and draws its slice of the global
minibatch inside the compiled step, gradients are averaged by the
transforms' ``axis_name``, BatchNorm takes its statistics over the global
batch, and dropout masks and Langevin noise depend only on the seed, the
update and the example's position in the global batch. So 1 and 8 devices
follow the same trajectory up to float reassociation, under ``jax.pmap``
(default) or ``jax.shard_map`` (``--spmd shard_map``).

Before each evaluation the BatchNorm statistics are re-estimated on the
training set (train mode, dropout off, the mean of the per-batch statistics),
as the paper's code does. Each evaluation appends a record to
``WORKDIR/metrics.jsonl`` and writes an orbax checkpoint; ``--resume``
continues from the newest one and ends with exactly the metrics of an
uninterrupted run. The last line on stdout is a JSON summary.

Example (a 5-effective-epoch LeNet run)::

  python train.py --model lenet --optimizer entropy-sgd --effective-epochs 5
"""

import argparse
import dataclasses
import datetime
import hashlib
import json
import math
import os
import pathlib
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import entropix
import input_pipeline
import models
from models.layers import BN_MOMENTUM

AXIS = "batch"
OPTIMIZERS = ("sgd", "entropy-sgd", "hj", "heat")
SPMD = ("pmap", "shard_map")
INPUT_SCALINGS = ("raw", "centered")
CONVOLUTIONAL = ("lenet", "allcnn")

# Paper Table 1: the effective epochs at which each error was reported; the
# default budget of each (model, optimizer) pair.
PAPER_BUDGET = {
    ("mnistfc", "entropy-sgd"): 120, ("mnistfc", "heat"): 200,
    ("mnistfc", "hj"): 200, ("mnistfc", "sgd"): 194,
    ("lenet", "entropy-sgd"): 80, ("lenet", "heat"): 75,
    ("lenet", "hj"): 70, ("lenet", "sgd"): 67,
    ("allcnn", "entropy-sgd"): 160, ("allcnn", "heat"): 150,
    ("allcnn", "hj"): 145, ("allcnn", "sgd"): 195,
}
# Per-model defaults (REFERENCE.md sections 4-5): gamma0 and scoping gamma1,
# and weight decay (All-CNN-C only).
GAMMA = {"mnistfc": 1e-4, "lenet": 1e-3, "allcnn": 3e-2}
SCOPING = {"mnistfc": 1e-3, "lenet": 1e-4, "allcnn": 1e-4}
WEIGHT_DECAY = {"mnistfc": 0.0, "lenet": 0.0, "allcnn": 1e-3}
# Per-optimizer defaults (paper Sec. 7): outer lr 0.1, and the inner loop.
OPTIMIZER_DEFAULTS = {
    "sgd": {},
    "entropy-sgd": {"inner_steps": 20, "inner_lr": 0.1, "noise": 1e-4, "alpha": 0.75},
    "hj": {"inner_steps": 5, "inner_lr": 0.25},
    "heat": {"sigma": 1e-2, "samples": 20},
}
# Which optimizer-specific flags apply to which optimizer.
APPLIES_TO = {
    "gamma": ("entropy-sgd", "hj"),
    "inner_steps": ("entropy-sgd", "hj"),
    "inner_lr": ("entropy-sgd", "hj"),
    "noise": ("entropy-sgd",),
    "alpha": ("entropy-sgd",),
    "scoping": ("entropy-sgd", "hj", "heat"),
    "sigma": ("heat",),
    "samples": ("heat",),
    "unroll": ("entropy-sgd", "hj", "heat"),
}
LR = 0.1
LR_DECAY, LR_DECAY_EVERY = 0.2, 60.0  # lr / 5 every 60 effective epochs
EVAL_EVERY = 5.0
EVAL_BATCH = 1000


class ConfigError(ValueError):
  """A flag or config value is invalid; raised before any work starts."""


class TrainingDiverged(RuntimeError):
  """The loss became NaN or Inf; the last good checkpoint is kept."""


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that defines a run; ``None`` means the documented default.

  The optimizer-specific fields (``gamma`` ... ``samples``) must stay ``None``
  for optimizers they do not apply to (see ``APPLIES_TO``).
  """

  model: str = "mnistfc"
  optimizer: str = "entropy-sgd"
  effective_epochs: float | None = None
  batch_size: int = 128
  lr: float = LR
  lr_schedule: str | None = None
  gamma: float | None = None
  scoping: float | None = None
  inner_steps: int | None = None
  inner_lr: float | None = None
  noise: float | None = None
  alpha: float | None = None
  sigma: float | None = None
  samples: int | None = None
  unroll: int | None = None
  momentum: float = 0.9
  weight_decay: float | None = None
  seed: int = 0
  data_dir: str | None = None
  resume: bool = False
  devices: int | None = None
  eval_every: float = EVAL_EVERY
  input_scaling: str = "raw"
  spmd: str = "pmap"
  progress: bool = True


# Fields that may differ between a run and its --resume. Another device count
# or spmd continues the same trajectory up to float reassociation (not to the
# bit); the data may move, but must be the same (a fingerprint is checked).
RESUMABLE_CHANGES = ("effective_epochs", "resume", "devices", "spmd", "data_dir", "progress")


def _fail(flag: str, value: Any, want: str) -> None:
  raise ConfigError(f"--{flag.replace('_', '-')} {value!r}: must be {want}")


def _number(flag: str, value: Any, ok: Callable[[float], bool], want: str) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    _fail(flag, value, f"a number {want}")
  if not math.isfinite(value) or not ok(value):
    _fail(flag, value, want)


def _integer(flag: str, value: Any, minimum: int) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    _fail(flag, value, f"an integer >= {minimum}")


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
    if not (math.isfinite(epoch) and epoch > 0):
      raise ConfigError(f"--lr-schedule {text!r}: epoch {epoch} must be > 0")
    if not (math.isfinite(lr) and lr > 0):
      raise ConfigError(f"--lr-schedule {text!r}: learning rate {lr} must be > 0")
    if pairs and epoch <= pairs[-1][0]:
      raise ConfigError(f"--lr-schedule {text!r}: epochs must increase ({epoch} after {pairs[-1][0]})")
    pairs.append((epoch, lr))
  return tuple(pairs)


def resolve(config: Config) -> Config:
  """Checks ``config`` and fills every ``None`` with its documented default.

  Raises:
    ConfigError: naming the flag, for unknown names, values out of range and
      optimizer flags given to an optimizer they do not apply to.
  """
  if config.model not in models.REGISTRY:
    raise ConfigError(f"--model {config.model!r}: unknown; choose one of {sorted(models.REGISTRY)}")
  if config.optimizer not in OPTIMIZERS:
    raise ConfigError(f"--optimizer {config.optimizer!r}: unknown; choose one of {list(OPTIMIZERS)}")
  for name, allowed in (("spmd", SPMD), ("input_scaling", INPUT_SCALINGS)):
    if getattr(config, name) not in allowed:
      _fail(name, getattr(config, name), f"one of {list(allowed)}")
  for name, optimizers in APPLIES_TO.items():
    if getattr(config, name) is not None and config.optimizer not in optimizers:
      raise ConfigError(
          f"--{name.replace('_', '-')} does not apply to --optimizer {config.optimizer} "
          f"(it applies to {', '.join(optimizers)})"
      )
  model, opt = config.model, config.optimizer
  defaults = dict(OPTIMIZER_DEFAULTS[opt], effective_epochs=PAPER_BUDGET[model, opt],
                  weight_decay=WEIGHT_DECAY[model])
  if opt in APPLIES_TO["gamma"]:
    defaults["gamma"] = GAMMA[model]
  if opt in APPLIES_TO["scoping"]:
    defaults["scoping"] = SCOPING[model]
  filled = {k: v for k, v in defaults.items() if getattr(config, k) is None}
  config = dataclasses.replace(config, **filled)

  positive = lambda v: v > 0
  _number("effective_epochs", config.effective_epochs, positive, "> 0")
  _integer("batch_size", config.batch_size, 1)
  _number("lr", config.lr, positive, "> 0")
  if config.lr_schedule is not None:
    parse_lr_schedule(config.lr_schedule)
  _number("momentum", config.momentum, lambda v: 0 <= v < 1, "in [0, 1)")
  _number("weight_decay", config.weight_decay, lambda v: v >= 0, ">= 0")
  _number("eval_every", config.eval_every, positive, "> 0")
  _integer("seed", config.seed, 0)
  if config.seed >= 2**32:
    _fail("seed", config.seed, "< 2**32")
  if config.devices is not None:
    _integer("devices", config.devices, 1)
  checks = {
      "gamma": (positive, "> 0"), "scoping": (lambda v: v >= 0, ">= 0"),
      "inner_lr": (positive, "> 0"), "noise": (lambda v: v >= 0, ">= 0"),
      "alpha": (lambda v: 0 <= v < 1, "in [0, 1)"), "sigma": (positive, "> 0"),
  }
  for name, (ok, want) in checks.items():
    if getattr(config, name) is not None:
      _number(name, getattr(config, name), ok, want)
  for name in ("inner_steps", "samples", "unroll"):
    if getattr(config, name) is not None:
      _integer(name, getattr(config, name), 1)
  return config


def backprops_per_update(config: Config) -> int:
  """L: gradient evaluations per update (1 for SGD)."""
  return {"sgd": 1, "heat": config.samples}.get(config.optimizer, config.inner_steps)


def lr_schedule(config: Config, updates_per_epoch: float) -> optax.Schedule:
  """The outer learning rate as a function of the update count.

  ``--lr-schedule`` pairs, or by default the paper's annealing (Sec. 7.1: lr
  divided by 5 every 3 epochs of Entropy-SGD with L = 20) on the common axis
  of effective epochs: lr / 5 every 60 effective epochs, for all optimizers.
  """
  if config.lr_schedule is None:
    # Independent of the budget, so a run extended by --resume anneals like
    # one started with the larger budget (40 steps: lr * 1e-28, the floor).
    pairs = [(LR_DECAY_EVERY * k, config.lr * LR_DECAY**k) for k in range(1, 41)]
  else:
    pairs = list(parse_lr_schedule(config.lr_schedule))
  values = [config.lr] + [lr for _, lr in pairs]
  # Update k spans effective epochs [k, k + 1) / updates_per_epoch: the first
  # one that starts at or after E uses the new rate.
  boundaries = [first_update_at(epoch, updates_per_epoch) for epoch, _ in pairs]
  return optax.join_schedules([optax.constant_schedule(v) for v in values], boundaries)


def first_update_at(epoch: float, updates_per_epoch: float) -> int:
  """The first update that starts at or after effective epoch ``epoch``."""
  return max(1, math.ceil(epoch * updates_per_epoch - 1e-9))


def gamma_schedule(config: Config) -> optax.ScalarOrSchedule:
  """gamma0 (1 + scoping)^k, capped at 1 / inner_lr (past 2 / inner_lr the inner loop diverges).

  Without the cap the default HJ run on mnistfc (18,750 updates) would take
  gamma from 1e-4 to 1.4e4.
  """
  if not config.scoping:
    return config.gamma
  ceiling = max(config.gamma, 1 / config.inner_lr)
  return entropix.scoping(config.gamma, config.scoping, end_value=ceiling)


def make_optimizer(
    config: Config, updates_per_epoch: float, key: jax.Array, platform: str = "cpu"
) -> optax.GradientTransformationExtraArgs:
  """The optax optimizer of ``config`` (gradients averaged over ``AXIS``).

  ``config.unroll=None`` unrolls the whole inner loop of the convolutional
  networks on CPU, where XLA runs convolutions inside a loop body 3-4x slower
  than outside (jax-ml/jax#12868; LeNet, batch 128, 2-core CPU: 141 ms per
  backprop in the loop, 38 ms unrolled, for a compile of 38 s instead of
  12 s), and nothing elsewhere (mnistfc: 9.5 ms rolled, 12.1 ms unrolled).
  """
  lr = lr_schedule(config, updates_per_epoch)
  unroll = config.unroll or (platform == "cpu" and config.model in CONVOLUTIONAL)
  if config.optimizer == "sgd":
    return optax.with_extra_args_support(optax.chain(
        optax.add_decayed_weights(config.weight_decay),
        optax.sgd(lr, momentum=config.momentum, nesterov=True),
    ))
  if config.optimizer == "heat":
    # Scoping shrinks the smoothing: the variance sigma^2 falls by 1 + scoping
    # per update, as the PDE time 1 / gamma does for the other two.
    sigma = (optax.exponential_decay(config.sigma, 1, (1 + config.scoping) ** -0.5)
             if config.scoping else config.sigma)
    return entropix.heat(lr, sigma=sigma, samples=config.samples, momentum=config.momentum,
                         weight_decay=config.weight_decay, key=key, axis_name=AXIS,
                         unroll=unroll)
  common = dict(gamma=gamma_schedule(config), inner_steps=config.inner_steps, inner_lr=config.inner_lr,
                momentum=config.momentum, weight_decay=config.weight_decay, axis_name=AXIS,
                unroll=unroll)
  if config.optimizer == "hj":
    return entropix.hj(lr, **common)
  return entropix.entropy_sgd(lr, noise=config.noise, alpha=config.alpha, key=key, **common)


# ----------------------------------------------------------------------------
# Data


class Data(NamedTuple):
  """Arrays that live on every device; inputs are scaled inside the step."""

  train_x: jax.Array
  train_y: jax.Array
  test_x: jax.Array
  test_y: jax.Array
  test_weight: jax.Array  # 1 for real test examples, 0 for padding


class Preprocess(NamedTuple):
  """x -> (x - shift) * scale, applied on the device to the stored inputs."""

  shift: float
  scale: float


def load_data(config: Config) -> tuple[input_pipeline.Dataset, Preprocess]:
  """The dataset of ``config.model``: MNIST-style IDX or CIFAR-10 (GCN + ZCA)."""
  if config.model != "allcnn":
    dataset = input_pipeline.load_idx_dataset(config.data_dir)
    # The paper feeds raw 0..255 pixels ("no pre-processing", Sec. 8.1.1);
    # the authors' Lua code (x - 126) / 126.
    scaling = {"raw": Preprocess(0.0, 1.0), "centered": Preprocess(126.0, 1 / 126)}
    return dataset, scaling[config.input_scaling]
  if config.input_scaling != "raw":
    raise ConfigError("--input-scaling applies to the MNIST models; CIFAR-10 is GCN + ZCA whitened")
  if config.data_dir is None:
    raise ConfigError("--model allcnn needs CIFAR-10: pass --data-dir DIR (a cifar-10-batches-bin "
                      "directory) or --data-dir tfds (needs tensorflow-datasets)")
  if config.data_dir == "tfds":
    dataset = input_pipeline.load_cifar10_tfds()
  else:
    dataset = input_pipeline.load_cifar10(config.data_dir)
  cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "entropix"
  train = input_pipeline.global_contrast_normalize(dataset.train_images)
  whiten = input_pipeline.fit_zca(train, cache_dir=cache)
  test = input_pipeline.global_contrast_normalize(dataset.test_images)
  dataset = dataclasses.replace(dataset, train_images=whiten(train), test_images=whiten(test))
  return dataset, Preprocess(0.0, 1.0)


def _check_dataset(dataset: input_pipeline.Dataset, config: Config) -> None:
  n = dataset.train_images.shape[0]
  if n < config.batch_size:
    raise ConfigError(f"--batch-size {config.batch_size}: larger than the {n} training examples")
  if dataset.test_images.shape[0] == 0:
    raise ConfigError(f"--data-dir {config.data_dir}: the test set is empty")
  one_update = config.batch_size * backprops_per_update(config) / n
  if config.effective_epochs < one_update:
    raise ConfigError(f"--effective-epochs {config.effective_epochs}: less than one update, "
                      f"which costs {one_update:.4g} effective epochs here")
  if dataset.num_classes > 10:
    raise ConfigError(f"the dataset has {dataset.num_classes} classes; the networks have 10 outputs")


# ----------------------------------------------------------------------------
# The per-device step and evaluation (run under pmap or shard_map, axis AXIS)


class TrainState(NamedTuple):
  """Replicated training state; ``perm`` is the example order of ``perm_epoch``."""

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  perm: jax.Array
  perm_epoch: jax.Array


def _axis() -> tuple[jax.Array, int]:
  return lax.axis_index(AXIS), lax.axis_size(AXIS)


def make_batch_sampler(
    config: Config, num_train: int, seed_key: jax.Array
) -> Callable[[jax.Array, jax.Array, jax.Array], tuple[tuple[jax.Array, jax.Array], jax.Array]]:
  """``draw(perm, perm_epoch, first) -> ((perm, perm_epoch), rows)``: L minibatches.

  Minibatch j (counted over the whole run) is rows ``(j mod E) * B ...`` of
  the permutation of epoch ``j // E``, E = N // B minibatches per epoch (the
  N mod B left-over examples change every epoch). ``rows`` is int32[L, B];
  ``perm`` caches the permutation of ``perm_epoch`` so a new one is drawn
  once per epoch, not per minibatch.
  """
  num_backprops = backprops_per_update(config)
  batch, per_epoch = config.batch_size, num_train // config.batch_size
  data_key = jax.random.fold_in(seed_key, 1)

  def draw(perm, perm_epoch, first):
    def one(carry, i):
      perm, epoch = carry
      j = first + i
      new_epoch = j // per_epoch
      perm = lax.cond(
          new_epoch != epoch,
          lambda: jax.random.permutation(jax.random.fold_in(data_key, new_epoch), num_train),
          lambda: perm,
      )
      return (perm, new_epoch), lax.dynamic_slice_in_dim(perm, (j % per_epoch) * batch, batch)

    return lax.scan(one, (perm, perm_epoch), jnp.arange(num_backprops))

  return draw


def draw_device_rows(
    draw: Callable[..., Any], state: TrainState, config: Config
) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
  """Per device: the new (perm, perm_epoch) and this device's rows, int32[L, B / n]."""
  device, devices = _axis()
  local = config.batch_size // devices
  carry, rows = draw(state.perm, state.perm_epoch, state.step * backprops_per_update(config))
  return carry, lax.dynamic_slice_in_dim(rows, device * local, local, axis=1)


def make_train_step(
    model: Any, tx: optax.GradientTransformationExtraArgs, config: Config,
    num_train: int, prep: Preprocess, seed_key: jax.Array,
) -> Callable[[TrainState, Data], tuple[TrainState, dict[str, jax.Array]]]:
  """The per-device update: draws L minibatches on the device, then one update.

  Device d of n takes columns ``d * B/n ...`` of each global minibatch drawn
  by :func:`make_batch_sampler`; minibatch j's dropout key is
  ``fold_in(key, j)``, the same on every device.
  """
  num_backprops = backprops_per_update(config)
  draw = make_batch_sampler(config, num_train, seed_key)
  dropout_key = jax.random.fold_in(seed_key, 2)

  def step(state, data):
    first = state.step * num_backprops
    (perm, perm_epoch), rows = draw_device_rows(draw, state, config)

    def loss_fn(params, i):
      x = (data.train_x[rows[i]].astype(jnp.float32) - prep.shift) * prep.scale
      y = data.train_y[rows[i]]
      logits, _ = model.apply(
          {"params": params, "batch_stats": state.batch_stats}, x, train=True,
          rngs={"dropout": jax.random.fold_in(dropout_key, first + i)}, mutable=["batch_stats"],
      )
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      return loss, jnp.mean(jnp.argmax(logits, -1) != y)

    grad_fn = lambda params, i: jax.grad(loss_fn, has_aux=True)(params, i)[0]
    if config.optimizer == "heat":
      # HEAT evaluates gradients only at perturbed points; the loss at x is
      # one forward pass for the record.
      loss, error = loss_fn(state.params, 0)
      grads = optax.tree.zeros_like(state.params)
    else:
      (loss, error), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, 0)
      if config.optimizer == "sgd":
        grads = lax.pmean(grads, AXIS)  # entropix's transforms average through axis_name
    updates, opt_state = tx.update(grads, state.opt_state, state.params, grad_fn=grad_fn)
    params = optax.apply_updates(state.params, updates)
    new = state._replace(step=state.step + 1, params=params, opt_state=opt_state,
                         perm=perm, perm_epoch=perm_epoch)
    return new, lax.pmean({"loss": loss, "error": error}, AXIS)

  return step


def eval_rows_per_device(devices: int) -> int:
  """Test examples per device per evaluation batch (EVAL_BATCH split evenly)."""
  return -(-EVAL_BATCH // devices)


def make_evaluate(
    model: Any, config: Config, num_train: int, prep: Preprocess
) -> Callable[[TrainState, Data], tuple[TrainState, dict[str, jax.Array]]]:
  """Per-device evaluation: BatchNorm statistics from the training set, then the test set.

  The statistics are the mean over the N // B training minibatches (in
  order, train mode, dropout off) of each minibatch's mean and variance:
  what BatchNorm normalised with during training, averaged.
  """
  batch, batches = config.batch_size, num_train // config.batch_size

  def evaluate(state, data):
    device, devices = _axis()
    local = batch // devices
    scale = lambda x: (x.astype(jnp.float32) - prep.shift) * prep.scale
    zeros = jax.tree.map(jnp.zeros_like, state.batch_stats)

    def add_batch(total, k):
      rows = k * batch + device * local + jnp.arange(local)
      _, new = model.apply({"params": state.params, "batch_stats": zeros},
                           scale(data.train_x[rows]), train=True, dropout=False,
                           mutable=["batch_stats"])
      return jax.tree.map(jnp.add, total, new["batch_stats"]), None

    total, _ = lax.scan(add_batch, zeros, jnp.arange(batches))
    # Each update left (1 - momentum) * batch statistic in the zeroed stats.
    stats = jax.tree.map(lambda t: t / (batches * (1 - BN_MOMENTUM)), total)

    per_device = eval_rows_per_device(devices)
    test_batches = data.test_x.shape[0] // (per_device * devices)

    def test_batch(_, k):
      rows = k * per_device * devices + device * per_device + jnp.arange(per_device)
      logits = model.apply({"params": state.params, "batch_stats": stats},
                           scale(data.test_x[rows]), train=False)
      y, w = data.test_y[rows], data.test_weight[rows]
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
      wrong = (jnp.argmax(logits, -1) != y).astype(jnp.float32)
      return None, (jnp.sum(w * loss), jnp.sum(w * wrong))

    # Per-batch sums as scan outputs: a carry would mix device-invariant
    # zeros with device-varying sums, which shard_map's type check refuses.
    _, (loss, wrong) = lax.scan(test_batch, None, jnp.arange(test_batches))
    loss, wrong = jnp.sum(loss), jnp.sum(wrong)
    # Sums, divided on the host: the error is an exact count.
    return state._replace(batch_stats=stats), lax.psum({"loss": loss, "wrong": wrong}, AXIS)

  return evaluate


# ----------------------------------------------------------------------------
# Devices, checkpoints, the loop


class _Parallel:
  """Replicates trees on the devices and compiles per-device functions.

  ``pmap`` stacks a copy per device along a leading axis; ``shard_map`` keeps
  one replicated global array. The per-device functions are the same.
  """

  def __init__(self, devices: Sequence[jax.Device], spmd: str):
    self.devices, self.spmd = list(devices), spmd
    self.mesh = Mesh(np.array(self.devices), (AXIS,))

  def put(self, tree: Any) -> Any:
    if self.spmd == "shard_map":
      return jax.device_put(tree, NamedSharding(self.mesh, P()))
    n, sharding = len(self.devices), NamedSharding(self.mesh, P(AXIS))
    stack = lambda x: np.broadcast_to(np.asarray(x), (n, *np.shape(x)))
    return jax.device_put(jax.tree.map(stack, tree), sharding)

  def get(self, tree: Any) -> Any:
    if self.spmd == "shard_map":
      return jax.tree.map(np.asarray, tree)
    return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data)[0], tree)

  def compile(self, fn: Callable[..., Any]) -> Callable[..., Any]:
    if self.spmd == "shard_map":
      # check_vma=False: pmap's semantics. With the check, jax.grad of a
      # device-varying loss w.r.t. replicated params would psum the gradient
      # on its own, and the step's explicit pmean would then give n times it.
      mapped = jax.shard_map(fn, mesh=self.mesh, in_specs=P(), out_specs=P(), check_vma=False)
      return jax.jit(mapped, donate_argnums=0)
    return jax.pmap(fn, axis_name=AXIS, devices=self.devices, donate_argnums=0)


def select_devices(config: Config) -> list[jax.Device]:
  """The first ``config.devices`` local devices (default: all of them)."""
  available = jax.local_devices()
  n = config.devices or len(available)
  if n > len(available):
    raise ConfigError(
        f"--devices {n}: only {len(available)} local {available[0].platform} device(s); on a CPU, "
        f"simulate more with XLA_FLAGS=--xla_force_host_platform_device_count={n}"
    )
  if config.batch_size % n:
    hint = "" if config.devices else " (all local devices; choose fewer with --devices)"
    raise ConfigError(f"--batch-size {config.batch_size} is not divisible by --devices {n}{hint}")
  return available[:n]


def _checkpoints(workdir: pathlib.Path) -> Any:
  import orbax.checkpoint as ocp  # slow to import; only needed here

  options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(workdir.absolute() / "checkpoints", options=options)


def _save(manager: Any, step: int, state: TrainState, meta: dict[str, Any]) -> None:
  import orbax.checkpoint as ocp

  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(jax.tree.map(np.asarray, state)),
      meta=ocp.args.JsonSave(meta)))


def _restore(manager: Any, step: int, like: TrainState) -> TrainState:
  import orbax.checkpoint as ocp

  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  restored = manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract)))
  return jax.tree.map(np.asarray, restored.state)


def _restore_meta(manager: Any, step: int) -> dict[str, Any]:
  import orbax.checkpoint as ocp

  return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta


def _check_resumable(saved: dict[str, Any], now: dict[str, Any], workdir: pathlib.Path) -> None:
  changed = [k for k in saved.keys() | now.keys()
             if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k)]
  if changed:
    raise ConfigError("--resume: the checkpoint in {} was made with different {}".format(
        workdir, ", ".join(f"--{k.replace('_', '-')} ({saved.get(k)!r}, now {now.get(k)!r})"
                           for k in sorted(changed))))


def _fingerprint(dataset: input_pipeline.Dataset) -> str:
  """A short hash of the labels and shapes: a resumed run must see the same data."""
  digest = hashlib.sha256(repr((dataset.train_images.shape, dataset.test_images.shape)).encode())
  for labels in (dataset.train_labels, dataset.test_labels):
    digest.update(np.ascontiguousarray(labels, np.int32).tobytes())
  return digest.hexdigest()[:16]


def _write_atomic(path: pathlib.Path, text: str) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(text)
  tmp.replace(path)  # a killed run never leaves half a file


class RunResult(NamedTuple):
  """What :func:`train_and_evaluate` returns."""

  summary: dict[str, Any]  # the JSON printed last by the CLI
  history: list[dict[str, Any]]  # the records of metrics.jsonl
  state: TrainState  # final state, on the host


class Run(NamedTuple):
  """The pieces of a run, built by :func:`build_run`."""

  par: _Parallel
  state: TrainState  # initial state, on the host
  data: Data  # on the devices
  train_step: Callable[[Any, Data], tuple[Any, dict[str, jax.Array]]]  # compiled
  evaluate: Callable[[Any, Data], tuple[Any, dict[str, jax.Array]]]  # compiled


def build_run(
    config: Config, dataset: input_pipeline.Dataset, prep: Preprocess,
    devices: Sequence[jax.Device],
) -> Run:
  """Initial state, the data on ``devices`` and the compiled step and evaluation."""
  num_train = dataset.train_images.shape[0]
  per_epoch = num_train / (config.batch_size * backprops_per_update(config))
  seed_key = jax.random.PRNGKey(config.seed)
  model = models.create(config.model, axis_name=AXIS)
  tx = make_optimizer(config, per_epoch, jax.random.fold_in(seed_key, 3), devices[0].platform)
  x0 = (dataset.train_images[:1].astype(np.float32) - prep.shift) * prep.scale
  variables = model.init(jax.random.fold_in(seed_key, 0), x0, train=False)
  state = TrainState(
      step=np.zeros((), np.int32), params=variables["params"],
      batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(variables["params"]),
      perm=np.zeros(num_train, np.int32), perm_epoch=np.full((), -1, np.int32))
  par = _Parallel(devices, config.spmd)
  n_test = dataset.test_images.shape[0]
  pad = -n_test % (eval_rows_per_device(len(devices)) * len(devices))
  padded = lambda a: np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)])
  data = par.put(Data(
      dataset.train_images, dataset.train_labels.astype(np.int32),
      padded(dataset.test_images), padded(dataset.test_labels.astype(np.int32)),
      padded(np.ones(n_test, np.float32))))
  return Run(par, jax.tree.map(np.asarray, state), data,
             par.compile(make_train_step(model, tx, config, num_train, prep, seed_key)),
             par.compile(make_evaluate(model, config, num_train, prep)))


def train_and_evaluate(config: Config, workdir: str | os.PathLike[str]) -> RunResult:
  """Trains and evaluates ``config``; writes metrics and checkpoints to ``workdir``.

  Every check (flags, devices, workdir, data) runs before the first step.
  An evaluation (BatchNorm statistics re-estimated, then the test set) runs
  at update 0, every ``eval_every`` effective epochs and at the end; each one
  appends a record to ``metrics.jsonl`` and saves a checkpoint.

  Raises:
    ConfigError: a bad flag, too few devices, or a workdir that already holds
      checkpoints without ``resume``.
    input_pipeline.DataError: a missing or corrupt data file.
    TrainingDiverged: the loss became NaN or Inf (the last good checkpoint is kept).
  """
  start = time.perf_counter()
  config = resolve(config)
  devices = select_devices(config)
  workdir = pathlib.Path(workdir)
  if workdir.exists() and not workdir.is_dir():
    raise ConfigError(f"--workdir {workdir}: exists and is not a directory")
  latest, meta = None, None
  record = dataclasses.asdict(config)
  if (workdir / "checkpoints").is_dir():  # look without creating anything
    existing = _checkpoints(workdir)
    latest = existing.latest_step()
    if latest is not None and not config.resume:
      raise ConfigError(f"--workdir {workdir} already holds checkpoints (newest: update "
                        f"{latest}); pass --resume to continue that run, or choose another "
                        "--workdir")
    if latest is not None:
      meta = _restore_meta(existing, latest)
      _check_resumable(meta["config"], record, workdir)
  dataset, prep = load_data(config)
  _check_dataset(dataset, config)
  fingerprint = _fingerprint(dataset)
  if meta is not None and meta.get("data") != fingerprint:
    raise ConfigError(f"--resume: the checkpoint in {workdir} was trained on other data "
                      f"({meta.get('data')}, now {fingerprint})")
  manager = _checkpoints(workdir)  # the first thing written

  num_train, batch = dataset.train_images.shape[0], config.batch_size
  num_backprops = backprops_per_update(config)
  per_epoch = num_train / (batch * num_backprops)  # updates per effective epoch
  epochs_at = lambda step: step / per_epoch
  total = math.ceil(config.effective_epochs * per_epoch - 1e-9)

  def is_eval(step: int) -> bool:  # the first update at or past each multiple of eval_every
    marks = lambda s: math.floor(s / (config.eval_every * per_epoch) + 1e-9)
    return step == total or marks(step) > marks(step - 1)

  lr = lr_schedule(config, per_epoch)
  run = build_run(config, dataset, prep, devices)
  state, par = run.state, run.par
  history: list[dict[str, Any]] = []
  if latest is not None:
    if latest > total:
      raise ConfigError(f"--effective-epochs {config.effective_epochs}: the checkpoint is already "
                        f"at {epochs_at(latest):.3f} effective epochs")
    state = _restore(manager, latest, state)
    history = meta["history"]
  _write_atomic(workdir / "config.json", json.dumps(record, indent=2) + "\n")
  metrics_path = workdir / "metrics.jsonl"
  _write_atomic(metrics_path, "".join(json.dumps(r) + "\n" for r in history))

  n_test = dataset.test_images.shape[0]
  data, train_step, evaluate = run.data, run.train_step, run.evaluate
  step = int(state.step)
  device_state = par.put(state)

  def checkpoint_note() -> str:
    saved = manager.latest_step()
    if saved is None:
      return "no checkpoint was written"
    return f"the last good checkpoint is {manager.directory / str(saved)} (update {saved})"

  sums = [0.0, 0.0, 0]  # train loss, error, updates since the last evaluation
  timer = {"t0": None, "steps": 0}  # for backprops/s

  def evaluation():
    nonlocal device_state
    began = time.perf_counter()
    device_state, totals = evaluate(device_state, data)
    totals = par.get(totals)
    val = {"val_loss": float(totals["loss"]) / n_test,
           "val_error": 100 * round(float(totals["wrong"])) / n_test}
    if not math.isfinite(val["val_loss"]):
      raise TrainingDiverged(f"validation loss is {val['val_loss']} after update {step} "
                             f"(effective epoch {epochs_at(step):.3f}); stopped: {checkpoint_note()}")
    history.append({
        "step": step, "backprops": step * num_backprops,
        "effective_epochs": round(epochs_at(step), 6), "lr": float(f"{float(lr(max(step - 1, 0))):.7g}"),
        "train_loss": sums[0] / sums[2] if sums[2] else None,
        "train_error": 100 * sums[1] / sums[2] if sums[2] else None,
        **val,
    })
    sums[:] = [0.0, 0.0, 0]
    _save(manager, step, par.get(device_state),
          {"config": record, "data": fingerprint, "history": history})
    _write_atomic(metrics_path, "".join(json.dumps(r) + "\n" for r in history))
    if timer["t0"] is not None:
      timer["t0"] += time.perf_counter() - began  # backprops/s counts training only

  from tqdm import tqdm  # the CLI's dependency, not the library's

  bar = tqdm(total=round(epochs_at(total), 2), initial=round(epochs_at(step), 2),
             disable=not config.progress, file=sys.stderr, mininterval=0.5,
             bar_format="{percentage:3.0f}%|{bar}| {n:.2f}/{total:.2f} effective epochs "
                        "[{elapsed}<{remaining}{postfix}]")

  def log(done: int, metrics: dict[str, jax.Array]) -> None:
    loss, error = (float(v) for v in par.get((metrics["loss"], metrics["error"])))
    if not math.isfinite(loss):
      raise TrainingDiverged(f"loss is {loss} at update {done} (effective epoch "
                             f"{epochs_at(done):.3f}); stopped: {checkpoint_note()}")
    sums[0] += loss
    sums[1] += error
    sums[2] += 1
    now = time.perf_counter()
    if timer["t0"] is None:
      timer["t0"] = now  # after the first (compiling) update
    else:
      timer["steps"] += 1
    rate = timer["steps"] * num_backprops / max(now - timer["t0"], 1e-9)
    bar.n = round(epochs_at(done), 2)
    bar.set_postfix_str(f"loss={loss:.4f} err={100 * error:.2f}% {rate:.0f} backprops/s",
                        refresh=False)
    bar.update(0)

  try:
    if not history:
      evaluation()  # the starting point of the curves, and a first checkpoint
    pending = None
    while step < total:
      device_state, metrics = train_step(device_state, data)
      step += 1
      if pending is not None:
        log(*pending)  # one update late, so the host never waits for the device
      pending = (step, metrics)
      if is_eval(step):
        log(*pending)
        pending = None
        evaluation()
  finally:
    bar.close()
    manager.close()

  last = history[-1]
  summary = {
      "model": config.model, "optimizer": config.optimizer, "seed": config.seed,
      "val_error": last["val_error"], "val_loss": last["val_loss"],
      "effective_epochs": last["effective_epochs"], "backprops": last["backprops"],
      "updates": last["step"], "devices": len(devices),
      "wall_s": round(time.perf_counter() - start, 3), "workdir": str(workdir),
  }
  return RunResult(summary, history, par.get(device_state))


# ----------------------------------------------------------------------------
# Command line


def _per_model(table: dict[str, float]) -> str:
  return ", ".join(f"{v:g} ({k})" for k, v in table.items())


def build_parser() -> argparse.ArgumentParser:
  """The flags of train.py; ``--help`` gives each one's default."""
  parser = argparse.ArgumentParser(
      prog="train.py", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="Default budgets (paper Table 1, effective epochs): " + ", ".join(
          f"{m}/{o} {b}" for (m, o), b in PAPER_BUDGET.items()))
  add = parser.add_argument
  add("--model", default="mnistfc", choices=sorted(models.REGISTRY),
      help="network (default: %(default)s); mnistfc and lenet train on MNIST, allcnn on CIFAR-10")
  add("--optimizer", default="entropy-sgd", choices=OPTIMIZERS,
      help="algorithm of paper Table 1 (default: %(default)s)")
  add("--effective-epochs", type=float, metavar="E",
      help="budget: backprops * batch_size / N_train (default: the paper's Table 1 budget of the "
           "model and optimizer, e.g. 120 for mnistfc/entropy-sgd; see below)")
  add("--batch-size", type=int, default=128, metavar="B",
      help="global minibatch, split across devices (default: %(default)s)")
  add("--lr", type=float, default=LR, help="outer learning rate (default: %(default)s)")
  add("--lr-schedule", metavar="E:LR,...",
      help="piecewise constant: from effective epoch E on use LR, e.g. '60:0.02,120:0.004'; "
           "'none' keeps --lr (default: --lr divided by 5 every 60 effective epochs, the paper's "
           "'/5 every 3 epochs' of Entropy-SGD with L = 20)")
  add("--gamma", type=float,
      help=f"entropy-sgd, hj: coupling strength gamma0 (default: {_per_model(GAMMA)})")
  add("--scoping", type=float,
      help="entropy-sgd, hj: gamma grows by a factor 1 + SCOPING per update, up to "
           "1 / inner_lr (beyond 2 / inner_lr the inner loop diverges); heat: sigma^2 "
           f"shrinks by it; 0 turns scoping off (default: {_per_model(SCOPING)})")
  add("--inner-steps", type=int, metavar="L",
      help="entropy-sgd, hj: backprops per update, the inner loop length (default: "
           f"{OPTIMIZER_DEFAULTS['entropy-sgd']['inner_steps']} entropy-sgd, "
           f"{OPTIMIZER_DEFAULTS['hj']['inner_steps']} hj)")
  add("--inner-lr", type=float,
      help=f"entropy-sgd, hj: inner step size (default: "
           f"{OPTIMIZER_DEFAULTS['entropy-sgd']['inner_lr']} entropy-sgd, "
           f"{OPTIMIZER_DEFAULTS['hj']['inner_lr']} hj)")
  add("--noise", type=float,
      help="entropy-sgd: Langevin noise scale, temperature noise^2 "
           f"(default: {OPTIMIZER_DEFAULTS['entropy-sgd']['noise']:g})")
  add("--alpha", type=float,
      help="entropy-sgd: averaging of the inner iterates "
           f"(default: {OPTIMIZER_DEFAULTS['entropy-sgd']['alpha']})")
  add("--sigma", type=float,
      help=f"heat: perturbation scale, sigma^2 is the paper's gamma "
           f"(default: {OPTIMIZER_DEFAULTS['heat']['sigma']:g})")
  add("--samples", type=int,
      help=f"heat: backprops (perturbations) per update (default: "
           f"{OPTIMIZER_DEFAULTS['heat']['samples']})")
  add("--unroll", type=int, metavar="K",
      help="entropy-sgd, hj, heat: inner-loop iterations per compiled loop body (default: the "
           "whole loop for lenet and allcnn on CPU, where XLA runs convolutions in loop bodies "
           "3-4x slower, jax-ml/jax#12868; otherwise 1, so compile time does not grow with L)")
  add("--momentum", type=float, default=0.9,
      help="Nesterov momentum of the outer update (default: %(default)s)")
  add("--weight-decay", type=float,
      help="L2 coefficient; inside the inner loop for entropy-sgd and hj "
           f"(default: {_per_model(WEIGHT_DECAY)})")
  add("--seed", type=int, default=0, help="seed of the initialisation, data order, dropout "
      "and noise (default: %(default)s)")
  add("--data-dir", metavar="DIR",
      help="mnistfc, lenet: a directory of the four IDX files (default: the bundled MNIST); "
           "allcnn: a cifar-10-batches-bin directory, or 'tfds' (default: none, required)")
  add("--workdir", metavar="DIR",
      help="receives config.json, metrics.jsonl and checkpoints/ "
           "(default: runs/MODEL-OPTIMIZER-seedSEED-TIMESTAMP-PID)")
  add("--resume", action="store_true",
      help="continue from the newest checkpoint in --workdir up to --effective-epochs "
           "(starts afresh if there is none) (default: off)")
  add("--devices", type=int, metavar="N",
      help="number of local devices the batch is split over (default: all)")
  add("--eval-every", type=float, default=EVAL_EVERY, metavar="E",
      help="evaluate and checkpoint every E effective epochs, and at the end "
           "(default: %(default)s)")
  add("--input-scaling", default="raw", choices=INPUT_SCALINGS,
      help="MNIST pixels: raw 0..255 as the paper ('no pre-processing'), or centered "
           "(x - 126) / 126 as the authors' Lua code (default: %(default)s)")
  add("--spmd", default="pmap", choices=SPMD,
      help="run the per-device step under jax.pmap or jax.shard_map (default: %(default)s)")
  add("--no-progress", dest="progress", action="store_false",
      help="no progress bar on stderr (default: shown)")
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  """Parses flags, trains, prints the JSON summary as the last stdout line."""
  parser = build_parser()
  args = vars(parser.parse_args(argv))
  workdir = args.pop("workdir")
  if workdir is None:
    if args["resume"]:
      parser.error("--resume needs --workdir (the run to continue)")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = f"runs/{args['model']}-{args['optimizer']}-seed{args['seed']}-{stamp}-{os.getpid()}"
  try:
    config = resolve(Config(**args))
    result = train_and_evaluate(config, workdir)
  except (ConfigError, input_pipeline.DataError) as e:
    parser.error(str(e))
  except TrainingDiverged as e:
    print(f"train.py: {e}", file=sys.stderr)
    return 1
  print(json.dumps(result.summary), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
