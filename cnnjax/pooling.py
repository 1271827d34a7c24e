"""Pooling: max, average, L^p and global pooling, maxout, blur pooling and APS.

Inputs are batched and channels-last, ``[N, *spatial, C]`` with 1, 2 or 3 spatial
dims; every pool acts on each channel separately. Window, stride and padding are
canonicalised by :func:`cnnjax.padding.conv_geometry` with the window as the kernel
(dilation 1), so the rules, output sizes and error messages are the convolutions'.
``stride`` defaults to the window (non-overlapping windows).

Underneath there is one generic window pool, ``_window_pool(x, geo, kind)``: a max
(padding with the dtype's lowest value) or a sum (padding with zeros) over every
window. Average and L^p pooling are sums; global max pooling and maxout are max pools
with one window. Its forward pass is ``lax.reduce_window``, or, where windows do not
overlap (stride >= window), a reshape and a reduction.

Gradient of max pooling: each window passes its output gradient to exactly one
input, the *first* maximum of the window in row-major window order (a NaN counts as
larger than any number, so the first NaN wins). This differs from ``jnp.max``,
whose gradient splits ties equally. It is a ``jax.custom_jvp``: the forward pass
finds each window's argmax (a chain of strict compares over the window offsets,
each offset a contiguous slice of one polyphase component of the padded input) and
the tangent is read there, so forward and reverse mode both work and agree. Reverse
mode is the transpose of that read, which XLA fuses into one elementwise loop
instead of ``reduce_window``'s ``select_and_scatter``: on XLA:CPU (batch 128,
32×32×64, ``benchmarks/pooling.py``) forward+backward takes about 0.35× the time of
the better of ``reduce_window`` and reshape-and-``jnp.max``, for 2×2/2 and for
3×3/2 windows alike. Overlapping windows of more than ``_UNROLL_LIMIT`` positions
keep ``reduce_window``'s own gradient (``select_and_scatter`` with a ``>=`` select,
which also keeps the first maximum). The same lowering is used on every backend,
so the tie rule does not depend on it.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from cnnjax import _checks
from cnnjax import padding as _padding
from cnnjax.conv import cross_correlate
from cnnjax.padding import Geometry, PaddingLike

__all__ = [
    "avg_pool",
    "blur_pool",
    "global_avg_pool",
    "global_max_pool",
    "lp_pool",
    "max_pool",
    "maxout",
    "polyphase_downsample",
]

# Windows with at most this many positions find their argmax by an unrolled chain
# of elementwise compares; larger ones by a reduction (non-overlapping windows) or
# fall back to reduce_window's own gradient (overlapping windows).
_UNROLL_LIMIT = 64


# --------------------------------------------------------------------------- checks


def _check_input(x: jax.Array, *, op: str, name: str = "x") -> int:
  """Checks ``x`` is ``[N, *spatial, C]`` with 1–3 spatial dims; returns their number."""
  if x.ndim not in (3, 4, 5):
    raise ValueError(
        f"{op}: {name} has shape {tuple(x.shape)} (rank {x.ndim}); expected rank 3, 4 "
        "or 5: [batch, *spatial(d), channels] with d = 1, 2 or 3 spatial dims."
    )
  if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
    raise TypeError(
        f"{op}: {name} has dtype {x.dtype}; expected a floating or integer dtype."
    )
  return x.ndim - 2


def _pool_geometry(x: jax.Array, window, stride, padding: PaddingLike, *, op: str) -> Geometry:
  """Canonical geometry of a pool; refuses windows that lie entirely in the padding."""
  num_spatial = x.ndim - 2
  window = _padding.normalize_ints(window, num_spatial, name="window", op=op)
  geo = _padding.conv_geometry(
      x.shape[1:-1], window, stride=window if stride is None else stride,
      padding=padding, op=op,
  )
  for d, (n, k, s, m, (lo, hi)) in enumerate(
      zip(geo.in_spatial, geo.kernel, geo.stride, geo.out_spatial, geo.pads)
  ):
    if lo >= k or (m - 1) * s - lo >= n:
      raise ValueError(
          f"{op}: padding got {padding!r}, which puts a whole window in the padding in "
          f"spatial dim {d} (input {n}, padding {(lo, hi)}, window {k}, stride {s}); "
          "expected every window to overlap the input (padding smaller than the window)."
      )
  return geo


def _lowest(dtype) -> np.ndarray:
  """The max-pool padding value: -inf, or the integer dtype's minimum.

  A NumPy scalar, so that ``lax.reduce_window`` sees a concrete identity and
  lowers to its differentiable max/add primitives even under ``jit``.
  """
  if jnp.issubdtype(dtype, jnp.floating):
    return np.array(-np.inf, dtype)
  return np.array(jnp.iinfo(dtype).min, dtype)


# -------------------------------------------------------------- window decomposition


def _overlaps(geo: Geometry) -> bool:
  return any(k > s for k, s in zip(geo.kernel, geo.stride))


def _phase_view(a: jax.Array, geo: Geometry, fill) -> jax.Array:
  """``a`` padded and viewed as ``[N, Q_1, S_1, …, Q_d, S_d, C]`` (position q·S + r).

  The padded input is padded (by ``fill``) or cropped at the high end to
  ``Q·S`` with ``Q = m + ⌈K / S⌉ − 1``, so window ``o``'s offset ``k = j·S + r``
  reads ``[…, o + j, r, …]``: every window offset is a contiguous slice of one
  polyphase component.
  """
  config = [(0, 0, 0)]
  view = [a.shape[0]]
  for n, k, s, m, (lo, _) in zip(geo.in_spatial, geo.kernel, geo.stride, geo.out_spatial, geo.pads):
    q = m + -(-k // s) - 1
    config.append((lo, q * s - n - lo, 0))
    view += [q, s]
  config.append((0, 0, 0))
  view.append(a.shape[-1])
  return lax.pad(a, jnp.asarray(fill, a.dtype), config).reshape(view)


def _window_terms(a: jax.Array, geo: Geometry, fill) -> list[jax.Array]:
  """The padded input at each window offset, ``prod(window)`` arrays ``[N, *out, C]``.

  Offsets in row-major window order; term ``k`` holds ``ã[b, o·S + k, c]``.
  """
  view = _phase_view(a, geo, fill)
  n, c = a.shape[0], a.shape[-1]
  terms = []
  for offset in itertools.product(*(range(k) for k in geo.kernel)):
    start, limit = [0], [n]
    for k, s, m in zip(offset, geo.stride, geo.out_spatial):
      j, r = divmod(k, s)
      start += [j, r]
      limit += [j + m, r + 1]
    start.append(0)
    limit.append(c)
    terms.append(lax.slice(view, start, limit).reshape(n, *geo.out_spatial, c))
  return terms


def _window_blocks(a: jax.Array, geo: Geometry, fill) -> tuple[jax.Array, tuple[int, ...]]:
  """Non-overlapping windows as ``[N, m_1, K_1, …, m_d, K_d, C]`` and the window axes."""
  view = _phase_view(a, geo, fill)
  limit = [view.shape[0]]
  for k, m in zip(geo.kernel, geo.out_spatial):
    limit += [m, k]
  limit.append(view.shape[-1])
  blocks = lax.slice(view, [0] * view.ndim, limit)
  return blocks, tuple(range(2, 2 * len(geo.kernel) + 1, 2))


def _window_iota(geo: Geometry, dtype) -> jax.Array:
  """Row-major window index, shaped ``[1, 1, K_1, 1, K_2, …, 1]`` to match blocks."""
  nd = len(geo.kernel)
  shape = [1] * (2 * nd + 2)
  for d, k in enumerate(geo.kernel):
    shape[2 + 2 * d] = k
  flat = np.arange(math.prod(geo.kernel)).reshape(geo.kernel)
  return jnp.asarray(flat.reshape(shape), dtype)


def _index_dtype(size: int):
  return jnp.int8 if size <= 127 else (jnp.int16 if size <= 32767 else jnp.int32)


# ----------------------------------------------------------------------- max pooling


def _max_primal(x: jax.Array, geo: Geometry) -> jax.Array:
  if _overlaps(geo):
    return lax.reduce_window(
        x, _lowest(x.dtype), lax.max, (1, *geo.kernel, 1), (1, *geo.stride, 1),
        ((0, 0), *geo.pads, (0, 0)),
    )
  blocks, axes = _window_blocks(x, geo, _lowest(x.dtype))
  return jnp.max(blocks, axis=axes)


def _max_and_argmax(x: jax.Array, geo: Geometry) -> tuple[jax.Array, jax.Array]:
  """Window maxima and the row-major index of each window's first maximum."""
  size = math.prod(geo.kernel)
  idx_dtype = _index_dtype(size)
  is_float = jnp.issubdtype(x.dtype, jnp.floating)
  if size <= _UNROLL_LIMIT or _overlaps(geo):  # the blocks below need disjoint windows
    terms = _window_terms(x, geo, _lowest(x.dtype))
    y, idx = terms[0], jnp.zeros(terms[0].shape, idx_dtype)
    for k, t in enumerate(terms[1:], 1):
      take = t > y  # strict: on a tie the earlier offset keeps the window
      if is_float:
        take = take | (jnp.isnan(t) & ~jnp.isnan(y))
      y = jnp.where(take, t, y)
      idx = jnp.where(take, jnp.asarray(k, idx_dtype), idx)
    return y, idx
  blocks, axes = _window_blocks(x, geo, _lowest(x.dtype))
  y = jnp.max(blocks, axis=axes)
  y_b = jnp.expand_dims(y, axes)
  hit = blocks == y_b
  if is_float:
    hit = hit | jnp.isnan(blocks)  # only possible when y is NaN: the first NaN wins
  iota = _window_iota(geo, idx_dtype)
  idx = jnp.min(jnp.where(hit, iota, jnp.asarray(size, idx_dtype)), axis=axes)
  return y, idx


