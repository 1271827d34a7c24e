"""Max-unpooling: the pooled maxima put back where they came from, zeros elsewhere.

The partial inverse of :func:`cnnjax.max_pool` with ``return_indices=True`` (Zeiler &
Fergus 2014's "switches"; PyTorch's ``MaxUnpool``): each pooled value is written at its
recorded position of the flattened spatial axes, per example and channel.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from cnnjax import _checks

__all__ = ["max_unpool"]


@functools.partial(jax.jit, static_argnames=("output_shape",))
def _unpool_core(y: jax.Array, indices: jax.Array, output_shape: tuple[int, ...]) -> jax.Array:
  n, c = y.shape[0], y.shape[-1]
  positions = math.prod(y.shape[1:-1])  # (not -1: ambiguous for an empty batch)
  values = y.reshape(n, positions, c)
  idx = indices.reshape(n, positions, c)
  batch = jnp.arange(n, dtype=idx.dtype).reshape(n, 1, 1)
  channel = jnp.arange(c, dtype=idx.dtype).reshape(1, 1, c)
  out = jnp.zeros((n, math.prod(output_shape[1:-1]), c), y.dtype)
  out = out.at[batch, idx, channel].set(values, mode="drop")
  return out.reshape(output_shape)


def max_unpool(y: ArrayLike, indices: ArrayLike, output_shape: Sequence[int]) -> jax.Array:
  """Scatters ``y`` into zeros of ``output_shape`` at ``indices`` (max-unpooling).

  ``out[b, unravel(indices[b, o, c]), c] = y[b, o, c]`` and zero elsewhere. With
  ``y, indices = max_pool(x, ..., return_indices=True)`` and ``output_shape =
  x.shape``, every window's maximum returns to its place in ``x``. Indices outside
  the output are dropped; where two entries share an index (overlapping windows that
  picked the same input, so with equal values), one of them is written.

  Args:
    y: pooled values, ``[N, *pooled_spatial, C]`` with 1, 2 or 3 spatial dims.
    indices: integer array shaped like ``y``: positions in the flattened spatial
      axes of the output (row-major), per example and channel.
    output_shape: ``(N, *spatial, C)``, with ``y``'s ``N``, ``C`` and number of
      spatial dims.

  Returns:
    ``[N, *spatial, C]`` in ``y``'s dtype; differentiable in ``y``.

  Example:
    >>> y = jnp.array([4., 9.]).reshape(1, 2, 1)
    >>> max_unpool(y, jnp.array([1, 3]).reshape(1, 2, 1), (1, 4, 1))[0, :, 0].tolist()
    [0.0, 4.0, 0.0, 9.0]
  """
  op = "max_unpool"
  y, indices = jnp.asarray(y), jnp.asarray(indices)
  if y.ndim not in (3, 4, 5):
    raise ValueError(
        f"{op}: y has shape {tuple(y.shape)} (rank {y.ndim}); expected rank 3, 4 or 5: "
        "[batch, *spatial(d), channels] with d = 1, 2 or 3 spatial dims."
    )
  if indices.shape != y.shape:
    raise ValueError(
        f"{op}: indices has shape {tuple(indices.shape)}; expected y's shape " f"{tuple(y.shape)}."
    )
  if not jnp.issubdtype(indices.dtype, jnp.integer):
    raise TypeError(f"{op}: indices has dtype {indices.dtype}; expected an integer dtype.")
  _checks.compute_dtype(y, y, op=op, names=("y", "y"))  # refuses bool and the like
  if (
      isinstance(output_shape, str)
      or not isinstance(output_shape, Sequence)
      or len(output_shape) != y.ndim
      or not all(_checks.is_int(v) and v >= 1 for v in output_shape[1:-1])
      or not all(_checks.is_int(v) and _checks.fits_int64(v) for v in output_shape)
      or int(output_shape[0]) != y.shape[0]
      or int(output_shape[-1]) != y.shape[-1]
  ):
    raise ValueError(
        f"{op}: output_shape got {output_shape!r}; expected {y.ndim} ints (N, "
        f"*spatial({y.ndim - 2}), C) with y's N = {y.shape[0]} and C = {y.shape[-1]} "
        "and positive spatial sizes."
    )
  output_shape = tuple(int(v) for v in output_shape)
  _checks.check_extent(output_shape, y.dtype, name="output_shape", value=output_shape, op=op)
  return _unpool_core(y, indices.astype(jnp.int32), output_shape)
