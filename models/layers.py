"""Layers shared by the networks, configured as in the authors' PyTorch code."""

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

import entropix

# Flax's BatchNorm momentum: running = BN_MOMENTUM * running + (1 - BN_MOMENTUM) * batch
# (PyTorch's momentum 0.1). The evaluation inverts it to read a batch's statistics.
BN_MOMENTUM = 0.9

# The initialisations a network can start from (its ``param_init`` attribute).
# "flax": Flax's defaults. "pytorch-legacy": the defaults of PyTorch before
# 1.0, which the authors' Table-1 code (PyTorch 0.x, 2017) ran on.
INITS = ("flax", "pytorch-legacy")


def check_init(init: str) -> None:
  """Raises ValueError naming ``init`` unless it is one of :data:`INITS`."""
  if init not in INITS:
    raise ValueError(f"param_init {init!r}: unknown; choose one of {list(INITS)}")


def layer_init(init: str, fan_in: int) -> dict[str, Callable[..., jax.Array]]:
  """``kernel_init`` and ``bias_init`` for an ``nn.Dense`` or ``nn.Conv`` of ``fan_in`` inputs.

  ``"flax"``: nothing, so Flax's defaults (kernel LeCun normal, Var = 1 /
  fan_in; bias 0). ``"pytorch-legacy"``: ``nn.Linear``'s and ``nn.Conv2d``'s
  ``reset_parameters`` in PyTorch 0.x, kernel and bias both U(-b, b) with
  b = 1 / sqrt(fan_in) (Var = 1 / (3 fan_in)); fan_in = kh * kw * C_in for a
  convolution.

  Example:
    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> dense = nn.Dense(3, **layer_init("pytorch-legacy", 4))
    >>> params = dense.init(jax.random.key(0), jnp.ones((1, 4)))["params"]
    >>> bool(jnp.abs(params["bias"]).max() <= 0.5)  # b = 1 / sqrt(4)
    True
  """
  check_init(init)
  if init == "flax":
    return {}
  bound = 1.0 / math.sqrt(fan_in)
  return {
      # variance_scaling's uniform draws U(-sqrt(3 scale / fan_in), +...): scale 1/3 gives b.
      "kernel_init": nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
      "bias_init": lambda key, shape, dtype=jnp.float32: jax.random.uniform(
          key, shape, dtype, -bound, bound),
  }


def batch_norm(train: bool, axis_name: str | None, init: str = "flax") -> nn.BatchNorm:
  """BatchNorm with PyTorch's defaults (momentum 0.1 there is 0.9 here, eps 1e-5).

  In training it normalises with the batch statistics, reduced over
  ``axis_name`` (the global batch under pmap); in evaluation with the running
  ones. Its scale starts at 1, or for ``init="pytorch-legacy"`` at U(0, 1)
  per channel, as PyTorch drew it before 1.0 (pytorch/pytorch#12325 made it
  1); the bias starts at 0.
  """
  check_init(init)
  scale_init = nn.initializers.uniform(1.0) if init == "pytorch-legacy" else nn.initializers.ones
  return nn.BatchNorm(
      use_running_average=not train, momentum=BN_MOMENTUM, epsilon=1e-5, axis_name=axis_name,
      scale_init=scale_init,
  )


class Dropout(nn.Module):
  """Inverted dropout whose mask for an example depends only on its global position.

  ``nn.Dropout`` draws one mask for the local batch, so splitting a batch
  across devices changes every mask. Here row r of the local batch on device
  d is example ``e = d * rows + r`` of the global batch, and unit u of it
  (row-major over the feature axes, U units per example) is kept when

      counter_bits(key, e * U + u) < round((1 - rate) * 2**32),

  where ``key`` is the layer's ``"dropout"`` key (the seed and the
  minibatch) and :func:`entropix.counter_bits` the integer hash that
  entropix draws its noise from. 1 device and N devices (``axis_name`` under
  pmap or shard_map) therefore drop the same units of the same example.
  The hash costs ~12 integer operations per unit, fused by XLA into the
  multiply that applies the mask, where ``jax.random.bernoulli`` (threefry)
  spends ~80 per 32-bit word. The keep rate is exact to 2**-32.

  Attributes:
    rate: probability of zeroing a unit, in [0, 1).
    axis_name: device axis the global batch is split over (None: one device).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> y = Dropout(0.25).apply({}, jnp.ones((2, 4)), deterministic=False,
    ...                         rngs={"dropout": jax.random.key(0)})
    >>> sorted(set(y.ravel().tolist()) - {0.0})  # kept units scaled by 1 / 0.75
    [1.3333333730697632]
  """

  rate: float
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    if not 0.0 <= self.rate < 1.0:
      raise ValueError(f"dropout rate must be in [0, 1), got {self.rate!r}")
    if deterministic or self.rate == 0.0:
      return x
    rows, units = x.shape[0], math.prod(x.shape[1:])
    first, devices = 0, 1
    if self.axis_name is not None:
      first, devices = lax.axis_index(self.axis_name) * rows, lax.axis_size(self.axis_name)
    if rows * devices * units > 2**32:
      raise ValueError(
          f"dropout counts units with 32 bits: a global batch of {rows * devices} x "
          f"{units} units is too large")
    example = (first + lax.iota(jnp.int32, rows)).astype(jnp.uint32) * jnp.uint32(units)
    unit = lax.iota(jnp.uint32, units).reshape(x.shape[1:])
    counter = example.reshape((rows,) + (1,) * (x.ndim - 1)) + unit
    keep_prob = 1.0 - self.rate
    threshold = jnp.uint32(min(round(keep_prob * 2**32), 2**32 - 1))
    keep = entropix.counter_bits(self.make_rng("dropout"), counter) < threshold
    # A multiply by the scaled mask, not jnp.where(keep, x / keep_prob, 0):
    # XLA:CPU fuses that division into the patch convolution that follows,
    # which doubles LeNet's backprop.
    return x * jnp.where(keep, 1.0 / keep_prob, 0.0).astype(x.dtype)


