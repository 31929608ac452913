"""Leaves that are not floating-point arrays, held as they are.

Real training code puts more than float arrays in what it optimizes: an
Equinox model partitioned with ``eqx.is_array`` keeps its int and bool arrays
and PRNG keys, and ``eqx.filter_grad`` gives them a ``None`` gradient;
``jax.grad(..., allow_int=True)`` gives them ``float0``. ``optax.sgd`` leaves
such leaves alone, and so does every entropix transform:
:func:`float_leaves_only` runs a transform on the floating-point leaves
alone (``None`` in place of the others, in its state too) and gives each
other leaf the update that leaves it as it is: ``None`` where its gradient is
``None`` or it is a PRNG key (which nothing can be added to), else zeros of
its dtype, which ``optax.apply_updates`` and ``eqx.apply_updates`` both
leave unchanged. ``grad_fn`` still receives whole params, those leaves as
they were given to ``update``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

_EQUINOX_HINT = (
    "With Equinox, optimize the arrays alone: params, static = eqx.partition(model, "
    "eqx.is_inexact_array), and rebuild the model inside grad_fn with "
    "eqx.combine(params, static)")


def _is_none(x: Any) -> bool:
  return x is None


def _dtype(leaf: Any) -> np.dtype | None:
  if isinstance(leaf, (jax.Array, np.ndarray, np.generic)) or hasattr(leaf, "aval"):
    return leaf.dtype
  if isinstance(leaf, (bool, int, float, complex)):
    return np.result_type(leaf)
  return None


def is_float(leaf: Any) -> bool:
  """Whether ``leaf`` is a floating-point (or complex) array or number."""
  dtype = _dtype(leaf)
  return dtype is not None and jnp.issubdtype(dtype, jnp.inexact)


def _is_key(leaf: Any) -> bool:
  dtype = _dtype(leaf)
  return dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)


def check_leaves(params: Any, transform: str) -> None:
  """Raises TypeError naming the first leaf of ``params`` that is not an array or a number."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    if _dtype(leaf) is None:
      where = jax.tree_util.keystr(path) or "the root"
      raise TypeError(
          f"{transform}: params hold {leaf!r} ({type(leaf).__name__}) at {where}, which is "
          f"not an array. entropix optimizes arrays (float ones; int, bool and key arrays "
          f"are held as they are). {_EQUINOX_HINT}.")


def float_part(tree: Any, params: Any) -> Any:
  """``tree`` (shaped like ``params``) with ``None`` where ``params`` has no float leaf."""
  return jax.tree.map(lambda p, t: t if is_float(p) else None, params, tree, is_leaf=_is_none)


def merge(part: Any, params: Any) -> Any:
  """``params`` with their float leaves taken from ``part`` (as :func:`float_part` makes)."""
  return jax.tree.map(lambda p, t: t if is_float(p) else p, params, part, is_leaf=_is_none)


def _held(param: Any, gradient: Any) -> Any:
  """The update that leaves a non-float leaf as it is."""
  if param is None or gradient is None or _is_key(param):
    return None
  return jnp.zeros(jnp.shape(param), _dtype(param))


def fill(part: Any, gradient: Any, params: Any) -> Any:
  """Whole updates: float leaves from ``part``, the others held (:func:`_held`)."""
  return jax.tree.map(lambda p, g, t: t if is_float(p) else _held(p, g),
                      params, gradient, part, is_leaf=_is_none)


def difference(params: Any, grads: Any) -> str:
  """Where ``grads`` first differs from ``params`` in structure or shapes; '' if nowhere.

  At a leaf that is not a float array, ``grads`` may hold ``None`` (as
  ``eqx.filter_grad`` gives) or ``float0`` (``jax.grad(..., allow_int=True)``).
  """
  flat_p, tree_p = jax.tree_util.tree_flatten_with_path(params, is_leaf=_is_none)
  flat_g, tree_g = jax.tree_util.tree_flatten_with_path(grads, is_leaf=_is_none)
  keystr = jax.tree_util.keystr
  for (path_p, leaf_p), (path_g, leaf_g) in zip(flat_p, flat_g):
    if path_p != path_g:
      return (f"params have a leaf at {keystr(path_p) or 'the root'}, the result at "
              f"{keystr(path_g) or 'the root'} ({type(leaf_g).__name__})")
    if leaf_g is None:
      if is_float(leaf_p):
        return (f"at {keystr(path_p) or 'the root'} params have a float array, the result "
                "None (only a leaf that is not a float array may have a None gradient)")
      continue
    if leaf_p is not None and jnp.shape(leaf_p) != jnp.shape(leaf_g):
      return (f"at {keystr(path_p) or 'the root'} params have shape {jnp.shape(leaf_p)}, "
              f"the result {jnp.shape(leaf_g)}")
  if len(flat_p) != len(flat_g):
    return f"params have {len(flat_p)} leaves, the result {len(flat_g)}"
  if tree_p != tree_g:
    return f"its structure is {tree_g}"
  return ""


