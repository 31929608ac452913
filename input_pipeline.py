"""The datasets of the reproduction: which one to load, read, checked and preprocessed.

:func:`load` takes a data source, by directory or by name, never by model:

* a directory of the four MNIST-style IDX files (gzip-compressed or not):
  ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``; ``"mnist"`` names
  the copy bundled in ``data/mnist``;
* a ``cifar-10-batches-bin`` directory (CIFAR-10's binary files);
* ``"fashion_mnist"``: Fashion-MNIST, from tensorflow-datasets or an IDX
  folder, checksummed (:func:`load_fashion_mnist`);
* ``"tfds:mnist"``, ``"tfds:fashion_mnist"`` or ``"tfds:cifar10"`` (``"tfds"``
  for short): the dataset through tensorflow-datasets' ``data_source``
  (:func:`load_tfds`).

It returns the images as stored (uint8 for IDX) and the :class:`Scaling` that
feeds them to a network; CIFAR-10 comes globally contrast normalised and ZCA
whitened, the whitening cached on disk. A directory with a ``SHA256SUMS``
file (the bundled MNIST has one) is verified against it. Every problem
(missing, truncated or corrupt file, bad magic number, inconsistent sizes,
wrong checksum) raises :class:`DataError` naming the file and what is wrong.

>>> dataset, scaling = load("mnist")
>>> dataset.train_images.shape, dataset.test_images.shape, scaling
((60000, 28, 28), (10000, 28, 28), Scaling(shift=0.0, scale=1.0))
"""

import dataclasses
import gzip
import hashlib
import importlib.util
import os
import pathlib
import zlib
from typing import Any, NamedTuple

import numpy as np

BUNDLED_MNIST = pathlib.Path(__file__).resolve().parent / "data" / "mnist"
IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# IDX type byte -> big-endian dtype.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataError(ValueError):
  """A dataset file is missing, truncated, corrupt or inconsistent."""


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Images (N, H, W[, C]) and integer labels (N,) of a train/test split."""

  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray

  @property
  def num_classes(self) -> int:
    return int(max(self.train_labels.max(), self.test_labels.max())) + 1

  def check(self, *, batch_size: int, num_classes: int | None = None) -> None:
    """Raises DataError unless minibatches of ``batch_size`` (and a ``num_classes``-way
    classifier, if given) fit this dataset."""
    n = self.train_images.shape[0]
    if n < batch_size:
      raise DataError(f"batch size {batch_size} is larger than the {n} training examples")
    if self.test_images.shape[0] == 0:
      raise DataError("the test set is empty")
    if num_classes is not None and self.num_classes > num_classes:
      raise DataError(f"the dataset has {self.num_classes} classes; the network has "
                      f"{num_classes} outputs")

  def hold_out(self, n: int) -> "Dataset":
    """The last ``n`` training examples as the evaluation set, the rest for training.

    The test set is dropped: tuning on this split never looks at it.

    >>> data = Dataset(np.zeros((5, 2)), np.arange(5), np.zeros((3, 2)), np.zeros(3, int))
    >>> data.hold_out(2).train_labels, data.hold_out(2).test_labels
    (array([0, 1, 2]), array([3, 4]))
    """
    total = self.train_images.shape[0]
    if not 0 < n < total:
      raise DataError(f"validation split {n}: must be in 1 .. {total - 1}, the number of "
                      f"training examples less one ({total})")
    return Dataset(self.train_images[:-n], self.train_labels[:-n],
                   self.train_images[-n:], self.train_labels[-n:])


class Scaling(NamedTuple):
  """x -> (x - shift) * scale in float32: how stored images are fed to a network.

  Works on NumPy and JAX arrays alike, so the training step applies it on the
  device to the stored uint8 images.
  """

  shift: float
  scale: float

  def __call__(self, images: Any) -> Any:
    return (images.astype(np.float32) - self.shift) * self.scale


# MNIST pixels: raw 0..255 as the paper feeds them ("no pre-processing",
# Sec. 8.1.1, and its Table-1 code), or the authors' Lua code's (x - 126) / 126.
SCALINGS = {"raw": Scaling(0.0, 1.0), "centered": Scaling(126.0, 1 / 126)}


def _find(directory: pathlib.Path, name: str) -> pathlib.Path:
  for candidate in (directory / f"{name}.gz", directory / name):
    if candidate.is_file():
      return candidate
  raise DataError(f"{directory / name}[.gz]: no such file")


def _read_bytes(path: pathlib.Path) -> bytes:
  raw = path.read_bytes()
  if raw[:2] != b"\x1f\x8b":
    return raw
  try:
    return gzip.decompress(raw)
  except (OSError, EOFError, zlib.error) as err:
    raise DataError(f"{path}: corrupt gzip data ({err})") from err


def read_idx(path: str | pathlib.Path, ndim: int, sha256: str | None = None) -> np.ndarray:
  """Reads one IDX file (gzip or not) holding an array of ``ndim`` dimensions;
  ``sha256``: the digest its (decompressed) contents must have."""
  path = pathlib.Path(path)
  data = _read_bytes(path)
  if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
    raise DataError(f"{path}: bad checksum: its contents have sha256 "
                    f"{hashlib.sha256(data).hexdigest()}, expected {sha256}")
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
    raise DataError(f"{path}: bad magic number {data[:4].hex()!r}, not an IDX file")
  if data[3] != ndim:
    raise DataError(f"{path}: holds {data[3]} dimensions, expected {ndim}")
  header = 4 + 4 * ndim
  if len(data) < header:
    raise DataError(f"{path}: truncated header ({len(data)} bytes)")
  dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  dtype = np.dtype(_IDX_TYPES[data[2]])
  expected = header + int(np.prod(dims)) * dtype.itemsize
  if len(data) != expected:
    raise DataError(
        f"{path}: {len(data)} bytes, expected {expected} for shape {dims} "
        f"({'truncated' if len(data) < expected else 'trailing data'})"
    )
  return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def verify_checksums(directory: pathlib.Path) -> None:
  """Checks every file listed in ``directory/SHA256SUMS``, if there is one."""
  sums = directory / "SHA256SUMS"
  if not sums.is_file():
    return
  for line in sums.read_text().splitlines():
    if not line.strip():
      continue
    digest, name = line.split(maxsplit=1)
    path = directory / name.lstrip("*")
    if not path.is_file():
      raise DataError(f"{path}: listed in {sums} but missing")
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != digest:
      raise DataError(f"{path}: bad checksum sha256 {actual}, expected {digest}")


def load_idx_dataset(directory: str | pathlib.Path | None = None,
                     sha256: dict[str, str] | None = None) -> Dataset:
  """Loads the four IDX files of ``directory`` (default: the bundled MNIST);
  ``sha256``: by IDX_NAMES key, the digest of each file's decompressed contents."""
  directory = pathlib.Path(directory) if directory is not None else BUNDLED_MNIST
  if not directory.is_dir():
    raise DataError(f"{directory}: no such directory")
  verify_checksums(directory)
  paths = {key: _find(directory, name) for key, name in IDX_NAMES.items()}
  arrays = {
      key: read_idx(path, 1 if key.endswith("labels") else 3, (sha256 or {}).get(key))
      for key, path in paths.items()
  }
  for split in ("train", "test"):
    images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    if images.shape[0] != labels.shape[0]:
      raise DataError(
          f"{paths[split + '_labels']}: {labels.shape[0]} labels "
          f"for {images.shape[0]} images"
      )
  if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
    raise DataError(
        f"{directory}: train images {arrays['train_images'].shape[1:]} and test "
        f"images {arrays['test_images'].shape[1:]} differ in shape"
    )
  return Dataset(**arrays)


