"""Theorem 12 measured: SGD against the controlled and the local-entropy dynamics.

The paper's Theorem 12 (Sec. 5) compares two Langevin dynamics started at
the same point, here in the library's convention (temperature 1 / BETA):

* SGD:   dx = -f'(x) ds + sqrt(2 / BETA) dW;
* CSGD:  dx = -f'(x) ds - alpha ds + sqrt(2 / BETA) dW, with the optimal
  control alpha = u_x(x, s) of the cost E[f(x(T)) + 1/2 int |alpha|^2],
  u solving the HJB equation backwards from u(., T) = f
  (:func:`entropix.pde.optimal_control`);

and proves E f(x_csgd(T)) <= E f(x_sgd(T)) - 1/2 E int_0^T |alpha|^2 ds.
It is the theorem's dynamics, not the algorithm's: the control knows the
horizon T and the loss it will be scored on, and it adds to -f' instead of
replacing it. The algorithms descend the local entropy f_gamma instead
(paper Remark 10: without the -f' term the value function is the viscous
HJ solution, f_gamma at gamma = 1 / (T - s)), so we also run, with the same
Brownian increments (common random numbers: differences are paired):

* LE:   dx = -d/dx f_gamma(x) ds + sqrt(2 / BETA) dW, the exact gradient
  by quadrature (:func:`entropix.pde.viscous_hj` at inverse temperature
  BETA / 2, the one that makes Remark 10's value function a local entropy);
* LE scoped: the same with gamma(s) = gamma0 / (1 - s / T), capped at
  GAMMA_CAP: the PDE time 1/gamma falls linearly to 0, and at
  gamma0 = 1 / T this is exactly Remark 10's optimal control, whose cost
  E[f(x(T))] + 1/2 E int |alpha|^2 equals E f_{1/T}(x(0));
* entropix: ``entropix.entropy_sgd`` itself (L = INNER_STEPS inner Langevin
  steps at noise sqrt(2 / BETA), inner_lr INNER_LR, alpha 0.75, no outer
  momentum, learning rate gamma * DT so that one update is one Euler step of
  LE), fixed and scoped; the loop adds the same outer noise as the others.

All are Euler-Maruyama steps of DT from x(0) ~ N(-3, 1) on Figure 1's
loss (``experiments/figure1``), PARTICLES paths each, and on its separable
copy in d dimensions, f(x) = sum_i f(x_i), whose every dynamics above acts
coordinate by coordinate. ``theorem12.json`` records E f(x(T)) with 95%
confidence intervals, each dynamics' paired difference with SGD, the
running cost 1/2 E int |alpha|^2 of each drift, and the PDE values
(E over x(0) of SGD's v(x, 0) and of CSGD's u(x, 0)) the Monte Carlo must
meet; ``theorem12.md`` tabulates them and ``theorem12.png`` draws E f(x(T))
against T.

Run: python experiments/theorem12/theorem12.py   (about 14 minutes on one core)
"""

import argparse
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments" / "figure1"))
import entropix  # noqa: E402
from entropix import pde  # noqa: E402
from figure1 import loss_1d, loss_1d_slope  # noqa: E402

BETA = 100.0  # Figure 1's Fokker-Planck temperature: SGD keeps its basins
START, WIDTH = -3.0, 1.0  # x(0) ~ N(START, WIDTH^2), Figure 1's initial density
HORIZONS = (1.0, 5.0, 25.0)
GAMMAS = (0.04, 0.2, 1.0)  # = 1 / T for each horizon: the Remark-10 diagonal
GAMMA_CAP = 20.0  # = 1 / INNER_LR: the inner chain stays stable (see entropix.scoping)
DT = 0.01
PARTICLES = 20_000
INNER_STEPS, INNER_LR = 20, 0.05
DIMENSIONS = (10, 100, 1000)  # the separable landscape: at T = 5, gamma0 = 0.2
PARTICLES_D = 200
X = np.linspace(-6.0, 6.0, 4801)  # the PDE grid: h = 0.0025, the upwind error ~ h (measured)
Y = np.linspace(-8.0, 8.0, 3201)  # viscous_hj's quadrature grid
TABLE_GAMMAS = np.geomspace(min(GAMMAS), GAMMA_CAP, 80)  # LE's slope, tabulated in log gamma


