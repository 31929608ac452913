"""entropix inside optax's and Flax's wrappers: helpers that make it work, checks that refuse.

A transform that calls ``grad_fn(params, i)`` needs three things of whatever
wraps it: the extra argument ``grad_fn`` forwarded, the params in the form
``grad_fn`` takes, and one call per update. :func:`masked_grad_fn` and
:func:`forward_extra_args` supply the first two where a wrapper withholds
them; :func:`refuse_wrappers` names, at trace time, the wrappers that break
one of them, so the user reads what to write instead rather than a shape
error from inside the model.
"""

from __future__ import annotations

import functools
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import optax

from entropix import _base


def _is_masked(x: Any) -> bool:
  return isinstance(x, optax.MaskedNode)


def has_masked_leaves(params: Any) -> bool:
  """Whether ``params`` came through ``optax.masked`` (``MaskedNode`` where leaves were)."""
  return any(_is_masked(leaf) for leaf in jax.tree.leaves(params, is_leaf=_is_masked))


def masked_grad_fn(grad_fn: _base.GradFn, params: optax.Params) -> _base.GradFn:
  r"""``grad_fn`` for an entropix transform inside ``optax.masked`` or ``optax.multi_transform``.

  Those wrappers hand the transform only its own leaves, with
  ``optax.MaskedNode`` in place of the others, so its inner loop cannot call
  ``grad_fn(params, i)`` with whole params. The returned function takes
  such a partial tree :math:`y_S` (or whole params), fills every hidden leaf
  with its value in ``params``, calls ``grad_fn`` on the whole tree and
  returns the gradient of the leaves it was given:

  .. math::
    \mathtt{masked\_grad\_fn}(y_S, i) = \big[\nabla f_i(y_S, x_{\bar S})\big]_S ,

  so the inner loop moves the transform's leaves :math:`S` and holds the
  others at :math:`x`, the ``params`` of this update. Under
  ``multi_transform`` each group with an inner loop runs its own: two
  entropix groups cost twice the backprops.

  Example:
    >>> import jax, jax.numpy as jnp, optax, entropix
    >>> params = {"body": jnp.ones(2), "head": jnp.ones(2)}
    >>> loss = lambda p, i: jnp.sum((p["body"] * p["head"] - 2.0) ** 2)
    >>> grad_fn = jax.grad(loss)
    >>> opt = optax.multi_transform(          # train the head, freeze the body
    ...     {"entropy": entropix.entropy_sgd(0.5, gamma=1.0, inner_steps=3, noise=0.0),
    ...      "frozen": optax.set_to_zero()},
    ...     {"body": "frozen", "head": "entropy"})
    >>> state = opt.init(params)
    >>> updates, state = opt.update(grad_fn(params, 0), state, params,
    ...                             grad_fn=entropix.masked_grad_fn(grad_fn, params))
    >>> print(updates["body"], [f"{u:.4f}" for u in updates["head"]])  # body * head -> 2
    [0. 0.] ['0.1913', '0.1913']

  Args:
    grad_fn: ``grad_fn(params, i)`` on whole params, as the transforms take it.
    params: the params passed to ``update`` in this same call.

  Returns:
    A ``grad_fn`` that also takes ``optax.masked``'s partial trees; it keeps
    ``grad_fn``'s ``minibatches`` (see :func:`entropix.minibatch_grad_fn`).
  """
  if not callable(grad_fn):
    raise TypeError(f"grad_fn must be callable (params, i) -> grads, got {grad_fn!r}")

  def fill(part: Any, whole: Any) -> Any:
    return whole if _is_masked(part) else part

  def hide(part: Any, grads: Any) -> Any:
    return part if _is_masked(part) else grads

  @functools.wraps(grad_fn)
  def partial_grad_fn(partial: Any, i: jax.Array) -> Any:
    # ``partial`` leads: a MaskedNode may stand for a whole subtree of params
    # (a mask that is a prefix of them).
    whole = jax.tree.map(fill, partial, params, is_leaf=_is_masked)
    return jax.tree.map(hide, partial, grad_fn(whole, i), is_leaf=_is_masked)

  partial_grad_fn.fills_masked_leaves = True
  have = getattr(grad_fn, "minibatches", None)
  if have is not None:
    partial_grad_fn.minibatches = have
  return partial_grad_fn


