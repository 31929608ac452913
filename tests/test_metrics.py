"""Tests of training/metrics.py: metrics.jsonl, the bar, the NaN stop."""

import json
import math
import os
import re

import pytest

import training
from training import config as cfg
from training import settings
from training.metrics import MetricsWriter, TrainingDiverged

BUDGET = cfg.Budget(updates_per_epoch=4.0, total=8, eval_every=1.0)


def _lines(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_file_restarts_from_the_history_then_each_evaluation_appends(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 0}\n{"step": 4}\n{"step": 6, "half": "written by a killed run"}\n')
  writer = MetricsWriter(path, [{"step": 0}, {"step": 4}], BUDGET, 2, start=4, progress=False)
  assert _lines(path) == [{"step": 0}, {"step": 4}]
  for step, loss, error in ((5, 1.0, 0.5), (6, 3.0, 0.25)):
    writer.update(step, loss, error)
  record = writer.evaluation(6, lr=0.1, val_loss=0.5, val_error=12.5)
  writer.close()
  assert record == {"step": 6, "backprops": 12, "effective_epochs": 1.5, "lr": 0.1,
                    "train_loss": 2.0, "train_error": 37.5, "val_loss": 0.5, "val_error": 12.5}
  assert _lines(path) == [{"step": 0}, {"step": 4}, record] and writer.history[-1] == record


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_nan_or_inf_loss_raises(tmp_path, bad):
  writer = MetricsWriter(tmp_path / "m.jsonl", [], BUDGET, 1, start=0, progress=False)
  with pytest.raises(TrainingDiverged, match=f"loss is {bad} at update 3"):
    writer.update(3, bad, 0.0)
  with pytest.raises(TrainingDiverged, match="validation loss is nan after update 4"):
    writer.evaluation(4, lr=0.1, val_loss=math.nan, val_error=0.0)
  writer.close()
  assert (tmp_path / "m.jsonl").read_text() == ""


def test_each_evaluation_prints_a_line_above_the_bar(tmp_path, capsys):
  writer = MetricsWriter(tmp_path / "m.jsonl", [], BUDGET, 1, start=0, progress=True)
  writer.update(1, 0.7, 0.25)
  writer.evaluation(1, lr=0.1, val_loss=0.6931, val_error=12.5)
  writer.close()
  assert "update 1 (effective epoch 0.25): val_error 12.50%, val_loss 0.6931" in (
      capsys.readouterr().err)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny, tmp_path):
  with pytest.raises(TrainingDiverged, match=r"at update \d+ .*checkpoint.*update 0"):
    training.train_and_evaluate(tiny(optimizer="sgd", lr=1e30, effective_epochs=2.0), tmp_path)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["0"]
  assert [r["step"] for r in _lines(tmp_path / "metrics.jsonl")] == [0]


def test_rate_and_time_left_leave_out_compilation_and_evaluations(tmp_path, monkeypatch):
  now = [0.0]
  monkeypatch.setattr("training.metrics.time.perf_counter", lambda: now[0])
  writer = MetricsWriter(tmp_path / "m.jsonl", [], BUDGET, 2, start=0, progress=True)
  for step, t in ((1, 100.0), (2, 101.0)):  # update 1 ends after 100 s of compiling
    now[0] = t
    writer.update(step, 1.0, 0.5)
  with writer.paused():  # a 10 s evaluation
    now[0] = 111.0
  now[0] = 112.0
  writer.update(3, 1.0, 0.5)
  # 2 timed updates of 2 backprops in 2 s of training; 5 updates left (5 s)
  # and 2 evaluations of 10 s.
  assert writer._bar.postfix.endswith("2 backprops/s, 00:25 left")
  writer.close()


def test_skipped_updates_are_counted_in_the_records_and_ten_in_a_row_stop(tmp_path, capsys):
  writer = MetricsWriter(tmp_path / "m.jsonl", [], BUDGET, 1, start=0, progress=True)
  writer.update(1, 0.7, 0.25, skipped=0, skipped_in_a_row=0)
  writer.update(2, 0.7, 0.25, skipped=1, skipped_in_a_row=1)
  assert writer.evaluation(2, lr=0.1, val_loss=0.6, val_error=12.5)["skipped_updates"] == 1
  assert "update 2: 1 update(s) skipped so far" in capsys.readouterr().err
  writer.update(3, 0.7, 0.25, skipped=9, skipped_in_a_row=settings.MAX_SKIPPED_IN_A_ROW - 1)
  with pytest.raises(TrainingDiverged, match=r"skipped updates 3 to 12 \(effective epoch 3\.000\)"):
    writer.update(12, 0.7, 0.25, skipped=10, skipped_in_a_row=settings.MAX_SKIPPED_IN_A_ROW)
  writer.close()


def test_a_run_whose_inner_loop_diverges_stops_and_says_so(tiny, tmp_path):
  # Raw pixels and an inner step of 1e4: the inner chains soon overflow,
  # every update from then on is skipped, the params stay finite, and the
  # run stops ten updates later.
  config = tiny(optimizer="entropy-sgd", inner_steps=2, inner_lr=1e4, gamma=1e-6,
                input_scaling="raw", effective_epochs=4.0)
  with pytest.raises(TrainingDiverged, match=r"skipped updates (\d+) to (\d+) .*inner loop was "
                                             r"not finite.*checkpoint.*\(update \d+\)") as error:
    training.train_and_evaluate(config, tmp_path)
  first, last = map(int, re.search(r"updates (\d+) to (\d+)", str(error.value)).groups())
  assert last - first + 1 == settings.MAX_SKIPPED_IN_A_ROW
  records = _lines(tmp_path / "metrics.jsonl")
  assert records[-1]["skipped_updates"] > 0 and math.isfinite(records[-1]["val_loss"])
