"""Datasets for train.py: MNIST-style IDX files, read and checked.

A directory holds the four standard IDX files (gzip-compressed or not):
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``. MNIST ships in
``data/mnist`` with a ``SHA256SUMS`` file; any directory that has one is
verified against it. Every problem (missing, truncated or corrupt file, bad
magic number, inconsistent sizes, wrong checksum) raises :class:`DataError`
naming the file and what is wrong.
"""

import dataclasses
import gzip
import hashlib
import pathlib
import zlib

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


def read_idx(path: str | pathlib.Path, ndim: int) -> np.ndarray:
  """Reads one IDX file (gzip or not) holding an array of ``ndim`` dimensions."""
  path = pathlib.Path(path)
  data = _read_bytes(path)
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


def load_idx_dataset(directory: str | pathlib.Path | None = None) -> Dataset:
  """Loads the four IDX files of ``directory`` (default: the bundled MNIST)."""
  directory = pathlib.Path(directory) if directory is not None else BUNDLED_MNIST
  if not directory.is_dir():
    raise DataError(f"{directory}: no such directory")
  verify_checksums(directory)
  paths = {key: _find(directory, name) for key, name in IDX_NAMES.items()}
  arrays = {
      key: read_idx(path, 1 if key.endswith("labels") else 3)
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