# CIFAR-10, binary format: records of 1 label byte + 3072 pixel bytes (the
# 1024 red, then green, then blue values of a 32x32 image, row-major).
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST_FILES = ("test_batch.bin",)
_CIFAR_RECORD = 1 + 3 * 32 * 32


def read_cifar_bin(path: str | pathlib.Path) -> tuple[np.ndarray, np.ndarray]:
  """Images (N, 32, 32, 3) uint8 and labels (N,) of one CIFAR-10 .bin file."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError(f"{path}: no such file")
  raw = np.frombuffer(path.read_bytes(), np.uint8)
  if raw.size == 0 or raw.size % _CIFAR_RECORD:
    raise DataError(
        f"{path}: {raw.size} bytes is not a whole number of {_CIFAR_RECORD}-byte "
        "records (truncated or not a CIFAR-10 binary file)"
    )
  records = raw.reshape(-1, _CIFAR_RECORD)
  labels = records[:, 0].astype(np.int32)
  if labels.max() > 9:
    raise DataError(f"{path}: label {labels.max()} out of range 0..9 (corrupt file)")
  images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return images, labels


def load_cifar10(directory: str | pathlib.Path) -> Dataset:
  """CIFAR-10 from a ``cifar-10-batches-bin`` directory (raw uint8 images)."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise DataError(f"{directory}: no such directory")
  splits = {}
  for split, names in (("train", CIFAR_TRAIN_FILES), ("test", CIFAR_TEST_FILES)):
    parts = [read_cifar_bin(directory / name) for name in names]
    splits[f"{split}_images"] = np.concatenate([p[0] for p in parts])
    splits[f"{split}_labels"] = np.concatenate([p[1] for p in parts])
  return Dataset(**splits)


