"""The paper's optimizers (Table 1 and the forms its text describes), and plain SGD.

Their per-network recipes, each value with its source, are
:data:`training.settings.RECIPES`; ``defaults`` are the paper's values for a
network it did not train.
"""

import dataclasses
from typing import Any, ClassVar

import optax

import entropix
from training import settings
from training.optimizers._base import (FRACTION, NON_NEGATIVE, AT_LEAST_ONE, ConfigError,
                                       Context, Hyper, Optimizer, flag, hyper)

# Hyper-parameters shared with other declarations (training.optimizers.replicas).
GAMMA = Hyper("coupling strength gamma0", vmap=True)
SCOPING = Hyper("gamma grows by a factor 1 + SCOPING per update (up to 1 / inner_lr where "
                "there is one; elastic-sgd, parle: rho and gamma, up to --rho-max and "
                "--gamma-max); heat: sigma^2 shrinks by it; 0 turns scoping off", NON_NEGATIVE)
INNER_STEPS = Hyper("inner loop length, backprops per update (hj-fixed-point: L + 1)",
                    AT_LEAST_ONE, int, "L")
INNER_LR = Hyper("inner step size", vmap=True)
INNER_MOMENTUM = Hyper("Nesterov momentum of the inner loop, its buffer kept across updates "
                       "as in the authors' code", FRACTION, metavar="M")
NOISE = Hyper("Langevin noise scale, temperature noise^2", NON_NEGATIVE, vmap=True)
ALPHA = Hyper("exponential averaging of the inner iterates", FRACTION, vmap=True)

# The paper's values for a network it did not train (Sec. 7.1; gamma: the
# code's "works fine" for LeNet).
_LOOP = dict(lr=0.1, weight_decay=0.0, gamma=1e-3, scoping=1e-3, inner_steps=20, inner_lr=0.1,
             inner_momentum=0.9)


def check_inner_loop(values: dict[str, Any]) -> None:
  """The library's own check: a coupling at which the inner loop diverges."""
  try:
    entropix.local_entropy(values["gamma"], inner_lr=values["inner_lr"],
                           inner_momentum=values["inner_momentum"],
                           weight_decay=values["weight_decay"])
  except ValueError as e:
    raise ConfigError(f"{flag('gamma')} {values['gamma']!r} with {flag('inner_lr')} "
                      f"{values['inner_lr']!r}: {e}") from None


def gamma_schedule(settings: Any) -> optax.ScalarOrSchedule:
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


def _entropix(ctx: Context) -> dict[str, Any]:
  """The settings every entropix transform of the training side takes from the run."""
  return dict(momentum=ctx.momentum, weight_decay=ctx.weight_decay, axis_name=ctx.axis_name,
              unroll=ctx.unroll)


@dataclasses.dataclass(frozen=True)
class SGD(Optimizer):
  """SGD with Nesterov momentum: one backprop per update."""

  name: ClassVar[str] = "sgd"
  summary: ClassVar[str] = "SGD with Nesterov momentum (Table 1)"
  defaults: ClassVar = dict(lr=0.1, weight_decay=0.0)
  recipes: ClassVar = settings.cells("sgd")

  def make(self, ctx: Context) -> optax.GradientTransformationExtraArgs:
    return optax.with_extra_args_support(optax.chain(
        optax.add_decayed_weights(ctx.weight_decay),
        optax.sgd(ctx.lr, momentum=ctx.momentum, nesterov=True)))


@dataclasses.dataclass(frozen=True)
class _InnerLoop(Optimizer):
  """What Entropy-SGD, HJ and Table 1's HEAT share: the coupled inner loop of
  L backprops per update, its coupling gamma (scoped) and its step."""

  inner_loop: ClassVar[bool] = True
  averages_gradients: ClassVar[bool] = True
  gamma: float = hyper(GAMMA)
  scoping: float = hyper(SCOPING)
  inner_steps: int = hyper(INNER_STEPS)
  inner_lr: float = hyper(INNER_LR)
  inner_momentum: float = hyper(INNER_MOMENTUM)

  @property
  def backprops_per_update(self) -> int:
    return self.inner_steps

  @classmethod
  def check(cls, values: dict[str, Any]) -> None:
    check_inner_loop(values)


@dataclasses.dataclass(frozen=True)
class EntropySGD(_InnerLoop):
  """Entropy-SGD (Sec. 7.1): ``entropix.entropy_sgd``, a Langevin inner loop.

  The inner Nesterov buffer is kept across updates, as the authors' code does.
  """

  name: ClassVar[str] = "entropy-sgd"
  summary: ClassVar[str] = "Entropy-SGD (Table 1)"
  defaults: ClassVar = dict(_LOOP, noise=1e-4, alpha=0.75)
  recipes: ClassVar = settings.cells("entropy-sgd")
  noise: float = hyper(NOISE)
  alpha: float = hyper(ALPHA)

  def make(self, ctx: Context) -> optax.GradientTransformationExtraArgs:
    return entropix.entropy_sgd(
        ctx.lr, gamma=gamma_schedule(self), inner_steps=self.inner_steps,
        inner_lr=self.inner_lr, noise=self.noise, inner_momentum=self.inner_momentum,
        reset_inner_momentum=False, key=ctx.key, alpha=self.alpha, **_entropix(ctx))


