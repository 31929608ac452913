"""Schedules for the coupling strength."""

import optax

from entropix import _base


def scoping(
    gamma0: float, gamma1: float, *, end_value: float | None = None
) -> optax.Schedule:
  r"""Scoping: the coupling strength grows geometrically with the update count.

  .. math::
    \gamma_k = \gamma_0 (1 + \gamma_1)^k ,

  for the k-th update, counted from 0 as in every optax schedule (the authors'
  code counts from 1, a factor :math:`1 + \gamma_1` apart). A growing coupling
  shrinks the PDE time :math:`1/\gamma`: the smoothing fades and
  :math:`f_\gamma \to f` (paper Sec. 7.5, Theorem 12). This is
  ``optax.exponential_decay`` with rate :math:`1 + \gamma_1`.

  Example:
    >>> import entropix
    >>> schedule = entropix.scoping(1e-4, 1e-3)
    >>> print(f"{float(schedule(1000)):.3e}")
    2.717e-04

  Args:
    gamma0: the coupling at the first update, > 0.
    gamma1: growth per update, > -1 (0 keeps gamma constant; negative decays).
    end_value: if given, gamma stops there (a ceiling when gamma1 > 0, as the
      Parle code's ``g0max``).

  Returns:
    An ``optax.Schedule``, to pass as ``gamma`` to the transforms.
  """
  _base.check("gamma0", gamma0, lambda v: v > 0, "> 0")
  _base.check("gamma1", gamma1, lambda v: v > -1, "> -1")
  if end_value is not None:
    _base.check("end_value", end_value, lambda v: v > 0, "> 0")
  return optax.exponential_decay(
      init_value=gamma0,
      transition_steps=1,
      decay_rate=1.0 + gamma1,
      end_value=end_value,
  )
