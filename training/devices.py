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
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

# The device axis every per-device function, collective and optimizer uses.
AXIS = "batch"
# The replica axis of elastic-sgd and parle: each replica holds its own
# parameters on devices / replicas devices, data parallel along AXIS.
REPLICA_AXIS = "replica"


class Parallel:
  """Places trees on ``devices`` and maps per-device functions over them.

  Without ``replicas``, every device holds the same training state:
  ``"pmap"`` stacks a copy per device along a leading axis, ``"shard_map"``
  keeps one replicated global array (the per-device functions are the same
  under both; tested equal). With ``replicas`` (``"shard_map"`` only), the
  devices form a ``replicas x (devices / replicas)`` mesh of axes
  (:data:`REPLICA_AXIS`, :data:`AXIS`): the state has a leading replica axis
  and replica r's slice lives on row r of the mesh; the per-device function
  sees its own replica's state, without that axis.
  """

  def __init__(self, devices: Sequence[jax.Device], spmd: str, replicas: int | None = None):
    if spmd not in ("pmap", "shard_map"):
      raise ValueError(f"spmd={spmd!r}: must be 'pmap' or 'shard_map'")
    self.devices, self.spmd, self.replicas = list(devices), spmd, replicas
    if replicas is None:
      self.mesh = Mesh(np.array(self.devices), (AXIS,))
      return
    if spmd != "shard_map" or len(self.devices) % replicas:
      raise ValueError(f"replicas={replicas} needs spmd='shard_map' and a multiple of "
                       f"{replicas} devices (spmd={spmd!r}, {len(self.devices)} devices)")
    grid = np.array(self.devices).reshape(replicas, len(self.devices) // replicas)
    self.mesh = Mesh(grid, (REPLICA_AXIS, AXIS))

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
      return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data), tree)
    return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data)[0], tree)

  def put_state(self, tree: Any) -> Any:
    """The training state on the devices: replicated, or with replicas its
    leading axis split over the replica rows."""
    if self.replicas is None:
      return self.put(tree)
    return jax.device_put(tree, NamedSharding(self.mesh, P(REPLICA_AXIS)))

  def get_state(self, tree: Any) -> Any:
    """The host copy of what :meth:`put_state` placed or a mapped function
    returned (with replicas: every replica's, gathered from all processes)."""
    if self.replicas is None:
      return self.get(tree)
    if jax.process_count() > 1:
      return multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, tree)

  def map(self, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn(state, data)`` run on every device with the mesh's axes bound; jitted,
    and its first argument donated. With replicas, ``fn`` gets its replica's
    state and every output gains a leading replica axis."""
    if self.replicas is not None:
      def per_replica(state, data):
        out = fn(jax.tree.map(lambda x: x[0], state), data)
        return jax.tree.map(lambda x: x[None], out)

      mapped = jax.shard_map(per_replica, mesh=self.mesh, in_specs=(P(REPLICA_AXIS), P()),
                             out_specs=P(REPLICA_AXIS), check_vma=False)
      return jax.jit(mapped, donate_argnums=0)
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


def check_process_flags(coordinator: str, num_processes: int | None, process_id: int | None,
                        heartbeat_timeout_s: int) -> None:
  """Raises ValueError naming the flag when :func:`initialize_processes` would refuse them."""
  if heartbeat_timeout_s < 1:
    raise ValueError(f"--heartbeat-timeout {heartbeat_timeout_s}: must be >= 1 second")
  if coordinator == "auto":
    if num_processes is not None or process_id is not None:
      raise ValueError("--coordinator auto finds --num-processes and --process-id itself: "
                       "leave them (and $JAX_NUM_PROCESSES, $JAX_PROCESS_ID) out")
    return
  if num_processes is None or process_id is None:
    raise ValueError("--coordinator needs --num-processes and --process-id")
  if not 0 <= process_id < num_processes:
    raise ValueError(f"--process-id {process_id}: must be in 0 .. {num_processes - 1}")


def initialize_processes(coordinator: str, num_processes: int | None, process_id: int | None,
                         heartbeat_timeout_s: int = 100) -> None:
  """Joins a multi-process run (``jax.distributed.initialize``), before any JAX computation.

  ``coordinator="auto"`` (with no count or id) lets jax find all three in a
  cluster it knows (Cloud TPU, Slurm, Open MPI, Kubernetes...).
  Every process then sees every process's devices (``jax.devices()``) and
  the step's collectives span them all (on CPUs through gloo). A process
  that dies stops the others within about ``heartbeat_timeout_s`` seconds:
  the coordination service ends the other processes when process 0 dies, and
  :func:`watch_processes` ends process 0 when another one dies (without it,
  process 0 would wait in its next collective for ever).

  Raises:
    ValueError: naming the flag, for a bad id or timeout, or an ``auto``
      outside a cluster that jax recognises.
  """
  check_process_flags(coordinator, num_processes, process_id, heartbeat_timeout_s)
  if coordinator == "auto":
    try:
      jax.distributed.initialize(initialization_timeout=120,
                                 heartbeat_timeout_seconds=heartbeat_timeout_s)
    except (ValueError, RuntimeError) as e:
      raise ValueError(f"--coordinator auto: jax found no cluster to join ({e}); pass "
                       "--coordinator HOST:PORT --num-processes N --process-id I") from None
  else:
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id, initialization_timeout=120,
                               heartbeat_timeout_seconds=heartbeat_timeout_s)
  watch_processes(jax.process_count(), heartbeat_timeout_s)


def join_processes(coordinator: str | None, num_processes: int | str | None,
                   process_id: int | str | None, heartbeat_timeout: int,
                   workdir: str | None) -> None:
  """train.py's process flags: joins a multi-process run when ``coordinator``
  is given (:func:`initialize_processes`), else checks that no other process
  flag is. ``num_processes`` and ``process_id`` may be strings (from the
  environment).

  Raises:
    ValueError: naming the flag, for flags :func:`initialize_processes`
      refuses, or several processes without a ``workdir`` to share.
  """
  if coordinator is None:
    if num_processes is not None or process_id is not None:
      raise ValueError("--num-processes and --process-id need --coordinator")
    return
  number = lambda v: None if v is None else int(v)
  flags = (coordinator, number(num_processes), number(process_id), heartbeat_timeout)
  check_process_flags(*flags)
  if workdir is None:
    raise ValueError("several processes need --workdir (the same for all)")
  initialize_processes(*flags)


class _Watch(NamedTuple):
  num_processes: int
  heartbeat_timeout_s: int
  stop: threading.Event


_watch: _Watch | None = None  # set by watch_processes


_unreachable_since: list[float] = []  # when asking the coordinator first failed, if it does
# The watch thread and exit_if_a_process_died both ask; live_devices keeps
# the answer it compares the next one with, so one question at a time.
_asking = threading.Lock()


def _dead_processes() -> tuple[str, str] | None:
  """(which processes, why) when the coordination service misses one, or has
  not answered for the heartbeat timeout; else None."""
  assert _watch is not None
  dead: set[int] = set()
  try:
    # Yields the devices live at the last question; on leaving, raises
    # ProcessFailureError for those whose process died (or restarted) since.
    with _asking, multihost_utils.live_devices(jax.devices()) as live:
      dead = set(range(_watch.num_processes)) - {d.process_index for d in live}
  except multihost_utils.ProcessFailureError as e:
    dead |= {d.process_index for d in e.failed_devices}
  except Exception as e:  # noqa: BLE001: the coordinator is gone, or one RPC failed
    if not _unreachable_since:
      _unreachable_since.append(time.monotonic())
    if time.monotonic() - _unreachable_since[0] < _watch.heartbeat_timeout_s:
      return None  # a passing failure is not a death
    return "0 (the coordinator)", f"{type(e).__name__}: {e}"
  _unreachable_since.clear()
  dead_ids = ", ".join(str(p) for p in sorted(dead))
  return (dead_ids, f"no heartbeat for {_watch.heartbeat_timeout_s} s") if dead else None


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
  print(f"train.py: process {jax.process_index()} failed; checking for up to "
        f"{_watch.heartbeat_timeout_s + 5} s whether another process died first",
        file=sys.stderr, flush=True)
  deadline = time.monotonic() + _watch.heartbeat_timeout_s + 5
  while time.monotonic() < deadline:
    dead = _dead_processes()
    if dead:
      _exit_dead(dead)
    time.sleep(0.5)
