"""All-CNN-C with BatchNorm: the CIFAR-10 network of the paper (1,667,166 parameters).

Dropout 0.2 -> [conv 96, conv 96, conv 96 /2] -> Dropout 0.5 -> [conv 192,
conv 192, conv 192 /2] -> Dropout 0.5 -> conv 192 -> conv 192 -> conv1x1 10 ->
global mean pool. Every conv: 3x3, padding 1 (the 1x1: none), bias, BN, ReLU
(the last one too). Inputs NHWC (32x32x3).
"""

import flax.linen as nn
import jax

from models.layers import layer_init, norm_and_dropout
from models.network import Network


class AllCNN(nn.Module):
  """All-CNN-C (Springenberg et al., 2015) with BatchNorm after every conv.

  Attributes:
    axis_name: device axis the batch is split over: BatchNorm averages its
      statistics over it, dropout masks follow each example's global position.
    param_init: parameter initialisation, one of ``models.layers.INITS``: Flax's
      defaults, or "pytorch-legacy", those of the authors' PyTorch 0.x code.
    num_classes: outputs (the dataset's classes).
  """

  axis_name: str | None = None
  param_init: str = "flax"
  num_classes: int = 10

  @nn.compact
  def __call__(
      self, x: jax.Array, *, train: bool, dropout: bool | None = None
  ) -> jax.Array:
    """Logits; ``train`` selects batch statistics, ``dropout`` (default: ``train``) the masks."""
    norm, drop = norm_and_dropout(train, dropout, self.axis_name, self.param_init)

    def conv_bn(x, features, kernel=3, stride=1):
      pad = 1 if kernel == 3 else 0
      x = nn.Conv(features, (kernel, kernel), strides=stride, padding=pad,
                  **layer_init(self.param_init, kernel * kernel * x.shape[-1]))(x)
      return nn.relu(norm()(x))

    x = drop(x, 0.2)
    for features in (96, 192):
      x = conv_bn(x, features)
      x = conv_bn(x, features)
      x = conv_bn(x, features, stride=2)
      x = drop(x, 0.5)
    x = conv_bn(x, 192)
    x = conv_bn(x, 192)
    x = conv_bn(x, self.num_classes, kernel=1)
    return x.mean(axis=(1, 2))


# CIFAR-10 (Sec. 8), not bundled: --data-dir is required. XLA:CPU runs its
# convolutions several times slower inside a loop body than outside
# (jax-ml/jax#12868): its inner loops are unrolled on a CPU, for a compile
# time that grows with L.
NETWORK = Network(name="allcnn", summary="the paper's CIFAR-10 network (All-CNN-C)",
                  module=AllCNN, input_shape=(32, 32, 3), data=None,
                  train_examples=50_000, defaults={}, unroll_on_cpu=True,
                  data_help="CIFAR-10: pass --data-dir DIR (a cifar-10-batches-bin directory) or "
                            "--data-dir tfds:cifar10 (needs tensorflow-datasets)")
