"""Lowerings that are correct on every platform: lax's convolution, and patch matmuls.

- :func:`lax_conv` is one ``lax.conv_general_dilated``. Negative (cropping) padding is
  never handed to lax (:mod:`cnnjax._lowering.workarounds`, defect 1): the input is
  cropped (and dilated, if it must be) by ``lax.pad`` first.
- :func:`patch_conv` is the same convolution as shifted slices (im2col) and one
  ``lax.dot_general``. XLA supports integer dot products everywhere, but XLA:GPU has no
  integer convolution (cuDNN: int8 only), so integer inputs take this form on every
  platform; it is exact, accumulating narrow integers in int32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from cnnjax import _checks
from cnnjax import padding as _padding
from cnnjax._lowering import workarounds
from cnnjax._lowering.config import ConvConfig, dimension_numbers
from cnnjax.patches import shifted_slices

__all__ = ["lax_conv", "materialize", "patch_conv", "result_dtype"]


def result_dtype(x: jax.Array, cfg: ConvConfig):
  return jnp.dtype(cfg.preferred_element_type or x.dtype)


def materialize(x: jax.Array, cfg: ConvConfig) -> tuple[jax.Array, ConvConfig]:
  """Applies the padding and input dilation to ``x`` by one ``lax.pad``.

  Returns ``x`` and a configuration with zero padding and ``lhs_dilation`` 1: the
  same convolution, over an input that holds the zeros (and crops) explicitly.
  """
  nd = len(cfg.stride)
  config = [
      (0, 0, 0),
      *((lo, hi, d - 1) for (lo, hi), d in zip(cfg.pads, cfg.lhs_dilation, strict=True)),
      (0, 0, 0),
  ]
  x = lax.pad(x, jnp.zeros((), x.dtype), config)
  return x, cfg._replace(pads=((0, 0),) * nd, lhs_dilation=(1,) * nd)


def lax_conv(x: jax.Array, w: jax.Array, cfg: ConvConfig) -> jax.Array:
  """One ``lax.conv_general_dilated``, never with negative padding."""
  if workarounds.negative_padding(cfg):
    x, cfg = materialize(x, cfg)
  return lax.conv_general_dilated(
      x,
      w,
      window_strides=cfg.stride,
      padding=cfg.pads,
      lhs_dilation=cfg.lhs_dilation,
      rhs_dilation=cfg.dilation,
      dimension_numbers=dimension_numbers(w.ndim - 2),
      feature_group_count=cfg.groups,
      precision=cfg.precision,
      preferred_element_type=cfg.preferred_element_type,
  )


def patch_conv(x: jax.Array, w: jax.Array, cfg: ConvConfig) -> jax.Array:
  """The convolution as a patch matmul: ``y = concat_k(x̃[n·s + k·t]) @ w.reshape(K·C_in, C_out)``.

  Exact for every configuration (any stride, dilation, padding, input dilation and
  groups; per group a batched matmul). Accumulates in
  :func:`cnnjax._checks.accumulation_dtype` and returns the preferred element type.
  """
  nd = w.ndim - 2
  out_dtype = result_dtype(x, cfg)
  if not cfg.plain or any(lo or hi for lo, hi in cfg.pads):
    x, cfg = materialize(x, cfg)
  geo = _padding.conv_geometry(
      x.shape[1:-1],
      w.shape[:-2],
      stride=cfg.stride,
      padding=cfg.pads,
      dilation=cfg.dilation,
      op="patch_conv",
  )
  acc = _checks.accumulation_dtype(out_dtype, x.dtype)
  slices = shifted_slices(x, geo)
  patches = slices[0] if len(slices) == 1 else jnp.concatenate(slices, axis=-1)
  kernel_volume, c_out, groups = len(slices), w.shape[-1], cfg.groups
  if groups == 1:
    y = lax.dot_general(
        patches,
        w.reshape(-1, c_out),
        (((nd + 1,), (0,)), ((), ())),
        precision=cfg.precision,
        preferred_element_type=acc,
    )
    return y.astype(out_dtype)
  cg, og = w.shape[-2], c_out // groups
  patches = patches.reshape(*patches.shape[:-1], kernel_volume, groups, cg)
  wg = w.reshape(kernel_volume, cg, groups, og)
  # Contract (kernel offset, channel in group), batch over groups: [G, N, *out, O_g].
  y = lax.dot_general(
      patches,
      wg,
      (((nd + 1, nd + 3), (0, 1)), ((nd + 2,), (2,))),
      precision=cfg.precision,
      preferred_element_type=acc,
  )
  y = jnp.moveaxis(y, 0, -2)
  return y.reshape(*y.shape[:-2], c_out).astype(out_dtype)
