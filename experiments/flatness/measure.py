"""Measures the minima that train_runs.py reached: train.py --diagnose on each.

For every finished run of ``runs.json``: ``python train.py --workdir W
--diagnose`` (``training.diagnose``: the Hessian's top-10 eigenvalues,
trace, diagonal and spectral density, the local entropy over gamma and the
perturbation-sharpness curves, absolute and relative to each parameter's
size, for the training loss of the evaluated network over the first 10,000
training images), each pinned to a core, two at a time; its
``diagnostics.json`` goes into ``diagnostics.json`` here, under the run's
name, as soon as it lands, and a measured run is skipped when the script
runs again. A record that lacks a diagnostic added to ``training.diagnose``
after it was measured gets just that one (``diagnose(parts=...)``), here,
one run at a time.
Then ``flatness.md`` (one row per run) and, with matplotlib, one figure per
network (``flatness_mnistfc.png``, ``flatness_lenet.png``: the spectral
densities overlaid, the local entropy and the two sharpness curves) are
drawn from those records.

Run: python experiments/flatness/measure.py [--jobs 2] [--tables]
"""

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "experiments"))
import _jobs  # noqa: E402

RECORDS = HERE / "diagnostics.json"
ORDER = ["sgd", "entropy-sgd", "heat-uniform", "hj-fixed-point"]
FIGURES = {"mnistfc": "flatness_mnistfc.png", "lenet": "flatness_lenet.png"}
RELATIVE_SIGMA = 0.1  # the table's relative perturbation: 10% of each parameter


def load() -> dict:
  return json.loads(RECORDS.read_text()) if RECORDS.exists() else {}


def _land(records: dict, name: str, workdir: str) -> None:
  records[name] = json.loads((ROOT / workdir / "diagnostics.json").read_text())
  RECORDS.write_text(json.dumps(dict(sorted(records.items())), indent=1) + "\n")
  print(f"{name}: measured", flush=True)


def measure(runs: dict, cores: list[int]) -> None:
  records = load()
  todo = [(name, r["workdir"]) for name, r in runs.items()
          if r["summary"] and name not in records]
  for name, workdir in list(todo):
    done = ROOT / workdir / "diagnostics.json"
    # Measured already (train.py --diagnose by hand), at the run's final step.
    if done.exists() and json.loads(done.read_text())["step"] == runs[name]["summary"]["updates"]:
      _land(records, name, workdir)
      todo.remove((name, workdir))

  def on_end(name: str, ended: _jobs.Ended) -> None:
    workdir = runs[name]["workdir"]
    (ROOT / workdir / "diagnose.log").write_text(ended.stderr)  # its progress lines
    if ended.returncode:
      sys.exit(f"{name}: train.py --diagnose failed:\n{ended.stderr[-2000:]}")
    _land(records, name, workdir)

  _jobs.run_commands(
      [(name, [sys.executable, str(ROOT / "train.py"), "--workdir", str(ROOT / workdir),
               "--diagnose"]) for name, workdir in todo], cores, on_end)


def top_up(runs: dict) -> None:
  """Measures, in this process, the parts of ``training.diagnose.PARTS`` a record lacks."""
  sys.path.insert(0, str(ROOT))
  from training import diagnose  # noqa: PLC0415: jax, not needed by --tables

  records = load()
  for name, record in list(records.items()):
    missing = diagnose.missing(record)
    if missing:
      print(f"{name}: measuring {', '.join(missing)}", flush=True)
      diagnose.diagnose(ROOT / runs[name]["workdir"], parts=missing)
      _land(records, name, runs[name]["workdir"])


def rows(runs: dict) -> list[dict]:
  """One row per measured run, in the table's order."""
  out = []
  for name, d in load().items():
    run = runs[name]["summary"]
    sharp = d["perturbation_sharpness"]
    entropy = d["local_entropy"]
    out.append({
        "model": d["model"], "optimizer": d["optimizer"], "seed": d["seed"],
        "val_error": run["val_error"], "loss": d["loss"], "top": d["top_eigenvalues"][0],
        "tenth": d["top_eigenvalues"][-1], "trace": d["trace"]["value"],
        "trace_se": d["trace"]["stderr"], "harmonic": d["diagonal"]["harmonic_mean_positive"],
        "positive": d["diagonal"]["positive"], "entries": d["diagonal"]["entries"],
        "sharp": dict(zip(sharp["sigmas"], sharp["increase"])),
        "relative": dict(zip(d["relative_sharpness"]["sigmas"],
                             d["relative_sharpness"]["increase"])),
        "entropy_gap": entropy["values"][0] - d["loss"], "gamma0": entropy["gammas"][0]})
  return sorted(out, key=lambda r: (r["model"] != "mnistfc", ORDER.index(r["optimizer"]),
                                    r["seed"]))


