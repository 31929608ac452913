r"""Trains one of the paper's networks with one of its optimizers (Table 1).

The command line only: flags -> ``training.build_config`` ->
``training.train_and_evaluate``; the work is in the ``training`` package.

``python train.py`` trains mnistfc with Entropy-SGD on the bundled MNIST for
the paper's budget of 120 effective epochs; ``python train.py --help`` lists
every flag with its default, and docs/guides/recipes.md the defaults of each
model and optimizer. The networks start from the authors' initialisation,
PyTorch 0.x's defaults (``--param-init flax`` for Flax's).
The budget is counted in effective epochs, backprops * batch_size / N_train
(paper Remark 22): one update of Entropy-SGD or HEAT costs L = 20 backprops,
of HJ L = 5, of the fixed point (Table 1's HJ) L + 1 = 6, of SGD 1.

The step is data parallel over ``--devices`` devices (``jax.pmap``, or
``jax.shard_map`` with ``--spmd shard_map``): each device draws its slice of
the global minibatch inside the compiled step, and dropout masks and noise
depend only on the seed, the update and the example's position, so 1 and 8
devices follow the same trajectory up to float reassociation. Elastic-SGD and
Parle train ``--replicas`` copies (replica r from seed + r) on a replicas x
devices mesh; ``--coordinator`` spans several processes (``jax.distributed``),
process 0 writing the files. ``--seeds 0,1,2`` trains several seeds as one
program, seed n's records in WORKDIR/seed_n; ``--sweep lr=0.1,0.3`` a grid.

Before each evaluation the BatchNorm statistics are re-estimated on the
training set (train mode, dropout off, the mean of the per-batch statistics),
as the paper's code does. Each evaluation appends a record to
``WORKDIR/metrics.jsonl`` and writes an orbax checkpoint; ``--resume``
continues from the newest one and ends with exactly the metrics of an
uninterrupted run. The last line on stdout is a JSON summary (one per seed).

Example (a 5-effective-epoch LeNet run)::

  python train.py --model lenet --optimizer entropy-sgd --effective-epochs 5
"""

import argparse
import datetime
import json
import os
import sys
from collections.abc import Sequence

import jax

import input_pipeline
import models
import training
import training.config
import training.devices
from training import optimizers, sweeps
from training.config import INPUT_SCALINGS, PARAM_INITS, SPMD, flag
from training.settings import (BATCH_SIZE, EVAL_EVERY, KEEP_CHECKPOINTS, MOMENTUM, PARAM_INIT,
                               SHARPNESS_IMAGES)

RECIPE = "default: the recipe"  # what --help says of a default that depends on the cell


def build_parser() -> argparse.ArgumentParser:
  """The flags of train.py; ``--help`` gives each one's default."""
  parser = argparse.ArgumentParser(
      prog="train.py", description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog="The recipe: the default of the --model and --optimizer chosen (paper Table 1's "
             "budget, its settings, the tuned values), one table in docs/guides/recipes.md.")
  _add_cell_flags(parser.add_argument_group(
      "what to train (a cell of the recipes table: --model, --optimizer and their settings)"))
  _add_run_flags(parser.add_argument_group("data, seeds, output"))
  _add_process_flags(parser)
  return parser


def _add_cell_flags(group: argparse._ArgumentGroup) -> None:
  add = group.add_argument
  add("--model", default="mnistfc", choices=list(models.NETWORKS),
      help="network (default: %(default)s): " + "; ".join(
          f"{name}, {net.summary}" for name, net in models.NETWORKS.items()))
  add("--optimizer", default="entropy-sgd", choices=list(optimizers.REGISTRY),
      help="algorithm (default: %(default)s): " + "; ".join(
          f"{name}, {cls.summary}" for name, cls in optimizers.REGISTRY.items()))
  add("--effective-epochs", type=float, metavar="E",
      help=f"budget: backprops * batch_size / N_train ({RECIPE})")
  add("--batch-size", type=int, default=BATCH_SIZE, metavar="B",
      help="global minibatch, split across devices (default: %(default)s)")
  add("--lr", type=float, help=f"outer learning rate ({RECIPE})")
  add("--lr-schedule", metavar="E:LR,...",
      help="piecewise constant: from effective epoch E on use LR, e.g. '60:0.02,120:0.004'; "
           "'none' keeps --lr (default: --lr divided by 5 every 60 effective epochs)")
  for name, spec in optimizers.HYPERS.items():  # each optimizer's own, from its declaration
    default = "" if "(default" in spec.help else f" ({RECIPE})"
    add(flag(name), type=spec.kind, metavar=spec.metavar,
        help=f"{', '.join(optimizers.users(name))}: {spec.help}{default}")
  add("--unroll", type=int, metavar="K",
      help="optimizers with an inner loop: its iterations per compiled loop body (default: the "
           "whole loop for allcnn on CPU, jax-ml/jax#12868; otherwise 1)")
  add("--momentum", type=float,
      help=f"{', '.join(optimizers.users('momentum'))}: Nesterov momentum of the outer update "
           f"(default: {MOMENTUM})")
  add("--weight-decay", type=float,
      help=f"L2 coefficient: inside the inner loop where there is one, else on the outer "
           f"step ({RECIPE})")


