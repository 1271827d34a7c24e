"""The matrix view of convolution: the dense matrix a cross-correlation multiplies by.

A cross-correlation is linear in its input, so for one example it is a matrix-vector
product ``y.reshape(-1) = M @ x.reshape(-1)`` (row-major over ``[*spatial, C]``). In
1-D with one channel and zero padding ``M`` is a Toeplitz matrix (constant along each
diagonal); in 2-D it is doubly block Toeplitz (Toeplitz blocks, arranged Toeplitz);
with ``padding_mode="circular"`` and stride 1 it is circulant (block circulant in
2-D). Its transpose is the transposed convolution, :func:`cnnjax.conv_transpose`.

``M`` is built here from the definition, not from :func:`cnnjax.cross_correlate`: each
output position ``n`` and kernel offset ``k`` read the padded input at
``q = n·s + k·t``; the padding mode maps ``q`` back to an input position (or to none,
for zeros), and the ``[C_in, C_out]`` slice of the kernel at ``k`` is added into the
block of ``M`` at (output ``n``, input position). Groups make each block block-diagonal.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from cnnjax import _checks
from cnnjax import padding as _padding
from cnnjax.padding import PaddingLike

__all__ = ["MAX_MATRIX_BYTES", "conv_matrix"]

# conv_matrix refuses matrices larger than this (1 GiB) unless max_bytes says otherwise.
MAX_MATRIX_BYTES = 2**30


def _source_index(q: np.ndarray, n: int, lo: int, mode: str) -> np.ndarray:
  """The input position padded position ``q`` reads, or -1 (a zero of zero padding)."""
  p = q - lo
  if mode == "zeros":
    return np.where((p >= 0) & (p < n), p, -1)
  if mode == "circular":
    return np.mod(p, n)
  if mode == "edge":
    return np.clip(p, 0, n - 1)
  # reflect (mirror without repeating the edge): period 2(n − 1).
  if n == 1:
    return np.zeros_like(p)
  period = 2 * (n - 1)
  p = np.mod(p, period)
  return np.where(p < n, p, period - p)


def _dense_kernel(w: jax.Array, groups: int) -> jax.Array:
  """``[*k, C_in // g, C_out]`` → ``[*k, C_in, C_out]``, zero between groups."""
  if groups == 1:
    return w
  *k, cg, c_out = w.shape
  og = c_out // groups
  wg = w.reshape(*k, cg, groups, og)
  eye = jnp.eye(groups, dtype=w.dtype).reshape(*(1,) * len(k), groups, 1, groups, 1)
  # [*k, g_in, cg, g_out, og], nonzero where g_in == g_out only.
  full = wg[..., None, :, :, :] * eye
  return full.reshape(*k, groups * cg, c_out)


def conv_matrix(
    w: ArrayLike,
    input_shape: Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: PaddingLike = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    max_bytes: int = MAX_MATRIX_BYTES,
) -> jax.Array:
  """The dense matrix of :func:`cnnjax.cross_correlate` with kernel ``w``.

  ``cross_correlate(x, w, ...)[b].reshape(-1) == M @ x[b].reshape(-1)`` for every
  example ``b`` of an input ``x`` of shape ``[N, *input_shape]``, both reshapes
  row-major over ``[*spatial, C]``. ``M.T`` is :func:`cnnjax.conv_transpose` (zero
  padding). Differentiable in ``w``.

  Args:
    w: kernel, ``[*kernel_spatial, C_in // groups, C_out]`` with 1, 2 or 3 spatial dims;
      floating, complex or integer.
    input_shape: one example's shape, ``(*spatial, C_in)``.
    stride, padding, dilation, groups, padding_mode: as :func:`cnnjax.cross_correlate`.
    max_bytes: refuse a matrix larger than this many bytes (default
      :data:`MAX_MATRIX_BYTES`, 1 GiB).

  Returns:
    ``M``, ``[prod(out_spatial) · C_out, prod(spatial) · C_in]`` in ``w``'s dtype.

  Raises:
    ValueError: bad shapes or settings (naming the argument), or a matrix over
      ``max_bytes``.

  Example:
    >>> w = jnp.array([1., 2.]).reshape(2, 1, 1)
    >>> conv_matrix(w, (3, 1)).tolist()
    [[1.0, 2.0, 0.0], [0.0, 1.0, 2.0]]
  """
  op = "conv_matrix"
  w = jnp.asarray(w)
  num_spatial = _checks.check_kernel(w, op=op)
  if (
      isinstance(input_shape, str)
      or not isinstance(input_shape, Sequence)
      or len(input_shape) != num_spatial + 1
      or not all(_checks.is_int(v) and 1 <= v <= _checks.INT64_MAX for v in input_shape)
  ):
    raise ValueError(
        f"{op}: input_shape got {input_shape!r}; expected {num_spatial + 1} positive "
        f"ints (*spatial({num_spatial}), C_in) of at most 2**63 - 1, one example's shape, "
        f"to match the kernel of shape {tuple(w.shape)}."
    )
  input_shape = tuple(int(v) for v in input_shape)
  _padding.check_padding_mode(padding_mode, op=op)
  c_in, c_out = input_shape[-1], w.shape[-1]
  groups = _checks.check_groups(groups, c_in, w.shape[-2], c_out, op=op)
  _checks.compute_dtype(w, w, op=op, names=("w", "w"))  # refuses bool and the like
  max_bytes = _checks.check_positive_int(max_bytes, name="max_bytes", op=op)
  geo = _padding.conv_geometry(
      input_shape[:-1],
      w.shape[:-2],
      stride=stride,
      padding=padding,
      dilation=dilation,
      op=op,
  )
  rows, cols = math.prod(geo.out_spatial) * c_out, math.prod(geo.in_spatial) * c_in
  size = rows * cols * w.dtype.itemsize
  if size > max_bytes:
    raise ValueError(
        f"{op}: input_shape got {input_shape!r}, whose matrix would be {rows} × {cols} "
        f"({size:,} bytes of {w.dtype.name}); expected at most max_bytes={max_bytes:,} "
        "bytes (a smaller input, or a larger max_bytes)."
    )

  # For every (output position, kernel offset): the input position it reads.
  out_idx = np.indices(geo.out_spatial).reshape(num_spatial, -1)  # [d, P_out]
  k_idx = np.indices(geo.kernel).reshape(num_spatial, -1)  # [d, K]
  src = []
  for d in range(num_spatial):
    q = out_idx[d][:, None] * geo.stride[d] + k_idx[d][None, :] * geo.dilation[d]
    src.append(_source_index(q, geo.in_spatial[d], geo.pads[d][0], padding_mode))
  valid = np.all(np.stack(src) >= 0, axis=0)  # [P_out, K]
  col = np.ravel_multi_index(tuple(np.where(valid, s, 0) for s in src), geo.in_spatial)
  row = np.broadcast_to(np.arange(out_idx.shape[1])[:, None], valid.shape)
  kk = np.broadcast_to(np.arange(k_idx.shape[1])[None, :], valid.shape)
  row, col, kk = row[valid], col[valid], kk[valid]

  return _assemble(w, row, col, kk, groups=groups, blocks=(rows // c_out, cols // c_in))


@functools.partial(jax.jit, static_argnames=("groups", "blocks"))
def _assemble(w, row, col, kk, *, groups: int, blocks: tuple[int, int]) -> jax.Array:
  """Adds kernel slice ``kk[i]`` (transposed) into block ``(row[i], col[i])`` of ``M``."""
  c_in, c_out = w.shape[-2] * groups, w.shape[-1]
  slices = _dense_kernel(w, groups).reshape(-1, c_in, c_out)  # [K, C_in, C_out]
  values = jnp.swapaxes(slices[kk], -1, -2)  # [entries, C_out, C_in]
  m = jnp.zeros((blocks[0], c_out, blocks[1], c_in), w.dtype)
  m = m.at[row, :, col, :].add(values)
  return m.reshape(blocks[0] * c_out, blocks[1] * c_in)
