"""Draws the paper's Figures 1 and 4 into results/ (``pip install -e ".[plots]"``).

* ``figure1.png``: a 1-D non-convex loss f and its three smoothings at PDE
  time t = 1 / gamma, computed by quadrature with :mod:`entropix.pde`: the
  viscous HJ solution (local entropy, Cole-Hopf), the non-viscous HJ solution
  (Hopf-Lax, the Moreau envelope) and the heat equation's (Gaussian
  smoothing, variance t / beta), each with its local minima marked. As in
  the paper, the viscous solution is convex on the plot with its minimum
  near f's global one, and Hopf-Lax keeps the value and place of f's deepest
  minima while widening their convex regions (5 minima of f's 11 remain).
  Hopf-Lax lies below f everywhere; the viscous and heat solutions, which
  average f over a neighbourhood, lie above its deepest minima.
* ``figure4.png``: Figure 4 from the Table-1 runs (``results/table1_runs.json``,
  written by ``reproduce_table1.py``): validation error and training loss
  against effective epochs, one panel per network, one curve per algorithm
  (the mean over seeds, the band spanning the lowest and highest seed), and
  the paper's Table-1 number as a cross at its epoch.

Run: python benchmarks/figures.py [--runs results/table1_runs.json] [--out results]
"""

import argparse
import json
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from entropix import pde  # noqa: E402
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


def loss_1d(x: np.ndarray) -> np.ndarray:
  """Figure 1's loss: a wide bowl with narrow and wide local minima."""
  return 0.04 * x**2 - 0.35 * np.cos(3.0 * x) - 0.25 * np.cos(7.0 * x + 1.0) + 0.6


def smoothings(x: np.ndarray, t: float = 2.0, beta: float = 2.0) -> dict[str, np.ndarray]:
  """f and its three smoothings at PDE time t (viscosity 1 / (2 beta) for the
  viscous HJ equation; the heat equation's variance t / beta matches it)."""
  y = np.linspace(-12.0, 12.0, 24001)
  return {
      "f": loss_1d(x),
      "viscous": pde.viscous_hj(loss_1d, x, y, gamma=1 / t, beta=beta)[0],
      "hopf_lax": pde.hopf_lax(loss_1d, x, y, gamma=1 / t)[0],
      "heat": pde.heat(loss_1d, x, y, sigma=np.sqrt(t / beta))[0],
  }


def local_minima(u: np.ndarray) -> np.ndarray:
  """Indices of the strict interior local minima of a sampled curve."""
  return np.flatnonzero((u[1:-1] < u[:-2]) & (u[1:-1] < u[2:])) + 1


def figure1(path: pathlib.Path, t: float = 2.0, beta: float = 2.0) -> None:
  x = np.linspace(-5.0, 5.0, 2001)
  u = smoothings(x, t, beta)
  fig, ax = plt.subplots(figsize=(7.5, 4.5), layout="constrained")
  for key, label, color in (
      ("f", "f(x)", "black"),
      ("viscous", f"viscous HJ (local entropy), t = {t:g}, $\\beta$ = {beta:g}", "tab:red"),
      ("hopf_lax", f"non-viscous HJ (Hopf-Lax), t = {t:g}", "tab:blue"),
      ("heat", f"heat equation, $\\sigma^2$ = t/$\\beta$ = {t / beta:.3g}", "tab:olive"),
  ):
    ax.plot(x, u[key], color=color, label=label, lw=2 if key == "f" else 1.6)
    m = local_minima(u[key])
    ax.plot(x[m], u[key][m], "o", color=color, ms=4)
  ax.set_xlabel("x (a 1-D parameter)")
  ax.set_ylabel("loss (dots: local minima)")
  ax.set_title("Figure 1: a non-convex loss and its PDE smoothings (entropix.pde)")
  ax.legend(fontsize=8, loc="upper center")
  ax.set_xlim(x[0], x[-1])
  fig.savefig(path, dpi=130)
  plt.close(fig)


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
    raise SystemExit("no finished runs to draw (results/table1_runs.json is empty)")
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
  parser.add_argument("--runs", default=str(ROOT / "results" / "table1_runs.json"),
                      help="the runs' records (default: %(default)s)")
  parser.add_argument("--out", default=str(ROOT / "results"), help="folder of the PNGs")
  args = parser.parse_args(argv)
  runs = pathlib.Path(args.runs)
  if not runs.is_file():
    parser.error(f"--runs {runs}: no such file (run benchmarks/reproduce_table1.py first)")
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  figure1(out / "figure1.png")
  figure4(out / "figure4.png", json.loads(runs.read_text()))
  print(f"wrote {out / 'figure1.png'} and {out / 'figure4.png'}")


if __name__ == "__main__":
  main()
