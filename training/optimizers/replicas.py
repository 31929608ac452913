"""Elastic-SGD and Parle: replicas of the network coupled along the replica axis (Sec. 4.3)."""

import dataclasses
from typing import Any, ClassVar

import optax

import entropix
from training import settings
from training.optimizers._base import (AT_LEAST_ONE, NON_NEGATIVE, ConfigError, Context, Hyper,
                                       Optimizer, flag, hyper)
from training.optimizers.paper import (ALPHA, GAMMA, INNER_LR, INNER_MOMENTUM, INNER_STEPS,
                                       NOISE, SCOPING, check_inner_loop)

REPLICAS = Hyper("parameter copies, each on --devices / N devices, each with its own "
                 "initialisation (seed + r), minibatches and noise; effective epochs count "
                 "every replica's backprops (default: one replica per device)",
                 AT_LEAST_ONE, int, "N")
RHO = Hyper("elastic coupling rho0 to the replicas' mean", NON_NEGATIVE)
RHO_MAX = Hyper("ceiling of rho as --scoping grows it", NON_NEGATIVE)
GAMMA_MAX = Hyper("ceiling of gamma as --scoping grows it")
# The pull as the authors' Parle code: rho = min(1 (1 + gdot)^k, 10), gdot
# = 0.5 / (minibatches per epoch) (training.settings.PerEpoch).
_PULL = dict(lr=0.1, weight_decay=0.0, replicas=None, rho=1.0, rho_max=10.0,
             scoping=settings.PerEpoch(0.5))


def _ceilings(values: dict[str, Any], *pairs: tuple[str, str]) -> None:
  for low, high in pairs:
    if values[high] < values[low]:
      raise ConfigError(f"{flag(high)} {values[high]!r}: must be >= {flag(low)} {values[low]!r}")


def replica_schedules(settings: "ElasticSGD | Parle") -> dict[str, optax.ScalarOrSchedule]:
  """rho (and Parle's gamma): min(v0 (1 + scoping)^k, v_max), as the authors' Parle code."""
  pairs = {"rho": (settings.rho, settings.rho_max)}
  if isinstance(settings, Parle):
    pairs["gamma"] = (settings.gamma, settings.gamma_max)
  return {name: entropix.scoping(v0, settings.scoping, end_value=top)
                if settings.scoping and v0 > 0 else v0
          for name, (v0, top) in pairs.items()}


@dataclasses.dataclass(frozen=True)
class ElasticSGD(Optimizer):
  """Elastic-SGD (Sec. 4.3, Eq. 20-21): ``entropix.elastic_sgd``. Each replica
  steps on its own minibatches, pulled towards the replicas' mean with
  rho = min(rho0 (1 + scoping)^k, rho_max)."""

  name: ClassVar[str] = "elastic-sgd"
  summary: ClassVar[str] = "Elastic-SGD (Sec. 4.3): replicas pulled to their mean"
  replicated: ClassVar[bool] = True
  defaults: ClassVar = _PULL
  recipes: ClassVar = settings.cells("elastic-sgd")
  replicas: int = hyper(REPLICAS)  # parameter copies, each on devices / replicas devices
  rho: float = hyper(RHO)  # elastic coupling rho0
  rho_max: float = hyper(RHO_MAX)
  scoping: float = hyper(SCOPING)  # rho grows by 1 + scoping per update

  @property
  def backprops_per_update(self) -> int:
    return 1  # per replica

  def make(self, ctx: Context) -> optax.GradientTransformationExtraArgs:
    return optax.with_extra_args_support(entropix.elastic_sgd(
        ctx.lr, **replica_schedules(self), axis_name=ctx.replica_axis,
        momentum=ctx.momentum, weight_decay=ctx.weight_decay))

  @classmethod
  def check(cls, values: dict[str, Any]) -> None:
    _ceilings(values, ("rho", "rho_max"))


@dataclasses.dataclass(frozen=True)
class Parle(Optimizer):
  """Parle (the authors' ``DistributedESGD``, docs/guides/conventions.md):
  ``entropix.parle``, the local-entropy loop on each replica, then the
  elastic pull to the mean of the replicas' iterates."""

  name: ClassVar[str] = "parle"
  summary: ClassVar[str] = "Parle (Sec. 4.3): Entropy-SGD on each replica, the elastic pull"
  replicated: ClassVar[bool] = True
  inner_loop: ClassVar[bool] = True
  averages_gradients: ClassVar[bool] = True
  defaults: ClassVar = dict(_PULL, gamma=0.01, gamma_max=1.0, inner_steps=25, inner_lr=0.1,
                            noise=0.0, alpha=0.0, inner_momentum=0.9)
  recipes: ClassVar = settings.cells("parle")
  replicas: int = hyper(REPLICAS)
  gamma: float = hyper(GAMMA)  # coupling of each replica's inner loop, gamma0
  gamma_max: float = hyper(GAMMA_MAX)
  rho: float = hyper(RHO)
  rho_max: float = hyper(RHO_MAX)
  scoping: float = hyper(SCOPING)  # gamma and rho grow by 1 + scoping per update
  inner_steps: int = hyper(INNER_STEPS)
  inner_lr: float = hyper(INNER_LR)
  noise: float = hyper(NOISE)
  alpha: float = hyper(ALPHA)
  inner_momentum: float = hyper(INNER_MOMENTUM)  # kept across updates

  @property
  def backprops_per_update(self) -> int:
    return self.inner_steps  # per replica

  def make(self, ctx: Context) -> optax.GradientTransformationExtraArgs:
    return entropix.parle(
        ctx.lr, **replica_schedules(self), axis_name=ctx.replica_axis,
        data_axis_name=ctx.axis_name, inner_steps=self.inner_steps, inner_lr=self.inner_lr,
        noise=self.noise, alpha=self.alpha, inner_momentum=self.inner_momentum,
        reset_inner_momentum=False, momentum=ctx.momentum, weight_decay=ctx.weight_decay,
        key=ctx.key, unroll=ctx.unroll)

  @classmethod
  def check(cls, values: dict[str, Any]) -> None:
    _ceilings(values, ("rho", "rho_max"), ("gamma", "gamma_max"))
    check_inner_loop(values)
