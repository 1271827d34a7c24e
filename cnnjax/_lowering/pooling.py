"""The pools' computation: one generic window pool, and max pooling's gradient rule.

Underneath there is one generic window pool, ``window_pool(x, geo, kind)``: a max
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

import dataclasses
import functools
import itertools
import math
from typing import cast

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnnjax import _checks
from cnnjax._lowering import exact_mean
from cnnjax.padding import Geometry

__all__ = [
    "avg_pool_core",
    "global_avg_core",
    "lp_pool_core",
    "max_pool_indices",
    "polyphase_core",
    "window_pool",
]

# Windows with at most this many positions find their argmax by an unrolled chain
# of elementwise compares; larger ones by a reduction (non-overlapping windows) or
# fall back to reduce_window's own gradient (overlapping windows).
_UNROLL_LIMIT = 64


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
  """Windows that share positions, or dilated ones: neither is a block of a reshape."""
  return any(
      k > s or (t > 1 and k > 1)
      for k, s, t in zip(geo.kernel, geo.stride, geo.dilation, strict=True)
  )


def _dilated(geo: Geometry) -> bool:
  return any(t > 1 and k > 1 for k, t in zip(geo.kernel, geo.dilation, strict=True))


def _one_window(geo: Geometry) -> Geometry:
  """``geo`` with the stride and high padding of each dim of one output position cut.

  There the one window reads padded positions ``[0, r̂)`` only (``r̂`` the dilated
  window), so any stride above ``padded − r̂`` and any high padding that reaches ``r̂``
  give the same pool; but the
  polyphase view pads each dim to a multiple of the stride: a stride of 2**40 padded a
  5-pixel input to 2**40 positions (a segfault in 2-D). A stride that was at least the
  window stays at least the window, so the same lowering is taken.
  """
  stride, pads = list(geo.stride), list(geo.pads)
  for d, (s, k, m, n, (lo, hi)) in enumerate(
      zip(geo.stride, geo.kernel_eff, geo.out_spatial, geo.in_spatial, geo.pads, strict=True)
  ):
    if m == 1:
      hi = min(hi, max(k - lo - n, 0))
      pads[d] = (lo, hi)
      stride[d] = min(s, max(k, n + lo + hi - k + 1))
  stride, pads = tuple(stride), tuple(pads)
  if stride == geo.stride and pads == geo.pads:
    return geo
  return dataclasses.replace(geo, stride=stride, pads=pads)


def _phase_view(a: jax.Array, geo: Geometry, fill) -> jax.Array:
  """``a`` padded and viewed as ``[N, Q_1, S_1, …, Q_d, S_d, C]`` (position q·S + r).

  The padded input is padded (by ``fill``) or cropped at the high end to
  ``Q·S`` with ``Q = m + ⌈K̂ / S⌉ − 1`` (``K̂`` the dilated window), so window ``o``'s
  position ``k·t = j·S + r`` (tap ``k``, dilation ``t``) reads ``[…, o + j, r, …]``:
  every window offset is a contiguous slice of one polyphase component.
  """
  config = [(0, 0, 0)]
  view = [a.shape[0]]
  for n, k, s, m, (lo, _) in zip(
      geo.in_spatial, geo.kernel_eff, geo.stride, geo.out_spatial, geo.pads, strict=True
  ):
    q = m + -(-k // s) - 1
    config.append((lo, q * s - n - lo, 0))
    view += [q, s]
  config.append((0, 0, 0))
  view.append(a.shape[-1])
  return lax.pad(a, jnp.asarray(fill, a.dtype), config).reshape(view)


def _window_terms(a: jax.Array, geo: Geometry, fill) -> list[jax.Array]:
  """The padded input at each window offset, ``prod(window)`` arrays ``[N, *out, C]``.

  Offsets in row-major window order; term ``k`` holds ``ã[b, o·S + k·t, c]``.
  """
  view = _phase_view(a, geo, fill)
  n, c = a.shape[0], a.shape[-1]
  terms = []
  for offset in itertools.product(*(range(k) for k in geo.kernel)):
    start, limit = [0], [n]
    for k, s, t, m in zip(offset, geo.stride, geo.dilation, geo.out_spatial, strict=True):
      j, r = divmod(k * t, s)
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
  for k, m in zip(geo.kernel, geo.out_spatial, strict=True):
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
        x,
        _lowest(x.dtype),
        lax.max,
        (1, *geo.kernel, 1),
        (1, *geo.stride, 1),
        ((0, 0), *geo.pads, (0, 0)),
        window_dilation=(1, *geo.dilation, 1),
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
    return cast(jax.Array, out)  # (a window has at least one offset)
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
  if _overlaps(geo) and not _dilated(geo) and math.prod(geo.kernel) > _UNROLL_LIMIT:
    # Large overlapping windows: reduce_window's own gradient (select_and_scatter
    # with a >= select, which also keeps the first maximum in row-major order).
    # lax has no reverse mode for dilated windows: those keep the unrolled chain.
    return _max_primal(x, geo)
  return _max_pool_float(x, geo)


@functools.partial(jax.jit, static_argnames=("geo",))
def max_pool_indices(x: jax.Array, geo: Geometry) -> jax.Array:
  """int32 index of each window's first maximum into the flattened input spatial axes."""
  geo = _one_window(geo)
  _, idx = _max_and_argmax(lax.stop_gradient(x), geo)
  idx = idx.astype(jnp.int32)
  flat = jnp.zeros(idx.shape, jnp.int32)
  for d, (n, k, s, t, (lo, _)) in enumerate(
      zip(geo.in_spatial, geo.kernel, geo.stride, geo.dilation, geo.pads, strict=True)
  ):
    offset = (idx // math.prod(geo.kernel[d + 1 :])) % k
    out = lax.broadcasted_iota(jnp.int32, idx.shape, d + 1)
    # A window's first maximum is in the padding only when every input value it covers
    # equals the padding value: it is then the window's first tap, in the low padding;
    # its first tap inside the input (PyTorch's index there) is ``pos mod t``.
    pos = out * s + offset * t - lo
    pos = jnp.clip(jnp.where(pos < 0, pos % t, pos), 0, n - 1)
    flat = flat * n + pos
  return flat


def _sum_pool_geo(x: jax.Array, geo: Geometry) -> jax.Array:
  """Sum over every window, zero padding."""
  if _overlaps(geo):
    return lax.reduce_window(
        x,
        np.zeros((), x.dtype),
        lax.add,
        (1, *geo.kernel, 1),
        (1, *geo.stride, 1),
        ((0, 0), *geo.pads, (0, 0)),
    )
  blocks, axes = _window_blocks(x, geo, np.zeros((), x.dtype))
  return jnp.sum(blocks, axis=axes)


# The cores below are jitted with their (hashable) configuration static, so an eager
# call compiles one program per configuration instead of dispatching op by op.


@functools.partial(jax.jit, static_argnames=("geo", "kind"))
def window_pool(x: jax.Array, geo: Geometry, kind: str) -> jax.Array:
  """The one generic pool: ``kind`` ``"max"`` or ``"sum"`` over every window of ``geo``."""
  geo = _one_window(geo)
  return _max_pool_geo(x, geo) if kind == "max" else _sum_pool_geo(x, geo)


def _window_counts(geo: Geometry, high: tuple[int, ...] | None = None) -> np.ndarray:
  """The positions each window covers, ``[1, *out, 1]`` int64.

  By default the input positions (padding excluded); with ``high``, the positions of
  the input padded by ``lo`` below and ``high`` above (PyTorch's ``count_include_pad``
  divisor, which leaves out what a ``ceil_mode`` window reaches beyond the padding).
  """
  counts = np.ones((1,) * (len(geo.kernel) + 2), np.int64)
  for d, (n, k, s, m, (lo, _)) in enumerate(
      zip(geo.in_spatial, geo.kernel, geo.stride, geo.out_spatial, geo.pads, strict=True)
  ):
    start = np.arange(m, dtype=np.int64) * s - lo
    if high is None:
      count = np.minimum(start + k, n) - np.maximum(start, 0)
    else:
      count = np.minimum(start + k, n + high[d]) - start
    shape = [1] * counts.ndim
    shape[d + 1] = m
    counts = counts * count.reshape(shape)
  return counts


@functools.partial(
    jax.jit, static_argnames=("geo", "count_include_pad", "divisor_override", "high")
)
def avg_pool_core(
    x: jax.Array,
    geo: Geometry,
    count_include_pad: bool,
    divisor_override: int | None = None,
    high: tuple[int, ...] | None = None,
) -> jax.Array:
  """Window sums over a divisor: ``divisor_override``, the window size (or with
  ``high``, the user's high padding under ``ceil_mode``, the positions in the padded
  input) with ``count_include_pad``, else the input positions."""
  size = math.prod(geo.kernel)
  if divisor_override is not None:
    divisor, max_divisor = divisor_override, divisor_override
  elif count_include_pad:
    counts = None if high is None else _window_counts(geo, high)
    full = counts is None or bool(np.all(counts == size))
    divisor, max_divisor = (size if full else counts), size
  else:
    divisor, max_divisor = _window_counts(geo), size
  if jnp.issubdtype(x.dtype, jnp.integer):
    # The exact window sums, divided once (see exact_mean): an int32 sum wrapped.
    planes = exact_mean.sum_planes(exact_mean.split(x), size, lambda a: window_pool(a, geo, "sum"))
    return exact_mean.quotient_float32(planes, divisor, max_divisor)
  out = _checks.mean_dtype(x.dtype)
  total = window_pool(x.astype(_checks.accumulation_dtype(x.dtype)), geo, "sum")
  total = total.astype(_checks.accumulation_dtype(out))
  return (total / np.asarray(divisor, np.float64).astype(total.dtype)).astype(out)


@functools.partial(jax.jit, static_argnames=("keepdims",))
def global_avg_core(x: jax.Array, keepdims: bool) -> jax.Array:
  """The mean over the spatial axes of ``[N, *spatial, C]``; integers exactly."""
  axes = tuple(range(1, x.ndim - 1))
  count = math.prod(x.shape[1:-1])
  if jnp.issubdtype(x.dtype, jnp.integer):
    planes = exact_mean.sum_planes(
        exact_mean.split(x),
        count,
        lambda a: jnp.sum(a, axis=axes, keepdims=keepdims, dtype=jnp.int32),
    )
    return exact_mean.quotient_float32(planes, count, count)
  out = _checks.mean_dtype(x.dtype)
  total = jnp.sum(x.astype(_checks.accumulation_dtype(x.dtype)), axis=axes, keepdims=keepdims)
  return (total.astype(_checks.accumulation_dtype(out)) / count).astype(out)


@functools.partial(jax.jit, static_argnames=("geo", "p"))
def lp_pool_core(x: jax.Array, geo: Geometry, p: float) -> jax.Array:
  x = x.astype(_checks.mean_dtype(x.dtype))
  if math.isinf(p):
    return window_pool(jnp.abs(x), geo, "max")
  acc = x.astype(_checks.accumulation_dtype(x.dtype))
  if float(p).is_integer():
    powered = lax.integer_pow(acc if int(p) % 2 == 0 else jnp.abs(acc), int(p))
  else:
    powered = jnp.abs(acc) ** np.asarray(p, acc.dtype)
  total = window_pool(powered, geo, "sum")
  # sqrt-like roots have an infinite slope at 0: take the root of 1 there instead and
  # select 0 afterwards, so that a window of zeros has gradient 0, not NaN. Only an
  # exact zero is replaced: a NaN total (a window holding NaN) stays NaN, +inf stays inf.
  zero = total == 0
  safe = jnp.where(zero, np.ones((), total.dtype), total)
  root = safe if p == 1 else safe ** np.asarray(1 / p, total.dtype)
  return jnp.where(zero, np.zeros((), total.dtype), root).astype(x.dtype)


def _pow2(k: jax.Array, dtype) -> jax.Array:
  """``2**k`` in ``dtype`` (float32 or float64) for integers ``k`` in its normal range."""
  bits, mant, bias = (64, 52, 1023) if jnp.dtype(dtype).itemsize == 8 else (32, 23, 127)
  int_dtype = jnp.int64 if bits == 64 else jnp.int32
  return lax.bitcast_convert_type((k.astype(int_dtype) + bias) << mant, dtype)


@functools.partial(jax.jit, static_argnames=("stride", "p"))
def polyphase_core(x: jax.Array, stride: tuple[int, ...], p: float) -> jax.Array:
  num_spatial = x.ndim - 2
  spatial = x.shape[1:-1]
  n, c = x.shape[0], x.shape[-1]
  view = [n]
  for size, s in zip(spatial, stride, strict=True):
    view += [size // s, s]
  view.append(c)
  # [N, Q_1, S_1, …, C] → [N, S_1, …, S_d, Q_1, …, Q_d, C] → [N, P, *Q, C]
  perm = [0, *range(2, 2 * num_spatial + 1, 2), *range(1, 2 * num_spatial, 2), len(view) - 1]
  out_spatial = tuple(size // s for size, s in zip(spatial, stride, strict=True))
  phases = x.reshape(view).transpose(perm).reshape(n, math.prod(stride), *out_spatial, c)
  mags = jnp.abs(phases.astype(_checks.accumulation_dtype(_checks.mean_dtype(x.dtype))))
  reduce_axes = tuple(range(2, phases.ndim))
  if not math.isinf(p):
    # |x|^p can overflow (float32 |x| > 1.8e19 at p = 2) or underflow where the norms'
    # order is plain: scale each example by the power of two of its largest finite
    # magnitude first. The scaling is exact, so it changes no order it does not rescue.
    finite = jnp.where(jnp.isfinite(mags), mags, np.zeros((), mags.dtype))
    _, e = jnp.frexp(jnp.max(finite, axis=(1, *reduce_axes), keepdims=True))
    mags = mags * _pow2(-(e // 2), mags.dtype) * _pow2(e // 2 - e, mags.dtype)
  if math.isinf(p):
    norms = jnp.max(mags, axis=reduce_axes)
  elif p == 2:
    norms = jnp.sum(mags * mags, axis=reduce_axes)
  else:
    norms = jnp.sum(mags ** np.asarray(p, mags.dtype), axis=reduce_axes)
  best = jnp.argmax(lax.stop_gradient(norms), axis=1)  # the first maximum on ties
  chosen = jnp.take_along_axis(phases, best.reshape(n, *(1,) * (phases.ndim - 1)), axis=1)
  return chosen.reshape(n, *out_spatial, c)
