"""The locally connected (unshared) convolution as one batched matmul over positions.

The input is seen through the window by :func:`cnnjax.patches.shifted_slices` (one
strided slice per kernel offset, no gather, no one-hot convolution), laid out
position-major so that the contraction is one ``lax.dot_general`` batched over the
output positions with no transpose of the patches. A ``dot_general`` works for every
dtype on every platform (integers included), so there is one form.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

from cnnjax import _checks
from cnnjax import padding as _padding
from cnnjax.patches import shifted_slices

__all__ = ["unshared_conv"]


def unshared_conv(
    x: jax.Array,
    w: jax.Array,
    geo: _padding.Geometry,
    padding_mode: str,
    *,
    precision=None,
    preferred_element_type=None,
) -> jax.Array:
  """``y[b, n, o] = Σ_k Σ_c w[n, k, c, o] · x̃[b, n·s + k·t, c]`` for validated operands."""
  num_spatial = len(geo.out_spatial)
  batch, c_out = x.shape[0], w.shape[-1]
  positions = math.prod(geo.out_spatial)
  window = math.prod(geo.kernel) * x.shape[-1]
  out_dtype = jnp.dtype(preferred_element_type or x.dtype)
  x = _padding.pad_spatial(x, geo.pads, padding_mode)
  # Position-major layout [*spatial, N, C]: the stacked slices reshape to
  # [P, N, K·C] without a transpose, and the matmul is batched over positions.
  x = jnp.moveaxis(x, 0, -2)
  patches = jnp.stack(_slices_position_major(x, geo), axis=-2)
  patches = patches.reshape(positions, batch, window)
  acc = _checks.accumulation_dtype(out_dtype, x.dtype)
  y = lax.dot_general(
      patches,
      w.reshape(positions, window, c_out),
      dimension_numbers=(((2,), (1,)), ((0,), (0,))),
      precision=precision,
      preferred_element_type=acc,
  )  # [P, N, C_out]
  y = y.reshape(*geo.out_spatial, batch, c_out).astype(out_dtype)
  return jnp.moveaxis(y, num_spatial, 0)


def _slices_position_major(x, geo):
  """:func:`shifted_slices` for an input laid out ``[*spatial, N, C]``."""
  # shifted_slices slices axes 1..d of an [N, *spatial, C] array; view the
  # position-major array as [1, *spatial, N·C] (free reshape) and undo it after.
  *spatial, batch, c = x.shape
  flat = x.reshape(1, *spatial, batch * c)
  return [s.reshape(*s.shape[1:-1], batch, c) for s in shifted_slices(flat, geo)]
