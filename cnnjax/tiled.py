"""Tiled convolution (Le et al. 2010; Goodfellow et al., Deep Learning, §9.5).

A set of ``prod(tile)`` kernels rotated through the output positions: output
position ``n`` uses kernel ``n mod tile`` (per spatial dim),

``y[b, n, o] = Σ_k Σ_c w[n mod T, k, c, o] · x̃[b, n·s + k·t, c]``.

``tile = 1`` is :func:`cnnjax.conv.cross_correlate`; ``tile`` equal to the output
size is :func:`cnnjax.local.locally_connected`.

A tiled convolution does the multiply-adds of one shared convolution, and costs about
as much: the outputs of one phase ``p`` (those with ``n ≡ p (mod T)``) are a
convolution with kernel ``w[p]`` and stride ``T·s`` over the padded input shifted by
``p·s``, so the op is ``prod(tile)`` strided ``lax.conv_general_dilated`` calls whose
outputs are interleaved back (no per-position kernel is ever gathered).

Autodiff of a strided convolution gives an input-dilated convolution for the input
gradient, which XLA:CPU runs at the cost of the undilated one (about ``prod(tile)``
times too much here). So the op has a custom JVP: the tangent in ``x`` is written as
the transpose of the input gradient, and the input gradient (:func:`_adjoint`) is
itself a tiled correlation of the output cotangent — strided forward convolutions
again. Forward mode, reverse mode, higher orders and ``vmap`` all work.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero
from jax.typing import ArrayLike

from cnnjax import padding as _padding
from cnnjax.conv import compute_dtype, cross_correlate, dimension_numbers
from cnnjax.local import check_in_channels, unshared_weight_rank
from cnnjax.padding import PaddingLike

__all__ = ["tiled_conv"]


def tiled_conv(
    x: ArrayLike,
    w: ArrayLike,
    *,
    tile: int | Sequence[int],
    stride: int | Sequence[int] = 1,
    padding: PaddingLike = "VALID",
    dilation: int | Sequence[int] = 1,
    padding_mode: str = "zeros",
    precision: lax.PrecisionLike = None,
) -> jax.Array:
  """Tiled convolution: ``prod(tile)`` kernels rotated through the output positions.

  ``y[b, n, o] = Σ_k Σ_c w[n mod T, k, c, o] · x̃[b, n·s + k·t, c]`` for each output
  position ``n`` (``T`` the tile, ``s`` the stride, ``t`` the dilation, ``x̃`` the
  padded input).

  Args:
    x: input, ``[N, *spatial, C_in]`` with 1, 2 or 3 spatial dims.
    w: kernels, ``[*tile, *kernel_spatial, C_in, C_out]``.
    tile: the number of kernels along each spatial dim: an int, or one int per dim,
      each positive; must equal ``w.shape[:d]``.
    stride: an int, or one int per spatial dim.
    padding: ``"VALID"``, ``"SAME"``, ``"FULL"``, an int, a tuple of ints or a tuple
      of ``(low, high)`` pairs (as :func:`cnnjax.conv.cross_correlate`).
    dilation: kernel dilation, effective size ``r̂ = r + (r − 1)(t − 1)``.
    padding_mode: ``"zeros"``, ``"circular"``, ``"reflect"`` or ``"edge"``.
    precision: passed to ``lax.conv_general_dilated``.

  Returns:
    ``[N, *out_spatial, C_out]`` in the input's dtype, ``out_spatial`` as for
    :func:`cnnjax.conv.cross_correlate` with the same settings.

  Example:
    >>> x = jnp.ones((1, 6, 6, 1)); w = jnp.ones((2, 2, 3, 3, 1, 4))
    >>> tiled_conv(x, w, tile=2, padding="SAME").shape
    (1, 6, 6, 4)
  """
  op = "tiled_conv"
  x, w = jnp.asarray(x), jnp.asarray(w)
  num_spatial = unshared_weight_rank(w, op=op, lead="tile")
  _padding.check_spatial_rank(x, num_spatial, name="x", op=op)
  _padding.check_padding_mode(padding_mode, op=op)
  tile = _padding.normalize_ints(tile, num_spatial, name="tile", op=op)
  if tuple(w.shape[:num_spatial]) != tile:
    raise ValueError(
        f"{op}: w's kernel grid w.shape[:{num_spatial}] is "
        f"{tuple(w.shape[:num_spatial])} but tile is {tile}; expected "
        "w.shape[:d] == tile, one kernel per tile position."
    )
  check_in_channels(x, w, op=op)
  kernel = w.shape[num_spatial:2 * num_spatial]
  geo = _padding.conv_geometry(
      x.shape[1:-1], kernel, stride=stride, padding=padding, dilation=dilation, op=op,
  )
  dtype = compute_dtype(x, w, op=op)
  x, w = x.astype(dtype), w.astype(dtype)
  if all(t == 1 for t in tile):
    return cross_correlate(
        x, w.reshape(w.shape[num_spatial:]), stride=geo.stride, padding=geo.pads,
        dilation=geo.dilation, padding_mode=padding_mode, precision=precision,
    )
  pads = geo.pads
  if padding_mode != "zeros":
    x = _padding.pad_spatial(x, pads, padding_mode)
    pads = ((0, 0),) * num_spatial
  spec = _Spec(tile, geo.stride, geo.dilation, pads, geo.out_spatial, precision)
  return _tiled(x, w, spec)


@dataclasses.dataclass(frozen=True)
class _Spec:
  """Static configuration of the tiled core: padding may be negative (a crop)."""

  tile: tuple[int, ...]
  stride: tuple[int, ...]
  dilation: tuple[int, ...]
  pads: tuple[tuple[int, int], ...]
  out_spatial: tuple[int, ...]
  precision: lax.PrecisionLike = None


def _phase_convs(x: jax.Array, w: jax.Array, spec: _Spec) -> jax.Array:
  """The tiled correlation of ``x`` (zero padded by ``spec.pads``) with ``w``.

  Phase ``p`` (the outputs ``n = q·T + p``) is one ``lax.conv_general_dilated`` with
  stride ``T·s`` whose padding starts ``p·s`` later; every phase computes
  ``ceil(out / T)`` outputs (the surplus lies on zero padding and is cropped), so the
  phases stack and interleave with one transpose.
  """
  num_spatial = len(spec.tile)
  batch, c_out = x.shape[0], w.shape[-1]
  in_spatial = x.shape[1:-1]
  kernel = w.shape[num_spatial:2 * num_spatial]
  kernel_eff = tuple(
      (k - 1) * t + 1 for k, t in zip(kernel, spec.dilation)
  )
  per_phase = tuple(-(-m // t) for m, t in zip(spec.out_spatial, spec.tile))
  strides = tuple(t * s for t, s in zip(spec.tile, spec.stride))
  phases = []
  for p in itertools.product(*(range(t) for t in spec.tile)):
    pads = []
    for n, r, q, big, s, pi, (lo, _) in zip(
        in_spatial, kernel_eff, per_phase, strides, spec.stride, p, spec.pads
    ):
      lo_p = lo - pi * s  # the phase reads the padded input from p·s on
      pads.append((lo_p, (q - 1) * big + r - n - lo_p))
    if any(n + lo_p <= 0 for n, (lo_p, _) in zip(in_spatial, pads)):
      # The phase starts past the input: it only ever sees padding (zeros).
      phases.append(jnp.zeros((batch, *per_phase, c_out), x.dtype))
      continue
    phases.append(lax.conv_general_dilated(
        x, w[p],
        window_strides=strides,
        padding=pads,
        rhs_dilation=spec.dilation,
        dimension_numbers=dimension_numbers(num_spatial),
        precision=spec.precision,
    ))
  # Interleave: [N, *q, *T, C_out] → [N, q0, T0, q1, T1, …, C_out] → [N, *(q·T), C_out].
  y = jnp.stack(phases, axis=-2).reshape(batch, *per_phase, *spec.tile, c_out)
  order = [0]
  for d in range(num_spatial):
    order += [1 + d, 1 + num_spatial + d]
  y = jnp.transpose(y, (*order, 2 * num_spatial + 1))
  y = y.reshape(batch, *(q * t for q, t in zip(per_phase, spec.tile)), c_out)
  return y[(slice(None), *(slice(0, m) for m in spec.out_spatial))]


def _adjoint(g: jax.Array, w: jax.Array, spec: _Spec, in_spatial) -> jax.Array:
  """The input gradient (VJP) of :func:`_phase_convs`, itself a tiled correlation.

  ``dx̃[j] = Σ_k w[n mod T, k]ᵀ g[n]`` over ``n·s + k·t = j``. With ``g`` dilated by
  the stride (``g_s[n·s] = g[n]``) this is a tiled correlation of ``g_s`` with tile
  ``T·s`` over the input positions ``i = j − lo`` and the flipped, transposed kernels
  ``V[c, k'] = w[((c + lo − k·t) mod T·s) / s, k]ᵀ`` (``k = K − 1 − k'``; zero where
  ``s`` does not divide). It runs as strided forward convolutions, which XLA executes
  far faster than the input-dilated convolutions autodiff would produce. (Forward
  mode runs its transpose, i.e. what plain autodiff would run.)
  """
  num_spatial = len(spec.tile)
  kernel = w.shape[num_spatial:2 * num_spatial]
  if any(s > 1 for s in spec.stride):
    g = lax.pad(
        g, jnp.zeros((), g.dtype),
        ((0, 0, 0), *((0, 0, s - 1) for s in spec.stride), (0, 0, 0)),
    )
  big = tuple(t * s for t, s in zip(spec.tile, spec.stride))
  # Gather V with static indices: per dim a [T·s, K] table of tile index, tap and
  # validity, broadcast to [*T·s, *K] (dim d on axes d and d + num_spatial).
  def per_dim(d, table):
    shape = [1] * (2 * num_spatial)
    shape[d], shape[num_spatial + d] = big[d], kernel[d]
    return table.reshape(shape)

  tiles, taps, valid = [], [], np.ones((1,) * (2 * num_spatial), bool)
  for d in range(num_spatial):
    k = kernel[d] - 1 - np.arange(kernel[d])[None, :]
    j = (np.arange(big[d])[:, None] + spec.pads[d][0] - k * spec.dilation[d]) % big[d]
    tiles.append(per_dim(d, j // spec.stride[d]))
    taps.append(per_dim(d, np.broadcast_to(k, j.shape)))
    valid = valid & per_dim(d, j % spec.stride[d] == 0)
  v = jnp.swapaxes(w[(*tiles, *taps)], -1, -2)  # [*T·s, *K, C_out, C_in]
  if not valid.all():
    v = v * jnp.asarray(valid, v.dtype)[..., None, None]
  pads = []
  for n, k, t, length, (lo, _) in zip(
      in_spatial, kernel, spec.dilation, g.shape[1:-1], spec.pads
  ):
    r = (k - 1) * t + 1
    lo_g = r - 1 - lo
    pads.append((lo_g, n - 1 + r - length - lo_g))
  inner = _Spec(big, (1,) * num_spatial, spec.dilation, tuple(pads), tuple(in_spatial),
                spec.precision)
  return _phase_convs(g, v, inner)


# XLA:CPU computes the weight gradient of a strided convolution 1.5–2× faster on
# batch chunks of about 1 MiB of input than on a whole batch of a few MiB (measured:
# tile 2×2, 32×32×32 → 32, batch 32: 22 ms whole, 15 ms in chunks of 8); tiny
# inputs are not split. The chunks are unrolled, at most _MAX_CHUNKS of them.
_CHUNK_BYTES = 2**20
_MAX_CHUNKS = 16


def _batch_chunked(x: jax.Array, w: jax.Array, spec: _Spec) -> jax.Array:
  """:func:`_phase_convs` on batch chunks; used for the weight tangent on CPU only."""
  batch = x.shape[0]
  per_example = max(x.dtype.itemsize * math.prod(x.shape[1:]), 1)
  chunk = max(1, _CHUNK_BYTES // per_example, -(-batch // _MAX_CHUNKS))
  if chunk >= batch:
    return _phase_convs(x, w, spec)
  return jnp.concatenate(
      [_phase_convs(x[i:i + chunk], w, spec) for i in range(0, batch, chunk)], axis=0
  )


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _tiled(x: jax.Array, w: jax.Array, spec: _Spec) -> jax.Array:
  return _phase_convs(x, w, spec)


def _tiled_jvp(spec, primals, tangents):
  # The tangent in x is written as the transpose of the fast adjoint, so that
  # reverse mode (which transposes it back) runs the adjoint's strided convolutions.
  x, w = primals
  x_dot, w_dot = tangents  # SymbolicZero where a primal is not differentiated
  y = _phase_convs(x, w, spec)
  y_dot = None
  if not isinstance(x_dot, SymbolicZero):
    adjoint_t = jax.linear_transpose(
        lambda g: _adjoint(g, w, spec, x.shape[1:-1]), jax.ShapeDtypeStruct(y.shape, y.dtype)
    )
    (y_dot,) = adjoint_t(x_dot)
  if not isinstance(w_dot, SymbolicZero):
    term = lax.platform_dependent(
        x, w_dot,
        cpu=functools.partial(_batch_chunked, spec=spec),
        default=functools.partial(_phase_convs, spec=spec),
    )
    y_dot = term if y_dot is None else y_dot + term
  if y_dot is None:
    y_dot = jnp.zeros_like(y)
  return y, y_dot


_tiled.defjvp(_tiled_jvp, symbolic_zeros=True)
