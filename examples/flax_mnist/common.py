"""What the four examples share: the bundled MNIST, the run settings, the records, the CLI.

Flax's example reads MNIST with tensorflow-datasets; these read the IDX files
bundled with this repository instead (no download, no TensorFlow) and
return what the example expects: dicts of ``image`` (float32, N x 28 x 28 x
1, scaled to [0, 1]) and ``label`` (int32).
"""

import argparse
import dataclasses
import json
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
import input_pipeline  # noqa: E402


@dataclasses.dataclass
class Config:
  """The settings every example shares; each adds its optimizer's."""

  batch_size: int = 128
  num_epochs: float = 10
  seed: int = 0
  train_examples: int | None = None  # the first N training images (None: all)
  test_examples: int | None = None  # the first N test images (None: all)


def get_datasets(train_examples: int | None = None, test_examples: int | None = None):
  """The train and test splits as dicts of numpy arrays (optionally their first examples)."""
  dataset = input_pipeline.load_idx_dataset(input_pipeline.BUNDLED_MNIST)

  def split(images, labels, n):
    return {"image": (images[:n, ..., None] / np.float32(255.0)).astype(np.float32),
            "label": labels[:n].astype(np.int32)}

  return (split(dataset.train_images, dataset.train_labels, train_examples),
          split(dataset.test_images, dataset.test_labels, test_examples))


def report(records: list[dict], record: dict) -> None:
  """Appends ``record`` (one epoch's) and prints it as a JSON line."""
  records.append(record)
  print(json.dumps(record), flush=True)


def save(records: list[dict], workdir: str | None) -> list[dict]:
  if workdir:
    pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
    (pathlib.Path(workdir) / "records.json").write_text(json.dumps(records, indent=1) + "\n")
  return records


def main(train_and_evaluate, config_class, description: str) -> None:
  parser = argparse.ArgumentParser(description=description.split("\n\n")[0])
  parser.add_argument("--epochs", type=float, default=config_class.num_epochs)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--workdir")
  args = parser.parse_args()
  train_and_evaluate(config_class(num_epochs=args.epochs, seed=args.seed), args.workdir)
