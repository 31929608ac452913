"""entropix.diagnostics against exact answers: quadratics and a dense Hessian."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from entropix import diagnostics

KEY = jax.random.key(0)
# A quadratic 0.5 (x - c)^T A (x - c) with a known spectrum, rotated so that
# no estimator is exact by accident of a diagonal A.
SPECTRUM = np.array([9.0, 5.0, 3.0, 2.0, 1.0, 0.5, 0.25, -0.5])


def rotated_quadratic(spectrum=SPECTRUM, seed=0):
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(spectrum.size,) * 2))
  a = (q * spectrum) @ q.T
  # The minibatches' centres c_b average to 0; the Hessian is A whatever they are.
  centres = jnp.asarray(np.random.default_rng(seed + 1).normal(size=(4, spectrum.size)))
  centres = centres - centres.mean(0)

  def loss(p, c):
    d = p["x"] - c
    return 0.5 * d @ jnp.asarray(a, jnp.float32) @ d

  return loss, {"x": jnp.zeros(spectrum.size)}, centres.astype(jnp.float32), a


@pytest.fixture(scope="module")
def network():
  """A 4-8-3 tanh network on random data: 67 parameters, 3 minibatches of 16."""
  rng = np.random.default_rng(0)
  k1, k2 = jax.random.split(KEY)
  params = {"h": {"w": jax.random.normal(k1, (4, 8)) * 0.5, "b": jnp.zeros(8)},
            "out": {"w": jax.random.normal(k2, (8, 3)) * 0.5, "b": jnp.zeros(3)}}
  batches = {"x": jnp.asarray(rng.normal(size=(3, 16, 4)), jnp.float32),
             "y": jnp.asarray(rng.integers(0, 3, size=(3, 16)))}

  def loss(p, batch):
    h = jnp.tanh(batch["x"] @ p["h"]["w"] + p["h"]["b"])
    logits = h @ p["out"]["w"] + p["out"]["b"]
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(16), batch["y"]])

  flat, unravel = ravel_pytree(params)
  mean_loss = lambda f: jnp.mean(jax.vmap(lambda b: loss(unravel(f), b))(batches))
  dense = np.asarray(jax.hessian(mean_loss)(flat), np.float64)
  return loss, params, batches, (dense + dense.T) / 2


def test_hvp_is_the_dense_hessian_times_v(network):
  loss, params, batches, dense = network
  flat, unravel = ravel_pytree(params)
  v = jax.random.normal(KEY, flat.shape)
  got = ravel_pytree(diagnostics.hvp(loss, params, batches)(unravel(v)))[0]
  np.testing.assert_allclose(got, dense @ np.asarray(v), rtol=1e-4, atol=1e-6)


def test_hvp_keeps_the_structure_and_accumulates_in_float32():
  loss = lambda p, b: 0.5 * jnp.sum(b * p["a"].astype(jnp.float32) ** 2) + jnp.sum(p["b"] ** 2)
  params = {"a": jnp.ones(3, jnp.bfloat16), "b": jnp.ones((2, 2))}
  out = diagnostics.hvp(loss, params, jnp.full((5, 3), 2.0))(params)
  assert jax.tree.structure(out) == jax.tree.structure(params)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(out))
  np.testing.assert_allclose(out["a"], [2.0, 2.0, 2.0])
  np.testing.assert_allclose(out["b"], 2 * np.ones((2, 2)))


def test_eigenvalues_of_a_quadratic_are_its_spectrum():
  loss, params, centres, _ = rotated_quadratic()
  top = diagnostics.hessian_eigenvalues(loss, params, centres, 3, key=KEY, progress=False)
  bottom = diagnostics.hessian_eigenvalues(loss, params, centres, 2, key=KEY, which="smallest",
                                           progress=False)
  np.testing.assert_allclose(top, SPECTRUM[:3], rtol=1e-5)
  np.testing.assert_allclose(bottom, [-0.5, 0.25], rtol=1e-5)  # the most negative first


def test_eigenvectors_of_a_network_match_eigh(network):
  loss, params, batches, dense = network
  exact_values, exact_vectors = np.linalg.eigh(dense)
  values, vecs = diagnostics.hessian_eigenvalues(loss, params, batches, 3, key=KEY,
                                                 vectors=True, progress=False)
  assert jax.tree.structure(vecs) == jax.tree.structure(params)
  flat = jax.vmap(lambda v: ravel_pytree(v)[0])(vecs)
  np.testing.assert_allclose(values, exact_values[::-1][:3], rtol=1e-4)
  overlap = np.abs(np.asarray(flat) @ exact_vectors[:, ::-1][:, :3])
  np.testing.assert_allclose(np.diag(overlap), 1.0, atol=1e-3)  # each its own, up to sign
  bottom, low = diagnostics.hessian_eigenvalues(loss, params, batches, 1, key=KEY,
                                                which="smallest", vectors=True, progress=False)
  low = ravel_pytree(jax.tree.map(lambda v: v[0], low))[0]
  assert abs(float(low @ exact_vectors[:, 0])) > 1 - 1e-3


def test_top_eigenvalues_of_a_network_match_eigh(network):
  loss, params, batches, dense = network
  exact = np.linalg.eigh(dense)[0]
  top = diagnostics.hessian_eigenvalues(loss, params, batches, 10, key=KEY, progress=False)
  np.testing.assert_allclose(top, exact[::-1][:10], rtol=1e-4)
  assert np.all(np.diff(top) <= 0)
  bottom = diagnostics.hessian_eigenvalues(loss, params, batches, 3, key=KEY,
                                           which="smallest", progress=False)
  np.testing.assert_allclose(bottom, exact[:3], rtol=1e-3, atol=1e-5)


def test_trace_is_within_three_standard_errors(network):
  loss, params, batches, dense = network
  est = diagnostics.hessian_trace(loss, params, batches, key=KEY, samples=200, progress=False)
  assert est.stderr > 0
  assert abs(est.value - np.trace(dense)) < 3 * est.stderr, (est, np.trace(dense))


def _block(dense, params, mask):
  """The rows and columns of ``dense`` of the parameters ``mask`` selects."""
  chosen = jax.tree.map(lambda m, sub: jax.tree.map(lambda p: jnp.full(p.shape, m), sub),
                        mask, params)
  index = np.asarray(ravel_pytree(chosen)[0], bool)
  return dense[np.ix_(index, index)], index


@pytest.mark.parametrize("mask", [
    {"h": True, "out": False},  # a prefix: one layer, kernel and bias
    {"h": {"w": False, "b": False}, "out": {"w": True, "b": False}},  # one array
    lambda p: {"h": {"w": True, "b": False}, "out": {"w": False, "b": True}},  # two, a function
])
def test_a_layers_eigenvalues_and_trace_are_its_diagonal_blocks(network, mask):
  loss, params, batches, dense = network
  block, index = _block(dense, params, mask(params) if callable(mask) else mask)
  exact_values, exact_vectors = np.linalg.eigh(block)
  values, vecs = diagnostics.hessian_eigenvalues(loss, params, batches, 3, key=KEY, mask=mask,
                                                 vectors=True, progress=False)
  np.testing.assert_allclose(values, exact_values[::-1][:3], rtol=1e-4)
  assert jax.tree.structure(vecs) == jax.tree.structure(params)
  flat = np.asarray(jax.vmap(lambda v: ravel_pytree(v)[0])(vecs))
  assert np.all(flat[:, ~index] == 0)  # zero outside the block
  overlap = np.abs(flat[:, index] @ exact_vectors[:, ::-1][:, :3])
  np.testing.assert_allclose(np.diag(overlap), 1.0, atol=1e-3)
  # A layer's block is not the whole Hessian's top: the test would not see a mask ignored.
  assert not np.allclose(values, np.linalg.eigh(dense)[0][::-1][:3], rtol=1e-2)
  est = diagnostics.hessian_trace(loss, params, batches, key=KEY, samples=200, mask=mask,
                                  progress=False)
  assert abs(est.value - np.trace(block)) < 3 * est.stderr + 1e-6, (est, np.trace(block))
  assert abs(est.value - np.trace(dense)) > 3 * est.stderr


@pytest.mark.parametrize("mask,match", [
    ({"h": False, "out": False}, "selects no parameter"),
    ({"h": True}, "structure of params"),
])
def test_a_bad_mask_is_named(network, mask, match):
  loss, params, batches, _ = network
  with pytest.raises(ValueError, match=match):
    diagnostics.hessian_eigenvalues(loss, params, batches, 2, key=KEY, mask=mask)
  with pytest.raises(ValueError, match=match):
    diagnostics.hessian_trace(loss, params, batches, key=KEY, mask=mask)


def test_exact_diagonal_and_its_harmonic_mean(network):
  loss, params, batches, dense = network
  est = diagnostics.hessian_diagonal(loss, params, batches, exact=True, progress=False)
  got = ravel_pytree(est.value)[0]
  np.testing.assert_allclose(got, np.diag(dense), rtol=1e-4, atol=1e-7)
  diag = np.diag(dense)
  positive = diag[diag > 0]
  mean, count = diagnostics.harmonic_mean(est.value)
  assert count == positive.size
  np.testing.assert_allclose(mean, positive.size / np.sum(1 / positive), rtol=1e-4)


def test_estimated_diagonal_is_within_its_standard_errors():
  loss, params, centres, a = rotated_quadratic()
  est = diagnostics.hessian_diagonal(loss, params, centres, key=KEY, samples=400, progress=False)
  z = (np.asarray(est.value["x"]) - np.diag(a)) / np.asarray(est.stderr["x"])
  assert np.all(np.abs(z) < 4), z


def test_harmonic_mean_bounds_lemma_20():
  # For a positive definite A, the harmonic mean of the eigenvalues is at
  # most that of the diagonal (the paper's Lemma 20).
  spectrum = np.array([4.0, 2.0, 1.0, 0.1])
  _, _, _, a = rotated_quadratic(spectrum)
  assert diagnostics.harmonic_mean(spectrum)[0] <= diagnostics.harmonic_mean(np.diag(a))[0]


def test_spectral_density_integrates_to_one_and_has_the_spectrums_moments(network):
  loss, params, batches, dense = network
  dim = dense.shape[0]
  sld = diagnostics.spectral_density(loss, params, batches, key=KEY, num_iterations=dim,
                                     probes=12, progress=False)
  np.testing.assert_allclose(diagnostics._integral(sld.density, sld.grid), 1.0, rtol=1e-6)
  np.testing.assert_allclose(sld.weights.sum(1), 1.0, rtol=1e-5)
  # Each probe's quadrature is exact: sum tau theta^p = v^T H^p v / |v|^2.
  probes = [np.asarray(jax.random.rademacher(k, (dim,), jnp.float32), np.float64)
            for k in jax.random.split(KEY, 12)]
  for p in (1, 2):
    quadrature = (sld.weights * sld.nodes**p).sum(1)
    exact = [v @ np.linalg.matrix_power(dense, p) @ v / (v @ v) for v in probes]
    np.testing.assert_allclose(quadrature, exact, rtol=1e-3, atol=1e-7)
  # Their mean estimates tr(H^p) / d: with every probe, within a few errors.
  first = (sld.weights * sld.nodes).sum(1)
  assert abs(first.mean() - np.trace(dense) / dim) < 4 * first.std(ddof=1) / np.sqrt(12)


def test_local_entropy_of_a_quadratic_is_its_closed_form():
  # f(y) = 0.5 (y - c)^T A (y - c) at x: per eigen-direction,
  # f_gamma = 0.5 x_i^2 gamma a_i / (a_i + gamma) + eps^2 / 2 log(1 + a_i / gamma).
  a = np.array([4.0, 1.0, 0.25])
  loss = lambda p, b: 0.5 * jnp.sum(jnp.asarray(a, jnp.float32) * p**2)
  x, noise = np.array([0.3, -0.2, 0.5]), 0.3
  gammas = np.geomspace(0.5, 64.0, 15)
  est = diagnostics.local_entropy_estimate(
      loss, jnp.asarray(x, jnp.float32), jnp.zeros(1), gammas, noise=noise, inner_lr=0.005,
      key=KEY, steps=40000, burn_in=2000, progress=False)

  def closed(g):
    return np.sum(0.5 * x**2 * g * a / (a + g) + noise**2 / 2 * np.log1p(a / g))

  exact = np.array([closed(g) for g in gammas]) - closed(gammas[-1]) + loss(jnp.asarray(x), 0)
  np.testing.assert_allclose(est.values, exact, atol=max(0.01, 4 * est.stderr.max()))
  assert est.values[0] < est.values[-1]  # smoothing lowers the loss of a minimum's side


def test_perturbation_sharpness_of_a_quadratic_is_half_sigma_squared_trace():
  loss, params, centres, a = rotated_quadratic()
  sigmas = np.array([0.01, 0.1, 0.3])
  est = diagnostics.perturbation_sharpness(loss, params, centres, sigmas, key=KEY, samples=200,
                                           progress=False)
  exact = sigmas**2 * np.trace(a) / 2
  assert np.all(np.abs(est.value - exact) < 4 * est.stderr + 1e-6), (est, exact)


def test_relative_sharpness_of_a_quadratic_weighs_the_diagonal_by_the_squared_point():
  loss, params, centres, a = rotated_quadratic()
  x = np.linspace(-2.0, 2.0, params["x"].size)  # increase: sigma^2 sum_i a_ii x_i^2 / 2
  sigmas = np.array([0.01, 0.1, 0.3])
  est = diagnostics.perturbation_sharpness(loss, {"x": jnp.asarray(x, jnp.float32)}, centres,
                                           sigmas,
                                           key=KEY, samples=400, relative=True, progress=False)
  exact = sigmas**2 * np.sum(np.diag(a) * x**2) / 2
  assert np.all(np.abs(est.value - exact) < 4 * est.stderr + 1e-6), (est, exact)


def test_relative_sharpness_does_not_see_a_rescaling_that_leaves_the_function_alone():
  # f depends on the products u_i w_i only: (c u, w / c) is the same function.
  def loss(p, b):
    return jnp.sum((p["u"] * p["w"] - b) ** 2)

  rng = np.random.default_rng(0)
  u, w = rng.normal(size=(2, 6)).astype(np.float32) + 1.5
  batches = jnp.zeros((1, 6))

  def sharpness(c, relative):
    params = {"u": jnp.asarray(c * u), "w": jnp.asarray(w / c)}
    return diagnostics.perturbation_sharpness(loss, params, batches, [0.05], key=KEY, samples=8,
                                              relative=relative, progress=False).value[0]

  np.testing.assert_allclose(sharpness(10.0, True), sharpness(1.0, True), rtol=1e-4)
  assert abs(sharpness(10.0, False) - sharpness(1.0, False)) > 0.1 * abs(sharpness(1.0, False))


@pytest.mark.parametrize("call,match", [
    (lambda l, p, b: diagnostics.hessian_eigenvalues(l, p, b, 0, key=KEY), "k must be in 1 .. 8"),
    (lambda l, p, b: diagnostics.hessian_eigenvalues(l, p, b, 2, key=KEY, which="top"),
     "which must be"),
    (lambda l, p, b: diagnostics.hessian_eigenvalues(l, p, b, 2, key=KEY, num_iterations=9),
     "num_iterations must be in 1 .. 8"),
    (lambda l, p, b: diagnostics.hessian_trace(l, p, b, key=KEY, samples=1), "samples must be"),
    (lambda l, p, b: diagnostics.local_entropy_estimate(
        l, p, b, [1.0, 100.0], noise=0.1, inner_lr=0.1, key=KEY), "inner_lr \\* max"),
    (lambda l, p, b: diagnostics.local_entropy_estimate(
        l, p, b, [1.0], noise=0.1, inner_lr=0.01, key=KEY), "at least two"),
    (lambda l, p, b: diagnostics.hvp(l, p, {"a": b, "b": b[:2]}), "leading sizes"),
])
def test_bad_arguments_are_named(call, match):
  loss, params, centres, _ = rotated_quadratic()
  with pytest.raises(ValueError, match=match):
    call(loss, params, centres)
