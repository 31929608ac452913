"""Tests of the 1-D reference solutions in entropix.pde."""

import numpy as np
import pytest

from entropix import pde

GRID = np.linspace(-8, 8, 32001)


@pytest.mark.parametrize("beta", [0.5, 10.0, 1e8])
def test_quadratic_has_the_closed_form_gradient(beta):
  # f = q y^2 / 2: rho is Gaussian, <y> = gamma x / (q + gamma) for any beta.
  q, gamma = 2.0, 0.5
  x = np.linspace(-2, 2, 9)
  grid = GRID if beta < 1e4 else np.linspace(-3, 3, 300_001)  # resolve the law
  u, du = pde.viscous_hj(lambda y: 0.5 * q * y**2, x, grid, gamma=gamma, beta=beta)
  np.testing.assert_allclose(du, gamma * q * x / (q + gamma), atol=1e-9)
  # Moreau envelope plus the entropic term (1/2beta) log((q + gamma) / gamma).
  envelope = 0.5 * q * gamma / (q + gamma) * x**2
  np.testing.assert_allclose(u, envelope + np.log((q + gamma) / gamma) / (2 * beta), atol=1e-9)


def test_hopf_lax_of_quadratic_and_large_beta_limit():
  q, gamma = 2.0, 0.5
  x = np.linspace(-2, 2, 9)
  u, du = pde.hopf_lax(lambda y: 0.5 * q * y**2, x, GRID, gamma=gamma)
  np.testing.assert_allclose(du, gamma * q * x / (q + gamma), atol=1e-7)
  np.testing.assert_allclose(u, 0.5 * q * gamma / (q + gamma) * x**2, atol=1e-9)
  # Viscous -> non-viscous as beta -> inf, for a non-convex f too.
  f = lambda y: -np.cos(2 * y) + 0.1 * y**2
  grid = np.linspace(-3, 3, 300_001)
  hl_u, hl = pde.hopf_lax(f, x, grid, gamma=5.0)
  uv, vhj = pde.viscous_hj(f, x, grid, gamma=5.0, beta=1e8)
  np.testing.assert_allclose(vhj, hl, atol=1e-4)
  np.testing.assert_allclose(uv, hl_u, atol=1e-6)
  # Log-sum-exp stays finite where exp(-beta f) underflows; a coarse grid is
  # refused rather than answered wrongly.
  with pytest.raises(ValueError, match="too coarse"):
    pde.viscous_hj(f, x, GRID, gamma=5.0, beta=1e12)


def test_gradients_are_derivatives_of_the_values():
  f = lambda y: 0.25 * (y**2 - 1) ** 2 + 0.15 * y
  x = np.linspace(-1.5, 1.5, 7)
  h = 1e-4
  for solve in [
      lambda z: pde.viscous_hj(f, z, GRID, gamma=1.0, beta=4.0),
      lambda z: pde.hopf_lax(f, z, GRID, gamma=3.0),
      lambda z: pde.heat(f, z, GRID, sigma=0.3),
  ]:
    _, du = solve(x)
    fd = (solve(x + h)[0] - solve(x - h)[0]) / (2 * h)
    np.testing.assert_allclose(du, fd, atol=2e-4)


def test_heat_of_cosine():
  k, sigma = 3.0, 0.4
  x = np.linspace(-2, 2, 9)
  v, dv = pde.heat(lambda y: -np.cos(k * y), x, GRID, sigma=sigma)
  damping = np.exp(-(sigma**2) * k**2 / 2)
  np.testing.assert_allclose(v, -np.cos(k * x) * damping, atol=1e-9)
  np.testing.assert_allclose(dv, k * np.sin(k * x) * damping, atol=1e-9)


def test_bad_inputs_are_refused():
  f = lambda y: y**2
  with pytest.raises(ValueError, match="gamma"):
    pde.viscous_hj(f, [0.0], GRID, gamma=0.0, beta=1.0)
  with pytest.raises(ValueError, match="sigma"):
    pde.heat(f, [0.0], GRID, sigma=0.0)
  with pytest.raises(ValueError, match="uniformly"):
    pde.hopf_lax(f, [0.0], np.array([0.0, 1.0, 3.0]), gamma=1.0)
  with pytest.raises(ValueError, match="edge"):
    pde.hopf_lax(lambda y: -y, [0.0], np.linspace(-1, 1, 11), gamma=1.0)
