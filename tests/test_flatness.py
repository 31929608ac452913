"""experiments/flatness: the runs it trains, and the table it draws from the measurements."""

import json

import numpy as np
import pytest

import training


@pytest.fixture(scope="module")
def train_runs(load_script):
  return load_script("experiments/flatness/train_runs.py")


@pytest.fixture(scope="module")
def measure(load_script):
  return load_script("experiments/flatness/measure.py")


def test_it_trains_the_cells_the_question_needs_at_their_table1_recipes(train_runs, tmp_path):
  jobs = train_runs.jobs(tmp_path, [])
  seeds = {}
  for job in jobs:
    model, optimizer = job.flags[1], job.flags[3]
    seeds.setdefault((model, optimizer), []).append(int(job.flags[5]))
    # No flag beyond the cell, seed and one device: the Table-1 recipe and budget.
    assert job.flags[::2] == ["--model", "--optimizer", "--seed", "--devices"], job.flags
    assert training.build_config(**_flags(job.flags)).effective_epochs == (
        training.settings.RECIPES[(model, optimizer)]["effective_epochs"])
  for model in ("mnistfc", "lenet"):
    assert seeds[(model, "sgd")] == seeds[(model, "entropy-sgd")] == [0, 1]
    assert seeds[(model, "heat-uniform")] == seeds[(model, "hj-fixed-point")] == [0]
  assert len({j.workdir for j in jobs}) == len(jobs) == 12


def test_a_finished_run_lands_at_once_and_is_skipped_the_next_time(train_runs, tmp_path,
                                                                    monkeypatch):
  ran = []

  def fake_run(jobs, cores, on_done):
    ran.append([j.name for j in jobs])
    job = jobs[0]
    on_done(train_runs._jobs.Finished(job, {"val_error": 1.0}, "", [], 1.0))

  monkeypatch.setattr(train_runs._jobs, "run", fake_run)
  out = tmp_path / "runs.json"
  train_runs.main(["--jobs", "1", "--runs", str(tmp_path), "--out", str(out)])
  train_runs.main(["--jobs", "1", "--runs", str(tmp_path), "--out", str(out)])
  assert ran[0][0] == "mnistfc-sgd-seed0" and "mnistfc-sgd-seed0" not in ran[1]
  assert sorted(json.loads(out.read_text())) == ["mnistfc-entropy-sgd-seed0", "mnistfc-sgd-seed0"]


def test_the_table_has_a_row_per_measured_run(measure, monkeypatch, tmp_path):
  record = {"model": "lenet", "optimizer": "entropy-sgd", "seed": 1, "loss": 0.01,
            "top_eigenvalues": [30.0, 20.0, 10.0], "trace": {"value": 100.0, "stderr": 2.0},
            "diagonal": {"harmonic_mean_positive": 1e-6, "positive": 7, "entries": 9},
            "perturbation_sharpness": {"sigmas": [0.001, 0.01], "increase": [1e-5, 1e-3]},
            "relative_sharpness": {"sigmas": [0.01, 0.1], "increase": [2e-5, 0.002]},
            "local_entropy": {"gammas": [0.001, 1.0], "values": [0.05, 0.01]}}
  records = tmp_path / "diagnostics.json"
  records.write_text(json.dumps({"lenet-entropy-sgd-seed1": record}))
  monkeypatch.setattr(measure, "RECORDS", records)
  runs = {"lenet-entropy-sgd-seed1": {"summary": {"val_error": 0.5}}}
  [row] = measure.rows(runs)
  assert row["top"] == 30.0 and row["tenth"] == 10.0
  assert row["entropy_gap"] == pytest.approx(0.04)
  table = measure.table([row])
  assert "| lenet | entropy-sgd | 1 | 0.50 | 0.01 | 30 | 10 | 100 ± 2 | 1e-06 (7 of 9) |" in table
  assert table.rstrip().endswith("| 0.04 | 0.001 | 0.002 |")


def _flags(argv):
  names = argv[::2]
  values = argv[1::2]
  flags = dict(zip((n.lstrip("-").replace("-", "_") for n in names), values))
  return {**flags, "seed": int(flags["seed"]), "devices": int(flags["devices"])}


