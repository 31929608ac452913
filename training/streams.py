"""Every random stream of a run, from its seed, in one place.

A run with seed s draws five streams from ``PRNGKey(s)`` (replica r of
Elastic-SGD or Parle from ``PRNGKey(s + r)``, as the authors' Parle code
seeds its replicas):

* ``init``: the network's initialisation;
* ``data``: the minibatch order, epoch e's permutation ``fold_in(data, e)``;
* ``dropout``: the masks, minibatch j's (counted over the run) ``fold_in(dropout, j)``;
* ``optimizer``: the optimizer's own (the Langevin noise, HEAT's
  perturbations, and whatever a declaration's factory draws), one per run:
  a replicated optimizer splits it over its replicas itself;
* ``measure``: the sharpness measured along the way (``--sharpness-every``),
  the measurement after update t from ``fold_in(measure, t)``.

Two seeds differ in every stream, and runs trained together (``--seeds``,
``--sweep``) each keep the streams of their seed.

>>> keys = of(seed_key(0))
>>> keys._fields
('init', 'data', 'dropout', 'optimizer', 'measure')
"""

from typing import Any, NamedTuple

import jax
import numpy as np


class Streams(NamedTuple):
  """A seed key's five streams (each a raw ``uint32[2]`` key)."""

  init: jax.Array
  data: jax.Array
  dropout: jax.Array
  optimizer: jax.Array
  measure: jax.Array


def seed_key(seed: int) -> jax.Array:
  """The key of seed ``seed`` (0 .. 2**32 - 1), built on the host."""
  return jax.random.PRNGKey(seed)


def of(key: jax.Array) -> Streams:
  """The five streams of the seed key ``key`` (traced or not): ``fold_in(key, i)``."""
  return Streams(*(jax.random.fold_in(key, i) for i in range(len(Streams._fields))))


def replica_seeds(config: Any) -> list[int]:
  """Replica r's seed, seed + r: the authors' Parle code seeds replica r so
  (its own initialisation, data order and dropout). One replica: the seed."""
  return [config.seed + r for r in range(config.replicas)]


def seed_keys(config: Any) -> np.ndarray:
  """The run's seed keys, uint32[replicas, 2]: ``seed_key(seed + r)`` for replica r
  (one row, ``seed_key(seed)``, without replicas). Built on the host: seed + r
  may pass int32, which a traced sum would wrap."""
  return np.stack([np.asarray(seed_key(s)) for s in replica_seeds(config)])
