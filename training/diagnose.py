"""The width of a finished run's minimum: ``entropix.diagnostics`` on its checkpoint.

``train.py --workdir W --diagnose`` (or :func:`diagnose`) reads W's config
and newest checkpoint and measures, at those parameters, the training loss
of the network as it is evaluated (BatchNorm's re-estimated statistics,
dropout off) over a fixed subset of the training set: the first
``images`` training images, in minibatches of ``batch``. It writes
``W/diagnostics.json``: the Hessian's top eigenvalues, its trace and the
harmonic mean of its diagonal (one set of Rademacher probes serves both),
its spectral density, the local entropy over a range of gamma, the
perturbation-sharpness curves (absolute, and relative to each parameter's
size, which a rescaling of the weights that leaves the network's function
alone does not change) and each parameter array's norm, each with the
settings that produced it.
"""

import argparse
import dataclasses
import json
import pathlib
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import input_pipeline
import models
from entropix import diagnostics
from training.checkpoints import Checkpointer
from training.config import Config, ConfigError, build_config
from training.metrics import write_atomic


@dataclasses.dataclass(frozen=True)
class Settings:
  """What :func:`diagnose` measures, and how hard it tries."""

  images: int = 10_000  # the first training images: a fixed subset
  batch: int = 1000  # images per minibatch of the Hessian-vector products
  top_k: int = 10
  lanczos_steps: int | None = None  # for the top eigenvalues; None: max(4 k, k + 60)
  probes: int = 32  # Rademacher probes for the trace and the diagonal
  density_probes: int = 2
  density_steps: int = 60  # Lanczos steps per density probe
  gammas: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
  noise: float = 1e-4  # Entropy-SGD's: the local entropy's temperature is noise ** 2
  chain_steps: int = 600
  sigmas: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2)
  relative_sigmas: tuple[float, ...] = (1e-2, 3e-2, 1e-1, 3e-1)  # times each parameter's size
  perturbations: int = 8
  layer_lanczos_steps: int = 20  # per layer, for its block's top eigenvalue (its trace: probes)
  seed: int = 0


# What measure() can measure, in its order; local_entropy's chain step needs the top eigenvalue.
PARTS = ("top_eigenvalues", "trace_and_diagonal", "spectral_density", "local_entropy",
         "perturbation_sharpness", "relative_sharpness", "layers", "parameter_norms")


def missing(record: dict[str, Any]) -> tuple[str, ...]:
  """The parts a record of :func:`diagnose` lacks (measured before they were added)."""
  key = {"trace_and_diagonal": "diagonal"}  # every other part writes its own name
  return tuple(p for p in PARTS if key.get(p, p) not in record)


class Network(NamedTuple):
  """A finished run's network, as its diagnostics see it."""

  loss_fn: Any  # loss_fn(params, batch): the evaluated network's cross-entropy
  params: Any
  batches: Any  # the first ``images`` training images, stacked in minibatches
  about: dict[str, Any]  # model, optimizer, seed, step, images, batch, loss
  batch_stats: Any  # BatchNorm's running statistics, fixed inside loss_fn


def network_loss(workdir: pathlib.Path, settings: Settings) -> Network:
  """The network of the run in ``workdir``, at its newest checkpoint."""
  config_file = workdir / "config.json"
  if not config_file.is_file():
    raise ConfigError(f"--diagnose: {workdir} holds no config.json (not a train.py workdir)")
  config = build_config(**json.loads(config_file.read_text()))
  if config.optimizer.replicated:
    raise ConfigError(f"--diagnose: {workdir} trained {config.optimizer.name} replicas; "
                      "only single-network runs are diagnosed")
  dataset, scaling = input_pipeline.load(config.run.data_dir, config.input_scaling,
                                         config.validation_split)
  checkpointer = Checkpointer(workdir)
  step = checkpointer.latest()
  if step is None:
    raise ConfigError(f"--diagnose: {workdir} holds no checkpoint")
  # The structure a checkpoint restores into: the run's own initial state.
  from training.loop import build_program  # noqa: PLC0415: the trainer's, only here

  like = build_program(dataset=dataset, scaling=scaling, config=dataclasses.replace(
      config, run=dataclasses.replace(config.run, devices=1))).state
  state = checkpointer.restore(step, like)
  checkpointer.close()
  return evaluated_network(config, dataset, scaling, state, int(step), settings.images,
                           settings.batch)


