"""Deformable convolution module: a thin Flax NNX wrapper of :func:`cnnjax.deform.deform_conv`.

The offsets (and, modulated, the mask) are predicted from the input by the module's own
convolution, :attr:`DeformConv.offset_conv`, zero-initialised as in the papers (Dai et al.
2017, §2.1; Zhu et al. 2019, §3.1), so that a new layer starts as a plain convolution.
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
from cnnjax.deform import deform_conv
from cnnjax.nn._dtypes import check_dtypes
from cnnjax.nn.conv import Conv, Initializer, default_bias_init, default_kernel_init, kernel_shape
from cnnjax.padding import PaddingLike

__all__ = ["DeformConv"]

# The papers' initialisation of the offset (and mask) convolution: a plain conv at first.
default_offset_init: Initializer = nnx.initializers.zeros_init()


class DeformConv(nnx.Module):
  """2-D deformable convolution (DCNv1; with ``modulated=True``, DCNv2).

  ``y = deform_conv(x, kernel, offsets, mask=mask) + bias`` where ``offsets`` and the
  mask's logits are one convolution of ``x``, :attr:`offset_conv`, with the layer's
  kernel size, stride, padding and dilation (so one set per output position and tap):
  its first ``offset_groups·k_h·k_w·2`` output channels are the offsets in
  :func:`cnnjax.deform.deform_conv`'s order, the last ``offset_groups·k_h·k_w`` (with
  ``modulated``) the mask after a sigmoid. That convolution is zero-initialised: a new
  layer computes a plain convolution with ``kernel`` (modulated: with ``kernel / 2``,
  the papers' initial mask of 0.5), and is trained from there.

  Args:
    in_features: input channels ``C_in``.
    out_features: output channels ``C_out``.
    kernel_size: an int (square) or a pair ``(k_h, k_w)``.
    stride, padding, dilation, groups, offset_groups, precision: as
      :func:`cnnjax.deform.deform_conv` (also used by :attr:`offset_conv`).
    modulated: predict a modulation mask too (DCNv2).
    use_bias: whether to add a bias ``[C_out]``.
    dtype: the computation dtype (default: promoted from input and parameters).
    param_dtype: the parameters' dtype.
    kernel_init, bias_init: initialisers of ``kernel`` and ``bias``.
    offset_init: initialiser of :attr:`offset_conv`'s kernel and bias (zeros).
    rngs: the ``nnx.Rngs`` to draw the parameters from.

  Attributes:
    kernel: ``nnx.Param``, ``[k_h, k_w, C_in // groups, C_out]``.
    bias: ``nnx.Param``, ``[C_out]``, or None.
    offset_conv: a :class:`cnnjax.nn.Conv` from ``C_in`` to
      ``offset_groups·k_h·k_w·(3 if modulated else 2)`` channels.

  Example:
    >>> layer = DeformConv(3, 8, 3, padding="SAME", modulated=True, rngs=nnx.Rngs(0))
    >>> layer(jnp.ones((2, 16, 16, 3))).shape
    (2, 16, 16, 8)
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
      offset_groups: int = 1,
      modulated: bool = False,
      use_bias: bool = True,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      precision: lax.PrecisionLike = None,
      kernel_init: Initializer = default_kernel_init,
      bias_init: Initializer = default_bias_init,
      offset_init: Initializer = default_offset_init,
      rngs: nnx.Rngs,
  ):
    op = "DeformConv"
    _checks.check_positive_int(in_features, name="in_features", op=op)
    _checks.check_positive_int(out_features, name="out_features", op=op)
    _checks.check_positive_int(groups, name="groups", op=op)
    _checks.check_positive_int(offset_groups, name="offset_groups", op=op)
    for name, value, which, by in (
        ("in_features", in_features, "groups", groups),
        ("out_features", out_features, "groups", groups),
        ("in_features", in_features, "offset_groups", offset_groups),
    ):
      if value % by:
        raise ValueError(
            f"{op}: {name} got {value!r}, which {which}={by} does not divide; expected "
            f"{name} to be a multiple of {which}."
        )
    kernel = kernel_shape(kernel_size, op=op)
    if len(kernel) != 2:
      raise ValueError(
          f"{op}: kernel_size got {kernel_size!r}; expected an int or a pair (k_h, k_w) "
          "(deformable convolution is 2-D)."
      )
    self.kernel_size: tuple[int, ...] = kernel
    self.in_features = in_features
    self.out_features = out_features
    self.stride = stride
    self.padding = padding
    self.dilation = dilation
    self.groups = groups
    self.offset_groups = offset_groups
    self.modulated: bool = _checks.check_bool(modulated, name="modulated", op=op)
    self.use_bias = use_bias
    self.dtype: jnp.dtype | None
    self.param_dtype: jnp.dtype
    self.dtype, self.param_dtype = check_dtypes(dtype, param_dtype, op=op)
    self.precision = precision
    shape = (*kernel, in_features // groups, out_features)
    self.kernel: nnx.Param[jax.Array] = nnx.Param(
        kernel_init(rngs.params(), shape, self.param_dtype)
    )
    self.bias: nnx.Param[jax.Array] | None = (
        nnx.Param(bias_init(rngs.params(), (out_features,), self.param_dtype)) if use_bias else None
    )
    taps = kernel[0] * kernel[1]
    self.offset_conv: Conv = Conv(
        in_features,
        offset_groups * taps * (3 if self.modulated else 2),
        kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        dtype=dtype,
        param_dtype=param_dtype,
        precision=precision,
        kernel_init=offset_init,
        bias_init=offset_init,
        rngs=rngs,
    )

  def __call__(self, x: ArrayLike) -> jax.Array:
    """``[N, H, W, C_in]`` → ``[N, H_out, W_out, C_out]``."""
    predicted = self.offset_conv(x)
    split = self.offset_groups * self.kernel_size[0] * self.kernel_size[1] * 2
    offsets = predicted[..., :split]
    mask = jax.nn.sigmoid(predicted[..., split:]) if self.modulated else None
    x, kernel, bias = promote_dtype(
        (x, self.kernel[...], None if self.bias is None else self.bias[...]),
        dtype=self.dtype,
    )
    y = deform_conv(
        x,
        kernel,
        offsets,
        mask=mask,
        stride=self.stride,
        padding=self.padding,
        dilation=self.dilation,
        groups=self.groups,
        offset_groups=self.offset_groups,
        precision=self.precision,
    )
    if bias is None:
      return y
    return y + bias.reshape((1, 1, 1, -1))