@dataclasses.dataclass(frozen=True)
class HJ(_InnerLoop):
  """HJ as the paper's Sec. 7.2 describes it (the code's HJB class): ``entropix.hj``,
  the noiseless inner loop, last iterate."""

  name: ClassVar[str] = "hj"
  summary: ClassVar[str] = "HJ as Sec. 7.2 describes it: the noiseless loop's last iterate"
  defaults: ClassVar = dict(_LOOP, inner_steps=5, inner_lr=0.25)
  recipes: ClassVar = settings.cells("hj")

  def make(self, ctx: Context) -> optax.GradientTransformationExtraArgs:
    return entropix.hj(ctx.lr, gamma=gamma_schedule(self), inner_steps=self.inner_steps,
                       inner_lr=self.inner_lr, inner_momentum=self.inner_momentum,
                       reset_inner_momentum=False, **_entropix(ctx))


DAMPING = Hyper("weight kept on the previous fixed-point iterate", FRACTION)


@dataclasses.dataclass(frozen=True)
class HJFixedPoint(Optimizer):
  """HJ as Table 1 ran it (the code's FP class, Remark 21): ``entropix.hj_fixed_point``."""

  name: ClassVar[str] = "hj-fixed-point"
  summary: ClassVar[str] = "HJ as Table 1 ran it: damped fixed-point iterations"
  inner_loop: ClassVar[bool] = True
  averages_gradients: ClassVar[bool] = True
  defaults: ClassVar = dict(lr=0.1, weight_decay=0.0, gamma=10.0, scoping=1e-3, inner_steps=5,
                            damping=0.75)
  recipes: ClassVar = settings.cells("hj-fixed-point")
  gamma: float = hyper(GAMMA)
  scoping: float = hyper(SCOPING)
  inner_steps: int = hyper(INNER_STEPS)  # damped fixed-point iterations, one backprop each
  damping: float = hyper(DAMPING)

  @property
  def backprops_per_update(self) -> int:
    return self.inner_steps + 1  # and the gradient at x

  def make(self, ctx: Context) -> optax.GradientTransformationExtraArgs:
    return entropix.hj_fixed_point(ctx.lr, gamma=gamma_schedule(self),
                                   inner_steps=self.inner_steps, damping=self.damping,
                                   **_entropix(ctx))


SIGMA = Hyper("perturbation scale, sigma^2 is the paper's gamma")
SAMPLES = Hyper("backprops (perturbations) per update", AT_LEAST_ONE, int)


def sigma_schedule(settings: "HEAT") -> optax.ScalarOrSchedule:
  """sigma0 (1 + scoping)^(-k/2): the variance shrinks as the PDE time 1 / gamma does."""
  if not settings.scoping:
    return settings.sigma
  return optax.exponential_decay(settings.sigma, 1, (1 + settings.scoping) ** -0.5)


@dataclasses.dataclass(frozen=True)
class HEAT(Optimizer):
  """HEAT (Sec. 7.3, Eq. 35): ``entropix.heat``, Gaussian smoothing."""

  name: ClassVar[str] = "heat"
  summary: ClassVar[str] = "HEAT as Eq. 35 describes it: Gaussian smoothing"
  inner_loop: ClassVar[bool] = True
  averages_gradients: ClassVar[bool] = True
  gradient_at_x: ClassVar[bool] = False  # only perturbed points
  defaults: ClassVar = dict(lr=0.1, weight_decay=0.0, sigma=0.01, scoping=1e-3, samples=20)
  recipes: ClassVar = settings.cells("heat")
  sigma: float = hyper(SIGMA)  # sigma^2 is the paper's gamma
  scoping: float = hyper(SCOPING)  # sigma^2 shrinks by 1 + scoping per update
  samples: int = hyper(SAMPLES)

  @property
  def backprops_per_update(self) -> int:
    return self.samples

  def make(self, ctx: Context) -> optax.GradientTransformationExtraArgs:
    return entropix.heat(ctx.lr, sigma=sigma_schedule(self), samples=self.samples, key=ctx.key,
                         **_entropix(ctx))


@dataclasses.dataclass(frozen=True)
class HEATUniform(_InnerLoop):
  """HEAT as Table 1 ran it (the code's HEAT class): the Entropy-SGD loop with the
  uniform average of x and the iterates, ``entropix.entropy_sgd(average="uniform")``."""

  name: ClassVar[str] = "heat-uniform"
  summary: ClassVar[str] = "HEAT as Table 1 ran it: the Entropy-SGD loop, uniform average"
  defaults: ClassVar = dict(_LOOP, noise=1e-4)
  recipes: ClassVar = settings.cells("heat-uniform")
  noise: float = hyper(NOISE)

  def make(self, ctx: Context) -> optax.GradientTransformationExtraArgs:
    return entropix.entropy_sgd(
        ctx.lr, gamma=gamma_schedule(self), inner_steps=self.inner_steps,
        inner_lr=self.inner_lr, noise=self.noise, inner_momentum=self.inner_momentum,
        reset_inner_momentum=False, key=ctx.key, average="uniform", **_entropix(ctx))
