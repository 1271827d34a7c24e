"""bfloat16 convolutions on XLA:CPU as patch matmuls, with custom VJPs.

XLA:CPU runs a bf16 dot with float32 accumulation (AMX / AVX512-BF16) several times
faster than its bf16 or float32 convolution, but carries out bf16 data movement (pad,
slice, concatenate) through float32 copies: the patch matrix is therefore built from the
bits as uint16, at integer-copy speed. The forward pass and both gradients are such patch
matmuls:

  y  = P(x) @ w                       (P: the kernel offsets' shifted slices, side by side)
  dx = P'(g) @ flip(w)ᵀ               (stride 1: a correlation of g, padded k − 1 − pad;
                                       lax's convolution where C_in < C_out)
  dw = P(x)ᵀ @ g                      (contracting batch and space; Pᵀ built channel-major)

Each is a custom-VJP function whose backward pass is made of the same functions (and
lax's convolution), so reverse mode works to any order; forward mode (``jax.jvp``) and
``jax.linear_transpose`` are not defined for this path, so a convolution that will be
transposed (the tangents of ``conv_transpose`` and ``tiled_conv``) does not take it.
Batch chunks (:func:`cnnjax._lowering.chunks.batch_chunks`) bound the patch matrix.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import cast

import jax
import jax.numpy as jnp
from jax import lax

from cnnjax import padding as _padding
from cnnjax._lowering import forms
from cnnjax._lowering.chunks import batch_chunks
from cnnjax._lowering.config import ConvConfig
from cnnjax._lowering.portable import lax_conv
from cnnjax.patches import shifted_slices

__all__ = ["applies", "has_bf16_matmul", "patch_conv"]

_CHUNK_BYTES = 16 * 2**20  # patch-matrix bytes per batch chunk


@functools.cache
def has_bf16_matmul() -> bool:
  """Whether this host's CPU has bf16 matmul units (AMX-BF16 or AVX512-BF16; read from
  Linux's ``/proc/cpuinfo``, False elsewhere). Without them XLA:CPU emulates bf16 dots
  and the patch matrix costs more than it saves."""
  try:
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
      words = set(f.read().split())
  except OSError:
    return False
  return bool(words & {"amx_bf16", "avx512_bf16"})


def applies(x: jax.Array, w: jax.Array, cfg: ConvConfig) -> bool:
  """Whether the bf16 patch-matmul form is used for this configuration."""
  kernel = w.shape[:-2]
  return (
      x.dtype == jnp.bfloat16
      and forms.current().bf16_matmul
      # (not ``in (None, jnp.bfloat16)``: np.dtype("float64") == None is True in NumPy)
      and (
          cfg.preferred_element_type is None
          or jnp.dtype(cfg.preferred_element_type) == jnp.bfloat16
      )
      and cfg.groups == 1
      and math.prod(kernel) > 1
      and all(s == 1 for s in cfg.stride)
      and all(d == 1 for d in cfg.dilation)
      and all(d == 1 for d in cfg.lhs_dilation)
      and all(0 <= lo < k and 0 <= hi < k for (lo, hi), k in zip(cfg.pads, kernel, strict=True))
  )


def _chunks(x_shape, kernel):
  per_example = 2 * math.prod(x_shape[1:]) * math.prod(kernel)
  return batch_chunks(x_shape[0], per_example, chunk_bytes=_CHUNK_BYTES)


def _patch_chunks(x, kernel, pads):
  """``(lo, hi, patches)`` per batch chunk: bf16 ``[hi − lo, *out, K·C]``."""
  nd = len(kernel)
  geo = _padding.conv_geometry(
      x.shape[1:-1],
      kernel,
      stride=(1,) * nd,
      padding=pads,
      dilation=(1,) * nd,
      op="cross_correlate",
  )
  bits = lax.bitcast_convert_type(x, jnp.uint16)
  for lo, hi in _chunks(x.shape, kernel):
    chunk = _padding.pad_spatial(lax.slice_in_dim(bits, lo, hi, axis=0), geo.pads)
    slices = shifted_slices(chunk, geo)
    patches = slices[0] if len(slices) == 1 else jnp.concatenate(slices, axis=-1)
    yield lo, hi, lax.bitcast_convert_type(patches, jnp.bfloat16)


def _back_pads(kernel, pads):
  return tuple((k - 1 - lo, k - 1 - hi) for (lo, hi), k in zip(pads, kernel, strict=True))


def _back_kernel(w):
  """The kernel of the input gradient: flipped in space, in/out channels swapped."""
  return jnp.swapaxes(jnp.flip(w, tuple(range(w.ndim - 2))), -1, -2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def patch_conv(x, w, pads):
  """Stride-1 cross-correlation of bf16 ``x [N, *S, C]`` and ``w [*K, C, O]``, zero pads
  ``0 <= pad < K``, as chunked patch matmuls with float32 accumulation."""
  nd = w.ndim - 2
  wm = w.reshape(-1, w.shape[-1])
  ys = [
      lax.dot_general(
          p, wm, (((nd + 1,), (0,)), ((), ())), preferred_element_type=jnp.float32
      ).astype(x.dtype)
      for _, _, p in _patch_chunks(x, w.shape[:-2], pads)
  ]
  return ys[0] if len(ys) == 1 else jnp.concatenate(ys, axis=0)


def _transposed_patches(x_bits, kernel, pads):
  """uint16 ``[n, *S, C]`` → the patch matrix transposed, ``[K·C, n·prod(S')]``.

  Built channel-major (one transpose of ``x``, then slices stacked along the major
  axis), so that ``P(x)ᵀ @ g`` is a plain row-major matmul: XLA:CPU runs the same
  contraction written against ``P(x)`` (contracting its major axis) 2–5× slower.
  """
  xt = jnp.moveaxis(x_bits, -1, 0)  # [C, n, *S]
  xt = jnp.pad(xt, ((0, 0), (0, 0), *pads))
  out = [size - k + 1 for size, k in zip(xt.shape[2:], kernel, strict=True)]
  slices = [
      lax.slice(
          xt, (0, 0, *offset), (*xt.shape[:2], *(o + m for o, m in zip(offset, out, strict=True)))
      )
      for offset in itertools.product(*(range(k) for k in kernel))
  ]
  return jnp.concatenate(slices, axis=0).reshape(len(slices) * x_bits.shape[-1], -1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _weight_grad(x, g, pads, kernel):
  """``∂⟨patch_conv(x, w, pads), g⟩ / ∂w = P(x)ᵀ g``: ``[*kernel, C, O]`` in bf16."""
  bits = lax.bitcast_convert_type(x, jnp.uint16)
  dw = None
  for lo, hi in _chunks(x.shape, kernel):
    pt = _transposed_patches(lax.slice_in_dim(bits, lo, hi, axis=0), kernel, pads)
    part = lax.dot(
        lax.bitcast_convert_type(pt, jnp.bfloat16),
        lax.slice_in_dim(g, lo, hi, axis=0).reshape(-1, g.shape[-1]),
        preferred_element_type=jnp.float32,
    )
    dw = part if dw is None else dw + part
  dw = cast(jax.Array, dw)  # (batch_chunks gives at least one chunk)
  return dw.reshape(*kernel, x.shape[-1], g.shape[-1]).astype(x.dtype)


def _input_grad(g, w, pads):
  """``∂⟨patch_conv(x, w, pads), g⟩ / ∂x``: ``g`` correlated with the back kernel.

  As patch matmuls when ``C_in >= C_out``; else the patch matrix of ``g`` (``K·C_out``
  wide) is large for a narrow result, and lax's convolution was measured faster (3×3,
  31×31, 24 ← 64 channels, batch 1024: 334 vs 703 ms).
  """
  nd = w.ndim - 2
  back_w, back_pads = _back_kernel(w), _back_pads(w.shape[:-2], pads)
  if w.shape[-2] >= w.shape[-1]:
    return patch_conv(g, back_w, back_pads)
  ones = (1,) * nd
  return lax_conv(
      g, back_w, ConvConfig(stride=ones, pads=back_pads, dilation=ones, lhs_dilation=ones)
  )


def _patch_conv_fwd(x, w, pads):
  return patch_conv(x, w, pads), (x, w)


def _patch_conv_bwd(pads, res, g):
  x, w = res
  g = g.astype(x.dtype)
  return _input_grad(g, w, pads), _weight_grad(x, g, pads, w.shape[:-2])


def _weight_grad_fwd(x, g, pads, kernel):
  return _weight_grad(x, g, pads, kernel), (x, g)


def _weight_grad_bwd(pads, kernel, res, v):
  # ⟨P(x)ᵀ g, v⟩ = ⟨g, conv(x, v)⟩ = ⟨x, conv(g, flip(v)ᵀ, back pads)⟩.
  x, g = res
  v = v.astype(x.dtype)
  return _input_grad(g, v, pads), patch_conv(x, v, pads)


patch_conv.defvjp(_patch_conv_fwd, _patch_conv_bwd)
_weight_grad.defvjp(_weight_grad_fwd, _weight_grad_bwd)
