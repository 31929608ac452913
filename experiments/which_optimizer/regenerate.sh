#!/usr/bin/env bash
# Every record of experiments/which_optimizer from nothing: the tuning trials
# of every cell (tuning.json: 3 cells x 7 optimizers x 4 trials of 10
# effective epochs), then the chosen settings' seeds (finals.json: 3 seeds
# each), then their minima measured (minima.json). Two programs at a time,
# each pinned to one core; stopped, the same command goes on where it
# stopped (finished programs and measured runs are skipped). report.py
# writes the tables and figures (tuning.md, results.md, curves.png,
# flatness.png) from the records.
set -euo pipefail
cd "$(dirname "$0")/../.."
python experiments/which_optimizer/compare.py --stage tune --jobs 2
python experiments/which_optimizer/compare.py --stage final --jobs 2
python experiments/which_optimizer/compare.py --stage measure --jobs 2
python experiments/which_optimizer/report.py