# The tensorflow-datasets names load() reads ("tfds:NAME"), and their image shapes.
TFDS_DATASETS = {"mnist": (28, 28), "fashion_mnist": (28, 28), "cifar10": (32, 32, 3)}


def load_tfds(name: str, data_dir: str | pathlib.Path | None = None) -> Dataset:
  """MNIST or CIFAR-10 through tensorflow-datasets' ``data_source`` (array_record).

  Reading needs tensorflow-datasets and array-record, not TensorFlow. The
  dataset must have been prepared once in ``data_dir`` (default: tfds's own,
  ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``), which needs TensorFlow
  (``pip install -e ".[tfds]"``)::

    python -c "import tensorflow_datasets as tfds; tfds.builder('mnist').download_and_prepare(file_format='array_record')"

  Images come raw (uint8; MNIST as 28x28 like the IDX files) and labels int32.
  """
  if name not in TFDS_DATASETS:
    raise DataError(f"tfds:{name}: choose one of {['tfds:' + n for n in TFDS_DATASETS]}")
  try:
    import tensorflow_datasets as tfds
  except ImportError:
    raise DataError(
        f"tfds:{name} reads through tensorflow-datasets, which is not installed "
        "(pip install -e '.[tfds]'); or pass a directory of the dataset's files"
    ) from None
  splits = {}
  for split in ("train", "test"):
    try:
      source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as error:  # tfds raises several types for a missing dataset
      raise DataError(
          f"tfds:{name}: no prepared array_record copy in {data_dir or 'tfds default data_dir'} "
          f"({type(error).__name__}: {' '.join(str(error).split())[:200]}). Prepare it once, with TensorFlow "
          "installed (pip install -e '.[tfds]'): python -c \"import tensorflow_datasets as "
          f"tfds; tfds.builder('{name}').download_and_prepare(file_format='array_record')\""
      ) from None
    records = [source[i] for i in range(len(source))]
    images = np.stack([np.asarray(r["image"], np.uint8) for r in records])
    splits[f"{split}_images"] = images.reshape(len(records), *TFDS_DATASETS[name])
    splits[f"{split}_labels"] = np.array([r["label"] for r in records], np.int32)
  return Dataset(**splits)


def global_contrast_normalize(
    images: np.ndarray, scale: float = 55.0, min_divisor: float = 1e-8
) -> np.ndarray:
  """Per image: subtract its mean, divide by its standard deviation, times scale.

  The pylearn2 convention used for All-CNN-C (Goodfellow et al., 2013).
  """
  x = images.reshape(images.shape[0], -1).astype(np.float64)
  x -= x.mean(axis=1, keepdims=True)
  std = np.sqrt((x**2).mean(axis=1, keepdims=True))
  return (scale * x / np.maximum(std, min_divisor)).reshape(images.shape)


@dataclasses.dataclass(frozen=True)
class Whitening:
  """ZCA whitening x -> (x - mean) @ matrix, fitted on a training set."""

  mean: np.ndarray
  matrix: np.ndarray

  def __call__(self, images: np.ndarray) -> np.ndarray:
    flat = images.reshape(images.shape[0], -1)
    return ((flat - self.mean) @ self.matrix).astype(np.float32).reshape(images.shape)


def fit_zca(
    images: np.ndarray, epsilon: float = 1e-5, cache_dir: str | pathlib.Path | None = None
) -> Whitening:
  """Fits ZCA whitening, W = U diag(1 / sqrt(lambda + epsilon)) U^T.

  With ``cache_dir`` the fit is stored in a file keyed by the SHA-256 of the
  images and epsilon, and read back instead of recomputed next time.
  """
  flat = np.ascontiguousarray(images.reshape(images.shape[0], -1), np.float64)
  cache = None
  if cache_dir is not None:
    digest = hashlib.sha256(flat.tobytes() + repr((flat.shape, epsilon)).encode()).hexdigest()
    cache = pathlib.Path(cache_dir) / f"zca-{digest[:32]}.npz"
    if cache.is_file():
      with np.load(cache) as stored:
        return Whitening(stored["mean"], stored["matrix"])
  mean = flat.mean(axis=0)
  centred = flat - mean
  eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred / flat.shape[0])
  matrix = (eigenvectors / np.sqrt(np.maximum(eigenvalues, 0) + epsilon)) @ eigenvectors.T
  if cache is not None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, mean=mean, matrix=matrix)
    tmp.replace(cache)  # atomic: a killed run never leaves half a cache file
  return Whitening(mean, matrix)


def zca_cache_dir() -> pathlib.Path:
  """Where fitted ZCA whitenings are kept: ``$XDG_CACHE_HOME/entropix`` (~/.cache)."""
  return pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "entropix"


