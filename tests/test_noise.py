"""Tests of the hash-based noise samplers (entropix/_noise.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import entropix
from entropix import _noise


@pytest.mark.parametrize("sampler", ["binomial", "normal", "threefry"])
def test_moments_and_independence(sampler):
  z = np.asarray(_noise.standard_noise(jax.random.PRNGKey(0), (1_000_000,), sampler), np.float64)
  n = z.size
  assert np.all(np.isfinite(z))
  assert abs(z.mean()) < 5 / np.sqrt(n)
  assert abs(z.var() - 1) < 5 * np.sqrt(2 / n) * 1.5
  assert abs(stats.skew(z)) < 5 * np.sqrt(6 / n)
  kurtosis = {"binomial": -1 / 16, "normal": 0.0, "threefry": 0.0}[sampler]
  assert abs(stats.kurtosis(z) - kurtosis) < 5 * np.sqrt(24 / n)
  # Neighbouring elements and two keys are uncorrelated.
  w = np.asarray(_noise.standard_noise(jax.random.PRNGKey(1), (n,), sampler), np.float64)
  for a, b in [(z[1:], z[:-1]), (z, w), (z[::2], z[1::2])]:
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(a.size)


def test_normal_sampler_is_gaussian_and_never_infinite():
  z = np.asarray(_noise.standard_noise(jax.random.PRNGKey(4), (2_000_000,), "normal"))
  assert np.abs(z).max() < 5.5
  assert stats.kstest(z[:200_000], "norm").pvalue > 1e-3


def test_same_key_same_noise_and_dtype():
  key = jax.random.PRNGKey(3)
  a = _noise.tree_noise(key, {"w": jnp.zeros((3, 4)), "b": jnp.zeros(5)}, "binomial")
  b = _noise.tree_noise(key, {"w": jnp.zeros((3, 4)), "b": jnp.zeros(5)}, "binomial")
  np.testing.assert_array_equal(a["w"], b["w"])
  assert a["w"].shape == (3, 4) and a["w"].dtype == jnp.float32
  assert not np.allclose(a["w"].reshape(-1)[:5], a["b"])  # leaves differ


def test_unknown_sampler_is_refused():
  with pytest.raises(ValueError, match="sampler"):
    _noise.standard_noise(jax.random.PRNGKey(0), (3,), "cauchy")


def test_counter_bits_are_lowbias32_of_the_counter_and_stay_so():
  # Langevin noise and models.layers.Dropout's masks come from these bits:
  # other bits would change the numbers of every run.
  key = jax.random.PRNGKey(0)
  bits = [int(b) for b in entropix.counter_bits(key, jnp.arange(4))]
  assert bits == [2302592709, 2893004708, 1488423529, 4026139343]

  def mix(h):  # lowbias32 on Python integers
    h ^= h >> 16
    h = h * 0x7FEB352D & 0xFFFFFFFF
    h ^= h >> 15
    h = h * 0x846CA68B & 0xFFFFFFFF
    return h ^ (h >> 16)

  s0, s1 = (int(s) for s in jax.random.bits(key, (2,), jnp.uint32))
  assert [mix(mix(c ^ s0) ^ s1) for c in range(4)] == bits
  np.testing.assert_array_equal(_noise._hash_bits(key, (2, 2)), np.reshape(bits, (2, 2)))
