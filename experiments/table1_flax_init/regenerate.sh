#!/usr/bin/env bash
# Every record of experiments/table1_flax_init from nothing, from Flax's
# initialisation (--param-init flax): Table 1's MNIST cells with the seeds
# the records hold, Figure 4, mnistfc Entropy-SGD with the 10-epoch search's
# recipe (earlier_recipe/), and the two LeNet checks on the validation split.
# About 19 core-hours (the records' wall times) on a 2-core CPU, two runs at
# a time; stopped, the same command goes on where it stopped (finished runs
# are skipped).
set -euo pipefail
cd "$(dirname "$0")/../.."
# Every cell's first 3 seeds (hj and heat: 2), then the cells with more.
python experiments/table1/reproduce_table1.py --jobs 2 --results experiments/table1_flax_init \
  --runs runs/flax_init -- --param-init flax
python experiments/table1/reproduce_table1.py --jobs 2 --results experiments/table1_flax_init \
  --runs runs/flax_init --models mnistfc lenet --optimizers entropy-sgd --seeds 6 \
  -- --param-init flax
python experiments/table1/reproduce_table1.py --jobs 2 --results experiments/table1_flax_init \
  --runs runs/flax_init --models lenet --optimizers hj-fixed-point --seeds 6 \
  -- --param-init flax
python experiments/table1/reproduce_table1.py --jobs 2 --results experiments/table1_flax_init \
  --runs runs/flax_init --models lenet --optimizers heat-uniform sgd --seeds 4 \
  -- --param-init flax
python experiments/table1/figure4.py --runs experiments/table1_flax_init/table1_runs.json \
  --out experiments/table1_flax_init
python experiments/table1/reproduce_table1.py --jobs 2 --models mnistfc \
  --optimizers entropy-sgd --seeds 6 --results experiments/table1_flax_init/earlier_recipe \
  --runs runs/flax_init_earlier_recipe -- --lr 0.1 --gamma 0.001 --param-init flax
python experiments/table1_flax_init/lenet_checks.py --jobs 2
