"""The tables and figures of experiments/which_optimizer from its records.

* ``tuning.md``: per cell (dataset, network, optimizer) every trial's final
  validation error in grid order, the choice marked, from ``tuning.json``;
* ``results.md``, once ``finals.json`` has runs: each optimizer's rank in
  every cell, its mean rank and the cells where it beats SGD by more than
  twice the standard error; per dataset and network the ranking by test
  error (mean +- standard deviation over the seeds) with whether each gap
  exceeds twice its standard error and the difference from SGD, and each optimizer's
  minima (``minima.json``): training loss, top eigenvalue, trace, sharpness
  absolute and relative, with the rank correlation of each measure with the
  test error across optimizers, and per layer the top eigenvalue and trace
  of the Hessian restricted to that layer;
* ``curves.png``: per cell the test error against effective epochs (the
  seeds' mean and range) and, below, seed 0's top Hessian eigenvalue
  measured along the way; ``flatness.png``: the test error against each
  measure of the minima, one point per seed.

Run: python experiments/which_optimizer/report.py
"""

import json
import math
import pathlib
import statistics
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import compare  # noqa: E402


def tuning_table(tuning: dict) -> str:
  """The markdown table of every tuned cell's trials."""
  lines = ["| cell | optimizer | trials: validation error (%), grid order; chosen in bold | "
           "chosen | standard error (%) |", "|---|---|---|---|---|"]
  for dataset, model in compare.CELLS:
    for optimizer in compare.OPTIMIZERS:
      cell = compare.cell_name(dataset, model, optimizer)
      choice = tuning.get("chosen", {}).get(cell)
      if choice is None:
        continue
      trials = []
      for point in compare.points(optimizer):
        trial = tuning["trials"][f"{cell}/{compare.sweeps.point_name(point)}"]
        text = (f"{compare.sweeps.point_name(point)}: "
                + ("diverged" if trial["diverged"] else f"{trial['val_error']:.2f}"))
        trials.append(f"**{text}**" if point == choice["setting"] else text)
      setting = ", ".join(f"{k} {v:g}" for k, v in (choice["setting"] or {}).items())
      lines.append(f"| {dataset} {model} | {optimizer} | {'; '.join(trials)} | "
                   f"{setting or 'none'} | {choice.get('standard_error', '')} |")
  return "\n".join(lines) + "\n"


def _cells(finals: dict) -> dict[tuple[str, str], dict[str, list[dict]]]:
  """(dataset, model) -> optimizer -> its finished seeds' records, in CELLS' order."""
  out = {}
  for dataset, model in compare.CELLS:
    for optimizer in compare.OPTIMIZERS:
      runs = [r for r in finals.values() if (r["dataset"], r["model"], r["optimizer"]) ==
              (dataset, model, optimizer) and not r["diverged"]]
      if runs:
        out.setdefault((dataset, model), {})[optimizer] = sorted(runs, key=lambda r: r["seed"])
  return out


def _mean_std(values: list[float]) -> tuple[float, float]:
  return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


# What every optimizer is compared with.
BASELINE = "sgd"


def _se(a: dict, b: dict) -> float:
  """The standard error of the difference of two rows' means."""
  return math.sqrt(a["std"] ** 2 / a["seeds"] + b["std"] ** 2 / b["seeds"])


def ranking(finals: dict) -> dict[tuple[str, str], list[dict]]:
  """Per cell the optimizers by mean test error, each with its seeds' spread
  and whether its gap to the next exceeds twice their standard error."""
  out = {}
  for cell, optimizers in _cells(finals).items():
    rows = []
    for optimizer, runs in optimizers.items():
      errors = [r["val_error"] for r in runs]
      mean, std = _mean_std(errors)
      rows.append({"optimizer": optimizer, "mean": mean, "std": std, "seeds": len(errors),
                   "errors": errors})
    rows.sort(key=lambda r: r["mean"])
    for a, b in zip(rows, rows[1:]):
      a["gap_to_next"] = b["mean"] - a["mean"]
      a["gap_resolved"] = a["gap_to_next"] > 2 * _se(a, b)
    sgd = next((r for r in rows if r["optimizer"] == BASELINE), None)
    for r in rows:
      if sgd is not None and r is not sgd:
        r["below_baseline"] = sgd["mean"] - r["mean"]
        r["below_baseline_se"] = _se(r, sgd)
    out[cell] = rows
  return out


# The minima's measures, by name: how each is read off a minima.json record.
MEASURES = {
    "training loss": lambda m: m["loss"],
    "top eigenvalue": lambda m: m["top_eigenvalues"][0],
    "trace": lambda m: m["trace"]["value"],
    "sharpness (sigma 0.01)": lambda m: _at(m["perturbation_sharpness"], 1e-2),
    "relative sharpness (10%)": lambda m: _at(m["relative_sharpness"], 1e-1),
}

