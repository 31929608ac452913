"""Tests of training.train_seeds and train.py --seeds: several seeds as one program."""

import dataclasses
import json
import os
import shutil

import jax
import numpy as np
import pytest

import train
import training
from training import loop, sweeps

# (model, optimizer, devices, flags): an inner loop, plain SGD on the conv net
# across devices, replicas (a seed axis behind the replica axis).
CASES = [("mnistfc", "entropy-sgd", 1, {}), ("lenet", "sgd", 2, {}),
         ("mnistfc", "parle", 4, {"replicas": 2})]


def _curve(history):
  return np.array([[r["val_loss"], r["train_loss"] or 0.0] for r in history])


@pytest.mark.parametrize("model,optimizer,devices,flags", CASES)
def test_each_seed_of_the_program_is_its_run_alone(model, optimizer, devices, flags, tiny,
                                                   fast, tmp_path):
  config = tiny(model=model, optimizer=optimizer, devices=devices, effective_epochs=0.5,
                eval_every=0.25, **fast[optimizer], **flags)
  alone = {seed: training.train_and_evaluate(dataclasses.replace(config, seed=seed),
                                             tmp_path / f"alone{seed}") for seed in (3, 5)}
  for vmap in (True, False):  # stacked seeds, vmapped (an accelerator's default), or a tuple
    group = training.train_seeds(config, [3, 5], tmp_path / f"vmap{vmap}", vmap=vmap)
    assert [r.summary["seed"] for r in group] == [3, 5]
    for seed, result in zip([3, 5], group):
      # Measured on this CPU: at most 1 ulp apart (6e-8 in the parameters,
      # 9e-8 relative in the losses); XLA sums some products in another order.
      np.testing.assert_allclose(_curve(result.history), _curve(alone[seed].history), rtol=1e-5)
      assert [r["val_error"] for r in result.history] == \
          [r["val_error"] for r in alone[seed].history]
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
                   result.state.params, alone[seed].state.params)
      workdir = tmp_path / f"vmap{vmap}" / f"seed_{seed}"
      assert result.summary["workdir"] == str(workdir)
      assert sorted(os.listdir(workdir)) == ["checkpoints", "config.json", "metrics.jsonl"]
      assert json.loads((workdir / "config.json").read_text()) == \
          json.loads((tmp_path / f"alone{seed}" / "config.json").read_text())
      lines = (workdir / "metrics.jsonl").read_text().splitlines()
      assert [json.loads(line)["step"] for line in lines] == \
          [r["step"] for r in alone[seed].history]


def test_the_seeds_draw_their_permutation_once_an_epoch(tiny, mnist_dir):
  # Under vmap a per-seed predicate would turn the lax.cond around the
  # permutation into a select: a permutation of the training set per minibatch.
  import input_pipeline

  config = tiny(optimizer="sgd")
  dataset, scaling = input_pipeline.load(mnist_dir, "centered", 0)
  members = [dataclasses.replace(config, seed=s) for s in (0, 1)]
  program = sweeps.build_group_program(members, dataset, scaling, vmap=True)
  state = program.parallel.put_state(program.state)
  hlo = program.train_step.lower(state, program.data).compile().as_text()
  one = loop.build_program(config, dataset, scaling)
  single = one.train_step.lower(one.parallel.put_state(one.state), one.data).compile().as_text()
  assert hlo.count("conditional(") == single.count("conditional(") >= 1


