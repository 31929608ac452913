"""train.py --diagnose: entropix.diagnostics on a finished run's checkpoint."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import input_pipeline
import models
import train
import training
from entropix import diagnostics
from training import diagnose, settings, streams
from training.config import ConfigError

SMALL = diagnose.Settings(images=32, batch=16, top_k=2, lanczos_steps=8, probes=4,
                          density_probes=1, density_steps=6, gammas=(0.1, 1.0), chain_steps=20,
                          sigmas=(1e-3, 1e-2), perturbations=2, layer_lanczos_steps=4)


@pytest.fixture(scope="module")
def finished_run(mnist_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run") / "lenet"
  flags = ["--model", "lenet", "--optimizer", "sgd", "--batch-size", "16", "--data-dir",
           mnist_dir, "--devices", "1", "--effective-epochs", "0.25", "--no-progress",
           "--workdir", str(workdir)]
  assert train.main(flags) == 0
  return workdir


def test_it_measures_the_newest_checkpoint_and_writes_beside_the_metrics(finished_run):
  record = diagnose.diagnose(finished_run, SMALL)
  assert json.loads((finished_run / "diagnostics.json").read_text()) == record
  last = json.loads((finished_run / "metrics.jsonl").read_text().splitlines()[-1])
  assert record["step"] == last["step"] and record["optimizer"] == "sgd"
  assert record["images"] == 32 and np.isfinite(record["loss"])
  top = record["top_eigenvalues"]
  assert len(top) == 2 and top[0] >= top[1]
  assert record["diagonal"]["entries"] == 131_220  # every LeNet parameter
  density = record["spectral_density"]
  assert abs(np.trapezoid(density["density"], density["grid"]) - 1) < 1e-6
  assert record["local_entropy"]["gammas"] == [0.1, 1.0]
  assert len(record["perturbation_sharpness"]["increase"]) == 2
  assert record["relative_sharpness"]["sigmas"] == list(SMALL.relative_sigmas)
  assert record["parameter_norms"]["['Conv_0']['kernel']"] > 0
  assert set(record["wall_s"]) == set(diagnose.PARTS) - {"parameter_norms"}
  assert diagnose.missing(record) == ()
  # Per layer, the blocks of the Hessian: LeNet's modules, every parameter in
  # one, and their traces adding up to the whole's (both estimates, unbiased).
  layers = record["layers"]
  assert list(layers) == sorted({key.split("'")[1] for key in record["parameter_norms"]})
  assert sum(layer["parameters"] for layer in layers.values()) == 131_220
  total = sum(layer["trace"] for layer in layers.values())
  spread = np.hypot(np.sqrt(sum(layer["trace_stderr"] ** 2 for layer in layers.values())),
                    record["trace"]["stderr"])
  assert abs(total - record["trace"]["value"]) < 4 * spread
  assert all(layer["top_eigenvalue"] > 0 for layer in layers.values())


def test_a_part_measured_later_joins_the_record_and_equals_its_measure_among_all(finished_run):
  whole = diagnose.diagnose(finished_run, SMALL)
  lean = {k: v for k, v in whole.items() if k not in ("relative_sharpness", "parameter_norms")}
  (finished_run / "diagnostics.json").write_text(json.dumps(lean))
  more = dataclasses.replace(SMALL, gammas=(0.2, 1.0))
  with pytest.raises(ConfigError, match="other settings \\(gammas\\)"):
    diagnose.diagnose(finished_run, more, parts=("relative_sharpness",))
  assert diagnose.missing(lean) == ("relative_sharpness", "parameter_norms")
  extended = diagnose.diagnose(finished_run, SMALL, parts=diagnose.missing(lean))
  assert json.loads((finished_run / "diagnostics.json").read_text()) == extended
  for key in whole:
    if key != "wall_s":
      assert extended[key] == whole[key], key


def test_the_measure_of_the_same_run_is_the_same(finished_run):
  first = diagnose.diagnose(finished_run, SMALL)
  again = diagnose.diagnose(finished_run, SMALL)
  for key in ("loss", "top_eigenvalues", "trace", "diagonal", "local_entropy"):
    assert first[key] == again[key], key


@pytest.mark.parametrize("argv,message", [
    (["--diagnose"], "--diagnose needs --workdir"),
    (["--diagnose", "--workdir", "{tmp}"], "holds no config.json"),
])
def test_bad_diagnose_calls_are_refused(argv, message, tmp_path, capsys):
  with pytest.raises(SystemExit):
    train.main([a.format(tmp=tmp_path) for a in argv])
  assert message in capsys.readouterr().err


def test_sharpness_along_the_way_is_the_evaluated_networks_at_its_marks(tiny, tmp_path,
                                                                         monkeypatch):
  monkeypatch.setattr(settings, "SHARPNESS_IMAGES", 64)
  monkeypatch.setattr(settings, "SHARPNESS_LANCZOS_STEPS", 6)
  monkeypatch.setattr(settings, "SHARPNESS_PROBES", 3)
  config = tiny(optimizer="swa", effective_epochs=0.5, eval_every=0.125, sharpness_every=0.25,
                swa_fraction=0.5)
  results = training.train_seeds(config, [0, 1], tmp_path)
  model = models.create("mnistfc", param_init=config.param_init)
  dataset, scaling = input_pipeline.load(config.run.data_dir, "centered")
  batches = {"x": dataset.train_images[None, :64],
             "y": dataset.train_labels[None, :64].astype(np.int32)}
  for seed, result in zip([0, 1], results):
    marked = [r["step"] for r in result.history if "sharpness" in r]
    assert [r["step"] for r in result.history] == [0, 2, 4, 6, 8]  # 16 updates an epoch
    assert marked == [0, 4, 8]  # update 0, past each 0.25 effective epochs, the end
    # The last one, by hand: SWA's average with the statistics its evaluation
    # re-estimated, dropout off, the first 64 training images, the seed's stream.
    stats = result.state.batch_stats

    def loss_fn(params, batch):
      logits = model.apply({"params": params, "batch_stats": stats}, scaling(batch["x"]),
                           train=False)
      return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    average = result.state.opt_state.average
    key = jax.random.fold_in(streams.of(streams.seed_key(seed)).measure, 8)
    top = diagnostics.hessian_eigenvalues(loss_fn, average, batches, 1,
                                          key=jax.random.fold_in(key, 0), num_iterations=6,
                                          progress=False)
    trace = diagnostics.hessian_trace(loss_fn, average, batches, key=jax.random.fold_in(key, 1),
                                      samples=3, progress=False)
    last = result.history[-1]["sharpness"]
    assert last["top_eigenvalue"] == pytest.approx(float(top[0]), rel=1e-5)
    assert last["trace"] == pytest.approx(trace.value, rel=1e-5)
    assert last["images"] == 64
  firsts = [r.history[0]["sharpness"]["trace"] for r in results]
  assert firsts[0] != firsts[1]  # each seed its own network and probes


@pytest.mark.parametrize("flags,message", [
    ({"eval_every": 0.25, "sharpness_every": 0.3}, "a multiple of --eval-every 0.25"),
    ({"sharpness_every": -1.0}, "--sharpness-every"),
    ({"optimizer": "parle", "sharpness_every": 1.0}, "single network"),
])
def test_bad_sharpness_intervals_are_refused(flags, message, tiny):
  with pytest.raises(ConfigError, match=message):
    tiny(**flags)


def test_each_layers_block_is_measured_alone():
  # Diagonal within each layer, coupled across them: a layer's block has its
  # own diagonal's top and trace; the whole Hessian has neither.
  scales = {"a": jnp.array([1.0, 2.0, 3.0]), "b": jnp.array([4.0, 5.0])}

  def loss(p, batch):
    own = sum(0.5 * jnp.sum(scales[k] * p[k] ** 2) for k in p)
    return own + 10.0 * p["a"][0] * p["b"][0] + 0.0 * batch.sum()

  params = {"a": jnp.zeros(3), "b": jnp.zeros(2)}
  out = diagnose._layers(loss, params, jnp.zeros((1, 1)),
                         diagnose.Settings(probes=4, layer_lanczos_steps=3), jax.random.key(0))
  assert list(out) == ["a", "b"]
  for name, top, trace in (("a", 3.0, 6.0), ("b", 5.0, 9.0)):
    assert out[name]["parameters"] == scales[name].size
    assert out[name]["top_eigenvalue"] == pytest.approx(top, rel=1e-5)
    assert out[name]["trace"] == pytest.approx(trace, rel=1e-5)
    assert out[name]["trace_stderr"] == pytest.approx(0.0, abs=1e-5)