def whiten_cifar10(dataset: Dataset, cache_dir: str | pathlib.Path | None = None) -> Dataset:
  """GCN on every image, then ZCA fitted on the training set (cached in ``cache_dir``)."""
  train = global_contrast_normalize(dataset.train_images)
  whiten = fit_zca(train, cache_dir=zca_cache_dir() if cache_dir is None else cache_dir)
  test = global_contrast_normalize(dataset.test_images)
  return dataclasses.replace(dataset, train_images=whiten(train), test_images=whiten(test))


# Fashion-MNIST (Xiao et al., 2017) by name: tensorflow-datasets' copy where
# one is prepared, else the four IDX files in the first of these folders that
# holds them ($ENTROPIX_FASHION_MNIST, then where Debian's dataset-fashion-mnist
# package installs them).
FASHION_MNIST_ENV = "ENTROPIX_FASHION_MNIST"
FASHION_MNIST_DIR = pathlib.Path("/usr/share/datasets/fashion-mnist")
# SHA-256 of each file's decompressed contents, the same whoever compressed it
# (Debian's package recompressed zalandoresearch/fashion-mnist's files; its
# labels are byte for byte theirs).
FASHION_MNIST_SHA256 = {
    "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


def load_fashion_mnist() -> Dataset:
  """Fashion-MNIST: from tensorflow-datasets where it is prepared, else from an IDX
  folder (``$ENTROPIX_FASHION_MNIST``, then Debian's), its contents checksummed."""
  if importlib.util.find_spec("tensorflow_datasets") is not None:
    try:
      return load_tfds("fashion_mnist")
    except DataError:
      pass  # installed, but this dataset is not prepared: the IDX folders
  folders = [pathlib.Path(p) for p in (os.environ.get(FASHION_MNIST_ENV),) if p]
  for folder in (*folders, FASHION_MNIST_DIR):
    if folder.is_dir():
      return load_idx_dataset(folder, FASHION_MNIST_SHA256)
  raise DataError(
      "fashion_mnist: not found. Install Debian's package (apt install "
      f"dataset-fashion-mnist: {FASHION_MNIST_DIR}), or put the four IDX files in a folder "
      f"named by ${FASHION_MNIST_ENV}, or prepare tfds's copy (tfds:fashion_mnist)")


# Dataset names load() accepts besides directories ("tfds" is "tfds:cifar10").
NAMES = ("mnist", "fashion_mnist", "tfds", *(f"tfds:{name}" for name in TFDS_DATASETS))


def load(source: str | pathlib.Path, input_scaling: str = "raw",
         validation_split: int = 0) -> tuple[Dataset, Scaling]:
  """The dataset of ``source`` and the scaling that feeds it to a network.

  Args:
    source: ``"mnist"`` (the bundled copy), ``"fashion_mnist"``, ``"tfds:mnist"`` or
      ``"tfds:cifar10"`` (through tensorflow-datasets, :func:`load_tfds`;
      ``"tfds"`` is ``"tfds:cifar10"``), a directory of IDX files, or a
      directory holding CIFAR-10's ``data_batch_1.bin``.
    input_scaling: for IDX images, a key of :data:`SCALINGS`. CIFAR-10 is
      GCN + ZCA whitened and takes ``"raw"`` only.
    validation_split: if > 0, the last this many training examples become
      the evaluation set in place of the test set (:meth:`Dataset.hold_out`);
      CIFAR-10's ZCA is then fitted on the remaining training images only.

  Raises:
    DataError: naming the file or the value that is wrong.
  """
  if input_scaling not in SCALINGS:
    raise DataError(f"input scaling {input_scaling!r}: choose one of {list(SCALINGS)}")
  split = (lambda d: d.hold_out(validation_split)) if validation_split else (lambda d: d)
  if str(source) == "mnist":
    return split(load_idx_dataset(BUNDLED_MNIST)), SCALINGS[input_scaling]
  if str(source) == "fashion_mnist":
    return split(load_fashion_mnist()), SCALINGS[input_scaling]
  source = "tfds:cifar10" if str(source) == "tfds" else source
  if str(source).startswith("tfds:"):
    name = str(source)[len("tfds:"):]
    dataset = load_tfds(name)
    if name != "cifar10":  # MNIST's format
      return split(dataset), SCALINGS[input_scaling]
  elif not (pathlib.Path(source) / CIFAR_TRAIN_FILES[0]).is_file():
    return split(load_idx_dataset(source)), SCALINGS[input_scaling]
  else:
    dataset = load_cifar10(source)
  if input_scaling != "raw":
    raise DataError(f"input scaling {input_scaling!r} applies to MNIST images; "
                    "CIFAR-10 is GCN + ZCA whitened")
  return whiten_cifar10(split(dataset)), SCALINGS["raw"]
