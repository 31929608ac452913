"""entropix reproduces the authors' Table-1 update, iterate for iterate.

``AuthorsStep`` below is a NumPy transcription, in float64, of one outer step
of the classes of ``hamilton-jacobi/code/optim.py`` that produced Table 1
(ESGD, HJB, FP, HEAT), written from the code as docs/guides/conventions.md describes it and the
paper, noise switched off. As that code does, it works on one flat vector of
all parameters, counts updates from t = 1 for scoping, keeps the inner
Nesterov buffer across updates, adds weight decay inside the inner loop only
and steps x with Nesterov momentum on the outer direction. entropix works
per leaf, in float32, counts from 0, and takes the caller's gradient at x as
its first inner gradient; the test problem has several leaves, weight decay
on and scoping on, and the two must agree for 5 updates to float32
tolerance.

Minibatches: the code's ESGD also takes a gradient at x on a fresh minibatch
before the loop and uses it only when rho > 0 (Parle); with rho = 0 it is
not needed, and the transcription leaves it out: its inner step k takes
minibatch k, as entropix's does.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import entropix

SHAPES = {"b": (2,), "s": (), "w": (3, 2)}  # sorted: jax.tree order of a dict
UPDATES, INNER, BATCH = 5, 4, 6


def loss_grad(params, x, y, xp):
  """Gradient of mean((s * tanh(x @ w + b) - y)^2) / 2, in NumPy or jax.numpy."""
  t = xp.tanh(x @ params["w"] + params["b"])
  r = (params["s"] * t - y) / y.size
  dz = r * params["s"] * (1 - t**2)
  return {"b": dz.sum(0), "s": (r * t).sum(), "w": x.T @ dz}


def make_data(seed=0):
  rng = np.random.default_rng(seed)
  xs = rng.normal(size=(UPDATES, INNER + 1, BATCH, 3))
  ys = rng.normal(size=(UPDATES, INNER + 1, BATCH, 2))
  params = {"b": rng.normal(size=2) * 0.1, "s": np.float64(1.3), "w": rng.normal(size=(3, 2))}
  return xs, ys, params


def flatten(tree):
  return np.concatenate([np.ravel(tree[k]) for k in sorted(SHAPES)])


def unflatten(vector):
  out, start = {}, 0
  for k in sorted(SHAPES):
    size = int(np.prod(SHAPES[k]))
    out[k] = vector[start:start + size].reshape(SHAPES[k])
    start += size
  return out


class AuthorsStep:
  """One class of the authors' optim.py, noise off, on a flat float64 vector."""

  def __init__(self, kind, *, lr, g0, g1, llr, wd, beta1=0.75, mom=0.9, damping=0.75):
    self.kind, self.lr, self.g0, self.g1 = kind, lr, g0, g1
    self.llr, self.wd, self.beta1, self.mom, self.damping = llr, wd, beta1, mom, damping
    self.t, self.mw, self.mdw = 0, 0.0, 0.0  # Nesterov buffers start empty (zero)

  def grad(self, vector, x, y):
    return flatten(loss_grad(unflatten(vector), x, y, np))

  def step(self, x, xs, ys):
    """xs[k], ys[k]: the k-th minibatch of this update."""
    self.t += 1
    g = self.g0 * (1 + self.g1) ** self.t
    if self.kind == "FP":
      p = self.grad(x, xs[0], ys[0]) + self.wd * x
      for k in range(1, INNER + 1):
        w = x - p / g
        p = self.damping * p + (1 - self.damping) * (self.grad(w, xs[k], ys[k]) + self.wd * w)
      direction = p
    else:  # ESGD, HJB and HEAT share the inner loop
      y, mu, total = x.copy(), x.copy(), x.copy()
      for k in range(INNER):
        d = self.grad(y, xs[k], ys[k]) + self.wd * y + g * (y - x)
        self.mdw = self.mom * self.mdw + d
        d = d + self.mom * self.mdw
        y = y - self.llr * d
        mu = self.beta1 * mu + (1 - self.beta1) * y
        total = total + y
      mean = total / (INNER + 1) if self.kind == "HEAT" else mu
      direction = x - mean
    self.mw = self.mom * self.mw + direction
    return x - self.lr * (direction + self.mom * self.mw)


LR, G0, G1, LLR, WD = 0.5, 0.3, 0.2, 0.1, 1e-2
# Scoping from the code's t = 1 at the first update; optax counts from 0.
GAMMA = entropix.scoping(G0 * (1 + G1), G1)
CASES = {
    "ESGD": (dict(beta1=0.75), entropix.entropy_sgd(
        LR, gamma=GAMMA, inner_steps=INNER, inner_lr=LLR, noise=0.0, alpha=0.75,
        inner_momentum=0.9, reset_inner_momentum=False, weight_decay=WD)),
    # The code's HJB averages with beta1 = 1e-4 (entropix.hj takes the last
    # iterate exactly, alpha = 0): the same loop with alpha = 1e-4.
    "HJB": (dict(beta1=1e-4, llr=0.25), entropix.entropy_sgd(
        LR, gamma=GAMMA, inner_steps=INNER, inner_lr=0.25, noise=0.0, alpha=1e-4,
        inner_momentum=0.9, reset_inner_momentum=False, weight_decay=WD)),
    "FP": (dict(), entropix.hj_fixed_point(
        LR, gamma=GAMMA, inner_steps=INNER, damping=0.75, weight_decay=WD)),
    "HEAT": (dict(), entropix.entropy_sgd(
        LR, gamma=GAMMA, inner_steps=INNER, inner_lr=LLR, noise=0.0, inner_momentum=0.9,
        reset_inner_momentum=False, average="uniform", weight_decay=WD)),
}


def entropix_iterates(opt, params, xs, ys):
  @jax.jit
  def step(params, state, x, y):
    grad_fn = lambda p, i: loss_grad(p, x[i], y[i], jnp)
    updates, state = opt.update(grad_fn(params, 0), state, params, grad_fn=grad_fn)
    return optax.apply_updates(params, updates), state

  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
  state, out = opt.init(params), []
  for u in range(UPDATES):
    params, state = step(params, state, jnp.asarray(xs[u], jnp.float32),
                         jnp.asarray(ys[u], jnp.float32))
    out.append(flatten(jax.tree.map(np.asarray, params)))
  return out


def authors_iterates(kind, params, xs, ys, **kw):
  authors = AuthorsStep(kind, **{**dict(lr=LR, g0=G0, g1=G1, llr=LLR, wd=WD), **kw})
  x, out = flatten(params), []
  for u in range(UPDATES):
    x = authors.step(x, xs[u], ys[u])
    out.append(x)
  return out


@pytest.mark.parametrize("kind", list(CASES))
def test_entropix_reproduces_the_authors_iterates(kind):
  xs, ys, params = make_data()
  kw, opt = CASES[kind]
  want = authors_iterates(kind, params, xs, ys, **kw)
  got = entropix_iterates(opt, params, xs, ys)
  start = flatten(params)
  for u, (a, b) in enumerate(zip(got, want)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg=f"{kind}, update {u + 1}")
  # Not a vacuous match: every update moves the parameters.
  assert np.min(np.abs(want[-1] - start)) > 1e-2
  assert all(np.max(np.abs(b - a)) > 1e-3 for a, b in zip([start, *want], want))