# Where each measure's symlog axis turns linear: below its smallest meaningful values.
LINEAR = {"top eigenvalue": 0.1, "trace": 1.0, "sharpness (sigma 0.01)": 1e-4,
          "relative sharpness (10%)": 1e-5}


def _at(curve: dict, sigma: float) -> float:
  return curve["increase"][curve["sigmas"].index(sigma)]


def _spearman(x: list[float], y: list[float]) -> float:
  rank = lambda v: np.argsort(np.argsort(v))
  return float(np.corrcoef(rank(x), rank(y))[0, 1])


def layer_table(measured: dict[str, list[dict]]) -> list[str]:
  """Per optimizer and layer the Hessian restricted to that layer's parameters:
  top eigenvalue / trace, each the mean over the measured seeds."""
  layers = {name: m["parameters"] for ms in measured.values() for m in ms
            for name, m in m.get("layers", {}).items()}
  if not layers:
    return []
  lines = ["", "Per layer (the Hessian restricted to one layer's parameters), top eigenvalue "
           "/ trace, mean over seeds:", "",
           "| optimizer | " + " | ".join(f"{n} ({p:,})" for n, p in layers.items()) + " |",
           "|---|" + "---|" * len(layers)]
  for optimizer, ms in measured.items():
    cells = []
    for name in layers:
      have = [m["layers"][name] for m in ms if name in m.get("layers", {})]
      cells.append(f"{statistics.fmean(h['top_eigenvalue'] for h in have):.3g} / "
                   f"{statistics.fmean(h['trace'] for h in have):.3g}" if have else "")
    lines.append(f"| {optimizer} | " + " | ".join(cells) + " |")
  return lines


def _beats_baseline(row: dict) -> bool:
  return "below_baseline" in row and row["below_baseline"] > 2 * row["below_baseline_se"]


def across_cells(ranked: dict[tuple[str, str], list[dict]]) -> list[str]:
  """Each optimizer's rank in every cell, its mean rank, and in how many cells
  it is below the baseline by more than twice the standard error."""
  names = list(dict.fromkeys(r["optimizer"] for rows in ranked.values() for r in rows))
  rank = {cell: {r["optimizer"]: i for i, r in enumerate(rows, 1)} for cell, rows in ranked.items()}
  wins = {n: sum(r["optimizer"] == n and _beats_baseline(r) for rows in ranked.values()
                 for r in rows) for n in names}
  mean_rank = {n: statistics.fmean(c[n] for c in rank.values() if n in c) for n in names}
  lines = ["## Across cells", "",
           "| optimizer | " + " | ".join(f"rank, {d} {m}" for d, m in ranked)
           + f" | mean rank | cells below {BASELINE} by > 2 standard errors |",
           "|---|" + "---|" * (len(ranked) + 2)]
  for n in sorted(names, key=lambda n: mean_rank[n]):
    lines.append(f"| {n} | " + " | ".join(str(c.get(n, "")) for c in rank.values())
                 + f" | {mean_rank[n]:.2f} | {wins[n]} of {sum(n in c for c in rank.values())} |")
  return lines + [""]


