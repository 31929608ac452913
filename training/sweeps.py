"""train.py's ``--seeds`` and ``--sweep``: the runs of one program, from flags.

``--sweep lr=0.1,0.3 --sweep gamma=0.03,0.1`` trains the grid of every
combination (here 4 runs), each at its own values and otherwise the flags
given, as one program (:func:`training.loop.train_group`); with ``--seeds``
every point of the grid trains with each seed. Only settings that change no
shape, loop length, budget or evaluation step can be swept
(:data:`training.config.SWEEPABLE`).
"""

import argparse
import itertools
import pathlib
from collections.abc import Sequence
from typing import Any

from training.config import SWEEPABLE, Config, ConfigError, build_config, flag
from training.loop import check_seeds


def seed_list(text: str) -> list[int]:
  """``--seeds 0,1,2``: the seeds (an ``argparse`` type)."""
  try:
    return [int(s) for s in text.split(",")]
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r}: want integers and commas, e.g. 0,1,2") from None


def sweep_axis(text: str) -> tuple[str, list[float]]:
  """``--sweep NAME=V,V,...``: the setting and its values (an ``argparse`` type)."""
  name, _, values = text.partition("=")
  name = name.strip().lstrip("-").replace("-", "_")
  floats = [n for n in SWEEPABLE if n not in ("seed", "lr_schedule")]
  if name not in floats:
    raise argparse.ArgumentTypeError(
        f"{text!r}: sweep one of {', '.join(n.replace('_', '-') for n in floats)} as "
        "NAME=V,V,... (--seeds sweeps the seed)")
  try:
    numbers = [float(v) for v in values.split(",")]
  except ValueError:
    raise argparse.ArgumentTypeError(f"{text!r}: want NAME=V,V,... with numbers") from None
  return name, numbers


def point_name(point: dict[str, float]) -> str:
  """A sweep point's folder name: ``lr=0.1,gamma=0.03``."""
  return ",".join(f"{name.replace('_', '-')}={value:g}" for name, value in point.items())


def grid(flags: dict[str, Any], axes: Sequence[tuple[str, list[float]]],
         seeds: Sequence[int] | None, workdir: str | pathlib.Path
         ) -> tuple[list[Config], list[pathlib.Path], list[str]]:
  """The configs, workdirs and labels of the runs of ``--sweep`` (and ``--seeds``).

  Point p (``lr=0.1,gamma=0.03``) trains in ``workdir/p``, with seeds in
  ``workdir/p/seed_n``; each config is ``build_config(**flags)`` with the
  point's values (and seed) over the flags, so a default that follows
  another flag (the lr schedule the lr) follows the swept value.

  Raises:
    ConfigError: a setting swept twice or also given as its flag, a value
      out of range (naming the point), or points that cannot share a program.
  """
  names = [name for name, _ in axes]
  for name in names:
    if names.count(name) > 1:
      raise ConfigError(f"--sweep {name.replace('_', '-')}: swept twice")
    if flags.get(name) is not None:
      raise ConfigError(f"{flag(name)} and --sweep {name.replace('_', '-')}: give one")
  if seeds is not None:
    seeds = check_seeds(seeds)
  configs, workdirs, labels, points = [], [], [], {}
  for values in itertools.product(*(v for _, v in axes)):
    point = dict(zip(names, values))
    if point_name(point) in points:  # names keep 6 digits: 0.1 and 0.1000001 would share one
      raise ConfigError(f"--sweep points {points[point_name(point)]} and {point}: one folder "
                        f"name, {point_name(point)}; give values apart in 6 digits")
    points[point_name(point)] = point
    for seed in seeds if seeds is not None else [None]:
      try:
        configs.append(build_config(**{**flags, **point,
                                       **({} if seed is None else {"seed": seed})}))
      except ConfigError as e:
        raise ConfigError(f"--sweep point {point_name(point)}: {e}") from None
      where = pathlib.Path(workdir) / point_name(point)
      workdirs.append(where if seed is None else where / f"seed_{seed}")
      labels.append(point_name(point) + ("" if seed is None else f" seed {seed}"))
  return configs, workdirs, labels