def _gather_at(t: jax.Array, idx: jax.Array, geo: Geometry) -> jax.Array:
  """``t`` read at each window's selected offset ``idx`` (linear in ``t``)."""
  zero = np.zeros((), t.dtype)
  if _overlaps(geo):
    out = None
    for k, term in enumerate(_window_terms(t, geo, zero)):
      picked = jnp.where(idx == k, term, zero)
      out = picked if out is None else out + picked
    return out
  blocks, axes = _window_blocks(t, geo, zero)
  hit = _window_iota(geo, idx.dtype) == jnp.expand_dims(idx, axes)
  return jnp.sum(jnp.where(hit, blocks, zero), axis=axes)


_max_pool_float = jax.custom_jvp(_max_primal, nondiff_argnums=(1,))


@_max_pool_float.defjvp
def _max_pool_float_jvp(geo, primals, tangents):
  (x,), (t,) = primals, tangents
  y, idx = _max_and_argmax(x, geo)
  return y, _gather_at(t, idx, geo)


def _max_pool_geo(x: jax.Array, geo: Geometry) -> jax.Array:
  """Max over every window, gradient to the first maximum (see the module docstring)."""
  if not jnp.issubdtype(x.dtype, jnp.floating):
    return _max_primal(x, geo)
  if _overlaps(geo) and math.prod(geo.kernel) > _UNROLL_LIMIT:
    # Large overlapping windows: reduce_window's own gradient (select_and_scatter
    # with a >= select, which also keeps the first maximum in row-major order).
    return _max_primal(x, geo)
  return _max_pool_float(x, geo)