def results_text(finals: dict, minima: dict) -> str:
  """results.md: the ranks across cells, then per cell the ranking, the
  minima and their correlations."""
  lines = ["# Results (generated by report.py from finals.json and minima.json)", ""]
  ranked = ranking(finals)
  if len(ranked) > 1:
    lines += across_cells(ranked)
  for (dataset, model), rows in ranked.items():
    lines += [f"## {dataset}, {model}", "",
              "| rank | optimizer | test error (%), mean +- std | seeds | gap to the next "
              f"(> 2 standard errors?) | below {BASELINE} +- standard error (in standard "
              "errors) |", "|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
      gap = (f"{r['gap_to_next']:.3f} ({'yes' if r['gap_resolved'] else 'no'})"
             if "gap_to_next" in r else "")
      below = (f"{r['below_baseline']:.3f} +- {r['below_baseline_se']:.3f}"
               + (f" ({r['below_baseline'] / r['below_baseline_se']:.1f})"
                  if r["below_baseline_se"] else "") if "below_baseline" in r else "")
      lines.append(f"| {i} | {r['optimizer']} | {r['mean']:.3f} +- {r['std']:.3f} | "
                   f"{r['seeds']} | {gap} | {below} |")
    measured = {r["optimizer"]: [minima[n] for n in finals if n in minima and
                                 (finals[n]["dataset"], finals[n]["model"],
                                  finals[n]["optimizer"]) == (dataset, model, r["optimizer"])]
                for r in rows}
    if any(measured.values()):
      lines += ["", "| optimizer | " + " | ".join(MEASURES) + " |",
                "|---|" + "---|" * len(MEASURES)]
      for r in rows:
        if measured[r["optimizer"]]:
          cells = [_mean_std([f(m) for m in measured[r["optimizer"]]]) for f in MEASURES.values()]
          lines.append(f"| {r['optimizer']} | " + " | ".join(f"{m:.4g} +- {s:.2g}"
                                                            for m, s in cells) + " |")
      have = [r for r in rows if measured[r["optimizer"]]]
      if len(have) >= 3:
        rho = {name: _spearman([statistics.fmean(f(m) for m in measured[r["optimizer"]])
                                for r in have], [r["mean"] for r in have])
               for name, f in MEASURES.items()}
        lines += ["", "Rank correlation with the test error across optimizers (Spearman): "
                  + "; ".join(f"{name} {value:+.2f}" for name, value in rho.items()) + "."]
      lines += layer_table({r["optimizer"]: measured[r["optimizer"]] for r in have})
    lines.append("")
  return "\n".join(lines)


def figures(finals: dict, minima: dict, where: pathlib.Path) -> None:
  """curves.png, along.png and (with minima) flatness.png."""
  cells = _cells(finals)
  colors = dict(zip(compare.OPTIMIZERS, plt.cm.tab10.colors))
  fig, axes = plt.subplots(2, len(cells), figsize=(5 * len(cells), 8), squeeze=False)
  for j, ((dataset, model), optimizers) in enumerate(cells.items()):
    for optimizer, runs in optimizers.items():
      epochs = [p["effective_epochs"] for p in runs[0]["curve"]]
      errors = np.array([[p["val_error"] for p in r["curve"]] for r in runs])
      axes[0, j].plot(epochs, errors.mean(0), color=colors[optimizer], label=optimizer)
      axes[0, j].fill_between(epochs, errors.min(0), errors.max(0), color=colors[optimizer],
                              alpha=0.2)
      along = [(p["effective_epochs"], p["sharpness"]["top_eigenvalue"])
               for p in runs[0]["curve"] if "sharpness" in p]
      if along:
        axes[1, j].plot(*zip(*along), "o-", color=colors[optimizer], label=optimizer)
    axes[0, j].set(title=f"{dataset}, {model}", xlabel="effective epochs",
                   ylabel="test error (%)", yscale="log")
    axes[1, j].set(xlabel="effective epochs", ylabel="top Hessian eigenvalue (seed 0)",
                   yscale="log")
  axes[0, 0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(where / "curves.png", dpi=100)
  plt.close(fig)
  if not minima:
    return
  measured = {c: o for c, o in cells.items()
              if any(n in minima for n, r in finals.items() for rs in o.values() if r in rs)}
  fig, axes = plt.subplots(len(measured), len(MEASURES), figsize=(4 * len(MEASURES),
                                                                  3.5 * len(measured)),
                           squeeze=False)
  for i, ((dataset, model), optimizers) in enumerate(measured.items()):
    for optimizer, runs in optimizers.items():
      names = [n for n, r in finals.items() if r in runs and n in minima]
      for j, (measure, f) in enumerate(MEASURES.items()):
        axes[i, j].scatter([f(minima[n]) for n in names], [finals[n]["val_error"] for n in names],
                           color=colors[optimizer], label=optimizer, s=18)
        axes[i, j].set(xlabel=measure, ylabel=f"{dataset} {model}: test error (%)")
        # Symmetric log: a noisy estimate may fall below 0; linear within LINEAR[measure].
        axes[i, j].set_xscale("log") if measure == "training loss" else axes[i, j].set_xscale(
            "symlog", linthresh=LINEAR[measure])
  axes[0, 0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(where / "flatness.png", dpi=100)
  plt.close(fig)


def main(where: pathlib.Path = HERE) -> None:
  tuning = json.loads((where / "tuning.json").read_text())
  (where / "tuning.md").write_text(
      "# Tuning trials (generated by report.py from tuning.json)\n\n" + tuning_table(tuning))
  finals_file, minima_file = where / "finals.json", where / "minima.json"
  finals = json.loads(finals_file.read_text())["runs"] if finals_file.is_file() else {}
  minima = json.loads(minima_file.read_text())["minima"] if minima_file.is_file() else {}
  if finals:
    (where / "results.md").write_text(results_text(finals, minima))
    figures(finals, minima, where)


if __name__ == "__main__":
  main()
