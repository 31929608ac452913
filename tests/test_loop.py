"""Tests of training/loop.py: train_and_evaluate end to end on tiny data."""

import json

import numpy as np
import pytest

import input_pipeline
import training
from training import loop
from training.config import OPTIMIZERS



# Every optimizer on mnistfc, on 1 and 4 devices (the conv net across devices
# is test_devices.py's); LeNet with one optimizer with an inner loop and SGD:
# the optimizers see only a pytree, the same for every network. Elastic-SGD
# and Parle with one replica: their replicas are test_replicas.py's.
REPLICATED = ("elastic-sgd", "parle")
# All from the default initialisation (the authors'), one also from Flax's.
CASES = ([("mnistfc", o, d, None) for o in OPTIMIZERS if o not in REPLICATED for d in (1, 4)]
         + [("lenet", o, 1, None) for o in ("entropy-sgd", "sgd")]
         + [("mnistfc", o, 1, None) for o in REPLICATED]
         + [("lenet", "entropy-sgd", 1, "flax")])


@pytest.mark.parametrize("model,optimizer,devices,param_init", CASES)
def test_every_mnist_model_and_optimizer_learns(model, optimizer, devices, param_init, tiny,
                                                fast, tmp_path):
  init = {"param_init": param_init} if param_init else {}
  result = training.train_and_evaluate(
      tiny(model=model, optimizer=optimizer, devices=devices, **init, **fast[optimizer]),
      tmp_path)
  first, last = result.history[0], result.history[-1]
  assert first["step"] == 0 and last["effective_epochs"] >= 1.0
  # Ten noisy prototypes: chance is 90% error; every optimizer gets every
  # test image right after one effective epoch (measured), so allow 3 of 64.
  assert first["val_error"] > 50 and last["val_error"] <= 5, result.history
  # The loss falls below 0.001 of the first (measured), but for LeNet
  # Entropy-SGD from the authors' initialisation with 2 inner steps: 0.32.
  slow = (model, optimizer, param_init) == ("lenet", "entropy-sgd", None)
  assert last["val_loss"] < (0.5 if slow else 0.2) * first["val_loss"], result.history
  assert np.isfinite(last["train_loss"])
  summary = result.summary
  # FAST's loops take 2 backprops, as SAM's update does; the others 1.
  assert summary["backprops"] == last["backprops"] == last["step"] * (
      1 if optimizer in ("sgd", "elastic-sgd", "adamw", "swa") else 2)
  assert summary["devices"] == devices and summary["val_error"] == last["val_error"]


def test_the_network_has_as_many_outputs_as_the_data_has_classes(idx_writer, tmp_path, tiny):
  import input_pipeline as ip

  rng = np.random.default_rng(0)
  for split, n in (("train", 64), ("test", 16)):  # five classes
    idx_writer(tmp_path / ip.IDX_NAMES[f"{split}_images"], rng.integers(0, 255, (n, 28, 28)))
    idx_writer(tmp_path / ip.IDX_NAMES[f"{split}_labels"], np.arange(n) % 5)
  result = training.train_and_evaluate(
      tiny(optimizer="sgd", data_dir=str(tmp_path), effective_epochs=0.25), tmp_path / "run")
  assert result.state.params["Dense_2"]["kernel"].shape[-1] == 5


@pytest.mark.parametrize("optimizer", ["sgd", "entropy-sgd"])
def test_allcnn_trains_on_cifar_shaped_data(optimizer, tiny, fast, cifar_dir, tmp_path):
  # The CIFAR path (GCN + ZCA, All-CNN-C) through the loop; the optimizers'
  # own paths are covered on MNIST above. All-CNN-C compiles slowly on a CPU
  # (entropy-sgd: about 20 s), so two runs of a few small updates.
  result = training.train_and_evaluate(
      tiny(model="allcnn", optimizer=optimizer, data_dir=cifar_dir, input_scaling="raw",
           batch_size=8, effective_epochs=0.5, eval_every=0.5, **fast[optimizer]),
      tmp_path)
  assert [r["step"] for r in result.history] == [0, 3 if optimizer == "sgd" else 2]
  last = result.history[-1]
  assert np.isfinite(last["val_loss"]) and np.isfinite(last["train_loss"])


def test_trains_on_mnist_read_through_tensorflow_datasets(tiny, tmp_path):
  # The real tensorflow-datasets package, its data mocked: --data-dir tfds:mnist.
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=64):
    result = training.train_and_evaluate(
        tiny(optimizer="sgd", data_dir="tfds:mnist", effective_epochs=0.5), tmp_path)
  assert result.summary["evaluated_on"] == "test" and result.history[-1]["step"] == 2
  assert np.isfinite(result.history[-1]["val_loss"])


