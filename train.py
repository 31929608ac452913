r"""Trains one of the paper's networks with one of its optimizers (Table 1).

The command line only: flags -> ``training.build_config`` ->
``training.train_and_evaluate``; the work is in the ``training`` package.

``python train.py`` trains mnistfc with Entropy-SGD on the bundled MNIST for
the paper's budget of 120 effective epochs; ``python train.py --help`` lists
every flag with its default. The networks start from the authors'
initialisation, PyTorch 0.x's defaults (``--param-init flax`` for Flax's).
The budget is counted in effective epochs, backprops * batch_size / N_train
(paper Remark 22): one update of Entropy-SGD or HEAT costs L = 20 backprops,
of HJ L = 5, of the fixed point (Table 1's HJ) L + 1 = 6, of SGD 1.

The step is data parallel over ``--devices`` local devices (axis ``batch``):
each device holds the whole training set and draws its slice of the global
minibatch inside the compiled step, gradients are averaged by the
transforms' ``axis_name``, BatchNorm takes its statistics over the global
batch, and dropout masks and Langevin noise depend only on the seed, the
update and the example's position in the global batch. So 1 and 8 devices
follow the same trajectory up to float reassociation, under ``jax.pmap``
(default) or ``jax.shard_map`` (``--spmd shard_map``).
``--optimizer elastic-sgd`` and ``parle`` train ``--replicas`` copies of the
network on a replicas x devices mesh (``jax.shard_map``), each replica its
own seed (seed + r), minibatches and noise, pulled to the replicas' mean.
``--coordinator``, ``--num-processes`` and ``--process-id`` run the same
step over the devices of several processes (``jax.distributed``); process 0
writes the files and the summary.

Before each evaluation the BatchNorm statistics are re-estimated on the
training set (train mode, dropout off, the mean of the per-batch statistics),
as the paper's code does. Each evaluation appends a record to
``WORKDIR/metrics.jsonl`` and writes an orbax checkpoint; ``--resume``
continues from the newest one and ends with exactly the metrics of an
uninterrupted run. The last line on stdout is a JSON summary.

Example (a 5-effective-epoch LeNet run)::

  python train.py --model lenet --optimizer entropy-sgd --effective-epochs 5
"""

import argparse
import dataclasses
import datetime
import json
import os
import sys
from collections.abc import Sequence

import jax

import input_pipeline
import models
import training
import training.devices
from training.config import INPUT_SCALINGS, OPTIMIZERS, PARAM_INITS, SPMD, flag
from training.settings import (BATCH_SIZE, EVAL_EVERY, GAMMA0, LR, OPTIMIZER_DEFAULTS,
                               PAPER_BUDGET, PARAM_INIT, PARLE_GDOT, SCOPING, TRAIN_EXAMPLES,
                               TUNED, WEIGHT_DECAY)


def _per_model(table: dict[str, float]) -> str:
  return ", ".join(f"{v:g} ({k})" for k, v in table.items())


def _users(name: str) -> str:
  """The optimizers a setting applies to."""
  return ", ".join(o for o, cls in OPTIMIZERS.items()
                   if name in (f.name for f in dataclasses.fields(cls)))


def _per_optimizer(name: str) -> str:
  return ", ".join(f"{d[name]:g} ({o})" for o, d in OPTIMIZER_DEFAULTS.items() if name in d)


def _tuned(name: str) -> str:
  cells = [f"{v:g} ({m}/{o})" for (m, o), d in TUNED.items() for k, v in d.items() if k == name]
  return ", ".join(cells) or "none yet"


# Optimizer settings whose help is what they are and their defaults per optimizer.
OPTIMIZER_FLAGS = {
    "inner_lr": "inner step size",
    "noise": "Langevin noise scale, temperature noise^2",
    "alpha": "exponential averaging of the inner iterates",
    "damping": "weight kept on the previous fixed-point iterate",
    "rho": "elastic coupling rho0 to the replicas' mean",
    "rho_max": "ceiling of rho as --scoping grows it",
    "gamma_max": "ceiling of gamma as --scoping grows it",
}


