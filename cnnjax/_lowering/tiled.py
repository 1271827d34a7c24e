"""The tiled convolution as ``prod(tile)`` strided convolutions, with a derivative rule.

The outputs of one phase ``p`` (those with ``n ≡ p (mod T)``) are a convolution with
kernel ``w[p]`` and stride ``T·s`` over the padded input shifted by ``p·s``, so the op is
``prod(tile)`` strided convolutions (:func:`cnnjax._lowering.conv`) whose outputs are
interleaved back (no per-position kernel is ever gathered).

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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

from cnnjax._lowering import conv
from cnnjax._lowering.config import ConvConfig

__all__ = ["TiledSpec", "tiled_conv"]


@dataclasses.dataclass(frozen=True)
class TiledSpec:
  """Static configuration of the tiled core: zero padding, which may be negative (a crop)."""

  tile: tuple[int, ...]
  stride: tuple[int, ...]
  dilation: tuple[int, ...]
  pads: tuple[tuple[int, int], ...]
  out_spatial: tuple[int, ...]
  precision: Any = None
  preferred_element_type: Any = None


def _phase_convs(x: jax.Array, w: jax.Array, spec: TiledSpec, *, linear=None) -> jax.Array:
  """The tiled correlation of ``x`` (zero padded by ``spec.pads``) with ``w``.

  Phase ``p`` (the outputs ``n = q·T + p``) is one convolution with stride ``T·s``
  whose padding starts ``p·s`` later; every phase computes ``ceil(out / T)`` outputs
  (the surplus lies on zero padding and is cropped), so the phases stack and
  interleave with one transpose.
  """
  num_spatial = len(spec.tile)
  batch, c_out = x.shape[0], w.shape[-1]
  in_spatial = x.shape[1:-1]
  kernel = w.shape[num_spatial : 2 * num_spatial]
  kernel_eff = tuple((k - 1) * t + 1 for k, t in zip(kernel, spec.dilation, strict=True))
  per_phase = tuple(-(-m // t) for m, t in zip(spec.out_spatial, spec.tile, strict=True))
  strides = tuple(t * s for t, s in zip(spec.tile, spec.stride, strict=True))
  out_dtype = jnp.dtype(spec.preferred_element_type or x.dtype)
  phases = []
  for p in itertools.product(*(range(t) for t in spec.tile)):
    pads = []
    for n, r, q, big, s, pi, (lo, _) in zip(
        in_spatial, kernel_eff, per_phase, strides, spec.stride, p, spec.pads, strict=True
    ):
      lo_p = lo - pi * s  # the phase reads the padded input from p·s on
      pads.append((lo_p, (q - 1) * big + r - n - lo_p))
    if any(n + lo_p <= 0 for n, (lo_p, _) in zip(in_spatial, pads, strict=True)):
      # The phase starts past the input: it only ever sees padding (zeros).
      phases.append(jnp.zeros((batch, *per_phase, c_out), out_dtype))
      continue
    cfg = ConvConfig.make(
        num_spatial,
        stride=strides,
        pads=pads,
        dilation=spec.dilation,
        precision=spec.precision,
        preferred_element_type=spec.preferred_element_type,
    )
    phases.append(conv(x, w[p], cfg, linear=linear))
  # Interleave: [N, *q, *T, C_out] → [N, q0, T0, q1, T1, …, C_out] → [N, *(q·T), C_out].
  y = jnp.stack(phases, axis=-2).reshape(batch, *per_phase, *spec.tile, c_out)
  order = [0]
  for d in range(num_spatial):
    order += [1 + d, 1 + num_spatial + d]
  y = jnp.transpose(y, (*order, 2 * num_spatial + 1))
  y = y.reshape(batch, *(q * t for q, t in zip(per_phase, spec.tile, strict=True)), c_out)
  return y[(slice(None), *(slice(0, m) for m in spec.out_spatial))]


def _adjoint(g: jax.Array, w: jax.Array, spec: TiledSpec, in_spatial) -> jax.Array:
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
  kernel = w.shape[num_spatial : 2 * num_spatial]
  if any(s > 1 for s in spec.stride):
    g = lax.pad(
        g,
        jnp.zeros((), g.dtype),
        ((0, 0, 0), *((0, 0, s - 1) for s in spec.stride), (0, 0, 0)),
    )
  big = tuple(t * s for t, s in zip(spec.tile, spec.stride, strict=True))

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
      in_spatial, kernel, spec.dilation, g.shape[1:-1], spec.pads, strict=True
  ):
    r = (k - 1) * t + 1
    lo_g = r - 1 - lo
    pads.append((lo_g, n - 1 + r - length - lo_g))
  inner = TiledSpec(
      big, (1,) * num_spatial, spec.dilation, tuple(pads), tuple(in_spatial), spec.precision
  )
  return _phase_convs(g, v, inner, linear="x")


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def tiled_conv(x: jax.Array, w: jax.Array, spec: TiledSpec) -> jax.Array:
  """The tiled correlation of ``x`` (zero padded by ``spec.pads``) with ``w``.

  ``w`` is ``[*T, *K, C_in, C_out]``.
  """
  return _phase_convs(x, w, spec)


def _tiled_conv_jvp(spec, primals, tangents):
  # The tangent in x is written as the transpose of the fast adjoint, so that
  # reverse mode (which transposes it back) runs the adjoint's strided convolutions.
  x, w = primals
  x_dot, w_dot = tangents  # SymbolicZero where a primal is not differentiated
  y = _phase_convs(x, w, spec)
  y_dot = None
  if not isinstance(x_dot, SymbolicZero):
    plain = dataclasses.replace(spec, preferred_element_type=None)
    adjoint_t = jax.linear_transpose(
        lambda g: _adjoint(g.astype(w.dtype), w, plain, x.shape[1:-1]),
        jax.ShapeDtypeStruct(y.shape, y.dtype),
    )
    (y_dot,) = adjoint_t(x_dot)
  if not isinstance(w_dot, SymbolicZero):
    term = _phase_convs(x, w_dot, spec, linear="w")
    y_dot = term if y_dot is None else y_dot + term
  if y_dot is None:
    y_dot = jnp.zeros_like(y)
  return y, y_dot


tiled_conv.defjvp(_tiled_conv_jvp, symbolic_zeros=True)
