"""What a network declaration is: the module, its input, its data and its defaults."""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn


@dataclasses.dataclass(frozen=True)
class Network:
  """A network ``train.py`` can train, declared once, as ``NETWORK``, in its module of ``models/``.

  Attributes:
    name: the ``--model`` value.
    module: the Flax module, built as ``module(axis_name=..., param_init=...,
      num_classes=...)`` and called as ``apply(variables, x, train=...,
      dropout=...)`` (see :mod:`models`).
    input_shape: one image's shape, (H, W) or (H, W, C).
    summary: what it is, for ``--help``.
    data: the default ``--data-dir`` (a name ``input_pipeline.load`` knows), or
      None where the data must be given.
    data_help: what to pass as ``--data-dir`` where ``data`` is None.
    train_examples: the training images of that data: a per-epoch scoping
      counts its minibatches over them.
    defaults: the run's defaults on this network where an optimizer has no
      recipe for it (the budget; a ``param_init`` or ``input_scaling`` of its own).
    unroll_on_cpu: unroll the inner loops on a CPU (a network whose
      convolutions XLA:CPU runs slower inside a loop body).
  """

  name: str
  summary: str
  module: Callable[..., nn.Module]
  input_shape: tuple[int, ...]
  data: str | None
  train_examples: int
  defaults: Mapping[str, Any]
  unroll_on_cpu: bool = False
  data_help: str = ""
