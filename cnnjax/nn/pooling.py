"""Pooling modules: thin Flax NNX wrappers of :mod:`cnnjax.pooling`.

Flax NNX has pooling functions but no pooling modules; these hold the configuration
so that pooling layers sit in a model like any other layer (and describe themselves in
:func:`cnnjax.summary.summary` tables). They have no parameters and take no ``rngs``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike

from cnnjax.nn._dtypes import check_dtypes, compute
from cnnjax.padding import PaddingLike
from cnnjax.pooling import (
    avg_pool,
    blur_pool,
    global_avg_pool,
    global_max_pool,
    lp_pool,
    max_pool,
    maxout,
    polyphase_downsample,
)

__all__ = [
    "AvgPool",
    "BlurPool",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "LpPool",
    "MaxPool",
    "Maxout",
    "PolyphaseDownsample",
]


class MaxPool(nnx.Module):
  """Max pooling, :func:`cnnjax.pooling.max_pool`.

  Args:
    window: the window size, an int (every spatial dim) or one int per dim.
    stride: the stride; default the window (non-overlapping windows).
    padding: as :func:`cnnjax.pooling.max_pool`.
    dilation: the spacing of the window's taps, as :func:`cnnjax.pooling.max_pool`.
    ceil_mode: PyTorch's ``ceil_mode`` output size, as :func:`cnnjax.pooling.max_pool`.
    dtype: the computation dtype: the input is cast to it (None: left as it is).
    param_dtype: accepted for a uniform interface (Flax's); this layer has no parameters.

  Example:
    >>> MaxPool(2)(jnp.ones((1, 28, 28, 32))).shape
    (1, 14, 14, 32)
    >>> MaxPool(3, stride=2, ceil_mode=True)(jnp.ones((1, 112, 112, 64))).shape
    (1, 56, 56, 64)
  """

  def __init__(
      self,
      window: int | Sequence[int],
      *,
      stride: int | Sequence[int] | None = None,
      padding: PaddingLike = "VALID",
      dilation: int | Sequence[int] = 1,
      ceil_mode: bool = False,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
  ):
    self.dtype: jnp.dtype | None
    self.param_dtype: jnp.dtype
    self.dtype, self.param_dtype = check_dtypes(dtype, param_dtype, op="MaxPool")
    self.window = window
    self.stride = stride
    self.padding = padding
    self.dilation = dilation
    self.ceil_mode = ceil_mode

  def __call__(self, x: ArrayLike) -> jax.Array:
    """``[N, *spatial, C]`` → ``[N, *out_spatial, C]``."""
    return max_pool(
        compute(x, self.dtype),
        self.window,
        stride=self.stride,
        padding=self.padding,
        dilation=self.dilation,
        ceil_mode=self.ceil_mode,
    )


class AvgPool(nnx.Module):
  """Average pooling, :func:`cnnjax.pooling.avg_pool`.

  Args:
    window: the window size, an int or one int per spatial dim.
    stride: the stride; default the window.
    padding: as :func:`cnnjax.pooling.avg_pool`.
    ceil_mode: PyTorch's ``ceil_mode`` output size, as :func:`cnnjax.pooling.avg_pool`.
    count_include_pad: whether padded positions count in the average's divisor
      (cnnjax's default False, PyTorch's True).
    divisor_override: divide every window by this positive int instead.
    dtype: the computation dtype: the input is cast to it (None: left as it is).
    param_dtype: accepted for a uniform interface (Flax's); this layer has no parameters.

  Example:
    >>> AvgPool(2)(jnp.ones((1, 28, 28, 6))).shape
    (1, 14, 14, 6)
    >>> AvgPool(2, divisor_override=1)(jnp.ones((1, 4, 4, 1)))[0, :, :, 0].tolist()
    [[4.0, 4.0], [4.0, 4.0]]
  """

  def __init__(
      self,
      window: int | Sequence[int],
      *,
      stride: int | Sequence[int] | None = None,
      padding: PaddingLike = "VALID",
      ceil_mode: bool = False,
      count_include_pad: bool = False,
      divisor_override: int | None = None,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
  ):
    self.dtype: jnp.dtype | None
    self.param_dtype: jnp.dtype
    self.dtype, self.param_dtype = check_dtypes(dtype, param_dtype, op="AvgPool")
    self.window = window
    self.stride = stride
    self.padding = padding
    self.ceil_mode = ceil_mode
    self.count_include_pad = count_include_pad
    self.divisor_override = divisor_override

  def __call__(self, x: ArrayLike) -> jax.Array:
    """``[N, *spatial, C]`` → ``[N, *out_spatial, C]``."""
    return avg_pool(
        compute(x, self.dtype),
        self.window,
        stride=self.stride,
        padding=self.padding,
        ceil_mode=self.ceil_mode,
        count_include_pad=self.count_include_pad,
        divisor_override=self.divisor_override,
    )


class LpPool(nnx.Module):
  """L^p pooling ``(Σ |x|^p)^(1/p)`` over each window, :func:`cnnjax.pooling.lp_pool`.

  Args:
    window: the window size, an int or one int per spatial dim.
    p: the exponent (``p=2`` is L2 pooling).
    stride: the stride; default the window.
    padding: as :func:`cnnjax.pooling.lp_pool`.
    ceil_mode: PyTorch's ``ceil_mode`` output size, as :func:`cnnjax.pooling.lp_pool`.
    dtype: the computation dtype: the input is cast to it (None: left as it is).
    param_dtype: accepted for a uniform interface (Flax's); this layer has no parameters.

  Example:
    >>> LpPool(2, p=2)(jnp.ones((1, 4, 4, 1)))[0, :, :, 0].tolist()
    [[2.0, 2.0], [2.0, 2.0]]
  """

  def __init__(
      self,
      window: int | Sequence[int],
      *,
      p: float = 2,
      stride: int | Sequence[int] | None = None,
      padding: PaddingLike = "VALID",
      ceil_mode: bool = False,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
  ):
    self.dtype: jnp.dtype | None
    self.param_dtype: jnp.dtype
    self.dtype, self.param_dtype = check_dtypes(dtype, param_dtype, op="LpPool")
    self.window = window
    self.p = p
    self.stride = stride
    self.padding = padding
    self.ceil_mode = ceil_mode

  def __call__(self, x: ArrayLike) -> jax.Array:
    """``[N, *spatial, C]`` → ``[N, *out_spatial, C]``."""
    return lp_pool(
        compute(x, self.dtype),
        self.window,
        p=self.p,
        stride=self.stride,
        padding=self.padding,
        ceil_mode=self.ceil_mode,
    )


class GlobalAvgPool(nnx.Module):
  """The mean over all spatial dims, :func:`cnnjax.pooling.global_avg_pool`.

  Args:
    keepdims: keep the spatial dims as size 1 (``[N, 1, 1, C]``) instead of ``[N, C]``.
    dtype: the computation dtype: the input is cast to it (None: left as it is).
    param_dtype: accepted for a uniform interface (Flax's); this layer has no parameters.

  Example:
    >>> GlobalAvgPool()(jnp.ones((2, 8, 8, 64))).shape
    (2, 64)
  """

  def __init__(self, *, keepdims: bool = False, dtype: Any = None, param_dtype: Any = jnp.float32):
    self.dtype: jnp.dtype | None
    self.param_dtype: jnp.dtype
    self.dtype, self.param_dtype = check_dtypes(dtype, param_dtype, op="GlobalAvgPool")
    self.keepdims = keepdims

  def __call__(self, x: ArrayLike) -> jax.Array:
    """``[N, *spatial, C]`` → ``[N, C]``."""
    return global_avg_pool(compute(x, self.dtype), keepdims=self.keepdims)


class GlobalMaxPool(nnx.Module):
  """The maximum over all spatial dims, :func:`cnnjax.pooling.global_max_pool`.

  Args:
    keepdims: keep the spatial dims as size 1 instead of returning ``[N, C]``.
    dtype: the computation dtype: the input is cast to it (None: left as it is).
    param_dtype: accepted for a uniform interface (Flax's); this layer has no parameters.

  Example:
    >>> GlobalMaxPool()(jnp.ones((2, 8, 8, 64))).shape
    (2, 64)
  """

  def __init__(self, *, keepdims: bool = False, dtype: Any = None, param_dtype: Any = jnp.float32):
    self.dtype: jnp.dtype | None
    self.param_dtype: jnp.dtype
    self.dtype, self.param_dtype = check_dtypes(dtype, param_dtype, op="GlobalMaxPool")
    self.keepdims = keepdims

  def __call__(self, x: ArrayLike) -> jax.Array:
    """``[N, *spatial, C]`` → ``[N, C]``."""
    return global_max_pool(compute(x, self.dtype), keepdims=self.keepdims)


class Maxout(nnx.Module):
  """Maxout feature pooling (Goodfellow et al. 2013), :func:`cnnjax.pooling.maxout`.

  Channel ``c`` belongs to group ``c // pieces``; each group gives its maximum.

  Args:
    pieces: the number of channels per group.
    axis: the channel axis.
    dtype: the computation dtype: the input is cast to it (None: left as it is).
    param_dtype: accepted for a uniform interface (Flax's); this layer has no parameters.

  Example:
    >>> Maxout(4)(jnp.ones((1, 8, 8, 32))).shape
    (1, 8, 8, 8)
  """

  def __init__(
      self, pieces: int, *, axis: int = -1, dtype: Any = None, param_dtype: Any = jnp.float32
  ):
    self.dtype: jnp.dtype | None
    self.param_dtype: jnp.dtype
    self.dtype, self.param_dtype = check_dtypes(dtype, param_dtype, op="Maxout")
    self.pieces = pieces
    self.axis = axis

  def __call__(self, x: ArrayLike) -> jax.Array:
    """``[..., C, ...]`` → ``[..., C // pieces, ...]``."""
    return maxout(compute(x, self.dtype), self.pieces, axis=self.axis)


class BlurPool(nnx.Module):
  """Anti-aliased downsampling (Zhang 2019), :func:`cnnjax.pooling.blur_pool`.

  Args:
    stride: the subsampling factor, an int or one per spatial dim.
    kernel_size: the number of binomial taps, an int or one per spatial dim.
    padding_mode: ``"reflect"`` (default), ``"zeros"``, ``"circular"`` or ``"edge"``.
    dtype: the computation dtype: the input is cast to it (None: left as it is).
    param_dtype: accepted for a uniform interface (Flax's); this layer has no parameters.

  Example:
    >>> BlurPool(stride=2)(jnp.ones((1, 8, 8, 3))).shape
    (1, 4, 4, 3)
  """

  def __init__(
      self,
      *,
      stride: int | Sequence[int] = 2,
      kernel_size: int | Sequence[int] = 3,
      padding_mode: str = "reflect",
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
  ):
    self.dtype: jnp.dtype | None
    self.param_dtype: jnp.dtype
    self.dtype, self.param_dtype = check_dtypes(dtype, param_dtype, op="BlurPool")
    self.stride = stride
    self.kernel_size = kernel_size
    self.padding_mode = padding_mode

  def __call__(self, x: ArrayLike) -> jax.Array:
    """``[N, *spatial, C]`` → ``[N, *ceil(spatial / stride), C]``."""
    return blur_pool(
        compute(x, self.dtype),
        stride=self.stride,
        kernel_size=self.kernel_size,
        padding_mode=self.padding_mode,
    )


class PolyphaseDownsample(nnx.Module):
  """Adaptive polyphase sampling (Chaman & Dokmanić 2021),
  :func:`cnnjax.pooling.polyphase_downsample`.

  Keeps the polyphase component with the largest l_p norm, so downsampling is
  equivariant to circular shifts.

  Args:
    stride: the subsampling factor.
    p: the norm that picks the component.
    dtype: the computation dtype: the input is cast to it (None: left as it is).
    param_dtype: accepted for a uniform interface (Flax's); this layer has no parameters.

  Example:
    >>> PolyphaseDownsample(stride=2)(jnp.ones((1, 8, 8, 3))).shape
    (1, 4, 4, 3)
  """

  def __init__(
      self,
      *,
      stride: int | Sequence[int] = 2,
      p: float = 2,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
  ):
    self.dtype: jnp.dtype | None
    self.param_dtype: jnp.dtype
    self.dtype, self.param_dtype = check_dtypes(dtype, param_dtype, op="PolyphaseDownsample")
    self.stride = stride
    self.p = p

  def __call__(self, x: ArrayLike) -> jax.Array:
    """``[N, *spatial, C]`` → ``[N, *spatial / stride, C]``."""
    return polyphase_downsample(compute(x, self.dtype), stride=self.stride, p=self.p)
