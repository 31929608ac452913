"""experiments/figure1/figure1.py and experiments/table1/figure4.py: Figure 1's claims,
Figure 4's seed bands, the PNGs."""

import json

import numpy as np
import pytest

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def figure1(load_script):
  return load_script("experiments/figure1/figure1.py")


@pytest.fixture(scope="module")
def figure4(load_script):
  return load_script("experiments/table1/figure4.py")


def test_figure1_shows_what_its_caption_says(figure1):
  x = np.linspace(-5.0, 5.0, 2001)
  u = figure1.smoothings(x)
  minima = {k: figure1.local_minima(v) for k, v in u.items()}
  assert [len(minima[k]) for k in ("f", "viscous", "hopf_lax", "heat")] == [11, 1, 5, 1]
  assert np.all(np.diff(u["viscous"], 2) > 0)  # convex on the plot
  # Hopf-Lax keeps f's global minimum, its value and its place, and lies below f.
  assert abs(x[np.argmin(u["hopf_lax"])] - x[np.argmin(u["f"])]) < 0.02
  assert u["hopf_lax"].min() == pytest.approx(u["f"].min(), abs=1e-3)
  assert np.all(u["hopf_lax"] <= u["f"] + 1e-9)
  assert u["viscous"].min() > u["f"].min() + 0.1 and u["heat"].min() > u["f"].min() + 0.1
  assert np.all(u["heat"] >= u["viscous"]) and np.all(np.diff(u["heat"], 2) > 0)


def test_figure1_densities_end_where_its_caption_says(figure1):
  rho = figure1.densities(points=401)
  h = rho["x"][1] - rho["x"][0]
  for key in ("sgd", "viscous", "hopf_lax"):
    assert rho[key].sum() * h == pytest.approx(1.0, abs=1e-10) and rho[key].min() >= 0
  basins = rho["basins"]
  order = np.argsort([b["minimum_f"] for b in basins])
  best, second = basins[order[0]], basins[order[1]]
  # SGD stays in the local minima it started near; the viscous HJ drift takes
  # the density to the global minimum, Hopf-Lax to the nearly optimal one.
  assert best["sgd"] < 0.05 and max(abs(b["sgd"] - b["initial"]) for b in basins) < 0.1
  assert best["viscous"] > 0.8
  assert second["hopf_lax"] > 0.8 and second["minimum_x"] < best["minimum_x"]


def test_local_minima_are_the_strict_interior_ones(figure1):
  assert figure1.local_minima(np.array([3.0, 1.0, 2.0, 2.0, 0.0, 5.0, 4.0])).tolist() == [1, 4]


def test_the_band_spans_the_seeds_and_skips_missing_points(figure4):
  def curve(values):
    return [{"effective_epochs": 5.0 * i, "train_loss": v} for i, v in enumerate(values)]

  epochs, mean, low, high = figure4.mean_band(
      [curve([None, 4.0, 2.0, 1.0]), curve([None, 2.0, 4.0]), curve([None, 3.0, 3.0, 0.5])],
      "train_loss")
  np.testing.assert_array_equal(epochs, [5.0, 10.0])  # cut to the shortest seed
  np.testing.assert_allclose(mean, [3.0, 3.0])
  np.testing.assert_array_equal(low, [2.0, 2.0])
  np.testing.assert_array_equal(high, [4.0, 4.0])


def test_main_draws_both_figures(figure1, figure4, tmp_path):
  rng = np.random.default_rng(0)
  records = {}
  for model in ("mnistfc", "lenet"):
    for optimizer in ("entropy-sgd", "sgd", "heat"):
      for seed in range(2):
        curve = [{"effective_epochs": 5.0 * i, "val_error": 1 + rng.uniform() / (i + 1),
                  "train_loss": None if i == 0 else 0.1 / i} for i in range(10)]
        records[f"{model}-{optimizer}-{seed}"] = {
            "model": model, "optimizer": optimizer, "seed": seed, "curve": curve,
            "effective_epochs": 45.0}
  runs = tmp_path / "runs.json"
  runs.write_text(json.dumps(records))
  figure1.main(["--out", str(tmp_path / "out"), "--points", "201"])
  figure4.main(["--runs", str(runs), "--out", str(tmp_path / "out")])
  import matplotlib.image
  for name in ("figure1.png", "figure4.png"):
    image = matplotlib.image.imread(tmp_path / "out" / name)
    assert image.ndim == 3 and min(image.shape[:2]) > 400, name


def test_main_names_a_missing_runs_file(figure4, tmp_path, capsys):
  with pytest.raises(SystemExit):
    figure4.main(["--runs", str(tmp_path / "nope.json"), "--out", str(tmp_path)])
  assert "nope.json: no such file" in capsys.readouterr().err
