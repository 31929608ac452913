r"""1-D reference solutions of the paper's PDEs, by quadrature on a grid.

Each function takes a loss ``f`` (a vectorised callable on NumPy arrays), the
points ``x`` where the solution is wanted, a uniform quadrature grid ``y`` wide
enough to hold the mass of the kernel, and returns ``(u, du)``: the solution
and its derivative at ``x``, in float64. They verify the optimizers (tests)
and draw the paper's Figure 1. Conventions follow the library: ``gamma`` is the
coupling strength, the PDE time is :math:`t = 1/\gamma`.

* :func:`viscous_hj`: the local entropy
  :math:`f_\gamma(x) = -\beta^{-1}\log \int G(x-y) e^{-\beta f(y)} dy`, with
  :math:`G` the Gaussian of variance :math:`1/(\beta\gamma)`, solves
  :math:`u_t = -\frac12|u_x|^2 + \frac{1}{2\beta} u_{xx}` (Cole-Hopf, paper
  Lemma 1); :math:`u_x = \gamma(x - \langle y\rangle)`. Log-sum-exp keeps it
  finite for any :math:`\beta`.
* :func:`hopf_lax`: :math:`u(x) = \min_y f(y) + \frac\gamma2 (x-y)^2` solves
  :math:`u_t = -\frac12 |u_x|^2` (paper Lemma 2);
  :math:`u_x = \gamma(x - y^*)`, :math:`y^*` the proximal point.
* :func:`heat`: :math:`v(x) = \mathbb{E}\, f(x + \sigma e)`,
  :math:`e \sim N(0, 1)`, solves :math:`v_t = \frac12 v_{xx}` at
  :math:`t = \sigma^2`.

:func:`fokker_planck` evolves a density instead: the law of
:math:`dx = b(x, t)\,dt + \sqrt{2/\beta}\,dW` (the library's Langevin,
temperature :math:`\beta^{-1}`), by monotone finite volumes;
:func:`expected_value` runs its transpose backwards in time, and
:func:`optimal_control` solves the control problem of the paper's Theorem 12
with it.

Example:
  >>> import numpy as np
  >>> from entropix import pde
  >>> f = lambda y: 0.5 * y ** 2
  >>> u, du = pde.hopf_lax(f, np.array([1.0]), np.linspace(-3, 3, 6001), gamma=1.0)
  >>> print(np.round(du, 6))  # the Moreau envelope of y**2/2 has gradient x/2
  [0.5]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Loss = Callable[[np.ndarray], np.ndarray]
_BLOCK = 2**22  # grid cells per chunk of x, to bound memory


def _grid(y: np.ndarray) -> tuple[np.ndarray, float]:
  y = np.asarray(y, np.float64)
  if y.ndim != 1 or y.size < 3:
    raise ValueError(f"y must be a 1-D grid of at least 3 points, got shape {y.shape}")
  h = np.diff(y)
  if not np.allclose(h, h[0], rtol=1e-6, atol=0) or h[0] <= 0:
    raise ValueError("y must be increasing and uniformly spaced")
  return y, float(h[0])


def _solve(f: Loss, x, y, rows) -> tuple[np.ndarray, np.ndarray]:
  """Applies ``rows(xs, y, h, f(y)) -> (u, du)`` to chunks of the points x."""
  x = np.asarray(x, np.float64)
  y, h = _grid(y)
  fy = np.asarray(f(y), np.float64)
  flat = x.reshape(-1)
  u, du = np.empty_like(flat), np.empty_like(flat)
  step = max(1, _BLOCK // y.size)
  for start in range(0, flat.size, step):
    s = slice(start, start + step)
    u[s], du[s] = rows(flat[s], y, h, fy)
  return u.reshape(x.shape), du.reshape(x.shape)


def _logsumexp(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Row-wise log-sum-exp and the softmax weights."""
  top = a.max(axis=1, keepdims=True)
  w = np.exp(a - top)
  total = w.sum(axis=1, keepdims=True)
  return (top + np.log(total))[:, 0], w / total


