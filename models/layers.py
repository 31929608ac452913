"""Layers shared by the networks, configured as in the authors' PyTorch code."""

import flax.linen as nn


def batch_norm(train: bool, axis_name: str | None) -> nn.BatchNorm:
  """BatchNorm with PyTorch's defaults (momentum 0.1 there is 0.9 here, eps 1e-5).

  In training it normalises with the batch statistics, reduced over
  ``axis_name`` (the global batch under pmap); in evaluation with the running
  ones.
  """
  return nn.BatchNorm(
      use_running_average=not train, momentum=0.9, epsilon=1e-5, axis_name=axis_name
  )
