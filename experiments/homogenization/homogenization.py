"""Homogenization measured: how far entropix's inner loop is from grad f_gamma.

``entropix.local_entropy`` estimates the gradient of the local entropy,
u_x(x, 1/gamma) = gamma (x - <y>) (paper Sec. 4: as the inner dynamics get
fast, its average recovers the viscous HJ solution's gradient), by the
average mu_L of L Langevin steps of y started at x. Here its estimate
gamma (x - mu_L) is set against the exact u_x (Cole-Hopf quadrature,
:func:`entropix.pde.viscous_hj`) on Figure 1's loss (``experiments/figure1``)
at POINTS points x in [-3, 3], CHAINS independent chains each, at
temperature NOISE^2:

* bias: RMS over x of (mean over chains - exact), relative to the RMS of
  the exact u_x, the Monte Carlo error's share taken out (recorded beside
  it); spread: RMS over x of one chain's standard deviation, relative to the
  same;
* against the inner loop's length L, its step inner_lr and its average
  (exponential with alpha, or the uniform mean, Table 1's HEAT);
* below and beyond the critical coupling GAMMA_CRITICAL = -min f'' (15.05 for
  this loss), above which H(x, y) = f(y) + gamma |x - y|^2 / 2 is convex in
  y and the chain mixes exponentially fast (paper Sec. 2.3, Remark 6);
* on the separable landscape f(x) = sum_i f(x_i) in d dimensions, where the
  chains of the coordinates are independent: the same numbers per coordinate.

``homogenization.json`` holds every cell; ``homogenization.md`` the table
of the (L, inner_lr) that keep the bias under 5%; ``homogenization.png``
the bias and the spread against L.

Run: python experiments/homogenization/homogenization.py   (about 16 minutes on one core)
"""

import argparse
import itertools
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments" / "figure1"))
import entropix  # noqa: E402
from entropix import pde  # noqa: E402
from figure1 import loss_1d, loss_1d_slope  # noqa: E402

NOISE = 0.5  # temperature 0.25: the local entropy differs from f at every gamma below
POINTS = np.linspace(-3.0, 3.0, 25)
CHAINS = 16_384  # the bias known to about 1.5% of the gradient at alpha 0.75
GAMMAS = (0.5, 5.0, 30.0)  # below, below, beyond the critical coupling
_FINE = np.linspace(-10.0, 10.0, 200_001)
# -min f'': beyond it f(y) + gamma |x - y|^2 / 2 is convex in y (about 15.05)
GAMMA_CRITICAL = float(-np.min(0.08 + 3.15 * np.cos(3 * _FINE) + 12.25 * np.cos(7 * _FINE + 1)))
INNER_LRS = (0.005, 0.02)
LENGTHS = (5, 20, 100, 500, 2000)
AVERAGES = (("exponential", 0.75), ("exponential", 0.95), ("uniform", 0.0))
DIMENSIONS = (10, 100, 1000)  # at gamma 5, inner_lr 0.02, L 100, alpha 0.75
TOLERANCE = 0.05


def slope(p):
  return loss_1d_slope(p, jnp)


def estimates(x: np.ndarray, gamma: float, inner_lr: float, steps: int, average: str,
              alpha: float, seed: int) -> np.ndarray:
  """gamma (x - mu_L) from entropix.local_entropy, for every entry of x (each
  entry a coordinate of the separable loss, its chain its own)."""
  transform = entropix.local_entropy(gamma, inner_steps=steps, inner_lr=inner_lr, noise=NOISE,
                                     alpha=alpha, average=average, key=seed, sampler="normal")
  params = jnp.asarray(x, jnp.float32)

  @jax.jit
  def direction(params):
    out, _ = transform.update(slope(params), transform.init(params), params,
                              grad_fn=lambda p, i: slope(p))
    return out  # x - mu_L: the direction entropix hands the outer step

  return gamma * np.asarray(direction(params), np.float64)


def cell(gamma: float, inner_lr: float, steps: int, average: str, alpha: float, seed: int,
         exact: np.ndarray, chains: int = CHAINS, dims: int = 1) -> dict:
  x = np.broadcast_to(POINTS, (chains, dims, POINTS.size)).reshape(chains, -1)
  got = estimates(x, gamma, inner_lr, steps, average, alpha, seed)
  got = got.reshape(chains * dims, POINTS.size)  # every coordinate is a chain at its x
  scale = np.sqrt(np.mean(exact**2))
  bias = got.mean(axis=0) - exact
  spread = got.std(axis=0, ddof=1)
  error2 = spread**2 / got.shape[0]  # the squared Monte Carlo error of each mean
  return {"gamma": gamma, "inner_lr": inner_lr, "L": steps, "average": average, "alpha": alpha,
          "dims": dims, "chains": chains,
          # E (mean - exact)^2 = bias^2 + error^2: the error's share taken out
          "relative_bias": float(np.sqrt(max(0.0, np.mean(bias**2 - error2))) / scale),
          "relative_bias_error": float(np.sqrt(np.mean(error2)) / scale),
          "relative_spread": float(np.sqrt(np.mean(spread**2)) / scale)}


