"""Schedules for the coupling strength."""

from __future__ import annotations

import jax.numpy as jnp
import optax

from entropix import _base


def scoping(
    gamma0: float, gamma1: float, *, end_value: float | None = None,
    inner_lr: float | None = None,
) -> optax.Schedule:
  r"""Scoping: the coupling strength grows geometrically with the update count.

  .. math::
    \gamma_k = \gamma_0 (1 + \gamma_1)^k ,

  for the k-th update, counted from 0 as in every optax schedule (the authors'
  code counts from 1, a factor :math:`1 + \gamma_1` apart). A growing coupling
  shrinks the PDE time :math:`1/\gamma`: the smoothing fades and
  :math:`f_\gamma \to f` (paper Sec. 7.5, Theorem 12). This is
  ``optax.exponential_decay`` with rate :math:`1 + \gamma_1`.

  A growing coupling eventually makes the inner chain of
  :func:`entropix.local_entropy` diverge: its coupling alone does once
  ``inner_lr * gamma`` reaches 2 (1.357 with inner Nesterov momentum 0.9).
  Give ``inner_lr`` to stop gamma at :math:`1/\eta'`, where one inner step
  of the coupling alone takes y all the way to x, which leaves the loss's
  own curvature room below the limit (``train.py`` caps every chain so).

  Example:
    >>> import entropix
    >>> schedule = entropix.scoping(1e-4, 1e-3)
    >>> print(f"{float(schedule(1000)):.3e}")
    2.717e-04
    >>> capped = entropix.scoping(1e-4, 1e-3, inner_lr=0.1)  # stops at 1 / 0.1
    >>> print(f"{float(capped(20_000)):.1f}")
    10.0

  Args:
    gamma0: the coupling at the first update, > 0.
    gamma1: growth per update, > -1 (0 keeps gamma constant; negative decays).
    end_value: if given, gamma stops there (a ceiling when gamma1 > 0, as the
      Parle code's ``g0max``; a floor when gamma1 < 0).
    inner_lr: if given and gamma1 > 0, gamma stops growing at
      ``max(gamma0, 1 / inner_lr)`` (or at ``end_value``, if lower).

  Returns:
    An ``optax.Schedule``, to pass as ``gamma`` to the transforms.
  """
  _base.check("gamma0", gamma0, lambda v: v > 0, "> 0")
  _base.check("gamma1", gamma1, lambda v: v > -1, "> -1")
  if end_value is not None:
    _base.check("end_value", end_value, lambda v: v > 0, "> 0")
  if inner_lr is not None:
    _base.check("inner_lr", inner_lr, lambda v: v > 0, "> 0")
    if gamma1 > 0:  # a cap; a constant or shrinking gamma never reaches it
      # jnp's max and min: gamma0 or inner_lr may be traced (a vmapped sweep).
      cap = jnp.maximum(gamma0, 1.0 / inner_lr)
      end_value = cap if end_value is None else jnp.minimum(end_value, cap)
  return optax.exponential_decay(
      init_value=gamma0,
      transition_steps=1,
      decay_rate=1.0 + gamma1,
      end_value=end_value,
  )
