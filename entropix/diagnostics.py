r"""The shape of the loss around a point: curvature, local entropy, sharpness.

The paper's Sec. 6 argues that the viscous Hamilton-Jacobi smoothing favours
wide minima: the harmonic mean of the Hessian's eigenvalues (Lemmas 19-20),
bounded by that of its diagonal, measures how wide. This module measures
those quantities at any point, for any ``loss_fn(params, batch)`` and a stack
of minibatches ``batches`` (a leading axis, as
:func:`entropix.minibatch_grad_fn` takes). The loss is their mean,

.. math:: f(x) = \frac{1}{n} \sum_{b=1}^{n} \ell(x; B_b),

and :math:`H = \nabla^2 f(x)` its Hessian. Each Hessian-vector product scans
the minibatches (forward over reverse mode), so memory is that of one
minibatch, and accumulates in float32 whatever the params' dtypes; vectors
are the params flattened (``jax.flatten_util.ravel_pytree``). Every function
takes its PRNG key explicitly, and those that take more than a few seconds
print a progress line on stderr (``progress=False`` silences it).
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from entropix import _noise

LossFn = Callable[[Any, Any], jax.Array]


class Estimate(NamedTuple):
  """A Monte Carlo estimate and its standard error."""

  value: Any
  stderr: Any


class SpectralDensity(NamedTuple):
  r"""The Hessian's eigenvalue density by stochastic Lanczos quadrature.

  ``density`` on ``grid`` integrates to 1. ``nodes`` and ``weights`` (one
  row per probe) are the quadrature itself: ``(weights * nodes**p).sum(1)``
  is the probe's :math:`v^\top H^p v / |v|^2`, exact for :math:`p < 2m`, and
  its mean over probes estimates the spectrum's p-th moment
  :math:`\operatorname{tr}(H^p) / d`.
  """

  grid: np.ndarray
  density: np.ndarray
  nodes: np.ndarray
  weights: np.ndarray


class LocalEntropy(NamedTuple):
  r"""Local entropy :math:`f_\gamma(x)` on a grid of gamma, with its pieces."""

  gammas: np.ndarray
  values: np.ndarray  # f_gamma(x), anchored at f(x) for the largest gamma
  stderr: np.ndarray  # of each value, from the chains' batch means
  mean_sq_distance: np.ndarray  # <|x - y|^2> under each gamma's chain


class _Progress:
  """A progress line on stderr, shown once the work has taken 2 s."""

  def __init__(self, label: str, total: int, enabled: bool):
    self.label, self.total, self.enabled = label, total, enabled
    self.start, self.shown, self.done = time.perf_counter(), False, 0

  def __call__(self, done: int) -> None:
    elapsed = time.perf_counter() - self.start
    if self.enabled and done != self.done and (self.shown or elapsed > 2.0):
      self.shown = True
      left = elapsed / max(done, 1) * (self.total - done)
      print(f"\r{self.label}: {done}/{self.total}, {elapsed:.0f} s, {left:.0f} s left",
            end="\n" if done == self.total else "", file=sys.stderr, flush=True)
    self.done = done


def _num_batches(batches: Any) -> int:
  sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in jax.tree.leaves(batches)}
  if len(sizes) != 1 or None in sizes or 0 in sizes:
    raise ValueError("batches must stack minibatches along a leading axis of one size > 0 in "
                     f"every leaf, got leading sizes {sorted(map(str, sizes))}")
  return sizes.pop()


def _flat(params: Any) -> tuple[jax.Array, Callable[[jax.Array], Any]]:
  flat, unravel = ravel_pytree(params)
  return flat, lambda v: unravel(v.astype(flat.dtype))


def _mean_over(batches: Any, fn: Callable[[Any], jax.Array], like: jax.Array) -> jax.Array:
  """The mean over the minibatches of ``fn(batch)``, scanned, in float32."""
  n = _num_batches(batches)
  total, _ = lax.scan(lambda acc, b: (acc + fn(b).astype(jnp.float32), None),
                      jnp.zeros(like.shape, jnp.float32), batches)
  return total / n


def _product(loss_fn: LossFn, point: Any, batches: Any, v: jax.Array) -> jax.Array:
  flat, unravel = ravel_pytree(point)
  tangent = unravel(v.astype(flat.dtype))

  def one(batch):
    grad = jax.grad(lambda p: loss_fn(p, batch))
    return ravel_pytree(jax.jvp(grad, (point,), (tangent,))[1])[0]

  return _mean_over(batches, one, flat)


@functools.lru_cache(maxsize=8)
def _compiled_product(loss_fn: LossFn) -> Callable[..., jax.Array]:
  # One jitted product per loss: every measurement of a point (top
  # eigenvalues, trace, each layer's block, ...) reuses its compilation.
  return jax.jit(functools.partial(_product, loss_fn))


def _flat_hvp(loss_fn: LossFn, params: Any, batches: Any) -> Callable[[jax.Array], jax.Array]:
  _num_batches(batches)
  product = _compiled_product(loss_fn)
  return lambda v: product(params, batches, jnp.asarray(v, jnp.float32))


def hvp(loss_fn: LossFn, params: Any, batches: Any) -> Callable[[Any], Any]:
  r"""The Hessian-vector product :math:`v \mapsto H v` of the mean loss.

  Forward over reverse mode, one minibatch at a time under ``lax.scan``,
  compiled once for all the ``v`` it is given; about 2 to 3 backprops per
  minibatch (``benchmarks/diagnostics.py`` measures it).

  Args:
    loss_fn: ``loss_fn(params, batch)``, a scalar.
    params: the point x, any pytree.
    batches: the minibatches, stacked along a leading axis.

  Returns:
    A function from a pytree shaped like ``params`` to :math:`Hv` (float32
    leaves, shaped like ``params``).

  Example:
    >>> import jax.numpy as jnp
    >>> from entropix import diagnostics
    >>> loss = lambda p, b: 0.5 * jnp.sum(b * p["w"] ** 2)   # H = diag(mean of b)
    >>> product = diagnostics.hvp(loss, {"w": jnp.ones(3)}, jnp.array([[1.0, 2, 3], [3, 2, 1]]))
    >>> product({"w": jnp.ones(3)})["w"]
    Array([2., 2., 2.], dtype=float32)
  """
  product = _flat_hvp(loss_fn, params, batches)
  unravel = ravel_pytree(jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params))[1]
  return lambda v: unravel(product(ravel_pytree(v)[0]))


@jax.jit
def _orthogonalise(basis: jax.Array, w: jax.Array) -> jax.Array:
  # Twice: once is not enough in float32 when w is nearly in the span.
  w = w - basis.T @ (basis @ w)
  return w - basis.T @ (basis @ w)


def _lanczos(product: Callable[[jax.Array], jax.Array], start: jax.Array, steps: int,
             progress: _Progress) -> tuple[np.ndarray, np.ndarray, jax.Array]:
  """Lanczos with full reorthogonalisation: the tridiagonal's (alphas, betas), and the basis."""
  basis = jnp.zeros((steps, start.size), jnp.float32).at[0].set(start / jnp.linalg.norm(start))
  alphas, betas = [], []
  for i in range(steps):
    w = product(basis[i])
    alpha = float(w @ basis[i])
    alphas.append(alpha)
    w = _orthogonalise(basis, w)
    beta = float(jnp.linalg.norm(w))
    progress(i + 1)
    # An invariant subspace (all of it, when steps reaches the dimension).
    if i + 1 == steps or beta <= 1e-6 * max(abs(a) for a in alphas):
      break
    betas.append(beta)
    basis = basis.at[i + 1].set(w / beta)
  progress(progress.total)
  return np.array(alphas, np.float64), np.array(betas, np.float64), basis[:len(alphas)]