@pytest.mark.parametrize("vmap", [False, True])
def test_a_seed_whose_loss_is_nan_stops_alone(vmap, tiny, tmp_path, monkeypatch):
  build = sweeps.build_group_program

  def poisoned(*args, **kwargs):  # seed 5's momentum starts NaN: its second update's loss is
    program = build(*args, **kwargs)

    poison = lambda x: np.full_like(x, np.nan) if np.issubdtype(x.dtype, np.floating) else x
    members = program.members(program.state)
    members[1] = members[1]._replace(opt_state=jax.tree.map(poison, members[1].opt_state))
    return program._replace(state=program.stack(members))

  monkeypatch.setattr(sweeps, "build_group_program", poisoned)
  config = tiny(optimizer="sgd", effective_epochs=0.5, eval_every=0.25)
  healthy, sick = training.train_seeds(config, [3, 5], tmp_path, vmap=vmap)
  assert "stopped" not in healthy.summary and healthy.summary["updates"] == 8
  assert [r["step"] for r in healthy.history] == [0, 4, 8]
  assert "loss is nan at update 2" in sick.summary["stopped"]
  assert f"the last good checkpoint is {tmp_path / 'seed_5' / 'checkpoints' / '0'}" in \
      sick.summary["stopped"]
  assert [r["step"] for r in sick.history] == [0] and sick.summary["updates"] == 0
  assert (tmp_path / "seed_5" / "metrics.jsonl").read_text().count("\n") == 1
  # A resume leaves the stopped seed be: it says why in its workdir.
  assert json.loads((tmp_path / "seed_5" / "stopped.json").read_text()) == \
      {"stopped": sick.summary["stopped"]}
  monkeypatch.setattr(sweeps, "build_group_program", build)
  alone = training.train_and_evaluate(dataclasses.replace(config, seed=3), tmp_path / "alone")
  np.testing.assert_allclose(_curve(healthy.history), _curve(alone.history), rtol=1e-5)


def test_the_seeds_resume_to_the_metrics_of_an_uninterrupted_program(tiny, tmp_path):
  config = tiny(optimizer="entropy-sgd", inner_steps=2, effective_epochs=1.0, eval_every=0.25)
  whole = training.train_seeds(config, [0, 1], tmp_path / "whole")
  half = dataclasses.replace(config, effective_epochs=0.5)
  training.train_seeds(half, [0, 1], tmp_path / "parts")
  # Seed 1 lost its newest checkpoint: both seeds go back to the newest
  # update they both kept, and end as if never stopped.
  shutil.rmtree(tmp_path / "parts" / "seed_1" / "checkpoints" / "4")
  resumed = dataclasses.replace(config, run=dataclasses.replace(config.run, resume=True))
  parts = training.train_seeds(resumed, [0, 1], tmp_path / "parts")
  assert [r.summary["seed"] for r in parts] == [0, 1]
  for got, want in zip(parts, whole):
    assert got.history == want.history
    assert (tmp_path / "parts" / f"seed_{got.summary['seed']}" / "metrics.jsonl").read_text() == \
        (tmp_path / "whole" / f"seed_{got.summary['seed']}" / "metrics.jsonl").read_text()


def test_a_resume_reports_finished_and_stopped_seeds_and_trains_a_new_one(tiny, tmp_path,
                                                                         monkeypatch):
  config = tiny(optimizer="sgd", effective_epochs=0.25, eval_every=0.125)
  first = training.train_seeds(config, [0, 1], tmp_path)
  (tmp_path / "seed_1" / "stopped.json").write_text(json.dumps({"stopped": "loss is nan"}))
  resumed = dataclasses.replace(config, run=dataclasses.replace(config.run, resume=True))
  results = training.train_seeds(resumed, [0, 1, 2], tmp_path)
  assert results[0].history == first[0].history and results[0].state is None
  assert "stopped" not in results[0].summary and results[0].summary["updates"] == 4
  assert results[1].summary["stopped"] == "loss is nan" and results[1].state is None
  assert [r["step"] for r in results[2].history] == [0, 2, 4]  # trained alone, from scratch
  alone = training.train_and_evaluate(dataclasses.replace(config, seed=2), tmp_path / "alone")
  np.testing.assert_allclose(_curve(results[2].history), _curve(alone.history), rtol=1e-5)


