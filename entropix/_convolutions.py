"""Convolutions inside the inner loops at full speed on XLA:CPU.

XLA:CPU runs a convolution through Eigen only when its dimension numbers
are canonical: input (batch, spatial..., feature), kernel (spatial..., in,
out), output (batch, spatial..., feature). Its ``ConvCanonicalization`` pass
transposes the others into that form, but only in the entry computation
("all top-level convolutions"). The gradient of a convolution is two
convolutions that are not canonical (the kernel's gradient contracts over
the batch); inside a ``lax.scan`` or ``while`` body, which is not the entry
computation, XLA:CPU emits them as naive loops: the gradient of a small
``nn.Conv`` network ran 10-60 times slower inside an inner loop than
outside it (jaxlib 0.10.2; the forward pass, already canonical, is
unaffected).

:func:`canonical_convolutions` does the pass's work at the jaxpr level for
the function the loop calls: it traces ``fn`` once, and evaluates its jaxpr
with every non-canonical float convolution replaced by the same convolution
between transposed operands (the arithmetic is unchanged, only the layout),
looking into nested ``jit``, ``scan``, ``cond``, ``while``, ``checkpoint``
and custom-derivative calls. A jaxpr without such a convolution is
evaluated as it is, and the rewrite is lowered for CPUs only
(``lax.platform_dependent``): other backends get the program they had.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jcore

_CONV = lax.conv_general_dilated_p
# Eigen's convolutions are float32 and float16 only; XLA leaves the others alone.
_EIGEN_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))
# Call-like primitives whose body can be evaluated in place (the same values;
# only a jit boundary or a custom derivative rule, unused here, is lost).
_INLINED = frozenset({"remat", "remat2", "checkpoint", "custom_jvp_call",
                      "custom_vjp_call", "custom_vjp_call_jaxpr", "closed_call", "core_call"})
# Primitives whose jaxprs are rewritten and bound again: control flow, and jit
# (whose shardings and donations stay as they were).
_REBOUND = frozenset({"scan", "while", "cond", "pjit", "jit"})


def _canonical_numbers(ndim: int) -> lax.ConvDimensionNumbers:
  spatial = tuple(range(1, ndim - 1))
  return lax.ConvDimensionNumbers(
      lhs_spec=(0, ndim - 1, *spatial), rhs_spec=(ndim - 1, ndim - 2, *range(ndim - 2)),
      out_spec=(0, ndim - 1, *spatial))


def _is_slow_conv(eqn: Any) -> bool:
  """A float convolution with 1-3 spatial dims whose dimension numbers are not canonical."""
  if eqn.primitive is not _CONV:
    return False
  aval = eqn.invars[0].aval
  return (np.dtype(aval.dtype) in _EIGEN_DTYPES and 3 <= len(aval.shape) <= 5
          and eqn.params["dimension_numbers"] != _canonical_numbers(len(aval.shape)))


def _sub_jaxprs(params: dict[str, Any]) -> Iterable[Any]:
  for value in params.values():
    for v in value if isinstance(value, tuple) else (value,):
      if isinstance(v, jcore.ClosedJaxpr):
        yield v.jaxpr
      elif isinstance(v, jcore.Jaxpr):
        yield v


def _has_slow_conv(jaxpr: Any) -> bool:
  return any(_is_slow_conv(eqn) or any(map(_has_slow_conv, _sub_jaxprs(eqn.params)))
             for eqn in jaxpr.eqns)


def _canonical_conv(lhs: jax.Array, rhs: jax.Array, params: dict[str, Any]) -> jax.Array:
  """The convolution of ``params`` between transposed operands, transposed back.

  Spatial dimensions keep their order, so windows, strides, padding,
  dilations and group counts hold as they are.
  """
  ndim = lhs.ndim
  lhs_spec, rhs_spec, out_spec = params["dimension_numbers"]
  lhs = lax.transpose(lhs, (lhs_spec[0], *lhs_spec[2:], lhs_spec[1]))
  rhs = lax.transpose(rhs, (*rhs_spec[2:], rhs_spec[1], rhs_spec[0]))
  out = _CONV.bind(lhs, rhs, **{**params, "dimension_numbers": _canonical_numbers(ndim)})
  back = [0] * ndim  # canonical axis of each original output axis
  back[out_spec[0]], back[out_spec[1]] = 0, ndim - 1
  for k, axis in enumerate(out_spec[2:]):
    back[axis] = 1 + k
  return lax.transpose(out, tuple(back))


def _bind(primitive: Any, params: dict[str, Any], args: list[Any]) -> list[Any]:
  bind_params = primitive.get_bind_params(params)
  subfuns: tuple[Any, ...] = ()
  if isinstance(bind_params, tuple):  # jax < 0.6: (subfuns, params)
    subfuns, bind_params = bind_params
  out = primitive.bind(*subfuns, *args, **bind_params)
  return list(out) if primitive.multiple_results else [out]


def _rewritten(closed: Any) -> Any:
  """``closed`` (a ClosedJaxpr) with its slow convolutions made canonical, same types."""
  if not _has_slow_conv(closed.jaxpr):
    return closed
  avals = [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=getattr(a, "weak_type", False))
           for a in closed.in_avals]
  return jax.make_jaxpr(lambda *args: _evaluate(closed.jaxpr, closed.consts, args))(*avals)


def _evaluate(jaxpr: Any, consts: Iterable[Any], args: Iterable[Any]) -> list[Any]:
  """``jaxpr`` applied to ``args``, its slow convolutions made canonical."""
  env: dict[Any, Any] = {}

  def read(v: Any) -> Any:
    return v.val if isinstance(v, jcore.Literal) else env[v]

  env.update(zip(jaxpr.constvars, consts))
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    args_ = [read(v) for v in eqn.invars]
    name = eqn.primitive.name
    if _is_slow_conv(eqn):
      outs = [_canonical_conv(*args_, eqn.params)]
    elif not any(map(_has_slow_conv, _sub_jaxprs(eqn.params))):
      outs = _bind(eqn.primitive, eqn.params, args_)
    elif name in _INLINED:
      body = next(v for v in eqn.params.values()
                  if isinstance(v, (jcore.ClosedJaxpr, jcore.Jaxpr)))
      if isinstance(body, jcore.ClosedJaxpr):
        outs = _evaluate(body.jaxpr, body.consts, args_)
      else:
        outs = _evaluate(body, (), args_)
    elif name in _REBOUND:
      params = {k: (tuple(_rewritten(b) for b in v) if k == "branches" else
                    _rewritten(v) if isinstance(v, jcore.ClosedJaxpr) else v)
                for k, v in eqn.params.items()}
      outs = _bind(eqn.primitive, params, args_)
    else:  # another higher-order primitive (shard_map, ...): left as it is
      outs = _bind(eqn.primitive, eqn.params, args_)
    env.update(zip(eqn.outvars, outs))
  return [read(v) for v in jaxpr.outvars]


def canonical_convolutions(fn: Callable[..., Any]) -> Callable[..., Any]:
  """``fn``, whose convolutions XLA:CPU runs through Eigen inside a loop body too.

  The same values as ``fn`` (each convolution computes the same sums on
  transposed operands). ``fn`` is traced once per call of the result; when
  it holds no convolution to rewrite, its jaxpr is evaluated as traced.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> x, w = jnp.ones((2, 5, 5, 3)), jnp.ones((3, 3, 3, 4))
    >>> loss = lambda w: jnp.sum(jax.lax.conv_general_dilated(
    ...     x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")) ** 2)
    >>> fast = canonical_convolutions(jax.grad(loss))
    >>> bool(jnp.allclose(fast(w), jax.grad(loss)(w)))
    True
  """

  @functools.wraps(fn)
  def wrapped(*args: Any) -> Any:
    closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
    leaves = jax.tree.leaves(args)
    if _has_slow_conv(closed.jaxpr):
      outs = lax.platform_dependent(
          *leaves,
          cpu=lambda *a: _evaluate(closed.jaxpr, closed.consts, a),
          default=jcore.jaxpr_as_fun(closed))
    else:
      outs = jcore.jaxpr_as_fun(closed)(*leaves)
    return jax.tree.unflatten(jax.tree.structure(shape), outs)

  return wrapped
