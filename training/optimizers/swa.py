"""SWA: Nesterov SGD, evaluated at the average of its last iterates (Izmailov et al., 2018)."""

import dataclasses
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import optax

from training import settings
from training.optimizers._base import UNIT, Context, Hyper, Optimizer, hyper

SWA_FRACTION = Hyper("the last part of the budget whose iterates are averaged, the "
                     "evaluations measuring the average", UNIT)


class SWAState(NamedTuple):
  """The wrapped optimizer's state, the iterates' running average and their count."""

  inner: optax.OptState
  average: optax.Params
  count: jax.Array  # iterates in the average
  step: jax.Array  # updates done


def averaged(inner: optax.GradientTransformation, start: int
             ) -> optax.GradientTransformationExtraArgs:
  """``inner``, keeping the average of the iterates from update ``start`` on.

  After update k (counted from 1) the new parameters x_k enter the average
  when k >= start; at k = start the average restarts from x_k alone (so a
  resumed run whose budget grew averages its new window).
  """
  inner = optax.with_extra_args_support(inner)

  def init(params):
    return SWAState(inner.init(params), optax.tree.zeros_like(params),
                    jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))

  def update(updates, state, params=None, **extra):
    updates, inner_state = inner.update(updates, state.inner, params, **extra)
    new = optax.apply_updates(params, updates)
    step = state.step + 1
    restart = step == start
    count = jnp.where(restart, 1, state.count + (step > start).astype(jnp.int32))

    def mean(a, x):
      running = a + (x - a) / jnp.maximum(count, 1).astype(a.dtype)
      return jnp.where(restart, x, jnp.where(step > start, running, a))

    average = jax.tree.map(mean, state.average, new)
    return updates, SWAState(inner_state, average, count, step)

  return optax.GradientTransformationExtraArgs(init, update)


@dataclasses.dataclass(frozen=True)
class SWA(Optimizer):
  """Stochastic weight averaging over Nesterov SGD.

  The iterates of the last ``swa_fraction`` of the budget are averaged
  (each update's, from update T - round(swa_fraction T) + 1 of T), and every
  evaluation measures that average once it holds an iterate, its BatchNorm
  statistics re-estimated on the training set as every evaluation's are.
  The steps are SGD's (the run's lr schedule, momentum and weight decay);
  the budget and lr of each paper network are SGD's recipe's (ours, untuned).
  """

  name: ClassVar[str] = "swa"
  summary: ClassVar[str] = "SWA: Nesterov SGD, evaluated at the average of its last iterates"
  defaults: ClassVar = dict(lr=0.1, weight_decay=0.0, swa_fraction=0.25)
  recipes: ClassVar = settings.cells("sgd", keys=("effective_epochs", "lr", "weight_decay"))
  swa_fraction: float = hyper(SWA_FRACTION)

  def make(self, ctx: Context) -> optax.GradientTransformationExtraArgs:
    averaged_updates = max(1, round(self.swa_fraction * ctx.total_updates))
    sgd = optax.chain(optax.add_decayed_weights(ctx.weight_decay),
                      optax.sgd(ctx.lr, momentum=ctx.momentum, nesterov=True))
    return averaged(sgd, ctx.total_updates - averaged_updates + 1)

  def evaluated_params(self, params: Any, opt_state: SWAState) -> Any:
    return jax.tree.map(lambda a, p: jnp.where(opt_state.count > 0, a, p),
                        opt_state.average, params)
