"""The per-device training step and evaluation, run under pmap or shard_map.

Every function here runs on each device with the device axis
:data:`training.devices.AXIS` bound. Each device holds the whole training
set; the global minibatch is drawn inside the compiled step and device d of
n takes columns ``d * B/n ...`` of it, so 1 and n devices see the same
examples in the same order.
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import entropix.linen

from input_pipeline import Scaling
from training import streams
from training.config import Config
from training.devices import AXIS, REPLICA_AXIS


class TrainState(NamedTuple):
  """Replicated training state; ``perm`` is the example order of ``perm_epoch``."""

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  perm: jax.Array
  perm_epoch: jax.Array


class DeviceData(NamedTuple):
  """Arrays that live on every device, stored as loaded; scaled inside the step."""

  train_x: jax.Array
  train_y: jax.Array
  test_x: jax.Array
  test_y: jax.Array
  test_weight: jax.Array  # 1 for real test examples, 0 for padding


# draw(perm, perm_epoch, first) -> ((perm, perm_epoch), rows): a run's minibatches
# (entropix's ``sampler`` is something else, the law of its noise).
BatchDrawer = Callable[[jax.Array, jax.Array, jax.Array],
                       tuple[tuple[jax.Array, jax.Array], jax.Array]]


def make_batch_sampler(config: Config, num_train: int, data_key: jax.Array) -> BatchDrawer:
  """``draw(perm, perm_epoch, first) -> ((perm, perm_epoch), rows)``: L minibatches.

  Minibatch j (counted over the whole run) is rows ``(j mod E) * B ...`` of
  the permutation of epoch ``j // E``, E = N // B minibatches per epoch (the
  N mod B left-over examples change every epoch). ``rows`` is int32[L, B];
  ``perm`` caches the permutation of ``perm_epoch`` so a new one is drawn
  once per epoch, not per minibatch.
  """
  batch, batches_per_epoch = config.batch_size, num_train // config.batch_size

  def draw(perm, perm_epoch, first):
    def one(carry, i):
      perm, epoch = carry
      j = first + i
      new_epoch = j // batches_per_epoch
      perm = lax.cond(
          new_epoch != epoch,
          lambda: jax.random.permutation(jax.random.fold_in(data_key, new_epoch), num_train),
          lambda: perm,
      )
      rows = lax.dynamic_slice_in_dim(perm, (j % batches_per_epoch) * batch, batch)
      return (perm, new_epoch), rows

    return lax.scan(one, (perm, perm_epoch), jnp.arange(config.optimizer.minibatches_per_update))

  return draw


def draw_device_rows(
    draw: BatchDrawer, state: TrainState, config: Config
) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
  """Per device: the new (perm, perm_epoch) and this device's rows, int32[L, B / n]
  (n devices along :data:`AXIS`: a replica's devices, with replicas)."""
  device, devices = lax.axis_index(AXIS), lax.axis_size(AXIS)
  local = config.batch_size // devices
  first = state.step * config.optimizer.minibatches_per_update
  carry, rows = draw(state.perm, state.perm_epoch, first)
  return carry, lax.dynamic_slice_in_dim(rows, device * local, local, axis=1)


# step(state, data, keys) -> (state, metrics): one update, ``keys`` the run's
# streams.seed_keys.
TrainStep = Callable[[TrainState, DeviceData, jax.Array], tuple[TrainState, dict[str, jax.Array]]]


def make_train_step(
    model: Any, tx: optax.GradientTransformationExtraArgs, config: Config,
    num_train: int, scaling: Scaling,
) -> TrainStep:
  """The per-device update: draws L minibatches on the device, then one update.

  ``keys`` (:func:`training.streams.seed_keys`) give this device's replica
  its data order and dropout (:mod:`training.streams`): the step depends on
  the seed through them alone (the optimizer's own stream is in
  ``state.opt_state``). Minibatch j's dropout key is ``fold_in(dropout, j)``,
  the same on every device of a replica; the
  returned loss and error are those of minibatch 0 at x (with replicas: each
  replica's own).
  """
  optimizer = config.optimizer  # its declaration: what it needs of the step
  minibatches = optimizer.minibatches_per_update

  def step(state, data, keys):
    keys = jnp.asarray(keys)
    key = keys[lax.axis_index(REPLICA_AXIS)] if optimizer.replicated else keys[0]
    run_streams = streams.of(key)
    draw = make_batch_sampler(config, num_train, run_streams.data)
    dropout_key = run_streams.dropout
    first = state.step * minibatches
    (perm, perm_epoch), rows = draw_device_rows(draw, state, config)

    def loss_fn(params, i):
      x, y = scaling(data.train_x[rows[i]]), data.train_y[rows[i]]
      logits, _ = model.apply(
          {"params": params, "batch_stats": state.batch_stats}, x, train=True,
          rngs={"dropout": jax.random.fold_in(dropout_key, first + i)}, mutable=["batch_stats"],
      )
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      return loss, jnp.mean(jnp.argmax(logits, -1) != y)

    grad_fn = lambda params, i: jax.grad(loss_fn, has_aux=True)(params, i)[0]
    if not optimizer.gradient_at_x:
      # HEAT evaluates gradients only at perturbed points; the loss at x is
      # one forward pass for the record.
      loss, error = loss_fn(state.params, 0)
      grads = optax.tree.zeros_like(state.params)
    else:
      (loss, error), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, 0)
      if not optimizer.averages_gradients and lax.psum(1, AXIS) > 1:  # the device count
        # entropix's transforms average through axis_name; on one device the
        # mean is the gradient, but XLA would copy it through an all-reduce.
        grads = lax.pmean(grads, AXIS)
    updates, opt_state = tx.update(grads, state.opt_state, state.params, grad_fn=grad_fn)
    params = optax.apply_updates(state.params, updates)
    new = state._replace(step=state.step + 1, params=params, opt_state=opt_state,
                         perm=perm, perm_epoch=perm_epoch)
    # The record's loss: over the devices and, with replicas, over them too,
    # so that the host reads one value without gathering across processes.
    axes = (AXIS, REPLICA_AXIS) if optimizer.replicated else AXIS
    out = lax.pmean({"loss": loss, "error": error}, axes)
    return new, {**out, **skipped_updates(opt_state, axes)}

  return step


