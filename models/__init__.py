"""The networks train.py trains (Flax linen), one declaration each, looked up by name.

Each module here declares one network as ``NETWORK`` (:class:`models.network.Network`:
its module, input shape, default data and defaults); importing the package
registers every one in :data:`NETWORKS`, the paper's three first.

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

import importlib
import pkgutil

import flax.linen as nn

from models.layers import INITS, check_init
from models.network import Network

# The paper's first, in --help's order; then every other module, by name.
_FIRST = ("mnistfc", "lenet", "allcnn")
_NOT_NETWORKS = ("layers", "network")


def _discover() -> dict[str, Network]:
  names = [m.name for m in pkgutil.iter_modules(__path__)
           if not m.name.startswith("_") and m.name not in _NOT_NETWORKS]
  found: dict[str, Network] = {}
  for module_name in (*_FIRST, *sorted(set(names) - set(_FIRST))):
    network = getattr(importlib.import_module(f"{__name__}.{module_name}"), "NETWORK", None)
    if not isinstance(network, Network):
      raise TypeError(f"models/{module_name}.py declares no NETWORK = models.network.Network(...)")
    if network.name in found:
      raise TypeError(f"two networks named {network.name!r}")
    found[network.name] = network
  return found


NETWORKS: dict[str, Network] = _discover()


def create(name: str, *, axis_name: str | None = None, param_init: str = "flax",
           num_classes: int = 10) -> nn.Module:
  """The network registered as ``name``, initialised as ``param_init``, with
  ``num_classes`` outputs.

  ``param_init`` is one of :data:`INITS`: ``"flax"`` (Flax's defaults) or
  ``"pytorch-legacy"`` (PyTorch 0.x's, which the authors' code ran on:
  weights and biases U(+-1 / sqrt(fan_in)), BatchNorm scale U(0, 1)).
  """
  if name not in NETWORKS:
    raise ValueError(f"unknown model {name!r}; choose one of {sorted(NETWORKS)}")
  check_init(param_init)
  return NETWORKS[name].module(axis_name=axis_name, param_init=param_init,
                               num_classes=num_classes)


__all__ = ["INITS", "NETWORKS", "Network", "create"]
