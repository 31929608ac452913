"""Draws the paper's Figure 1 (``pip install -e ".[plots]"``).

``figure1.png``: a 1-D non-convex loss f and its three smoothings at PDE
time t = 1 / gamma, computed by quadrature with :mod:`entropix.pde`: the
viscous HJ solution (local entropy, Cole-Hopf), the non-viscous HJ solution
(Hopf-Lax, the Moreau envelope) and the heat equation's (Gaussian
smoothing, variance t / beta), each with its local minima marked. As in
the paper, the viscous solution is convex on the plot with its minimum
near f's global one, and Hopf-Lax keeps the value and place of f's deepest
minima while widening their convex regions (5 minima of f's 11 remain).
Hopf-Lax lies below f everywhere; the viscous and heat solutions, which
average f over a neighbourhood, lie above its deepest minima.

Run: python experiments/figure1/figure1.py [--out experiments/figure1]
"""

import argparse
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from entropix import pde  # noqa: E402


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


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parent),
                      help="folder of figure1.png (default: %(default)s)")
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  figure1(out / "figure1.png")
  print(f"wrote {out / 'figure1.png'}")


if __name__ == "__main__":
  main()
