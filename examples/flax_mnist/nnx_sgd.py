"""Flax's NNX MNIST example, with SGD as Flax ships it (our rendition, bundled data).

The structure of ``examples/mnist/train.py`` in google/flax (NNX version): a
CNN with BatchNorm and dropout, ``loss_fn``, ``train_step`` and
``eval_step`` under ``nnx.jit`` with an ``nnx.MultiMetric``, and
``train_and_evaluate(config, workdir)``; ``optax.sgd(0.1, momentum=0.9)``
through ``nnx.Optimizer``, batches of 128, 10 epochs. The training set is
shuffled once per epoch and cut into whole batches, as the example's
``tf.data`` pipeline does. After each epoch the test set is evaluated as the
example does (BatchNorm's running averages), then again with the statistics
re-estimated on the training set (``entropix.nnx.recompute_batch_stats``).
``nnx_entropix.py`` is this file with the smallest change to Entropy-SGD.

Run: python examples/flax_mnist/nnx_sgd.py [--epochs 10] [--workdir DIR]
"""

import dataclasses
from functools import partial

import jax
import numpy as np
import optax
from flax import nnx

import entropix.nnx
import common


@dataclasses.dataclass
class Config(common.Config):
  learning_rate: float = 0.1
  momentum: float = 0.9


class CNN(nnx.Module):
  """Two convolutions with BatchNorm, dropout and average pooling, then two linear layers."""

  def __init__(self, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(1, 32, kernel_size=(3, 3), rngs=rngs)
    self.batch_norm1 = nnx.BatchNorm(32, rngs=rngs)
    self.dropout1 = nnx.Dropout(rate=0.025)
    self.conv2 = nnx.Conv(32, 64, kernel_size=(3, 3), rngs=rngs)
    self.batch_norm2 = nnx.BatchNorm(64, rngs=rngs)
    self.avg_pool = partial(nnx.avg_pool, window_shape=(2, 2), strides=(2, 2))
    self.linear1 = nnx.Linear(3136, 256, rngs=rngs)
    self.dropout2 = nnx.Dropout(rate=0.025)
    self.linear2 = nnx.Linear(256, 10, rngs=rngs)

  def __call__(self, x, rngs: nnx.Rngs | None):
    x = self.avg_pool(nnx.relu(self.batch_norm1(self.dropout1(self.conv1(x), rngs=rngs))))
    x = self.avg_pool(nnx.relu(self.batch_norm2(self.conv2(x))))
    x = x.reshape(x.shape[0], -1)
    x = nnx.relu(self.dropout2(self.linear1(x), rngs=rngs))
    return self.linear2(x)


def loss_fn(model, batch, rngs):
  logits = model(batch["image"], rngs)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()
  return loss, logits


@nnx.jit
def train_step(model, optimizer, metrics, batch, rngs):
  """One step of SGD on one batch."""
  (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, batch, rngs)
  metrics.update(loss=loss, logits=logits, labels=batch["label"])
  optimizer.update(model, grads)


@nnx.jit
def eval_step(model, metrics, batch):
  loss, logits = loss_fn(model, batch, None)
  metrics.update(loss=loss, logits=logits, labels=batch["label"])


def batches(dataset, batch_size, rng=None):
  """Whole batches of ``dataset``, shuffled by ``rng`` (a numpy Generator) if given."""
  order = np.arange(len(dataset["label"])) if rng is None else rng.permutation(
      len(dataset["label"]))
  for start in range(0, len(order) - batch_size + 1, batch_size):
    yield {k: v[order[start:start + batch_size]] for k, v in dataset.items()}


def evaluate(model, metrics, test_ds, batch_size):
  model.eval()
  for batch in batches(test_ds, batch_size):
    eval_step(model, metrics, batch)
  result = {k: float(v) for k, v in metrics.compute().items()}
  metrics.reset()
  return result


def train_and_evaluate(config, workdir):
  """Trains, evaluating on the test set after every epoch; returns the records."""
  train_ds, test_ds = common.get_datasets(config.train_examples, config.test_examples)
  model = CNN(rngs=nnx.Rngs(config.seed))
  optimizer = nnx.Optimizer(model, optax.sgd(config.learning_rate, config.momentum),
                            wrt=nnx.Param)
  metrics = nnx.MultiMetric(accuracy=nnx.metrics.Accuracy(), loss=nnx.metrics.Average("loss"))
  rngs = nnx.Rngs(config.seed)
  shuffle = np.random.default_rng(config.seed)
  steps_per_epoch = len(train_ds["label"]) // config.batch_size
  whole = len(train_ds["label"]) // config.batch_size
  all_train = {k: v[: whole * config.batch_size].reshape(
      whole, config.batch_size, *v.shape[1:]) for k, v in train_ds.items()}
  records, done = [], 0
  total = round(config.num_epochs * steps_per_epoch)
  while done < total:
    model.train()
    steps = min(steps_per_epoch, total - done)
    for batch, _ in zip(batches(train_ds, config.batch_size, shuffle), range(steps)):
      train_step(model, optimizer, metrics, batch, rngs)
    done += steps
    train = {k: float(v) for k, v in metrics.compute().items()}
    metrics.reset()
    test = evaluate(model, metrics, test_ds, config.batch_size)  # as the example does
    entropix.nnx.recompute_batch_stats(model, all_train, lambda m, b: m(b["image"], None))
    recomputed = evaluate(model, metrics, test_ds, config.batch_size)
    common.report(records, {
        "epoch": round(done / steps_per_epoch, 6),
        "gradient_evaluations": done,
        "train_loss": train["loss"],
        "train_accuracy": train["accuracy"],
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
        "test_accuracy_recomputed_stats": recomputed["accuracy"]})
  return common.save(records, workdir)


if __name__ == "__main__":
  common.main(train_and_evaluate, Config, __doc__)
