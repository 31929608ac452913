"""cnn: the CNN of Flax's MNIST example (Linen), 824,458 parameters on MNIST.

Conv 3x3 32 -> ReLU -> AvgPool 2/2 -> Conv 3x3 64 -> ReLU -> AvgPool 2/2 ->
Dense 256 -> ReLU -> Dense 10; convolutions padded "SAME", inputs NHWC
(28x28x1). No BatchNorm, no dropout: ``train`` and ``dropout`` change nothing.
"""

import flax.linen as nn
import jax

from models.layers import layer_init
from models.network import Network


class CNN(nn.Module):
  """The CNN of Flax's MNIST example, built from plain ``nn.Conv`` layers.

  Attributes:
    axis_name: unused (no BatchNorm); kept so every network is built alike.
    param_init: parameter initialisation, one of ``models.layers.INITS``: Flax's
      defaults (the example's, this network's default in ``train.py``), or
      "pytorch-legacy".
    num_classes: outputs (the dataset's classes).
  """

  axis_name: str | None = None
  param_init: str = "flax"
  num_classes: int = 10

  @nn.compact
  def __call__(
      self, x: jax.Array, *, train: bool, dropout: bool | None = None
  ) -> jax.Array:
    """Logits; ``train`` and ``dropout`` are accepted and change nothing."""
    del train, dropout
    if x.ndim == 3:
      x = x[..., None]
    conv = lambda features, x: nn.Conv(features, (3, 3),
                                       **layer_init(self.param_init, 9 * x.shape[-1]))(x)
    dense = lambda features, x: nn.Dense(features, **layer_init(self.param_init, x.shape[-1]))(x)
    x = nn.avg_pool(nn.relu(conv(32, x)), (2, 2), strides=(2, 2))
    x = nn.avg_pool(nn.relu(conv(64, x)), (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    return dense(self.num_classes, nn.relu(dense(256, x)))


# MNIST, bundled; the example's 10 epochs, its initialisation (Flax's) and
# inputs in [-1, 1] (the example's are in [0, 1]; the paper's raw 0..255
# would make its SGD step too large).
NETWORK = Network(name="cnn", summary="the CNN of Flax's MNIST example",
                  module=CNN, input_shape=(28, 28), data="mnist",
                  train_examples=60_000,
                  defaults=dict(effective_epochs=10.0, param_init="flax",
                                input_scaling="centered"))