def viscous_hj(
    f: Loss, x: np.ndarray, y: np.ndarray, *, gamma: float, beta: float
) -> tuple[np.ndarray, np.ndarray]:
  """Local entropy f_gamma and its gradient at ``x`` (viscous HJ, Cole-Hopf).

  Args:
    f: the loss, vectorised over a NumPy array.
    x: points where the solution is evaluated.
    y: uniform quadrature grid covering the law of y for every x, with a
      spacing below its width (about 1/sqrt(beta (f'' + gamma))): checked.
    gamma: coupling strength (PDE time 1/gamma), > 0.
    beta: inverse temperature (1 / noise**2 in the optimizers), > 0.

  Returns:
    ``(u, du)``, each shaped like ``x``.
  """
  if gamma <= 0 or beta <= 0:
    raise ValueError(f"gamma and beta must be > 0, got gamma={gamma}, beta={beta}")

  def rows(xs, y, h, fy):
    lse, w = _logsumexp(-beta * fy - 0.5 * beta * gamma * (xs[:, None] - y) ** 2)
    resolved = 1.0 / np.sum(w**2, axis=1)  # effective number of grid points
    if np.any(resolved < 3):
      raise ValueError(
          f"y is too coarse for beta={beta}: the law of y spans "
          f"{resolved.min():.1f} grid points at x={xs[resolved.argmin()]}; "
          "refine the grid near the minima, or use hopf_lax (beta = inf)"
      )
    u = -(lse + np.log(h) + 0.5 * np.log(beta * gamma / (2 * np.pi))) / beta
    return u, gamma * (xs - w @ y)

  return _solve(f, x, y, rows)


def hopf_lax(
    f: Loss, x: np.ndarray, y: np.ndarray, *, gamma: float
) -> tuple[np.ndarray, np.ndarray]:
  """Hopf-Lax solution (non-viscous HJ) and its gradient at ``x``.

  The minimiser is located on the grid and refined by the vertex of the
  parabola through its neighbours, accurate to O(h^2) for smooth ``f``.

  Args:
    f: the loss, vectorised over a NumPy array.
    x: points where the solution is evaluated.
    y: uniform grid holding every proximal point strictly inside it.
    gamma: coupling strength (PDE time 1/gamma), > 0.

  Returns:
    ``(u, du)``, each shaped like ``x``.
  """
  if gamma <= 0:
    raise ValueError(f"gamma must be > 0, got {gamma}")

  def rows(xs, y, h, fy):
    g = fy + 0.5 * gamma * (xs[:, None] - y) ** 2
    j = np.argmin(g, axis=1)
    if np.any((j == 0) | (j == y.size - 1)):
      raise ValueError("a proximal point lies on the edge of y: widen the grid")
    r = np.arange(g.shape[0])
    left, mid, right = g[r, j - 1], g[r, j], g[r, j + 1]
    curv = left - 2 * mid + right
    shift = 0.5 * h * (left - right) / curv
    return mid - (left - right) ** 2 / (8 * curv), gamma * (xs - (y[j] + shift))

  return _solve(f, x, y, rows)


