"""The optimizers ``train.py`` can run, one declaration each, and what is derived from them.

Each module of this package declares optimizers (:class:`Optimizer`
subclasses, frozen dataclasses of their hyper-parameters; a class whose name
starts with ``_`` is a shared base, not an optimizer); importing the
package registers every one in :data:`REGISTRY`, the paper's first. Adding
an optimizer is one module here: its hyper-parameters, what it needs from
the training step, its recipes and its factory. The flags, ``--help``, the
range checks, the sweep and vmap sets and the recipes page follow from
the declarations.

>>> REGISTRY["hj"].name, REGISTRY["hj"].inner_loop
('hj', True)
>>> sorted(hypers_of("hj"))
['gamma', 'inner_lr', 'inner_momentum', 'inner_steps', 'scoping']
"""

import dataclasses
import importlib
import pkgutil
from typing import Any

import jax
import optax

import models
from training import settings
from training.devices import AXIS, REPLICA_AXIS
from training.optimizers._base import (ConfigError, Context, Hyper, Optimizer, first_update_at,
                                       flag, hyper, hypers, updates_in)

# The paper's first, in --help's order; then every other module, by name.
_FIRST = ("paper", "replicas")


def _discover() -> dict[str, type[Optimizer]]:
  names = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
  registry: dict[str, type[Optimizer]] = {}
  for module_name in (*_FIRST, *sorted(set(names) - set(_FIRST))):
    module = importlib.import_module(f"{__name__}.{module_name}")
    for value in vars(module).values():
      if (isinstance(value, type) and issubclass(value, Optimizer) and value is not Optimizer
          and value.__module__ == module.__name__ and not value.__name__.startswith("_")):
        if value.name in registry:
          raise TypeError(f"two optimizers named {value.name!r}: {registry[value.name]} and "
                          f"{value}")
        registry[value.name] = value
  return registry


REGISTRY: dict[str, type[Optimizer]] = _discover()


def _all_hypers() -> dict[str, Hyper]:
  """Every optimizer's hyper-parameters by name; one name is one declaration."""
  found: dict[str, Hyper] = {}
  for cls in REGISTRY.values():
    for name, spec in hypers(cls).items():
      if found.setdefault(name, spec) != spec:
        raise TypeError(f"{cls.name}: the hyper-parameter {name!r} is declared twice, "
                        "differently; share one Hyper")
  return found


HYPERS: dict[str, Hyper] = _all_hypers()


def hypers_of(optimizer: str) -> dict[str, Hyper]:
  """The hyper-parameters of the optimizer named ``optimizer``."""
  return hypers(REGISTRY[optimizer])


def users(name: str) -> list[str]:
  """The optimizers that have a hyper-parameter (or read a shared setting) ``name``."""
  return [o for o, cls in REGISTRY.items() if name in hypers(cls) or name in cls.reads]


def defaults(model: str, optimizer: str) -> dict[str, Any]:
  """Every default of a (model, optimizer) cell, by flag name: what every run
  shares (:mod:`training.settings`), then the network's defaults, the
  optimizer's, and its recipe for ``model``, each over the one before."""
  cls = REGISTRY[optimizer]
  recipe = {**models.NETWORKS[model].defaults, **cls.defaults, **cls.recipes.get(model, {})}
  recipe.pop("tuned", None)
  shared = {"batch_size": settings.BATCH_SIZE, "momentum": settings.MOMENTUM, "seed": 0,
            "eval_every": settings.EVAL_EVERY, "validation_split": 0}
  if "momentum" not in cls.reads:
    del shared["momentum"]
  return {**shared, **recipe}


def lr_schedule(config: Any, updates_per_epoch: float) -> optax.Schedule:
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


def make_optimizer(
    config: Any, updates_per_epoch: float, key: jax.Array, axis_name: str = AXIS,
    replica_axis: str = REPLICA_AXIS,
) -> optax.GradientTransformationExtraArgs:
  """The optimizer of ``config`` (a :class:`training.Config`), from its declaration.

  Every gradient is averaged over ``axis_name``: by the transform where the
  declaration ``averages_gradients``, else by the step before ``update``.
  Replicated optimizers couple their replicas along ``replica_axis``.
  """
  return config.optimizer.make(Context(
      lr=lr_schedule(config, updates_per_epoch), momentum=config.momentum,
      weight_decay=config.weight_decay, key=key, axis_name=axis_name,
      replica_axis=replica_axis, unroll=config.run.unroll, updates_per_epoch=updates_per_epoch,
      total_updates=updates_in(config.effective_epochs, updates_per_epoch)))


def _shown(value: Any, tuned: bool) -> str:
  text = f"{value.rate:g} per epoch" if isinstance(value, settings.PerEpoch) else f"{value:g}"
  return text + ("†" if tuned else "")


def recipes_table() -> str:
  """Every (model, optimizer) cell's defaults as the Markdown table of
  docs/guides/recipes.md (``†``: tuned on a validation split)."""
  rows = ["| model | optimizer | effective epochs | lr | weight decay | the optimizer's own |",
          "|---|---|---|---|---|---|"]
  for model in models.NETWORKS:
    for name, cls in REGISTRY.items():
      tuned = cls.recipes.get(model, {}).get("tuned", ())
      values = defaults(model, name)
      shown = {k: _shown(values[k], k in tuned)
               for k in ("effective_epochs", "lr", "weight_decay", *hypers(cls))
               if values.get(k) is not None}
      own = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in shown.items()
                      if k not in ("effective_epochs", "lr", "weight_decay"))
      rows.append(f"| {model} | {name} | {shown['effective_epochs']} | {shown['lr']} | "
                  f"{shown['weight_decay']} | {own or '-'} |")
  return "\n".join(rows)


__all__ = ["REGISTRY", "HYPERS", "ConfigError", "Context", "Hyper", "Optimizer", "defaults",
           "first_update_at", "flag", "hyper", "hypers", "hypers_of", "lr_schedule",
           "make_optimizer", "recipes_table", "updates_in", "users"]