def gamma_at(gamma0: float, horizon: float, s, xp=np):
  """The scoped coupling at time s: PDE time falling linearly to 0, capped
  (``xp=jnp`` for a schedule traced inside entropix's update)."""
  return xp.minimum(gamma0 / xp.maximum(1.0 - s / horizon, 1e-12), GAMMA_CAP)


class Slopes:
  """d/dx f_gamma on X for every gamma of TABLE_GAMMAS (exact, by quadrature),
  read at any (x, gamma) by linear interpolation in x and in log gamma."""

  def __init__(self):
    self.table = np.stack([pde.viscous_hj(loss_1d, X, Y, gamma=g, beta=BETA / 2)[1]
                           for g in TABLE_GAMMAS])

  def __call__(self, x: np.ndarray, gamma: float) -> np.ndarray:
    where = np.interp(np.log(gamma), np.log(TABLE_GAMMAS), np.arange(TABLE_GAMMAS.size))
    low = int(min(np.floor(where), TABLE_GAMMAS.size - 2))
    w = where - low
    return ((1 - w) * np.interp(x, X, self.table[low])
            + w * np.interp(x, X, self.table[low + 1]))


def increments(seed: int, steps: int, shape: tuple[int, ...]) -> np.ndarray:
  """The Brownian increments sqrt(2 DT / BETA) xi every dynamics shares."""
  rng = np.random.default_rng(seed)
  return np.sqrt(2 * DT / BETA) * rng.standard_normal((steps, *shape)).astype(np.float64)


def simulate(x0: np.ndarray, noise: np.ndarray, drift, control) -> tuple[np.ndarray, np.ndarray]:
  """Euler-Maruyama: x(T) and each path's running cost 1/2 int |control|^2 ds."""
  x, cost = x0.copy(), np.zeros(x0.shape[0])
  for k, dw in enumerate(noise):
    a = control(x, k)
    cost += 0.5 * DT * (a**2).reshape(x.shape[0], -1).sum(axis=1)
    x = x + DT * drift(x, k, a) + dw
  return x, cost


def entropix_paths(x0: np.ndarray, noise: np.ndarray, gamma0: float, horizon: float,
                   scoped: bool, seed: int) -> np.ndarray:
  """x(T) under entropix.entropy_sgd itself, every coordinate of every path at once
  (the loss is a sum over them, each coordinate's chain is its own)."""
  schedule = (lambda k: gamma_at(gamma0, horizon, k * DT, jnp)) if scoped else gamma0
  lr = (lambda k: schedule(k) * DT) if scoped else gamma0 * DT
  opt = entropix.entropy_sgd(lr, gamma=schedule, inner_steps=INNER_STEPS, inner_lr=INNER_LR,
                             noise=float(np.sqrt(2 / BETA)), momentum=0.0, key=seed,
                             sampler="normal")
  slope = lambda p: loss_1d_slope(p, jnp)
  grad_fn = lambda p, i: slope(p)  # d/dx of sum_i f(x_i), coordinate-wise

  @jax.jit
  def run(x, noise):
    def step(carry, dw):
      x, state = carry
      updates, state = opt.update(slope(x), state, x, grad_fn=grad_fn)
      return (optax.apply_updates(x, updates) + dw, state), None
    (x, _), _ = jax.lax.scan(step, (x, opt.init(x)), noise)
    return x

  with jax.default_device(jax.devices("cpu")[0]):
    return np.asarray(run(jnp.asarray(x0, jnp.float32), jnp.asarray(noise, jnp.float32)),
                      np.float64)


def summary(values: np.ndarray) -> dict:
  """Mean and the 95% half-width of its normal confidence interval."""
  return {"mean": float(values.mean()),
          "ci95": float(1.96 * values.std(ddof=1) / np.sqrt(values.size))}


