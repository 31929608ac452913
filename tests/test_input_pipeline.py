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
  # Label counts published with the data (data/README.md).
  np.testing.assert_array_equal(
      np.bincount(data.train_labels),
      [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
  np.testing.assert_array_equal(
      np.bincount(data.test_labels), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])


def tiny_dataset(write_idx, directory, compress=True, n=(6, 4), size=(7, 5)):
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
def test_any_idx_directory_loads_gzip_or_not(idx_writer, tmp_path, compress):
  tiny_dataset(idx_writer, tmp_path, compress)
  data = ip.load_idx_dataset(tmp_path)
  assert data.train_images.shape == (6, 7, 5) and data.test_labels.shape == (4,)


def corrupt(write_idx, tmp_path, how):
  paths = tiny_dataset(write_idx, tmp_path)
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
def test_bad_files_are_named_with_what_is_wrong(idx_writer, tmp_path, how, message):
  target = corrupt(idx_writer, tmp_path, how)
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


def write_cifar(path, n, rng):
  labels = rng.integers(0, 10, n, dtype=np.uint8)
  images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
  records = np.concatenate([labels[:, None], images.reshape(n, -1)], axis=1)
  path.write_bytes(records.tobytes())
  return images.transpose(0, 2, 3, 1), labels


def test_cifar_binary_reader(tmp_path):
  rng = np.random.default_rng(0)
  written = [write_cifar(tmp_path / name, 3, rng)
             for name in ip.CIFAR_TRAIN_FILES + ip.CIFAR_TEST_FILES]
  data = ip.load_cifar10(tmp_path)
  assert data.train_images.shape == (15, 32, 32, 3)
  np.testing.assert_array_equal(data.train_images[:3], written[0][0])  # HWC, RGB
  np.testing.assert_array_equal(data.test_labels, written[-1][1])
  victim = tmp_path / "data_batch_3.bin"
  victim.write_bytes(victim.read_bytes()[:-5])
  with pytest.raises(ip.DataError, match="data_batch_3.bin: .*truncated"):
    ip.load_cifar10(tmp_path)


def test_gcn_then_zca_whitens_the_training_set(tmp_path):
  rng = np.random.default_rng(1)
  # Correlated "images" of 4x4x3 with a low-rank structure plus noise.
  basis = rng.normal(size=(8, 48))
  images = (rng.normal(size=(4000, 8)) @ basis + 0.3 * rng.normal(size=(4000, 48)))
  images = (images.reshape(4000, 4, 4, 3) * 20 + 128).clip(0, 255).astype(np.uint8)
  gcn = ip.global_contrast_normalize(images)
  flat = gcn.reshape(4000, -1)
  np.testing.assert_allclose(flat.mean(axis=1), 0, atol=1e-9)
  np.testing.assert_allclose(flat.std(axis=1), 55.0, rtol=1e-9)
  zca = ip.fit_zca(gcn, cache_dir=tmp_path)
  white = zca(gcn).reshape(4000, -1).astype(np.float64)
  cov = np.cov(white, rowvar=False, bias=True)
  # GCN removes one direction per image (the mean): that eigenvalue is 0.
  eig = np.sort(np.linalg.eigvalsh(cov))
  np.testing.assert_allclose(eig[1:], 1.0, atol=1e-3)
  assert eig[0] < 1e-3
  off = cov - np.diag(np.diag(cov))
  assert np.abs(off).max() < 0.05
  # ZCA is symmetric (it keeps images looking like images) and cached by input.
  np.testing.assert_allclose(zca.matrix, zca.matrix.T, atol=1e-8)
  assert len(list(tmp_path.glob("zca-*.npz"))) == 1
  again = ip.fit_zca(gcn, cache_dir=tmp_path)
  np.testing.assert_array_equal(again.matrix, zca.matrix)
  other = ip.fit_zca(gcn[:100], cache_dir=tmp_path)
  assert len(list(tmp_path.glob("zca-*.npz"))) == 2 and other.matrix.shape == zca.matrix.shape


def test_tfds_names_the_missing_package(monkeypatch):
  import sys

  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
  with pytest.raises(ip.DataError, match="tensorflow-datasets, which is not installed"):
    ip.load("tfds:mnist")


def test_tfds_mnist_and_cifar10_read_through_data_source():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=24):
    mnist, scaling = ip.load("tfds:mnist", "centered")
    cifar, _ = ip.load("tfds:cifar10")
    short, _ = ip.load("tfds")
    raw = ip.load_tfds("cifar10")
  assert mnist.train_images.shape == (24, 28, 28) and mnist.train_images.dtype == np.uint8
  assert mnist.test_labels.shape == (24,) and mnist.test_labels.dtype == np.int32
  assert scaling == ip.SCALINGS["centered"]
  assert raw.train_images.shape == (24, 32, 32, 3) and raw.train_images.dtype == np.uint8
  np.testing.assert_array_equal(cifar.train_images, ip.whiten_cifar10(raw).train_images)
  np.testing.assert_array_equal(short.test_images, cifar.test_images)


