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

Its lower panel is the paper's other half: an initial density evolved by
the Fokker-Planck equation (:func:`entropix.pde.fokker_planck`, inverse
temperature BETA_FP, to time T) with the drift of each: -f' (SGD), -u_x of
the viscous HJ solution and of the Hopf-Lax one. ``figure1_densities.json``
records the mass each terminal density puts in each basin of f (the
intervals between f's local maxima), with the times and temperatures used.

Run: python experiments/figure1/figure1.py [--out experiments/figure1]
"""

import argparse
import json
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


def loss_1d_slope(x: np.ndarray, xp=np) -> np.ndarray:
  """f', by hand (``xp=jax.numpy`` inside a traced function)."""
  return 0.08 * x + 1.05 * xp.sin(3.0 * x) + 1.75 * xp.sin(7.0 * x + 1.0)


# The densities' settings: the PDE time and viscosity of the smoothings above,
# and a cold Fokker-Planck equation (inverse temperature 100) run to T = 50
# from a wide Gaussian left of the global minimum.
T, BETA_FP, START, WIDTH = 50.0, 100.0, -3.0, 1.0


def densities(points: int = 1001, t: float = 2.0, beta: float = 2.0) -> dict:
  """The initial density and the three terminal ones on [-5, 5], and the mass
  each terminal density puts in each basin of f."""
  x = np.linspace(-5.0, 5.0, points)
  faces = 0.5 * (x[:-1] + x[1:])
  y = np.linspace(-12.0, 12.0, 24001)
  drifts = {"sgd": -loss_1d_slope(faces),
            "viscous": -pde.viscous_hj(loss_1d, faces, y, gamma=1 / t, beta=beta)[1],
            "hopf_lax": -pde.hopf_lax(loss_1d, faces, y, gamma=1 / t)[1]}
  h = x[1] - x[0]
  rho0 = np.exp(-0.5 * ((x - START) / WIDTH) ** 2)
  rho0 /= rho0.sum() * h
  out = {"x": x, "initial": rho0}
  out.update({k: pde.fokker_planck(rho0, x, d, beta=BETA_FP, t=T) for k, d in drifts.items()})
  fx = loss_1d(x)
  edges = np.concatenate([[0], local_maxima(fx), [x.size]])
  out["basins"] = [{"minimum_x": float(x[a + np.argmin(fx[a:b])]),
                    "minimum_f": float(fx[a:b].min()),
                    **{k: float(out[k][a:b].sum() * h) for k in ("initial", *drifts)}}
                   for a, b in zip(edges[:-1], edges[1:])]
  return out


def local_maxima(u: np.ndarray) -> np.ndarray:
  """Indices of the strict interior local maxima of a sampled curve."""
  return local_minima(-u)


def local_minima(u: np.ndarray) -> np.ndarray:
  """Indices of the strict interior local minima of a sampled curve."""
  return np.flatnonzero((u[1:-1] < u[:-2]) & (u[1:-1] < u[2:])) + 1


def figure1(path: pathlib.Path, t: float = 2.0, beta: float = 2.0,
            points: int = 1001) -> dict:
  """Draws both panels into ``path``; returns the densities (:func:`densities`)."""
  x = np.linspace(-5.0, 5.0, 2001)
  u = smoothings(x, t, beta)
  fig, (ax, low) = plt.subplots(2, 1, figsize=(7.5, 8), layout="constrained", sharex=True)
  for key, label, color in (
      ("f", "f(x)", "black"),
      ("viscous", f"viscous HJ (local entropy), t = {t:g}, $\\beta$ = {beta:g}", "tab:red"),
      ("hopf_lax", f"non-viscous HJ (Hopf-Lax), t = {t:g}", "tab:blue"),
      ("heat", f"heat equation, $\\sigma^2$ = t/$\\beta$ = {t / beta:.3g}", "tab:olive"),
  ):
    ax.plot(x, u[key], color=color, label=label, lw=2 if key == "f" else 1.6)
    m = local_minima(u[key])
    ax.plot(x[m], u[key][m], "o", color=color, ms=4)
  ax.set_ylabel("loss (dots: local minima)")
  ax.set_title("Figure 1: a non-convex loss and its PDE smoothings (entropix.pde)")
  ax.legend(fontsize=8, loc="upper center")
  ax.set_xlim(x[0], x[-1])
  rho = densities(points, t, beta)
  low.fill_between(rho["x"], rho["initial"], color="0.85", label="initial density")
  for key, label, color in (("sgd", "SGD (drift -f')", "0.3"),
                            ("viscous", "viscous HJ (drift -u_x)", "tab:red"),
                            ("hopf_lax", "non-viscous HJ (drift -u_x)", "tab:blue")):
    low.plot(rho["x"], rho[key], color=color, label=label, lw=1.6)
  low.set_xlabel("x (a 1-D parameter)")
  low.set_ylabel("density")
  low.set_title(f"Fokker-Planck, inverse temperature {BETA_FP:g}, to time T = {T:g}")
  low.legend(fontsize=8)
  fig.savefig(path, dpi=130)
  plt.close(fig)
  return rho


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parent),
                      help="folder of figure1.png and figure1_densities.json "
                           "(default: %(default)s)")
  parser.add_argument("--points", type=int, default=1001,
                      help="grid cells of the densities (default: %(default)s)")
  args = parser.parse_args(argv)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  rho = figure1(out / "figure1.png", points=args.points)
  record = {"what": "experiments/figure1/figure1.py: Fokker-Planck densities of Figure 1",
            "pde_time": 2.0, "pde_beta": 2.0, "fokker_planck_beta": BETA_FP, "T": T,
            "initial": {"mean": START, "std": WIDTH}, "cells": args.points,
            "basins": rho["basins"]}
  (out / "figure1_densities.json").write_text(json.dumps(record, indent=1) + "\n")
  print(f"wrote {out / 'figure1.png'} and {out / 'figure1_densities.json'}")


if __name__ == "__main__":
  main()
