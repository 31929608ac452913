"""Flax's Linen MNIST example with Entropy-SGD: ``linen_sgd.py`` with the smallest change.

Each update takes L minibatches (``inner_steps``): the gradient at x on the
first, as the example computes it, and the other L - 1 through ``grad_fn``
in the inner loop. An epoch is still one pass over the training set
(N / (B L) updates, N / B gradient evaluations), so both files compare at
equal gradient evaluations. The learning rate multiplies x - <y>, not a
gradient: 1.0 here (the guide's rule, ten times SGD's). The README shows
the diff.

Run: python examples/flax_mnist/linen_entropix.py [--epochs 10] [--workdir DIR]
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import entropix
import entropix.linen
import common


@dataclasses.dataclass
class Config(common.Config):
  learning_rate: float = 1.0
  momentum: float = 0.9
  inner_steps: int = 5  # L: minibatches (gradient evaluations) per update
  gamma: float = 0.03  # the coupling, growing by 0.1% per update


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
def update_model(state, grads, images, labels):  # images, labels: L minibatches
  def loss_fn(params, batch):
    logits = state.apply_fn({"params": params}, batch[0])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()

  grad_fn = entropix.minibatch_grad_fn(loss_fn, (images, labels))
  return state.apply_gradients(grads=grads, grad_fn=grad_fn)


def train_epoch(state, train_ds, batch_size, rng, steps=None, inner_steps=1):
  """One pass over a permutation of the training set (or its first ``steps`` updates)."""
  steps_per_epoch = len(train_ds["image"]) // (batch_size * inner_steps)
  perms = jax.random.permutation(rng, len(train_ds["image"]))
  perms = np.asarray(perms[: steps_per_epoch * batch_size * inner_steps]).reshape(
      steps_per_epoch, inner_steps, batch_size)
  losses, accuracies = [], []
  for perm in perms[:steps]:
    grads, loss, accuracy = apply_model(state, train_ds["image"][perm[0]],
                                        train_ds["label"][perm[0]])
    state = update_model(state, grads, train_ds["image"][perm], train_ds["label"][perm])
    losses.append(loss)
    accuracies.append(accuracy)
  return state, float(np.mean(losses)), float(np.mean(accuracies))


def create_train_state(rng, config):
  cnn = CNN()
  params = cnn.init(rng, jnp.ones([1, 28, 28, 1]))["params"]
  tx = entropix.entropy_sgd(config.learning_rate, momentum=config.momentum,
                            gamma=entropix.scoping(config.gamma, 1e-3),
                            inner_steps=config.inner_steps)
  return entropix.linen.TrainState.create(apply_fn=cnn.apply, params=params, tx=tx)


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
  steps_per_epoch = len(train_ds["image"]) // (config.batch_size * config.inner_steps)
  records, done = [], 0
  total = round(config.num_epochs * steps_per_epoch)
  while done < total:
    rng, input_rng = jax.random.split(rng)
    steps = min(steps_per_epoch, total - done)
    state, train_loss, train_accuracy = train_epoch(
        state, train_ds, config.batch_size, input_rng, steps, config.inner_steps)
    done += steps
    test_loss, test_accuracy = evaluate(state, test_ds)
    common.report(records, {
        "epoch": round(done / steps_per_epoch, 6),
        "gradient_evaluations": done * config.inner_steps,
        "train_loss": train_loss,
        "train_accuracy": train_accuracy,
        "test_loss": test_loss,
        "test_accuracy": test_accuracy})
  return common.save(records, workdir)


if __name__ == "__main__":
  common.main(train_and_evaluate, Config, __doc__)
