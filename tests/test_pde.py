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


def _faces(x):
  return 0.5 * (x[:-1] + x[1:])


def double_well(z):
  return (z**2 - 1) ** 2 + 0.3 * z


def double_well_slope(z):
  return 4 * z * (z**2 - 1) + 0.3


@pytest.mark.parametrize("drift,beta", [
    (lambda faces: -double_well_slope(faces), 4.0),  # the loss's gradient flow, with noise
    (lambda faces: lambda z, s: -(1 + s) * double_well_slope(z), 4.0),  # changing in time
    (lambda faces: -double_well_slope(faces), np.inf),  # transport alone
])
def test_mass_is_conserved_and_the_density_stays_non_negative(drift, beta):
  x = np.linspace(-2.5, 2.5, 201)
  rho0 = np.where(np.abs(x - 0.5) < 0.3, 1.0, 0.0)  # a box: steep fronts
  rho = pde.fokker_planck(rho0, x, drift(_faces(x)), beta=beta, t=1.5)
  assert abs(rho.sum() / rho0.sum() - 1) < 1e-10
  assert rho.min() >= 0
  assert np.abs(rho - rho0).sum() > 0.5 * rho0.sum()  # it moved


def test_the_long_time_density_is_gibbs_at_first_order():
  errors = []
  for n in (41, 81, 161):
    x = np.linspace(-2.5, 2.5, n)
    # beta 1.5: the barrier is crossed many times by t = 20 (at beta 3, not yet)
    rho = pde.fokker_planck(np.ones(n), x, -double_well_slope(_faces(x)), beta=1.5, t=20.0)
    gibbs = np.exp(-1.5 * double_well(x))
    errors.append(np.abs(rho / rho.sum() - gibbs / gibbs.sum()).sum())
  assert errors[-1] < 0.03
  orders = np.log2(np.array(errors[:-1]) / errors[1:])
  assert np.all((orders > 0.8) & (orders < 1.3)), (errors, orders)


def test_an_ornstein_uhlenbeck_density_converges_at_first_order():
  # dx = -x dt + sqrt(2 / beta) dW from N(m0, s0^2): N(m0 e^-t, s0^2 e^-2t + (1 - e^-2t) / beta).
  beta, t, m0, s0 = 2.0, 1.0, 1.5, 0.4
  mean = m0 * np.exp(-t)
  var = s0**2 * np.exp(-2 * t) + (1 - np.exp(-2 * t)) / beta
  errors = []
  for n in (101, 201, 401, 801):
    x = np.linspace(-4, 5, n)
    h = x[1] - x[0]
    rho0 = np.exp(-0.5 * (x - m0) ** 2 / s0**2) / np.sqrt(2 * np.pi * s0**2)
    rho = pde.fokker_planck(rho0, x, -_faces(x), beta=beta, t=t)
    exact = np.exp(-0.5 * (x - mean) ** 2 / var) / np.sqrt(2 * np.pi * var)
    errors.append(np.abs(rho - exact).sum() * h)
  orders = np.log2(np.array(errors[:-1]) / errors[1:])
  assert np.all((orders > 0.8) & (orders < 1.3)), (errors, orders)
  assert errors[-1] < 1e-2


def test_a_step_beyond_the_monotonicity_bound_is_cut_to_it():
  x = np.linspace(-1, 1, 41)
  rho0 = np.where(np.abs(x) < 0.2, 1.0, 0.0)
  rho = pde.fokker_planck(rho0, x, np.full(40, 5.0), beta=50.0, t=0.05, dt=0.05)
  assert rho.min() >= 0  # one step of 0.05 would overshoot: negative densities


@pytest.mark.parametrize("call,match", [
    (lambda x: pde.fokker_planck(-np.ones(x.size), x, np.zeros(x.size - 1), beta=1, t=1),
     "non-negative"),
    (lambda x: pde.fokker_planck(np.ones(x.size), x, np.zeros(x.size), beta=1, t=1),
     "one per face"),
    (lambda x: pde.fokker_planck(np.ones(x.size), x, np.zeros(x.size - 1), beta=0, t=1),
     "beta must be > 0"),
    (lambda x: pde.fokker_planck(np.ones(x.size), x, np.zeros(x.size - 1), beta=1, t=-1),
     "t must be >= 0"),
])
def test_bad_fokker_planck_inputs_are_named(call, match):
  with pytest.raises(ValueError, match=match):
    call(np.linspace(0, 1, 11))