@functools.partial(jax.jit, static_argnames=("geo",))
def _max_pool_indices(x: jax.Array, geo: Geometry) -> jax.Array:
  """int32 index of each window's first maximum into the flattened input spatial axes."""
  _, idx = _max_and_argmax(lax.stop_gradient(x), geo)
  idx = idx.astype(jnp.int32)
  flat = jnp.zeros(idx.shape, jnp.int32)
  for d, (n, k, s, (lo, _)) in enumerate(
      zip(geo.in_spatial, geo.kernel, geo.stride, geo.pads)
  ):
    offset = (idx // math.prod(geo.kernel[d + 1:])) % k
    out = lax.broadcasted_iota(jnp.int32, idx.shape, d + 1)
    # A window's first maximum is in the padding only when every input value it covers
    # equals the padding value; clipping then picks one of those (equal) inputs.
    pos = jnp.clip(out * s + offset - lo, 0, n - 1)
    flat = flat * n + pos
  return flat


def _sum_pool_geo(x: jax.Array, geo: Geometry) -> jax.Array:
  """Sum over every window, zero padding."""
  if _overlaps(geo):
    return lax.reduce_window(
        x, np.zeros((), x.dtype), lax.add, (1, *geo.kernel, 1), (1, *geo.stride, 1),
        ((0, 0), *geo.pads, (0, 0)),
    )
  blocks, axes = _window_blocks(x, geo, np.zeros((), x.dtype))
  return jnp.sum(blocks, axis=axes)


# The cores below are jitted with their (hashable) configuration static, so an eager
# call compiles one program per configuration instead of dispatching op by op.


@functools.partial(jax.jit, static_argnames=("geo", "kind"))
def _window_pool(x: jax.Array, geo: Geometry, kind: str) -> jax.Array:
  """The one generic pool: ``kind`` ``"max"`` or ``"sum"`` over every window of ``geo``."""
  return _max_pool_geo(x, geo) if kind == "max" else _sum_pool_geo(x, geo)


@functools.partial(jax.jit, static_argnames=("geo", "count_include_pad"))
def _avg_pool_core(x: jax.Array, geo: Geometry, count_include_pad: bool) -> jax.Array:
  out = _checks.mean_dtype(x.dtype)
  total = _window_pool(x.astype(_checks.accumulation_dtype(x.dtype)), geo, "sum")
  total = total.astype(_checks.accumulation_dtype(out))
  if count_include_pad:
    divisor = np.float64(math.prod(geo.kernel))
  else:
    divisor = np.ones((1,) * (x.ndim - 1), np.float64)
    for d, (n, k, s, m, (lo, _)) in enumerate(
        zip(geo.in_spatial, geo.kernel, geo.stride, geo.out_spatial, geo.pads)
    ):
      start = np.arange(m) * s - lo
      count = np.minimum(start + k, n) - np.maximum(start, 0)
      shape = [1] * x.ndim
      shape[d + 1] = m
      divisor = divisor * count.reshape(shape)
  return (total / divisor.astype(total.dtype)).astype(out)


@functools.partial(jax.jit, static_argnames=("geo", "p"))
def _lp_pool_core(x: jax.Array, geo: Geometry, p: float) -> jax.Array:
  x = x.astype(_checks.mean_dtype(x.dtype))
  if math.isinf(p):
    return _window_pool(jnp.abs(x), geo, "max")
  acc = x.astype(_checks.accumulation_dtype(x.dtype))
  if float(p).is_integer():
    powered = lax.integer_pow(acc if int(p) % 2 == 0 else jnp.abs(acc), int(p))
  else:
    powered = jnp.abs(acc) ** np.asarray(p, acc.dtype)
  total = _window_pool(powered, geo, "sum")
  # sqrt-like roots have an infinite slope at 0: take the root of 1 there instead and
  # select 0 afterwards, so that a window of zeros has gradient 0, not NaN.
  positive = total > 0
  safe = jnp.where(positive, total, np.ones((), total.dtype))
  root = safe if p == 1 else safe ** np.asarray(1 / p, total.dtype)
  return jnp.where(positive, root, np.zeros((), total.dtype)).astype(x.dtype)


# ------------------------------------------------------------------------ public API


def max_pool(
    x: ArrayLike,
    window: int | Sequence[int],
    *,
    stride: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    return_indices: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Max pooling: the maximum of each window, per channel.

  ``y[b, o, c] = max_k x̃[b, o·s + k, c]`` over the input padded with ``-inf`` (the
  dtype's minimum for integers), so padding never wins.

  Gradient: each window passes its gradient to exactly one input, its first maximum
  in row-major window order (on a tie, the earliest position; a NaN beats any
  number). Overlapping windows that pick the same input add up there.

  Args:
    x: input, ``[N, *spatial, C]`` with 1, 2 or 3 spatial dims, floating or integer.
    window: the window size, an int or one int per spatial dim.
    stride: an int or one int per spatial dim; defaults to ``window``.
    padding: as for the convolutions: ``"VALID"``, ``"SAME"`` (output
      ``ceil(n / stride)``), ``"FULL"``, an int, a tuple of ints or of
      ``(low, high)`` pairs. Every window must overlap the input.
    return_indices: also return where each maximum is, for
      :func:`cnnjax.max_unpool`.

  Returns:
    ``[N, *out_spatial, C]`` in ``x``'s dtype, ``out = ⌊(n + lo + hi − k) / s⌋ + 1``.
    With ``return_indices``, ``(y, indices)``: ``indices`` is int32, shaped like ``y``,
    the position of each window's first maximum in the flattened spatial axes of
    ``x`` (row-major, per example and channel: PyTorch's convention).

  Example:
    >>> x = jnp.array([[1., 4, 3, 6], [2, 1, 0, 9], [2, 2, 7, 7], [5, 3, 3, 6]])
    >>> max_pool(x[None, :, :, None], 2)[0, :, :, 0]
    Array([[4., 9.],
           [5., 7.]], dtype=float32)
  """
  op = "max_pool"
  x = jnp.asarray(x)
  _check_input(x, op=op)
  geo = _pool_geometry(x, window, stride, padding, op=op)
  if not isinstance(return_indices, (bool, np.bool_)):
    raise TypeError(f"{op}: return_indices got {return_indices!r}; expected a bool.")
  y = _window_pool(x, geo, "max")
  return (y, _max_pool_indices(x, geo)) if return_indices else y


def avg_pool(
    x: ArrayLike,
    window: int | Sequence[int],
    *,
    stride: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    count_include_pad: bool = False,
) -> jax.Array:
  """Average pooling: the mean of each window, per channel.

  Padding is with zeros; by default each window is divided by the number of real
  (unpadded) input pixels it covers, with ``count_include_pad=True`` by the window
  size. The gradient is ``1 / divisor`` to every input of a window.

  Args:
    x: input, ``[N, *spatial, C]`` with 1, 2 or 3 spatial dims, floating or integer.
    window: the window size, an int or one int per spatial dim.
    stride: an int or one int per spatial dim; defaults to ``window``.
    padding: as in :func:`max_pool`.
    count_include_pad: divide by the full window size, padding included.

  Returns:
    ``[N, *out_spatial, C]`` in ``x``'s dtype (half precision sums in float32); for
    integer inputs float32 (the sums are exact in int32, only the division rounds).

  Example:
    >>> x = jnp.arange(4.).reshape(1, 4, 1)
    >>> avg_pool(x, 3, stride=1, padding=1)[0, :, 0]
    Array([0.5, 1. , 2. , 2.5], dtype=float32)
  """
  op = "avg_pool"
  x = jnp.asarray(x)
  _check_input(x, op=op)
  geo = _pool_geometry(x, window, stride, padding, op=op)
  if not isinstance(count_include_pad, (bool, np.bool_)):
    raise TypeError(
        f"{op}: count_include_pad got {count_include_pad!r}; expected a bool."
    )
  return _avg_pool_core(x, geo, bool(count_include_pad))


def lp_pool(
    x: ArrayLike,
    window: int | Sequence[int],
    *,
    p: float = 2,
    stride: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
) -> jax.Array:
  """L^p pooling: ``(Σ_window |x|^p)^(1/p)`` per channel (L2 pooling is ``p=2``).

  Padding is with zeros (which add nothing). ``p=inf`` gives ``max |x|``. The
  gradient at a window of zeros is taken to be zero (not NaN).

  Args:
    x: input, ``[N, *spatial, C]`` with 1, 2 or 3 spatial dims, floating or integer.
    window: the window size, an int or one int per spatial dim.
    p: the exponent, a positive number or ``inf``.
    stride: an int or one int per spatial dim; defaults to ``window``.
    padding: as in :func:`max_pool`.

  Returns:
    ``[N, *out_spatial, C]`` in ``x``'s dtype (float32 for integer inputs).

  Example:
    >>> x = jnp.array([3., 4., 1., 0.]).reshape(1, 4, 1)
    >>> lp_pool(x, 2, p=2)[0, :, 0]
    Array([5., 1.], dtype=float32)
  """
  op = "lp_pool"
  x = jnp.asarray(x)
  _check_input(x, op=op)
  geo = _pool_geometry(x, window, stride, padding, op=op)
  if (
      isinstance(p, (bool, np.bool_))
      or not isinstance(p, (int, float, np.integer, np.floating))
      or not p > 0
  ):
    raise ValueError(f"{op}: p got {p!r}; expected a positive number or inf.")
  return _lp_pool_core(x, geo, float(p))


def _check_keepdims(keepdims, *, op: str) -> None:
  if not isinstance(keepdims, (bool, np.bool_)):
    raise TypeError(f"{op}: keepdims got {keepdims!r}; expected a bool.")


def global_max_pool(x: ArrayLike, *, keepdims: bool = False) -> jax.Array:
  """The maximum over all spatial positions, per channel.

  One window covering the whole input, so the gradient goes to the first maximum in
  row-major spatial order, as in :func:`max_pool`.

  Args:
    x: input, ``[N, *spatial, C]`` with 1, 2 or 3 spatial dims.
    keepdims: keep the spatial axes, with size 1.

  Returns:
    ``[N, C]``, or ``[N, 1, …, 1, C]`` with ``keepdims``, in ``x``'s dtype.

  Example:
    >>> global_max_pool(jnp.arange(8.).reshape(1, 2, 2, 2))
    Array([[6., 7.]], dtype=float32)
  """
  op = "global_max_pool"
  x = jnp.asarray(x)
  _check_input(x, op=op)
  _check_keepdims(keepdims, op=op)
  y = _window_pool(x, _pool_geometry(x, x.shape[1:-1], None, "VALID", op=op), "max")
  return y if keepdims else y.reshape(x.shape[0], x.shape[-1])


def global_avg_pool(x: ArrayLike, *, keepdims: bool = False) -> jax.Array:
  """The mean over all spatial positions, per channel.

  Args:
    x: input, ``[N, *spatial, C]`` with 1, 2 or 3 spatial dims, floating or integer.
    keepdims: keep the spatial axes, with size 1.

  Returns:
    ``[N, C]``, or ``[N, 1, …, 1, C]`` with ``keepdims``, in ``x``'s dtype (float32
    for integer inputs, whose sum is exact).

  Example:
    >>> global_avg_pool(jnp.arange(8.).reshape(1, 2, 2, 2))
    Array([[3., 4.]], dtype=float32)
  """
  op = "global_avg_pool"
  x = jnp.asarray(x)
  _check_input(x, op=op)
  _check_keepdims(keepdims, op=op)
  axes = tuple(range(1, x.ndim - 1))
  out = _checks.mean_dtype(x.dtype)
  total = jnp.sum(x.astype(_checks.accumulation_dtype(x.dtype)), axis=axes, keepdims=keepdims)
  count = math.prod(x.shape[1:-1])
  return (total.astype(_checks.accumulation_dtype(out)) / count).astype(out)


def maxout(x: ArrayLike, pieces: int, *, axis: int = -1) -> jax.Array:
  """Maxout (Goodfellow et al. 2013): the maximum over groups of ``pieces`` features.

  Feature ``c`` along ``axis`` belongs to group ``c // pieces``; each group gives its
  maximum, so ``axis`` shrinks from ``C`` to ``C // pieces``. This is a 1-D max pool
  with window ``pieces`` along ``axis``, with the same gradient rule (the first
  maximum of each group).

  Args:
    x: input of any rank >= 1, floating or integer.
    pieces: the group size, a positive int dividing ``x.shape[axis]``.
    axis: the feature axis.

  Returns:
    ``x``'s shape with ``axis`` of size ``x.shape[axis] // pieces``, in ``x``'s dtype.

  Example:
    >>> maxout(jnp.array([[1., 5., 3., 2.]]), 2)
    Array([[5., 3.]], dtype=float32)
  """
  op = "maxout"
  x = jnp.asarray(x)
  if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
    raise TypeError(f"{op}: x has dtype {x.dtype}; expected a floating or integer dtype.")
  if x.ndim == 0:
    raise ValueError(f"{op}: x has shape (); expected at least one axis to pool over.")
  is_int = isinstance(axis, (int, np.integer)) and not isinstance(axis, bool)
  if not is_int or not -x.ndim <= axis < x.ndim:
    raise ValueError(
        f"{op}: axis got {axis!r}; expected an int in [{-x.ndim}, {x.ndim}) for x of "
        f"shape {tuple(x.shape)}."
    )
  axis = int(axis) % x.ndim
  if not isinstance(pieces, (int, np.integer)) or isinstance(pieces, bool) or pieces < 1:
    raise ValueError(f"{op}: pieces got {pieces!r}; expected a positive int.")
  features = x.shape[axis]
  if features % pieces:
    raise ValueError(
        f"{op}: pieces got {pieces!r}, which does not divide the {features} features of "
        f"x along axis {axis} (shape {tuple(x.shape)}); expected a divisor of {features}."
    )
  moved = jnp.moveaxis(x, axis, -1)
  lead = moved.shape[:-1]
  flat = moved.reshape(math.prod(lead), features, 1)
  geo = _padding.conv_geometry((features,), (int(pieces),), stride=int(pieces), op=op)
  y = _window_pool(flat, geo, "max").reshape(*lead, features // pieces)
  return jnp.moveaxis(y, -1, axis)


def _binomial(kernel_size: int) -> np.ndarray:
  row = np.array([math.comb(kernel_size - 1, i) for i in range(kernel_size)], np.float64)
  return row / row.sum()


def blur_pool(
    x: ArrayLike,
    *,
    stride: int | Sequence[int] = 2,
    kernel_size: int | Sequence[int] = 3,
    padding_mode: str = "reflect",
) -> jax.Array:
  """Anti-aliased downsampling (Zhang 2019, "Making Convolutional Networks Shift-Invariant Again").

  Each channel is low-passed by the normalised binomial filter of ``kernel_size``
  taps (``[1, 2, 1] / 4`` for 3; the outer product over spatial dims), then
  subsampled by ``stride``: a depthwise :func:`cnnjax.conv.cross_correlate`. The
  input is padded by ``(k − 1) // 2`` below and ``k // 2`` above in
  ``padding_mode`` (reflect by default, as in the paper's code), so the output has
  ``ceil(n / stride)`` positions and a constant image stays constant everywhere
  (with ``"zeros"``, away from the border only). Use ``blur_pool(max_pool(x, 2,
  stride=1))`` for the paper's MaxBlurPool.

  Args:
    x: input, ``[N, *spatial, C]`` with 1, 2 or 3 spatial dims, floating or integer.
    stride: the subsampling factor, an int or one int per spatial dim.
    kernel_size: the number of binomial taps, an int or one per spatial dim
      (1 is plain subsampling).
    padding_mode: ``"reflect"``, ``"zeros"``, ``"circular"`` or ``"edge"``.

  Returns:
    ``[N, *ceil(spatial / stride), C]`` in ``x``'s dtype (float32 for integers).

  Example:
    >>> blur_pool(jnp.ones((1, 5, 5, 3))).shape
    (1, 3, 3, 3)
  """
  op = "blur_pool"
  x = jnp.asarray(x)
  num_spatial = _check_input(x, op=op)
  _padding.check_padding_mode(padding_mode, op=op)
  stride = _padding.normalize_ints(stride, num_spatial, name="stride", op=op)
  sizes = _padding.normalize_ints(kernel_size, num_spatial, name="kernel_size", op=op)
  if padding_mode == "reflect":
    for d, (n, k) in enumerate(zip(x.shape[1:-1], sizes)):
      if k // 2 > n - 1:
        raise ValueError(
            f"{op}: kernel_size got {kernel_size!r}; reflect padding by {k // 2} needs "
            f"more than {k // 2} pixels in spatial dim {d}, which has {n}; expected a "
            "smaller kernel_size or another padding_mode."
        )
  taps = np.ones((), np.float64)
  for k in sizes:
    taps = np.multiply.outer(taps, _binomial(k))
  channels = x.shape[-1]
  x = x.astype(_checks.mean_dtype(x.dtype))  # integers: the weights are fractions
  w = jnp.asarray(np.broadcast_to(taps[..., None, None], (*sizes, 1, channels)), x.dtype)
  return cross_correlate(
      x, w, stride=stride, padding=tuple(((k - 1) // 2, k // 2) for k in sizes),
      groups=channels, padding_mode=padding_mode,
  )


def polyphase_downsample(
    x: ArrayLike, *, stride: int | Sequence[int] = 2, p: float = 2
) -> jax.Array:
  """Adaptive polyphase sampling (APS; Chaman & Dokmanić 2021).

  Of the ``prod(stride)`` polyphase components ``x[b, r + S·j, c]`` (one per phase
  ``r``), each example keeps the one with the largest l_p norm over all its positions
  and channels. A circular shift of the input permutes the components and shifts
  each circularly, so the same component wins: the output of a shifted input is a
  circular shift of the output (by ``(r + t) // S`` for a shift ``t`` and chosen phase
  ``r``), and a network ending in global pooling is exactly invariant to every
  circular shift.

  Ties (exactly equal norms) go to the first phase in row-major phase order; exact
  equivariance needs a unique largest norm, as generic inputs have (norms computed in
  a different summation order can differ in the last bit, so near-ties can flip).
  The gradient flows through the chosen component only.

  Args:
    x: input, ``[N, *spatial, C]`` with 1, 2 or 3 spatial dims, each divisible by the
      stride, floating or integer (the phase is chosen on float32 norms).
    stride: an int or one int per spatial dim.
    p: the norm's exponent, a positive number or ``inf``.

  Returns:
    ``[N, *(spatial // stride), C]`` in ``x``'s dtype.

  Example:
    >>> x = jnp.array([0., 1., 0., 3.]).reshape(1, 4, 1)
    >>> polyphase_downsample(x)[0, :, 0]
    Array([1., 3.], dtype=float32)
  """
  op = "polyphase_downsample"
  x = jnp.asarray(x)
  num_spatial = _check_input(x, op=op)
  stride = _padding.normalize_ints(stride, num_spatial, name="stride", op=op)
  if (
      isinstance(p, (bool, np.bool_))
      or not isinstance(p, (int, float, np.integer, np.floating))
      or not p > 0
  ):
    raise ValueError(f"{op}: p got {p!r}; expected a positive number or inf.")
  spatial = x.shape[1:-1]
  if any(n % s for n, s in zip(spatial, stride)):
    raise ValueError(
        f"{op}: stride got {stride!r}, which does not divide the spatial shape "
        f"{tuple(spatial)}; expected every spatial size to be a multiple of its stride."
    )
  return _polyphase_core(x, stride, float(p))


@functools.partial(jax.jit, static_argnames=("stride", "p"))
def _polyphase_core(x: jax.Array, stride: tuple[int, ...], p: float) -> jax.Array:
  num_spatial = x.ndim - 2
  spatial = x.shape[1:-1]
  n, c = x.shape[0], x.shape[-1]
  view = [n]
  for size, s in zip(spatial, stride):
    view += [size // s, s]
  view.append(c)
  # [N, Q_1, S_1, …, C] → [N, S_1, …, S_d, Q_1, …, Q_d, C] → [N, P, *Q, C]
  perm = [0, *range(2, 2 * num_spatial + 1, 2), *range(1, 2 * num_spatial, 2), len(view) - 1]
  out_spatial = tuple(size // s for size, s in zip(spatial, stride))
  phases = x.reshape(view).transpose(perm).reshape(n, math.prod(stride), *out_spatial, c)
  mags = jnp.abs(phases.astype(_checks.accumulation_dtype(_checks.mean_dtype(x.dtype))))
  reduce_axes = tuple(range(2, phases.ndim))
  if math.isinf(p):
    norms = jnp.max(mags, axis=reduce_axes)
  elif p == 2:
    norms = jnp.sum(mags * mags, axis=reduce_axes)
  else:
    norms = jnp.sum(mags ** np.asarray(p, mags.dtype), axis=reduce_axes)
  best = jnp.argmax(lax.stop_gradient(norms), axis=1)  # the first maximum on ties
  chosen = jnp.take_along_axis(phases, best.reshape(n, *(1,) * (phases.ndim - 1)), axis=1)
  return chosen.reshape(n, *out_spatial, c)
