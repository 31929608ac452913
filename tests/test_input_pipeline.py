"""Tests of the IDX reader and the bundled MNIST (input_pipeline.py)."""

import gzip
import shutil

import numpy as np
import pytest

import input_pipeline as ip


def test_bundled_mnist_is_complete_and_verified():
  data = ip.load_idx_dataset()
  assert data.train_images.shape == (60_000, 28, 28)
  assert data.test_images.shape == (10_000, 28, 28)
  assert data.train_images.dtype == np.uint8 and data.num_classes == 10
  # Label counts published with the data (shared/data/README.md).
  np.testing.assert_array_equal(
      np.bincount(data.train_labels),
      [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
  np.testing.assert_array_equal(
      np.bincount(data.test_labels), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])


def write_idx(path, array, compress):
  dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
  raw = bytes([0, 0, 0x08, array.ndim]) + dims + array.astype(np.uint8).tobytes()
  if compress:
    path = path.with_name(path.name + ".gz")
    raw = gzip.compress(raw)
  path.write_bytes(raw)
  return path


def tiny_dataset(directory, compress=True, n=(6, 4), size=(7, 5)):
  rng = np.random.default_rng(0)
  paths = {}
  for split, count in zip(("train", "test"), n):
    paths[f"{split}_images"] = write_idx(
        directory / ip.IDX_NAMES[f"{split}_images"],
        rng.integers(0, 256, (count, *size)), compress)
    paths[f"{split}_labels"] = write_idx(
        directory / ip.IDX_NAMES[f"{split}_labels"], rng.integers(0, 3, count), compress)
  return paths


@pytest.mark.parametrize("compress", [True, False])
def test_any_idx_directory_loads_gzip_or_not(tmp_path, compress):
  tiny_dataset(tmp_path, compress)
  data = ip.load_idx_dataset(tmp_path)
  assert data.train_images.shape == (6, 7, 5) and data.test_labels.shape == (4,)


def corrupt(tmp_path, how):
  paths = tiny_dataset(tmp_path)
  target = paths["train_images"]
  raw = gzip.decompress(target.read_bytes())
  if how == "missing":
    target.unlink()
  elif how == "magic":
    target.write_bytes(gzip.compress(b"\x12\x34" + raw[2:]))
  elif how == "truncated":
    target.write_bytes(gzip.compress(raw[:-3]))
  elif how == "gzip":
    target.write_bytes(target.read_bytes()[:20])
  elif how == "labels":
    return write_idx(tmp_path / ip.IDX_NAMES["train_labels"], np.zeros(5), True)
  return target


@pytest.mark.parametrize(
    "how, message",
    [
        ("missing", "no such file"),
        ("magic", "bad magic number"),
        ("truncated", "truncated"),
        ("gzip", "corrupt gzip"),
        ("labels", "5 labels for 6 images"),
    ],
)
def test_bad_files_are_named_with_what_is_wrong(tmp_path, how, message):
  target = corrupt(tmp_path, how)
  with pytest.raises(ip.DataError, match=message) as info:
    ip.load_idx_dataset(tmp_path)
  assert str(target if how != "missing" else target.with_suffix("")) in str(info.value)


def test_checksums_are_verified(tmp_path):
  for path in ip.BUNDLED_MNIST.iterdir():
    shutil.copy(path, tmp_path)
  victim = tmp_path / "t10k-labels-idx1-ubyte.gz"
  raw = bytearray(victim.read_bytes())
  raw[-10] ^= 0xFF
  victim.write_bytes(bytes(raw))
  with pytest.raises(ip.DataError, match="t10k-labels-idx1-ubyte.gz: bad checksum"):
    ip.load_idx_dataset(tmp_path)


def test_missing_directory(tmp_path):
  with pytest.raises(ip.DataError, match="no such directory"):
    ip.load_idx_dataset(tmp_path / "nope")