def _add_run_flags(group: argparse._ArgumentGroup) -> None:
  add = group.add_argument
  add("--seed", type=int, help="of the initialisation, data order, dropout, noise (default: 0)")
  add("--seeds", type=sweeps.seed_list, metavar="S,S,...",
      help="train several seeds as one compiled program; seed n's records go to "
           "WORKDIR/seed_n as a --seed n run's (default: one, --seed)")
  add("--sweep", type=sweeps.sweep_axis, action="append", metavar="NAME=V,V,...",
      help="train the grid of these values (repeat for more settings: every combination, "
           "with each of --seeds) as one program, point p in WORKDIR/p, e.g. lr=0.1,0.3 "
           "(default: none)")
  add("--dataset", choices=training.config.DATASETS,
      help="a dataset by name, found where it is installed (fashion_mnist: tensorflow-datasets' "
           "copy, else $ENTROPIX_FASHION_MNIST or Debian's /usr/share/datasets/fashion-mnist, "
           "checksummed) (default: the network's, as --data-dir)")
  add("--data-dir", metavar="DIR",
      help="mnistfc, lenet, cnn: a directory of the four IDX files or 'tfds:mnist' (default: "
           "the bundled MNIST); allcnn: a cifar-10-batches-bin directory or 'tfds:cifar10' "
           "(default: none, required)")
  add("--workdir", metavar="DIR",
      help="receives config.json, metrics.jsonl and checkpoints/ "
           "(default: runs/MODEL-OPTIMIZER-seedSEED-TIMESTAMP-PID)")
  add("--resume", action="store_true",
      help="continue from the newest checkpoint in --workdir up to --effective-epochs, or "
           "start afresh if there is none (default: off)")
  add("--devices", type=int, metavar="N",
      help="number of devices the batch is split over (default: all, of every process)")
  add("--eval-every", type=float, default=EVAL_EVERY, metavar="E",
      help="evaluate and checkpoint every E effective epochs, and at the end "
           "(default: %(default)s)")
  add("--validation-split", type=int, metavar="N",
      help="train on all but the last N training images and evaluate on those N instead of "
           "the test set, for tuning (default: 0, off)")
  own = lambda name: ", ".join(f"{n} {net.defaults[name]}" for n, net in models.NETWORKS.items()
                               if name in net.defaults)
  add("--input-scaling", choices=INPUT_SCALINGS,
      help="MNIST pixels: raw 0..255 as the paper, or centered (x - 126) / 126 as the "
           f"authors' Lua code (default: raw; {own('input_scaling')})")
  add("--param-init", choices=PARAM_INITS,
      help="parameter initialisation: PyTorch 0.x's defaults, as the authors' Table-1 code "
           f"ran, or Flax's (default: {PARAM_INIT}; {own('param_init')})")
  add("--spmd", choices=SPMD,
      help="run the per-device step under jax.pmap or jax.shard_map (default: pmap; "
           "shard_map for elastic-sgd and parle)")
  add("--no-progress", dest="progress", action="store_false",
      help="no progress bar on stderr; the evaluation lines stay (default: shown)")
  add("--keep-checkpoints", type=int, metavar="K",
      help=f"keep the checkpoints of the newest K evaluations in WORKDIR/checkpoints "
           f"(default: {KEEP_CHECKPOINTS})")
  add("--sharpness-every", type=float, metavar="E",
      help="at the first evaluation past every E effective epochs (a multiple of --eval-every), "
           "at update 0 and at the end, also measure the evaluated network's top Hessian "
           f"eigenvalue and trace on the first {SHARPNESS_IMAGES} training images into "
           "metrics.jsonl's record ('sharpness') and a line (default: off)")
  add("--diagnose", action="store_true",
      help="instead of training, measure the finished run in --workdir (its newest "
           "checkpoint) with entropix.diagnostics into WORKDIR/diagnostics.json (default: "
           "train)")


