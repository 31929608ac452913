#!/usr/bin/env bash
# Every record of experiments/flatness from nothing: the 12 training runs
# (about 3.3 core-hours on a 2-core CPU, two at a time), then the
# diagnostics of each final checkpoint, the table and the figures, then where
# each minimum's sharpest directions live. Stopped, the same command goes on
# where it stopped.
set -euo pipefail
cd "$(dirname "$0")/../.."
python experiments/flatness/train_runs.py --jobs 2
python experiments/flatness/measure.py --jobs 2
python experiments/flatness/sharpest.py
