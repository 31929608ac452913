"""What feeding the data costs train.py, as a fraction of a training update.

train.py keeps the training set on the device and draws the minibatches
inside the compiled update. For each case below, on the bundled MNIST, one
device, batch 128, this measures in one process:

* ``step``: one compiled update of train.py (``training.loop.build_program``),
  L backprops plus everything else;
* ``feed``: the feeding alone, compiled the same way: the same sampler (a
  fresh permutation of the 60,000 examples once per epoch, its rows for the L
  minibatches), the gathers of the images and labels, and the pixel scaling,
  summed so that nothing is optimised away.

``feed / step`` is the share of an update spent on data (target < 5%): an
upper bound, since inside the update XLA may fuse the gather into the first
layer. Medians over rounds that interleave the two. Writes
benchmarks/records/data_feeding.json.

Run: python benchmarks/data_feeding.py [--rounds 5] [--out benchmarks/records/data_feeding.json]
"""

import argparse
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
from training import loop, steps, streams  # noqa: E402

CASES = (("mnistfc", "sgd"), ("mnistfc", "entropy-sgd"), ("lenet", "sgd"),
         ("lenet", "entropy-sgd"))


def make_feed(config, num_train, scaling):
  """train.py's data path, without the model: per device, like the step."""
  draw = steps.make_batch_sampler(config, num_train,
                                  streams.of(streams.seed_key(config.seed)).data)

  def feed(state, data):
    (perm, epoch), rows = steps.draw_device_rows(draw, state, config)
    total = scaling(data.train_x[rows]).sum() + data.train_y[rows].sum()
    return state._replace(step=state.step + 1, perm=perm, perm_epoch=epoch), {"sum": total}

  return feed


def per_call(fn, state, data, calls):
  start = time.perf_counter()
  for _ in range(calls):
    state, out = fn(state, data)
  jax.block_until_ready(out)
  return state, (time.perf_counter() - start) / calls


def measure(model, optimizer, rounds):
  config = training.build_config(model=model, optimizer=optimizer, devices=1)
  dataset, scaling = input_pipeline.load(config.run.data_dir, config.input_scaling)
  run = loop.build_program(config, dataset, scaling)
  feed = run.parallel.map(make_feed(config, dataset.train_images.shape[0], scaling))
  step_state, feed_state = run.parallel.put(run.state), run.parallel.put(run.state)
  step_state, first = per_call(run.train_step, step_state, run.data, 1)  # compiles
  feed_state, _ = per_call(feed, feed_state, run.data, 1)
  calls = max(2, int(0.5 / first)) if first < 0.5 else 2
  steps, feeds = [], []
  for _ in range(rounds):
    step_state, t = per_call(run.train_step, step_state, run.data, calls)
    steps.append(t)
    # As many feeds as updates ran, so both cross epoch boundaries alike.
    feed_state, t = per_call(feed, feed_state, run.data, calls)
    feeds.append(t)
  step, fed = statistics.median(steps), statistics.median(feeds)
  return {
      "model": model, "optimizer": optimizer,
      "backprops_per_update": config.backprops_per_update,
      "step_ms": round(1e3 * step, 3), "feed_ms": round(1e3 * fed, 3),
      "feed_fraction": round(fed / step, 4),
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--out", default="benchmarks/records/data_feeding.json")
  args = parser.parse_args()
  cases = [measure(m, o, args.rounds) for m, o in CASES]
  result = {
      "date": datetime.date.today().isoformat(), "machine": machine(),
      "rounds": args.rounds, "batch_size": 128, "cases": cases,
  }
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=2)
  for case in cases:
    print(json.dumps(case))


if __name__ == "__main__":
  main()
