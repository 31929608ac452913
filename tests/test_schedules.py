"""Tests of entropix.scoping."""

import numpy as np
import pytest

import entropix


def test_scoping_grows_geometrically_from_gamma0():
  schedule = entropix.scoping(1e-4, 1e-3)
  counts = np.array([0, 1, 10, 1000])
  values = np.array([float(schedule(k)) for k in counts])
  # float32 rounds 1.001 itself: k * 2^-24 relative after k updates.
  np.testing.assert_allclose(values, 1e-4 * 1.001**counts, rtol=1e-4)


def test_scoping_stops_at_end_value_and_can_be_constant():
  capped = entropix.scoping(0.01, 0.5, end_value=1.0)
  assert float(capped(5)) == pytest.approx(0.01 * 1.5**5, rel=1e-5)
  assert float(capped(100)) == pytest.approx(1.0)
  assert float(entropix.scoping(0.3, 0.0)(50)) == pytest.approx(0.3)


@pytest.mark.parametrize(
    "args, name",
    [((0.0, 1e-3), "gamma0"), ((1e-4, -1.0), "gamma1"), ((1e-4, 1e-3, -1.0), "end_value")],
)
def test_scoping_refuses_bad_values_by_name(args, name):
  kwargs = {"end_value": args[2]} if len(args) == 3 else {}
  with pytest.raises(ValueError, match=name):
    entropix.scoping(args[0], args[1], **kwargs)