def per_path_loss(x: np.ndarray) -> np.ndarray:
  return loss_1d(x).reshape(x.shape[0], -1).sum(axis=1)


def horizon(T: float, slopes: Slopes, particles: int, dims: int, gammas, seed: int) -> dict:
  """Every dynamics to time T from the same x(0) and the same noise."""
  steps = int(round(T / DT))
  rng = np.random.default_rng(seed)
  x0 = START + WIDTH * rng.standard_normal((particles, dims))
  noise = increments(seed + 1, steps, x0.shape)
  _, control = pde.optimal_control(loss_1d(X), X, -loss_1d_slope(0.5 * (X[:-1] + X[1:])),
                                   beta=BETA, t=T, snapshots=steps)
  faces = 0.5 * (X[:-1] + X[1:])
  runs = {}
  sgd, _ = simulate(x0, noise, lambda x, k, a: -loss_1d_slope(x), lambda x, k: 0 * x)
  runs["sgd"] = (sgd, np.zeros(particles))
  runs["csgd"] = simulate(x0, noise, lambda x, k, a: -loss_1d_slope(x) - a,
                          lambda x, k: np.interp(x, faces, control[k]))
  for g in gammas:
    runs[f"le gamma0={g}"] = simulate(x0, noise, lambda x, k, a: -a,
                                      lambda x, k, g=g: slopes(x, g))
    runs[f"le scoped gamma0={g}"] = simulate(
        x0, noise, lambda x, k, a: -a, lambda x, k, g=g: slopes(x, gamma_at(g, T, k * DT)))
    for scoped in (False, True):
      name = f"entropix{' scoped' if scoped else ''} gamma0={g}"
      runs[name] = (entropix_paths(x0, noise, g, T, scoped, seed), None)
  sgd_loss = per_path_loss(sgd)
  out = {"T": T, "dims": dims, "particles": particles, "steps": steps, "dynamics": {}}
  for name, (x, cost) in runs.items():
    loss = per_path_loss(x)
    out["dynamics"][name] = {
        "loss": summary(loss / dims),
        "below_sgd": summary((sgd_loss - loss) / dims),  # paired: the same paths' noise
        **({"running_cost": summary(cost / dims),
            "loss_plus_cost": summary((loss + cost) / dims)} if cost is not None else {}),
    }
  # What the Monte Carlo must meet (1-D values, per coordinate): SGD's
  # v(x, 0) = E f(x(T)), CSGD's u(x, 0), and Remark 10's E f_{1/T}(x(0)).
  # The upwind scheme is first order: on twice the spacing, the value moves by
  # about its own error, recorded beside it.
  def values(x):
    faces = 0.5 * (x[:-1] + x[1:])
    rho0 = np.exp(-0.5 * ((x - START) / WIDTH) ** 2)
    rho0 /= rho0.sum()
    v = pde.expected_value(loss_1d(x), x, -loss_1d_slope(faces), beta=BETA, t=T)[0]
    u, _ = pde.optimal_control(loss_1d(x), x, -loss_1d_slope(faces), beta=BETA, t=T)
    return rho0, float(rho0 @ v), float(rho0 @ u[0])

  rho0, v, u = values(X)
  _, v_coarse, u_coarse = values(X[::2])
  out["pde"] = {"sgd_expected_loss": v, "csgd_value": u,
                "sgd_expected_loss_2h": v_coarse, "csgd_value_2h": u_coarse,
                "remark10_value": float(rho0 @ pde.viscous_hj(loss_1d, X, Y, gamma=1 / T,
                                                              beta=BETA / 2)[0]),
                "initial_loss": float(rho0 @ loss_1d(X))}
  return out