def test_tfds_names_an_unprepared_dataset_and_an_unknown_name(tmp_path):
  pytest.importorskip("tensorflow_datasets")
  with pytest.raises(ip.DataError, match=r"tfds:mnist: no prepared array_record copy in .*"
                                         r"download_and_prepare\(file_format='array_record'\)"):
    ip.load_tfds("mnist", data_dir=tmp_path)
  with pytest.raises(ip.DataError, match=r"tfds:imagenet: choose one of \['tfds:mnist'"):
    ip.load("tfds:imagenet")


def test_load_chooses_the_dataset_by_name_or_directory(mnist_dir, cifar_dir):
  dataset, scaling = ip.load(mnist_dir, "centered")
  assert dataset.train_images.shape == (256, 28, 28) and scaling == ip.SCALINGS["centered"]
  np.testing.assert_allclose(scaling(np.array([0, 126, 252], np.uint8)), [-1, 0, 1])
  assert scaling(np.zeros(1, np.uint8)).dtype == np.float32
  cifar, scaling = ip.load(cifar_dir)
  assert cifar.train_images.shape == (40, 32, 32, 3) and cifar.train_images.dtype == np.float32
  assert scaling == ip.SCALINGS["raw"]
  raw = ip.load_cifar10(cifar_dir)
  np.testing.assert_array_equal(cifar.train_images, ip.whiten_cifar10(raw).train_images)
  np.testing.assert_array_equal(cifar.test_labels, raw.test_labels)
  with pytest.raises(ip.DataError, match="'centered' applies to MNIST images"):
    ip.load(cifar_dir, "centered")
  with pytest.raises(ip.DataError, match="input scaling 'unit'"):
    ip.load(mnist_dir, "unit")


def test_dataset_checks_name_what_does_not_fit(mnist_dir):
  dataset, _ = ip.load(mnist_dir)
  dataset.check(batch_size=256, num_classes=10)
  with pytest.raises(ip.DataError, match="batch size 257 is larger than the 256 training"):
    dataset.check(batch_size=257, num_classes=10)
  with pytest.raises(ip.DataError, match="10 classes; the network has 5 outputs"):
    dataset.check(batch_size=16, num_classes=5)


def test_validation_split_holds_out_the_last_training_examples(mnist_dir, cifar_dir):
  full, _ = ip.load(mnist_dir)
  split, _ = ip.load(mnist_dir, validation_split=56)
  np.testing.assert_array_equal(split.train_images, full.train_images[:200])
  np.testing.assert_array_equal(split.test_images, full.train_images[200:])
  np.testing.assert_array_equal(split.test_labels, full.train_labels[200:])
  for bad in (256, 300, -1):
    with pytest.raises(ip.DataError, match=f"validation split {bad}: must be in 1 .. 255"):
      ip.load(mnist_dir, validation_split=bad)
  # CIFAR-10: ZCA is fitted on the training part only, then applied to the held-out part.
  cifar, _ = ip.load(cifar_dir, validation_split=8)
  raw = ip.load_cifar10(cifar_dir).hold_out(8)
  np.testing.assert_array_equal(cifar.test_images, ip.whiten_cifar10(raw).test_images)
  assert cifar.train_images.shape[0] == 32