def _add_process_flags(parser: argparse.ArgumentParser) -> None:
  processes = parser.add_argument_group(
      "several processes (jax.distributed; every process runs the same command with its "
      "own --process-id and the same --workdir; process 0 writes the files and the output)")
  env = os.environ.get
  processes.add_argument(
      "--coordinator", metavar="HOST:PORT", default=env("JAX_COORDINATOR_ADDRESS"),
      help="address of process 0's coordination service, or 'auto' in a cluster jax knows "
           "(Cloud TPU, Slurm, ...) (default: $JAX_COORDINATOR_ADDRESS; none: one process)")
  processes.add_argument("--num-processes", type=int, metavar="N",
                         default=env("JAX_NUM_PROCESSES"),
                         help="number of processes (default: $JAX_NUM_PROCESSES)")
  processes.add_argument("--process-id", type=int, metavar="I", default=env("JAX_PROCESS_ID"),
                         help="this process, 0 .. N-1 (default: $JAX_PROCESS_ID)")
  processes.add_argument("--heartbeat-timeout", type=int, default=100, metavar="S",
                         help="seconds without a heartbeat after which a process counts as "
                              "dead and the others stop (default: %(default)s)")


# The flags of a multi-process run: they go to jax.distributed, not to the config.
PROCESS_FLAGS = ("coordinator", "num_processes", "process_id", "heartbeat_timeout")


def main(argv: Sequence[str] | None = None) -> int:
  """Parses flags, trains, prints the JSON summary (one line per seed) last on stdout."""
  parser = build_parser()
  args = vars(parser.parse_args(argv))
  workdir = args.pop("workdir")
  processes = {k: args.pop(k) for k in PROCESS_FLAGS}
  if args.pop("diagnose"):
    from training import diagnose  # noqa: PLC0415: only this command needs it

    return diagnose.command(parser, workdir)
  try:
    training.devices.join_processes(**processes, workdir=workdir)
  except ValueError as e:
    parser.error(str(e))
  seeds, axes = args.pop("seeds"), args.pop("sweep")
  if seeds is not None and args["seed"] is not None:
    parser.error("--seed and --seeds: give one of them")
  if workdir is None:
    if args["resume"]:
      parser.error("--resume needs --workdir (the run to continue)")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = ("sweep" if axes else f"seeds{','.join(map(str, seeds))}" if seeds
            else f"seed{args['seed'] or 0}")
    workdir = f"runs/{args['model']}-{args['optimizer']}-{name}-{stamp}-{os.getpid()}"
  try:
    if axes:
      results = training.train_group(*sweeps.grid(args, axes, seeds, workdir))
    elif seeds is not None:
      results = training.train_seeds(training.build_config(**args), seeds, workdir)
    else:
      results = [training.train_and_evaluate(training.build_config(**args), workdir)]
  except (training.ConfigError, input_pipeline.DataError) as e:
    parser.error(str(e))
  except training.TrainingDiverged as e:
    print(f"train.py: {e}", file=sys.stderr)
    return 1
  except jax.errors.JaxRuntimeError:
    # A collective whose peer died fails here: say which process died instead.
    training.devices.exit_if_a_process_died()
    raise
  stopped = [r.summary.get("stopped") or r.summary["left_out"] for r in results
             if {"stopped", "left_out"} & set(r.summary)]
  if jax.process_index() == 0:
    print(*(f"train.py: {message}\n" for message in stopped), sep="", end="", file=sys.stderr)
    for result in results:
      print(json.dumps(result.summary), flush=True)
  return 1 if stopped else 0


if __name__ == "__main__":
  sys.exit(main())