def test_a_record_without_a_later_diagnostic_gets_just_that_one(measure, monkeypatch, tmp_path):
  from training import diagnose

  old = {"model": "lenet", "top_eigenvalues": [1.0], "diagonal": {}, "spectral_density": {},
         "local_entropy": {}, "perturbation_sharpness": {}}
  whole = {**old, "relative_sharpness": {}, "layers": {}, "parameter_norms": {}}
  records = tmp_path / "diagnostics.json"
  records.write_text(json.dumps({"old": old, "whole": whole}))
  monkeypatch.setattr(measure, "RECORDS", records)
  monkeypatch.setattr(measure, "ROOT", tmp_path)
  calls = []

  def fake_diagnose(workdir, parts):
    calls.append((workdir.name, parts))
    (workdir / "diagnostics.json").write_text(json.dumps({**old, **{p: {} for p in parts}}))

  monkeypatch.setattr(diagnose, "diagnose", fake_diagnose)
  for name in ("old", "whole"):
    (tmp_path / name).mkdir()
  measure.top_up({"old": {"workdir": "old"}, "whole": {"workdir": "whole"}})
  assert calls == [("old", ("relative_sharpness", "layers", "parameter_norms"))]
  assert json.loads(records.read_text())["old"] == whole


def test_sharpest_finds_the_array_and_unit_an_eigenvector_lives_in(load_script):
  sharpest = load_script("experiments/flatness/sharpest.py")
  kernel = np.zeros((4, 3))
  kernel[:, 1] = 0.4  # unit 1: 4 * 0.16 = 0.64 of the squared norm
  kernel[0, 2] = 0.6  # unit 2: 0.36
  vector = {"Dense_0": {"kernel": kernel, "bias": np.zeros(3)},
            "BatchNorm_0": {"scale": np.zeros(3), "bias": np.zeros(3)}}
  params = {"BatchNorm_0": {"scale": np.array([1.0, -2.0, 1.0])}}
  stats = {"BatchNorm_0": {"var": np.array([0.0, 4.0 - 1e-5, 9.0]), "mean": np.zeros(3)}}
  out = sharpest.where(vector, params, stats, "mnistfc")
  assert out["top_array"] == "Dense_0.kernel" and out["top_unit"] == 1
  assert out["top_unit_share"] == pytest.approx(0.64)
  assert out["arrays"]["Dense_0.kernel"] == pytest.approx(1.0)
  assert out["top_unit_batch_norm"] == {"layer": "BatchNorm_0", "running_variance":
                                        pytest.approx(4.0 - 1e-5), "gain": pytest.approx(1.0)}
  # LeNet's dense layers have no BatchNorm after them.
  assert "top_unit_batch_norm" not in sharpest.where(vector, params, stats, "lenet")
  norms = sharpest.batch_norms(params, stats)["BatchNorm_0"]
  assert norms["zero_variance"] == 1 and norms["variance_below_1e-2"] == 1
  assert norms["largest_gain"] == pytest.approx(1.0)  # unit 0, variance 0, left out


def test_each_run_is_diagnosed_by_train_py_and_lands_with_its_log(measure, monkeypatch, tmp_path):
  records = tmp_path / "diagnostics.json"
  monkeypatch.setattr(measure, "RECORDS", records)
  monkeypatch.setattr(measure, "ROOT", tmp_path)
  (tmp_path / "w").mkdir()
  commands = []

  def fake_run(todo, cores, on_end):
    commands.extend(todo)
    (tmp_path / "w" / "diagnostics.json").write_text(json.dumps({"step": 7}))
    on_end("a", measure._jobs.Ended(0, "", "progress lines", 1.0))

  monkeypatch.setattr(measure._jobs, "run_commands", fake_run)
  measure.measure({"a": {"workdir": "w", "summary": {"updates": 9}}}, [0])
  [(name, argv)] = commands
  assert name == "a" and argv[-3:] == ["--workdir", str(tmp_path / "w"), "--diagnose"]
  assert (tmp_path / "w" / "diagnose.log").read_text() == "progress lines"
  assert json.loads(records.read_text()) == {"a": {"step": 7}}
