"""experiments/theorem12 and experiments/homogenization: their Monte Carlo
meets the PDE values it is compared with."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")  # figure1.py, whose loss both use, draws


@pytest.fixture(scope="module")
def theorem12(load_script):
  module = load_script("experiments/theorem12/theorem12.py")
  module.X = np.linspace(-6.0, 6.0, 1201)  # coarser than the record's: seconds, not minutes
  module.TABLE_GAMMAS = np.geomspace(1.0, module.GAMMA_CAP, 12)
  return module


@pytest.fixture(scope="module")
def homogenization(load_script):
  return load_script("experiments/homogenization/homogenization.py")


def test_theorem_12_holds_and_the_monte_carlo_meets_the_pde(theorem12):
  run = theorem12.horizon(1.0, theorem12.Slopes(), 400, 1, (1.0,), seed=0)
  d, pde = run["dynamics"], run["pde"]
  sgd, csgd = d["sgd"]["loss"], d["csgd"]
  assert abs(sgd["mean"] - pde["sgd_expected_loss"]) < 3 * sgd["ci95"]
  # E f(x_sgd) - E f(x_csgd) >= 1/2 E int |alpha|^2, paired over the same noise
  gain, cost = csgd["below_sgd"], csgd["running_cost"]
  assert gain["mean"] - cost["mean"] > 3 * (gain["ci95"] + cost["ci95"])
  # The control's cost meets its value u (to the upwind scheme's O(h) on this grid).
  assert abs(csgd["loss_plus_cost"]["mean"] - pde["csgd_value"]) < (
      3 * csgd["loss_plus_cost"]["ci95"] + 2 * abs(pde["csgd_value"] - pde["csgd_value_2h"]))
  # At gamma0 = 1/T the scoped local entropy is Remark 10's optimal control.
  remark10 = d["le scoped gamma0=1.0"]["loss_plus_cost"]
  assert abs(remark10["mean"] - pde["remark10_value"]) < 3 * remark10["ci95"] + 0.01
  assert set(d) >= {"entropix gamma0=1.0", "entropix scoped gamma0=1.0"}
  # Langevin at temperature 1/BETA: increments of variance 2 DT / BETA.
  dw = theorem12.increments(0, 100, (1000,))
  assert dw.var() == pytest.approx(2 * theorem12.DT / theorem12.BETA, rel=0.02)


def test_a_long_chain_is_unbiased_where_a_short_one_is_not(homogenization):
  # Beyond the critical gamma (H convex in y), inner_lr 0.005: the uniform
  # average of 500 steps is within a few % of grad f_gamma, 5 steps are not.
  exact = homogenization.pde.viscous_hj(homogenization.loss_1d, homogenization.POINTS,
                                        np.linspace(-10, 10, 20001), gamma=30.0,
                                        beta=homogenization.NOISE**-2)[1]
  long, short = (homogenization.cell(30.0, 0.005, steps, "uniform", 0.0, 0, exact, chains=512)
                 for steps in (500, 5))
  assert long["relative_bias"] < 0.05 + 2 * long["relative_bias_error"]
  assert short["relative_bias"] > 0.3
  assert homogenization.GAMMA_CRITICAL == pytest.approx(15.05, abs=0.01)


def test_the_table_names_the_shortest_chain_under_the_tolerance(homogenization):
  cells = [{"gamma": g, "inner_lr": lr, "L": steps, "average": average, "alpha": alpha,
            "dims": 1, "relative_bias": 0.5 / steps, "relative_bias_error": 0.001}
           for g in homogenization.GAMMAS for lr in homogenization.INNER_LRS
           for steps in homogenization.LENGTHS for average, alpha in homogenization.AVERAGES]
  rows = homogenization.table(cells).splitlines()
  assert len(rows) == 2 + len(homogenization.GAMMAS) * len(homogenization.AVERAGES)
  assert "L = 20 (2.5% ± 0.1%)" in rows[2]  # 0.5 / 20 is the first under 5%