def test_the_expected_value_is_the_exact_adjoint_of_the_density():
  x = np.linspace(-2.5, 2.5, 201)
  b, beta, t = -double_well_slope(_faces(x)), 4.0, 0.7
  g = np.cos(3 * x) + x
  v = pde.expected_value(g, x, b, beta=beta, t=t, snapshots=2)
  # The backward solver's step: equal steps inside 0.9 times the monotonicity bound.
  bound = 0.9 * pde._monotone_step(b, x[1] - x[0], 1 / beta)
  step = (t / 2) / np.ceil((t / 2) / bound)
  rho0 = np.exp(-((x - 0.5) ** 2))
  rho = pde.fokker_planck(rho0, x, b, beta=beta, t=t, dt=step)
  assert abs(rho @ g - rho0 @ v[0]) < 1e-12 * (rho0 @ np.abs(v[0]))
  assert np.array_equal(v[-1], g)
  constant = pde.expected_value(np.full(x.size, 2.0), x, b, beta=beta, t=t)
  assert np.allclose(constant, 2.0, rtol=0, atol=1e-13)


def test_an_ornstein_uhlenbeck_mean_converges_at_first_order():
  # dx = -x ds + sqrt(2 / beta) dW: E[x(t)^2 | x(0) = x] = x^2 e^-2t + (1 - e^-2t) / beta.
  beta, t = 2.0, 1.0
  errors = []
  for n in (101, 201, 401):
    x = np.linspace(-5, 5, n)
    v = pde.expected_value(x**2, x, -_faces(x), beta=beta, t=t)[0]
    exact = x**2 * np.exp(-2 * t) + (1 - np.exp(-2 * t)) / beta
    errors.append(np.abs(v - exact)[np.abs(x) <= 2].max())
  orders = np.log2(np.array(errors[:-1]) / errors[1:])
  assert np.all((orders > 0.8) & (orders < 1.3)), (errors, orders)


@pytest.mark.parametrize("beta,points", [
    (4.0, (201, 401, 801)),
    # cold: exp(-beta V / 2) is 0 in float64 at the ends (e^-800), its log is not
    (100.0, (401, 801, 1601)),
])
def test_the_optimal_control_of_a_quadratic_cost_converges_to_its_closed_form(beta, points):
  # b = 0, V = x^2: u(x, s) = x^2 / (1 + 2 (t - s)) + log(1 + 2 (t - s)) / beta.
  t = 1.0
  errors = []
  for n in points:
    x = np.linspace(-4, 4, n)
    u, du = pde.optimal_control(x**2, x, np.zeros(n - 1), beta=beta, t=t, snapshots=2)
    assert np.all(np.isfinite(u)) and np.all(np.isfinite(du))
    s = np.array([0.0, 0.5, 1.0])[:, None]
    exact = x**2 / (1 + 2 * (t - s)) + np.log(1 + 2 * (t - s)) / beta
    inner = np.abs(x) <= 1.5
    errors.append(np.abs(u - exact)[:, inner].max())
    faces = _faces(x)[np.abs(_faces(x)) <= 1.5]
    slope = du[:, np.abs(_faces(x)) <= 1.5]
    assert np.abs(slope - 2 * faces / (1 + 2 * (t - s))).max() < 20 * errors[-1]
  # No drift: the scheme is central differences, second order.
  orders = np.log2(np.array(errors[:-1]) / errors[1:])
  assert np.all((orders > 1.7) & (orders < 2.3)), (errors, orders)


def test_theorem_12s_value_is_below_sgds_expected_loss():
  # u <= v at every point and time (Jensen), strictly where the loss varies.
  x = np.linspace(-2.5, 2.5, 201)
  b = -double_well_slope(_faces(x))
  V = double_well(x)
  u, _ = pde.optimal_control(V, x, b, beta=3.0, t=2.0, snapshots=4)
  v = pde.expected_value(V, x, b, beta=3.0, t=2.0, snapshots=4)
  assert np.all(u <= v + 1e-12) and np.allclose(u[-1], v[-1])
  # Stepped in log space, u is Cole-Hopf's -2/beta log E exp(-beta V / 2).
  w = pde.expected_value(np.exp(-1.5 * V), x, b, beta=3.0, t=2.0, snapshots=4)
  assert np.allclose(u, -2 / 3.0 * np.log(w), rtol=0, atol=1e-10)
  assert (v[0] - u[0]).min() > 1e-3


@pytest.mark.parametrize("call,match", [
    (lambda x: pde.expected_value(np.ones(x.size - 1), x, np.zeros(x.size - 1), beta=1, t=1),
     "g must be 11 finite values"),
    (lambda x: pde.expected_value(np.ones(x.size), x, np.zeros(x.size), beta=1, t=1),
     "one per face"),
    (lambda x: pde.expected_value(np.ones(x.size), x, np.zeros(x.size - 1), beta=1, t=1,
                                  snapshots=0), "snapshots an int >= 1"),
    (lambda x: pde.optimal_control(np.ones(x.size), x, np.zeros(x.size - 1), beta=np.inf, t=1),
     "beta must be finite"),
])
def test_bad_backward_inputs_are_named(call, match):
  with pytest.raises(ValueError, match=match):
    call(np.linspace(0, 1, 11))