def describe(params: Any) -> str:
  """A short description of a pytree: its type and its leaves' dtypes and shapes."""
  leaves = jax.tree.leaves(params)
  shown = ", ".join(f"{_dtype(leaf)}{list(jnp.shape(leaf))}" if _dtype(leaf) is not None
                    else type(leaf).__name__ for leaf in leaves[:4])
  more = f", ... ({len(leaves)} leaves)" if len(leaves) > 4 else ""
  return f"a {type(params).__name__} of arrays [{shown}{more}]"


def checked_grad_fn(grad_fn: Callable[..., Any], params: Any, transform: str) -> Callable:
  """``grad_fn`` on the float part of ``params``: it receives whole params, its result is
  checked against them, and an exception it raises carries a note saying what it got."""

  @functools.wraps(grad_fn)
  def float_grad_fn(part, i):
    point = merge(part, params)
    try:
      grads = grad_fn(point, i)
    except Exception as error:
      error.add_note(
          f"(raised inside your grad_fn(params, i), which {transform} called with params "
          f"{describe(point)}: a point shaped like the params given to update, with the "
          f"same structure (not a model, unless the params are one), and i a traced int32. "
          f"{_EQUINOX_HINT}; with Flax NNX, nnx.merge(graphdef, params, rest) inside "
          "grad_fn, and any nnx.Rngs built there from a key (minibatch_grad_fn(..., key=k) "
          "passes one per minibatch). "
          "entropix's guide 'Using the optimizers' (docs/guides/using.md) has both recipes.)")
      raise
    problem = difference(params, grads)
    if problem:
      hint = (" If grad_fn returns (loss, grads), as jax.value_and_grad does, return grads "
              "alone." if isinstance(grads, tuple) and not isinstance(params, tuple) else "")
      raise TypeError(
          f"{transform}: grad_fn(params, i) must return the gradient, a pytree of arrays "
          f"with the structure and shapes of params ({jax.tree.structure(params)}); it "
          f"returned {type(grads).__name__}: {problem}.{hint} Under nnx.Optimizer, params is "
          "the nnx.State of plain arrays: return jax.grad of a function of that State, not "
          "nnx.Param variables.")
    return float_part(grads, params)

  float_grad_fn.checked_by_entropix = True
  return float_grad_fn


def float_leaves_only(
    inner: optax.GradientTransformation, transform: str
) -> optax.GradientTransformationExtraArgs:
  """``inner`` run on the float leaves of the params; the other leaves held as they are.

  ``init`` refuses a leaf that is not an array (naming its path); ``update``
  checks ``updates`` against ``params`` (structure and shapes) and gives
  ``inner`` a ``grad_fn`` on the float part that calls yours with whole params
  (once: inside a ready optimizer, its transform's own wrapper passes it on).
  Params whose leaves are all float arrays pass through unchanged.
  """
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    check_leaves(params, transform)
    return inner.init(float_part(params, params))

  def update_fn(updates, state, params=None, *, grad_fn=None, **extra_args):
    if params is None:  # inner refuses it, or needs no params
      return inner.update(updates, state, params, grad_fn=grad_fn, **extra_args)
    check_leaves(params, transform)
    problem = difference(params, updates)
    if problem:
      raise TypeError(
          f"{transform}: updates (the gradient at params) must have the structure and "
          f"shapes of params ({jax.tree.structure(params)}): {problem}.")
    if grad_fn is not None and not getattr(grad_fn, "checked_by_entropix", False):
      if not callable(grad_fn):
        raise TypeError(f"grad_fn must be callable (params, i) -> grads, got {grad_fn!r}")
      grad_fn = checked_grad_fn(grad_fn, params, transform)
    new, state = inner.update(float_part(updates, params), state, float_part(params, params),
                              grad_fn=grad_fn, **extra_args)
    return fill(new, updates, params), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