def _integral(y: np.ndarray, x: np.ndarray) -> np.ndarray:
  """The trapezoid rule along the last axis (numpy 1.26 has no np.trapezoid)."""
  return np.sum(0.5 * (y[..., 1:] + y[..., :-1]) * np.diff(x), axis=-1)


def _tridiagonal_eigh(alphas: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  t = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
  return np.linalg.eigh(t)


def _steps(dim: int, num_iterations: int | None, k: int) -> int:
  steps = min(dim, max(4 * k, k + 60)) if num_iterations is None else num_iterations
  if not 1 <= steps <= dim:
    raise ValueError(f"num_iterations must be in 1 .. {dim} (the number of parameters), "
                     f"got {num_iterations}")
  return steps


class _Block(NamedTuple):
  """The coordinates of the flat params a mask selects, and the maps between
  the block's vectors and the whole's."""

  size: int
  index: jax.Array | None  # None: every coordinate
  full_size: int

  def product(self, whole: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
    """The block's Hessian-vector product H_SS u from the whole's."""
    if self.index is None:
      return whole
    return lambda u: whole(self.embed(u))[self.index]

  def embed(self, u: jax.Array) -> jax.Array:
    """A block vector as a whole one, zero outside the block."""
    if self.index is None:
      return u
    return jnp.zeros(self.full_size, u.dtype).at[self.index].set(u)


def _block(params: Any, mask: Any) -> _Block:
  """The block of the flat params that ``mask`` selects (all of them for None)."""
  size = ravel_pytree(params)[0].size
  if mask is None:
    return _Block(size, None, size)
  if callable(mask):
    mask = mask(params)
  try:  # a mask of params' structure, or a prefix of it (one bool per subtree)
    chosen = jax.tree.map(lambda m, sub: jax.tree.map(lambda p: jnp.full(jnp.shape(p), bool(m)),
                                                      sub), mask, params)
  except (ValueError, TypeError) as e:
    raise ValueError(f"mask must be a pytree of bools with the structure of params or a "
                     f"prefix of it, got {mask!r}: {e}") from None
  flags = np.asarray(ravel_pytree(chosen)[0], bool)
  if flags.size != size:
    raise ValueError(f"mask must be a pytree of bools with the structure of params or a "
                     f"prefix of it, got {mask!r}")
  if not flags.any():
    raise ValueError("mask selects no parameter: nothing to restrict the Hessian to")
  return _Block(int(flags.sum()), jnp.asarray(np.flatnonzero(flags)), size)


def hessian_eigenvalues(
    loss_fn: LossFn,
    params: Any,
    batches: Any,
    k: int = 10,
    *,
    key: jax.Array,
    which: str = "largest",
    num_iterations: int | None = None,
    vectors: bool = False,
    mask: Any = None,
    progress: bool = True,
) -> np.ndarray | tuple[np.ndarray, Any]:
  r"""The k largest (or smallest) eigenvalues of the Hessian, by Lanczos.

  Lanczos from a random start, each new vector orthogonalised against all
  the previous ones; the Ritz values (the eigenvalues of the tridiagonal
  matrix) approximate the extreme eigenvalues first. With
  ``num_iterations`` equal to the number of parameters they are the
  spectrum, to float32 precision.

  Args:
    loss_fn: ``loss_fn(params, batch)``, a scalar.
    params: the point x.
    batches: the minibatches, stacked along a leading axis.
    k: how many eigenvalues.
    key: PRNG key of the start vector.
    which: ``"largest"`` (descending) or ``"smallest"`` (ascending: the most
      negative first).
    num_iterations: Lanczos steps, one Hessian-vector product each; default
      ``max(4 k, k + 60)``, at most the number of parameters.
    vectors: also return the eigenvectors (the Ritz vectors, of unit norm):
      where in the parameters each curvature lives.
    mask: restrict the Hessian to a group of parameters (a layer): a pytree
      of bools with the structure of ``params`` or a prefix of it, or a
      function of ``params`` returning one, as ``optax.masked`` takes. The
      eigenvalues are then those of the diagonal block :math:`H_{SS}` of
      the selected parameters S, the others held at ``params`` (``k`` and
      ``num_iterations`` count S's parameters; eigenvectors are zero
      outside S). Default: all of H.
    progress: print a progress line on stderr.

  Returns:
    A float64 array of k eigenvalues; with ``vectors``, ``(values, vecs)``,
    ``vecs`` a pytree like ``params`` (float32) with a leading axis of k,
    ``vecs[i]`` the eigenvector of ``values[i]``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from entropix import diagnostics
    >>> loss = lambda p, b: 0.5 * jnp.sum(b * p ** 2)   # H = diag(1, ..., 8)
    >>> batches = jnp.arange(1.0, 9.0)[None]
    >>> diagnostics.hessian_eigenvalues(loss, jnp.zeros(8), batches, 3,
    ...                                 key=jax.random.key(0)).round(4)
    array([8., 7., 6.])

    One layer's block (here the leaf "b", H = diag(5, 6, 7, 8) there):

    >>> two = lambda p, b: loss(jnp.concatenate([p["a"], p["b"]]), b)
    >>> params = {"a": jnp.zeros(4), "b": jnp.zeros(4)}
    >>> diagnostics.hessian_eigenvalues(two, params, batches, 2, key=jax.random.key(0),
    ...                                 mask={"a": False, "b": True}).round(4)
    array([8., 7.])
  """
  if which not in ("largest", "smallest"):
    raise ValueError(f"which must be 'largest' or 'smallest', got {which!r}")
  block = _block(params, mask)
  if not 1 <= k <= block.size:
    raise ValueError(f"k must be in 1 .. {block.size} (the number of parameters), got {k}")
  steps = _steps(block.size, num_iterations, k)
  start = jax.random.normal(key, (block.size,), jnp.float32)
  alphas, betas, basis = _lanczos(block.product(_flat_hvp(loss_fn, params, batches)), start,
                                  steps, _Progress("hessian_eigenvalues", steps, progress))
  ritz, coefficients = _tridiagonal_eigh(alphas, betas)
  order = np.arange(ritz.size)[::-1][:k] if which == "largest" else np.arange(ritz.size)[:k]
  if not vectors:
    return ritz[order]
  flat_vectors = jnp.asarray(coefficients[:, order].T, jnp.float32) @ basis
  _, unravel = ravel_pytree(jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params))
  return ritz[order], jax.vmap(lambda v: unravel(block.embed(v)))(flat_vectors)


def _rademacher(key: jax.Array, dim: int) -> jax.Array:
  return jax.random.rademacher(key, (dim,), jnp.float32)


def hessian_trace(
    loss_fn: LossFn, params: Any, batches: Any, *, key: jax.Array, samples: int = 64,
    mask: Any = None, progress: bool = True,
) -> Estimate:
  r"""Hutchinson's estimate of :math:`\operatorname{tr} H`.

  The mean of :math:`v^\top H v` over Rademacher probes v (entries
  :math:`\pm 1`), unbiased, with the standard error of that mean.

  Args:
    loss_fn: ``loss_fn(params, batch)``, a scalar.
    params: the point x.
    batches: the minibatches, stacked along a leading axis.
    key: PRNG key of the probes.
    samples: the number of probes (one Hessian-vector product each), >= 2.
    mask: the trace of the diagonal block of a group of parameters only, as
      :func:`hessian_eigenvalues` takes it (its probes are zero outside the
      group, so the other blocks add no noise). Default: all of H.
    progress: print a progress line on stderr.

  Returns:
    ``Estimate(value, stderr)``, floats.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from entropix import diagnostics
    >>> loss = lambda p, b: 0.5 * jnp.sum(b * p ** 2)   # diagonal: exact
    >>> diagnostics.hessian_trace(loss, jnp.zeros(4), jnp.array([[1.0, 2, 3, 4]]),
    ...                           key=jax.random.key(0), samples=8)
    Estimate(value=10.0, stderr=0.0)
  """
  if samples < 2:
    raise ValueError(f"samples must be >= 2 (for a standard error), got {samples}")
  block = _block(params, mask)
  product = block.product(_flat_hvp(loss_fn, params, batches))
  bar = _Progress("hessian_trace", samples, progress)
  values = []
  for i, probe_key in enumerate(jax.random.split(key, samples)):
    v = _rademacher(probe_key, block.size)
    values.append(float(v @ product(v)))
    bar(i + 1)
  values = np.array(values)
  return Estimate(float(values.mean()), float(values.std(ddof=1) / np.sqrt(samples)))


def hessian_diagonal(
    loss_fn: LossFn, params: Any, batches: Any, *, key: jax.Array | None = None,
    samples: int = 64, exact: bool = False, progress: bool = True,
) -> Estimate:
  r"""The Hessian's diagonal, shaped like ``params``.

  ``exact=True`` takes one Hessian-vector product per parameter (small
  models). Otherwise Hutchinson's diagonal estimator, the mean of
  :math:`v \odot H v` over Rademacher probes, unbiased, each entry with its
  standard error (its variance is the sum of the squared off-diagonal
  entries of its row, over ``samples``).

  Args:
    loss_fn: ``loss_fn(params, batch)``, a scalar.
    params: the point x.
    batches: the minibatches, stacked along a leading axis.
    key: PRNG key of the probes (not needed with ``exact``).
    samples: the number of probes, >= 2.
    exact: compute each entry as :math:`e_i^\top H e_i`.
    progress: print a progress line on stderr.

  Returns:
    ``Estimate(diagonal, stderr)``, pytrees shaped like ``params`` (float32;
    the standard errors are zero when exact).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from entropix import diagnostics
    >>> loss = lambda p, b: 0.5 * jnp.sum(b * p ** 2)
    >>> diagnostics.hessian_diagonal(loss, jnp.zeros(3), jnp.array([[1.0, 2, 3]]),
    ...                              exact=True).value
    Array([1., 2., 3.], dtype=float32)
  """
  flat, _ = ravel_pytree(params)
  unravel = ravel_pytree(jax.tree.map(lambda p: jnp.asarray(p, jnp.float32), params))[1]
  product = _flat_hvp(loss_fn, params, batches)
  if exact:
    bar = _Progress("hessian_diagonal", flat.size, progress)
    diagonal = np.empty(flat.size, np.float32)
    for i in range(flat.size):
      diagonal[i] = product(jnp.zeros(flat.size, jnp.float32).at[i].set(1.0))[i]
      bar(i + 1)
    return Estimate(unravel(jnp.asarray(diagonal)), unravel(jnp.zeros(flat.size)))
  if key is None:
    raise TypeError("hessian_diagonal needs key= for its probes (or exact=True)")
  if samples < 2:
    raise ValueError(f"samples must be >= 2 (for a standard error), got {samples}")
  bar = _Progress("hessian_diagonal", samples, progress)
  total = jnp.zeros(flat.size, jnp.float32)
  total_sq = jnp.zeros(flat.size, jnp.float32)
  for i, probe_key in enumerate(jax.random.split(key, samples)):
    v = _rademacher(probe_key, flat.size)
    term = v * product(v)
    total, total_sq = total + term, total_sq + term**2
    bar(i + 1)
  mean = total / samples
  var = jnp.maximum(total_sq / samples - mean**2, 0.0) * samples / (samples - 1)
  return Estimate(unravel(mean), unravel(jnp.sqrt(var / samples)))


def harmonic_mean(values: Any) -> tuple[float, int]:
  r"""The harmonic mean of the positive entries of a pytree, and their count.

  :math:`n_+ / \sum_{v_i > 0} 1 / v_i`: the paper's Lemma 19 quantity when
  ``values`` is the Hessian's diagonal (or its spectrum). Small positive
  entries dominate it, so an estimated diagonal's noise lowers it.

  Example:
    >>> from entropix import diagnostics
    >>> diagnostics.harmonic_mean({"a": [1.0, 4.0], "b": [-2.0, 4.0]})
    (2.0, 3)
  """
  flat = np.concatenate([np.ravel(np.asarray(v, np.float64)) for v in jax.tree.leaves(values)])
  positive = flat[flat > 0]
  if positive.size == 0:
    return 0.0, 0
  return float(positive.size / np.sum(1.0 / positive)), int(positive.size)


def spectral_density(
    loss_fn: LossFn, params: Any, batches: Any, *, key: jax.Array, num_iterations: int = 80,
    probes: int = 4, grid: Sequence[float] | np.ndarray | None = None,
    sigma: float | None = None, progress: bool = True,
) -> SpectralDensity:
  r"""The eigenvalue density of the Hessian by stochastic Lanczos quadrature.

  For each Rademacher probe v, ``num_iterations`` Lanczos steps from v give
  a tridiagonal T whose eigenvalues :math:`\theta_j` and squared first
  eigenvector components :math:`\tau_j` are a Gauss quadrature of the
  spectral measure :math:`v^\top \delta(H - t) v / |v|^2`; the density is
  their mean over probes, each node smoothed by a Gaussian of width
  ``sigma`` (Ghorbani, Krishnan and Xiao 2019).

  Args:
    loss_fn: ``loss_fn(params, batch)``, a scalar.
    params: the point x.
    batches: the minibatches, stacked along a leading axis.
    key: PRNG key of the probes.
    num_iterations: Lanczos steps per probe (at most the number of params).
    probes: the number of probes.
    grid: where to evaluate the density; default 1,001 points spanning the
      nodes with a margin of 3 ``sigma``.
    sigma: the kernel width; default 1/100 of the nodes' range.
    progress: print a progress line on stderr.

  Returns:
    A :class:`SpectralDensity`: ``density`` on ``grid``, normalised to
    integrate to 1 there (trapezoid rule), and the quadrature.
  """
  flat, _ = ravel_pytree(params)
  steps = _steps(flat.size, num_iterations, 1)
  product = _flat_hvp(loss_fn, params, batches)
  nodes, weights = [], []
  for i, probe_key in enumerate(jax.random.split(key, probes)):
    alphas, betas, _ = _lanczos(product, _rademacher(probe_key, flat.size), steps,
                             _Progress(f"spectral_density, probe {i + 1}/{probes}", steps,
                                       progress))
    theta, vectors = _tridiagonal_eigh(alphas, betas)
    pad = steps - theta.size  # a probe whose Krylov space closed early
    nodes.append(np.pad(theta, (0, pad), constant_values=theta[-1]))
    weights.append(np.pad(vectors[0] ** 2, (0, pad)))
  nodes, weights = np.array(nodes), np.array(weights)
  span = max(nodes.max() - nodes.min(), 1e-12)
  sigma = span / 100 if sigma is None else float(sigma)
  if sigma <= 0:
    raise ValueError(f"sigma must be > 0, got {sigma}")
  if grid is None:
    grid = np.linspace(nodes.min() - 3 * sigma, nodes.max() + 3 * sigma, 1001)
  grid = np.asarray(grid, np.float64)
  kernel = np.exp(-0.5 * ((grid[None, None] - nodes[..., None]) / sigma) ** 2)
  per_probe = (weights[..., None] * kernel).sum(1)
  per_probe /= _integral(per_probe, grid)[:, None]
  return SpectralDensity(grid, per_probe.mean(0), nodes, weights)


def local_entropy_estimate(
    loss_fn: LossFn, params: Any, batches: Any, gammas: Sequence[float] | np.ndarray, *,
    noise: float, inner_lr: float, key: jax.Array, steps: int = 2000, burn_in: int = 500,
    progress: bool = True,
) -> LocalEntropy:
  r"""The local entropy :math:`f_\gamma(x)` by thermodynamic integration.

  With temperature :math:`\varepsilon^2` (``noise`` :math:`= \varepsilon`)
  and d parameters,

  .. math::
    f_\gamma(x) = -\varepsilon^2 \log \Big[ \big(\tfrac{\gamma}{2\pi\varepsilon^2}\big)^{d/2}
      \int e^{-(f(y) + \frac{\gamma}{2} |x - y|^2) / \varepsilon^2} \, dy \Big],

  normalised so that a flat loss has :math:`f_\gamma = f`; it tends to
  :math:`f(x)` as :math:`\gamma \to \infty`. Its derivative is a mean under
  the Gibbs measure that the Langevin chain of :func:`entropix.local_entropy`
  samples,

  .. math::
    \frac{\partial f_\gamma}{\partial \gamma} = \tfrac12 \langle |x - y|^2 \rangle
      - \frac{d\, \varepsilon^2}{2 \gamma},

  the second term being the same mean for the flat reference. For each gamma
  a chain :math:`y_{k+1} = y_k - \eta (\nabla \ell(y_k; B_k) + \gamma (y_k - x))
  + \sqrt{2\eta}\, \varepsilon\, \xi_k` (minibatches in turn, the library's
  noise), started from the flat reference's stationary law, estimates the
  mean after ``burn_in`` steps, and the same chain on a
  flat loss gives the reference (so the step size's bias cancels to first
  order in :math:`\eta`); the integral from each
  gamma to the largest (trapezoid rule in :math:`\log\gamma`) is then
  subtracted from :math:`f(x)`. Anchoring the largest gamma at :math:`f(x)`
  errs by about :math:`\varepsilon^2 \operatorname{tr} H / (2\gamma_{max})`.
  Minibatch gradients add their own noise to the chain, which raises its
  temperature: a small ``inner_lr`` keeps that small. A direction of
  curvature a relaxes in about :math:`1 / (\eta (a + \gamma))` steps: those
  that do not within ``burn_in`` stay nearer the flat reference, so the
  estimate then errs towards a flatter minimum.

  Args:
    loss_fn: ``loss_fn(params, batch)``, a scalar.
    params: the point x.
    batches: the minibatches, stacked along a leading axis.
    gammas: at least two coupling strengths > 0.
    noise: the noise scale :math:`\varepsilon` > 0.
    inner_lr: the chain's step size :math:`\eta`; stable below
      :math:`2 / (\lambda_{max} + \gamma)`.
    key: PRNG key of the chains.
    steps: chain steps per gamma, one gradient each.
    burn_in: steps dropped before averaging.
    progress: print a progress line on stderr.

  Returns:
    A :class:`LocalEntropy`, sorted by gamma.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from entropix import diagnostics
    >>> loss = lambda p, b: 0.5 * jnp.sum(p ** 2)   # H = I
    >>> est = diagnostics.local_entropy_estimate(
    ...     loss, jnp.zeros(4), jnp.zeros(1), [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0], noise=0.5,
    ...     inner_lr=0.01, key=jax.random.key(0), steps=20000, progress=False)
    >>> exact = lambda g: 0.5 * jnp.log(1 + 1 / g)   # d eps^2 / 2 = 0.5
    >>> print(f"{est.values[0]:.2f} {exact(1.0) - exact(64.0):.2f}")  # anchored at gamma = 64
    0.34 0.34
  """
  gammas = np.sort(np.asarray(gammas, np.float64))
  if gammas.size < 2 or gammas[0] <= 0:
    raise ValueError(f"gammas must hold at least two values > 0, got {gammas.tolist()}")
  for name, value in (("noise", noise), ("inner_lr", inner_lr)):
    if not value > 0:
      raise ValueError(f"{name} must be > 0, got {value}")
  if inner_lr * gammas[-1] >= 2:
    raise ValueError(f"inner_lr * max(gammas) = {inner_lr * gammas[-1]:g}: the chain diverges at "
                     "or beyond 2 (and below 2 / (lambda_max + gamma)); lower inner_lr")
  if not 0 <= burn_in < steps:
    raise ValueError(f"burn_in must be in 0 .. steps - 1 = {steps - 1}, got {burn_in}")
  n = _num_batches(batches)
  x, unravel = _flat(params)
  x = x.astype(jnp.float32)

  @jax.jit
  def chain(gamma, key):
    def step(y, k):
      batch = jax.tree.map(lambda b: b[k % n], batches)
      grad = ravel_pytree(jax.grad(loss_fn)(unravel(y), batch))[0].astype(jnp.float32)
      xi = _noise.standard_noise(jax.random.fold_in(key, k), y.shape, "binomial")
      y = y - inner_lr * (grad + gamma * (y - x)) + jnp.sqrt(2 * inner_lr) * noise * xi
      return y, jnp.sum((y - x) ** 2)

    # Start from the flat reference's stationary law: directions flatter than
    # gamma are then in equilibrium from the first step, and only the curved
    # ones must relax (in about 1 / (eta * curvature) steps).
    spread = noise / jnp.sqrt(gamma * (1 - inner_lr * gamma / 2))
    start = x + spread * jax.random.normal(jax.random.fold_in(key, steps), x.shape)
    _, distances = lax.scan(step, start, jnp.arange(steps))
    return distances[burn_in:]

  bar = _Progress("local_entropy_estimate", gammas.size, progress)
  means, errors = [], []
  for i, gamma in enumerate(gammas):
    kept = np.asarray(chain(jnp.float32(gamma), jax.random.fold_in(key, i)), np.float64)
    blocks = np.array_split(kept, 10)  # batch means: the chain's samples are correlated
    means.append(kept.mean())
    errors.append(np.std([b.mean() for b in blocks], ddof=1) / np.sqrt(len(blocks)))
    bar(i + 1)
  means, errors = np.array(means), np.array(errors)
  # The flat reference is the same discretised chain on a flat loss, whose
  # stationary <|x - y|^2> is d eps^2 / (gamma (1 - eta gamma / 2)): the step
  # size's bias then cancels to first order.
  flat_reference = x.size * noise**2 / (gammas * (1 - inner_lr * gammas / 2))
  derivative = 0.5 * (means - flat_reference)
  # Integrate in log(gamma): d f / d log gamma = gamma d f / d gamma.
  logs, scaled = np.log(gammas), gammas * derivative
  pieces = 0.5 * (scaled[1:] + scaled[:-1]) * np.diff(logs)
  to_top = np.concatenate([np.cumsum(pieces[::-1])[::-1], [0.0]])
  # The chains are independent: each gamma's error enters every integral
  # from below it with its trapezoid weight.
  step = np.diff(logs)
  err_to_top = np.zeros(gammas.size)
  for j in range(gammas.size - 1):
    weights = np.zeros(gammas.size)
    weights[j:-1] += 0.5 * step[j:]
    weights[j + 1:] += 0.5 * step[j:]
    err_to_top[j] = np.sqrt(np.sum((weights * 0.5 * gammas * errors) ** 2))
  at_x = float(_mean_over(batches, lambda b: loss_fn(params, b), jnp.zeros(())))
  return LocalEntropy(gammas, at_x - to_top, err_to_top, means)


def perturbation_sharpness(
    loss_fn: LossFn, params: Any, batches: Any, sigmas: Sequence[float] | np.ndarray, *,
    key: jax.Array, samples: int = 16, relative: bool = False, progress: bool = True,
) -> Estimate:
  r"""The mean increase of the loss under Gaussian perturbations of each radius.

  :math:`\mathbb{E}_\xi [f(x + \sigma \xi)] - f(x)`, :math:`\xi \sim N(0, I)`
  over all the parameters, for each :math:`\sigma` in ``sigmas``; for small
  :math:`\sigma` it is :math:`\sigma^2 \operatorname{tr} H / 2`.

  With ``relative=True`` each parameter moves in proportion to its size,
  :math:`\mathbb{E}_\xi [f(x + \sigma\, |x| \odot \xi)] - f(x)`, for small
  :math:`\sigma` :math:`\sigma^2 \sum_i H_{ii} x_i^2 / 2` (the adaptive
  sharpness of Kwon et al. 2021): unchanged when a rescaling of the
  parameters leaves the function unchanged (a layer's weights times c and the
  next one's divided by c, or any weights before a normalisation), which the
  Hessian's eigenvalues, trace and ``relative=False`` are not. Parameters
  equal to 0 are not moved.

  Args:
    loss_fn: ``loss_fn(params, batch)``, a scalar.
    params: the point x.
    batches: the minibatches, stacked along a leading axis.
    sigmas: perturbation radii (per parameter standard deviations).
    key: PRNG key of the perturbations.
    samples: perturbations per radius, >= 2.
    relative: scale each parameter's perturbation by its magnitude.
    progress: print a progress line on stderr.

  Returns:
    ``Estimate(value, stderr)``, arrays over ``sigmas``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from entropix import diagnostics
    >>> loss = lambda p, b: 0.5 * jnp.sum(p ** 2)   # increase sigma^2 d / 2 = 50 sigma^2
    >>> est = diagnostics.perturbation_sharpness(loss, jnp.zeros(100), jnp.zeros(1), [0.1],
    ...                                          key=jax.random.key(0), samples=64)
    >>> bool(abs(est.value[0] - 0.5) < 3 * est.stderr[0])
    True
  """
  if samples < 2:
    raise ValueError(f"samples must be >= 2 (for a standard error), got {samples}")
  x, unravel = _flat(params)
  x = x.astype(jnp.float32)

  @jax.jit
  def mean_loss(point):
    return _mean_over(batches, lambda b: loss_fn(unravel(point), b), jnp.zeros(()))

  base = float(mean_loss(x))
  scale = jnp.abs(x) if relative else 1.0
  sigmas = np.asarray(sigmas, np.float64)
  bar = _Progress("relative_sharpness" if relative else "perturbation_sharpness",
                  sigmas.size * samples, progress)
  values, errors = [], []
  for i, sigma in enumerate(sigmas):
    increases = []
    for j, k in enumerate(jax.random.split(jax.random.fold_in(key, i), samples)):
      xi = jax.random.normal(k, x.shape, jnp.float32)
      increases.append(float(mean_loss(x + sigma * scale * xi)) - base)
      bar(i * samples + j + 1)
    values.append(np.mean(increases))
    errors.append(np.std(increases, ddof=1) / np.sqrt(samples))
  return Estimate(np.array(values), np.array(errors))