def over_members(step: TrainStep | Sequence[TrainStep], keys: np.ndarray, vmap: bool = True
                 ) -> Callable[[Any, DeviceData], tuple[Any, Any]]:
  """The steps of several runs (seeds, hyper-parameters) as one program,
  ``keys`` uint32[members, replicas, 2] their seed keys (with ``vmap``, any
  tree of arrays with a leading member axis, each member's part given to
  ``step`` in place of its keys).

  ``vmap``: the members' states are stacked along a leading axis and ``step``
  (one for all) is ``jax.vmap``-ed over it, which an accelerator runs as
  wider kernels. Otherwise the state is a tuple of the members' states and
  ``step`` a sequence, member i's step: the program holds each, compiled as
  a run of its own and run one after another (on a CPU a batched weight
  gradient comes out of its matmul transposed, and the update then reads it
  across the cache lines: 1.6x slower for SGD).
  The members move in lockstep, so their update count and the epoch of their
  cached permutation are one number, taken from member 0 outside the vmap:
  the once-an-epoch permutation stays a ``lax.cond`` (with a batched
  predicate it would become a select that permutes the training set for
  every minibatch).
  """
  keys = jax.tree.map(np.asarray, keys)
  if not vmap:
    def members(states, data):
      results, done = [], ()
      for state, k, step_i in zip(states, keys, step):
        # One member after another: run side by side, their working sets
        # evict each other's from the cache (LeNet's patches: 1.5x slower).
        state, _ = lax.optimization_barrier((state, done))
        # A conditional of its own, always taken: XLA fuses nothing across
        # members (with LeNet's SGD step it did, and the second ran slower).
        take = lambda s, k=k, step_i=step_i: step_i(s, data, k)
        shapes = jax.eval_shape(take, state)[1]
        skip = lambda s, shapes=shapes: (
            s, jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes))
        results.append(lax.cond(state.step >= 0, take, skip, state))
        done = results[-1]
      return tuple(r[0] for r in results), tuple(r[1] for r in results)

    return members

  def group(state, data):
    count, epoch = state.step[0], state.perm_epoch[0]

    def one(member, member_keys):
      return step(member._replace(step=count, perm_epoch=epoch), data, member_keys)

    return jax.vmap(one)(state, jax.tree.map(jnp.asarray, keys))

  return group


