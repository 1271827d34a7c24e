"""Locally connected layers: unshared convolution, one kernel per output position.

``y[b, n, o] = Σ_k Σ_c w[n, k, c, o] · x̃[b, n·s + k·t, c]`` over the padded input
``x̃`` — the sum of a cross-correlation, but the kernel ``w[n]`` changes with the
output position ``n``. Inputs are batched and channels-last, ``[N, *spatial, C]``
with 1, 2 or 3 spatial dims; weights are ``[*out_spatial, *kernel_spatial, C_in,
C_out]``. Computed by :func:`cnnjax._lowering.unshared.unshared_conv` (one batched
matmul over the output positions).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from cnnjax import _checks
from cnnjax import padding as _padding
from cnnjax._lowering.unshared import unshared_conv
from cnnjax.padding import PaddingLike

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
    preferred_element_type: jax.typing.DTypeLike | None = None,
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
    precision: the contraction's precision (``lax.dot_general``); ``None`` is JAX's
      default (TF32 for float32 on recent NVIDIA GPUs), ``"highest"`` float32 rounding.
    preferred_element_type: the result dtype, as in
      :func:`cnnjax.conv.cross_correlate` (e.g. ``jnp.int32`` for int8 inputs).

  Returns:
    ``[N, *out_spatial, C_out]`` in ``preferred_element_type`` or the input's dtype.

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
      x.shape[1:-1],
      w.shape[num_spatial : 2 * num_spatial],
      stride=stride,
      padding=padding,
      dilation=dilation,
      op=op,
  )
  if tuple(w.shape[:num_spatial]) != geo.out_spatial:
    raise ValueError(
        f"{op}: w's weight grid w.shape[:{num_spatial}] is "
        f"{tuple(w.shape[:num_spatial])} but the output's spatial shape is "
        f"{geo.out_spatial} (input {geo.in_spatial}, kernel {geo.kernel}, stride "
        f"{geo.stride}, padding {geo.pads}, dilation {geo.dilation}); expected one "
        "kernel per output position."
    )
  dtype = _checks.compute_dtype(x, w, op=op)
  out_dtype = _checks.result_dtype(dtype, preferred_element_type, op=op)
  x, w = x.astype(dtype), w.astype(dtype)
  return unshared_conv(
      x, w, geo, padding_mode, precision=precision, preferred_element_type=out_dtype
  )
