"""What an optimizer declaration is: its hyper-parameters, its needs, its factory.

A declaration is a frozen dataclass whose fields are the optimizer's own
hyper-parameters, each made with :func:`hyper` from a :class:`Hyper` (type,
range, help, whether runs of one program may differ in it and whether a
vmapped step takes it as a traced value), and whose class attributes say
what the training step must give it (:class:`Optimizer`). The flags,
``--help``, the range checks, the sweep and vmap sets and the recipes page
are derived from the declarations in :data:`training.optimizers.REGISTRY`.
"""

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, NamedTuple

import jax
import optax


class ConfigError(ValueError):
  """A flag or config value is invalid; raised before any work starts."""


def flag(name: str) -> str:
  """The command-line spelling of a setting: ``inner_lr`` -> ``--inner-lr``."""
  return "--" + name.replace("_", "-")


class Range(NamedTuple):
  """A value's range: ``test(value)``, and what it must be, for the error."""

  test: Callable[[float], bool]
  want: str


POSITIVE = Range(lambda v: v > 0, "> 0")
NON_NEGATIVE = Range(lambda v: v >= 0, ">= 0")
FRACTION = Range(lambda v: 0 <= v < 1, "in [0, 1)")
UNIT = Range(lambda v: 0 < v <= 1, "in (0, 1]")
AT_LEAST_ONE = Range(lambda v: v >= 1, ">= 1")


@dataclasses.dataclass(frozen=True)
class Hyper:
  """One hyper-parameter, declared once: its flag, ``--help``, range and roles.

  Attributes:
    help: what it is, for ``--help`` (the optimizers that have it are prefixed).
    range: the values it may take.
    kind: ``float`` or ``int`` (the flag's type).
    metavar: the flag's placeholder in ``--help`` (default: its name).
    sweep: runs of one program (``--seeds``, ``--sweep``) may differ in it
      (default: floats: they change no shape, loop length or budget).
    vmap: a vmapped step of several runs takes it as a traced value (else
      runs that differ in it train as one copy of the step each).
  """

  help: str
  range: Range = POSITIVE
  kind: type = float
  metavar: str | None = None
  sweep: bool | None = None
  vmap: bool = False

  @property
  def sweepable(self) -> bool:
    return self.kind is float if self.sweep is None else self.sweep

  def check(self, name: str, value: Any) -> None:
    """Raises ConfigError naming ``flag(name)`` unless ``value`` is a ``kind`` in range."""
    if self.kind is int:
      if isinstance(value, bool) or not isinstance(value, int) or not self.range.test(value):
        raise ConfigError(f"{flag(name)} {value!r}: must be an integer {self.range.want}")
      return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise ConfigError(f"{flag(name)} {value!r}: must be a number {self.range.want}")
    if not math.isfinite(value) or not self.range.test(value):
      raise ConfigError(f"{flag(name)} {value!r}: must be {self.range.want}")


def hyper(spec: Hyper) -> Any:
  """A declaration's field for the hyper-parameter ``spec``."""
  return dataclasses.field(metadata={"hyper": spec})


def hypers(cls: type) -> dict[str, Hyper]:
  """A declaration's hyper-parameters, by name, in field order."""
  return {f.name: f.metadata["hyper"] for f in dataclasses.fields(cls)}


class Context(NamedTuple):
  """What a declaration's :meth:`Optimizer.make` is given by the training side."""

  lr: optax.Schedule  # the outer learning rate by update (the run's schedule)
  momentum: float  # the run's --momentum
  weight_decay: float  # the run's --weight-decay
  key: jax.Array  # the optimizer's own random stream, from the run's seed
  axis_name: str  # the device axis: a transform that takes gradients averages them over it
  replica_axis: str  # the replicas' axis (replicated optimizers)
  unroll: int | bool  # the inner loop's iterations per compiled loop body
  updates_per_epoch: float
  total_updates: int  # the run's budget, in updates


class Optimizer:
  """Base of the optimizer declarations (each a frozen dataclass of its hyper-parameters).

  Class attributes (what the training step asks instead of the optimizer's type):

  * ``name``: the ``--optimizer`` value; ``summary``: one line for ``--help``.
  * ``replicated``: it trains ``replicas`` copies on a replicas x devices
    mesh (its ``replicas`` field), coupled along the replica axis.
  * ``inner_loop``: its update runs a loop over ``grad_fn`` (``--unroll``
    applies); ``averages_gradients``: its transform averages every gradient
    it takes over the device axis itself (else the step averages the
    gradient at x before ``update``).
  * ``gradient_at_x``: its update reads the gradient at x (HEAT's does not:
    the step then computes the loss alone).
  * ``reads``: the run's shared settings its factory reads (a flag given
    for one it does not read is refused).
  * ``defaults``: its values on any network; ``recipes``: per network, the
    values over those (the budget, tuned values), with their sources.
  """

  name: ClassVar[str]
  summary: ClassVar[str]
  replicated: ClassVar[bool] = False
  inner_loop: ClassVar[bool] = False
  averages_gradients: ClassVar[bool] = False
  gradient_at_x: ClassVar[bool] = True
  reads: ClassVar[tuple[str, ...]] = ("momentum", "weight_decay")
  defaults: ClassVar[Mapping[str, Any]] = {}
  recipes: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

  @property
  def backprops_per_update(self) -> int:
    """Gradient evaluations per update (per replica): the effective-epoch count's."""
    return 1

  @property
  def minibatches_per_update(self) -> int:
    """Minibatches the step draws per update; ``grad_fn(params, i)`` takes minibatch i."""
    return self.backprops_per_update

  def make(self, ctx: Context) -> optax.GradientTransformationExtraArgs:
    """The optax optimizer, called as ``update(grads_at_x, state, params, grad_fn=...)``."""
    raise NotImplementedError

  def evaluated_params(self, params: Any, opt_state: Any) -> Any:
    """The parameters an evaluation measures (SWA: its average)."""
    del opt_state
    return params

  @classmethod
  def check(cls, values: dict[str, Any]) -> None:
    """Raises ConfigError for values that are each in range but wrong together."""


def updates_in(effective_epochs: float, updates_per_epoch: float) -> int:
  """The updates of a budget of ``effective_epochs``: the last one may pass it."""
  return math.ceil(effective_epochs * updates_per_epoch - 1e-9)


def first_update_at(epoch: float, updates_per_epoch: float) -> int:
  """The first update that starts at or after effective epoch ``epoch``.

  Update k spans effective epochs [k, k + 1) / updates_per_epoch.
  """
  return max(1, math.ceil(epoch * updates_per_epoch - 1e-9))