def test_a_seed_that_cannot_resume_with_the_others_is_left_out(tiny, tmp_path, capsys):
  config = tiny(optimizer="sgd", effective_epochs=0.5, eval_every=0.25)
  training.train_seeds(dataclasses.replace(config, effective_epochs=0.25), [0, 1], tmp_path)
  resumed = dataclasses.replace(config, run=dataclasses.replace(config.run, resume=True))
  results = training.train_seeds(resumed, [0, 1, 2], tmp_path)  # seed 2 is new
  assert [r.summary["seed"] for r in results] == [0, 1, 2]
  assert [r["step"] for r in results[0].history] == [0, 4, 8]
  note = results[2].summary["left_out"]
  assert f"{tmp_path / 'seed_2'}: left out, its newest checkpoint is at update 0" in note
  assert f"train.py --workdir {tmp_path / 'seed_2'} --resume and the flags" in note
  assert results[2].history == [] and results[2].state is None
  assert not (tmp_path / "seed_2").exists()


@pytest.mark.parametrize("seeds,message", [
    ([], "at least one seed"), ([1, 1], "--seeds 1,1: a seed is repeated"),
    ([-1], "--seeds: -1 is not an integer"), ([2**32], "is not an integer in 0 .. 4294967295"),
    ([0.5], "--seeds: 0.5")])
