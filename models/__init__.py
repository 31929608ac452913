"""The paper's three networks (Flax linen), looked up by name.

Each model is called as ``model.apply(variables, x, train=..., rngs=...)``:
``train=True`` uses batch statistics and dropout (pass
``rngs={"dropout": key}`` and ``mutable=["batch_stats"]``); ``train=False``
uses the running statistics and no dropout; ``train=True, dropout=False``
(batch statistics without dropout) is how the evaluation re-estimates
the statistics. BatchNorm reduces over ``axis_name`` when one is given, so its
statistics span the global batch under pmap or shard_map, and each example's
dropout mask depends only on its position in the global batch
(:class:`models.layers.Dropout`). No optimizer code lives here.
"""

from collections.abc import Callable

import flax.linen as nn

from models.allcnn import AllCNN
from models.layers import INITS, check_init
from models.lenet import LeNet
from models.mnistfc import MnistFC

REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "mnistfc": MnistFC,
    "lenet": LeNet,
    "allcnn": AllCNN,
}


# The image shape each network was built for (the paper's datasets).
INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "mnistfc": (28, 28),
    "lenet": (28, 28),
    "allcnn": (32, 32, 3),
}


def create(name: str, *, axis_name: str | None = None, param_init: str = "flax") -> nn.Module:
  """The network registered as ``name`` (mnistfc, lenet or allcnn), initialised as ``param_init``.

  ``param_init`` is one of :data:`INITS`: ``"flax"`` (Flax's defaults) or
  ``"pytorch-legacy"`` (PyTorch 0.x's, which the authors' code ran on:
  weights and biases U(+-1 / sqrt(fan_in)), BatchNorm scale U(0, 1)).
  """
  if name not in REGISTRY:
    raise ValueError(f"unknown model {name!r}; choose one of {sorted(REGISTRY)}")
  check_init(param_init)
  return REGISTRY[name](axis_name=axis_name, param_init=param_init)


__all__ = ["INITS", "INPUT_SHAPES", "AllCNN", "LeNet", "MnistFC", "REGISTRY", "create"]