def table(cells: list[dict]) -> str:
  """For each gamma and average, the shortest L of each inner_lr whose bias is
  under TOLERANCE."""
  lines = [f"| gamma | average | {' | '.join(f'inner_lr {lr}' for lr in INNER_LRS)} |",
           "|---|---|" + "---|" * len(INNER_LRS)]
  for gamma, (average, alpha) in itertools.product(GAMMAS, AVERAGES):
    row = []
    for lr in INNER_LRS:
      mine = [c for c in cells if c["dims"] == 1 and (c["gamma"], c["inner_lr"], c["average"],
                                                      c["alpha"]) == (gamma, lr, average, alpha)]
      good = [c for c in mine if c["relative_bias"] < TOLERANCE]
      best = min(mine, key=lambda c: c["relative_bias"])
      first = min(good, key=lambda c: c["L"]) if good else None
      row.append(f"L = {first['L']} ({first['relative_bias']:.1%} ± "
                 f"{first['relative_bias_error']:.1%})" if good else
                 f"none up to {max(LENGTHS)} (at best {best['relative_bias']:.1%})")
    name = "uniform" if average == "uniform" else f"alpha {alpha}"
    side = "convex" if gamma > GAMMA_CRITICAL else "not convex"
    lines.append(f"| {gamma} ({side}) | {name} | {' | '.join(row)} |")
  return "\n".join(lines) + "\n"


def figure(cells: list[dict], path: pathlib.Path) -> None:
  import matplotlib  # noqa: PLC0415: the [plots] extra, only for the figure

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  fig, axes = plt.subplots(2, len(GAMMAS), figsize=(5 * len(GAMMAS), 7), sharex=True)
  for j, gamma in enumerate(GAMMAS):
    for i, ((average, alpha), lr) in enumerate(itertools.product(AVERAGES, INNER_LRS)):
      mine = sorted((c for c in cells if c["dims"] == 1 and (c["gamma"], c["inner_lr"],
                     c["average"], c["alpha"]) == (gamma, lr, average, alpha)),
                    key=lambda c: c["L"])
      label = f"{'uniform' if average == 'uniform' else f'alpha {alpha}'}, inner_lr {lr}"
      style = {"color": f"C{i // 2}", "linestyle": "-" if lr == INNER_LRS[-1] else ":",
               "marker": "o"}
      # A bias within its Monte Carlo error of 0 is drawn at the floor, 1e-3.
      axes[0, j].errorbar([c["L"] for c in mine], [max(c["relative_bias"], 1e-3) for c in mine],
                          yerr=[c["relative_bias_error"] for c in mine], capsize=2,
                          label=label, **style)
      axes[0, j].set(xscale="log", yscale="log", ylim=(8e-4, 1.5))
      axes[1, j].loglog([c["L"] for c in mine], [c["relative_spread"] for c in mine], **style)
    axes[0, j].axhline(TOLERANCE, color="k", linewidth=0.8)
    side = "convex" if gamma > GAMMA_CRITICAL else "not convex"
    axes[0, j].set(title=f"gamma = {gamma} (H {side} in y)", ylabel="relative bias")
    axes[1, j].set(xlabel="inner steps L", ylabel="relative spread (one chain)")
  axes[0, -1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent,
                      help="folder of homogenization.json, .md and .png (default: %(default)s)")
  parser.add_argument("--chains", type=int, default=CHAINS)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  if args.chains < 2:
    parser.error(f"--chains {args.chains}: need at least 2 for a spread")
  began = time.perf_counter()
  y = np.linspace(-10.0, 10.0, 20001)
  exact = {g: pde.viscous_hj(loss_1d, POINTS, y, gamma=g, beta=NOISE**-2)[1] for g in GAMMAS}
  cells = [cell(g, lr, steps, average, alpha, args.seed, exact[g], args.chains)
           for g, lr, steps, (average, alpha)
           in itertools.product(GAMMAS, INNER_LRS, LENGTHS, AVERAGES)]
  # Each dimension its own noise (seed + d): entropix's noise is a function of
  # the key and each entry's index, so the 1-D cell's key would give its very numbers.
  cells += [cell(5.0, 0.02, 100, "exponential", 0.75, args.seed + d, exact[5.0],
                 max(2, args.chains // d), d) for d in DIMENSIONS]
  record = {"what": "experiments/homogenization/homogenization.py", "noise": NOISE,
            "points": POINTS.tolist(), "gamma_critical": GAMMA_CRITICAL, "seed": args.seed,
            "exact_rms": {str(g): float(np.sqrt(np.mean(e**2))) for g, e in exact.items()},
            "cells": cells, "wall_s": round(time.perf_counter() - began, 1)}
  args.out.mkdir(parents=True, exist_ok=True)
  (args.out / "homogenization.json").write_text(json.dumps(record, indent=1) + "\n")
  (args.out / "homogenization.md").write_text(table(cells))
  figure(cells, args.out / "homogenization.png")
  print(f"wrote homogenization.json, .md and .png to {args.out} in {record['wall_s']} s")


if __name__ == "__main__":
  main()
