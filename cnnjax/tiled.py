"""Tiled convolution (Le et al. 2010; Goodfellow et al., Deep Learning, §9.5).

A set of ``prod(tile)`` kernels rotated through the output positions: output
position ``n`` uses kernel ``n mod tile`` (per spatial dim),

``y[b, n, o] = Σ_k Σ_c w[n mod T, k, c, o] · x̃[b, n·s + k·t, c]``.

``tile = 1`` is :func:`cnnjax.conv.cross_correlate`; ``tile`` equal to the output
size is :func:`cnnjax.local.locally_connected`.

A tiled convolution does the multiply-adds of one shared convolution, and costs about
as much: it is computed as ``prod(tile)`` strided convolutions, one per phase of the
tile, interleaved back (:mod:`cnnjax._lowering.tiled`, with a derivative rule that keeps
reverse mode on strided forward convolutions).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from cnnjax import _checks
from cnnjax import padding as _padding
from cnnjax._lowering import tiled as _tiled
from cnnjax.conv import cross_correlate
from cnnjax.local import check_in_channels, unshared_weight_rank
from cnnjax.padding import PaddingLike

__all__ = ["tiled_conv"]


def tiled_conv(
    x: ArrayLike,
    w: ArrayLike,
    *,
    tile: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: PaddingLike = "VALID",
    dilation: int | Sequence[int] = 1,
    padding_mode: str = "zeros",
    precision: lax.PrecisionLike = None,
    preferred_element_type: jax.typing.DTypeLike | None = None,
) -> jax.Array:
  """Tiled convolution: ``prod(tile)`` kernels rotated through the output positions.

  ``y[b, n, o] = Σ_k Σ_c w[n mod T, k, c, o] · x̃[b, n·s + k·t, c]`` for each output
  position ``n`` (``T`` the tile, ``s`` the stride, ``t`` the dilation, ``x̃`` the
  padded input).

  Args:
    x: input, ``[N, *spatial, C_in]`` with 1, 2 or 3 spatial dims.
    w: kernels, ``[*tile, *kernel_spatial, C_in, C_out]``.
    tile: the number of kernels along each spatial dim: an int, or one int per dim,
      each positive; must equal ``w.shape[:d]``.
    stride: an int, or one int per spatial dim.
    padding: ``"VALID"``, ``"SAME"``, ``"FULL"``, an int, a tuple of ints or a tuple
      of ``(low, high)`` pairs (as :func:`cnnjax.conv.cross_correlate`).
    dilation: kernel dilation, effective size ``r̂ = r + (r − 1)(t − 1)``.
    padding_mode: ``"zeros"``, ``"circular"``, ``"reflect"`` or ``"edge"``.
    precision, preferred_element_type: as in :func:`cnnjax.conv.cross_correlate`.

  Returns:
    ``[N, *out_spatial, C_out]`` in ``preferred_element_type`` or the input's dtype,
    ``out_spatial`` as for
    :func:`cnnjax.conv.cross_correlate` with the same settings.

  Example:
    >>> x = jnp.ones((1, 6, 6, 1)); w = jnp.ones((2, 2, 3, 3, 1, 4))
    >>> tiled_conv(x, w, tile=2, padding="SAME").shape
    (1, 6, 6, 4)
  """
  op = "tiled_conv"
  x, w = jnp.asarray(x), jnp.asarray(w)
  num_spatial = unshared_weight_rank(w, op=op, lead="tile")
  _padding.check_spatial_rank(x, num_spatial, name="x", op=op)
  _padding.check_padding_mode(padding_mode, op=op)
  tile = _padding.normalize_ints(tile, num_spatial, name="tile", op=op)
  if tuple(w.shape[:num_spatial]) != tile:
    raise ValueError(
        f"{op}: w's kernel grid w.shape[:{num_spatial}] is "
        f"{tuple(w.shape[:num_spatial])} but tile is {tile}; expected "
        "w.shape[:d] == tile, one kernel per tile position."
    )
  check_in_channels(x, w, op=op)
  kernel = w.shape[num_spatial : 2 * num_spatial]
  geo = _padding.conv_geometry(
      x.shape[1:-1],
      kernel,
      stride=stride,
      padding=padding,
      dilation=dilation,
      op=op,
  )
  dtype = _checks.compute_dtype(x, w, op=op)
  out_dtype = _checks.result_dtype(dtype, preferred_element_type, op=op)
  out_shape = (x.shape[0], *geo.out_spatial, w.shape[-1])
  _checks.check_extent(out_shape, out_dtype, name="padding", value=padding, op=op)
  x, w = x.astype(dtype), w.astype(dtype)
  if all(t == 1 for t in tile):
    return cross_correlate(
        x,
        w.reshape(w.shape[num_spatial:]),
        stride=geo.stride,
        padding=geo.pads,
        dilation=geo.dilation,
        padding_mode=padding_mode,
        precision=precision,
        preferred_element_type=out_dtype,
    )
  pads = geo.pads
  if padding_mode != "zeros":
    x = _padding.pad_spatial(x, pads, padding_mode)
    pads = ((0, 0),) * num_spatial
  spec = _tiled.TiledSpec(
      tile, geo.stride, geo.dilation, pads, geo.out_spatial, precision, out_dtype
  )
  return _tiled.tiled_conv(x, w, spec)
