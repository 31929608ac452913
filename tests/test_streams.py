"""Tests of training/streams.py: every random stream of a run follows its seed.

Each stream is read off the program itself (alone, and as members of one
program under --seeds, both layouts): the initial parameters, the
optimizer's key in its state, the permutation of the first epoch and the
loss of the first minibatch, which depends on its rows and dropout mask.
"""

import dataclasses

import jax
import numpy as np
import optax
import pytest

import input_pipeline
import models
from training import loop, streams, sweeps

SEEDS = (3, 5)


def test_two_seeds_differ_in_every_stream_and_a_seeds_streams_differ():
  keys = [tuple(np.asarray(k)) for seed in SEEDS for k in streams.of(streams.seed_key(seed))]
  assert len(streams.Streams._fields) == 5  # init, data, dropout, optimizer, measure
  assert len(keys) == 10 and len(set(keys)) == 10


def _first_loss(model, params, batch_stats, rows, dropout_key, dataset, scaling):
  logits, _ = model.apply({"params": params, "batch_stats": batch_stats},
                          scaling(dataset.train_images[rows]), train=True,
                          rngs={"dropout": dropout_key}, mutable=["batch_stats"])
  y = dataset.train_labels[rows].astype(np.int32)
  return float(optax.softmax_cross_entropy_with_integer_labels(logits, y).mean())


@pytest.mark.parametrize("layout", ["alone", "stacked", "tuple"])
def test_every_stream_of_a_run_follows_its_seed(layout, tiny):
  config = tiny(optimizer="entropy-sgd", inner_steps=2, effective_epochs=0.25)
  dataset, scaling = input_pipeline.load(config.run.data_dir, config.input_scaling)
  seeds = SEEDS[:1] if layout == "alone" else SEEDS
  members = [dataclasses.replace(config, seed=s) for s in seeds]
  program = (loop.build_program(members[0], dataset, scaling) if layout == "alone" else
             sweeps.build_group_program(members, dataset, scaling, vmap=layout == "stacked"))
  par = program.parallel
  state, out = program.train_step(par.put_state(program.state), program.data)
  model = models.create(config.model, param_init=config.param_init)
  n, batch = dataset.train_images.shape[0], config.batch_size
  firsts = set()
  for seed, start, after, loss in zip(seeds, program.members(program.state),
                                      program.members(par.get_state(state)),
                                      program.members(par.get(out))):
    keys = streams.of(streams.seed_key(seed))
    want = model.init(keys.init, scaling(dataset.train_images[:1]), train=False)
    jax.tree.map(np.testing.assert_array_equal, start.params, want["params"])
    np.testing.assert_array_equal(optax.tree.get(start.opt_state, "rng_key"), keys.optimizer)
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(keys.data, 0), n))
    np.testing.assert_array_equal(after.perm, perm)
    first = _first_loss(model, start.params, start.batch_stats, perm[:batch],
                        jax.random.fold_in(keys.dropout, 0), dataset, scaling)
    assert float(np.ravel(loss["loss"])[0]) == pytest.approx(first, rel=1e-5)
    # The same rows and parameters with another dropout key score otherwise.
    other = _first_loss(model, start.params, start.batch_stats, perm[:batch],
                        jax.random.fold_in(keys.dropout, 1), dataset, scaling)
    assert abs(other - first) > 1e-4
    firsts.add(first)
  assert len(firsts) == len(seeds)
