"""Tests of training/checkpoints.py: resume, its checks, and the data fingerprint."""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import pytest

import input_pipeline
import training
from training import checkpoints, loop

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_killed_run_resumes_to_the_same_metrics(mnist_dir, tmp_path):
  flags = ["--model", "mnistfc", "--optimizer", "entropy-sgd", "--inner-steps", "2",
           "--batch-size", "16", "--effective-epochs", "4", "--eval-every", "0.5",
           "--data-dir", mnist_dir, "--no-progress", "--devices", "1"]
  whole = _cli(*flags, "--workdir", str(tmp_path / "whole"))
  out, err = whole.communicate(timeout=600)
  assert whole.returncode == 0, err
  want = json.loads(out.splitlines()[-1])

  victim = _cli(*flags, "--workdir", str(tmp_path / "killed"))
  saved = tmp_path / "killed" / "checkpoints"
  deadline = time.monotonic() + 300
  while not (saved.is_dir() and any(d.name != "0" and d.name.isdigit() for d in saved.iterdir())):
    assert victim.poll() is None, victim.communicate()
    assert time.monotonic() < deadline
    time.sleep(0.05)
  victim.send_signal(signal.SIGKILL)  # mid-run, maybe mid-write
  victim.communicate()
  assert victim.returncode == -signal.SIGKILL
  resumed = _cli(*flags, "--workdir", str(tmp_path / "killed"), "--resume")
  out, err = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, err
  got = json.loads(out.splitlines()[-1])
  for key in ("wall_s", "workdir"):
    got.pop(key), want.pop(key)
  assert got == want
  assert ((tmp_path / "killed" / "metrics.jsonl").read_text()
          == (tmp_path / "whole" / "metrics.jsonl").read_text())


def _counting_steps(monkeypatch):
  """Counts the updates that train_and_evaluate runs from now on."""
  ran = []
  build = loop.build_program

  def counted(*args):
    program = build(*args)
    step = program.train_step
    return program._replace(train_step=lambda *a: (ran.append(1), step(*a))[1])

  monkeypatch.setattr(loop, "build_program", counted)
  return ran


def test_resume_runs_only_the_remaining_updates_and_refuses_changed_flags(
    tiny, tmp_path, monkeypatch):
  short = training.train_and_evaluate(tiny(optimizer="sgd", effective_epochs=1.0), tmp_path / "r")
  ran = _counting_steps(monkeypatch)
  longer = training.train_and_evaluate(tiny(optimizer="sgd", effective_epochs=2.0, resume=True),
                                       tmp_path / "r")
  assert len(ran) == 32 - 16  # 16 updates per effective epoch; the first 16 restored
  whole = training.train_and_evaluate(tiny(optimizer="sgd", effective_epochs=2.0), tmp_path / "w")
  assert longer.history[:len(short.history)] == short.history
  assert longer.history == whole.history
  # Evaluations (eval_every 1) at 0, 16, 32; the last two checkpoints kept.
  assert [r["step"] for r in longer.history] == [0, 16, 32]
  assert sorted(os.listdir(tmp_path / "r" / "checkpoints"), key=int) == ["16", "32"]
  default_lr = tiny(optimizer="sgd").lr
  # Only the flag the user changed is named, not the schedule that follows the lr.
  with pytest.raises(training.ConfigError, match=rf"other flags: --lr {default_lr:g} -> 0.2$"):
    training.train_and_evaluate(tiny(optimizer="sgd", lr=0.2, effective_epochs=3.0, resume=True),
                                tmp_path / "r")
  schedule = "--lr-schedule 60:0.006,120:0.0012,180:0.00024,... (40 pairs) -> none"
  with pytest.raises(training.ConfigError, match=re.escape(schedule) + "$"):
    training.train_and_evaluate(
        tiny(optimizer="sgd", lr_schedule="none", effective_epochs=3.0, resume=True),
        tmp_path / "r")
  with pytest.raises(training.ConfigError, match="already at 2.000 effective epochs"):
    training.train_and_evaluate(tiny(optimizer="sgd", effective_epochs=1.0, resume=True),
                                tmp_path / "r")


def test_checkpoints_from_before_param_init_resume_as_flax_initialised(tiny, tmp_path):
  # Runs from before the flag started from Flax's initialisation, then the only one.
  training.train_and_evaluate(tiny(optimizer="sgd", effective_epochs=0.5, param_init="flax"),
                              tmp_path)
  metas = list((tmp_path / "checkpoints").glob("*/meta/metadata"))
  assert metas
  for meta in metas:  # as written before the flag
    saved = json.loads(meta.read_text())
    del saved["config"]["param_init"]
    meta.write_text(json.dumps(saved))
  # Today's default is the authors' initialisation: resuming with it is refused by name.
  with pytest.raises(training.ConfigError, match=r"--param-init flax -> pytorch-legacy; "
                                                  r"pass --param-init flax to continue"):
    training.train_and_evaluate(tiny(optimizer="sgd", effective_epochs=1.0, resume=True),
                                tmp_path)
  resumed = training.train_and_evaluate(
      tiny(optimizer="sgd", effective_epochs=1.0, resume=True, param_init="flax"), tmp_path)
  assert resumed.history[-1]["step"] == 16