def table(record: dict) -> str:
  """E f(x(T)) per coordinate (95% CI) of every dynamics, and how far below
  SGD's on the same noise; the PDE's values under each horizon."""
  lines = []
  for run in record["runs"]:
    pde_ = run["pde"]
    lines += [f"**T = {run['T']:g}, d = {run['dims']}** ({run['particles']:,} paths; PDE: "
              f"SGD's E f(x(T)) {pde_['sgd_expected_loss']:.4f}, CSGD's value u "
              f"{pde_['csgd_value']:.4f} ({pde_['csgd_value_2h']:.4f} on twice the spacing), "
              f"Remark 10's E f_1/T(x(0)) {pde_['remark10_value']:.4f})", "",
              "| dynamics | E f(x(T)) | below SGD (paired) | 1/2 E int alpha^2 | "
              "E f(x(T)) + 1/2 E int alpha^2 |", "|---|---|---|---|---|"]
    for name, d in run["dynamics"].items():
      cost = (f"{d['running_cost']['mean']:.4f} ± {d['running_cost']['ci95']:.4f} | "
              f"{d['loss_plus_cost']['mean']:.4f} ± {d['loss_plus_cost']['ci95']:.4f}"
              if "running_cost" in d and name != "sgd" else "| ")
      lines.append(f"| {name} | {d['loss']['mean']:.4f} ± {d['loss']['ci95']:.4f} | "
                   f"{d['below_sgd']['mean']:+.4f} ± {d['below_sgd']['ci95']:.4f} | {cost} |")
    lines.append("")
  return "\n".join(lines)


def figure(record: dict, path: pathlib.Path) -> None:
  import matplotlib  # noqa: PLC0415: the [plots] extra, only for the figure

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415

  rows = [r for r in record["runs"] if r["dims"] == 1]
  fig, axes = plt.subplots(1, len(GAMMAS), figsize=(5 * len(GAMMAS), 4), sharey=True)
  for ax, g in zip(axes, GAMMAS):
    names = ["sgd", "csgd", f"le gamma0={g}", f"le scoped gamma0={g}",
             f"entropix gamma0={g}", f"entropix scoped gamma0={g}"]
    for i, name in enumerate(names):
      mean = [r["dynamics"][name]["loss"]["mean"] for r in rows]
      ci = [r["dynamics"][name]["loss"]["ci95"] for r in rows]
      ax.errorbar([r["T"] for r in rows], mean, yerr=ci, marker="o", capsize=3,
                  linestyle="--" if name.startswith("entropix") else "-",
                  color=f"C{[0, 1, 2, 3, 2, 3][i]}", label=name.split(" gamma0")[0])
    ax.plot([r["T"] for r in rows], [r["pde"]["csgd_value"] for r in rows], "k:",
            label="CSGD's value u (PDE)")
    ax.set(xscale="log", xlabel="T", title=f"gamma0 = {g} (PDE time {1 / g:g})")
  axes[0].set_ylabel("E f(x(T)), 95% CI")
  axes[-1].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).parent,
                      help="folder of theorem12.json, .md and .png (default: %(default)s)")
  parser.add_argument("--particles", type=int, default=PARTICLES)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  if args.particles < 2:
    parser.error(f"--particles {args.particles}: need at least 2 for a confidence interval")
  began = time.perf_counter()
  slopes = Slopes()
  runs = [horizon(T, slopes, args.particles, 1, GAMMAS, args.seed) for T in HORIZONS]
  # Each dimension its own draws (seed + d): PARTICLES_D paths of d coordinates
  # from the 1-D run's seed would be its very numbers, reshaped.
  runs += [horizon(5.0, slopes, max(2, args.particles * PARTICLES_D // PARTICLES), d, (0.2,),
                   args.seed + d) for d in DIMENSIONS]
  record = {"what": "experiments/theorem12/theorem12.py", "beta": BETA, "dt": DT,
            "start": [START, WIDTH], "gamma_cap": GAMMA_CAP, "inner_steps": INNER_STEPS,
            "inner_lr": INNER_LR, "seed": args.seed, "runs": runs,
            "wall_s": round(time.perf_counter() - began, 1)}
  args.out.mkdir(parents=True, exist_ok=True)
  (args.out / "theorem12.json").write_text(json.dumps(record, indent=1) + "\n")
  (args.out / "theorem12.md").write_text(table(record))
  figure(record, args.out / "theorem12.png")
  print(f"wrote theorem12.json, .md and .png to {args.out} in {record['wall_s']} s")


if __name__ == "__main__":
  main()
