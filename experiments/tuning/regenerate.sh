#!/usr/bin/env bash
# Every record of experiments/tuning from nothing: the short search of every
# cell (tuning.json, 96 trials, 2.2 core-hours on a 2-core CPU), then mnistfc
# Entropy-SGD's full-budget search (27 trials of 120 effective epochs, about
# 10 core-hours; it ran on an H200 with --jobs 9, 200 s a wave of nine). Both
# ran from Flax's initialisation, train.py's default then: --param-init flax.
# Stopped, the same command goes on where it stopped (finished trials are
# skipped).
set -euo pipefail
cd "$(dirname "$0")/../.."
python experiments/tuning/tune.py --jobs 2 -- --param-init flax
python experiments/tuning/tune.py --jobs 2 --budget 120 --models mnistfc \
  --optimizers entropy-sgd --grid lr=0.1,0.03,0.3 --grid gamma=1e-3,1e-4,1e-2 --seeds 3 \
  --out experiments/tuning/tuning_mnistfc_entropy_sgd_full.json -- --param-init flax
