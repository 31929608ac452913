"""Draws the paper's Figure 4 from Table-1 runs (``pip install -e ".[plots]"``).

``figure4.png``: validation error and training loss against effective
epochs from the records ``reproduce_table1.py`` writes
(``experiments/table1/table1_runs.json`` by default), one panel per network,
one curve per algorithm (the mean over seeds, the band spanning the lowest
and highest seed), and the paper's Table-1 number as a cross at its epoch.

Run: python experiments/table1/figure4.py [--runs experiments/table1/table1_runs.json]
[--out experiments/table1]
"""

import argparse
import json
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from reproduce_table1 import PAPER  # noqa: E402

# Figure 4's algorithms: label and colour (Table 1's four columns, then the
# two forms of the paper's text).
STYLE = {
    "entropy-sgd": ("Entropy-SGD", "tab:red"),
    "heat-uniform": ("HEAT (code's, Table 1)", "tab:orange"),
    "hj-fixed-point": ("HJ (fixed point, Table 1)", "tab:blue"),
    "sgd": ("SGD", "black"),
    "hj": ("HJ (Sec. 7.2)", "tab:cyan"),
    "heat": ("HEAT (Eq. 35)", "tab:olive"),
}
NAMES = {"mnistfc": "mnistfc (MNIST)", "lenet": "LeNet (MNIST)", "allcnn": "All-CNN-C (CIFAR-10)"}


def mean_band(curves: list[list[dict]], key: str):
  """Effective epochs, mean, lowest and highest over seeds of one cell's ``key``.

  The seeds of a cell share their evaluation points; curves are cut to the
  shortest (a diverged seed), and points where a seed has no value dropped.
  """
  n = min(len(c) for c in curves)
  epochs = np.array([r["effective_epochs"] for r in curves[0][:n]])
  values = np.array([[np.nan if r.get(key) is None else r[key] for r in c[:n]] for c in curves])
  keep = ~np.isnan(values).any(axis=0)
  v = values[:, keep]
  return epochs[keep], v.mean(axis=0), v.min(axis=0), v.max(axis=0)


def figure4(path: pathlib.Path, records: dict) -> None:
  models = [m for m in NAMES if any(r["model"] == m for r in records.values())]
  if not models:
    raise SystemExit("no finished runs to draw (the runs' records are empty)")
  fig, axes = plt.subplots(2, len(models), figsize=(6.5 * len(models), 7.5),
                           squeeze=False, layout="constrained")
  for col, model in enumerate(models):
    top, bottom = axes[0, col], axes[1, col]
    best = []
    for optimizer, (label, color) in STYLE.items():
      cell = sorted((r for r in records.values()
                     if r["model"] == model and r["optimizer"] == optimizer),
                    key=lambda r: r["seed"])
      if not cell:
        continue
      name = f"{label}, {len(cell)} seed{'s' * (len(cell) > 1)}"
      for ax, key in ((top, "val_error"), (bottom, "train_loss")):
        e, mean, low, high = mean_band([r["curve"] for r in cell], key)
        ax.plot(e, mean, color=color, lw=1.4, label=name)
        if len(cell) > 1:
          ax.fill_between(e, low, high, color=color, alpha=0.2, lw=0)
        if key == "val_error":
          best.append(mean.min())
      if (model, optimizer) in PAPER:
        paper = PAPER[model, optimizer][0]
        top.plot([cell[0]["effective_epochs"]], [paper], "x", color=color, ms=9, mew=2)
    low = min(best + [PAPER[k][0] for k in PAPER if k[0] == model])
    top.set_ylim(0.8 * low, 2.2 * low)  # the paper's range: the end of training
    top.set_title(f"{NAMES[model]}: validation error (x: paper's Table 1)")
    top.set_ylabel("validation error (%)")
    bottom.set_yscale("log")
    bottom.set_title(f"{NAMES[model]}: training loss")
    bottom.set_ylabel("training loss (cross-entropy, mean over updates)")
    for ax in (top, bottom):
      ax.set_xlabel("effective epochs (backprops x batch / N)")
      ax.grid(alpha=0.3)
    top.legend(fontsize=8)
  fig.savefig(path, dpi=130)
  plt.close(fig)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--runs", default=str(HERE / "table1_runs.json"),
                      help="the runs' records (default: %(default)s)")
  parser.add_argument("--out", default=str(HERE),
                      help="folder of figure4.png (default: %(default)s)")
  args = parser.parse_args(argv)
  runs = pathlib.Path(args.runs)
  if not runs.is_file():
    parser.error(f"--runs {runs}: no such file (run experiments/table1/reproduce_table1.py "
                 "first)")
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  figure4(out / "figure4.png", json.loads(runs.read_text()))
  print(f"wrote {out / 'figure4.png'}")


if __name__ == "__main__":
  main()
