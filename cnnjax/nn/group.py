"""Group-equivariant modules: thin Flax NNX wrappers of :mod:`cnnjax.group`.

:class:`LiftConv` and :class:`GroupConv` hold a kernel and a bias (one per output
channel, shared by the group axis, so that the layer stays equivariant);
:class:`GroupPool` has no parameters. No maths of their own: a test checks every
module against its function for the same weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.dtypes import promote_dtype
from jax.typing import ArrayLike

from cnnjax import _checks
from cnnjax.group import GROUPS, REDUCTIONS, group_conv, group_order, group_pool, lift_conv
from cnnjax.nn._dtypes import check_dtypes, compute
from cnnjax.nn.conv import default_bias_init, default_kernel_init
from cnnjax.padding import PaddingLike

__all__ = ["GroupConv", "GroupPool", "LiftConv"]

Initializer = Any  # (key, shape, dtype) -> jax.Array


def _check(in_features, out_features, kernel_size, group, *, op: str) -> None:
  for name, value in (
      ("in_features", in_features),
      ("out_features", out_features),
      ("kernel_size", kernel_size),
  ):
    _checks.check_positive_int(value, name=name, op=op)
  if group not in GROUPS:
    raise ValueError(f"{op}: group got {group!r}; expected one of {GROUPS}.")


def _bias(bias: jax.Array | None, y: jax.Array) -> jax.Array:
  if bias is None:
    return y
  return y + bias.reshape((1,) * (y.ndim - 1) + bias.shape)


class LiftConv(nnx.Module):
  """Lifting convolution layer, :func:`cnnjax.lift_conv`, plus a bias.

  Args:
    in_features: input channels ``C_in``.
    out_features: output channels ``C_out`` per group element.
    kernel_size: the side ``k`` of the square kernel.
    group: ``"p4"`` or ``"p4m"``.
    stride, padding: as :func:`cnnjax.lift_conv`.
    use_bias: whether to add a bias ``[C_out]`` (shared by the group axis).
    dtype: the computation dtype (default: promoted from input and parameters).
    param_dtype: the parameters' dtype.
    kernel_init, bias_init: initialisers ``(key, shape, dtype) -> array``.
    rngs: the ``nnx.Rngs`` to draw the parameters from.

  Attributes:
    kernel: ``nnx.Param``, ``[k, k, C_in, C_out]``.
    bias: ``nnx.Param``, ``[C_out]``, or None.

  Example:
    >>> LiftConv(3, 8, 3, group="p4", rngs=nnx.Rngs(0))(jnp.ones((1, 9, 9, 3))).shape
    (1, 9, 9, 4, 8)
  """

  def __init__(
      self,
      in_features: int,
      out_features: int,
      kernel_size: int,
      *,
      group: str = "p4",
      stride: int | Sequence[int] = 1,
      padding: PaddingLike = "SAME",
      use_bias: bool = True,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      kernel_init: Initializer = default_kernel_init,
      bias_init: Initializer = default_bias_init,
      rngs: nnx.Rngs,
  ):
    _check(in_features, out_features, kernel_size, group, op="LiftConv")
    self.in_features: int
    self.out_features: int
    self.kernel_size: int
    self.group: str
    self.stride: int | Sequence[int]
    self.padding: PaddingLike
    self.in_features, self.out_features = in_features, out_features
    self.kernel_size, self.group = kernel_size, group
    self.stride, self.padding = stride, padding
    self.use_bias = use_bias
    self.dtype: jnp.dtype | None
    self.param_dtype: jnp.dtype
    self.dtype, self.param_dtype = check_dtypes(dtype, param_dtype, op="LiftConv")
    shape = (kernel_size, kernel_size, in_features, out_features)
    self.kernel: nnx.Param[jax.Array]
    self.kernel = nnx.Param(kernel_init(rngs.params(), shape, self.param_dtype))
    self.bias: nnx.Param[jax.Array] | None
    self.bias = (
        nnx.Param(bias_init(rngs.params(), (out_features,), self.param_dtype)) if use_bias else None
    )

  def __call__(self, x: ArrayLike) -> jax.Array:
    """``[N, H, W, C_in]`` → ``[N, H', W', |G|, C_out]``."""
    x, kernel, bias = promote_dtype(
        (x, self.kernel[...], None if self.bias is None else self.bias[...]),
        dtype=self.dtype,
    )
    return _bias(
        bias, lift_conv(x, kernel, group=self.group, stride=self.stride, padding=self.padding)
    )


class GroupConv(nnx.Module):
  """Group convolution layer, :func:`cnnjax.group_conv`, plus a bias.

  Args:
    in_features: input channels ``C_in`` per group element.
    out_features: output channels ``C_out`` per group element.
    kernel_size: the side ``k`` of the square kernel.
    group, stride, padding, use_bias, dtype, param_dtype, kernel_init, bias_init, rngs:
      as :class:`LiftConv`.

  Attributes:
    kernel: ``nnx.Param``, ``[k, k, |G|, C_in, C_out]``.
    bias: ``nnx.Param``, ``[C_out]``, or None.

  Example:
    >>> layer = GroupConv(8, 16, 3, group="p4", rngs=nnx.Rngs(0))
    >>> layer(jnp.ones((1, 9, 9, 4, 8))).shape
    (1, 9, 9, 4, 16)
  """

  def __init__(
      self,
      in_features: int,
      out_features: int,
      kernel_size: int,
      *,
      group: str = "p4",
      stride: int | Sequence[int] = 1,
      padding: PaddingLike = "SAME",
      use_bias: bool = True,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      kernel_init: Initializer = default_kernel_init,
      bias_init: Initializer = default_bias_init,
      rngs: nnx.Rngs,
  ):
    _check(in_features, out_features, kernel_size, group, op="GroupConv")
    self.in_features: int
    self.out_features: int
    self.kernel_size: int
    self.group: str
    self.stride: int | Sequence[int]
    self.padding: PaddingLike
    self.in_features, self.out_features = in_features, out_features
    self.kernel_size, self.group = kernel_size, group
    self.stride, self.padding = stride, padding
    self.use_bias = use_bias
    self.dtype: jnp.dtype | None
    self.param_dtype: jnp.dtype
    self.dtype, self.param_dtype = check_dtypes(dtype, param_dtype, op="GroupConv")
    shape = (kernel_size, kernel_size, group_order(group), in_features, out_features)
    self.kernel: nnx.Param[jax.Array]
    self.kernel = nnx.Param(kernel_init(rngs.params(), shape, self.param_dtype))
    self.bias: nnx.Param[jax.Array] | None
    self.bias = (
        nnx.Param(bias_init(rngs.params(), (out_features,), self.param_dtype)) if use_bias else None
    )

  def __call__(self, x: ArrayLike) -> jax.Array:
    """``[N, H, W, |G|, C_in]`` → ``[N, H', W', |G|, C_out]``."""
    x, kernel, bias = promote_dtype(
        (x, self.kernel[...], None if self.bias is None else self.bias[...]),
        dtype=self.dtype,
    )
    return _bias(
        bias, group_conv(x, kernel, group=self.group, stride=self.stride, padding=self.padding)
    )


class GroupPool(nnx.Module):
  """Pooling over the group axis, :func:`cnnjax.group_pool`.

  Args:
    reduce: ``"max"`` or ``"mean"``.
    dtype: the computation dtype: the input is cast to it (None: left as it is).
    param_dtype: accepted for a uniform interface (Flax's); this layer has no parameters.

  Example:
    >>> GroupPool()(jnp.ones((1, 5, 5, 4, 8))).shape
    (1, 5, 5, 8)
  """

  def __init__(self, *, reduce: str = "max", dtype: Any = None, param_dtype: Any = jnp.float32):
    self.dtype: jnp.dtype | None
    self.param_dtype: jnp.dtype
    self.dtype, self.param_dtype = check_dtypes(dtype, param_dtype, op="GroupPool")
    if reduce not in REDUCTIONS:
      raise ValueError(f"GroupPool: reduce got {reduce!r}; expected one of {REDUCTIONS}.")
    self.reduce = reduce

  def __call__(self, x: ArrayLike) -> jax.Array:
    """``[N, H, W, |G|, C]`` → ``[N, H, W, C]``."""
    return group_pool(compute(x, self.dtype), reduce=self.reduce)
