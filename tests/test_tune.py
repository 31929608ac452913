"""experiments/tuning/tune.py: the trials it plans and the setting it chooses."""

import math
import re

import pytest


@pytest.fixture
def tune(load_script):
  module = load_script("experiments/tuning/tune.py")
  module.GRID["entropy-sgd"] = {"lr": [0.1, 0.3], "gamma": [None, 1e-2]}
  return module


def _record(error, diverged=False):
  return {"val_error": error, "diverged": diverged}


def test_trials_name_seed_zero_as_before_and_the_others_by_seed(tune):
  planned = tune.trials(["mnistfc"], ["entropy-sgd"], seeds=2)
  assert [t[0] for t in planned[:3]] == [
      "mnistfc-entropy-sgd-lr0.1", "mnistfc-entropy-sgd-lr0.1-seed1",
      "mnistfc-entropy-sgd-lr0.1-gamma0.01"]
  assert planned[1][3:] == ({"lr": 0.1}, 1)
  assert len(planned) == 8 and len({t[0] for t in planned}) == 8


def test_pending_runs_every_settings_first_seed_before_any_second(tune):
  planned = tune.trials(["mnistfc"], ["entropy-sgd"], seeds=2)
  todo = tune.pending({planned[0][0]: _record(1.0)}, planned)
  assert [t[4] for t in todo] == [0, 0, 0, 1, 1, 1, 1]
  assert [t[0] for t in todo[:3]] == [t[0] for t in planned if t[4] == 0][1:]


def test_one_seed_chooses_the_earliest_within_the_binomial_error(tune):
  planned = tune.trials(["mnistfc"], ["entropy-sgd"])
  errors = [1.30, 1.27, 1.20, 1.15]  # standard error of 1.15% on 10,000 images: 0.107%
  records = {t[0]: _record(e) for t, e in zip(planned, errors)}
  assert tune.choose(records, planned)["mnistfc/entropy-sgd"] == {
      "trial": "mnistfc-entropy-sgd-lr0.3", "lr": 0.3, "val_error": 1.20}


def test_seeds_are_averaged_and_their_spread_is_the_standard_error(tune):
  planned = tune.trials(["mnistfc"], ["entropy-sgd"], seeds=3)
  errors = {"lr0.1": [1.20, 1.30, 1.25], "lr0.1-gamma0.01": [1.18, 1.22, 1.20],
            "lr0.3": [1.15, 1.25, 1.20], "lr0.3-gamma0.01": [1.10, 1.14, 1.12]}
  records = {t[0]: _record(errors[t[0].removeprefix("mnistfc-entropy-sgd-").split("-seed")[0]]
                           [t[4]]) for t in planned}
  chosen = tune.choose(records, planned)["mnistfc/entropy-sgd"]
  spread = math.sqrt((0.05**2 + 0.02**2 + 0.05**2 + 0.02**2) / 4 / 3)  # 0.022
  assert chosen == {"trial": "mnistfc-entropy-sgd-lr0.3-gamma0.01", "lr": 0.3, "gamma": 0.01,
                    "val_error": 1.12, "standard_error": pytest.approx(spread, abs=1e-4)}
  # One diverged seed puts its setting out.
  records["mnistfc-entropy-sgd-lr0.3-gamma0.01-seed2"] = _record(None, diverged=True)
  assert tune.choose(records, planned)["mnistfc/entropy-sgd"]["trial"] == (
      "mnistfc-entropy-sgd-lr0.1-gamma0.01")


def test_a_cell_with_a_missing_trial_is_not_chosen(tune):
  planned = tune.trials(["mnistfc"], ["entropy-sgd"], seeds=2)
  records = {t[0]: _record(1.0) for t in planned[:-1]}
  assert tune.choose(records, planned) == {}


@pytest.mark.parametrize("item, message", [
    ("sigma=0.1", "entropy-sgd tunes ['gamma', 'lr'], not 'sigma'"),
    ("lr=0.1,fast", "want KEY=V1,V2,... with numbers"),
])
def test_a_bad_grid_is_refused_by_name(tune, item, message):
  with pytest.raises(SystemExit, match=re.escape(f"--grid '{item}': {message}")):
    tune.parse_grid([item], ["entropy-sgd"])
  assert tune.parse_grid(["lr=0.03,0.3"], ["entropy-sgd"]) == {"lr": [0.03, 0.3]}


def test_main_refuses_zero_seeds(tune, capsys):
  with pytest.raises(SystemExit):
    tune.main(["--seeds", "0", "--out", "unused.json"])
  assert "--seeds 0: want >= 1" in capsys.readouterr().err


def test_flags_after_the_separator_go_to_every_trial(tune, tmp_path, monkeypatch):
  ran = []
  monkeypatch.setattr(tune._jobs, "run", lambda jobs, cores, on_done: ran.extend(jobs))
  tune.main(["--models", "lenet", "--optimizers", "sgd", "--out", str(tmp_path / "t.json"),
             "--", "--param-init", "flax"])
  assert len(ran) == 3 and all(j.flags[-2:] == ["--param-init", "flax"] for j in ran)
  assert ran[0].flags[:4] == ["--model", "lenet", "--optimizer", "sgd"]