def heat(
    f: Loss, x: np.ndarray, y: np.ndarray, *, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
  """Gaussian smoothing E f(x + sigma e) and its gradient at ``x``.

  Args:
    f: the loss, vectorised over a NumPy array.
    x: points where the solution is evaluated.
    y: uniform quadrature grid covering x +- 8 sigma.
    sigma: standard deviation of the kernel, > 0.

  Returns:
    ``(v, dv)``, each shaped like ``x``.
  """
  if sigma <= 0:
    raise ValueError(f"sigma must be > 0, got {sigma}")

  def rows(xs, y, h, fy):
    d = y - xs[:, None]
    kernel = np.exp(-0.5 * (d / sigma) ** 2) * h / (sigma * np.sqrt(2 * np.pi))
    return kernel @ fy, (kernel * d / sigma**2) @ fy

  return _solve(f, x, y, rows)


def _monotone_step(drift: np.ndarray, h: float, diffusion: float) -> float:
  """The largest step that keeps the explicit scheme monotone: every
  coefficient of the update non-negative."""
  out = np.maximum(drift, 0.0)  # what leaves cell i through its right face
  into = np.maximum(-drift, 0.0)  # ... and through its left face
  leaving = np.zeros(drift.size + 1)
  leaving[:-1] += out
  leaving[1:] += into
  rate = leaving.max() / h + 2 * diffusion / h**2
  return np.inf if rate == 0 else 1.0 / rate


def fokker_planck(
    rho0: np.ndarray, x: np.ndarray,
    drift: np.ndarray | Callable[[np.ndarray, float], np.ndarray], *, beta: float, t: float,
    dt: float | None = None,
) -> np.ndarray:
  r"""Evolves a density by the Fokker-Planck equation to time ``t``.

  .. math:: \rho_t = -\partial_x (b\, \rho) + \beta^{-1} \partial_{xx} \rho,

  the law of :math:`dx = b(x, t)\,dt + \sqrt{2/\beta}\,dW`. For the drift
  :math:`b = -V'` its stationary density is Gibbs',
  :math:`e^{-\beta V} / Z`; the drift of a PDE solution u is :math:`-u_x`
  (:func:`viscous_hj`, :func:`hopf_lax`), and a drift that changes with
  time (scoping) is a function of (x, t).

  Finite volumes on the cells centred at ``x`` (Oberman 2006's monotone
  schemes): the drift upwinded at each face, the diffusion by central
  differences, no flux through the two ends. Each step is explicit and at
  most 0.9 times the monotonicity bound :math:`1 / (\max|b| / h + 2
  \beta^{-1} / h^2)`, recomputed at every step for a drift that changes with
  time; so the density stays non-negative and its mass is conserved to
  rounding. First order in h.

  Args:
    rho0: the initial density at ``x``, non-negative (its mass is kept).
    x: uniform, increasing cell centres; the density lives inside
      ``[x[0] - h/2, x[-1] + h/2]``.
    drift: b at the cell faces ``(x[:-1] + x[1:]) / 2``: an array of
      ``x.size - 1`` values, or a function ``drift(faces, s)`` of the faces and
      the time s.
    beta: inverse temperature, > 0 (``np.inf``: no diffusion, transport only).
    t: final time, >= 0.
    dt: the largest step to take (default: the monotonicity bound's 0.9).

  Returns:
    The density at time ``t`` at ``x``, float64.

  Example:
    >>> import numpy as np
    >>> from entropix import pde
    >>> x = np.linspace(-4, 4, 161)
    >>> faces = (x[:-1] + x[1:]) / 2
    >>> rho = pde.fokker_planck(np.exp(-0.5 * (x - 2) ** 2), x, -faces, beta=2.0, t=8.0)
    >>> gibbs = np.exp(-x ** 2)  # exp(-beta V), V = x^2 / 2
    >>> print(np.round(x[rho.argmax()], 6), np.abs(rho / rho.sum() - gibbs / gibbs.sum()).sum() < 0.03)
    0.0 True
  """
  x, h = _grid(x)
  rho = np.array(rho0, np.float64)
  if rho.shape != x.shape or np.any(rho < 0) or not np.all(np.isfinite(rho)):
    raise ValueError(f"rho0 must be {x.size} finite non-negative values, one per cell of x")
  if not beta > 0:
    raise ValueError(f"beta must be > 0 (np.inf for no diffusion), got {beta}")
  if not t >= 0:
    raise ValueError(f"t must be >= 0, got {t}")
  faces = 0.5 * (x[:-1] + x[1:])
  static = not callable(drift)
  b = np.asarray(drift, np.float64) if static else None
  if static and b.shape != faces.shape:
    raise ValueError(f"drift must hold {faces.size} values, one per face between cells of x, "
                     f"or be a function (faces, t) -> drift; got shape {b.shape}")
  diffusion = 0.0 if np.isinf(beta) else 1.0 / beta
  s = 0.0
  while s < t:
    if not static:
      b = np.asarray(drift(faces, s), np.float64)
    step = min(0.9 * _monotone_step(b, h, diffusion), t - s, np.inf if dt is None else dt)
    right, left = _face_rates(b, h, diffusion)
    flux = right * rho[:-1] - left * rho[1:]  # through each face, left to right
    change = np.zeros_like(rho)
    change[:-1] -= flux
    change[1:] += flux
    rho = rho + step / h * change
    s = t if step == t - s else s + step
  return rho


def _face_rates(b: np.ndarray, h: float, diffusion: float) -> tuple[np.ndarray, np.ndarray]:
  """The scheme's rates through each face, per unit of density: to the right
  from the cell on its left, and to the left from the cell on its right (the
  upwinded drift plus the diffusion's central difference, both >= 0)."""
  return np.maximum(b, 0.0) + diffusion / h, np.maximum(-b, 0.0) + diffusion / h


def expected_value(
    g: np.ndarray, x: np.ndarray, drift: np.ndarray, *, beta: float, t: float,
    snapshots: int = 1,
) -> np.ndarray:
  r"""The expected value :math:`v(x, s) = \mathbb{E}[g(x(t)) \mid x(s) = x]`.

  For :math:`dx = b(x)\,ds + \sqrt{2/\beta}\,dW`, v solves the backward
  Kolmogorov equation :math:`-v_s = b\, v_x + \beta^{-1} v_{xx}`,
  :math:`v(\cdot, t) = g`. Each step is the transpose of a
  :func:`fokker_planck` step (same cells, no-flux ends and upwinding), so
  for the same steps (``fokker_planck(..., dt=t / snapshots / n)`` with this
  function's n steps per interval) the two are adjoint to rounding:
  :math:`\sum_i \rho_t(x_i) g(x_i) = \sum_i \rho_0(x_i) v(x_i, 0)`; and
  v is the expectation of g over the scheme's own Markov chain: monotone, a
  constant is kept, first order in h.

  Args:
    g: the terminal values at ``x``.
    x: uniform, increasing cell centres (as :func:`fokker_planck`).
    drift: b at the faces ``(x[:-1] + x[1:]) / 2``, fixed in time.
    beta: inverse temperature, > 0 (``np.inf``: transport only).
    t: the terminal time, >= 0.
    snapshots: v is returned at the times ``s = j t / snapshots``,
      j = 0 .. snapshots; every interval is cut into equal steps inside the
      monotonicity bound.

  Returns:
    Shape ``(snapshots + 1, x.size)``: row j is :math:`v(\cdot, j t / \text{snapshots})`,
    the last row is g.

  Example:
    >>> import numpy as np
    >>> from entropix import pde
    >>> x = np.linspace(-6, 6, 601)
    >>> faces = (x[:-1] + x[1:]) / 2
    >>> v = pde.expected_value(x, x, -faces, beta=2.0, t=1.0)  # Ornstein-Uhlenbeck
    >>> print(np.round(v[0][x == 1.0], 2))  # E[x(1) | x(0) = 1] = exp(-1)
    [0.37]
  """
  out = np.array(g, np.float64)
  if out.shape != np.shape(x) or not np.all(np.isfinite(out)):
    raise ValueError(f"g must be {np.size(x)} finite values, one per cell of x")
  return _backward(out, x, drift, beta, t, snapshots, log=False)


def _backward(g: np.ndarray, x, drift, beta: float, t: float, snapshots: int,
              log: bool) -> np.ndarray:
  """Steps the backward Kolmogorov equation from g at time t to 0; with
  ``log``, g and the result are logarithms (the steps are positive
  combinations of neighbours, so they go through log-sum-exp, which keeps
  values far below float64's smallest)."""
  x, h = _grid(x)
  b = np.asarray(drift, np.float64)
  if b.shape != (x.size - 1,):
    raise ValueError(f"drift must hold {x.size - 1} values, one per face between cells of x; "
                     f"got shape {b.shape}")
  if not beta > 0:
    raise ValueError(f"beta must be > 0 (np.inf for no diffusion), got {beta}")
  if not t >= 0 or not (isinstance(snapshots, int) and snapshots >= 1):
    raise ValueError(f"t must be >= 0 and snapshots an int >= 1, got t={t}, snapshots={snapshots}")
  diffusion = 0.0 if np.isinf(beta) else 1.0 / beta
  interval = t / snapshots
  steps = max(1, int(np.ceil(interval / (0.9 * _monotone_step(b, h, diffusion)))))
  k = interval / steps / h
  right, left = _face_rates(b, h, diffusion)
  # v_i <- stay_i v_i + up_i v_{i+1} + down_i v_{i-1}: what cell i sends
  # through its right face sees the cell on the right, and so on.
  up = k * np.append(right, 0.0)
  down = k * np.insert(left, 0, 0.0)
  stay = 1.0 - up - down  # >= 0 inside the monotonicity bound
  if log:
    with np.errstate(divide="ignore"):
      weights = np.log(stay), np.log(up[:-1]), np.log(down[1:])
  out, values = g, [g]
  for _ in range(snapshots):
    for _ in range(steps):
      if log:
        new = weights[0] + out
        new[:-1] = np.logaddexp(new[:-1], weights[1] + out[1:])
        new[1:] = np.logaddexp(new[1:], weights[2] + out[:-1])
      else:
        new = stay * out
        new[:-1] += up[:-1] * out[1:]
        new[1:] += down[1:] * out[:-1]
      out = new
    values.append(out)
  return np.stack(values[::-1])


def optimal_control(
    terminal: np.ndarray, x: np.ndarray, drift: np.ndarray, *, beta: float, t: float,
    snapshots: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
  r"""The value function and optimal control of the paper's Theorem 12.

  For the controlled Langevin dynamics
  :math:`dx = (b(x) - \alpha)\,ds + \sqrt{2/\beta}\,dW` on
  :math:`[s, t]` and the cost
  :math:`\mathbb{E}[V(x(t)) + \frac12 \int_s^t |\alpha|^2 d\sigma]`, the
  least cost u(x, s) solves the Hamilton-Jacobi-Bellman equation
  :math:`-u_s = b\, u_x - \frac12 |u_x|^2 + \beta^{-1} u_{xx}`,
  :math:`u(\cdot, t) = V`, and the optimal control is
  :math:`\alpha = u_x`. Cole-Hopf makes it linear:
  :math:`u = -\frac2\beta \log w`, with w the expected value
  (:func:`expected_value`) of :math:`e^{-\beta V / 2}` under the uncontrolled
  dynamics, stepped here in log space so that no cold beta or steep V
  underflows it. With :math:`b = -f'` (SGD), Theorem 12 compares u with SGD's
  :math:`v = \mathbb{E}[V(x(t))]`: :math:`u \le v` is Jensen's inequality.

  Args:
    terminal: V at ``x``.
    x, drift, beta, t, snapshots: as :func:`expected_value` (beta finite).

  Returns:
    ``(u, du)``: u at ``x``, shape ``(snapshots + 1, x.size)``, and the
    control :math:`u_x` at the faces, shape ``(snapshots + 1, x.size - 1)``,
    row j at time ``j t / snapshots``.

  Example:
    >>> import numpy as np
    >>> from entropix import pde
    >>> x = np.linspace(-3, 3, 301)
    >>> u, du = pde.optimal_control(x ** 2, x, np.zeros(300), beta=4.0, t=1.0)
    >>> print(np.round(u[0][x == 1.0], 2))  # x^2 / (1 + 2 t) + log(1 + 2 t) / beta
    [0.61]
  """
  if not 0 < beta < np.inf:
    raise ValueError(f"beta must be finite and > 0, got {beta}")
  v = np.asarray(terminal, np.float64)
  if not np.all(np.isfinite(v)):
    raise ValueError("terminal must be finite")
  if v.shape != np.shape(x):
    raise ValueError(f"terminal must hold {np.size(x)} values, one per cell of x")
  # log w, stepped in log space: exp(-beta V / 2) underflows for a steep V or
  # a cold beta, its logarithm does not.
  u = -2.0 / beta * _backward(-0.5 * beta * v, x, drift, beta, t, snapshots, log=True)
  h = float(np.asarray(x)[1] - np.asarray(x)[0])
  return u, np.diff(u, axis=1) / h