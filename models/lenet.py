"""LeNet: the convolutional MNIST network of the paper (131,220 parameters).

Conv 5x5 20 -> ReLU -> MaxPool 3/3 -> BN -> Dropout 0.25 -> Conv 5x5 50 ->
ReLU -> MaxPool 2/2 -> BN -> Dropout 0.25 -> Dense 500 -> ReLU -> Dropout 0.25
-> Dense 10; convolutions unpadded, inputs NHWC (28x28x1).
"""

import flax.linen as nn
import jax

from models.layers import layer_init, max_pool, norm_and_dropout, patch_conv
from models.network import Network


class LeNet(nn.Module):
  """LeNet with BatchNorm and dropout.

  Attributes:
    axis_name: device axis the batch is split over: BatchNorm averages its
      statistics over it, dropout masks follow each example's global position.
    dropout_rate: dropout rate after each block and the hidden dense layer.
    param_init: parameter initialisation, one of ``models.layers.INITS``: Flax's
      defaults, or "pytorch-legacy", those of the authors' PyTorch 0.x code.
    num_classes: outputs (the dataset's classes).
  """

  axis_name: str | None = None
  dropout_rate: float = 0.25
  param_init: str = "flax"
  num_classes: int = 10

  @nn.compact
  def __call__(
      self, x: jax.Array, *, train: bool, dropout: bool | None = None
  ) -> jax.Array:
    """Logits; ``train`` selects batch statistics, ``dropout`` (default: ``train``) the masks."""
    norm, drop_at = norm_and_dropout(train, dropout, self.axis_name, self.param_init)
    drop = lambda x: drop_at(x, self.dropout_rate)
    if x.ndim == 3:
      x = x[..., None]
    conv = lambda features, x: nn.Conv(
        features, (5, 5), padding="VALID", conv_general_dilated=patch_conv,
        **layer_init(self.param_init, 25 * x.shape[-1]))(x)
    dense = lambda features, x: nn.Dense(features, **layer_init(self.param_init, x.shape[-1]))(x)
    x = nn.relu(conv(20, x))
    x = drop(norm()(max_pool(x, 3)))
    x = nn.relu(conv(50, x))
    x = drop(norm()(max_pool(x, 2)))
    x = x.reshape((x.shape[0], -1))
    x = drop(nn.relu(dense(500, x)))
    return dense(self.num_classes, x)


# MNIST (Sec. 8), bundled. Its convolutions are matmuls over patches
# (models.layers.patch_conv), as fast inside a loop body as outside on a CPU:
# its inner loops stay rolled (benchmarks/records/step_overhead.json).
NETWORK = Network(name="lenet", summary="the paper's convolutional MNIST network",
                  module=LeNet, input_shape=(28, 28), data="mnist",
                  train_examples=60_000, defaults={})
