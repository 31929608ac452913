"""Arguments that cannot work are refused by name, whichever public factory takes them.

Types (a float loop length, a number in a string, a boolean for a number)
raise TypeError; values (a coupling at which the inner chain diverges) raise
ValueError with the limit in the message.
"""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import entropix
from entropix._local_entropy import stability_limit

FACTORIES = {
    "local_entropy": lambda **kw: entropix.local_entropy(**{"gamma": 1.0, **kw}),
    "hopf_lax_fixed_point": lambda **kw: entropix.hopf_lax_fixed_point(**{"gamma": 1.0, **kw}),
    "gaussian_smoothing": lambda **kw: entropix.gaussian_smoothing(**{"sigma": 0.1, **kw}),
    "entropy_sgd": lambda **kw: entropix.entropy_sgd(**{"learning_rate": 0.1, "gamma": 1.0, **kw}),
    "hj": lambda **kw: entropix.hj(**{"learning_rate": 0.1, "gamma": 1.0, **kw}),
    "hj_fixed_point": lambda **kw: entropix.hj_fixed_point(
        **{"learning_rate": 0.1, "gamma": 1.0, **kw}),
    "heat": lambda **kw: entropix.heat(**{"learning_rate": 0.1, "sigma": 0.1, **kw}),
    "parle": lambda **kw: entropix.parle(
        **{"learning_rate": 0.1, "gamma": 1.0, "rho": 1.0, "axis_name": "r", **kw}),
    "elastic_sgd": lambda **kw: entropix.elastic_sgd(
        **{"learning_rate": 0.1, "rho": 1.0, "axis_name": "r", **kw}),
}
LOOP_LENGTH = {"local_entropy": "inner_steps", "hopf_lax_fixed_point": "inner_steps",
               "gaussian_smoothing": "samples", "entropy_sgd": "inner_steps", "hj": "inner_steps",
               "hj_fixed_point": "inner_steps", "heat": "samples", "parle": "inner_steps"}
TRANSFORMS = {"local_entropy", "hopf_lax_fixed_point", "gaussian_smoothing"}
NUMBER = {"local_entropy": "gamma", "hopf_lax_fixed_point": "gamma", "gaussian_smoothing": "sigma",
          "entropy_sgd": "gamma", "hj": "gamma", "hj_fixed_point": "gamma", "heat": "sigma",
          "parle": "rho", "elastic_sgd": "rho"}


@pytest.mark.parametrize("bad", [5.0, np.float32(5.0), "5", True, jnp.array(5.0)])
@pytest.mark.parametrize("name", list(LOOP_LENGTH))
def test_a_loop_length_must_be_an_int(name, bad):
  arg = LOOP_LENGTH[name]
  with pytest.raises(TypeError, match=f"{arg} must be an int"):
    FACTORIES[name](**{arg: bad})


@pytest.mark.parametrize("name", list(NUMBER))
def test_a_number_in_a_string_is_refused_with_the_number_to_write(name):
  arg = NUMBER[name]
  with pytest.raises(TypeError, match=f"{arg} must be a number, got the string '0.03' "
                                      rf"\(write {arg}=0.03\)"):
    FACTORIES[name](**{arg: "0.03"})


@pytest.mark.parametrize("bad", [True, np.bool_(False), None, jnp.ones(3), [0.1]])
@pytest.mark.parametrize("name", list(FACTORIES))
def test_a_boolean_none_or_array_is_not_a_number(name, bad):
  arg = NUMBER[name] if name in TRANSFORMS else "learning_rate"
  with pytest.raises(TypeError, match=arg):
    FACTORIES[name](**{arg: bad})


def test_numbers_of_every_kind_are_taken():
  for value in (1, 0.5, np.float32(0.5), np.int64(1), jnp.asarray(0.5)):
    entropix.entropy_sgd(value, gamma=value, inner_steps=np.int64(3), noise=value * 0)
  entropix.local_entropy(1.0, inner_steps=jnp.asarray(3))


@pytest.mark.parametrize("momentum", [0.0, 0.5, 0.9])
def test_the_stability_limit_is_where_the_coupled_chain_stops_contracting(momentum):
  # The inner step on a flat loss: e' = e - lr (h e + m v'), v' = m v + h e
  # (torch's Nesterov), a = lr h. Its spectral radius crosses 1 at the limit.
  limit = stability_limit(momentum)

  def radius(a):
    m = momentum
    matrix = np.array([[1 - a * (1 + m), -m * m], [a, m]])
    return max(abs(np.linalg.eigvals(matrix)))

  assert radius(limit * 0.999) < 1 < radius(limit * 1.001)
  assert {0.0: 2.0, 0.9: 3.8 / 2.8}.get(momentum, limit) == pytest.approx(limit)


@pytest.mark.parametrize("make, product, decay", [
    (lambda g: entropix.local_entropy(g, inner_lr=0.1), 2.0, 0.0),
    (lambda g: entropix.entropy_sgd(0.1, gamma=g, inner_lr=0.1, inner_momentum=0.9), 3.8 / 2.8,
     0.0),
    # weight_decay adds to the coupling's curvature: the limit comes 1.0 sooner.
    (lambda g: entropix.hj(0.1, gamma=g, inner_lr=0.1, weight_decay=1.0), 2.0, 1.0),
    (lambda g: entropix.parle(0.1, gamma=g, rho=1.0, axis_name="r", inner_lr=0.1), 3.8 / 2.8,
     0.0),
    (lambda g: entropix.entropy_sgd(0.1, gamma=entropix.scoping(g, 1e-3), inner_lr=0.1), 2.0,
     0.0),
])
def test_a_coupling_beyond_the_limit_is_refused_with_the_limit(make, product, decay):
  at_limit = product / 0.1 - decay
  make(at_limit * 0.99)
  with pytest.raises(ValueError, match=f"at or beyond {product:.4g}, the inner chain's stability"):
    make(at_limit * 1.01)


def test_the_limit_counts_weight_decay_and_a_schedule_from_its_first_value():
  entropix.hj(0.1, gamma=18.0, inner_lr=0.1)
  with pytest.raises(ValueError, match=r"0\.1 \* \(18 \+ 3\) = 2\.1"):
    entropix.hj(0.1, gamma=18.0, inner_lr=0.1, weight_decay=3.0)
  with pytest.raises(ValueError, match="gamma's first value"):
    entropix.local_entropy(optax.constant_schedule(25.0), inner_lr=0.1)
  # Traced values (optax.inject_hyperparams inside update) are checked at init.
  opt = optax.inject_hyperparams(entropix.local_entropy)(gamma=25.0, inner_lr=0.1)
  with pytest.raises(ValueError, match="stability limit"):
    opt.init(jnp.zeros(2))


def test_microbatches_must_divide_the_minibatch():
  batches = {"x": jnp.zeros((4, 6, 2)), "y": jnp.zeros((4, 6))}
  loss = lambda p, b: jnp.sum(p)
  with pytest.raises(ValueError, match=r"microbatches=4 splits the second .* \[\(4, 6, 2\), \(4, 6\)\]"):
    entropix.minibatch_grad_fn(loss, batches, microbatches=4)
  with pytest.raises(TypeError, match="microbatches must be an int"):
    entropix.minibatch_grad_fn(loss, batches, microbatches=2.0)
  entropix.minibatch_grad_fn(loss, batches, microbatches=3)


def test_grad_transform_must_be_an_optax_transform():
  with pytest.raises(TypeError, match=r"grad_transform must be an optax.GradientTransformation"):
    entropix.entropy_sgd(0.1, gamma=1.0, grad_transform=lambda g: g)