def test_validation_split_evaluates_on_held_out_training_images(tiny, tmp_path):
  result = training.train_and_evaluate(
      tiny(optimizer="sgd", validation_split=56, effective_epochs=0.5), tmp_path)
  assert result.summary["evaluated_on"] == "validation: the last 56 training examples"
  # An exact count of 56 examples, 200 left to train on: 0.5 epoch is 6 updates of 16.
  assert all(round(r["val_error"] * 56 / 100, 6).is_integer() for r in result.history)
  assert result.history[-1]["step"] == 7
  test_run = training.train_and_evaluate(tiny(optimizer="sgd", effective_epochs=0.5),
                                         tmp_path / "test")
  assert test_run.summary["evaluated_on"] == "test"


def test_same_seed_same_numbers_other_seed_other_numbers(tiny, fast, tmp_path):
  config = tiny(optimizer="entropy-sgd", noise=1e-3, **fast["entropy-sgd"])
  a = training.train_and_evaluate(config, tmp_path / "a")
  b = training.train_and_evaluate(config, tmp_path / "b")
  assert a.history == b.history
  c = training.train_and_evaluate(tiny(optimizer="entropy-sgd", noise=1e-3, seed=1,
                                       **fast["entropy-sgd"]), tmp_path / "c")
  # The training loss (a mean over the run's updates): the 64 test images'
  # loss can reach 0.0 in float32 from either seed.
  assert c.history[-1]["train_loss"] != a.history[-1]["train_loss"]


@pytest.mark.parametrize("param_init", ["flax", "pytorch-legacy"])
def test_the_network_starts_from_the_param_init_of_the_config(param_init, tiny, mnist_dir):
  config = tiny(optimizer="sgd", param_init=param_init)
  dataset, scaling = input_pipeline.load(mnist_dir, config.input_scaling)
  params = loop.build_program(config, dataset, scaling).state.params
  bias = np.asarray(params["Dense_0"]["bias"])
  scale = np.asarray(params["BatchNorm_0"]["scale"])
  if param_init == "flax":
    assert not bias.any() and (scale == 1).all()
  else:  # U(+-1 / sqrt(784)) and U(0, 1)
    assert 0 < np.abs(bias).max() <= 1 / 28 and scale.max() < 1


def test_config_json_holds_every_flag_and_rebuilds_the_config(tiny, tmp_path):
  config = tiny(optimizer="sgd", effective_epochs=0.25)
  training.train_and_evaluate(config, tmp_path)
  assert training.build_config(**json.loads((tmp_path / "config.json").read_text())) == config


def test_budgets_below_one_update_are_refused_before_anything_is_written(tiny, tmp_path):
  with pytest.raises(training.ConfigError, match="less than one update"):
    training.train_and_evaluate(tiny(effective_epochs=0.01), tmp_path / "tiny")
  assert not (tmp_path / "tiny").exists()


def test_each_record_has_the_lr_of_the_last_update_before_it(tiny, tmp_path):
  # 16 updates per effective epoch; from effective epoch 0.5 (update 8) on, lr 0.01.
  result = training.train_and_evaluate(
      tiny(optimizer="sgd", eval_every=0.5, lr=0.1, lr_schedule="0.5:0.01"), tmp_path)
  assert [(r["step"], r["lr"]) for r in result.history] == [(0, 0.1), (8, 0.1), (16, 0.01)]


def test_a_network_is_refused_data_of_another_shape(tiny, cifar_dir, tmp_path):
  with pytest.raises(training.ConfigError, match=r"--model lenet takes images of shape \(28, 28\)"):
    training.train_and_evaluate(tiny(model="lenet", data_dir=cifar_dir, input_scaling="raw"),
                                tmp_path / "run")
  assert not (tmp_path / "run").exists()


def test_a_network_declared_in_models_trains_with_its_own_defaults(tiny, tmp_path):
  # Flax's MNIST CNN, from its declaration alone (Flax's initialisation, its
  # default input scaling): slower to fit the prototypes than the paper's
  # networks, so three effective epochs.
  config = tiny(model="cnn", optimizer="sgd", effective_epochs=3.0, eval_every=3.0)
  assert config.param_init == "flax"
  result = training.train_and_evaluate(config, tmp_path)
  first, last = result.history[0], result.history[-1]
  assert first["val_error"] > 50 and last["val_error"] <= 5, result.history