def evaluated_network(config: Config, dataset: input_pipeline.Dataset,
                      scaling: input_pipeline.Scaling, state: Any, step: int, images: int,
                      batch: int) -> Network:
  """The network a run's evaluation measured, from its host ``state`` after
  update ``step``: the evaluated parameters (SWA's: its average), BatchNorm's
  statistics as the state holds them (re-estimated by the evaluation),
  dropout off, on the first ``images`` training images in minibatches of
  ``batch``."""
  n = min(images, dataset.train_images.shape[0]) // batch * batch
  if n == 0:
    raise ConfigError(f"--diagnose: {images} images make no minibatch of {batch}")
  model = models.create(config.model, param_init=config.param_init,
                        num_classes=dataset.num_classes)
  stats = state.batch_stats

  def loss_fn(params, batch):
    logits = model.apply({"params": params, "batch_stats": stats}, scaling(batch["x"]),
                         train=False)
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

  shape = (n // batch, batch)
  x = dataset.train_images[:n]
  batches = {"x": jnp.asarray(x.reshape(*shape, *x.shape[1:])),
             "y": jnp.asarray(dataset.train_labels[:n].reshape(shape).astype(np.int32))}
  about = {"model": config.model, "optimizer": config.optimizer.name, "seed": config.seed,
           "step": step, "images": n, "batch": batch,
           "loss": "cross-entropy of the evaluated network (re-estimated BatchNorm "
                   "statistics, dropout off) on the first training images"}
  params = config.optimizer.evaluated_params(state.params, state.opt_state)
  return Network(loss_fn, params, batches, about, stats)


def sharpness(network: Network, key: jax.Array, lanczos_steps: int,
              probes: int) -> dict[str, Any]:
  """The top Hessian eigenvalue and Hutchinson's trace of ``network``: the
  cheap measurement of ``train.py --sharpness-every``, with its images and
  its seconds."""
  start = time.perf_counter()
  size = sum(np.size(p) for p in jax.tree.leaves(network.params))
  top = diagnostics.hessian_eigenvalues(
      network.loss_fn, network.params, network.batches, 1, key=jax.random.fold_in(key, 0),
      num_iterations=min(lanczos_steps, size), progress=False)
  trace = diagnostics.hessian_trace(network.loss_fn, network.params, network.batches,
                                    key=jax.random.fold_in(key, 1), samples=probes,
                                    progress=False)
  return {"top_eigenvalue": float(top[0]), "trace": trace.value, "trace_stderr": trace.stderr,
          "images": network.about["images"], "seconds": round(time.perf_counter() - start, 2)}


def _trace_and_diagonal(diagonal: Any) -> dict[str, Any]:
  """The trace (the diagonal's sum; its probes' spread gives its error) and
  the diagonal's summaries, from ``diagnostics.hessian_diagonal``."""
  flat = np.concatenate([np.ravel(v) for v in jax.tree.leaves(diagonal.value)])
  flat_err = np.concatenate([np.ravel(v) for v in jax.tree.leaves(diagonal.stderr)])
  harmonic, positive = diagnostics.harmonic_mean(diagonal.value)
  return {"trace": {"value": float(flat.sum()), "stderr": float(np.sqrt(np.sum(flat_err**2)))},
          "diagonal": {"harmonic_mean_positive": harmonic, "positive": positive,
                       "entries": int(flat.size), "arithmetic_mean": float(flat.mean()),
                       "significantly_positive": int(np.sum(flat > 2 * flat_err))}}


def _layers(loss_fn: Any, params: Any, batches: Any, settings: Settings,
            key: jax.Array) -> dict[str, Any]:
  """Per layer (each top-level entry of ``params``, a Flax module's): the top
  eigenvalue and trace of the Hessian's diagonal block of its parameters,
  the others held fixed."""
  out = {}
  for i, name in enumerate(params):
    mask = lambda p, name=name: jax.tree_util.tree_map_with_path(
        lambda path, _: path[0].key == name, p)
    size = sum(np.size(p) for p in jax.tree.leaves(params[name]))
    top = diagnostics.hessian_eigenvalues(
        loss_fn, params, batches, 1, key=jax.random.fold_in(key, 2 * i), mask=mask,
        num_iterations=min(settings.layer_lanczos_steps, size), progress=False)
    trace = diagnostics.hessian_trace(loss_fn, params, batches, mask=mask, progress=False,
                                      key=jax.random.fold_in(key, 2 * i + 1),
                                      samples=settings.probes)
    out[name] = {"parameters": int(size), "top_eigenvalue": float(top[0]),
                 "trace": trace.value, "trace_stderr": trace.stderr}
  return out


def _check_parts(parts: tuple[str, ...]) -> None:
  unknown = sorted(set(parts) - set(PARTS))
  if unknown:
    raise ValueError(f"unknown diagnostics {unknown}; known: {', '.join(PARTS)}")
  if "local_entropy" in parts and "top_eigenvalues" not in parts:
    raise ValueError("local_entropy needs top_eigenvalues (its chain's step)")


def measure(loss_fn: Any, params: Any, batches: Any, settings: Settings,
            parts: tuple[str, ...] = PARTS) -> dict[str, Any]:
  """The diagnostics of ``entropix.diagnostics`` named in ``parts`` at ``params``, as JSON values.

  Each part draws its own key from ``settings.seed``, so a part measured
  alone gives what it gives among the others.
  """
  _check_parts(parts)
  key = jax.random.key(settings.seed)
  timings, clock, out = {}, [time.perf_counter()], {}

  def lap(name):
    timings[name], clock[0] = round(time.perf_counter() - clock[0], 1), time.perf_counter()

  out["loss"] = float(diagnostics._mean_over(batches, lambda b: loss_fn(params, b),
                                             jnp.zeros(())))
  if "top_eigenvalues" in parts:
    top = diagnostics.hessian_eigenvalues(loss_fn, params, batches, settings.top_k,
                                          key=jax.random.fold_in(key, 0),
                                          num_iterations=settings.lanczos_steps)
    out["top_eigenvalues"] = top.tolist()
    lap("top_eigenvalues")
  if "trace_and_diagonal" in parts:
    diagonal = diagnostics.hessian_diagonal(loss_fn, params, batches,
                                            key=jax.random.fold_in(key, 1),
                                            samples=settings.probes)
    out.update(_trace_and_diagonal(diagonal))
    lap("trace_and_diagonal")
  if "spectral_density" in parts:
    density = diagnostics.spectral_density(
        loss_fn, params, batches, key=jax.random.fold_in(key, 2),
        num_iterations=settings.density_steps, probes=settings.density_probes)
    out["spectral_density"] = {name: getattr(density, name).tolist()
                               for name in ("grid", "density", "nodes", "weights")}
    lap("spectral_density")
  if "local_entropy" in parts:
    inner_lr = 0.5 / (max(top[0], 0.0) + max(settings.gammas))  # well inside stability
    entropy = diagnostics.local_entropy_estimate(
        loss_fn, params, batches, settings.gammas, noise=settings.noise, inner_lr=inner_lr,
        key=jax.random.fold_in(key, 3), steps=settings.chain_steps,
        burn_in=settings.chain_steps // 4)
    out["local_entropy"] = {
        **{name: getattr(entropy, name).tolist()
           for name in ("gammas", "values", "stderr", "mean_sq_distance")},
        "noise": settings.noise, "inner_lr": inner_lr}
    lap("local_entropy")
  for part, sigmas, relative, fold in (
      ("perturbation_sharpness", settings.sigmas, False, 4),
      ("relative_sharpness", settings.relative_sigmas, True, 5)):
    if part in parts:
      sharp = diagnostics.perturbation_sharpness(
          loss_fn, params, batches, sigmas, key=jax.random.fold_in(key, fold),
          samples=settings.perturbations, relative=relative)
      out[part] = {"sigmas": list(sigmas), "increase": sharp.value.tolist(),
                   "stderr": sharp.stderr.tolist()}
      lap(part)
  if "layers" in parts:
    out["layers"] = _layers(loss_fn, params, batches, settings, jax.random.fold_in(key, 6))
    lap("layers")
  if "parameter_norms" in parts:
    out["parameter_norms"] = {jax.tree_util.keystr(path): float(jnp.linalg.norm(leaf))
                              for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
  out["wall_s"] = timings
  return out


def diagnose(workdir: str | pathlib.Path, settings: Settings = Settings(),
             parts: tuple[str, ...] = PARTS) -> dict[str, Any]:
  """Measures the run in ``workdir`` and writes ``workdir/diagnostics.json``.

  With ``parts`` a subset of :data:`PARTS`, only those are measured and
  added to the ``diagnostics.json`` already there (the same checkpoint, and
  the same settings for what it holds): a record extended by a diagnostic
  added later, without measuring the rest again.

  Raises:
    ConfigError: no train.py workdir, no checkpoint, or a replicated run;
      with a subset of parts, no earlier record of the same checkpoint and
      settings.
  """
  workdir = pathlib.Path(workdir)
  loss_fn, params, batches, about, _ = network_loss(workdir, settings)
  settings_json = json.loads(json.dumps(dataclasses.asdict(settings)))  # tuples as lists
  record = {}
  if set(parts) != set(PARTS):
    record = _earlier(workdir / "diagnostics.json", about, settings_json)
  measured = measure(loss_fn, params, batches, settings, parts)
  wall_s = {**record.get("wall_s", {}), **measured.pop("wall_s")}
  record = {**record, **about, "settings": settings_json, **measured, "wall_s": wall_s}
  write_atomic(workdir / "diagnostics.json", json.dumps(record, indent=1) + "\n")
  return record


def _earlier(path: pathlib.Path, about: dict, settings: dict) -> dict[str, Any]:
  """The record at ``path``, if it measured the same checkpoint with the same settings."""
  if not path.is_file():
    raise ConfigError(f"--diagnose: {path} does not exist: nothing to add diagnostics to")
  record = json.loads(path.read_text())
  if record.get("step") != about["step"]:
    raise ConfigError(f"--diagnose: {path} measured step {record.get('step')}, "
                      f"the newest checkpoint is step {about['step']}")
  differ = sorted(k for k, v in record.get("settings", {}).items() if settings.get(k, v) != v)
  if differ:
    raise ConfigError(f"--diagnose: {path} was measured with other settings ({', '.join(differ)})")
  return record


def command(parser: argparse.ArgumentParser, workdir: str | None) -> int:
  """``train.py --workdir W --diagnose``: measures W, prints the main figures as JSON."""
  if workdir is None:
    parser.error("--diagnose needs --workdir (the finished run to measure)")
  try:
    record = diagnose(workdir)
  except (ConfigError, input_pipeline.DataError) as e:
    parser.error(str(e))
  keys = ("model", "optimizer", "seed", "step", "top_eigenvalues", "trace", "diagonal")
  print(json.dumps({k: record[k] for k in keys}), flush=True)
  return 0
