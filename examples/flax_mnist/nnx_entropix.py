"""Flax's NNX MNIST example with Entropy-SGD: ``nnx_sgd.py`` with the smallest change.

Each update takes L minibatches (``inner_steps``): the gradient at x on the
first, taken on the model as the example takes it (so BatchNorm's running
averages move there), and the other L - 1 through ``grad_fn`` on copies of
the model, each with its own dropout key. An epoch is still one pass over
the training set (N / (B L) updates, N / B gradient evaluations). The
learning rate multiplies x - <y>, not a gradient: 1.0 here (the guide's
rule, ten times SGD's). The README shows the diff.

Run: python examples/flax_mnist/nnx_entropix.py [--epochs 10] [--workdir DIR]
"""

import dataclasses
from functools import partial

import jax
import numpy as np
import optax
from flax import nnx

import entropix
import entropix.nnx
import common


@dataclasses.dataclass
class Config(common.Config):
  learning_rate: float = 1.0
  momentum: float = 0.9
  inner_steps: int = 5  # L: minibatches (gradient evaluations) per update
  gamma: float = 0.03  # the coupling, growing by 0.1% per update


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
def train_step(model, optimizer, metrics, batch, rngs):  # batch: L minibatches
  """One update of Entropy-SGD on L minibatches."""
  first = jax.tree.map(lambda b: b[0], batch)
  (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, first, rngs)
  metrics.update(loss=loss, logits=logits, labels=first["label"])
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  def param_loss(p, minibatch, key):  # the model rebuilt at p, its own dropout key
    return loss_fn(nnx.merge(graphdef, p, rest, copy=True), minibatch,
                   nnx.Rngs(dropout=key))[0]

  grad_fn = entropix.minibatch_grad_fn(param_loss, batch, key=rngs.dropout())
  optimizer.update(model, grads, grad_fn=grad_fn)


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
  tx = entropix.entropy_sgd(config.learning_rate, momentum=config.momentum,
                            gamma=entropix.scoping(config.gamma, 1e-3),
                            inner_steps=config.inner_steps)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  metrics = nnx.MultiMetric(accuracy=nnx.metrics.Accuracy(), loss=nnx.metrics.Average("loss"))
  rngs = nnx.Rngs(config.seed)
  shuffle = np.random.default_rng(config.seed)
  steps_per_epoch = len(train_ds["label"]) // (config.batch_size * config.inner_steps)
  whole = len(train_ds["label"]) // config.batch_size
  all_train = {k: v[: whole * config.batch_size].reshape(
      whole, config.batch_size, *v.shape[1:]) for k, v in train_ds.items()}
  records, done = [], 0
  total = round(config.num_epochs * steps_per_epoch)
  while done < total:
    model.train()
    steps = min(steps_per_epoch, total - done)
    group = config.batch_size * config.inner_steps
    for batch, _ in zip(batches(train_ds, group, shuffle), range(steps)):
      batch = {k: v.reshape(config.inner_steps, config.batch_size, *v.shape[1:])
               for k, v in batch.items()}
      train_step(model, optimizer, metrics, batch, rngs)
    done += steps
    train = {k: float(v) for k, v in metrics.compute().items()}
    metrics.reset()
    test = evaluate(model, metrics, test_ds, config.batch_size)  # as the example does
    entropix.nnx.recompute_batch_stats(model, all_train, lambda m, b: m(b["image"], None))
    recomputed = evaluate(model, metrics, test_ds, config.batch_size)
    common.report(records, {
        "epoch": round(done / steps_per_epoch, 6),
        "gradient_evaluations": done * config.inner_steps,
        "train_loss": train["loss"],
        "train_accuracy": train["accuracy"],
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
        "test_accuracy_recomputed_stats": recomputed["accuracy"]})
  return common.save(records, workdir)


if __name__ == "__main__":
  common.main(train_and_evaluate, Config, __doc__)
