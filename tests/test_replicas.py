"""train.py's elastic-sgd and parle: replicas x devices, each replica its own run."""

import dataclasses

import jax
import numpy as np
import pytest

import training
from training import ConfigError


def _replica(tree, r):
  return jax.tree.map(lambda x: x[r], tree)


def _spread(params):
  """|x_0 - x_1| over every parameter of two replicas."""
  return float(np.sqrt(sum(np.sum((x[0] - x[1]) ** 2) for x in jax.tree.leaves(params))))


@pytest.fixture(scope="module")
def uncoupled(tiny, tmp_path_factory):
  # 2 replicas on 2 devices each, rho = 0: two independent runs.
  config = tiny(optimizer="elastic-sgd", replicas=2, devices=4, rho=0.0)
  return training.train_and_evaluate(config, tmp_path_factory.mktemp("uncoupled"))


def test_uncoupled_replica_r_is_the_one_replica_run_of_seed_plus_r(uncoupled, tiny, tmp_path):
  # Its own initialisation, minibatches and dropout (seed + r), data parallel
  # over its 2 devices; 8 updates each (effective epochs count both replicas).
  alone = training.train_and_evaluate(
      tiny(optimizer="elastic-sgd", replicas=1, devices=1, rho=0.0, seed=1,
           effective_epochs=0.5), tmp_path)
  assert uncoupled.summary["updates"] == alone.summary["updates"] == 8
  assert uncoupled.summary["backprops"] == 16
  for x, y in zip(jax.tree.leaves(_replica(uncoupled.state.params, 1)),
                  jax.tree.leaves(_replica(alone.state.params, 0))):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5 * np.max(np.abs(y)))
  assert uncoupled.history[-1]["val_error_replicas"][1] == alone.history[-1]["val_error"]
  assert _spread(uncoupled.state.params) > 1.0  # the replicas did not start alike


def test_the_elastic_pull_shrinks_the_replicas_spread(uncoupled, tiny, tmp_path):
  coupled = training.train_and_evaluate(
      tiny(optimizer="elastic-sgd", replicas=2, devices=4, rho=1.0), tmp_path)
  assert _spread(coupled.state.params) < 0.5 * _spread(uncoupled.state.params)  # measured 0.38


def test_parle_reports_the_average_and_the_best_and_worst_replica_and_resumes(tiny, tmp_path):
  config = tiny(optimizer="parle", replicas=2, devices=4, inner_steps=2, eval_every=0.5)
  whole = training.train_and_evaluate(config, tmp_path / "whole")
  assert whole.summary["replicas"] == 2 and whole.summary["updates"] == 4
  assert [r["backprops"] for r in whole.history] == [0, 8, 16]  # 2 replicas x L = 2
  for record in whole.history:
    errors = record["val_error_replicas"]
    assert len(errors) == 2
    assert (record["val_error_best"], record["val_error_worst"]) == (min(errors), max(errors))
  assert whole.history[0]["val_error_best"] != whole.history[0]["val_error_worst"]
  assert whole.summary["val_error_worst"] == whole.history[-1]["val_error_worst"]
  # The average is evaluated with its own BatchNorm statistics: not a replica's error.
  assert whole.history[0]["val_error"] not in whole.history[0]["val_error_replicas"]
  assert jax.tree.leaves(whole.state.params)[0].shape[0] == 2

  half = dataclasses.replace(config, effective_epochs=0.5)
  training.train_and_evaluate(half, tmp_path / "resumed")
  resumed = training.train_and_evaluate(
      dataclasses.replace(config, run=dataclasses.replace(config.run, resume=True)),
      tmp_path / "resumed")
  assert resumed.history == whole.history
  # One replica per device by default: 8 devices would make it 8 replicas.
  with pytest.raises(ConfigError, match=r"--replicas 2 -> 8; --replicas defaults to "
                                        r"one per device: pass --replicas 2 to continue"):
    training.train_and_evaluate(
        tiny(optimizer="parle", devices=8, inner_steps=2, eval_every=0.5, resume=True),
        tmp_path / "resumed")
  for x, y in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(whole.state)):
    np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("flags, message", [
    (dict(optimizer="sgd", replicas=2), "--replicas does not apply to --optimizer sgd"),
    (dict(optimizer="parle", replicas=3, devices=4), "--replicas 3: must divide --devices 4"),
    (dict(optimizer="parle", replicas=0), "--replicas 0: must be an integer >= 1"),
    (dict(optimizer="parle", spmd="pmap"), "--spmd pmap: --optimizer parle maps replicas x"),
    (dict(optimizer="elastic-sgd", rho=2.0, rho_max=1.0), "--rho-max 1.0: must be >= --rho 2.0"),
    (dict(optimizer="parle", gamma=0.5, gamma_max=0.1), "--gamma-max 0.1: must be >= --gamma"),
    (dict(optimizer="parle", replicas=2, devices=8, batch_size=6),
     "--batch-size 6 is not divisible by --devices 8 / --replicas 2"),
    (dict(optimizer="elastic-sgd", unroll=2), "--unroll does not apply to --optimizer elastic-sgd"),
])
def test_replica_flags_are_checked(tiny, flags, message):
  with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
    tiny(**flags)


def test_one_replica_per_device_by_default(tiny):
  config = tiny(optimizer="parle", devices=4)
  assert config.replicas == 4 and config.run.spmd == "shard_map"
  assert config.backprops_per_update == 4 * 25
  assert training.build_config(**config.flags()) == config
