"""N seeds as one program (``train.py --seeds``) against N single-seed runs one after another.

For mnistfc and LeNet with Entropy-SGD and SGD at their Table-1 recipes
(bundled MNIST, one device, batch 128), this measures in one process the
steady-state time of one update (compiled, the data on the device, no
evaluation):

* ``single_ms``: the update of one seed, ``training.loop.build_program``
  as ``train.py --seed S`` runs it; N separate runs one after another cost
  ``N * single_ms`` per update (each process also compiles once and loads
  the data: ``compile_s`` below, left out of the ratio);
* ``group_ms``: one update of all N seeds, the program of ``train.py
  --seeds 0,...,N-1``, in each ``layout``: ``"vmap"`` (the seeds' states
  stacked, the step ``jax.vmap``-ed over them: an accelerator's default) and
  ``"tuple"`` (a tuple of the seeds' states, one copy of the step per seed in
  the program: a CPU's default);
* ``ratio = group_ms / (N * single_ms)``: under 1, the seeds share the
  machine better together than apart; the target on a CPU is 1.1 or less,
  on a GPU ``group_ms`` for 6 seeds at most 2x ``single_ms``
  (``vs_one_seed = group_ms / single_ms``).

Medians over rounds that interleave the programs, so that drift on a shared
machine hits them alike.

Run: taskset -c 1 python benchmarks/seeds.py [--rounds 5] (writes benchmarks/records/seeds_cpu.json)
(one core, as each of train.py's runs pinned one per core).
"""

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import statistics
import sys
import time

import jax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import input_pipeline  # noqa: E402
import training  # noqa: E402
from overhead import machine  # noqa: E402
from training import loop, sweeps  # noqa: E402

TARGET_SECONDS = 1.0  # time per measurement, so short updates are repeated


class Updates:
  """A compiled program's update, repeated on its own state."""

  def __init__(self, model, optimizer, dataset, scaling, seeds, vmap=None):
    config = training.build_config(model=model, optimizer=optimizer, devices=1)
    self.program = (loop.build_program(config, dataset, scaling) if seeds is None else
                    sweeps.build_group_program([dataclasses.replace(config, seed=s) for s in seeds],
                                               dataset, scaling, vmap))
    self.state = self.program.parallel.put_state(self.program.state)
    start = time.perf_counter()
    self.step()
    self.compile_s = time.perf_counter() - start
    start = time.perf_counter()
    self.step()
    self.calls = max(2, int(TARGET_SECONDS / (time.perf_counter() - start)))

  def step(self):
    self.state, out = self.program.train_step(self.state, self.program.data)
    jax.block_until_ready(out)

  def ms(self):
    start = time.perf_counter()
    for _ in range(self.calls):
      self.state, out = self.program.train_step(self.state, self.program.data)
    jax.block_until_ready(out)
    return 1e3 * (time.perf_counter() - start) / self.calls


def measure(model, optimizer, counts, layouts, rounds):
  config = training.build_config(model=model, optimizer=optimizer, devices=1)
  dataset, scaling = input_pipeline.load(config.run.data_dir, config.input_scaling, 0)
  single = Updates(model, optimizer, dataset, scaling, None)
  groups = {(n, layout): Updates(model, optimizer, dataset, scaling, list(range(n)),
                                 layout == "vmap")
            for n in counts for layout in layouts}
  times = {"single": [], **{key: [] for key in groups}}
  for _ in range(rounds):
    times["single"].append(single.ms())
    for key, group in groups.items():
      times[key].append(group.ms())
  single_ms = statistics.median(times["single"])
  rows = []
  for (n, layout), group in groups.items():
    group_ms = statistics.median(times[n, layout])
    rows.append({"model": model, "optimizer": optimizer, "seeds": n, "layout": layout,
                 "single_ms": round(single_ms, 2), "group_ms": round(group_ms, 2),
                 "ratio": round(group_ms / (n * single_ms), 3),
                 "vs_one_seed": round(group_ms / single_ms, 3),
                 "compile_s": {"single": round(single.compile_s, 1),
                               "group": round(group.compile_s, 1)}})
    print(json.dumps(rows[-1]), flush=True)
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--seeds", default="1,2,6", help="the seed counts N to measure")
  parser.add_argument("--models", default="mnistfc,lenet")
  parser.add_argument("--optimizers", default="entropy-sgd,sgd")
  parser.add_argument("--layouts", default="tuple,vmap",
                      help="the seeds' program: a tuple of seeds (a CPU's default), stacked "
                           "and vmapped (an accelerator's)")
  parser.add_argument("--out", help="default: seeds_<platform>.json in benchmarks/records, "
                      "the default device's platform (cpu, gpu, tpu)")
  args = parser.parse_args()
  counts = [int(n) for n in args.seeds.split(",")]
  rows = [row for model in args.models.split(",") for optimizer in args.optimizers.split(",")
          for row in measure(model, optimizer, counts, args.layouts.split(","), args.rounds)]
  record = {"date": datetime.date.today().isoformat(), "machine": machine(),
            "cores_visible": len(os.sched_getaffinity(0)), "rounds": args.rounds,
            "command": "python benchmarks/seeds.py " + " ".join(sys.argv[1:]), "rows": rows}
  out = args.out or f"benchmarks/records/seeds_{jax.devices()[0].platform}.json"
  pathlib.Path(out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
  main()
