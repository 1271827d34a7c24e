"""Pooling: max, average, L^p and global pooling, maxout, blur pooling and APS.

Inputs are batched and channels-last, ``[N, *spatial, C]`` with 1, 2 or 3 spatial
dims; every pool acts on each channel separately. Window, stride and padding are
canonicalised by :func:`cnnjax.padding.conv_geometry` with the window as the kernel
(and max pooling's dilation), so the rules, output sizes and error messages are the
convolutions'. ``stride`` defaults to the window (non-overlapping windows).
``ceil_mode=True`` sizes the output as PyTorch does (:func:`cnnjax.output_size`).

The pools validate here and compute in :mod:`cnnjax._lowering.pooling` (one generic
window pool, a max or a sum over every window; max pooling's gradient goes to the
first maximum of each window, on every backend). Averages of integers are exact: the
window sums do not wrap and are divided once (:mod:`cnnjax._lowering.exact_mean`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, overload

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from cnnjax import _checks
from cnnjax import padding as _padding
from cnnjax._lowering.exact_mean import MAX_COUNT as _MAX_INT_COUNT
from cnnjax._lowering.pooling import (
    avg_pool_core,
    global_avg_core,
    lp_pool_core,
    max_pool_indices,
    polyphase_core,
    window_pool,
)
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

# --------------------------------------------------------------------------- checks


def _check_input(x: jax.Array, *, op: str, name: str = "x") -> int:
  """Checks ``x`` is ``[N, *spatial, C]`` with 1–3 spatial dims; returns their number."""
  if x.ndim not in (3, 4, 5):
    raise ValueError(
        f"{op}: {name} has shape {tuple(x.shape)} (rank {x.ndim}); expected rank 3, 4 "
        "or 5: [batch, *spatial(d), channels] with d = 1, 2 or 3 spatial dims."
    )
  if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
    raise TypeError(f"{op}: {name} has dtype {x.dtype}; expected a floating or integer dtype.")
  return x.ndim - 2


def _pool_geometry(
    x: jax.Array,
    window,
    stride,
    padding: PaddingLike,
    *,
    op: str,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
) -> Geometry:
  """Canonical geometry of a pool; refuses windows that read only padding."""
  num_spatial = x.ndim - 2
  window = _padding.normalize_ints(window, num_spatial, name="window", op=op)
  geo = _padding.conv_geometry(
      x.shape[1:-1],
      window,
      stride=window if stride is None else stride,
      padding=padding,
      dilation=dilation,
      ceil_mode=ceil_mode,
      op=op,
      kernel_name="window",
  )
  for d, (n, k, t, r, s, m, (lo, hi)) in enumerate(
      zip(
          geo.in_spatial,
          geo.kernel,
          geo.dilation,
          geo.kernel_eff,
          geo.stride,
          geo.out_spatial,
          geo.pads,
          strict=True,
      )
  ):
    if lo >= r or (m - 1) * s - lo >= n or not _taps_reach_input(n, k, t, s, m, lo):
      dilated = f", dilation {t}" if t > 1 else ""
      raise ValueError(
          f"{op}: padding got {padding!r}, which puts a whole window in the padding in "
          f"spatial dim {d} (input {n}, padding {(lo, hi)}, window {k}{dilated}, stride "
          f"{s}); expected every window to read the input (padding smaller than the "
          "window)."
      )
  return geo


def _taps_reach_input(n: int, k: int, t: int, s: int, m: int, lo: int) -> bool:
  """Whether every window that spans the whole input reads it with one of its taps.

  Window ``o`` reads ``o·s − lo + j·t`` for ``j < k``. A window that starts in the
  input, or ends in it, reads it; one that starts below 0 and ends at or beyond ``n``
  reads it iff its first tap at or above 0, ``(o·s − lo) mod t``, is below ``n``. Those
  residues repeat with period ``t / gcd(s, t)`` in ``o``.
  """
  if t == 1 or n >= t:
    return True
  first = max(-(-(n + lo - (k - 1) * t) // s), 0)  # ends at or beyond n
  last = min(m, -(-lo // s))  # starts below 0 (exclusive bound)
  period = t // math.gcd(s, t)
  if last - first >= period:  # every residue ≡ −lo (mod gcd) occurs: the largest too
    g = math.gcd(s, t)
    return t - g + (-lo) % g < n
  for begin in range(first, last, 1 << 20):
    o = np.arange(begin, min(last, begin + (1 << 20)), dtype=object)
    if np.any((o * s - lo) % t >= n):
      return False
  return True


def _check_int_count(x: jax.Array, count: int, *, name: str, value, op: str) -> None:
  """Integer means are exact over at most 2**30 − 1 positions (the long division's bound)."""
  if jnp.issubdtype(x.dtype, jnp.integer) and count > _MAX_INT_COUNT:
    raise ValueError(
        f"{op}: {name} got {value!r}: an integer mean over {count} positions; expected at "
        f"most {_MAX_INT_COUNT} for integer inputs (exact sums, one rounding), or a "
        "floating x."
    )


# ------------------------------------------------------------------------ public API


@overload
def max_pool(
    x: ArrayLike,
    window: int | Sequence[int],
    *,
    stride: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    return_indices: Literal[False] = False,
) -> jax.Array:
  ...


@overload
def max_pool(
    x: ArrayLike,
    window: int | Sequence[int],
    *,
    stride: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    return_indices: Literal[True],
) -> tuple[jax.Array, jax.Array]:
  ...


@overload
def max_pool(
    x: ArrayLike,
    window: int | Sequence[int],
    *,
    stride: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  ...


def max_pool(
    x: ArrayLike,
    window: int | Sequence[int],
    *,
    stride: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
  """Max pooling: the maximum of each window, per channel.

  ``y[b, o, c] = max_k x̃[b, o·s + k·t, c]`` (``t`` the dilation) over the input padded
  with ``-inf`` (the dtype's minimum for integers), so padding never wins.

  Gradient: each window passes its gradient to exactly one input, its first maximum
  in row-major window order (on a tie, the earliest position; a NaN beats any
  number). Overlapping windows that pick the same input add up there.

  Args:
    x: input, ``[N, *spatial, C]`` with 1, 2 or 3 spatial dims, floating or integer.
    window: the window size, an int or one int per spatial dim.
    stride: an int or one int per spatial dim; defaults to ``window``.
    padding: as for the convolutions: ``"VALID"``, ``"SAME"`` (output
      ``ceil(n / stride)``), ``"SAME_LOWER"``, ``"FULL"``, ``"CAUSAL"`` (1-D), an
      int, a tuple of ints or of ``(low, high)`` pairs
      (:func:`cnnjax.padding.resolve_padding`). Every window must read the input.
    dilation: the spacing ``t`` of the window's taps (PyTorch's ``dilation``), an
      int or one int per spatial dim; the window spans ``k + (k − 1)(t − 1)``
      positions.
    ceil_mode: PyTorch's ``ceil_mode``: ``out = ⌈(n + lo + hi − k̂) / s⌉ + 1``, less
      one where that last window would start in the high padding; a last window
      that overhangs the padding takes the maximum of what it covers.
    return_indices: also return where each maximum is, for
      :func:`cnnjax.max_unpool`.

  Returns:
    ``[N, *out_spatial, C]`` in ``x``'s dtype, ``out = ⌊(n + lo + hi − k̂) / s⌋ + 1``
    (``k̂`` the dilated window). With ``return_indices``, ``(y, indices)``:
    ``indices`` is int32, shaped like ``y``, the position of each window's first
    maximum in the flattened spatial axes of ``x`` (row-major, per example and
    channel: PyTorch's convention; a window whose inputs all equal the padding value
    points at its first tap in the input).

  Example:
    >>> x = jnp.array([[1., 4, 3, 6], [2, 1, 0, 9], [2, 2, 7, 7], [5, 3, 3, 6]])
    >>> max_pool(x[None, :, :, None], 2)[0, :, :, 0].tolist()
    [[4.0, 9.0], [5.0, 7.0]]
    >>> x = jnp.array([3., 1, 4, 1, 5]).reshape(1, 5, 1)
    >>> max_pool(x, 2, dilation=2, stride=1)[0, :, 0].tolist()
    [4.0, 1.0, 5.0]
    >>> max_pool(x, 2, ceil_mode=True)[0, :, 0].tolist()
    [3.0, 4.0, 5.0]
  """
  op = "max_pool"
  x = jnp.asarray(x)
  _check_input(x, op=op)
  geo = _pool_geometry(x, window, stride, padding, op=op, dilation=dilation, ceil_mode=ceil_mode)
  return_indices = _checks.check_bool(return_indices, name="return_indices", op=op)
  y = window_pool(x, geo, "max")
  return (y, max_pool_indices(x, geo)) if return_indices else y


def avg_pool(
    x: ArrayLike,
    window: int | Sequence[int],
    *,
    stride: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    ceil_mode: bool = False,
    count_include_pad: bool = False,
    divisor_override: int | None = None,
) -> jax.Array:
  """Average pooling: the mean of each window, per channel.

  Padding is with zeros; by default each window is divided by the number of real
  (unpadded) input pixels it covers, with ``count_include_pad=True`` by the window
  size, with ``divisor_override`` by that number. The gradient is ``1 / divisor`` to
  every input of a window.

  Args:
    x: input, ``[N, *spatial, C]`` with 1, 2 or 3 spatial dims, floating or integer.
    window: the window size, an int or one int per spatial dim.
    stride: an int or one int per spatial dim; defaults to ``window``.
    padding: as in :func:`max_pool`.
    ceil_mode: PyTorch's ``ceil_mode``, as in :func:`max_pool`. A last window that
      overhangs the padding sums what it covers; with ``count_include_pad`` it is
      divided by its positions in the padded input, those beyond the padding left
      out (as PyTorch).
    count_include_pad: divide by the window's positions in the padded input (the
      window size, unless ``ceil_mode`` makes it overhang). cnnjax's default is
      False, PyTorch's True.
    divisor_override: divide every window by this positive int instead (PyTorch's
      ``divisor_override``); at most 2**30 − 1 for integer inputs.

  Returns:
    ``[N, *out_spatial, C]`` in ``x``'s dtype (half precision sums in float32); for
    integer inputs (8 to 64 bits, signed or unsigned) float32: the exact sum of each
    window divided once, the float32 nearest the true mean (ties to even), with or
    without ``jax_enable_x64``; windows of at most 2**30 − 1 positions.

  Example:
    >>> x = jnp.arange(4.).reshape(1, 4, 1)
    >>> avg_pool(x, 3, stride=1, padding=1)[0, :, 0].tolist()
    [0.5, 1.0, 2.0, 2.5]
    >>> avg_pool(x, 3, stride=2, ceil_mode=True)[0, :, 0].tolist()
    [1.0, 2.5]
    >>> avg_pool(x, 2, divisor_override=1)[0, :, 0].tolist()
    [1.0, 5.0]
  """
  op = "avg_pool"
  x = jnp.asarray(x)
  _check_input(x, op=op)
  geo = _pool_geometry(x, window, stride, padding, op=op, ceil_mode=ceil_mode)
  count_include_pad = _checks.check_bool(count_include_pad, name="count_include_pad", op=op)
  _check_int_count(x, math.prod(geo.kernel), name="window", value=window, op=op)
  if divisor_override is not None:
    divisor_override = _checks.check_positive_int(divisor_override, name="divisor_override", op=op)
    if jnp.issubdtype(x.dtype, jnp.integer) and divisor_override > _MAX_INT_COUNT:
      raise ValueError(
          f"{op}: divisor_override got {divisor_override!r}; expected at most "
          f"{_MAX_INT_COUNT} for integer inputs (an exact division, one rounding), or a "
          "floating x."
      )
  high = None
  if count_include_pad and ceil_mode and divisor_override is None:
    asked = _padding.resolve_padding(padding, geo.in_spatial, geo.kernel_eff, geo.stride, op=op)
    high = tuple(hi for _, hi in asked)
  return avg_pool_core(x, geo, count_include_pad, divisor_override, high)


def lp_pool(
    x: ArrayLike,
    window: int | Sequence[int],
    *,
    p: float = 2,
    stride: int | Sequence[int] | None = None,
    padding: PaddingLike = "VALID",
    ceil_mode: bool = False,
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
    ceil_mode: PyTorch's ``ceil_mode``, as in :func:`max_pool`: a last window that
      overhangs the input sums what it covers. (PyTorch's ``lp_pool`` is an average
      pool times the window size, so it scales such a window's sum by ``window /
      covered``; it also takes ``x^p``, not ``|x|^p``, for odd ``p``.)

  Returns:
    ``[N, *out_spatial, C]`` in ``x``'s dtype (float32 for integer inputs).

  Example:
    >>> x = jnp.array([3., 4., 1., 0.]).reshape(1, 4, 1)
    >>> lp_pool(x, 2, p=2)[0, :, 0].tolist()
    [5.0, 1.0]
  """
  op = "lp_pool"
  x = jnp.asarray(x)
  _check_input(x, op=op)
  geo = _pool_geometry(x, window, stride, padding, op=op, ceil_mode=ceil_mode)
  if (
      isinstance(p, (bool, np.bool_))
      or not isinstance(p, (int, float, np.integer, np.floating))
      or not p > 0
  ):
    raise ValueError(f"{op}: p got {p!r}; expected a positive number or inf.")
  return lp_pool_core(x, geo, float(p))


def _check_keepdims(keepdims, *, op: str) -> bool:
  return _checks.check_bool(keepdims, name="keepdims", op=op)


def _check_positions(x: jax.Array, *, op: str) -> None:
  """A global pool needs a position to pool (an empty mean was NaN, an empty max raised)."""
  if 0 in x.shape[1:-1]:
    raise ValueError(
        f"{op}: x has shape {tuple(x.shape)}, an empty spatial dim; expected every "
        "spatial dim to have at least one position to pool."
    )


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
    >>> global_max_pool(jnp.arange(8.).reshape(1, 2, 2, 2)).tolist()
    [[6.0, 7.0]]
  """
  op = "global_max_pool"
  x = jnp.asarray(x)
  _check_input(x, op=op)
  _check_positions(x, op=op)
  keepdims = _check_keepdims(keepdims, op=op)
  y = window_pool(x, _pool_geometry(x, x.shape[1:-1], None, "VALID", op=op), "max")
  return y if keepdims else y.reshape(x.shape[0], x.shape[-1])


def global_avg_pool(x: ArrayLike, *, keepdims: bool = False) -> jax.Array:
  """The mean over all spatial positions, per channel.

  Args:
    x: input, ``[N, *spatial, C]`` with 1, 2 or 3 spatial dims, floating or integer.
    keepdims: keep the spatial axes, with size 1.

  Returns:
    ``[N, C]``, or ``[N, 1, …, 1, C]`` with ``keepdims``, in ``x``'s dtype; for integer
    inputs float32, the float32 nearest the exact mean (as :func:`avg_pool`; at most
    2**30 − 1 positions).

  Example:
    >>> global_avg_pool(jnp.arange(8.).reshape(1, 2, 2, 2)).tolist()
    [[3.0, 4.0]]
  """
  op = "global_avg_pool"
  x = jnp.asarray(x)
  _check_input(x, op=op)
  _check_positions(x, op=op)
  keepdims = _check_keepdims(keepdims, op=op)
  _check_int_count(x, math.prod(x.shape[1:-1]), name="x", value=tuple(x.shape), op=op)
  return global_avg_core(x, keepdims)


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
    >>> maxout(jnp.array([[1., 5., 3., 2.]]), 2).tolist()
    [[5.0, 3.0]]
  """
  op = "maxout"
  x = jnp.asarray(x)
  if not (jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)):
    raise TypeError(f"{op}: x has dtype {x.dtype}; expected a floating or integer dtype.")
  if x.ndim == 0:
    raise ValueError(f"{op}: x has shape (); expected at least one axis to pool over.")
  if not _checks.is_int(axis) or not -x.ndim <= axis < x.ndim:
    raise ValueError(
        f"{op}: axis got {axis!r}; expected an int in [{-x.ndim}, {x.ndim}) for x of "
        f"shape {tuple(x.shape)}."
    )
  axis = int(axis) % x.ndim
  pieces = _checks.check_positive_int(pieces, name="pieces", op=op)
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
  y = window_pool(flat, geo, "max").reshape(*lead, features // pieces)
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
    for d, (n, k) in enumerate(zip(x.shape[1:-1], sizes, strict=True)):
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
      x,
      w,
      stride=stride,
      padding=tuple(((k - 1) // 2, k // 2) for k in sizes),
      groups=channels,
      padding_mode=padding_mode,
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
    >>> polyphase_downsample(x)[0, :, 0].tolist()
    [1.0, 3.0]
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
  if any(n % s for n, s in zip(spatial, stride, strict=True)):
    raise ValueError(
        f"{op}: stride got {stride!r}, which does not divide the spatial shape "
        f"{tuple(spatial)}; expected every spatial size to be a multiple of its stride."
    )
  return polyphase_core(x, stride, float(p))
