"""experiments/table1_flax_init/lenet_checks.py: the runs its records hold, written as they land."""

import json

import pytest


@pytest.fixture(scope="module")
def checks(load_script):
  return load_script("experiments/table1_flax_init/lenet_checks.py")


def test_it_runs_the_recorded_commands_from_flaxs_initialisation(checks):
  for name, (what, runs, fields) in checks.CHECKS.items():
    record = json.loads((checks.HERE / name).read_text())
    assert list(record) == ["what", "machine", "date", "runs"] and record["what"] == what
    assert list(record["runs"]) == list(runs)
    for label, run in record["runs"].items():
      assert tuple(run) == fields
      # The records ran when Flax's initialisation was train.py's default.
      assert run["command"] == "python train.py " + " ".join(runs[label])
      assert checks.INIT == ["--param-init", "flax"]


def test_each_record_lands_as_its_runs_finish_and_finished_runs_are_skipped(
    checks, mnist_dir, tmp_path, monkeypatch):
  tiny = ["--model", "mnistfc", "--optimizer", "sgd", "--batch-size", "16", "--effective-epochs",
          "0.5", "--eval-every", "0.5", "--validation-split", "64", "--data-dir", mnist_dir]
  monkeypatch.setattr(checks, "CHECKS", {
      "a.json": ("first", {"x": tiny}, ("command", "val_error", "curve")),
      "b.json": ("second", {"y 1": tiny}, ("command", "val_error", "wall_s", "curve"))})
  argv = ["--jobs", "1", "--out", str(tmp_path), "--runs", str(tmp_path / "runs")]
  checks.main(argv)
  a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
  assert (a["what"], list(a["runs"]), list(a["runs"]["x"])) == ("first", ["x"],
                                                                 ["command", "val_error", "curve"])
  assert list(b["runs"]["y 1"]) == ["command", "val_error", "wall_s", "curve"]
  assert b["runs"]["y 1"]["command"].endswith("--param-init flax")
  assert 0 <= a["runs"]["x"]["val_error"] <= 100
  assert a["runs"]["x"]["curve"][0]["train_loss"] is None
  assert (tmp_path / "runs" / "b-y-1").is_dir()
  before = {n: (tmp_path / n).read_bytes() for n in ("a.json", "b.json")}
  checks.main(argv)  # nothing left to run
  assert {n: (tmp_path / n).read_bytes() for n in ("a.json", "b.json")} == before