def test_bad_seeds_are_refused_before_anything_is_written(seeds, message, tiny, tmp_path):
  with pytest.raises(training.ConfigError, match=message.replace(".", r"\.")):
    training.train_seeds(tiny(optimizer="sgd"), seeds, tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_train_py_seeds_prints_a_summary_per_seed_and_shows_each_seeds_progress(
    mnist_dir, tmp_path, capsys):
  flags = ["--optimizer", "sgd", "--batch-size", "16", "--data-dir", mnist_dir, "--devices", "1",
           "--effective-epochs", "0.25", "--input-scaling", "centered"]
  assert train.main([*flags, "--seeds", "4,2", "--workdir", str(tmp_path)]) == 0
  out, err = capsys.readouterr()
  summaries = [json.loads(line) for line in out.splitlines()[-2:]]
  assert [s["seed"] for s in summaries] == [4, 2]
  assert [s["workdir"] for s in summaries] == [str(tmp_path / "seed_4"), str(tmp_path / "seed_2")]
  assert "seed 4: update 4 (effective epoch 0.25)" in err and "seed 2: update 4" in err


# Two points apart in every setting a vmapped step takes per run.
POINTS = [dict(lr=0.05, gamma=0.03, noise=1e-4, weight_decay=0.0, inner_lr=0.1, alpha=0.75,
               momentum=0.9),
          dict(lr=0.2, gamma=1.0, noise=1e-3, weight_decay=1e-3, inner_lr=0.05, alpha=0.5,
               momentum=0.5)]


def test_each_point_of_a_sweep_is_its_run_alone(tiny, fast, tmp_path):
  configs = [tiny(optimizer="entropy-sgd", effective_epochs=0.5, eval_every=0.25, **point,
                  **fast["entropy-sgd"]) for point in POINTS]
  alone = [training.train_and_evaluate(c, tmp_path / f"alone{i}") for i, c in enumerate(configs)]
  for vmap in (False, True):  # one copy of the step per point, or one step vmapped
    group = training.train_group(configs, [tmp_path / f"{vmap}{i}" for i in range(2)], vmap=vmap)
    for i, result in enumerate(group):
      np.testing.assert_allclose(_curve(result.history), _curve(alone[i].history), rtol=1e-5)
      assert [r["lr"] for r in result.history] == [r["lr"] for r in alone[i].history]
      assert (tmp_path / f"{vmap}{i}" / "config.json").read_text() == \
          (tmp_path / f"alone{i}" / "config.json").read_text()
  assert alone[0].history[-1]["lr"] == 0.05 and alone[1].history[-1]["lr"] == 0.2
  assert _curve(alone[0].history)[-1, 0] != _curve(alone[1].history)[-1, 0]


def test_train_py_sweeps_a_grid_with_seeds(mnist_dir, tmp_path, capsys):
  flags = ["--optimizer", "sgd", "--batch-size", "16", "--data-dir", mnist_dir, "--devices", "1",
           "--effective-epochs", "0.125", "--input-scaling", "centered", "--no-progress"]
  assert train.main([*flags, "--sweep", "lr=0.05,0.2", "--sweep", "weight-decay=0,1e-3",
                     "--seeds", "0,1", "--workdir", str(tmp_path)]) == 0
  summaries = [json.loads(line) for line in capsys.readouterr().out.splitlines()[-8:]]
  points = ["lr=0.05,weight-decay=0", "lr=0.05,weight-decay=0.001", "lr=0.2,weight-decay=0",
            "lr=0.2,weight-decay=0.001"]
  assert [s["workdir"] for s in summaries] == [str(tmp_path / p / f"seed_{s}")
                                               for p in points for s in (0, 1)]
  # Each summary names its point (the lr schedule that follows the lr is implied).
  assert [s["swept"] for s in summaries[::2]] == [
      {"lr": lr, "weight_decay": wd} for lr in (0.05, 0.2) for wd in (0.0, 1e-3)]
  saved = json.loads((tmp_path / points[3] / "seed_1" / "config.json").read_text())
  assert (saved["lr"], saved["weight_decay"], saved["seed"]) == (0.2, 1e-3, 1)
  assert saved["lr_schedule"][0] == [60.0, pytest.approx(0.04)]  # the default follows the lr


BAD = [
    (["--seeds", "1,x"], "'1,x': want integers and commas"),
    (["--seeds", "0,1", "--seed", "2"], "--seed and --seeds: give one of them"),
    (["--seeds", "0,0"], "a seed is repeated"),
    (["--sweep", "inner-steps=2,3"], "sweep one of lr, momentum, weight-decay, gamma"),
    (["--sweep", "lr=0.1,x"], "want NAME=V,V,... with numbers"),
    (["--sweep", "lr=0.1,-1"], "--sweep point lr=-1: --lr -1.0: must be > 0"),
    (["--sweep", "lr=0.1", "--sweep", "lr=0.2"], "--sweep lr: swept twice"),
    (["--sweep", "lr=0.1,0.2", "--lr", "0.3"], "--lr and --sweep lr: give one"),
    (["--sweep", "lr=0.1,0.1000001"], "one folder name, lr=0.1"),
    (["--sweep", "lr=0.1", "--seeds", "0,-1"], "--seeds: -1 is not an integer")]


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_train_py_refuses_bad_seeds_and_sweeps(argv, message, mnist_dir, tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    train.main([*argv, "--data-dir", mnist_dir, "--devices", "1", "--workdir",
                str(tmp_path / "run")])
  assert exit_info.value.code == 2 and message in capsys.readouterr().err
  assert not (tmp_path / "run").exists()


def test_runs_that_cannot_share_a_program_are_refused(tiny, tmp_path):
  sgd = lambda **flags: tiny(optimizer="sgd", **flags)
  with pytest.raises(training.ConfigError, match="--batch-size 16 and 32: runs of one program"):
    training.train_group([sgd(), sgd(batch_size=32)], [tmp_path / "a", tmp_path / "b"])
  with pytest.raises(training.ConfigError, match="change the lr at the same effective epochs"):
    training.train_group([sgd(lr_schedule="1:0.1"), sgd(lr_schedule="2:0.1")],
                         [tmp_path / "a", tmp_path / "b"])
  with pytest.raises(training.ConfigError, match="--scoping: a vmapped step takes only --lr"):
    training.train_group([tiny(scoping=1e-3), tiny(scoping=2e-3)],
                         [tmp_path / "a", tmp_path / "b"], vmap=True)
  with pytest.raises(training.ConfigError, match="one workdir per run"):
    training.train_group([sgd(), sgd(seed=1)], [tmp_path / "a", tmp_path / "a"])
  assert not any(tmp_path.iterdir())
