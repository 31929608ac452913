"""Tests of training/devices.py: 1 and n devices, pmap and shard_map, one trajectory."""

import dataclasses

import jax
import numpy as np
import pytest

import training


def _params_close(a, b, rtol, scale_atol):
  # Elements near 0 are held to scale_atol times the largest of their leaf:
  # reassociated float sums differ there by an absolute amount (the conv
  # biases before BatchNorm have a zero gradient and move by rounding alone).
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, rtol=rtol, atol=scale_atol * np.max(np.abs(y)))


def _with(config, **run):
  return dataclasses.replace(config, run=dataclasses.replace(config.run, **run))


@pytest.mark.parametrize("model", ["mnistfc", "lenet"])
def test_one_and_eight_devices_follow_one_trajectory(model, tiny, tmp_path):
  # Noise, dropout and cross-device BatchNorm all on: only float
  # reassociation may differ.
  config = tiny(model=model, noise=1e-3, inner_steps=3, effective_epochs=2.0)
  one = training.train_and_evaluate(config, tmp_path / "one")
  eight = training.train_and_evaluate(_with(config, devices=8), tmp_path / "eight")
  _params_close(one.state.params, eight.state.params, rtol=2e-3, scale_atol=1e-2)
  for a, b in zip(one.history, eight.history, strict=True):
    assert a["step"] == b["step"]
    np.testing.assert_allclose(a["val_loss"], b["val_loss"], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(a["train_loss"] or 0, b["train_loss"] or 0, rtol=1e-3, atol=1e-5)


def test_sam_averages_both_of_its_gradients_over_the_devices(tiny, tmp_path):
  # The step averages the gradient at x (SAM's declaration leaves it to the
  # step), optax's SAM the one at the end of the ascent step (batch_axis_name).
  config = tiny(optimizer="sam", effective_epochs=0.5)
  one = training.train_and_evaluate(config, tmp_path / "one")
  four = training.train_and_evaluate(_with(config, devices=4), tmp_path / "four")
  _params_close(one.state.params, four.state.params, rtol=2e-3, scale_atol=1e-2)
  for a, b in zip(one.history, four.history, strict=True):
    np.testing.assert_allclose(a["val_loss"], b["val_loss"], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("optimizer", ["entropy-sgd", "heat"])
def test_pmap_and_shard_map_run_the_same_step(optimizer, tiny, fast, tmp_path):
  config = tiny(optimizer=optimizer, devices=4, effective_epochs=0.5,
                **fast[optimizer])
  a = training.train_and_evaluate(config, tmp_path / "pmap")
  b = training.train_and_evaluate(_with(config, spmd="shard_map"), tmp_path / "shard_map")
  _params_close(a.state.params, b.state.params, rtol=1e-4, scale_atol=1e-4)
  assert [r["val_loss"] for r in a.history] == pytest.approx([r["val_loss"] for r in b.history],
                                                             rel=1e-5)