def build_parser() -> argparse.ArgumentParser:
  """The flags of train.py; ``--help`` gives each one's default."""
  parser = argparse.ArgumentParser(
      prog="train.py", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="Default budgets (paper Table 1, effective epochs): " + ", ".join(
          f"{m}/{o} {b}" for (m, o), b in PAPER_BUDGET.items()))
  add = parser.add_argument
  add("--model", default="mnistfc", choices=sorted(models.REGISTRY),
      help="network (default: %(default)s); mnistfc and lenet train on MNIST, allcnn on CIFAR-10")
  add("--optimizer", default="entropy-sgd", choices=list(OPTIMIZERS),
      help="algorithm (default: %(default)s): Table 1's columns are entropy-sgd, "
           "heat-uniform (its HEAT), hj-fixed-point (its HJ) and sgd; hj (Sec. 7.2) and heat "
           "(Eq. 35) are the forms the paper's text describes; elastic-sgd and parle (Sec. 4.3) "
           "couple --replicas copies of the network")
  add("--effective-epochs", type=float, metavar="E",
      help="budget: backprops * batch_size / N_train (default: the paper's Table 1 budget of the "
           "model and optimizer, e.g. 120 for mnistfc/entropy-sgd; see below)")
  add("--batch-size", type=int, default=128, metavar="B",
      help="global minibatch, split across devices (default: %(default)s)")
  add("--lr", type=float,
      help=f"outer learning rate (default: {LR}, unless tuned: {_tuned('lr')})")
  add("--lr-schedule", metavar="E:LR,...",
      help="piecewise constant: from effective epoch E on use LR, e.g. '60:0.02,120:0.004'; "
           "'none' keeps --lr (default: --lr divided by 5 every 60 effective epochs, the paper's "
           "'/5 every 3 epochs' of Entropy-SGD with L = 20)")
  add("--gamma", type=float,
      help=f"{_users('gamma')}: coupling strength gamma0 (default: "
           f"{_per_model(GAMMA0)}; hj-fixed-point "
           f"{OPTIMIZER_DEFAULTS['hj-fixed-point']['gamma']:g}; parle "
           f"{OPTIMIZER_DEFAULTS['parle']['gamma']:g}; unless tuned: {_tuned('gamma')})")
  add("--scoping", type=float,
      help=f"{_users('scoping')}: gamma grows by a factor 1 + SCOPING per update (entropy-sgd, "
           "hj, heat-uniform: up to 1 / inner_lr, beyond 2 / inner_lr the inner loop "
           "diverges); heat: sigma^2 shrinks by it; elastic-sgd, parle: rho and gamma grow by it "
           "up to --rho-max and --gamma-max; 0 turns scoping off "
           f"(default: {SCOPING:g}, the paper's; elastic-sgd and parle: 0.5 / minibatches per "
           "epoch of the model's training set less --validation-split, as the authors' Parle "
           f"code: {PARLE_GDOT * BATCH_SIZE / TRAIN_EXAMPLES['lenet']:.3g} on MNIST at batch "
           f"{BATCH_SIZE})")
  add("--inner-steps", type=int, metavar="L",
      help=f"{_users('inner_steps')}: inner loop length, backprops per update (hj-fixed-point: "
           f"L + 1) (default: {_per_optimizer('inner_steps')})")
  add("--inner-momentum", type=float, metavar="M",
      help=f"{_users('inner_momentum')}: Nesterov momentum of the inner loop, its buffer kept "
           f"across updates as in the authors' code (default: "
           f"{_per_optimizer('inner_momentum')})")
  for name, what in OPTIMIZER_FLAGS.items():  # the rest: one line each, defaults per optimizer
    add(flag(name), type=float,
        help=f"{_users(name)}: {what} (default: {_per_optimizer(name)})")
  add("--sigma", type=float,
      help=f"heat: perturbation scale, sigma^2 is the paper's gamma "
           f"(default: {OPTIMIZER_DEFAULTS['heat']['sigma']:g}, unless tuned: {_tuned('sigma')})")
  add("--samples", type=int,
      help=f"heat: backprops (perturbations) per update (default: "
           f"{OPTIMIZER_DEFAULTS['heat']['samples']})")
  add("--replicas", type=int, metavar="N",
      help=f"{_users('replicas')}: parameter copies, each on --devices / N devices (data "
           "parallel within a replica), each with its own initialisation (seed + r), "
           "minibatches and noise; effective epochs count every replica's backprops "
           "(default: one replica per device)")
  add("--unroll", type=int, metavar="K",
      help="optimizers with an inner loop: its iterations per compiled loop body (default: the "
           "whole loop for allcnn on CPU, where XLA runs convolutions in loop bodies "
           "3-4x slower, jax-ml/jax#12868; otherwise 1, so compile time does not grow with L)")
  add("--momentum", type=float, default=0.9,
      help="Nesterov momentum of the outer update (default: %(default)s)")
  add("--weight-decay", type=float,
      help="L2 coefficient; inside the inner loop where there is one, on the outer step for "
           f"sgd and heat (default: {_per_model(WEIGHT_DECAY)}; 0 for sgd, as the authors' "
           "code)")
  add("--seed", type=int, default=0, help="seed of the initialisation, data order, dropout "
      "and noise (default: %(default)s)")
  add("--data-dir", metavar="DIR",
      help="mnistfc, lenet: a directory of the four IDX files or 'tfds:mnist' (default: the "
           "bundled MNIST); allcnn: a cifar-10-batches-bin directory or 'tfds:cifar10' "
           "('tfds' for short; default: none, required). tfds:NAME reads a copy prepared "
           "once in tensorflow-datasets' data dir")
  add("--workdir", metavar="DIR",
      help="receives config.json, metrics.jsonl and checkpoints/ "
           "(default: runs/MODEL-OPTIMIZER-seedSEED-TIMESTAMP-PID)")
  add("--resume", action="store_true",
      help="continue from the newest checkpoint in --workdir up to --effective-epochs "
           "(starts afresh if there is none) (default: off)")
  add("--devices", type=int, metavar="N",
      help="number of devices the batch is split over (default: all; across processes: "
           "all of every process's)")
  add("--eval-every", type=float, default=EVAL_EVERY, metavar="E",
      help="evaluate and checkpoint every E effective epochs, and at the end "
           "(default: %(default)s)")
  add("--validation-split", type=int, metavar="N",
      help="train on all but the last N training images and evaluate on those N instead of "
           "the test set, for tuning (default: 0, off)")
  add("--input-scaling", default="raw", choices=INPUT_SCALINGS,
      help="MNIST pixels: raw 0..255 as the paper ('no pre-processing'), or centered "
           "(x - 126) / 126 as the authors' Lua code (default: %(default)s)")
  add("--param-init", default=PARAM_INIT, choices=PARAM_INITS,
      help="parameter initialisation: pytorch-legacy, PyTorch 0.x's defaults as the authors' "
           "Table-1 code ran (weights and biases U(+-1/sqrt(fan_in)), BatchNorm scale U(0, 1)), "
           "or flax, Flax's defaults (default: %(default)s)")
  add("--spmd", choices=SPMD,
      help="run the per-device step under jax.pmap or jax.shard_map (default: pmap; "
           "shard_map for elastic-sgd and parle, whose replicas x devices are two axes)")
  add("--no-progress", dest="progress", action="store_false",
      help="no progress bar on stderr (default: shown)")
  processes = parser.add_argument_group(
      "several processes (jax.distributed; every process runs the same command with its "
      "own --process-id and the same --workdir; process 0 writes the files and the output)")
  env = os.environ.get
  processes.add_argument(
      "--coordinator", metavar="HOST:PORT", default=env("JAX_COORDINATOR_ADDRESS"),
      help="address of process 0's coordination service, or 'auto' in a cluster jax knows "
           "(Cloud TPU, Slurm, ...: it finds the address, count and id) (default: "
           "$JAX_COORDINATOR_ADDRESS; none: one process)")
  processes.add_argument("--num-processes", type=int, metavar="N",
                         default=env("JAX_NUM_PROCESSES"),
                         help="number of processes (default: $JAX_NUM_PROCESSES)")
  processes.add_argument("--process-id", type=int, metavar="I", default=env("JAX_PROCESS_ID"),
                         help="this process, 0 .. N-1 (default: $JAX_PROCESS_ID)")
  processes.add_argument("--heartbeat-timeout", type=int, default=100, metavar="S",
                         help="seconds without a heartbeat after which a process counts as "
                              "dead and the others stop (default: %(default)s)")
  return parser


