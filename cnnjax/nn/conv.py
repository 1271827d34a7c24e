"""Convolution-family modules: thin Flax NNX wrappers of :mod:`cnnjax.conv`,
:mod:`cnnjax.local` and :mod:`cnnjax.tiled`, with Keras' depthwise and depthwise-separable
layers as grouped convolutions.

Each module holds its weights as ``nnx.Param`` and its configuration as plain
attributes; ``__call__`` promotes dtypes as ``nnx.Conv`` does, calls the cnnjax
function and adds the bias. No maths of their own: a test checks every module
against its function for the same weights.

``kernel_size`` is an int for a square 2-D kernel (the common case) or a tuple with
one size per spatial dim (``(5,)`` for 1-D, ``(3, 3, 3)`` for 3-D).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.dtypes import promote_dtype
from jax import lax
from jax.typing import ArrayLike

from cnnjax import _checks
from cnnjax import padding as _padding
from cnnjax.conv import conv_transpose, convolve, cross_correlate
from cnnjax.local import locally_connected
from cnnjax.nn._dtypes import check_dtypes
from cnnjax.padding import PaddingLike
from cnnjax.tiled import tiled_conv

__all__ = [
    "Conv",
    "ConvTranspose",
    "DepthwiseConv",
    "LocallyConnected",
    "SeparableConv",
    "TiledConv",
]

Initializer = Any  # (key, shape, dtype) -> jax.Array

default_kernel_init: Initializer = nnx.initializers.lecun_normal()
default_bias_init: Initializer = nnx.initializers.zeros_init()
# ConvTranspose's kernel is [*kernel, out / groups, in]: its input axis is the last.
default_transpose_kernel_init: Initializer = nnx.initializers.lecun_normal(in_axis=-1, out_axis=-2)


def _positive(value, *, name: str, op: str) -> int:
  return _checks.check_positive_int(value, name=name, op=op)


def kernel_shape(kernel_size: int | Sequence[int], *, op: str) -> tuple[int, ...]:
  """``kernel_size`` as a tuple: an int is a square 2-D kernel."""
  if _checks.is_int(kernel_size):
    _positive(kernel_size, name="kernel_size", op=op)  # (the message names the int given)
    kernel_size = (int(kernel_size), int(kernel_size))
  if isinstance(kernel_size, Sequence) and not isinstance(kernel_size, str):
    num_spatial = len(kernel_size)
  else:
    num_spatial = 0
  if num_spatial not in (1, 2, 3):
    raise ValueError(
        f"{op}: kernel_size got {kernel_size!r}; expected a positive int (a square "
        "2-D kernel) or a tuple of 1, 2 or 3 positive ints."
    )
  return _padding.normalize_ints(kernel_size, num_spatial, name="kernel_size", op=op)


def _check_stride_dilation(stride, dilation, num_spatial: int, *, op: str) -> None:
  """Refuses a bad stride or dilation at construction rather than at the first call."""
  _padding.normalize_ints(stride, num_spatial, name="stride", op=op)
  _padding.normalize_ints(dilation, num_spatial, name="dilation", op=op)


def _check_mask(mask, shape: tuple[int, ...], *, op: str) -> jax.Array | None:
  """``mask`` as an array of the kernel's ``shape`` (Flax's ``nnx.Conv(mask=...)``)."""
  if mask is None:
    return None
  try:
    array = jnp.asarray(mask)
  except TypeError:
    raise TypeError(
        f"{op}: mask got a {type(mask).__name__}; expected an array of the kernel's shape "
        f"{shape}."
    ) from None
  if not (
      jnp.issubdtype(array.dtype, jnp.floating)
      or jnp.issubdtype(array.dtype, jnp.integer)
      or array.dtype == jnp.bool_
  ):
    raise TypeError(
        f"{op}: mask has dtype {array.dtype}; expected a real (floating, integer or " "bool) array."
    )
  if array.shape != shape:
    raise ValueError(
        f"{op}: mask has shape {tuple(array.shape)}; expected the kernel's shape {shape} "
        "([*kernel_size, in_features // groups, out_features])."
    )
  return array


def _bias(bias: jax.Array | None, y: jax.Array) -> jax.Array:
  """Adds a bias broadcast explicitly over the leading axes of ``y``."""
  if bias is None:
    return y
  return y + bias.reshape((1,) * (y.ndim - bias.ndim) + bias.shape)


class Conv(nnx.Module):
  """Convolution layer (cross-correlation by default) over 1, 2 or 3 spatial dims.

  Wraps :func:`cnnjax.conv.cross_correlate`, or :func:`cnnjax.conv.convolve` (the
  kernel flipped: true convolution) with ``flip_kernel=True``.

  Args:
    in_features: input channels ``C_in``.
    out_features: output channels ``C_out``.
    kernel_size: an int (square 2-D kernel) or one size per spatial dim.
    stride, padding, dilation, groups, padding_mode, strict, precision: as
      :func:`cnnjax.conv.cross_correlate`.
    flip_kernel: if True, true convolution (:func:`cnnjax.conv.convolve`).
    connections: optional ``[C_in // groups, C_out]`` 0/1 connection table: output map
      ``o`` sees input map ``c`` only where ``connections[c][o]`` is 1 (LeNet-5's C3
      layer). The kernel keeps its full shape; the table multiplies it.
    mask: optional array of the kernel's shape, ``[*kernel_size, C_in // groups,
      C_out]``, that multiplies the kernel before each convolution (Flax's
      ``nnx.Conv(mask=...)``: a causal or masked convolution). Kept as a constant,
      not a parameter; the kernel keeps its full shape.
    use_bias: whether to add a bias ``[C_out]``.
    dtype: the computation dtype (default: promoted from input and parameters).
    param_dtype: the parameters' dtype.
    kernel_init, bias_init: initialisers ``(key, shape, dtype) -> array``.
    rngs: the ``nnx.Rngs`` to draw the parameters from.

  Attributes:
    kernel: ``nnx.Param``, ``[*kernel_size, C_in // groups, C_out]``.
    bias: ``nnx.Param``, ``[C_out]``, or None.
    mask: the kernel's mask (an array), or None.

  Example:
    >>> conv = Conv(3, 32, 5, rngs=nnx.Rngs(0))
    >>> conv(jnp.ones((1, 32, 32, 3))).shape
    (1, 28, 28, 32)
    >>> causal = Conv(1, 1, (3,), padding="CAUSAL", mask=jnp.ones((3, 1, 1)).at[2].set(0),
    ...               use_bias=False, rngs=nnx.Rngs(0))
    >>> y = causal(jnp.zeros((1, 6, 1)).at[0, 3, 0].set(1.0))  # y[t] reads x[t-2], x[t-1]
    >>> [bool(v != 0) for v in y[0, :, 0]]
    [False, False, False, False, True, True]
  """

  def __init__(
      self,
      in_features: int,
      out_features: int,
      kernel_size: int | Sequence[int],
      *,
      stride: int | Sequence[int] = 1,
      padding: PaddingLike = "VALID",
      dilation: int | Sequence[int] = 1,
      groups: int = 1,
      padding_mode: str = "zeros",
      flip_kernel: bool = False,
      strict: bool = False,
      connections: Sequence[Sequence[int]] | None = None,
      mask: ArrayLike | None = None,
      use_bias: bool = True,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      precision: lax.PrecisionLike = None,
      kernel_init: Initializer = default_kernel_init,
      bias_init: Initializer = default_bias_init,
      rngs: nnx.Rngs,
  ):
    op = "Conv"
    _positive(in_features, name="in_features", op=op)
    _positive(out_features, name="out_features", op=op)
    _positive(groups, name="groups", op=op)
    for name, value in (("in_features", in_features), ("out_features", out_features)):
      if value % groups:
        raise ValueError(
            f"{op}: {name} got {value!r}, which groups={groups} does not divide; "
            f"expected {name} to be a multiple of groups."
        )
    _padding.check_padding_mode(padding_mode, op=op)
    self.kernel_size: tuple[int, ...] = kernel_shape(kernel_size, op=op)
    _check_stride_dilation(stride, dilation, len(self.kernel_size), op=op)
    shape = (*self.kernel_size, in_features // groups, out_features)
    if connections is not None:
      table = tuple(tuple(int(bool(v)) for v in row) for row in connections)
      if len(table) != shape[-2] or any(len(row) != shape[-1] for row in table):
        raise ValueError(
            f"{op}: connections has {len(table)} rows of lengths "
            f"{sorted({len(row) for row in table})}; expected a table "
            f"[in_features // groups, out_features] = {list(shape[-2:])}."
        )
      connections = table
    self.mask: jax.Array | None = _check_mask(mask, shape, op=op)
    self.in_features = in_features
    self.out_features = out_features
    self.stride = stride
    self.padding = padding
    self.dilation = dilation
    self.groups = groups
    self.padding_mode = padding_mode
    self.flip_kernel = flip_kernel
    self.strict = strict
    self.connections = connections
    self.use_bias = use_bias
    self.dtype: jnp.dtype | None
    self.param_dtype: jnp.dtype
    self.dtype, self.param_dtype = check_dtypes(dtype, param_dtype, op=op)
    param_dtype = self.param_dtype
    self.precision = precision
    # An nnx.Param; a Variable as well, as FastNet's frozen whitening kernel is one.
    self.kernel: nnx.Variable[jax.Array] = nnx.Param(kernel_init(rngs.params(), shape, param_dtype))
    self.bias: nnx.Param[jax.Array] | None = (
        nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype)) if use_bias else None
    )

  def __call__(self, x: ArrayLike) -> jax.Array:
    """``[N, *spatial, C_in]`` → ``[N, *out_spatial, C_out]``."""
    x, kernel, bias = promote_dtype(
        (x, self.kernel[...], None if self.bias is None else self.bias[...]),
        dtype=self.dtype,
    )
    if self.connections is not None:
      table = jnp.asarray(self.connections, kernel.dtype)
      kernel = kernel * table.reshape((1,) * len(self.kernel_size) + table.shape)
    if self.mask is not None:
      kernel = kernel * self.mask.astype(kernel.dtype)
    conv = convolve if self.flip_kernel else cross_correlate
    return _bias(
        bias,
        conv(
            x,
            kernel,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            padding_mode=self.padding_mode,
            strict=self.strict,
            precision=self.precision,
        ),
    )


class ConvTranspose(nnx.Module):
  """Transposed convolution: the adjoint of a :class:`Conv` with the same settings.

  Wraps :func:`cnnjax.conv.conv_transpose`. The kernel is stored in the layout of the
  *forward* convolution it transposes, ``[*kernel_size, C_out // groups, C_in]``
  (``C_in`` this module's input channels, the forward op's output channels), so
  ``ConvTranspose(a, b, ...)`` with ``kernel`` is exactly the input-gradient of
  ``Conv(b, a, ...)`` with the same ``kernel`` (no bias).

  Args:
    in_features: input channels ``C_in`` (the forward op's outputs).
    out_features: output channels ``C_out`` (the forward op's inputs).
    kernel_size: an int (square 2-D kernel) or one size per spatial dim.
    stride, padding, dilation, groups, precision: the forward op's settings, as
      :func:`cnnjax.conv.conv_transpose`.
    input_shape: the output's spatial shape (the forward op's input), which resolves
      the size a stride leaves ambiguous; a call may override it.
    use_bias, dtype, param_dtype, kernel_init, bias_init, rngs: as :class:`Conv`.

  Example:
    >>> up = ConvTranspose(8, 4, 3, stride=2, rngs=nnx.Rngs(0))
    >>> up(jnp.ones((1, 5, 5, 8))).shape
    (1, 11, 11, 4)
  """

  def __init__(
      self,
      in_features: int,
      out_features: int,
      kernel_size: int | Sequence[int],
      *,
      stride: int | Sequence[int] = 1,
      padding: PaddingLike = "VALID",
      dilation: int | Sequence[int] = 1,
      groups: int = 1,
      input_shape: Sequence[int] | None = None,
      use_bias: bool = True,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      precision: lax.PrecisionLike = None,
      kernel_init: Initializer = default_transpose_kernel_init,
      bias_init: Initializer = default_bias_init,
      rngs: nnx.Rngs,
  ):
    op = "ConvTranspose"
    _positive(in_features, name="in_features", op=op)
    _positive(out_features, name="out_features", op=op)
    _positive(groups, name="groups", op=op)
    for name, value in (("in_features", in_features), ("out_features", out_features)):
      if value % groups:
        raise ValueError(
            f"{op}: {name} got {value!r}, which groups={groups} does not divide; "
            f"expected {name} to be a multiple of groups."
        )
    self.kernel_size: tuple[int, ...] = kernel_shape(kernel_size, op=op)
    _check_stride_dilation(stride, dilation, len(self.kernel_size), op=op)
    shape = (*self.kernel_size, out_features // groups, in_features)
    self.in_features = in_features
    self.out_features = out_features
    self.stride = stride
    self.padding = padding
    self.dilation = dilation
    self.groups = groups
    self.input_shape: tuple[int, ...] | None = None if input_shape is None else tuple(input_shape)
    self.use_bias = use_bias
    self.dtype: jnp.dtype | None
    self.param_dtype: jnp.dtype
    self.dtype, self.param_dtype = check_dtypes(dtype, param_dtype, op=op)
    param_dtype = self.param_dtype
    self.precision = precision
    self.kernel: nnx.Param[jax.Array] = nnx.Param(kernel_init(rngs.params(), shape, param_dtype))
    self.bias: nnx.Param[jax.Array] | None = (
        nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype)) if use_bias else None
    )

  def __call__(self, y: ArrayLike, *, input_shape: Sequence[int] | None = None) -> jax.Array:
    """``[N, *spatial, C_in]`` → ``[N, *input_shape, C_out]``."""
    y, kernel, bias = promote_dtype(
        (y, self.kernel[...], None if self.bias is None else self.bias[...]),
        dtype=self.dtype,
    )
    return _bias(
        bias,
        conv_transpose(
            y,
            kernel,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            precision=self.precision,
            input_shape=self.input_shape if input_shape is None else input_shape,
        ),
    )


def _check_features(in_features, depth_multiplier, *, op: str) -> tuple[int, int]:
  cin = _positive(in_features, name="in_features", op=op)
  multiplier = _positive(depth_multiplier, name="depth_multiplier", op=op)
  return cin, multiplier


class DepthwiseConv(nnx.Module):
  """Depthwise convolution (Keras ``DepthwiseConv2D``): each input channel alone.

  Input channel ``c`` is cross-correlated with ``depth_multiplier`` kernels of its own,
  giving output channels ``c·depth_multiplier + m`` (Keras' order): a
  :func:`cnnjax.conv.cross_correlate` with ``groups=C_in``, so ``C_out = C_in ·
  depth_multiplier``.

  Args:
    in_features: input channels ``C_in``.
    kernel_size: an int (square 2-D kernel) or one size per spatial dim.
    depth_multiplier: output channels per input channel (Keras' ``depth_multiplier``).
    stride, padding, dilation, padding_mode, strict, precision: as
      :func:`cnnjax.conv.cross_correlate`.
    use_bias: whether to add a bias ``[C_in · depth_multiplier]``.
    dtype, param_dtype, kernel_init, bias_init, rngs: as :class:`Conv` (the default
      LeCun normal's fan-in is one channel's window, ``prod(kernel_size)``).

  Attributes:
    kernel: ``nnx.Param``, ``[*kernel_size, 1, C_in · depth_multiplier]``; Keras'
      ``[*kernel_size, C_in, depth_multiplier]`` kernel ``k`` is
      ``k.reshape(*kernel_size, 1, -1)``.
    bias: ``nnx.Param``, ``[C_in · depth_multiplier]``, or None.
    out_features: ``C_in · depth_multiplier``.

  Example:
    >>> dw = DepthwiseConv(8, 3, depth_multiplier=2, padding="SAME", rngs=nnx.Rngs(0))
    >>> dw.kernel.shape, dw(jnp.ones((1, 16, 16, 8))).shape
    ((3, 3, 1, 16), (1, 16, 16, 16))
  """

  def __init__(
      self,
      in_features: int,
      kernel_size: int | Sequence[int],
      *,
      depth_multiplier: int = 1,
      stride: int | Sequence[int] = 1,
      padding: PaddingLike = "VALID",
      dilation: int | Sequence[int] = 1,
      padding_mode: str = "zeros",
      strict: bool = False,
      use_bias: bool = True,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      precision: lax.PrecisionLike = None,
      kernel_init: Initializer = default_kernel_init,
      bias_init: Initializer = default_bias_init,
      rngs: nnx.Rngs,
  ):
    op = "DepthwiseConv"
    cin, multiplier = _check_features(in_features, depth_multiplier, op=op)
    _padding.check_padding_mode(padding_mode, op=op)
    self.kernel_size: tuple[int, ...] = kernel_shape(kernel_size, op=op)
    _check_stride_dilation(stride, dilation, len(self.kernel_size), op=op)
    self.in_features = cin
    self.depth_multiplier = multiplier
    self.out_features: int = cin * multiplier
    self.stride = stride
    self.padding = padding
    self.dilation = dilation
    self.padding_mode = padding_mode
    self.strict = strict
    self.use_bias = use_bias
    self.dtype: jnp.dtype | None
    self.param_dtype: jnp.dtype
    self.dtype, self.param_dtype = check_dtypes(dtype, param_dtype, op=op)
    self.precision = precision
    shape = (*self.kernel_size, 1, self.out_features)
    self.kernel: nnx.Param[jax.Array] = nnx.Param(
        kernel_init(rngs.params(), shape, self.param_dtype)
    )
    self.bias: nnx.Param[jax.Array] | None = (
        nnx.Param(bias_init(rngs.params(), (self.out_features,), self.param_dtype))
        if use_bias
        else None
    )

  def __call__(self, x: ArrayLike) -> jax.Array:
    """``[N, *spatial, C_in]`` → ``[N, *out_spatial, C_in · depth_multiplier]``."""
    x, kernel, bias = promote_dtype(
        (x, self.kernel[...], None if self.bias is None else self.bias[...]),
        dtype=self.dtype,
    )
    return _bias(
        bias,
        cross_correlate(
            x,
            kernel,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.in_features,
            padding_mode=self.padding_mode,
            strict=self.strict,
            precision=self.precision,
        ),
    )


class SeparableConv(nnx.Module):
  """Depthwise-separable convolution (Keras ``SeparableConv2D``): depthwise, then 1×1.

  A :class:`DepthwiseConv` without bias (``C_in · depth_multiplier`` channels), then a
  pointwise (1×1) :func:`cnnjax.conv.cross_correlate` to ``C_out`` channels, then the
  bias: ``prod(kernel_size) · C_in · depth_multiplier + C_in · depth_multiplier · C_out``
  weights instead of a full convolution's ``prod(kernel_size) · C_in · C_out``.

  Args:
    in_features: input channels ``C_in``.
    out_features: output channels ``C_out`` (Keras' ``filters``).
    kernel_size: the depthwise kernel, an int (square 2-D) or one size per spatial dim.
    depth_multiplier: depthwise output channels per input channel.
    stride, padding, dilation, padding_mode, strict, precision: the depthwise step's,
      as :func:`cnnjax.conv.cross_correlate`.
    use_bias: whether to add a bias ``[C_out]`` (after the pointwise step).
    depthwise_init, pointwise_init: the kernels' initialisers (LeCun normal).
    dtype, param_dtype, bias_init, rngs: as :class:`Conv`.

  Attributes:
    depthwise_kernel: ``nnx.Param``, ``[*kernel_size, 1, C_in · depth_multiplier]``.
    pointwise_kernel: ``nnx.Param``, ``[1, …, 1, C_in · depth_multiplier, C_out]``;
      Keras' pointwise kernel has the same layout.
    bias: ``nnx.Param``, ``[C_out]``, or None.

  Example:
    >>> sep = SeparableConv(8, 32, 3, padding="SAME", rngs=nnx.Rngs(0))
    >>> sep.depthwise_kernel.shape, sep.pointwise_kernel.shape
    ((3, 3, 1, 8), (1, 1, 8, 32))
    >>> sep(jnp.ones((1, 16, 16, 8))).shape
    (1, 16, 16, 32)
  """

  def __init__(
      self,
      in_features: int,
      out_features: int,
      kernel_size: int | Sequence[int],
      *,
      depth_multiplier: int = 1,
      stride: int | Sequence[int] = 1,
      padding: PaddingLike = "VALID",
      dilation: int | Sequence[int] = 1,
      padding_mode: str = "zeros",
      strict: bool = False,
      use_bias: bool = True,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      precision: lax.PrecisionLike = None,
      depthwise_init: Initializer = default_kernel_init,
      pointwise_init: Initializer = default_kernel_init,
      bias_init: Initializer = default_bias_init,
      rngs: nnx.Rngs,
  ):
    op = "SeparableConv"
    cin, multiplier = _check_features(in_features, depth_multiplier, op=op)
    cout = _positive(out_features, name="out_features", op=op)
    _padding.check_padding_mode(padding_mode, op=op)
    self.kernel_size: tuple[int, ...] = kernel_shape(kernel_size, op=op)
    nd = len(self.kernel_size)
    _check_stride_dilation(stride, dilation, nd, op=op)
    self.in_features = cin
    self.out_features = cout
    self.depth_multiplier = multiplier
    self.stride = stride
    self.padding = padding
    self.dilation = dilation
    self.padding_mode = padding_mode
    self.strict = strict
    self.use_bias = use_bias
    self.dtype: jnp.dtype | None
    self.param_dtype: jnp.dtype
    self.dtype, self.param_dtype = check_dtypes(dtype, param_dtype, op=op)
    self.precision = precision
    mid = cin * multiplier
    self.depthwise_kernel: nnx.Param[jax.Array] = nnx.Param(
        depthwise_init(rngs.params(), (*self.kernel_size, 1, mid), self.param_dtype)
    )
    self.pointwise_kernel: nnx.Param[jax.Array] = nnx.Param(
        pointwise_init(rngs.params(), (*(1,) * nd, mid, cout), self.param_dtype)
    )
    self.bias: nnx.Param[jax.Array] | None = (
        nnx.Param(bias_init(rngs.params(), (cout,), self.param_dtype)) if use_bias else None
    )

  def __call__(self, x: ArrayLike) -> jax.Array:
    """``[N, *spatial, C_in]`` → ``[N, *out_spatial, C_out]``."""
    x, depthwise, pointwise, bias = promote_dtype(
        (
            x,
            self.depthwise_kernel[...],
            self.pointwise_kernel[...],
            None if self.bias is None else self.bias[...],
        ),
        dtype=self.dtype,
    )
    h = cross_correlate(
        x,
        depthwise,
        stride=self.stride,
        padding=self.padding,
        dilation=self.dilation,
        groups=self.in_features,
        padding_mode=self.padding_mode,
        strict=self.strict,
        precision=self.precision,
    )
    return _bias(bias, cross_correlate(h, pointwise, precision=self.precision))


class LocallyConnected(nnx.Module):
  """Locally connected (unshared) convolution: one kernel per output position.

  Wraps :func:`cnnjax.local.locally_connected`. The weight grid depends on the
  output's spatial shape, so the module takes the input's spatial shape at
  construction and sizes the grid with :func:`cnnjax.padding.conv_geometry`.

  Args:
    in_features: input channels ``C_in``.
    out_features: output channels ``C_out``.
    kernel_size: an int (square 2-D kernel) or one size per spatial dim.
    input_shape: the input's spatial shape (no batch, no channels), e.g. ``(32, 32)``.
    stride, padding, dilation, padding_mode, precision: as
      :func:`cnnjax.local.locally_connected`.
    use_bias: whether to add an unshared bias ``[*out_spatial, C_out]``.
    kernel_init: default LeCun normal over one kernel's fan-in
      (``prod(kernel_size) · C_in``).
    dtype, param_dtype, bias_init, rngs: as :class:`Conv`.

  Attributes:
    kernel: ``nnx.Param``, ``[*out_spatial, *kernel_size, C_in, C_out]``.
    bias: ``nnx.Param``, ``[*out_spatial, C_out]``, or None.
    out_spatial: the output's spatial shape.

  Example:
    >>> lc = LocallyConnected(3, 5, 7, input_shape=(30, 30), rngs=nnx.Rngs(0))
    >>> lc.kernel.shape, lc(jnp.ones((2, 30, 30, 3))).shape
    ((24, 24, 7, 7, 3, 5), (2, 24, 24, 5))
  """

  def __init__(
      self,
      in_features: int,
      out_features: int,
      kernel_size: int | Sequence[int],
      *,
      input_shape: Sequence[int],
      stride: int | Sequence[int] = 1,
      padding: PaddingLike = "VALID",
      dilation: int | Sequence[int] = 1,
      padding_mode: str = "zeros",
      use_bias: bool = True,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      precision: lax.PrecisionLike = None,
      kernel_init: Initializer | None = None,
      bias_init: Initializer = default_bias_init,
      rngs: nnx.Rngs,
  ):
    op = "LocallyConnected"
    _positive(in_features, name="in_features", op=op)
    _positive(out_features, name="out_features", op=op)
    _padding.check_padding_mode(padding_mode, op=op)
    self.kernel_size: tuple[int, ...] = kernel_shape(kernel_size, op=op)
    nd = len(self.kernel_size)
    if isinstance(input_shape, int) or not isinstance(input_shape, Sequence):
      raise ValueError(
          f"{op}: input_shape got {input_shape!r}; expected the input's spatial "
          f"shape, a tuple of {nd} positive ints."
      )
    input_shape = _padding.normalize_ints(tuple(input_shape), nd, name="input_shape", op=op)
    geo = _padding.conv_geometry(
        input_shape,
        self.kernel_size,
        stride=stride,
        padding=padding,
        dilation=dilation,
        op=op,
    )
    self.in_features = in_features
    self.out_features = out_features
    self.input_shape = input_shape
    self.out_spatial: tuple[int, ...] = geo.out_spatial
    self.stride = stride
    self.padding = padding
    self.dilation = dilation
    self.padding_mode = padding_mode
    self.use_bias = use_bias
    self.dtype: jnp.dtype | None
    self.param_dtype: jnp.dtype
    self.dtype, self.param_dtype = check_dtypes(dtype, param_dtype, op=op)
    param_dtype = self.param_dtype
    self.precision = precision
    if kernel_init is None:
      kernel_init = nnx.initializers.lecun_normal(batch_axis=tuple(range(nd)))
    shape = (*geo.out_spatial, *self.kernel_size, in_features, out_features)
    self.kernel: nnx.Param[jax.Array] = nnx.Param(kernel_init(rngs.params(), shape, param_dtype))
    self.bias: nnx.Param[jax.Array] | None = (
        nnx.Param(bias_init(rngs.params(), (*geo.out_spatial, out_features), param_dtype))
        if use_bias
        else None
    )

  def __call__(self, x: ArrayLike) -> jax.Array:
    """``[N, *input_shape, C_in]`` → ``[N, *out_spatial, C_out]``."""
    x, kernel, bias = promote_dtype(
        (x, self.kernel[...], None if self.bias is None else self.bias[...]),
        dtype=self.dtype,
    )
    return _bias(
        bias,
        locally_connected(
            x,
            kernel,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            padding_mode=self.padding_mode,
            precision=self.precision,
        ),
    )


class TiledConv(nnx.Module):
  """Tiled convolution (Le et al. 2010): ``prod(tile)`` kernels rotated over positions.

  Wraps :func:`cnnjax.tiled.tiled_conv`; output position ``n`` uses kernel
  ``n mod tile``. ``tile=1`` is a :class:`Conv`.

  Args:
    in_features: input channels ``C_in``.
    out_features: output channels ``C_out``.
    kernel_size: an int (square 2-D kernel) or one size per spatial dim.
    tile: the number of kernels along each spatial dim, an int or one per dim.
    stride, padding, dilation, padding_mode, precision: as
      :func:`cnnjax.tiled.tiled_conv`.
    use_bias: whether to add a (shared) bias ``[C_out]``.
    kernel_init: default LeCun normal over one kernel's fan-in.
    dtype, param_dtype, bias_init, rngs: as :class:`Conv`.

  Attributes:
    kernel: ``nnx.Param``, ``[*tile, *kernel_size, C_in, C_out]``.
    bias: ``nnx.Param``, ``[C_out]``, or None.

  Example:
    >>> tc = TiledConv(1, 4, 3, tile=2, padding="SAME", rngs=nnx.Rngs(0))
    >>> tc.kernel.shape, tc(jnp.ones((1, 6, 6, 1))).shape
    ((2, 2, 3, 3, 1, 4), (1, 6, 6, 4))
  """

  def __init__(
      self,
      in_features: int,
      out_features: int,
      kernel_size: int | Sequence[int],
      *,
      tile: int | Sequence[int],
      stride: int | Sequence[int] = 1,
      padding: PaddingLike = "VALID",
      dilation: int | Sequence[int] = 1,
      padding_mode: str = "zeros",
      use_bias: bool = True,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      precision: lax.PrecisionLike = None,
      kernel_init: Initializer | None = None,
      bias_init: Initializer = default_bias_init,
      rngs: nnx.Rngs,
  ):
    op = "TiledConv"
    _positive(in_features, name="in_features", op=op)
    _positive(out_features, name="out_features", op=op)
    _padding.check_padding_mode(padding_mode, op=op)
    self.kernel_size: tuple[int, ...] = kernel_shape(kernel_size, op=op)
    nd = len(self.kernel_size)
    self.tile: tuple[int, ...] = _padding.normalize_ints(tile, nd, name="tile", op=op)
    _check_stride_dilation(stride, dilation, nd, op=op)
    self.in_features = in_features
    self.out_features = out_features
    self.stride = stride
    self.padding = padding
    self.dilation = dilation
    self.padding_mode = padding_mode
    self.use_bias = use_bias
    self.dtype: jnp.dtype | None
    self.param_dtype: jnp.dtype
    self.dtype, self.param_dtype = check_dtypes(dtype, param_dtype, op=op)
    param_dtype = self.param_dtype
    self.precision = precision
    if kernel_init is None:
      kernel_init = nnx.initializers.lecun_normal(batch_axis=tuple(range(nd)))
    shape = (*self.tile, *self.kernel_size, in_features, out_features)
    self.kernel: nnx.Param[jax.Array] = nnx.Param(kernel_init(rngs.params(), shape, param_dtype))
    self.bias: nnx.Param[jax.Array] | None = (
        nnx.Param(bias_init(rngs.params(), (out_features,), param_dtype)) if use_bias else None
    )

  def __call__(self, x: ArrayLike) -> jax.Array:
    """``[N, *spatial, C_in]`` → ``[N, *out_spatial, C_out]``."""
    x, kernel, bias = promote_dtype(
        (x, self.kernel[...], None if self.bias is None else self.bias[...]),
        dtype=self.dtype,
    )
    return _bias(
        bias,
        tiled_conv(
            x,
            kernel,
            tile=self.tile,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            padding_mode=self.padding_mode,
            precision=self.precision,
        ),
    )
