"""AdamW (``optax.adamw``): Adam with decoupled weight decay, one backprop per update."""

import dataclasses
from typing import ClassVar

import optax

from training import settings
from training.optimizers._base import FRACTION, POSITIVE, Context, Hyper, Optimizer, hyper

B1 = Hyper("decay of Adam's first moment (its momentum)", FRACTION)
B2 = Hyper("decay of Adam's second moment", FRACTION)
EPS = Hyper("added to the root of Adam's second moment", POSITIVE)


@dataclasses.dataclass(frozen=True)
class AdamW(Optimizer):
  """AdamW: ``optax.adamw(lr, b1, b2, eps, weight_decay)``.

  The weight decay is decoupled (each update subtracts lr * weight_decay *
  params) and the outer momentum is Adam's own ``b1``: ``--momentum`` does
  not apply. Defaults: optax's (ours, untuned); the budget of each paper
  network is SGD's recipe's, for a comparison at equal gradient evaluations.
  """

  name: ClassVar[str] = "adamw"
  summary: ClassVar[str] = "AdamW (optax.adamw), decoupled weight decay"
  reads: ClassVar[tuple[str, ...]] = ("weight_decay",)
  defaults: ClassVar = dict(lr=1e-3, weight_decay=1e-4, b1=0.9, b2=0.999, eps=1e-8)
  recipes: ClassVar = settings.cells("sgd", keys=("effective_epochs",))
  b1: float = hyper(B1)
  b2: float = hyper(B2)
  eps: float = hyper(EPS)

  def make(self, ctx: Context) -> optax.GradientTransformationExtraArgs:
    return optax.with_extra_args_support(optax.adamw(
        ctx.lr, b1=self.b1, b2=self.b2, eps=self.eps, weight_decay=ctx.weight_decay))
