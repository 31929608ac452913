"""Device placement: the per-device functions under ``jax.pmap`` or ``jax.shard_map``."""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

# The device axis every per-device function, collective and optimizer uses.
AXIS = "batch"


class Parallel:
  """Replicates trees on ``devices`` and maps per-device functions over them.

  ``"pmap"`` stacks a copy per device along a leading axis; ``"shard_map"``
  keeps one replicated global array. The per-device functions are the same
  under both (tested equal).
  """

  def __init__(self, devices: Sequence[jax.Device], spmd: str):
    if spmd not in ("pmap", "shard_map"):
      raise ValueError(f"spmd={spmd!r}: must be 'pmap' or 'shard_map'")
    self.devices, self.spmd = list(devices), spmd
    self.mesh = Mesh(np.array(self.devices), (AXIS,))

  def put(self, tree: Any) -> Any:
    """A copy of the host ``tree`` on every device."""
    if self.spmd == "shard_map":
      return jax.device_put(tree, NamedSharding(self.mesh, P()))
    n, sharding = len(self.devices), NamedSharding(self.mesh, P(AXIS))
    stack = lambda x: np.broadcast_to(np.asarray(x), (n, *np.shape(x)))
    return jax.device_put(jax.tree.map(stack, tree), sharding)

  def get(self, tree: Any) -> Any:
    """The first device's copy of a replicated ``tree``, as NumPy arrays."""
    if self.spmd == "shard_map":
      return jax.tree.map(np.asarray, tree)
    return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data)[0], tree)

  def map(self, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn(state, data)`` run on every device with :data:`AXIS` bound; jitted,
    and its first argument donated."""
    if self.spmd == "shard_map":
      # check_vma=False: pmap's semantics. With the check, jax.grad of a
      # device-varying loss w.r.t. replicated params would psum the gradient
      # on its own, and the step's explicit pmean would then give n times it.
      mapped = jax.shard_map(fn, mesh=self.mesh, in_specs=P(), out_specs=P(), check_vma=False)
      return jax.jit(mapped, donate_argnums=0)
    return jax.pmap(fn, axis_name=AXIS, devices=self.devices, donate_argnums=0)


def run_devices(count: int) -> list[jax.Device]:
  """The first ``count`` devices of the run, every process's (``training.config``
  checked the count)."""
  return jax.devices()[:count]


def initialize_processes(coordinator: str, num_processes: int, process_id: int,
                         heartbeat_timeout_s: int = 100) -> None:
  """Joins a multi-process run (``jax.distributed.initialize``), before any JAX computation.

  Every process then sees every process's devices (``jax.devices()``) and
  the step's collectives span them all (on CPUs through gloo). A process
  that stops sending heartbeats for ``heartbeat_timeout_s`` seconds makes the
  coordination service stop the others with an error.
  """
  if not 0 <= process_id < num_processes:
    raise ValueError(f"--process-id {process_id}: must be in 0 .. {num_processes - 1}")
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                             process_id=process_id, initialization_timeout=120,
                             heartbeat_timeout_seconds=heartbeat_timeout_s)