def table(rows: list[dict]) -> str:
  sigma = max(rows[0]["sharp"]) if rows else None
  head = ("| model | optimizer | seed | test error (%) | training loss | top eigenvalue | "
          "10th | trace (± s.e.) | harmonic mean of the diagonal (positive entries) | "
          f"f_gamma - f at gamma = {rows[0]['gamma0'] if rows else ''} | "
          f"loss increase at sigma = {sigma} | "
          f"at sigma = {RELATIVE_SIGMA} times each parameter |\n|" + "---|" * 12)
  lines = [head]
  for r in rows:
    lines.append(
        f"| {r['model']} | {r['optimizer']} | {r['seed']} | {r['val_error']:.2f} | "
        f"{r['loss']:.3g} | {r['top']:.4g} | {r['tenth']:.4g} | {r['trace']:.4g} ± "
        f"{r['trace_se']:.2g} | {r['harmonic']:.3g} ({r['positive']:,} of {r['entries']:,}) | "
        f"{r['entropy_gap']:.3g} | {r['sharp'][sigma]:.4g} | {r['relative'][RELATIVE_SIGMA]:.4g} |")
  return "\n".join(lines) + "\n"


def figures(runs: dict) -> None:
  import matplotlib  # noqa: PLC0415: the [plots] extra, only for the figures

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  records = load()
  for model in sorted({d["model"] for d in records.values()}):
    fig, axes = plt.subplots(1, 4, figsize=(20, 4))
    for name, d in records.items():
      if d["model"] != model:
        continue
      label = f"{d['optimizer']} seed {d['seed']}"
      # One colour per optimizer, one line style per seed.
      style = {"color": f"C{ORDER.index(d['optimizer'])}", "linestyle": "-:"[d["seed"] % 2]}
      # The quadrature's nodes and weights, pooled over probes, as the
      # spectrum's distribution function: one axis fits spectra whose
      # ranges differ by orders of magnitude.
      density = d["spectral_density"]
      nodes = [x for row in density["nodes"] for x in row]
      weights = [w / len(density["nodes"]) for row in density["weights"] for w in row]
      order = sorted(range(len(nodes)), key=nodes.__getitem__)
      cumulative = [sum(weights[j] for j in order[:i + 1]) for i in range(len(order))]
      axes[0].step([nodes[j] for j in order], cumulative, where="post", label=label, **style)
      entropy = d["local_entropy"]
      axes[1].semilogx(entropy["gammas"], [v - d["loss"] for v in entropy["values"]], "o",
                       label=label, **style)
      sharp = d["perturbation_sharpness"]
      axes[2].loglog(sharp["sigmas"], sharp["increase"], "o", label=label, **style)
      relative = d["relative_sharpness"]
      axes[3].loglog(relative["sigmas"], relative["increase"], "o", label=label, **style)
    axes[0].set(xlabel="Hessian eigenvalue", ylabel="fraction of the spectrum below (SLQ)",
                title=f"{model}: spectrum")
    axes[0].set_xscale("symlog", linthresh=1e-4)
    axes[0].set_xlim(left=-1e-3)
    axes[1].set(xlabel="gamma", ylabel="f_gamma(x) - f(x)", title="local entropy")
    axes[2].set(xlabel="sigma", ylabel="E f(x + sigma xi) - f(x)", title="perturbations")
    axes[3].set(xlabel="sigma", ylabel="E f(x + sigma |x| xi) - f(x)",
                title="perturbations relative to each parameter")
    axes[3].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(HERE / FIGURES[model], dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--jobs", type=int, default=2)
  parser.add_argument("--tables", action="store_true",
                      help="only write flatness.md and the figures from the records")
  args = parser.parse_args(argv)
  runs = json.loads((HERE / "runs.json").read_text())
  if not args.tables:
    measure(runs, _jobs.check_jobs(args.jobs))
    top_up(runs)
  measured = rows(runs)
  (HERE / "flatness.md").write_text(table(measured))
  if measured:
    figures(runs)


if __name__ == "__main__":
  main()