# The flags of a multi-process run: they go to jax.distributed, not to the config.
PROCESS_FLAGS = ("coordinator", "num_processes", "process_id", "heartbeat_timeout")


def main(argv: Sequence[str] | None = None) -> int:
  """Parses flags, trains, prints the JSON summary as the last stdout line."""
  parser = build_parser()
  args = vars(parser.parse_args(argv))
  workdir = args.pop("workdir")
  processes = {k: args.pop(k) for k in PROCESS_FLAGS}
  if processes["coordinator"] is not None:
    number = lambda v: None if v is None else int(v)
    process_args = (processes["coordinator"], number(processes["num_processes"]),
                    number(processes["process_id"]), processes["heartbeat_timeout"])
    try:
      training.devices.check_process_flags(*process_args)
      if workdir is None:
        parser.error("several processes need --workdir (the same for all)")
      training.devices.initialize_processes(*process_args)
    except ValueError as e:
      parser.error(str(e))
  elif processes["num_processes"] is not None or processes["process_id"] is not None:
    parser.error("--num-processes and --process-id need --coordinator")
  if workdir is None:
    if args["resume"]:
      parser.error("--resume needs --workdir (the run to continue)")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = f"runs/{args['model']}-{args['optimizer']}-seed{args['seed']}-{stamp}-{os.getpid()}"
  try:
    config = training.build_config(**args)
    result = training.train_and_evaluate(config, workdir)
  except (training.ConfigError, input_pipeline.DataError) as e:
    parser.error(str(e))
  except training.TrainingDiverged as e:
    print(f"train.py: {e}", file=sys.stderr)
    return 1
  except jax.errors.JaxRuntimeError:
    # A collective whose peer died fails here: say which process died instead.
    training.devices.exit_if_a_process_died()
    raise
  if jax.process_index() == 0:
    print(json.dumps(result.summary), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
