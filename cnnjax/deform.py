"""Deformable convolution (Dai et al. 2017; modulated, v2: Zhu et al. 2019).

``y[b, p, o] = Σ_k Σ_c w[k, c, o] · m[b, p, k] · x(b, p̂ + k·t + Δp[b, p, k], c)``: a
cross-correlation whose taps are moved, per output position and tap, by learned
fractional offsets ``Δp``, with the input read there by bilinear interpolation and
optionally scaled by a modulation ``m`` (DCNv2). ``p̂ = p·s − lo`` is the output
position's window origin in input coordinates (``s`` the stride, ``lo`` the low
padding), ``t`` the dilation. Semantics are ``torchvision.ops.deform_conv2d``'s in cnnjax's
channels-last layout (see :func:`deform_conv`).

Computed in two parts: the samples, gathered as 2×2 windows of the input (one
``lax.gather``) and combined with their bilinear weights, and one contraction
(``dot_general``) of the samples with the kernel. On XLA:CPU the corners' weights and the
samples are stored between the steps (:func:`cnnjax._lowering.cpu_barrier.barrier`), where
XLA would otherwise recompute them inside their consumers
(``benchmarks/deform_conv.py``; figures in ``benchmarks/README.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from cnnjax import _checks
from cnnjax import padding as _padding
from cnnjax._lowering.cpu_barrier import barrier
from cnnjax.padding import PaddingLike

__all__ = ["deform_conv"]

_OP = "deform_conv"


@jax.custom_jvp
def _combine(weights: jax.Array, windows: jax.Array) -> jax.Array:
  """The bilinear samples ``Σ_q w_q · v_q`` over the four corners ``q``, where a corner
  of weight 0 is not read (its term is exactly 0, whatever its value).

  Args:
    weights: ``[4, *batch]``, the corners in row-major order.
    windows: ``[2, 2, *batch, C]``, their values.

  The derivative is the sum's, ``Σ_q v_q·dw_q + w_q·dv_q``, also where ``w_q`` is 0: a
  sample at an integer position is differentiated in its offset as torchvision does
  (the derivative from above, from the corner of weight 0), though that corner's value
  is not read. Written as two contractions over the corners, which XLA:CPU runs as such
  (reverse mode, added up corner by corner, took 1.7x the time at 32×32×32×64).
  """
  terms = [
      jnp.where(weights[q][..., None] == 0, 0, weights[q][..., None] * windows[q // 2, q % 2])
      for q in range(4)
  ]
  # Corner by corner, elementwise. (Not a sum over the window's axes: XLA:CPU segfaulted
  # running such a sum's gradient from batch 2 at 32×32×64, in a YNNPACK fusion's
  # transpose; jaxlib 0.10.2, not reported upstream. tests/test_deform.py runs that size.)
  return (terms[0] + terms[1]) + (terms[2] + terms[3])


@_combine.defjvp
def _combine_jvp(primals, tangents):
  weights, windows = primals
  d_weights, d_windows = tangents
  values = windows.reshape(4, *windows.shape[2:])
  d_values = d_windows.reshape(4, *windows.shape[2:])
  tangent = jnp.einsum("q...,q...c->...c", d_weights, values) + jnp.einsum(
      "q...,q...c->...c", weights, d_values
  )
  return _combine(weights, windows), tangent


def _check_rank(a: jax.Array, *, name: str, expected: str) -> None:
  if a.ndim != 4:
    hint = " (an unbatched input? add a leading batch axis)" if a.ndim == 3 else ""
    raise ValueError(
        f"{_OP}: {name} has shape {tuple(a.shape)} (rank {a.ndim}){hint}; expected rank 4, "
        f"{expected} (2-D only)."
    )


def _check_real(a: jax.Array, *, name: str) -> None:
  if not (jnp.issubdtype(a.dtype, jnp.floating) or jnp.issubdtype(a.dtype, jnp.integer)):
    raise TypeError(
        f"{_OP}: {name} has dtype {a.dtype}; expected a real (floating or integer) dtype."
    )


def _check_shape(a: jax.Array, expected: tuple[int, ...], *, name: str, layout: str) -> None:
  if tuple(a.shape) != expected:
    raise ValueError(f"{_OP}: {name} has shape {tuple(a.shape)}; expected {expected}, {layout}.")


def deform_conv(
    x: ArrayLike,
    w: ArrayLike,
    offsets: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    stride: int | Sequence[int] = 1,
    padding: PaddingLike = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    offset_groups: int = 1,
    precision: lax.PrecisionLike = None,
) -> jax.Array:
  """2-D deformable cross-correlation, ``torchvision.ops.deform_conv2d`` channels-last.

  ``y[b, i, j, o] = Σ_k Σ_c w[k, c, o] · m[b, i, j, g, k] · x(b, P, c)`` at the sample
  position ``P = (i·s_h − lo_h + k_h·t_h + Δy, j·s_w − lo_w + k_w·t_w + Δx)``, for each
  tap ``k = (k_h, k_w)`` of the kernel, with ``(Δy, Δx) = offsets[b, i, j, g, k]`` and
  ``g`` the offset group of channel ``c``. ``x(b, P, c)`` is the bilinear interpolation
  of the input at ``P``:

  - a sample outside ``(−1, H) × (−1, W)`` is 0 and reads nothing (an infinite offset
    gives such a sample);
  - otherwise it is ``Σ w_q · x[b, q, c]`` over the four integer corners ``q`` around
    ``P`` (``⌊P⌋`` and ``⌊P⌋ + 1`` in each dim) with the bilinear weights
    ``w_q = (1 − |P_h − q_h|)(1 − |P_w − q_w|)``; a corner outside the input reads 0
    (zero padding), **and a corner whose weight is 0 is not read**.

  The last rule is where cnnjax differs from torchvision, which multiplies: a NaN or inf
  in ``x`` reaches exactly the outputs whose samples weigh it by a nonzero amount (so at
  integer positions, e.g. zero offsets, exactly the outputs of :func:`cross_correlate`,
  with the same NaN/±inf pattern), where torchvision also spreads it, as ``0·NaN``, to
  samples at integer positions next to it. A NaN offset makes its sample NaN (in every
  channel of its offset group); a NaN or inf in ``mask`` multiplies the sample as
  written (``inf · 0`` is NaN).

  Gradients: the op is differentiable in ``x``, ``w``, ``offsets`` and ``mask``. Bilinear
  sampling is not differentiable in the offset at integer positions; there, as in
  torchvision, the gradient is the derivative from above (from ``⌊P⌋`` towards
  ``⌊P⌋ + 1``), which reads the corner of weight 0 (so an offset's gradient is NaN
  next to a NaN input even where the output is not).

  Args:
    x: input, ``[N, H, W, C_in]``, floating (integers are cast to the kernel's dtype).
    w: kernel, ``[k_h, k_w, C_in // groups, C_out]`` (HWIO, as :func:`cross_correlate`).
    offsets: ``[N, H_out, W_out, offset_groups·k_h·k_w·2]``, torchvision's channel order:
      per offset group, per tap in row-major order, the pair ``(Δy, Δx)``.
    mask: optional modulation (DCNv2), ``[N, H_out, W_out, offset_groups·k_h·k_w]`` in the
      same order; ``None`` is a mask of ones (DCNv1).
    stride: an int, or one int per spatial dim.
    padding: the window origins' padding, as in :func:`cross_correlate` (``"VALID"``,
      ``"SAME"``, ``"FULL"``, an int, a pair of ints or a pair of ``(low, high)``); the
      default 0 is torchvision's. It sets the output size and the origin ``−lo``;
      samples read zeros outside the input wherever they land.
    dilation: kernel dilation, an int or one per spatial dim.
    groups: feature groups of the kernel; ``C_in`` and ``C_out`` must be divisible by it.
    offset_groups: the groups of input channels that share one set of offsets (and
      mask); ``C_in`` must be divisible by it.
    precision: the contraction's precision, as in :func:`cross_correlate`.

  Returns:
    ``[N, H_out, W_out, C_out]`` (sizes as :func:`cross_correlate`'s) in the compute
    dtype of ``x`` and ``w`` (as :func:`cross_correlate`). Sample positions and bilinear
    weights are computed in float32 for half-precision inputs (float64 for float64);
    the samples are rounded to the compute dtype for the contraction, which accumulates
    as :func:`cross_correlate`'s does.

  Raises:
    ValueError: a rank other than 4 (``x``, ``w``), a channel mismatch, ``groups`` or
      ``offset_groups`` that do not divide the channels, ``offsets`` or ``mask`` of the
      wrong shape, bad geometry (as :func:`cross_correlate`).
    TypeError: integer ``x`` and ``w`` (bilinear sampling needs a floating dtype),
      complex or boolean operands.

  Example:
    >>> x = jnp.arange(16.).reshape(1, 4, 4, 1); w = jnp.ones((1, 1, 1, 1))
    >>> offsets = jnp.full((1, 4, 4, 2), 0.5)  # every sample half a pixel down-right
    >>> deform_conv(x, w, offsets)[0, :2, :2, 0].tolist()
    [[2.5, 3.5], [6.5, 7.5]]
  """
  x, w, offsets = jnp.asarray(x), jnp.asarray(w), jnp.asarray(offsets)
  mask = None if mask is None else jnp.asarray(mask)
  _check_rank(w, name="w", expected="[k_h, k_w, C_in // groups, C_out]")
  _checks.check_kernel(w, op=_OP)
  _check_rank(x, name="x", expected="[N, H, W, C_in]")
  groups = _checks.check_groups(groups, x.shape[-1], w.shape[-2], w.shape[-1], op=_OP)
  offset_groups = _checks.check_positive_int(offset_groups, name="offset_groups", op=_OP)
  n, height, width, c_in = x.shape
  kh, kw, c_in_g, c_out = w.shape
  if c_in % offset_groups:
    raise ValueError(
        f"{_OP}: offset_groups got {offset_groups}, which does not divide x's {c_in} "
        "channels; expected C_in to be a multiple of offset_groups."
    )
  geo = _padding.conv_geometry(
      (height, width), (kh, kw), stride=stride, padding=padding, dilation=dilation, op=_OP
  )
  h_out, w_out = geo.out_spatial
  taps = kh * kw
  og = offset_groups
  _check_real(offsets, name="offsets")
  _check_shape(
      offsets,
      (n, h_out, w_out, og * taps * 2),
      name="offsets",
      layout="[N, H_out, W_out, offset_groups·k_h·k_w·2]",
  )
  if mask is not None:
    _check_real(mask, name="mask")
    _check_shape(
        mask,
        (n, h_out, w_out, og * taps),
        name="mask",
        layout="[N, H_out, W_out, offset_groups·k_h·k_w]",
    )
  dtype = _checks.compute_dtype(x, w, op=_OP)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(
        f"{_OP}: x and w have dtypes {x.dtype} and {w.dtype}, which compute in {dtype}; "
        "expected a floating dtype in x or w (bilinear sampling)."
    )
  pos_dtype = _checks.accumulation_dtype(dtype)
  x, w = x.astype(dtype), w.astype(dtype)
  cols = _samples(
      x,
      offsets.astype(pos_dtype),
      None if mask is None else mask.astype(pos_dtype),
      geo,
      offset_groups=og,
  ).astype(dtype)
  # Stored on CPU, where XLA would fuse the sampling into the matmul's operand (the
  # forward took 2.3x the time at 32×32×32×64).
  cols = _stored(cols, offsets)
  return _contract(cols, w, groups=groups, offset_groups=og, precision=precision)


def _samples(
    x: jax.Array,
    offsets: jax.Array,
    mask: jax.Array | None,
    geo: _padding.Geometry,
    *,
    offset_groups: int,
) -> jax.Array:
  """The modulated bilinear samples, ``[N, H_out, W_out, G, K, C_in // G]`` (``G`` the
  offset groups, ``K`` the taps, row-major), in ``offsets``' dtype."""
  n, height, width, c_in = x.shape
  og, cg = offset_groups, c_in // offset_groups
  h_out, w_out = geo.out_spatial
  taps = geo.kernel[0] * geo.kernel[1]
  start, weights = _corners(offsets.reshape(n, h_out, w_out, og, taps, 2), geo, (height, width))
  # The 2×2 windows of the input padded by 1 below and 2 above: rows −1 … H + 1
  # (⌊P⌋ ∈ [−1, H]), the padding zeros.
  xp = jnp.pad(x, ((0, 0), (1, 2), (1, 2), (0, 0))).reshape(n, height + 3, width + 3, og, cg)
  windows = _gather_windows(xp, start)  # [2, 2, N, H_out, W_out, G, K, cg]
  pos_dtype = offsets.dtype
  samples = _combine(weights, windows.astype(pos_dtype))  # [N, H_out, W_out, G, K, cg]
  if mask is not None:
    samples = samples * mask.reshape(n, h_out, w_out, og, taps, 1)
  return samples


def _corners(
    off: jax.Array, geo: _padding.Geometry, size: tuple[int, int]
) -> tuple[jax.Array, jax.Array]:
  """Where each sample reads, and with which weights.

  Args:
    off: the offsets, ``[N, H_out, W_out, G, K, 2]``.
    geo: the op's geometry.
    size: the input's ``(H, W)``.

  Returns:
    ``start``, ``[N, H_out, W_out, G, K, 2]`` int32: the sample's 2×2 window in the input
    padded by 1 below (``⌊P⌋ + 1``); and the corners' bilinear weights,
    ``[4, N, H_out, W_out, G, K]`` in ``off``'s dtype (rows ``⌊P_h⌋``, ``⌊P_h⌋ + 1``
    outer, columns inner).
  """
  height, width = size
  (kh, kw), (sh, sw), (th, tw) = geo.kernel, geo.stride, geo.dilation
  (lo_h, _), (lo_w, _) = geo.pads
  h_out, w_out = geo.out_spatial
  pos_dtype = off.dtype
  # Window origins plus tap positions, [H_out, K] and [W_out, K] (exact integers).
  ki, kj = jnp.divmod(jnp.arange(kh * kw), kw)
  base_y = (jnp.arange(h_out) * sh - lo_h)[:, None] + (ki * th)[None, :]
  base_x = (jnp.arange(w_out) * sw - lo_w)[:, None] + (kj * tw)[None, :]
  py = base_y.astype(pos_dtype)[None, :, None, None, :] + off[..., 0]
  px = base_x.astype(pos_dtype)[None, None, :, None, :] + off[..., 1]
  # Samples beyond (−1, H) read only zero padding: clamp them to −1 or H (their value,
  # 0, and their gradient, 0, do not change) so that the indices stay small; `where`
  # rather than `clip`, whose gradient at the bound itself would be halved. NaN passes.
  py = jnp.where(py < -1, -1, jnp.where(py > height, height, py))
  px = jnp.where(px < -1, -1, jnp.where(px > width, width, px))
  y0 = jnp.floor(jnp.where(jnp.isnan(py), 0, py))
  x0 = jnp.floor(jnp.where(jnp.isnan(px), 0, px))
  fy, fx = py - y0, px - x0  # in [0, 1); NaN for a NaN position
  rows, cols = (1 - fy, fy), (1 - fx, fx)
  start = jnp.stack([y0.astype(jnp.int32) + 1, x0.astype(jnp.int32) + 1], axis=-1)
  # Computed once per sample and stored (on CPU, where XLA would recompute them for every
  # channel in each consumer: the samples and, in reverse mode, the scatter's cotangent;
  # 1.5x the time of forward+backward at 8×32×32×64).
  weights = _stored(jnp.stack([rows[i] * cols[j] for i in (0, 1) for j in (0, 1)]), off)
  return start, weights


def _stored(a: jax.Array, source: jax.Array) -> jax.Array:
  """``a``, stored where XLA:CPU would fuse (recompute) it into its consumers; as is on
  other platforms (:func:`cnnjax._lowering.cpu_barrier.barrier`: the identity in value
  and derivative)."""
  return lax.platform_dependent(a, source, cpu=barrier, default=lambda a, source: a)


def _gather_windows(xp: jax.Array, start: jax.Array) -> jax.Array:
  """``xp[b, h:h+2, w:w+2, g, :]`` for each ``(h, w) = start[b, i, j, g, k]``.

  ``xp`` is ``[N, Hp, Wp, G, cg]``, ``start`` ``[N, H_out, W_out, G, K, 2]`` (in bounds);
  the result ``[2, 2, N, H_out, W_out, G, K, cg]`` (the corners first, so that each is a
  contiguous slice): one gather of 2×2×cg windows, batched
  over the images and the offset groups.
  """
  rank = start.ndim - 1 + 3  # the index dims, between the window's row/column and channels
  dnums = lax.GatherDimensionNumbers(
      offset_dims=(0, 1, rank - 1),
      collapsed_slice_dims=(),
      start_index_map=(1, 2),
      operand_batching_dims=(0, 3),
      start_indices_batching_dims=(0, 3),
  )
  return lax.gather(
      xp,
      start,
      dnums,
      slice_sizes=(1, 2, 2, 1, xp.shape[-1]),
      mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS,
  )


def _contract(
    cols: jax.Array, w: jax.Array, *, groups: int, offset_groups: int, precision
) -> jax.Array:
  """``Σ_k Σ_c cols[..., c, k] · w[k, c, o]`` with feature groups, as one dot_general.

  ``cols`` is ``[N, H_out, W_out, G, K, C_in // G]`` (channel ``c = g·(C_in // G) + c'``).
  """
  n, h_out, w_out, og, taps, cg = cols.shape
  kh, kw, c_in_g, c_out = w.shape
  acc = _checks.accumulation_dtype(w.dtype)
  if groups == 1:
    # One matmul over (G, K, cg) in cols' own order (the kernel is reordered instead),
    # flattened: XLA:CPU ran the 6-D contraction at half the speed.
    wk = w.reshape(taps, og, cg, c_out).transpose(1, 0, 2, 3).reshape(og * taps * cg, c_out)
    flat = cols.reshape(n, h_out, w_out, og * taps * cg)
    y = jnp.einsum("nijc,co->nijo", flat, wk, precision=precision, preferred_element_type=acc)
    return y.astype(w.dtype)
  if og > 1:
    cols = cols.transpose(0, 1, 2, 4, 3, 5)  # [..., K, G, cg]: channels in order
  cols = cols.reshape(n, h_out, w_out, taps, groups, c_in_g)
  wk = w.reshape(taps, c_in_g, groups, c_out // groups)
  y = jnp.einsum("nijkgc,kcgo->nijgo", cols, wk, precision=precision, preferred_element_type=acc)
  return y.reshape(n, h_out, w_out, c_out).astype(w.dtype)
