"""SAM (``optax.contrib.sam``): SGD's step with the gradient taken after an ascent step."""

import dataclasses
from typing import ClassVar

import optax
import optax.contrib

from training import settings
from training.optimizers._base import POSITIVE, Context, Hyper, Optimizer, hyper

SAM_RHO = Hyper("SAM's radius: the length of the normalised ascent step before the gradient "
                "the update uses")


@dataclasses.dataclass(frozen=True)
class SAM(Optimizer):
  """Sharpness-aware minimisation (Foret et al., 2021) over Nesterov SGD.

  Each update takes the gradient g at x on its minibatch, steps to
  x + rho g / |g| and takes the gradient there on the same minibatch, which
  the outer SGD step (Nesterov momentum, weight decay as SGD's) then uses:
  ``optax.contrib.sam(sgd, chain(normalize(), sgd(rho)), opaque_mode=True)``.
  Two backprops per update, both counted in the effective epochs; one
  minibatch. Defaults: rho = 0.05 (the SAM paper's); each paper network's
  budget and lr are SGD's recipe's (ours, untuned).
  """

  name: ClassVar[str] = "sam"
  summary: ClassVar[str] = "SAM (optax.contrib.sam) over Nesterov SGD, two backprops per update"
  defaults: ClassVar = dict(lr=0.1, weight_decay=0.0, sam_rho=0.05)
  recipes: ClassVar = settings.cells("sgd", keys=("effective_epochs", "lr", "weight_decay"))
  sam_rho: float = hyper(SAM_RHO)

  @property
  def backprops_per_update(self) -> int:
    return 2  # at x, and at the ascent step's end

  @property
  def minibatches_per_update(self) -> int:
    return 1  # both on the same minibatch

  def make(self, ctx: Context) -> optax.GradientTransformationExtraArgs:
    outer = optax.chain(optax.add_decayed_weights(ctx.weight_decay),
                        optax.sgd(ctx.lr, momentum=ctx.momentum, nesterov=True))
    ascent = optax.chain(optax.contrib.normalize(), optax.sgd(self.sam_rho))
    # The step averages the gradient at x over the devices; SAM the second one.
    return optax.contrib.sam(outer, ascent, sync_period=2, opaque_mode=True,
                             batch_axis_name=ctx.axis_name)
