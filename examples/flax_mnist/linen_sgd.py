"""Flax's Linen MNIST example, with SGD as Flax ships it (our rendition, bundled data).

The structure of ``examples/mnist/train.py`` in google/flax (Linen version):
a CNN, ``apply_model`` (gradient, loss and accuracy of one batch),
``update_model``, ``train_epoch`` over a permutation, ``create_train_state``
and ``train_and_evaluate(config, workdir)``; ``optax.sgd(0.1, momentum=0.9)``,
batches of 128, 10 epochs. ``linen_entropix.py`` is this file with the
smallest change to Entropy-SGD; the README shows the diff.

Run: python examples/flax_mnist/linen_sgd.py [--epochs 10] [--workdir DIR]
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

import common


@dataclasses.dataclass
class Config(common.Config):
  learning_rate: float = 0.1
  momentum: float = 0.9


class CNN(nn.Module):
  """Two 3x3 convolutions with ReLU and average pooling, then two dense layers."""

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(features=32, kernel_size=(3, 3))(x)
    x = nn.relu(x)
    x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
    x = nn.Conv(features=64, kernel_size=(3, 3))(x)
    x = nn.relu(x)
    x = nn.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.Dense(features=256)(x)
    x = nn.relu(x)
    x = nn.Dense(features=10)(x)
    return x


@jax.jit
def apply_model(state, images, labels):
  """The gradient, loss and accuracy of one batch."""

  def loss_fn(params):
    logits = state.apply_fn({"params": params}, images)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, logits

  (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  accuracy = jnp.mean(jnp.argmax(logits, -1) == labels)
  return grads, loss, accuracy


@jax.jit
def update_model(state, grads):
  return state.apply_gradients(grads=grads)


def train_epoch(state, train_ds, batch_size, rng, steps=None):
  """One pass over a permutation of the training set (or its first ``steps`` batches)."""
  steps_per_epoch = len(train_ds["image"]) // batch_size
  perms = jax.random.permutation(rng, len(train_ds["image"]))
  perms = np.asarray(perms[: steps_per_epoch * batch_size]).reshape(steps_per_epoch, batch_size)
  losses, accuracies = [], []
  for perm in perms[:steps]:
    grads, loss, accuracy = apply_model(state, train_ds["image"][perm], train_ds["label"][perm])
    state = update_model(state, grads)
    losses.append(loss)
    accuracies.append(accuracy)
  return state, float(np.mean(losses)), float(np.mean(accuracies))


def create_train_state(rng, config):
  cnn = CNN()
  params = cnn.init(rng, jnp.ones([1, 28, 28, 1]))["params"]
  tx = optax.sgd(config.learning_rate, config.momentum)
  return train_state.TrainState.create(apply_fn=cnn.apply, params=params, tx=tx)


def evaluate(state, test_ds, batch=1000):
  """Test loss and accuracy, in batches of ``batch``."""
  losses, accuracies = [], []
  for start in range(0, len(test_ds["image"]), batch):
    _, loss, accuracy = apply_model(state, test_ds["image"][start:start + batch],
                                    test_ds["label"][start:start + batch])
    losses.append(loss)
    accuracies.append(accuracy)
  return float(np.mean(losses)), float(np.mean(accuracies))


def train_and_evaluate(config, workdir):
  """Trains, evaluating on the test set after every epoch; returns the records."""
  train_ds, test_ds = common.get_datasets(config.train_examples, config.test_examples)
  rng = jax.random.key(config.seed)
  rng, init_rng = jax.random.split(rng)
  state = create_train_state(init_rng, config)
  steps_per_epoch = len(train_ds["image"]) // config.batch_size
  records, done = [], 0
  total = round(config.num_epochs * steps_per_epoch)
  while done < total:
    rng, input_rng = jax.random.split(rng)
    steps = min(steps_per_epoch, total - done)
    state, train_loss, train_accuracy = train_epoch(
        state, train_ds, config.batch_size, input_rng, steps)
    done += steps
    test_loss, test_accuracy = evaluate(state, test_ds)
    common.report(records, {
        "epoch": round(done / steps_per_epoch, 6),
        "gradient_evaluations": done,
        "train_loss": train_loss,
        "train_accuracy": train_accuracy,
        "test_loss": test_loss,
        "test_accuracy": test_accuracy})
  return common.save(records, workdir)


if __name__ == "__main__":
  common.main(train_and_evaluate, Config, __doc__)
