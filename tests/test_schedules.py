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


def test_scoping_caps_gamma_at_one_over_inner_lr():
  capped = entropix.scoping(1e-4, 1e-3, inner_lr=0.1)
  assert float(capped(1000)) == pytest.approx(1e-4 * 1.001**1000, rel=1e-4)  # not yet
  assert float(capped(20_000)) == pytest.approx(10.0)
  assert float(entropix.scoping(1e-4, 1e-3, end_value=2.0, inner_lr=0.1)(20_000)) == 2.0
  # Starting above the cap, gamma stays where it starts (as train.py always ran).
  assert float(entropix.scoping(12.0, 1e-3, inner_lr=0.1)(500)) == pytest.approx(12.0)
  # A constant or shrinking gamma never reaches it: end_value keeps its meaning.
  shrinking = entropix.scoping(1.0, -0.5, end_value=0.1, inner_lr=0.1)
  assert float(shrinking(1)) == pytest.approx(0.5) and float(shrinking(50)) == pytest.approx(0.1)
  with pytest.raises(ValueError, match="inner_lr"):
    entropix.scoping(1e-4, 1e-3, inner_lr=0.0)