def max_pool(x: jax.Array, window: int) -> jax.Array:
  """Max pooling over disjoint ``window`` x ``window`` patches of NHWC ``x`` (VALID).

  The same values and gradients as ``nn.max_pool(x, (window, window),
  strides=(window, window))``, ties included: the gradient goes to the first
  maximum of each patch in row-major order, as XLA's select-and-scatter sends
  it. XLA:CPU runs select-and-scatter slowly; here the backward pass is one
  elementwise select, several times faster.
  """
  n, h, w, c = x.shape
  rows, cols = h // window, w // window
  patches = x[:, :rows * window, :cols * window].reshape(n, rows, window, cols, window, c)
  patches = patches.transpose(0, 1, 3, 5, 2, 4).reshape(n, rows, cols, c, window * window)
  first = jnp.argmax(patches, axis=-1)[..., None] == jnp.arange(window * window)
  return jnp.where(first, patches, 0).sum(axis=-1)


_NHWC = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), ("NHWC", "HWIO", "NHWC"))


def patch_conv(
    lhs: jax.Array, rhs: jax.Array, window_strides, padding, lhs_dilation=None,
    rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1, **kwargs,
) -> jax.Array:
  """``lax.conv_general_dilated`` as one matmul over explicit patches (im2col).

  For NHWC inputs and HWIO kernels of shape (kh, kw, C, O), unit dilation
  and one feature group, the output at (n, i, j) is

      y[n, i, j] = sum_{a, b, c} x[n, s*i + a, s*j + b, c] * w[a, b, c, o]
                 = P[n, i, j] @ W,

  where P stacks the kh * kw shifted (strided) slices of the padded input
  and W is the kernel reshaped to (kh * kw * C, O). The maths is the
  convolution's; only the summation order differs (float rounding). Its
  gradients are matmuls and slice-adds, which XLA:CPU runs several times
  faster than its convolution gradients (``benchmarks/lenet_convs.py``
  measures LeNet's). The patches take kh * kw times the input's memory, so
  use it for small images (LeNet), not for All-CNN-C. Any other
  configuration goes to ``lax.conv_general_dilated``. Pass it to Flax as
  ``nn.Conv(..., conv_general_dilated=patch_conv)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from jax import lax
    >>> x, w = jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 4))
    >>> dn = ("NHWC", "HWIO", "NHWC")
    >>> y = patch_conv(x, w, (1, 1), "VALID", dimension_numbers=dn)
    >>> bool(jnp.allclose(y, lax.conv_general_dilated(x, w, (1, 1), "VALID",
    ...                                               dimension_numbers=dn)))
    True
  """
  kh, kw, channels, features = rhs.shape
  dims = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  unit = lambda d: d is None or all(v == 1 for v in d)
  if (lhs.ndim != 4 or dims != _NHWC or not unit(lhs_dilation) or not unit(rhs_dilation)
      or feature_group_count != 1 or kwargs.get("batch_group_count", 1) != 1):
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, **kwargs)
  sh, sw = window_strides
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), window_strides, padding)
  x = jnp.pad(lhs, ((0, 0), *padding, (0, 0)))
  n, h, w = x.shape[:3]
  rows, cols = (h - kh) // sh + 1, (w - kw) // sw + 1
  patches = jnp.stack(
      [x[:, a:a + sh * (rows - 1) + 1:sh, b:b + sw * (cols - 1) + 1:sw]
       for a in range(kh) for b in range(kw)], axis=3)
  patches = patches.reshape(n * rows * cols, kh * kw * channels)
  y = jnp.matmul(patches, rhs.reshape(kh * kw * channels, features),
                 precision=kwargs.get("precision"))
  return y.reshape(n, rows, cols, features)


def norm_and_dropout(
    train: bool, dropout: bool | None, axis_name: str | None, init: str = "flax"
) -> tuple[Callable[[], nn.BatchNorm], Callable[[jax.Array, float], jax.Array]]:
  """``(new_norm, drop)``: the BatchNorm and dropout of a network called with ``train``, ``dropout``.

  ``new_norm()`` is a new BatchNorm (batch statistics when ``train``; its
  scale initialised as ``init`` says, :func:`batch_norm`);
  ``drop(x, rate)`` applies :class:`Dropout` at ``rate`` when ``dropout``
  (default: ``train``). Call them inside the network's ``nn.compact`` method.
  """
  deterministic = not (train if dropout is None else dropout)
  new_norm = lambda: batch_norm(train, axis_name, init)
  drop = lambda x, rate: Dropout(rate, axis_name)(x, deterministic=deterministic)
  return new_norm, drop
