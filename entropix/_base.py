"""Helpers shared by the transforms: argument checks, keys, schedules."""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

# A callable (params, i) -> gradient pytree shaped like params.
GradFn = Callable[[optax.Params, jax.Array], optax.Updates]


def concrete(value: Any) -> float | None:
  """``value`` as a Python float when it is known at trace time, else None.

  ``optax.inject_hyperparams`` calls our factories with traced arrays inside
  ``update``; checks and static shortcuts must then step aside.
  """
  if isinstance(value, jax.core.Tracer):
    return None
  try:
    return float(value)
  except (TypeError, ValueError):
    return None


def check(name: str, value: Any, ok: Callable[[float], bool], must: str,
          schedule: bool = False) -> None:
  """Raises ValueError naming ``name`` when a concrete ``value`` fails ``ok``.

  A callable is a schedule: refused (TypeError) unless ``schedule``, else
  its first value is checked.
  """
  if callable(value) and not schedule:
    raise TypeError(
        f"{name} takes a number, not a schedule (got {value!r}). To change {name} "
        "during training, wrap the factory in optax.inject_hyperparams, which "
        f"evaluates a schedule for any numeric argument: "
        f"optax.inject_hyperparams(factory)(..., {name}=schedule)")
  if callable(value):  # a schedule: check its first value
    value = value(0)
  v = concrete(value)
  if v is not None and not (np.isfinite(v) and ok(v)):
    raise ValueError(f"{name} must be {must}, got {value!r}")


def check_int(name: str, value: Any, minimum: int) -> int:
  """Returns a static int >= minimum, or raises a ValueError naming it."""
  if isinstance(value, jax.core.Tracer):
    raise ValueError(
        f"{name} sets a loop length and must be a static int; with "
        f"optax.inject_hyperparams pass static_args=({name!r},)"
    )
  if isinstance(value, bool) or int(np.asarray(value)) != np.asarray(value):
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
  if int(value) < minimum:
    raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
  return int(value)


def at_count(value: optax.ScalarOrSchedule, count: jax.Array) -> jax.Array:
  """A scalar hyper-parameter, or a schedule evaluated at ``count``."""
  return value(count) if callable(value) else value


def check_key(key: Any) -> None:
  """Raises ValueError unless ``key`` is an int seed or a PRNG key."""
  if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    if key.shape == ():
      return
  elif isinstance(key, (int, np.integer)) and not isinstance(key, bool):
    return
  elif isinstance(key, (jax.Array, np.ndarray)) and (
      (key.shape == () and jnp.issubdtype(key.dtype, jnp.integer))
      or (key.shape == (2,) and key.dtype == jnp.uint32)
  ):
    return
  raise ValueError(
      f"key must be an int seed or a single PRNG key, got {key!r}"
  )


def as_raw_key(key: Any) -> jax.Array:
  """An int seed or a PRNG key (typed or raw) as a raw ``uint32[2]`` key.

  Raw keys pass through pmap, jit and orbax checkpoints unchanged.
  """
  if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(key)
  if jnp.shape(key) == (2,):
    return jnp.asarray(key, jnp.uint32)
  return jax.random.PRNGKey(key)


