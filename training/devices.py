"""Device placement: the per-device functions under ``jax.pmap`` or ``jax.shard_map``."""

import atexit
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, NoReturn

import jax
import numpy as np
from jax._src import distributed
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
  that dies stops the others within about ``heartbeat_timeout_s`` seconds:
  the coordination service ends the other processes when process 0 dies, and
  :func:`watch_processes` ends process 0 when another one dies (without it,
  process 0 would wait in its next collective for ever).
  """
  if not 0 <= process_id < num_processes:
    raise ValueError(f"--process-id {process_id}: must be in 0 .. {num_processes - 1}")
  if heartbeat_timeout_s < 1:
    raise ValueError(f"--heartbeat-timeout {heartbeat_timeout_s}: must be >= 1 second")
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                             process_id=process_id, initialization_timeout=120,
                             heartbeat_timeout_seconds=heartbeat_timeout_s)
  watch_processes(num_processes, heartbeat_timeout_s)


class _Watch(NamedTuple):
  num_processes: int
  heartbeat_timeout_s: int
  stop: threading.Event


_watch: _Watch | None = None  # set by watch_processes


def _dead_processes() -> tuple[str, str] | None:
  """(which processes, why) when the coordination service misses one; else None."""
  assert _watch is not None
  everyone = list(range(_watch.num_processes))
  try:
    live = distributed.global_state.client.get_live_nodes(everyone)
  except Exception as e:  # noqa: BLE001: the coordinator is gone
    return "0 (the coordinator)", f"{type(e).__name__}: {e}"
  dead = ", ".join(str(p) for p in everyone if p not in live)
  return (dead, f"no heartbeat for {_watch.heartbeat_timeout_s} s") if dead else None


def _exit_dead(dead: tuple[str, str]) -> NoReturn:
  assert _watch is not None
  print(f"train.py: process {dead[0]} of {_watch.num_processes} stopped ({dead[1]}); stopping "
        f"process {jax.process_index()} too. Rerun every process with --resume to continue "
        "from the newest checkpoint.", file=sys.stderr, flush=True)
  # Not sys.exit: jax's exit-time shutdown barrier would wait for the dead one, then abort.
  os._exit(1)


def watch_processes(num_processes: int, heartbeat_timeout_s: int,
                    period_s: float = 1.0) -> None:
  """Ends this process, with an error on stderr, once another process is dead.

  A daemon thread asks the coordination service every ``period_s`` seconds
  which processes still send heartbeats; it reports at most about
  ``heartbeat_timeout_s`` seconds after a process died. The main thread may
  be blocked in a collective that will never complete, so the thread ends
  the process with ``os._exit(1)``: checkpoints are written atomically, and
  the newest complete one stays for ``--resume``. The watch stops at exit,
  before jax's own shutdown.
  """
  global _watch
  client = distributed.global_state.client
  if not hasattr(client, "get_live_nodes"):  # jaxlib before 0.4.36
    print(f"train.py: jaxlib {jax.lib.__version__} cannot list live processes: if one dies, "
          "the others may wait for ever", file=sys.stderr)
    return
  _watch = _Watch(num_processes, heartbeat_timeout_s, threading.Event())

  def watch() -> None:
    while not _watch.stop.wait(period_s):
      dead = _dead_processes()
      if dead and not _watch.stop.is_set():  # not while the run ends normally
        _exit_dead(dead)

  threading.Thread(target=watch, name="entropix-process-watch", daemon=True).start()
  atexit.register(_watch.stop.set)  # runs before jax.distributed's shutdown (registered earlier)


def exit_if_a_process_died() -> None:
  """After an error in a multi-process run: ends this process with the watch's
  message when another process died (a collective with a dead peer fails
  before the coordination service notices: wait for it); returns otherwise."""
  if _watch is None:
    return
  deadline = time.monotonic() + _watch.heartbeat_timeout_s + 5
  while time.monotonic() < deadline:
    dead = _dead_processes()
    if dead:
      _exit_dead(dead)
    time.sleep(0.5)
