"""experiments/parle_vs_entropy_sgd/parle_vs_entropy_sgd.py: equal epochs per replica, one
table."""

import pytest

import training


@pytest.fixture(scope="module")
def bench(load_script):
  return load_script("experiments/parle_vs_entropy_sgd/parle_vs_entropy_sgd.py")


def test_parle_gets_n_times_the_budget_and_the_same_epochs_per_replica(bench):
  esgd = training.build_config(**_flags(bench.flags("entropy-sgd", 20, 4, 0)))
  parle = training.build_config(**_flags(bench.flags("parle", 20, 4, 0)))
  assert parle.replicas == 4 and parle.run.devices == 4
  assert parle.effective_epochs / parle.replicas == esgd.effective_epochs == 20
  assert parle.eval_every / parle.replicas == esgd.eval_every
  assert parle.lr_schedule == esgd.lr_schedule == ()


def test_the_comparison_puts_both_runs_on_epochs_per_replica(bench):
  # Each evaluation falls on the first update at or past the mark.
  runs = {"entropy-sgd": {"replicas": 1, "curve": [{"effective_epochs": 5.035, "val_error": 1.0}]},
          "parle": {"replicas": 4, "curve": [
              {"effective_epochs": 20.052, "val_error": 0.9, "val_error_best": 0.8,
               "val_error_worst": 1.1}]}}
  assert bench.comparison(runs) == [{
      "epochs_per_replica": 5.0, "entropy-sgd_epochs": 5.035, "entropy-sgd_val_error": 1.0,
      "parle_epochs": 5.013, "parle_val_error": 0.9, "parle_best": 0.8, "parle_worst": 1.1}]


def test_flags_after_the_separator_go_to_both_runs(bench, tmp_path, monkeypatch):
  ran = []
  monkeypatch.setattr(bench._jobs, "run", lambda jobs, cores, on_done, pin: ran.extend(jobs))
  monkeypatch.setenv("XLA_FLAGS", "")
  bench.main(["--results", str(tmp_path / "p.json"), "--runs", str(tmp_path), "--",
              "--param-init", "flax"])
  assert [j.name for j in ran] == ["entropy-sgd", "parle"]
  assert all(j.flags[-2:] == ["--param-init", "flax"] for j in ran)


def _flags(argv):
  """train.py's argv as build_config's keyword arguments."""
  import train

  args = vars(train.build_parser().parse_args(argv))
  return {k: v for k, v in args.items()
          if k not in ("workdir", "diagnose", *train.PROCESS_FLAGS) and v is not None}
