"""LeNet: the convolutional MNIST network of the paper (131,220 parameters).

Conv 5x5 20 -> ReLU -> MaxPool 3/3 -> BN -> Dropout 0.25 -> Conv 5x5 50 ->
ReLU -> MaxPool 2/2 -> BN -> Dropout 0.25 -> Dense 500 -> ReLU -> Dropout 0.25
-> Dense 10; convolutions unpadded, inputs NHWC (28x28x1).
"""

import flax.linen as nn
import jax

from models.layers import max_pool, norm_and_dropout, patch_conv


class LeNet(nn.Module):
  """LeNet with BatchNorm and dropout.

  Attributes:
    axis_name: device axis the batch is split over: BatchNorm averages its
      statistics over it, dropout masks follow each example's global position.
    dropout_rate: dropout rate after each block and the hidden dense layer.
  """

  axis_name: str | None = None
  dropout_rate: float = 0.25

  @nn.compact
  def __call__(
      self, x: jax.Array, *, train: bool, dropout: bool | None = None
  ) -> jax.Array:
    """Logits; ``train`` selects batch statistics, ``dropout`` (default: ``train``) the masks."""
    norm, drop_at = norm_and_dropout(train, dropout, self.axis_name)
    drop = lambda x: drop_at(x, self.dropout_rate)
    if x.ndim == 3:
      x = x[..., None]
    x = nn.relu(nn.Conv(20, (5, 5), padding="VALID", conv_general_dilated=patch_conv)(x))
    x = drop(norm()(max_pool(x, 3)))
    x = nn.relu(nn.Conv(50, (5, 5), padding="VALID", conv_general_dilated=patch_conv)(x))
    x = drop(norm()(max_pool(x, 2)))
    x = x.reshape((x.shape[0], -1))
    x = drop(nn.relu(nn.Dense(500)(x)))
    return nn.Dense(10)(x)