def _fashion_folder(path, idx_writer):
  """A small Fashion-MNIST-shaped IDX folder and its contents' digests."""
  import hashlib

  rng = np.random.default_rng(3)
  path.mkdir()
  arrays = {"train_images": rng.integers(0, 255, (40, 28, 28)), "train_labels": np.arange(40) % 10,
            "test_images": rng.integers(0, 255, (20, 28, 28)), "test_labels": np.arange(20) % 10}
  digests = {}
  for key, array in arrays.items():
    written = idx_writer(path / ip.IDX_NAMES[key], array, compress=key == "train_images")
    digests[key] = hashlib.sha256(ip._read_bytes(written)).hexdigest()
  return arrays, digests


def test_fashion_mnist_by_name_from_an_idx_folder_checksummed(tmp_path, idx_writer, monkeypatch):
  def not_prepared(name, data_dir=None):
    raise ip.DataError(f"tfds:{name}: no prepared copy")

  monkeypatch.setattr(ip, "load_tfds", not_prepared)
  monkeypatch.setattr(ip, "FASHION_MNIST_DIR", tmp_path / "nowhere")
  monkeypatch.delenv(ip.FASHION_MNIST_ENV, raising=False)
  with pytest.raises(ip.DataError, match="fashion_mnist: not found.*dataset-fashion-mnist"):
    ip.load("fashion_mnist")
  arrays, digests = _fashion_folder(tmp_path / "fashion", idx_writer)
  monkeypatch.setenv(ip.FASHION_MNIST_ENV, str(tmp_path / "fashion"))
  # The real files' digests: the fixture's contents are refused, naming the file.
  with pytest.raises(ip.DataError, match=r"train-images-idx3-ubyte.gz: bad checksum"):
    ip.load("fashion_mnist")
  monkeypatch.setattr(ip, "FASHION_MNIST_SHA256", digests)
  dataset, scaling = ip.load("fashion_mnist", "centered")
  np.testing.assert_array_equal(dataset.train_images, arrays["train_images"])
  np.testing.assert_array_equal(dataset.test_labels, arrays["test_labels"])
  assert scaling == ip.SCALINGS["centered"]
  # Debian's folder is the fallback.
  monkeypatch.delenv(ip.FASHION_MNIST_ENV)
  monkeypatch.setattr(ip, "FASHION_MNIST_DIR", tmp_path / "fashion")
  assert ip.load("fashion_mnist")[0].train_images.shape == (40, 28, 28)


def test_fashion_mnist_comes_from_tensorflow_datasets_where_it_is_prepared(monkeypatch):
  pytest.importorskip("tensorflow_datasets")
  marker = ip.Dataset(np.zeros((2, 28, 28), np.uint8), np.arange(2), np.zeros((1, 28, 28)),
                      np.zeros(1, int))
  monkeypatch.setattr(ip, "load_tfds", lambda name, data_dir=None: marker)
  assert ip.load("fashion_mnist")[0] is marker


@pytest.mark.skipif(not ip.FASHION_MNIST_DIR.is_dir(), reason="Debian's dataset-fashion-mnist "
                    "is not installed")
def test_the_installed_fashion_mnist_is_the_real_one(monkeypatch):
  monkeypatch.delenv(ip.FASHION_MNIST_ENV, raising=False)
  dataset = ip.load_idx_dataset(ip.FASHION_MNIST_DIR, ip.FASHION_MNIST_SHA256)
  assert dataset.train_images.shape == (60000, 28, 28) and dataset.test_images.shape[0] == 10000
  assert np.bincount(dataset.train_labels).tolist() == [6000] * 10
