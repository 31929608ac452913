"""The optax optimizer of a :class:`~training.config.Config`, and its schedules."""

import jax
import optax

import entropix
from training.config import (HEAT, HJ, SGD, Config, ElasticSGD, EntropySGD, HEATUniform,
                             HJFixedPoint, Parle, first_update_at)
from training.devices import AXIS, REPLICA_AXIS


def lr_schedule(config: Config, updates_per_epoch: float) -> optax.Schedule:
  """The outer learning rate as a function of the update count.

  ``config.lr`` until the first pair of ``config.lr_schedule``; each pair
  (E, lr) takes over at the first update that starts at or after effective
  epoch E.

  >>> from training.config import build_config
  >>> schedule = lr_schedule(build_config(lr=1.0, lr_schedule="2:0.5"), updates_per_epoch=10)
  >>> float(schedule(19)), float(schedule(20))
  (1.0, 0.5)
  """
  values = [config.lr] + [lr for _, lr in config.lr_schedule]
  boundaries = [first_update_at(epoch, updates_per_epoch) for epoch, _ in config.lr_schedule]
  return optax.join_schedules([optax.constant_schedule(v) for v in values], boundaries)


def gamma_schedule(settings: EntropySGD | HJ | HJFixedPoint | HEATUniform) -> optax.ScalarOrSchedule:
  """gamma0 (1 + scoping)^k; for the Langevin/descent loops capped at 1 / inner_lr.

  The coupling alone makes the inner loop diverge past inner_lr * gamma = 2
  (1.36 with Nesterov 0.9): without the cap the default HJ run on mnistfc
  (18,750 updates) would take gamma from 1e-4 to 1.4e4. The fixed-point form
  is not capped: as gamma grows its iteration tends to the plain gradient.
  """
  if not settings.scoping:
    return settings.gamma
  if isinstance(settings, HJFixedPoint):
    return entropix.scoping(settings.gamma, settings.scoping)
  return entropix.scoping(settings.gamma, settings.scoping, inner_lr=settings.inner_lr)


def replica_schedules(settings: ElasticSGD | Parle) -> dict[str, optax.ScalarOrSchedule]:
  """rho (and Parle's gamma): min(v0 (1 + scoping)^k, v_max), as the authors' Parle code."""
  pairs = {"rho": (settings.rho, settings.rho_max)}
  if isinstance(settings, Parle):
    pairs["gamma"] = (settings.gamma, settings.gamma_max)
  return {name: entropix.scoping(v0, settings.scoping, end_value=top)
                if settings.scoping and v0 > 0 else v0
          for name, (v0, top) in pairs.items()}


def sigma_schedule(settings: HEAT) -> optax.ScalarOrSchedule:
  """sigma0 (1 + scoping)^(-k/2): the variance shrinks as the PDE time 1 / gamma does."""
  if not settings.scoping:
    return settings.sigma
  return optax.exponential_decay(settings.sigma, 1, (1 + settings.scoping) ** -0.5)


def make_optimizer(
    config: Config, updates_per_epoch: float, key: jax.Array, axis_name: str = AXIS,
    replica_axis: str = REPLICA_AXIS,
) -> optax.GradientTransformationExtraArgs:
  """The optimizer of ``config``; every gradient is averaged over ``axis_name``.

  SGD's and Elastic-SGD's gradients are averaged by the caller (``optax.sgd``
  has no axis); entropix's transforms average every gradient they take
  through ``axis_name``. Elastic-SGD and Parle couple the replicas along
  ``replica_axis``.
  """
  lr = lr_schedule(config, updates_per_epoch)
  common = dict(momentum=config.momentum, weight_decay=config.weight_decay,
                axis_name=axis_name, unroll=config.run.unroll)
  match config.optimizer:
    case SGD():
      return optax.with_extra_args_support(optax.chain(
          optax.add_decayed_weights(config.weight_decay),
          optax.sgd(lr, momentum=config.momentum, nesterov=True),
      ))
    case HEAT() as heat:
      return entropix.heat(lr, sigma=sigma_schedule(heat), samples=heat.samples, key=key,
                           **common)
    case HJ() as hj:
      return entropix.hj(lr, gamma=gamma_schedule(hj), inner_steps=hj.inner_steps,
                         inner_lr=hj.inner_lr, inner_momentum=hj.inner_momentum,
                         reset_inner_momentum=False, **common)
    case HJFixedPoint() as fp:
      return entropix.hj_fixed_point(lr, gamma=gamma_schedule(fp), inner_steps=fp.inner_steps,
                                     damping=fp.damping, **common)
    case EntropySGD() | HEATUniform() as loop:
      # The authors' code keeps the inner buffer across updates.
      average = dict(average="uniform") if isinstance(loop, HEATUniform) else dict(alpha=loop.alpha)
      return entropix.entropy_sgd(
          lr, gamma=gamma_schedule(loop), inner_steps=loop.inner_steps,
          inner_lr=loop.inner_lr, noise=loop.noise, inner_momentum=loop.inner_momentum,
          reset_inner_momentum=False, key=key, **average, **common)
    case ElasticSGD() as elastic:
      return optax.with_extra_args_support(entropix.elastic_sgd(
          lr, **replica_schedules(elastic), axis_name=replica_axis,
          momentum=config.momentum, weight_decay=config.weight_decay))
    case Parle() as parle:
      return entropix.parle(
          lr, **replica_schedules(parle), axis_name=replica_axis, data_axis_name=axis_name,
          inner_steps=parle.inner_steps, inner_lr=parle.inner_lr, noise=parle.noise,
          alpha=parle.alpha, inner_momentum=parle.inner_momentum, reset_inner_momentum=False,
          momentum=config.momentum, weight_decay=config.weight_decay,
          key=key, unroll=config.run.unroll)
  raise TypeError(f"no optimizer for {config.optimizer!r}")