def test_the_newest_k_evaluations_checkpoints_are_kept(tiny, tmp_path):
  result = training.train_and_evaluate(
      tiny(optimizer="sgd", effective_epochs=0.5, eval_every=0.125, keep_checkpoints=3), tmp_path)
  steps = [r["step"] for r in result.history]
  assert len(steps) == 5 and checkpoints.Checkpointer(tmp_path).steps() == steps[-3:]


def test_a_workdir_with_checkpoints_is_never_overwritten(tiny, tmp_path):
  training.train_and_evaluate(tiny(optimizer="sgd", effective_epochs=0.5), tmp_path)
  before = (tmp_path / "metrics.jsonl").read_text()
  with pytest.raises(training.ConfigError, match="--resume"):
    training.train_and_evaluate(tiny(optimizer="sgd", effective_epochs=0.5), tmp_path)
  assert (tmp_path / "metrics.jsonl").read_text() == before


def test_resuming_on_other_data_is_refused(tiny, mnist_dir, tmp_path):
  training.train_and_evaluate(tiny(optimizer="sgd", effective_epochs=0.25), tmp_path / "r")
  other = tmp_path / "other"
  other.mkdir()
  for f in pathlib.Path(mnist_dir).iterdir():
    data = f.read_bytes()
    # Same shapes, other labels.
    other.joinpath(f.name).write_bytes(data if "images" in f.name else data[:8] + data[8:][::-1])
  with pytest.raises(training.ConfigError, match="other data"):
    training.train_and_evaluate(
        tiny(optimizer="sgd", effective_epochs=0.5, resume=True, data_dir=str(other)),
        tmp_path / "r")
  assert checkpoints.fingerprint(input_pipeline.load(str(other))[0]) != checkpoints.fingerprint(
      input_pipeline.load(mnist_dir)[0])


def test_nothing_is_created_before_the_first_save(tmp_path):
  saver = checkpoints.Checkpointer(tmp_path / "w")
  assert saver.latest() is None and saver.describe_latest() == "no checkpoint was written"
  assert not (tmp_path / "w").exists()


def test_resume_may_move_the_data_and_change_devices_and_spmd(tiny, mnist_dir, tmp_path):
  moved = tmp_path / "moved"
  shutil.copytree(mnist_dir, moved)
  run = lambda **flags: tiny(optimizer="sgd", eval_every=0.5, **flags)
  training.train_and_evaluate(run(effective_epochs=0.5), tmp_path / "r")
  resumed = training.train_and_evaluate(
      run(effective_epochs=1.0, resume=True, devices=2, spmd="shard_map", data_dir=str(moved)),
      tmp_path / "r")
  whole = training.train_and_evaluate(run(effective_epochs=1.0), tmp_path / "w")
  assert [r["step"] for r in resumed.history] == [r["step"] for r in whole.history] == [0, 8, 16]
  # The same trajectory up to float reassociation.
  for a, b in zip(resumed.history, whole.history):
    assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-3, abs=1e-5)


def test_a_checkpoint_from_before_the_guarded_outer_step_carries_over(tmp_path):
  # Before the guard, entropy_sgd's state was (local entropy, SGD); now the
  # SGD state sits inside optax.apply_if_finite's, with counters of its own.
  import jax.numpy as jnp
  import numpy as np
  import optax

  import entropix

  params = {"w": jnp.ones(3)}
  opt = entropix.entropy_sgd(0.1, gamma=1.0, reset_inner_momentum=False)
  like = {"params": params, "opt_state": opt.init(params)}
  trace = jnp.array([1.0, 2.0, 3.0])
  local = like["opt_state"][0]._replace(count=jnp.asarray(7), inner_velocity={"w": trace})
  local = {k: v for k, v in local._asdict().items() if k != "grad_state"}  # a new field
  old_sgd = (optax.TraceState(trace={"w": 2 * trace}), *like["opt_state"][1].inner_state[1:])
  old = {"params": {"w": 5 * trace}, "opt_state": (local, old_sgd)}
  checkpointer = checkpoints.Checkpointer(tmp_path)
  checkpointer.save(3, old, {}, "data", [])
  restored = checkpointer.restore(3, like)
  assert jax.tree.structure(restored) == jax.tree.structure(like)
  np.testing.assert_array_equal(restored["params"]["w"], 5 * trace)
  np.testing.assert_array_equal(restored["opt_state"][0].inner_velocity["w"], trace)
  assert int(restored["opt_state"][0].count) == 7
  guard = restored["opt_state"][1]
  np.testing.assert_array_equal(guard.inner_state[0].trace["w"], 2 * trace)
  assert int(guard.total_notfinite) == 0 and bool(guard.last_finite)
  # State the layout has no place for is refused, not dropped.
  checkpointer.save(4, {**old, "stranger": jnp.zeros(2)}, {}, "data", [])
  with pytest.raises(training.ConfigError, match="no place for.*stranger"):
    checkpointer.restore(4, like)
  checkpointer.close()
