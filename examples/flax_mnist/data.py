"""MNIST for Flax's MNIST example, from the copy bundled with this repository.

Flax's example reads MNIST with tensorflow-datasets; these examples read the
bundled IDX files instead (no download, no TensorFlow) and return what the
example expects: dicts of ``image`` (float32, N x 28 x 28 x 1, scaled to
[0, 1]) and ``label`` (int32).
"""

import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
import input_pipeline  # noqa: E402


def get_datasets(train_examples: int | None = None, test_examples: int | None = None):
  """The train and test splits as dicts of numpy arrays (optionally their first examples)."""
  dataset = input_pipeline.load_idx_dataset(input_pipeline.BUNDLED_MNIST)

  def split(images, labels, n):
    return {"image": (images[:n, ..., None] / np.float32(255.0)).astype(np.float32),
            "label": labels[:n].astype(np.int32)}

  return (split(dataset.train_images, dataset.train_labels, train_examples),
          split(dataset.test_images, dataset.test_labels, test_examples))
