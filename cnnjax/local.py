"""Locally connected layers: unshared convolution, one kernel per output position.

``y[b, n, o] = Σ_k Σ_c w[n, k, c, o] · x̃[b, n·s + k·t, c]`` over the padded input
``x̃`` — the sum of a cross-correlation, but the kernel ``w[n]`` changes with the
output position ``n``. Inputs are batched and channels-last, ``[N, *spatial, C]``
with 1, 2 or 3 spatial dims; weights are ``[*out_spatial, *kernel_spatial, C_in,
C_out]``.

The input is seen through the window by :func:`cnnjax.patches.shifted_slices`
(one strided slice per kernel offset, no gather, no one-hot convolution), laid out
position-major so that the contraction is one batched matmul over the output
positions with no transpose of the patches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from cnnjax import padding as _padding
from cnnjax.conv import compute_dtype
from cnnjax.padding import PaddingLike
from cnnjax.patches import shifted_slices

__all__ = ["locally_connected"]


def unshared_weight_rank(w: jax.Array, *, op: str, lead: str) -> int:
  """Checks a ``[*lead(d), *kernel(d), C_in, C_out]`` weight; returns ``d``.

  Shared with :func:`cnnjax.tiled.tiled_conv` (``lead="tile"``).

  Args:
    w: the weight array.
    op: the calling function's name, for error messages.
    lead: what the leading ``d`` axes are (``"out_spatial"``, ``"tile"``).
  """
  num_spatial, odd = divmod(w.ndim - 2, 2)
  if odd or num_spatial not in (1, 2, 3):
    raise ValueError(
        f"{op}: w has shape {tuple(w.shape)} (rank {w.ndim}); expected rank 4, 6 or "
        f"8: [*{lead}(d), *kernel(d), C_in, C_out] with d = 1, 2 or 3 spatial dims."
    )
  return num_spatial


def check_in_channels(x: jax.Array, w: jax.Array, *, op: str) -> None:
  """Checks that ``x``'s channels match the weight's ``C_in`` (``w.shape[-2]``)."""
  if x.shape[-1] != w.shape[-2]:
    raise ValueError(
        f"{op}: channel mismatch: x has {x.shape[-1]} channels but w's in_channels "
        f"(w.shape[-2]) is {w.shape[-2]}; expected x.shape[-1] == w.shape[-2]."
    )


def locally_connected(
    x: ArrayLike,
    w: ArrayLike,
    *,
    stride: int | Sequence[int] = 1,
    padding: PaddingLike = "VALID",
    dilation: int | Sequence[int] = 1,
    padding_mode: str = "zeros",
    precision: lax.PrecisionLike = None,
) -> jax.Array:
  """Unshared convolution: a separate kernel at every output position.

  ``y[b, n, o] = Σ_k Σ_c w[n, k, c, o] · x̃[b, n·s + k·t, c]`` for each output
  position ``n`` (``s`` the stride, ``t`` the dilation, ``x̃`` the padded input).
  With every ``w[n]`` equal it is :func:`cnnjax.conv.cross_correlate`.

  Args:
    x: input, ``[N, *spatial, C_in]`` with 1, 2 or 3 spatial dims.
    w: weights, ``[*out_spatial, *kernel_spatial, C_in, C_out]``; ``out_spatial``
      must be the output's spatial shape for these settings.
    stride: an int, or one int per spatial dim.
    padding: ``"VALID"``, ``"SAME"``, ``"FULL"``, an int, a tuple of ints or a tuple
      of ``(low, high)`` pairs (as :func:`cnnjax.conv.cross_correlate`).
    dilation: kernel dilation, effective size ``r̂ = r + (r − 1)(t − 1)``.
    padding_mode: ``"zeros"``, ``"circular"``, ``"reflect"`` or ``"edge"``.
    precision: passed to the contraction (``lax.dot_general``).

  Returns:
    ``[N, *out_spatial, C_out]`` in the input's dtype.

  Example:
    >>> x = jnp.ones((2, 30, 30, 3)); w = jnp.ones((24, 24, 7, 7, 3, 5))
    >>> w.size, locally_connected(x, w).shape
    (423360, (2, 24, 24, 5))
  """
  op = "locally_connected"
  x, w = jnp.asarray(x), jnp.asarray(w)
  num_spatial = unshared_weight_rank(w, op=op, lead="out_spatial")
  _padding.check_spatial_rank(x, num_spatial, name="x", op=op)
  _padding.check_padding_mode(padding_mode, op=op)
  check_in_channels(x, w, op=op)
  geo = _padding.conv_geometry(
      x.shape[1:-1], w.shape[num_spatial:2 * num_spatial], stride=stride,
      padding=padding, dilation=dilation, op=op,
  )
  if tuple(w.shape[:num_spatial]) != geo.out_spatial:
    raise ValueError(
        f"{op}: w's weight grid w.shape[:{num_spatial}] is "
        f"{tuple(w.shape[:num_spatial])} but the output's spatial shape is "
        f"{geo.out_spatial} (input {geo.in_spatial}, kernel {geo.kernel}, stride "
        f"{geo.stride}, padding {geo.pads}, dilation {geo.dilation}); expected one "
        "kernel per output position."
    )
  dtype = compute_dtype(x, w, op=op)
  x, w = x.astype(dtype), w.astype(dtype)
  return _unshared(x, w, geo, padding_mode, precision)


def _unshared(x, w, geo, padding_mode, precision) -> jax.Array:
  """The contraction, for validated arguments of one dtype."""
  num_spatial = len(geo.out_spatial)
  batch, c_out = x.shape[0], w.shape[-1]
  positions = math.prod(geo.out_spatial)
  window = math.prod(geo.kernel) * x.shape[-1]
  x = _padding.pad_spatial(x, geo.pads, padding_mode)
  # Position-major layout [*spatial, N, C]: the stacked slices reshape to
  # [P, N, K·C] without a transpose, and the matmul is batched over positions.
  x = jnp.moveaxis(x, 0, -2)
  patches = jnp.stack(_slices_position_major(x, geo), axis=-2)
  patches = patches.reshape(positions, batch, window)
  # Half-precision inputs accumulate in float32 (as XLA's convolutions do).
  acc = x.dtype
  if jnp.issubdtype(acc, jnp.floating) and jnp.finfo(acc).bits < 32:
    acc = jnp.float32
  y = lax.dot_general(
      patches, w.reshape(positions, window, c_out),
      dimension_numbers=(((2,), (1,)), ((0,), (0,))),
      precision=precision, preferred_element_type=acc,
  )  # [P, N, C_out]
  y = y.reshape(*geo.out_spatial, batch, c_out).astype(x.dtype)
  return jnp.moveaxis(y, num_spatial, 0)


def _slices_position_major(x, geo):
  """:func:`shifted_slices` for an input laid out ``[*spatial, N, C]``."""
  # shifted_slices slices axes 1..d of an [N, *spatial, C] array; view the
  # position-major array as [1, *spatial, N·C] (free reshape) and undo it after.
  *spatial, batch, c = x.shape
  flat = x.reshape(1, *spatial, batch * c)
  return [s.reshape(*s.shape[1:-1], batch, c) for s in shifted_slices(flat, geo)]
