"""Fixtures shared by the tests: tiny synthetic datasets and run configs.

The training side (``input_pipeline``, ``training``) is imported inside the
fixtures that need it, so the library's tests run where only jax, optax and
numpy are installed (CI's oldest-versions run).
"""

import collections
import gzip
import importlib.util
import pathlib
import sys

import numpy as np
import pytest


def write_idx(path, array, compress=False):
  """Writes ``array`` (uint8) as an IDX file at ``path`` (``path.gz`` if compressed)."""
  dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
  raw = bytes([0, 0, 0x08, array.ndim]) + dims + np.asarray(array).astype(np.uint8).tobytes()
  if compress:
    path = path.with_name(path.name + ".gz")
    raw = gzip.compress(raw)
  path.write_bytes(raw)
  return path


@pytest.fixture(scope="session")
def load_script():
  """``load_script(path)``: the script at ``path`` (from the repository root,
  e.g. ``"experiments/tuning/tune.py"``) as a module, its folder on sys.path
  for the siblings it imports."""
  root = pathlib.Path(__file__).resolve().parent.parent

  def load(path):
    path = root / path
    if str(path.parent) not in sys.path:
      sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

  return load


@pytest.fixture(scope="session")
def idx_writer():
  return write_idx


def _classes(rng, n, shape, prototypes):
  labels = rng.integers(0, 10, n)
  images = prototypes[labels] + rng.normal(0, 30, (n, *shape))
  return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.uint8)


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory):
  """256 training and 64 test 28x28 images of 10 noisy prototypes, as IDX files."""
  import input_pipeline

  directory = tmp_path_factory.mktemp("idx")
  rng = np.random.default_rng(0)
  prototypes = rng.uniform(0, 255, (10, 28, 28))
  for split, n in (("train", 256), ("test", 64)):
    images, labels = _classes(rng, n, (28, 28), prototypes)
    write_idx(directory / input_pipeline.IDX_NAMES[f"{split}_images"], images)
    write_idx(directory / input_pipeline.IDX_NAMES[f"{split}_labels"], labels)
  return str(directory)


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory):
  """CIFAR-10 binary files: 5 x 8 training images of 10 prototypes; the test
  file repeats the first 16 of them.

  ZCA fitted on 40 images in 3,072 dimensions scales every direction it never
  saw by 1 / sqrt(1e-5); new test images (if only through uint8 rounding)
  would have components there and blow up.
  """
  import input_pipeline

  directory = tmp_path_factory.mktemp("cifar")
  rng = np.random.default_rng(1)
  prototypes = rng.uniform(0, 255, (10, 3 * 32 * 32))
  labels = rng.integers(0, 10, 40)
  images = np.clip(prototypes[labels] + rng.normal(0, 30, (40, 3 * 32 * 32)), 0, 255)
  records = np.concatenate([labels[:, None], images], axis=1).astype(np.uint8)
  for i, name in enumerate(input_pipeline.CIFAR_TRAIN_FILES):
    (directory / name).write_bytes(records[8 * i:8 * (i + 1)].tobytes())
  (directory / input_pipeline.CIFAR_TEST_FILES[0]).write_bytes(records[:16].tobytes())
  return str(directory)


@pytest.fixture(autouse=True)
def zca_cache(tmp_path_factory, monkeypatch):
  # ZCA fits go to a cache outside the user's ~/.cache, shared by the xdist
  # workers of a session (its files are named by the hash of their input).
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp().parent / "cache"))


# Centred pixels: with raw 0..255 and batches of 16 the tiny problem is
# chaotic, and two float orders of the same run drift apart in a few steps.
TINY = dict(model="mnistfc", optimizer="entropy-sgd", batch_size=16, effective_epochs=1.0,
            eval_every=1.0, progress=False, devices=1, input_scaling="centered")
# Short loops so every optimizer trains in seconds; everything else is the default.
# Optimizers without a loop length (sgd, adamw, sam, swa, ...) take none.
FAST = collections.defaultdict(dict, {
    "entropy-sgd": {"inner_steps": 2}, "hj": {"inner_steps": 2},
    "hj-fixed-point": {"inner_steps": 1}, "heat": {"samples": 2},
    "heat-uniform": {"inner_steps": 2}, "parle": {"inner_steps": 2}})


@pytest.fixture(scope="session")
def tiny(mnist_dir):
  """``tiny(**flags)``: the config of a seconds-long run on ``mnist_dir``."""
  import training

  return lambda **flags: training.build_config(**{**TINY, "data_dir": mnist_dir, **flags})


@pytest.fixture(scope="session")
def fast():
  return FAST
