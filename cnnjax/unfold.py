"""Unfold (im2col) and fold (col2im): a convolution as one matrix product, and its adjoint.

:func:`unfold` lays every window of the padded input out as a row,
``[N, *out_spatial, prod(kernel) · C]`` with the last axis ordered ``(*kernel, C)``, so
that a cross-correlation is one matmul with the reshaped kernel:

    ``unfold(x, k, ...) @ w.reshape(-1, C_out) == cross_correlate(x, w, ...)``.

:func:`fold` is its adjoint (zero padding): every patch entry is added back onto the
input position it was read from, overlapping windows summing. Both are built on the
shifted strided slices of :mod:`cnnjax.patches`, one slice per kernel offset.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import cast

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from cnnjax import _checks
from cnnjax import padding as _padding
from cnnjax.padding import PaddingLike
from cnnjax.patches import extract_patches

__all__ = ["fold", "unfold"]


def _kernel_size(kernel_size, num_spatial: int, *, op: str) -> tuple[int, ...]:
  return _padding.normalize_ints(kernel_size, num_spatial, name="kernel_size", op=op)


def _check_array(a: jax.Array, *, name: str, op: str) -> int:
  if a.ndim not in (3, 4, 5):
    raise ValueError(
        f"{op}: {name} has shape {tuple(a.shape)} (rank {a.ndim}); expected rank 3, 4 "
        "or 5: [batch, *spatial(d), channels] with d = 1, 2 or 3 spatial dims."
    )
  _checks.compute_dtype(a, a, op=op, names=(name, name))  # refuses bool and the like
  return a.ndim - 2


def unfold(
    x: ArrayLike,
    kernel_size: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: PaddingLike = "VALID",
    dilation: int | Sequence[int] = 1,
    padding_mode: str = "zeros",
) -> jax.Array:
  """Every window of the padded input as one row (im2col).

  ``p[b, n, (k, c)] = x̃[b, n·s + k·t, c]``, with the last axis ordered ``(*kernel, C)``
  (kernel offsets row-major, channels fastest): the order of
  ``w.reshape(-1, C_out)`` for an HWIO kernel.

  Args:
    x: input, ``[N, *spatial, C]`` with 1, 2 or 3 spatial dims.
    kernel_size: the window, an int (every spatial dim) or one int per spatial dim.
    stride, padding, dilation, padding_mode: as :func:`cnnjax.cross_correlate`.

  Returns:
    ``[N, *out_spatial, prod(kernel_size) · C]`` in ``x``'s dtype, ``out_spatial`` as
    :func:`cnnjax.cross_correlate`'s.

  Example:
    >>> x = jnp.arange(4.).reshape(1, 4, 1)
    >>> unfold(x, 2)[0].tolist()
    [[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]]
  """
  op = "unfold"
  x = jnp.asarray(x)
  num_spatial = _check_array(x, name="x", op=op)
  kernel = _kernel_size(kernel_size, num_spatial, op=op)
  _padding.check_padding_mode(padding_mode, op=op)
  geo = _padding.conv_geometry(
      x.shape[1:-1],
      kernel,
      stride=stride,
      padding=padding,
      dilation=dilation,
      op=op,
  )
  for shape in (
      (x.shape[0], *geo.padded_spatial, x.shape[-1]),
      (x.shape[0], *geo.out_spatial, math.prod(kernel) * x.shape[-1]),
  ):
    _checks.check_extent(shape, x.dtype, name="padding", value=padding, op=op)
  patches = extract_patches(_padding.pad_spatial(x, geo.pads, padding_mode), geo)
  return patches.reshape(*patches.shape[:-2], math.prod(kernel) * x.shape[-1])


def fold(
    p: ArrayLike,
    output_shape: Sequence[int],
    kernel_size: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: PaddingLike = "VALID",
    dilation: int | Sequence[int] = 1,
) -> jax.Array:
  """The adjoint of :func:`unfold` (zero padding): patches summed back onto the input (col2im).

  ``x[b, m, c] = Σ_{n, k : n·s + k·t − lo = m} p[b, n, (k, c)]``; positions no window
  reads stay zero, positions in several windows get the sum. ``⟨unfold(x), p⟩ =
  ⟨x, fold(p)⟩`` for every ``x`` and ``p``; ``fold(unfold(x))`` is ``x`` times the
  number of windows covering each position.

  Args:
    p: patches, ``[N, *out_spatial, prod(kernel_size) · C]`` as :func:`unfold` returns.
    output_shape: the input's shape, ``(N, *spatial, C)``.
    kernel_size, stride, padding, dilation: as :func:`unfold`.

  Returns:
    ``[N, *spatial, C]`` in ``p``'s dtype.

  Example:
    >>> fold(jnp.ones((1, 3, 2)), (1, 4, 1), 2)[0, :, 0].tolist()
    [1.0, 2.0, 2.0, 1.0]
  """
  op = "fold"
  p = jnp.asarray(p)
  num_spatial = _check_array(p, name="p", op=op)
  if (
      isinstance(output_shape, str)
      or not isinstance(output_shape, Sequence)
      or len(output_shape) != num_spatial + 2
      or not all(_checks.is_int(v) and 0 <= v <= _checks.INT64_MAX for v in output_shape)
      or not all(v >= 1 for v in output_shape[1:])
  ):
    raise ValueError(
        f"{op}: output_shape got {output_shape!r}; expected {num_spatial + 2} ints "
        f"(N, *spatial({num_spatial}), C), positive but for N and at most 2**63 - 1, to "
        f"match p of shape {tuple(p.shape)}."
    )
  output_shape = tuple(int(v) for v in output_shape)
  kernel = _kernel_size(kernel_size, num_spatial, op=op)
  geo = _padding.conv_geometry(
      output_shape[1:-1],
      kernel,
      stride=stride,
      padding=padding,
      dilation=dilation,
      op=op,
  )
  c = output_shape[-1]
  expected = (output_shape[0], *geo.out_spatial, math.prod(kernel) * c)
  if tuple(p.shape) != expected:
    raise ValueError(
        f"{op}: p has shape {tuple(p.shape)}; expected {expected}, the shape unfold "
        f"gives for an input of shape {output_shape} with these settings."
    )
  acc = _checks.accumulation_dtype(p.dtype)  # overlaps of bfloat16 patches sum in float32
  patches = p.reshape(*p.shape[:-1], math.prod(kernel), c).astype(acc)
  zero = jnp.zeros((), acc)
  total = None
  # Each kernel offset's slice goes back to positions n·s + k·t of the padded input.
  for i, offset in enumerate(itertools.product(*(range(k) for k in kernel))):
    config = [(0, 0, 0)]
    for o, t, s, m, size in zip(
        offset, geo.dilation, geo.stride, geo.out_spatial, geo.padded_spatial, strict=True
    ):
      low = o * t
      config.append((low, size - low - (m - 1) * s - 1, s - 1))
    config.append((0, 0, 0))
    part = lax.pad(patches[..., i, :], zero, config)
    total = part if total is None else total + part
  total = cast(jax.Array, total)  # (the kernel has at least one offset)
  crop = tuple(slice(lo, lo + n) for n, (lo, _) in zip(geo.in_spatial, geo.pads, strict=True))
  return total[(slice(None), *crop, slice(None))].astype(p.dtype)
