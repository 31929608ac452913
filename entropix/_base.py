"""Helpers shared by the transforms: argument checks, keys, schedules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from entropix import _convolutions

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


def _require_number(name: str, value: Any) -> None:
  """Raises TypeError unless ``value`` is a real scalar: no str, bool, None or array."""
  if isinstance(value, (str, bytes)):
    hint = ""
    try:
      hint = f" (write {name}={float(value)!r})"
    except ValueError:
      pass
    raise TypeError(f"{name} must be a number, got the string {value!r}{hint}")
  if isinstance(value, (bool, np.bool_)) or (
      hasattr(value, "dtype") and np.dtype(value.dtype) == np.bool_):
    raise TypeError(f"{name} must be a number, got the boolean {value!r}")
  if isinstance(value, jax.core.Tracer):
    shape = value.shape
  elif isinstance(value, (int, float, np.number)):
    return
  elif isinstance(value, (jax.Array, np.ndarray)):
    shape = value.shape
    if not (np.issubdtype(value.dtype, np.number) and not np.iscomplexobj(value)):
      raise TypeError(f"{name} must be a real number, got an array of {value.dtype}")
  else:
    raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
  if shape != ():
    raise TypeError(f"{name} must be a scalar, got an array of shape {shape}")


def check(name: str, value: Any, ok: Callable[[float], bool], must: str,
          schedule: bool = False) -> None:
  """Raises ValueError naming ``name`` when a concrete ``value`` fails ``ok``.

  A callable is a schedule: refused (TypeError) unless ``schedule``, else
  its first value is checked. Strings, booleans, None and arrays with more
  than one element are refused (TypeError) even where a float would convert
  them.
  """
  if callable(value) and not schedule:
    raise TypeError(
        f"{name} takes a number, not a schedule (got {value!r}). To change {name} "
        "during training, wrap the factory in optax.inject_hyperparams, which "
        f"evaluates a schedule for any numeric argument: "
        f"optax.inject_hyperparams(factory)(..., {name}=schedule)")
  if callable(value):  # a schedule: check its first value
    value = value(0)
  _require_number(name, value)
  v = concrete(value)
  if v is not None and not (np.isfinite(v) and ok(v)):
    raise ValueError(f"{name} must be {must}, got {value!r}")


def first_value(value: optax.ScalarOrSchedule) -> float | None:
  """A concrete hyper-parameter, or a schedule's value at update 0; None if traced."""
  return concrete(value(0) if callable(value) else value)


def check_int(name: str, value: Any, minimum: int) -> int:
  """Returns a static int >= minimum, or raises naming ``name``.

  Floats (even 5.0), strings and booleans are refused: a loop length is a count.
  """
  if isinstance(value, jax.core.Tracer):
    raise ValueError(
        f"{name} sets a loop length and must be a static int; with "
        f"optax.inject_hyperparams pass static_args=({name!r},)"
    )
  integral = isinstance(value, (int, np.integer)) or (
      isinstance(value, (jax.Array, np.ndarray)) and value.shape == ()
      and np.issubdtype(value.dtype, np.integer))
  if isinstance(value, (bool, np.bool_)) or not integral:
    raise TypeError(f"{name} must be an int >= {minimum}, got {value!r} "
                    f"({type(value).__name__})")
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

  Raw keys pass through pmap, jit and orbax checkpoints unchanged. Always a
  copy: a state must not hold the caller's own buffer, which a step that
  donates the state would delete.
  """
  if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.key_data(key)
  if jnp.shape(key) == (2,):
    return jnp.array(key, jnp.uint32, copy=True)
  return jax.random.PRNGKey(key)


def require_grad_fn(grad_fn: Any, transform: str, indices: int) -> GradFn:
  """``grad_fn``, checked: given, callable, with enough minibatches.

  ``indices`` is the number of minibatch indices the transform passes
  (``i = 0 .. indices - 1`` at most); a ``grad_fn`` that declares how many it
  has (``minibatches``, as :func:`entropix.minibatch_grad_fn` does) must have
  that many. The loops call the result, whose convolutions XLA:CPU runs fast
  inside a loop body too (:mod:`entropix._convolutions`); its output is
  checked where the params' other leaves are known
  (:func:`entropix._leaves.float_leaves_only`).
  """
  if grad_fn is None:
    raise TypeError(
        f"{transform} evaluates gradients at other points and needs them "
        "from you: call update(updates, state, params, grad_fn=grad_fn) with "
        "grad_fn(params, i) returning the gradient on the i-th minibatch, e.g. "
        "grad_fn = lambda p, i: jax.grad(loss)(p, batches[i]). Through "
        "optax.chain and nnx.Optimizer.update it is passed the same way, as a "
        "keyword argument. If you passed it, a wrapper on the way dropped it: build that "
        "wrapper with entropix.forward_extra_args(wrapper, opt, ...)."
    )
  if not callable(grad_fn):
    raise TypeError(f"grad_fn must be callable (params, i) -> grads, got {grad_fn!r}")
  have = getattr(grad_fn, "minibatches", None)
  if have is not None and have < indices:
    raise ValueError(
        f"{transform} calls grad_fn(params, i) for i up to {indices - 1}, but grad_fn "
        f"holds {have} minibatches: give it at least {indices} (JAX would clamp i and "
        "reuse the last one without a word)")
  # Looked up here, not bound at import: benchmarks/user_conv.py swaps it out.
  return _convolutions.canonical_convolutions(grad_fn)


def require_params(params: Any, transform: str) -> None:
  if params is None:
    raise ValueError(f"{transform} needs params: call update(updates, state, params, ...)")


def pmean(tree: Any, axis_name: Any) -> Any:
  """``lax.pmean`` over ``axis_name`` (None: no mean).

  Over an axis of one device the mean is the tree itself, but XLA still
  copies it through an all-reduce (on a CPU about 0.5 ms per 7.5 MB, once per
  backprop of an inner loop): skipped. (Under shard_map's type check a
  gradient with respect to replicated params is replicated already.)
  """
  if axis_name is None or jax.lax.psum(1, axis_name) == 1:  # a Python int: the axis size
    return tree
  return jax.lax.pmean(tree, axis_name)


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


def check_grad_transform(grad_transform: Any) -> optax.GradientTransformationExtraArgs | None:
  """``grad_transform`` (None, or an optax transform) with extra-argument support."""
  if grad_transform is None:
    return None
  if not isinstance(grad_transform, optax.GradientTransformation):
    raise TypeError(
        "grad_transform must be an optax.GradientTransformation applied to each gradient "
        f"the loop takes (e.g. optax.clip_by_global_norm(1.0)), got {grad_transform!r}")
  return optax.with_extra_args_support(grad_transform)


def all_finite(*trees: Any) -> jax.Array:
  """True when every leaf of every tree is finite (a scalar bool)."""
  leaves = [jnp.all(jnp.isfinite(leaf)) for tree in trees for leaf in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def fresh_if_not_finite(new: Any, fresh: Callable[[], Any], *checked: Any) -> Any:
  """``new`` if every tree in ``checked`` (or ``new`` itself) is finite, else ``fresh()``:
  a state a diverged update must not reach. Nothing to keep costs nothing.

  ``checked`` may name a value that already tells (a chain's result, which a
  NaN anywhere in the chain reaches): XLA computes the same check once. The
  fallback is a fresh state, not the previous one, which would have to stay
  alive beside the new: a second buffer held through the loop.
  """
  if not jax.tree.leaves(new):
    return new
  finite = all_finite(*checked) if checked else all_finite(new)
  return jax.tree.map(lambda n, f: jnp.where(finite, n, f), new, fresh())
