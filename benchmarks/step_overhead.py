"""What a training update of train.py costs beyond its backprops, and the same updates in PyTorch.

For mnistfc and LeNet (bundled MNIST, one device, batch 128) and each
optimizer of train.py with its default settings, this measures in one process:

* ``update_ms``: one compiled update of train.py
  (``training.loop.build_program``): L backprops on L fresh minibatches,
  drawn on the device, plus the optimizer's arithmetic;
* ``backprop_ms``: one bare ``jax.jit(jax.grad(loss))`` of the same network
  on one minibatch, BatchNorm on, dropout on (the same masks as in the
  update: the same layer);
* ``ratio = update_ms / (L * backprop_ms)``, the cost per backprop relative
  to a bare one (1.0: the update costs only its backprops);
* ``arithmetic_ms``: the optimizer's own arithmetic per update, the same
  update (``training.optimizers.make_optimizer``) with every backprop
  replaced by a fixed gradient (plus 1e-30 times the point, so that the
  point, and HEAT's noise that makes it, is still computed). It reads and
  writes every parameter a few times per backprop, so on a network of 1.9
  million parameters and a 10 ms backprop it is no small share;
  ``ratio_beyond_arithmetic = (update_ms - arithmetic_ms) / (L * backprop_ms)``;
* ``floor_ratio``: the ratio that memory traffic alone allows. Per backprop
  the optimizer must read and write whole parameter-sized float32 arrays
  (``min_passes_per_backprop``, counted in :func:`min_passes`); one such pass
  costs ``pass_ms``, half a jitted ``params + 1`` (one read, one write), so
  ``floor_ratio = 1 + min_passes_per_backprop * pass_ms / backprop_ms``. It
  assumes every pass fully fused and the backprop's own reads still cached,
  and leaves out the noise's arithmetic: a lower bound;
* ``compile_s``: the first call of the update (tracing and compiling);
* where PyTorch is installed (``pip install -e ".[bench]"``), ``torch_ms``:
  the same update written in PyTorch the way the authors' code
  (``hamilton-jacobi/code/optim.py``) runs it, as its own code here: the
  parameters flattened into one vector, a gradient at x before the inner
  loop and a forward/backward at the new x for logging, i.e. L + 2 backprops (L the inner loop
  length; 2 for SGD, L + 2 = 7 for the fixed point of 6 backprops); and
  ``torch_backprop_ms``, one bare forward/backward. ``speedup = torch_ms /
  update_ms``. Without torch those rows are skipped, and the output says so.

Medians over rounds that interleave the variants, so that drift on a shared
machine hits them alike. Writes benchmarks/records/step_overhead.json.

Run: taskset -c 1 python benchmarks/step_overhead.py [--rounds 7] [--out benchmarks/records/step_overhead.json]
(the record: one core, as train.py's runs are pinned one per core; PyTorch
then takes one thread too).
Two more records compare the code before and after a change (without
PyTorch, 5 rounds, one after the other on core 1 of a quiet machine):
benchmarks/records/step_overhead_issue37_before.json (commit 6671f27) and
benchmarks/records/step_overhead_issue37_after.json (the same flags, ``--out``
each). The seven optimizers experiments/which_optimizer compares, AdamW, SAM
and SWA (no PyTorch rows: the authors' code has none of them) among them:
``--models lenet mnistfc --optimizers sgd adamw sam swa entropy-sgd
hj-fixed-point heat-uniform --out benchmarks/records/step_overhead_which_optimizer.json``.
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
import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import input_pipeline  # noqa: E402
import models  # noqa: E402
import training  # noqa: E402
from overhead import machine  # noqa: E402
from training import config as config_lib, loop, optimizers  # noqa: E402

MODELS = ("mnistfc", "lenet")
TARGET_SECONDS = 0.5  # time per measurement, so short calls are repeated


def min_passes(settings, backprops):
  """Parameter-sized arrays an update must read or write, per backprop.

  The outer step (Nesterov SGD, optax.sgd with momentum) reads the
  parameters, the incoming update and the momentum and writes the parameters
  and the momentum: 5, once per update. Inside the loop, per backprop, at
  least: Entropy-SGD and heat-uniform read y, the gradient, x and the average
  (or sum) and write y and the average (6); HJ (no average) reads y, the
  gradient and x and writes y (4); an inner momentum buffer adds a read and a
  write (2); the fixed point reads x and p and writes the look-ahead point,
  then reads p, the gradient and the point and writes p (7, not for the
  gradient at x); HEAT reads the running sum and the gradient and writes the
  sum, and reads x and writes the next perturbed point (5). SAM reads the
  gradient for its norm, then reads x and the gradient and writes the ascent
  point (4 per update of 2 backprops). AdamW's step reads the parameters, the
  gradient and both moments and writes the parameters and the moments (7,
  not 5); SWA's adds to SGD's the running average, read and written with the
  new point (3: 8 in all).
  """
  momentum = 2 if getattr(settings, "inner_momentum", 0) else 0
  inner = {"sgd": 0, "adamw": 0, "swa": 0, "sam": 4 / backprops,
           "entropy-sgd": 6 + momentum, "heat-uniform": 6 + momentum,
           "hj": 4 + momentum, "heat": 5,
           "hj-fixed-point": 7 * (backprops - 1) / backprops}[settings.name]
  outer = {"adamw": 7, "swa": 8}.get(settings.name, 5)
  return inner + outer / backprops


def timed(fn, calls):
  """Seconds per call of ``fn()`` (which returns something to block on)."""
  start = time.perf_counter()
  for _ in range(calls):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / calls


def calls_for(seconds):
  return max(2, int(TARGET_SECONDS / seconds))


class JaxUpdate:
  """train.py's compiled update and a bare backprop of the same network."""

  def __init__(self, model, optimizer, dataset, scaling):
    self.config = training.build_config(model=model, optimizer=optimizer, devices=1)
    self.program = loop.build_program(self.config, dataset, scaling)
    self.state = self.program.parallel.put(self.program.state)
    start = time.perf_counter()
    self.state, out = self.program.train_step(self.state, self.program.data)
    jax.block_until_ready(out)
    self.compile_s = time.perf_counter() - start

    net = models.create(model)
    x = scaling(dataset.train_images[:self.config.batch_size])
    y = dataset.train_labels[:self.config.batch_size].astype(np.int32)
    variables = {"params": self.program.state.params,
                 "batch_stats": self.program.state.batch_stats}

    def loss(params, key, x, y):
      logits, _ = net.apply({**variables, "params": params}, x, train=True,
                            rngs={"dropout": key}, mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    grad = jax.jit(jax.grad(loss))
    key = jax.random.PRNGKey(0)
    self.arithmetic = self.make_arithmetic(grad(variables["params"], key, x, y),
                                           dataset.train_images.shape[0])
    # Arguments, not constants: XLA would fold the constant input's share of the work.
    x, y = jax.device_put(x), jax.device_put(y)
    self.backprop = lambda: grad(variables["params"], key, x, y)
    jax.block_until_ready(self.backprop())
    # One read and one write of every parameter: two passes.
    sweep = jax.jit(lambda tree: jax.tree.map(lambda a: a + 1.0, tree))
    self.sweep = lambda: sweep(variables["params"])
    jax.block_until_ready(self.sweep())

  def update(self):
    self.state, out = self.program.train_step(self.state, self.program.data)
    return out

  def make_arithmetic(self, grads, num_train):
    """The update with each backprop replaced by ``grads`` (no network)."""
    config, params = self.config, self.program.state.params
    tx = optimizers.make_optimizer(config, config.updates_per_epoch(num_train),
                                   jax.random.PRNGKey(0), axis_name=None)
    grad_fn = lambda point, i: jax.tree.map(lambda g, p: g + 1e-30 * p, grads, point)

    @jax.jit
    def update(params, opt_state):
      updates, opt_state = tx.update(grad_fn(params, 0), opt_state, params, grad_fn=grad_fn)
      return optax.apply_updates(params, updates), opt_state

    state = [params, tx.init(params)]

    def run():
      state[:] = update(*state)
      return state[0]

    jax.block_until_ready(run())
    return run


# The optimizers the authors' code has; AdamW, SAM and SWA get no PyTorch row.
AUTHORS = ("sgd", "entropy-sgd", "heat-uniform", "hj", "hj-fixed-point", "heat")


class TorchUpdate:
  """The update as the authors' PyTorch code runs it (our own code, same structure)."""

  def __init__(self, model, optimizer, dataset, scaling, config):
    import torch
    import torch.nn.functional as F

    self.torch, self.F = torch, F
    torch.manual_seed(0)
    self.net = torch_network(torch, model).train()
    self.params = [p for p in self.net.parameters()]
    images = np.asarray(scaling(dataset.train_images))
    if model == "lenet":
      images = images.reshape(-1, 1, 28, 28)
    self.x = torch.from_numpy(np.ascontiguousarray(images, np.float32))
    self.y = torch.from_numpy(dataset.train_labels.astype(np.int64))
    self.batch = config.batch_size
    self.settings = config.optimizer
    # Backprops of the inner loop (the fixed point's first is the gradient at x).
    self.inner = getattr(config.optimizer, "inner_steps", getattr(config.optimizer, "samples", 0))
    self.optimizer = optimizer
    self.wd, self.lr, self.mom = config.weight_decay, config.lr, config.momentum
    flat = self.flat()
    self.outer_buf = torch.zeros_like(flat)
    self.inner_buf = torch.zeros_like(flat)
    self.generator = torch.Generator().manual_seed(0)

  def flat(self):
    return self.torch.nn.utils.parameters_to_vector(self.params).detach().clone()

  def set(self, vector):
    self.torch.nn.utils.vector_to_parameters(vector, self.params)

  def grad(self):
    """One backprop on a fresh minibatch at the network's current parameters."""
    torch = self.torch
    rows = torch.randint(0, self.x.shape[0], (self.batch,), generator=self.generator)
    self.net.zero_grad()
    self.F.cross_entropy(self.net(self.x[rows]), self.y[rows]).backward()
    return torch.cat([p.grad.reshape(-1) for p in self.params])

  def backprop(self):
    return self.grad()

  def update(self):
    torch = self.torch
    with torch.no_grad():
      x = self.flat()
    dx = self.grad()  # the gradient at x the authors' step starts with
    with torch.no_grad():
      if self.optimizer in ("entropy-sgd", "hj", "heat-uniform"):
        s = self.settings
        noise = getattr(s, "noise", 0.0)
        y, mu = x.clone(), x.clone()
        alpha = getattr(s, "alpha", 0.0)
        for _ in range(self.inner):
          self.set(y)
          with torch.enable_grad():
            g = self.grad()
          d = g + self.wd * y + s.gamma * (y - x)
          if noise:
            d += noise / np.sqrt(0.5 * s.inner_lr) * torch.randn(y.shape, generator=self.generator)
          self.inner_buf.mul_(self.mom).add_(d)
          d = d + self.mom * self.inner_buf
          y -= s.inner_lr * d
          if self.optimizer == "heat-uniform":
            mu.add_(y)  # the sum x + y_1 + ...
          else:
            mu.mul_(alpha).add_((1 - alpha) * y)
        if self.optimizer == "heat-uniform":
          mu /= self.inner + 1
        dx = x - mu
      elif self.optimizer == "hj-fixed-point":
        s, p = self.settings, dx + self.wd * x
        for _ in range(self.inner):
          w = x - p / s.gamma
          self.set(w)
          with torch.enable_grad():
            g = self.grad()
          p = s.damping * p + (1 - s.damping) * (g + self.wd * w)
        dx = p
      elif self.optimizer == "heat":
        s, total = self.settings, torch.zeros_like(x)
        for _ in range(self.inner):
          self.set(x + s.sigma * torch.randn(x.shape, generator=self.generator))
          with torch.enable_grad():
            total += self.grad()
        dx = total / self.inner
      self.outer_buf.mul_(self.mom).add_(dx)
      x -= self.lr * (dx + self.mom * self.outer_buf)
      self.set(x)
    return self.grad()  # the forward/backward at the new x, for logging


def torch_network(torch, model):
  nn = torch.nn
  if model == "mnistfc":
    layers = [nn.Flatten(), nn.Dropout(0.2)]
    for width_in in (784, 1024):
      layers += [nn.Linear(width_in, 1024), nn.BatchNorm1d(1024), nn.ReLU(), nn.Dropout(0.2)]
    return nn.Sequential(*layers, nn.Linear(1024, 10))
  return nn.Sequential(
      nn.Conv2d(1, 20, 5), nn.ReLU(), nn.MaxPool2d(3, 3), nn.BatchNorm2d(20), nn.Dropout(0.25),
      nn.Conv2d(20, 50, 5), nn.ReLU(), nn.MaxPool2d(2, 2), nn.BatchNorm2d(50), nn.Dropout(0.25),
      nn.Flatten(), nn.Linear(200, 500), nn.ReLU(), nn.Dropout(0.25), nn.Linear(500, 10))


def measure(model, optimizer, dataset, scaling, rounds, use_torch):
  ours = JaxUpdate(model, optimizer, dataset, scaling)
  theirs = (TorchUpdate(model, optimizer, dataset, scaling, ours.config)
            if use_torch and optimizer in AUTHORS else None)
  variants = {"update": ours.update, "backprop": ours.backprop, "arithmetic": ours.arithmetic,
              "sweep": ours.sweep}
  if theirs:
    variants |= {"torch": theirs.update, "torch_backprop": theirs.backprop}
  calls = {name: calls_for(timed(fn, 1)) for name, fn in variants.items()}
  times = {name: [] for name in variants}
  for _ in range(rounds):
    for name, fn in variants.items():
      times[name].append(timed(fn, calls[name]))
  ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
  backprops = ours.config.backprops_per_update
  passes = min_passes(ours.config.optimizer, backprops)
  row = {
      "model": model, "optimizer": optimizer, "backprops_per_update": backprops,
      "update_ms": round(ms["update"], 2), "backprop_ms": round(ms["backprop"], 2),
      "ratio": round(ms["update"] / (backprops * ms["backprop"]), 3),
      "arithmetic_ms": round(ms["arithmetic"], 2),
      "ratio_beyond_arithmetic": round(
          (ms["update"] - ms["arithmetic"]) / (backprops * ms["backprop"]), 3),
      "pass_ms": round(ms["sweep"] / 2, 3),
      "min_passes_per_backprop": round(passes, 2),
      "floor_ratio": round(1 + passes * ms["sweep"] / 2 / ms["backprop"], 3),
      "compile_s": round(ours.compile_s, 1), "unroll": ours.config.run.unroll,
  }
  if theirs:
    row |= {
        "torch_backprops_per_update": theirs.inner + 2,
        "torch_ms": round(ms["torch"], 2), "torch_backprop_ms": round(ms["torch_backprop"], 2),
        "speedup": round(ms["torch"] / ms["update"], 2),
        "backprop_speedup": round(ms["torch_backprop"] / ms["backprop"], 2),
    }
  return row


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
  # One device: the replicated optimizers (elastic-sgd, parle) are another
  # program, experiments/parle_vs_entropy_sgd/parle_vs_entropy_sgd.py's.
  single = [o for o, cls in config_lib.OPTIMIZERS.items() if not cls.replicated]
  parser.add_argument("--optimizers", nargs="+", default=single, choices=single)
  parser.add_argument("--out", default="benchmarks/records/step_overhead.json")
  args = parser.parse_args()
  try:
    import torch
    torch_version, torch_threads = torch.__version__, torch.get_num_threads()
  except ImportError:
    torch_version = torch_threads = None
    print("PyTorch is not installed (pip install -e '.[bench]'): its rows are skipped",
          file=sys.stderr)
  rows = []
  for model in args.models:
    config = training.build_config(model=model, devices=1)
    dataset, scaling = input_pipeline.load(config.run.data_dir, config.input_scaling)
    for optimizer in args.optimizers:
      rows.append(measure(model, optimizer, dataset, scaling, args.rounds, torch_version))
      print(json.dumps(rows[-1]), flush=True)
  result = {
      "date": datetime.date.today().isoformat(), "machine": machine(),
      "torch": torch_version, "torch_threads": torch_threads,
      "rounds": args.rounds, "batch_size": 128, "cases": rows,
  }
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=2)


if __name__ == "__main__":
  main()