def forward_extra_args(
    wrapper: Callable[..., optax.GradientTransformation],
    inner: optax.GradientTransformation, /, *args: Any, **kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
  """``wrapper(inner, *args, **kwargs)``, with ``update``'s extra arguments reaching ``inner``.

  Some optax wrappers call the transform they wrap without the keyword
  arguments of ``update`` (``optax.lookahead``: its fast optimizer never
  sees ``grad_fn``). This builds the wrapper afresh at each call, around
  ``inner`` with that call's extra arguments bound, so it behaves as
  ``wrapper`` does and ``inner`` receives ``grad_fn``. The wrapper must be
  a pure factory (as optax's are): its state is all in what ``init`` returns.

  Example:
    >>> import jax, jax.numpy as jnp, optax, entropix
    >>> grad_fn = lambda p, i: jax.grad(lambda q: jnp.sum(q ** 2))(p)
    >>> opt = entropix.forward_extra_args(
    ...     optax.lookahead, entropix.hj(0.5, gamma=1.0),
    ...     sync_period=2, slow_step_size=0.5)
    >>> params = optax.LookaheadParams.init_synced(jnp.ones(2))
    >>> state = opt.init(params)
    >>> for _ in range(2):
    ...   updates, state = opt.update(grad_fn(params.fast, 0), state, params,
    ...                               grad_fn=grad_fn)
    ...   params = optax.apply_updates(params, updates)
    >>> print([f"{v:.4f}" for v in params.slow])  # halfway from 1 to the fast params
    ['0.4326', '0.4326']

  Args:
    wrapper: an optax wrapper factory, ``wrapper(inner, *args, **kwargs)``.
    inner: the transform it wraps (an entropix optimizer).
    *args: positional arguments of ``wrapper`` after ``inner``.
    **kwargs: keyword arguments of ``wrapper``.

  Returns:
    An ``optax.GradientTransformationExtraArgs``.
  """
  inner = optax.with_extra_args_support(inner)

  def bound(extra_args: dict[str, Any]) -> optax.GradientTransformation:
    def bound_init(params):
      return inner.init(params)

    def bound_update(updates, state, params=None):
      return inner.update(updates, state, params, **extra_args)

    return optax.GradientTransformation(bound_init, bound_update)

  def init_fn(params):
    return wrapper(bound({}), *args, **kwargs).init(params)

  def update_fn(updates, state, params=None, **extra_args):
    return wrapper(bound(extra_args), *args, **kwargs).update(updates, state, params)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def guarded(opt: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
  """``opt`` unchanged, marked as skipping a non-finite update itself.

  entropix's ready optimizers end in such a step; under this mark an
  ``optax.apply_if_finite`` around them is let through (see :func:`refuse_wrappers`).
  """
  opt = optax.with_extra_args_support(opt)

  def guarded_init(params):
    return opt.init(params)

  def guarded_update(updates, state, params=None, **extra_args):
    return opt.update(updates, state, params, **extra_args)

  return optax.GradientTransformationExtraArgs(guarded_init, guarded_update)


def _nested_codes(code: types.CodeType) -> Iterator[types.CodeType]:
  yield code
  for const in code.co_consts:
    if isinstance(const, types.CodeType):
      yield from _nested_codes(const)


# Code objects are matched by identity (id): a frame runs its function's own.
# The code of forward_extra_args' bound transform: above it, a wrapper that
# drops extra arguments is harmless.
_BINDING_CODES = frozenset(id(code) for code in _nested_codes(forward_extra_args.__code__)
                           if code.co_name in ("bound_init", "bound_update"))
# The code of guarded: above it, optax.apply_if_finite is harmless.
_GUARD_CODES = frozenset(id(code) for code in _nested_codes(guarded.__code__)
                         if code.co_name in ("guarded_init", "guarded_update"))


class _Wrapper(NamedTuple):
  name: str
  problem: str  # what goes wrong, after "{name} ..."
  instead: str  # what to write
  drops_extra_args: bool = False  # harmless under forward_extra_args
  checks_input: bool = False  # optax.apply_if_finite: see refuse_wrappers


_MULTISTEPS = _Wrapper(
    "optax.MultiSteps",
    "runs {transform}'s whole inner loop at every micro-step and keeps every k-th: k times "
    "the backprops, and the gradient it accumulates reaches only the first inner step",
    "accumulate inside grad_fn: entropix.minibatch_grad_fn(loss_fn, batches, "
    "microbatches=k) gives every inner gradient k micro-batches at the memory of one; pass "
    "grad_fn(params, 0) as the gradient at x")
_LOOKAHEAD = _Wrapper(
    "optax.lookahead",
    "calls its fast optimizer without extra arguments, so grad_fn never reaches {transform}",
    "entropix.forward_extra_args(optax.lookahead, opt, sync_period=..., slow_step_size=...)",
    drops_extra_args=True)
_FLATTEN = _Wrapper(
    "optax.flatten",
    "hands {transform} the params as one flat vector, and grad_fn(params, i) would receive "
    "that vector instead of your params",
    "drop optax.flatten (the inner loop runs over any pytree)")
_APPLY_IF_FINITE = _Wrapper(
    "optax.apply_if_finite",
    "decides per device, from the gradient it is given, whether to run {transform}, whose "
    "mean over its mapped axis then waits for devices that never join it (a deadlock under "
    "jax.pmap or shard_map)",
    "no wrapper: entropix's optimizers skip a non-finite update themselves, after the "
    "mean, where every device decides alike; with a bare transform, put "
    "optax.apply_if_finite after it in the chain",
    checks_input=True)
_APPLY_IF_FINITE_AROUND = _APPLY_IF_FINITE._replace(
    problem="checks only the gradient it is given, the one at x: an inner loop of "
    "{transform} that diverges passes it, and its NaN reaches the params",
    instead="optax.chain({transform}(...), optax.apply_if_finite(opt, k)), which checks "
    "{transform}'s result; or an entropix optimizer (entropy_sgd, hj, hj_fixed_point, heat), "
    "which skips such an update itself and may be wrapped")
_TRAIN_STATE = _Wrapper(
    "flax.training.train_state.TrainState.apply_gradients",
    "calls tx.update without grad_fn (a keyword it takes for a field to replace)",
    "entropix.linen.TrainState (a TrainState whose apply_gradients(grads=g, grad_fn=f) "
    "forwards grad_fn), or call state.tx.update(g, state.opt_state, state.params, "
    "grad_fn=f) yourself",
    drops_extra_args=True)


@functools.cache
def _optax_wrappers() -> dict[int, _Wrapper]:
  codes = {}
  # MultiSteps calls the optimizer's init from its own: refused there, first.
  for function, wrapper in [(optax.MultiSteps.init, _MULTISTEPS),
                            (optax.lookahead, _LOOKAHEAD), (optax.flatten, _FLATTEN),
                            (optax.apply_if_finite, _APPLY_IF_FINITE)]:
    codes.update(dict.fromkeys(map(id, _nested_codes(function.__code__)), wrapper))
  return codes


def _known_wrappers() -> dict[int, _Wrapper]:
  codes = _optax_wrappers()
  # Flax is never imported here: only a TrainState already loaded can be on the stack.
  train_state = sys.modules.get("flax.training.train_state")
  if train_state is not None:
    codes = {**codes, id(train_state.TrainState.apply_gradients.__code__): _TRAIN_STATE}
  return codes


def refuse_wrappers(transform: str, grad_fn: Any = None, *, init: bool = False,
                    collective: bool = False, inner_loop: bool = True) -> None:
  """Raises TypeError if a caller up the Python stack is a wrapper that breaks ``transform``.

  Runs where ``init`` or ``update`` is traced, so it costs nothing per
  compiled step. A wrapper that only drops extra arguments is let through
  under :func:`forward_extra_args`, and at update time once ``grad_fn``
  has arrived. ``optax.apply_if_finite`` decides per device, so it is
  refused around a transform with a ``collective`` (a mean over a mapped
  axis); and around an ``inner_loop`` whose divergence it cannot see, unless
  the update skips it itself (:func:`guarded`). A transform without an
  inner loop (:func:`entropix.elastic`) meets no other objection.
  """
  known, bound, skips = _known_wrappers(), False, False
  frame = sys._getframe(1)
  while frame is not None:
    code = id(frame.f_code)
    bound |= code in _BINDING_CODES
    skips |= code in _GUARD_CODES
    wrapper = known.get(code)
    if wrapper is not None and wrapper.checks_input:
      wrapper = (wrapper if collective else
                 _APPLY_IF_FINITE_AROUND if inner_loop and not skips else None)
    elif wrapper is not None:
      harmless = (not inner_loop
                  or (wrapper.drops_extra_args and (bound or (not init and grad_fn is not None))))
      wrapper = None if harmless else wrapper
    if wrapper is not None:
      raise TypeError(f"{transform} inside {wrapper.name}: {wrapper.name} "
                      f"{wrapper.problem.format(transform=transform)}. Write instead: "
                      f"{wrapper.instead.format(transform=transform)}.")
    frame = frame.f_back


def require_whole_params(params: Any, grad_fn: Any, transform: str) -> None:
  """Raises TypeError if ``params`` are ``optax.masked``'s partial tree and ``grad_fn``
  cannot take one."""
  if getattr(grad_fn, "fills_masked_leaves", False) or not has_masked_leaves(params):
    return
  raise TypeError(
      f"{transform} inside optax.masked (or optax.multi_transform, optax.partition, "
      "optax.freeze): the params it receives hold optax.MaskedNode in place of the leaves of "
      "the other groups, and grad_fn(params, i) would be called with that partial tree. "
      "Write instead: grad_fn=entropix.masked_grad_fn(grad_fn, params) (params: those given "
      "to update), which fills the hidden leaves with their current values, held fixed in "
      "the inner loop.")
