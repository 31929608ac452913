"""Tests of experiments/gpu_check/gpu_check.py's parts that need no accelerator."""

import numpy as np
import pytest

import input_pipeline


@pytest.fixture(scope="module")
def gpu_check(load_script):
  return load_script("experiments/gpu_check/gpu_check.py")


def test_the_synthetic_cifar_files_read_as_cifar10(gpu_check, tmp_path):
  gpu_check.write_synthetic_cifar(tmp_path, 643, 100)
  data = input_pipeline.load_cifar10(tmp_path)
  assert data.train_images.shape == (643, 32, 32, 3) and data.test_images.shape[0] == 100
  assert data.train_labels.max() <= 9 and len(np.unique(data.train_labels)) == 10
  assert data.train_images.std() > 50  # uniform pixels, not a constant


def test_it_names_too_few_cifar_images(gpu_check, capsys):
  with pytest.raises(SystemExit):
    gpu_check.main(["--cifar-images", "10", "--out", "unused.json"])
  assert "--cifar-images 10" in capsys.readouterr().err


def test_versions_name_the_packages(gpu_check):
  import jax

  found = gpu_check.versions()
  assert found["jax"] == jax.__version__ and set(found) >= {"flax", "optax", "numpy"}
