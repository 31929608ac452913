"""Tests of experiments/table1/reproduce_table1.py: run order, the tables, a resumable All-CNN
smoke run."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def table1(load_script):
  return load_script("experiments/table1/reproduce_table1.py")


def test_every_cell_gets_its_first_seed_before_any_second(table1):
  order = table1.runs(["mnistfc", "lenet"], ["entropy-sgd", "hj"])
  # Seed 0 everywhere (Table 1's columns first), then Table 1's columns'
  # other seeds, then the text's forms'.
  assert [r[0] for r in order] == [
      "mnistfc-entropy-sgd-seed0", "lenet-entropy-sgd-seed0", "mnistfc-hj-seed0",
      "lenet-hj-seed0", "mnistfc-entropy-sgd-seed1", "lenet-entropy-sgd-seed1",
      "mnistfc-entropy-sgd-seed2", "lenet-entropy-sgd-seed2", "mnistfc-hj-seed1",
      "lenet-hj-seed1"]
  assert [r[3] for r in table1.runs(["lenet"], ["sgd", "heat"], seeds=1)] == [0, 0]


def _record(optimizer, seed, errors, wall_s=10.0):
  curve = [{"effective_epochs": 5.0 * (i + 1), "val_error": e, "val_loss": 0.1,
            "train_loss": 0.1} for i, e in enumerate(errors)]
  return {"model": "mnistfc", "optimizer": optimizer, "seed": seed, "val_error": errors[-1],
          "stopped": None, "effective_epochs": curve[-1]["effective_epochs"],
          "wall_s": wall_s, "curve": curve, "machine": {"cpu": "test"}, "date": "2026-11-26"}


def test_the_tables_give_mean_std_and_where_each_seed_first_reaches_the_paper(table1):
  records = {
      "a": _record("entropy-sgd", 1, [1.5, 1.07, 1.12], wall_s=30.0),
      "b": _record("entropy-sgd", 0, [1.2, 1.10, 1.08], wall_s=10.0),
      "c": _record("sgd", 0, [1.3, 1.2, 1.15]),
  }
  cells, markdown = table1.tables(records)
  esgd, sgd = cells
  assert esgd["seeds"] == [0, 1] and esgd["per_seed_error"] == [1.08, 1.12]
  assert esgd["val_error_mean"] == pytest.approx(1.10) and esgd["val_error_std"] == 0.028
  assert esgd["first_reaching_paper"] == [15.0, 10.0]  # paper: 1.08
  assert esgd["wall_s_mean"] == 20.0 and esgd["paper"] == (1.08, 0.02)
  assert esgd["lowest_error_mean"] == pytest.approx(1.075)  # 1.08 and 1.07
  assert esgd["algorithm"] == table1.ALGORITHM["entropy-sgd"]
  assert sgd["val_error_std"] is None and sgd["first_reaching_paper"] == [None]
  assert "| mnistfc | entropy-sgd | 1.10 ± 0.03 | 1.07 | 2 | 1.08 ± 0.02 | 15 | 15, 10 | 20 |" in markdown
  assert "| mnistfc | sgd | 1.15 | 1.15 | 1 | 1.10 ± 0.01 | 15 | - | 10 |" in markdown


@pytest.mark.parametrize("argv, message", [
    (["--", "--effective-epochs", "1"], "pass another --results"),
    (["--models", "allcnn"], "--models allcnn needs --data-dir"),
    (["--seeds", "0", "--results", "elsewhere"], "--seeds 0"),
])
def test_bad_flags_are_refused_naming_them(table1, capsys, argv, message):
  with pytest.raises(SystemExit):
    table1.main(argv)
  assert message in capsys.readouterr().err


def test_allcnn_smoke_run_lands_in_the_tables_and_is_not_run_twice(table1, cifar_dir, tmp_path):
  # All-CNN-C on 40 synthetic CIFAR-shaped images: the GPU script's path,
  # end to end through train.py (two SGD updates: test_loop.py trains
  # All-CNN-C with the inner loops).
  ours = ["--optimizers", "sgd", "--seeds", "1", "--results", str(tmp_path),
          "--runs", str(tmp_path / "runs"), "--", "--batch-size", "8",
          "--effective-epochs", "0.4", "--eval-every", "0.4"]
  table1.main(["--models", "allcnn", "--data-dir", cifar_dir, *ours])
  (cell,) = json.loads((tmp_path / "table1.json").read_text())["cells"]
  assert (cell["model"], cell["optimizer"], cell["seeds"]) == ("allcnn", "sgd", [0])
  assert 0 <= cell["val_error_mean"] <= 100 and cell["effective_epochs"] == 0.4
  assert cell["paper"] == [7.94, 0.06]
  runs = json.loads((tmp_path / "table1_runs.json").read_text())
  assert "--data-dir" in runs["allcnn-sgd-seed0"]["command"]
  config = runs["allcnn-sgd-seed0"]["config"]  # what it ran with, defaults included
  assert (config["batch_size"], config["lr"], config["weight_decay"]) == (8, 0.1, 0.0)
  assert "lr_schedule" not in config
  assert "| allcnn | sgd |" in (tmp_path / "table1.md").read_text()
  # The GPU script, started on the same folders, finds the run finished and
  # leaves everything as it was.
  before = {p.name: p.read_bytes() for p in tmp_path.glob("table1*")}
  script = subprocess.run(
      ["bash", str(ROOT / "experiments" / "allcnn" / "reproduce_allcnn.sh"), cifar_dir, *ours],
      capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable}, check=True)
  assert "devices:" in script.stdout
  assert {p.name: p.read_bytes() for p in tmp_path.glob("table1*")} == before
  # --tables writes the tables again from the runs' records alone.
  (tmp_path / "table1.md").unlink()
  (tmp_path / "table1.json").unlink()
  table1.main(["--tables", "--results", str(tmp_path)])
  assert {p.name: p.read_bytes() for p in tmp_path.glob("table1*")} == before


def test_the_gpu_script_refuses_a_folder_without_cifar10(tmp_path):
  script = subprocess.run(["bash", str(ROOT / "experiments" / "allcnn" / "reproduce_allcnn.sh"),
                           str(tmp_path)], capture_output=True, text=True)
  assert script.returncode == 2 and f"{tmp_path}: no data_batch_1.bin" in script.stderr


def test_runners_sharing_a_results_folder_keep_each_others_runs(table1, tmp_path):
  # A runner lands its first run; another, started on other cells, lands
  # one; the first lands its second: all three stay, and the tables count
  # them all.
  table1.land(tmp_path, "a", _record("entropy-sgd", 0, [1.2, 1.10]))
  table1.land(tmp_path, "b", _record("sgd", 0, [1.3, 1.15]))
  records = table1.land(tmp_path, "c", _record("entropy-sgd", 1, [1.2, 1.12]))
  assert sorted(records) == sorted(json.loads((tmp_path / "table1_runs.json").read_text()))
  assert sorted(records) == ["a", "b", "c"]
  cells = json.loads((tmp_path / "table1.json").read_text())["cells"]
  assert [(c["optimizer"], c["seeds"]) for c in cells] == [("entropy-sgd", [0, 1]), ("sgd", [0])]
  assert not list(tmp_path.glob("*.tmp"))
