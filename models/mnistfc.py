"""mnistfc: the fully connected MNIST network of the paper (1,867,786 parameters).

784 -> Dropout 0.2 -> Dense 1024 -> ReLU -> BN -> Dropout 0.2 -> Dense 1024
-> ReLU -> Dropout 0.2 -> BN -> Dense 10, the layer order of the authors' code.
"""

import flax.linen as nn
import jax

from models.layers import layer_init, norm_and_dropout
from models.network import Network


class MnistFC(nn.Module):
  """Fully connected MNIST classifier with BatchNorm and dropout.

  Attributes:
    axis_name: device axis the batch is split over: BatchNorm averages its
      statistics over it, dropout masks follow each example's global position.
    hidden: width of the two hidden layers.
    dropout_rate: dropout rate on the input and hidden layers.
    param_init: parameter initialisation, one of ``models.layers.INITS``: Flax's
      defaults, or "pytorch-legacy", those of the authors' PyTorch 0.x code.
    num_classes: outputs (the dataset's classes).
  """

  axis_name: str | None = None
  hidden: int = 1024
  dropout_rate: float = 0.2
  param_init: str = "flax"
  num_classes: int = 10

  @nn.compact
  def __call__(
      self, x: jax.Array, *, train: bool, dropout: bool | None = None
  ) -> jax.Array:
    """Logits; ``train`` selects batch statistics, ``dropout`` (default: ``train``) the masks."""
    norm, drop_at = norm_and_dropout(train, dropout, self.axis_name, self.param_init)
    drop = lambda x: drop_at(x, self.dropout_rate)
    x = x.reshape((x.shape[0], -1))
    x = drop(x)
    dense = lambda features, x: nn.Dense(features, **layer_init(self.param_init, x.shape[-1]))(x)
    x = norm()(nn.relu(dense(self.hidden, x)))
    x = drop(x)
    x = drop(nn.relu(dense(self.hidden, x)))
    x = norm()(x)
    return dense(self.num_classes, x)


# MNIST (Sec. 8), bundled.
NETWORK = Network(name="mnistfc", summary="the paper's fully connected MNIST network",
                  module=MnistFC, input_shape=(28, 28), data="mnist",
                  train_examples=60_000, defaults={})
