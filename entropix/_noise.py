"""Standard-normal-like noise for whole pytrees, cheap enough for inner loops.

``jax.random.normal`` (threefry) costs about twice a backprop of a
two-million-parameter network on a CPU: threefry spends ~80 integer operations
per 32-bit word. Here the PRNG key only seeds each (draw, leaf) pair through
``jax.random.bits`` (a handful of scalars); every element then takes its bits
from a counter-based integer hash of its position (two rounds of the
``lowbias32`` mixer, ~10 integer operations), which XLA fuses into the
arithmetic that consumes the noise. The result is a pure function of the key:
the same key gives the same noise on every device and every run.

Three laws are offered:

* ``"binomial"``: ``(popcount(h) - 16) / sqrt(8)`` for a 32-bit hash ``h``, a
  standardised Binomial(32, 1/2). Mean 0, variance 1, symmetric (all odd
  moments 0), fourth moment 3 - 1/16. In an Euler-Maruyama step any increment
  with these first moments gives the same weak order as a Gaussian
  (Kloeden & Platen, *Numerical Solution of SDEs*, Sec. 14.1), so the Langevin
  chain samples the same law to the order of its discretisation. Fastest.
* ``"normal"``: ``sqrt(2) * erfinv(u)`` for ``u`` uniform on (-1, 1) with 23-bit
  resolution, the construction ``jax.random.normal`` itself uses: Gaussian to
  float32 resolution. About 3x the cost of ``"binomial"``; still several times
  cheaper than threefry.
* ``"threefry"``: ``jax.random.normal`` itself, for reference; the slowest.

``benchmarks/overhead.py`` measures all three, alone and inside Entropy-SGD.
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp
from jax import lax

Sampler = Literal["binomial", "normal", "threefry"]
SAMPLERS: tuple[str, ...] = ("binomial", "normal", "threefry")


def _mix(h: jax.Array) -> jax.Array:
  # lowbias32 (C. Wellons): a bijection on uint32 with near-ideal avalanche.
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x7FEB352D)
  h = h ^ (h >> 15)
  h = h * jnp.uint32(0x846CA68B)
  return h ^ (h >> 16)


def counter_bits(key: jax.Array, counter: jax.Array) -> jax.Array:
  """32 pseudo-random bits for each element of the integer array ``counter``.

  ``mix(mix(counter ^ s0) ^ s1)`` element by element, where ``(s0, s1)`` are
  32 bits each drawn from ``key`` (``jax.random.bits``) and ``mix`` is the
  ``lowbias32`` integer hash (``counter`` is taken mod 2**32). An element's
  bits depend only on the key and its counter, not on the array's shape or
  on how it is split across devices: entropix's noise numbers a leaf's
  elements 0, 1, ...; ``models.layers.Dropout`` numbers each unit by its
  position in the global batch. Distinct counters give distinct bits.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> key = jax.random.key(0)
    >>> bits = counter_bits(key, jnp.arange(6).reshape(2, 3))
    >>> bits.dtype, bits.shape
    (dtype('uint32'), (2, 3))
    >>> bool((counter_bits(key, jnp.arange(3, 6)) == bits[1]).all())  # by counter alone
    True
  """
  seed = jax.random.bits(key, (2,), jnp.uint32)
  counter = jnp.asarray(counter).astype(jnp.uint32)
  return _mix(_mix(counter ^ seed[0]) ^ seed[1])


def _hash_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """32 pseudo-random bits per element of ``shape``, keyed by ``key``."""
  size = math.prod(shape)
  if size >= 2**32:
    raise ValueError(f"a leaf of {size} elements is too large for the counter")
  return counter_bits(key, lax.iota(jnp.uint32, size).reshape(shape))


def standard_noise(
    key: jax.Array, shape: tuple[int, ...], sampler: Sampler, dtype=jnp.float32
) -> jax.Array:
  """Noise of mean 0 and variance 1 per element, independent across elements."""
  check_sampler(sampler)
  if sampler == "threefry":
    return jax.random.normal(key, shape, dtype)
  bits = _hash_bits(key, shape)
  if sampler == "binomial":
    z = (lax.population_count(bits).astype(jnp.float32) - 16.0) * (8.0**-0.5)
  else:
    # The top 23 bits give u = (k + 1/2) 2^-22 - 1 in (-1, 1), exact in
    # float32 and symmetric: never +-1, so erfinv stays finite (|z| < 5.3).
    u = ((bits >> 9).astype(jnp.float32) + 0.5) * (2.0**-22) - 1.0
    z = jnp.sqrt(2.0) * lax.erf_inv(u)
  return z.astype(dtype)


def tree_noise(key: jax.Array, tree, sampler: Sampler):
  """Independent standard noise shaped like every leaf of ``tree``."""
  leaves, treedef = jax.tree.flatten(tree)
  noise = [
      standard_noise(jax.random.fold_in(key, i), jnp.shape(leaf), sampler)
      for i, leaf in enumerate(leaves)
  ]
  return jax.tree.unflatten(treedef, noise)


def check_sampler(sampler: str) -> None:
  if sampler not in SAMPLERS:
    raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
