"""The training side of the reproduction: entropix's optimizers on the paper's networks.

One module per concern, each read on its own:

* :mod:`training.settings`: the paper's settings, each with its source, and
  each (model, optimizer) cell's recipe of defaults in one entry;
* :mod:`training.config`: flags -> one complete, checked :class:`Config`;
* :mod:`training.optimizers`: one declaration per optimizer (its hyper-parameters,
  what it needs of the step, its recipes, its optax factory), the registry;
* :mod:`training.steps`: the on-device batch sampler, train step and evaluation;
* :mod:`training.devices`: placement under ``jax.pmap`` or ``jax.shard_map``, the
  replicas x devices mesh of Elastic-SGD and Parle, several processes and the
  watch that stops them when one dies;
* :mod:`training.checkpoints`: orbax checkpoints, resume checks, data fingerprint;
* :mod:`training.metrics`: ``metrics.jsonl``, the progress bar, the NaN stop;
* :mod:`training.loop`: :func:`train_and_evaluate`, one run read top to bottom;
* :mod:`training.sweeps`: :func:`train_group` / :func:`train_seeds`, several runs
  (seeds, a sweep) as one compiled program, on top of the loop's pieces.

``train.py`` beside this package is the command line over it;
``input_pipeline.py`` owns the datasets and ``models/`` the networks.
"""

from training.config import Config, ConfigError, build_config
from training.loop import TrainingResult, train_and_evaluate
from training.sweeps import train_group, train_seeds
from training.metrics import TrainingDiverged

__all__ = ["Config", "ConfigError", "TrainingDiverged", "TrainingResult", "build_config",
           "train_and_evaluate", "train_group", "train_seeds"]
