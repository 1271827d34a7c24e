"""Adaptive pooling: pools whose bins are set by the output size, not by a window.

Along a spatial axis of length ``n`` pooled to ``o`` bins, bin ``i`` covers the input
positions ``[floor(i·n/o), ceil((i+1)·n/o))`` (PyTorch's rule): the bins tile the axis,
neighbouring bins overlap by one position where ``o`` does not divide ``n``, and
``o = n`` is the identity. A bin of a multi-dimensional input is the product of its
per-axis bins, so both pools are computed one axis at a time, by gathering each bin
(padded to the longest bin with a repeat of its last position) and reducing: the
average sums the bin's own positions (the padding is selected out, not multiplied by
zero, so a NaN or inf reaches only the bins that hold it) and divides by its size.

Gradients: the average passes ``1 / bin size`` to every position of a bin; the
maximum passes its gradient to the bin's first maximum in row-major order (as
:func:`cnnjax.max_pool`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from cnnjax import _checks

__all__ = ["adaptive_avg_pool", "adaptive_bins", "adaptive_max_pool"]


def adaptive_bins(n: int, o: int) -> list[tuple[int, int]]:
  """The ``o`` bins ``[start, end)`` of an axis of length ``n`` (PyTorch's rule).

  Example:
    >>> adaptive_bins(5, 3)
    [(0, 2), (1, 4), (3, 5)]
  """
  return [((i * n) // o, -((-(i + 1) * n) // o)) for i in range(o)]


def _check(x: jax.Array, output_size, *, op: str, floating: bool) -> tuple[int, ...]:
  """Checks ``x`` and returns ``output_size`` as one int per spatial dim."""
  if x.ndim not in (3, 4, 5):
    raise ValueError(
        f"{op}: x has shape {tuple(x.shape)} (rank {x.ndim}); expected rank 3, 4 or 5: "
        "[batch, *spatial(d), channels] with d = 1, 2 or 3 spatial dims."
    )
  kind_ok = jnp.issubdtype(x.dtype, jnp.floating) or (
      not floating and jnp.issubdtype(x.dtype, jnp.integer)
  )
  if not kind_ok:
    expected = "a floating dtype" if floating else "a floating or integer dtype"
    raise TypeError(f"{op}: x has dtype {x.dtype}; expected {expected}.")
  spatial = x.shape[1:-1]
  nd = len(spatial)
  expected = (
      f"a positive int or a tuple of {nd} entries, each a positive int or None (keep "
      "that dim's size)"
  )
  if _checks.is_int(output_size):
    sizes = (output_size,) * nd
  elif isinstance(output_size, Sequence) and not isinstance(output_size, str):
    sizes = tuple(output_size)
    if len(sizes) != nd:
      raise ValueError(
          f"{op}: output_size got {output_size!r} ({len(sizes)} entries) for x with "
          f"{nd} spatial dim(s); expected {expected}."
      )
  else:
    raise ValueError(f"{op}: output_size got {output_size!r}; expected {expected}.")
  sizes = tuple(n if o is None else o for n, o in zip(spatial, sizes, strict=True))
  if not all(_checks.is_int(o) and 1 <= o <= _checks.INT64_MAX for o in sizes):
    raise ValueError(
        f"{op}: output_size got {output_size!r}; expected {expected} (at most 2**63 - 1)."
    )
  _checks.check_extent(
      (x.shape[0], *sizes, x.shape[-1]), x.dtype, name="output_size", value=output_size, op=op
  )
  if any(n == 0 for n in spatial):
    raise ValueError(
        f"{op}: x has shape {tuple(x.shape)}, an empty spatial dim; expected every "
        "spatial dim to have at least one position to pool."
    )
  return tuple(int(o) for o in sizes)


def _bin_indices(n: int, o: int) -> np.ndarray:
  """``[o, L]`` positions of each bin, padded with the bin's last position."""
  bins = adaptive_bins(n, o)
  longest = max(end - start for start, end in bins)
  return np.array(
      [[min(start + j, end - 1) for j in range(longest)] for start, end in bins], np.int32
  )


def _bin_sizes(n: int, o: int) -> np.ndarray:
  """``[o]``: how many positions bin ``i`` covers."""
  return np.array([end - start for start, end in adaptive_bins(n, o)])


@functools.partial(jax.jit, static_argnames=("output_size",))
def _avg_core(x: jax.Array, output_size: tuple[int, ...]) -> jax.Array:
  acc = _checks.accumulation_dtype(x.dtype)
  y = x.astype(acc)
  for d, o in enumerate(output_size):
    axis, n = d + 1, x.shape[d + 1]
    idx, sizes = _bin_indices(n, o), _bin_sizes(n, o)
    own = np.arange(idx.shape[1])[None, :] < sizes[:, None]  # [o, L]: not padding
    vals = jnp.take(y, jnp.asarray(idx), axis=axis)  # [..., o, L, ...]
    own = own.reshape((1,) * axis + own.shape + (1,) * (y.ndim - 1 - axis))
    total = jnp.sum(jnp.where(own, vals, 0), axis=axis + 1)
    y = total / jnp.asarray(sizes, acc).reshape((1,) * axis + (o,) + (1,) * (y.ndim - 1 - axis))
  return y.astype(x.dtype)


@functools.partial(jax.jit, static_argnames=("output_size",))
def _max_core(x: jax.Array, output_size: tuple[int, ...]) -> jax.Array:
  y = x
  # The last axis first: each row keeps its first maximum, then the first row whose
  # maximum is largest wins, which is the first maximum in row-major order.
  for d in reversed(range(len(output_size))):
    axis = d + 1
    idx = _bin_indices(x.shape[axis], output_size[d])
    vals = jnp.take(y, jnp.asarray(idx), axis=axis)  # [..., o, L, ...]
    first = jnp.argmax(lax.stop_gradient(vals), axis=axis + 1, keepdims=True)
    y = jnp.take_along_axis(vals, first, axis=axis + 1).squeeze(axis + 1)
  return y


def adaptive_avg_pool(x: ArrayLike, output_size: int | Sequence[int | None]) -> jax.Array:
  """Average pooling to a given output size (PyTorch's ``AdaptiveAvgPool``).

  Bin ``i`` of an axis of length ``n`` pooled to ``o`` covers
  ``[floor(i·n/o), ceil((i+1)·n/o))``; each output is the mean of its bin.

  Args:
    x: input, ``[N, *spatial, C]`` with 1, 2 or 3 spatial dims, floating.
    output_size: an int (every spatial dim) or one entry per spatial dim, each a
      positive int or ``None`` (that dim keeps its size). It may exceed the input
      size (bins then repeat positions).

  Returns:
    ``[N, *output_size, C]`` in ``x``'s dtype (half precision sums in float32).

  Example:
    >>> x = jnp.arange(5.).reshape(1, 5, 1)
    >>> adaptive_avg_pool(x, 3)[0, :, 0].tolist()
    [0.5, 2.0, 3.5]
  """
  x = jnp.asarray(x)
  sizes = _check(x, output_size, op="adaptive_avg_pool", floating=True)
  return _avg_core(x, sizes)


def adaptive_max_pool(x: ArrayLike, output_size: int | Sequence[int | None]) -> jax.Array:
  """Max pooling to a given output size (PyTorch's ``AdaptiveMaxPool``).

  Bins as :func:`adaptive_avg_pool`; each output is the maximum of its bin, and its
  gradient goes to the bin's first maximum in row-major order (a NaN counts as the
  maximum).

  Args:
    x: input, ``[N, *spatial, C]`` with 1, 2 or 3 spatial dims, floating or integer.
    output_size: as :func:`adaptive_avg_pool`.

  Returns:
    ``[N, *output_size, C]`` in ``x``'s dtype.

  Example:
    >>> x = jnp.array([3., 1., 4., 1., 5.]).reshape(1, 5, 1)
    >>> adaptive_max_pool(x, 3)[0, :, 0].tolist()
    [3.0, 4.0, 5.0]
  """
  x = jnp.asarray(x)
  sizes = _check(x, output_size, op="adaptive_max_pool", floating=False)
  return _max_core(x, sizes)