def skipped_updates(opt_state: Any, axes: Any) -> dict[str, jax.Array]:
  """The updates entropix's optimizers skipped as not finite: in all and in a row
  (the most of any replica); nothing for an optimizer that never skips (SGD)."""
  counts = {"skipped": optax.tree.get(opt_state, "total_notfinite"),
            "skipped_in_a_row": optax.tree.get(opt_state, "notfinite_count")}
  if counts["skipped"] is None:
    return {}
  return lax.pmax(counts, axes)


def eval_rows_per_device(devices: int, eval_batch: int) -> int:
  """Test examples per device per evaluation batch (``eval_batch`` split evenly)."""
  return -(-eval_batch // devices)


def make_evaluate(
    model: Any, config: Config, num_train: int, scaling: Scaling, eval_batch: int
) -> Callable[[TrainState, DeviceData], tuple[TrainState, dict[str, jax.Array]]]:
  """Per-device evaluation: BatchNorm statistics from the training set, then the test set.

  The statistics are the mean over the N // B training minibatches (in
  order, train mode, dropout off) of each minibatch's mean and variance:
  what BatchNorm normalised with during training, averaged. Returns the
  state with those statistics and the summed test loss and error count
  (``data.test_x`` is padded to whole batches; padding has weight 0).
  With replicas, ``loss`` and ``wrong`` are those of the replicas' average
  (its own statistics, re-estimated the same way), ``replica_loss`` and
  ``replica_wrong`` each replica's own.
  """
  batch, batches = config.batch_size, num_train // config.batch_size

  def test(params, batch_stats, data):
    """(statistics, summed test loss, error count) of ``params``, over AXIS."""
    device, devices = lax.axis_index(AXIS), lax.axis_size(AXIS)
    local = batch // devices

    def train_mode(variables, k):  # minibatch k of the training set, dropout off
      rows = k * batch + device * local + jnp.arange(local)
      return model.apply(variables, scaling(data.train_x[rows]), train=True, dropout=False,
                         mutable=["batch_stats"])

    stats = entropix.linen.recompute_batch_stats(
        train_mode, {"params": params, "batch_stats": batch_stats}, jnp.arange(batches))

    per_device = eval_rows_per_device(devices, eval_batch)
    test_batches = data.test_x.shape[0] // (per_device * devices)

    def test_batch(_, k):
      rows = k * per_device * devices + device * per_device + jnp.arange(per_device)
      logits = model.apply({"params": params, "batch_stats": stats},
                           scaling(data.test_x[rows]), train=False)
      y, w = data.test_y[rows], data.test_weight[rows]
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
      wrong = (jnp.argmax(logits, -1) != y).astype(jnp.float32)
      return None, (jnp.sum(w * loss), jnp.sum(w * wrong))

    # Per-batch sums as scan outputs: a carry would mix device-invariant
    # zeros with device-varying sums, which shard_map's type check refuses.
    _, (loss, wrong) = lax.scan(test_batch, None, jnp.arange(test_batches))
    # Sums, divided on the host: the error is an exact count.
    return stats, lax.psum(jnp.sum(loss), AXIS), lax.psum(jnp.sum(wrong), AXIS)

  def evaluate(state, data):
    params = config.optimizer.evaluated_params(state.params, state.opt_state)
    stats, loss, wrong = test(params, state.batch_stats, data)
    totals = {"loss": loss, "wrong": wrong}
    if config.optimizer.replicated:
      average = lax.pmean(state.params, REPLICA_AXIS)
      _, avg_loss, avg_wrong = test(average, state.batch_stats, data)
      totals = {"loss": avg_loss, "wrong": avg_wrong, "replica_loss": loss,
                "replica_wrong": wrong}
    return state._replace(batch_stats=stats), totals

  return evaluate