def require_grad_fn(grad_fn: Any, transform: str, params: Any, indices: int) -> GradFn:
  """``grad_fn``, checked: callable, enough minibatches, and (when traced) a
  result shaped like ``params``.

  ``indices`` is the number of minibatch indices the transform passes
  (``i = 0 .. indices - 1`` at most); a ``grad_fn`` that declares how many it
  has (``minibatches``, as :func:`entropix.minibatch_grad_fn` does) must have
  that many. The result's check runs at trace time and costs nothing at run time.
  """
  if grad_fn is None:
    raise TypeError(
        f"{transform} evaluates gradients at other points and needs them "
        "from you: call update(updates, state, params, grad_fn=grad_fn) with "
        "grad_fn(params, i) returning the gradient on the i-th minibatch, e.g. "
        "grad_fn = lambda p, i: jax.grad(loss)(p, batches[i]). Through "
        "optax.chain and nnx.Optimizer.update it is passed the same way, as a "
        "keyword argument."
    )
  if not callable(grad_fn):
    raise TypeError(f"grad_fn must be callable (params, i) -> grads, got {grad_fn!r}")
  have = getattr(grad_fn, "minibatches", None)
  if have is not None and have < indices:
    raise ValueError(
        f"{transform} calls grad_fn(params, i) for i up to {indices - 1}, but grad_fn "
        f"holds {have} minibatches: give it at least {indices} (JAX would clamp i and "
        "reuse the last one without a word)")
  want = jax.tree.structure(params)

  def checked(p, i):
    grads = grad_fn(p, i)
    problem = _tree_difference(params, grads)
    if problem:
      hint = (" If grad_fn returns (loss, grads), as jax.value_and_grad does, return grads "
              "alone." if isinstance(grads, tuple) and not isinstance(params, tuple) else "")
      raise TypeError(
          f"{transform}: grad_fn(params, i) must return the gradient, a pytree of "
          f"arrays with the structure and shapes of params ({want}); it returned "
          f"{type(grads).__name__}: {problem}.{hint} Under nnx.Optimizer, params is the "
          "nnx.State of plain arrays: return jax.grad of a function of that State, "
          "not nnx.Param variables.")
    return grads

  return checked


def _tree_difference(params: Any, grads: Any) -> str:
  """Where ``grads`` first differs from ``params`` in structure or shapes; '' if nowhere."""
  flat_p, tree_p = jax.tree_util.tree_flatten_with_path(params)
  flat_g, tree_g = jax.tree_util.tree_flatten_with_path(grads)
  keystr = jax.tree_util.keystr
  for (path_p, leaf_p), (path_g, leaf_g) in zip(flat_p, flat_g):
    if path_p != path_g:
      return f"params have a leaf at {keystr(path_p) or 'the root'}, the result at " \
             f"{keystr(path_g) or 'the root'} ({type(leaf_g).__name__})"
    if jnp.shape(leaf_p) != jnp.shape(leaf_g):
      return f"at {keystr(path_p)} params have shape {jnp.shape(leaf_p)}, the result " \
             f"{jnp.shape(leaf_g)}"
  if len(flat_p) != len(flat_g):
    return f"params have {len(flat_p)} leaves, the result {len(flat_g)}"
  if tree_p != tree_g:
    return f"its structure is {tree_g}"
  return ""


def require_params(params: Any, transform: str) -> None:
  if params is None:
    raise ValueError(f"{transform} needs params: call update(updates, state, params, ...)")


def pmean(tree: Any, axis_name: str | None) -> Any:
  return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def cast_like(tree: Any, like: Any) -> Any:
  return jax.tree.map(lambda t, l: t.astype(jnp.asarray(l).dtype), tree, like)


def at_least_float32(tree: Any) -> Any:
  """``tree`` in at least float32: the precision the inner loops run in, whatever the params."""
  return jax.tree.map(lambda p: p.astype(jnp.promote_types(p.dtype, jnp.float32)), tree)


def float32_zeros(tree: Any) -> Any:
  """Zeros shaped like ``tree``, in at least float32."""
  return jax.tree.map(jnp.zeros_like, at_least_float32(tree))


def check_unroll(unroll: Any) -> int | bool:
  """``lax.scan``'s unroll, static: True, False or an int >= 1."""
  if isinstance(unroll, bool):
    return unroll
  if isinstance(unroll, jax.core.Tracer):
    raise ValueError(
        "unroll must be static; with optax.inject_hyperparams pass static_args=('unroll',)"
    )
  value = np.asarray(unroll)
  if value.ndim or value.dtype.kind not in "iu" or int(value) < 1:
    raise ValueError(f"unroll={unroll!r}: must be True, False or an int >= 1")
  return int(value)
