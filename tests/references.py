"""Independent NumPy references, shared by every test file (never copied into one).

Each reference is the textbook formula written as loops over output positions, in
float64 (complex128 where an operand is complex), with NumPy's own padding; none of it
imports cnnjax. Tolerances for comparing cnnjax against them live in :func:`tolerance`.
"""

from __future__ import annotations

import functools
import itertools
import math
from types import SimpleNamespace
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

MODES = ("zeros", "circular", "reflect", "edge")
NUMPY_MODE = {"zeros": "constant", "circular": "wrap", "reflect": "reflect", "edge": "edge"}


def per_dim(value, nd):
  """An int (or NumPy integer) for every dim, or a sequence of one per dim."""
  return (int(value),) * nd if np.ndim(value) == 0 else tuple(int(v) for v in value)


def ref_pads(padding, sizes, kernel_eff, stride):
  """(low, high) per dim, from the definitions (SAME: output ceil(n / s), as lax)."""
  nd = len(sizes)
  if isinstance(padding, str):
    if padding.upper() == "VALID":
      return [(0, 0)] * nd
    if padding.upper() == "FULL":
      return [(r - 1, r - 1) for r in kernel_eff]
    if padding.upper() == "CAUSAL":  # Flax: r̂ − 1 on the left (1-D)
      return [(r - 1, 0) for r in kernel_eff]
    pads = []
    for n, r, s in zip(sizes, kernel_eff, stride, strict=True):
      total = max((-(-n // s) - 1) * s + r - n, 0)
      if padding.upper() == "SAME_LOWER":  # lax: the odd pixel before
        pads.append((total - total // 2, total // 2))
      else:
        pads.append((total // 2, total - total // 2))
    return pads
  if np.ndim(padding) == 0:
    return [(int(padding), int(padding))] * nd
  return [(int(p), int(p)) if np.ndim(p) == 0 else tuple(int(q) for q in p) for p in padding]


def ref_geometry(x_spatial, kernel, *, stride=1, padding="VALID", dilation=1):
  """(stride, dilation, pads, out_spatial) of a sliding-window op, by the definitions."""
  nd = len(kernel)
  s, t = per_dim(stride, nd), per_dim(dilation, nd)
  r_eff = [(r - 1) * d + 1 for r, d in zip(kernel, t, strict=True)]
  pads = ref_pads(padding, x_spatial, r_eff, s)
  out = [
      (n + lo + hi - r) // si + 1
      for n, (lo, hi), r, si in zip(x_spatial, pads, r_eff, s, strict=True)
  ]
  return s, t, pads, out


def _wide(*arrays):
  """The operands as float64, or complex128 if any is complex (exact for small ints)."""
  dtype = np.complex128 if any(np.iscomplexobj(a) for a in arrays) else np.float64
  return [np.asarray(a).astype(dtype) for a in arrays]


def ref_correlate(
    x, w, *, stride=1, padding="VALID", dilation=1, groups=1, padding_mode="zeros", flip=False
):
  """y[b, n, o] = Σ_k Σ_c w[k, c, o] · x̃[b, n·s + k·t, c], one output at a time.

  With ``flip``: true convolution, x̃[b, n·s + (r̂ − 1) − k·t, c].
  """
  x, w = _wide(x, w)
  nd = w.ndim - 2
  kernel = w.shape[:nd]
  s, t, pads, out = ref_geometry(
      x.shape[1:-1], kernel, stride=stride, padding=padding, dilation=dilation
  )
  r_eff = [(r - 1) * d + 1 for r, d in zip(kernel, t, strict=True)]
  xp = np.pad(x, [(0, 0), *pads, (0, 0)], mode=NUMPY_MODE[padding_mode])
  cg, og = w.shape[-2], w.shape[-1] // groups
  y = np.zeros((x.shape[0], *out, w.shape[-1]), x.dtype)
  for n in np.ndindex(*out):
    for k in np.ndindex(*kernel):
      if flip:
        idx = tuple(n[d] * s[d] + r_eff[d] - 1 - k[d] * t[d] for d in range(nd))
      else:
        idx = tuple(n[d] * s[d] + k[d] * t[d] for d in range(nd))
      xv = xp[(slice(None), *idx)]  # [N, C]
      for g in range(groups):
        y[(slice(None), *n, slice(g * og, (g + 1) * og))] += (
            xv[:, g * cg : (g + 1) * cg] @ w[k][:, g * og : (g + 1) * og]
        )
  return y


def ref_correlate_adjoint(y, w, x_shape, *, stride=1, padding="VALID", dilation=1, groups=1):
  """The adjoint of ``x ↦ ref_correlate(x, w)`` (zero padding) applied to ``y``.

  The textbook scatter: each y[b, n, o] adds w[k, c, o] · y[b, n, o] back onto
  x̃[b, n·s + k·t, c]; the padded border is then cropped. (Not ``jax.vjp`` of lax: XLA:CPU
  aborts compiling the input gradient when the window is larger than the input in some
  dimension, e.g. x [2, 1, 4, 6], w [2, 2, 2, 6], stride 2, FULL.)
  """
  y, w = _wide(y, w)
  nd = w.ndim - 2
  kernel = w.shape[:nd]
  s, t = per_dim(stride, nd), per_dim(dilation, nd)
  r_eff = [(r - 1) * d + 1 for r, d in zip(kernel, t, strict=True)]
  pads = ref_pads(padding, x_shape[1:-1], r_eff, s)
  padded = [size + lo + hi for size, (lo, hi) in zip(x_shape[1:-1], pads, strict=True)]
  xp = np.zeros((x_shape[0], *padded, x_shape[-1]), y.dtype)
  cg, og = w.shape[-2], w.shape[-1] // groups
  for n in np.ndindex(*y.shape[1:-1]):
    for k in np.ndindex(*kernel):
      idx = tuple(n[d] * s[d] + k[d] * t[d] for d in range(nd))
      for g in range(groups):
        xp[(slice(None), *idx, slice(g * cg, (g + 1) * cg))] += (
            y[(slice(None), *n, slice(g * og, (g + 1) * og))] @ w[k][:, g * og : (g + 1) * og].T
        )
  crop = tuple(slice(lo, lo + size) for size, (lo, _) in zip(x_shape[1:-1], pads, strict=True))
  return xp[(slice(None), *crop)]


def _ref_unshared(x, w, kernel_at, *, stride, padding, dilation, padding_mode):
  """Σ_k Σ_c kernel_at(n)[k, c, o] · x̃[b, n·s + k·t, c] for unshared weights."""
  x, w = _wide(x, w)
  nd = (w.ndim - 2) // 2
  kernel = w.shape[nd : 2 * nd]
  s, t, pads, out = ref_geometry(
      x.shape[1:-1], kernel, stride=stride, padding=padding, dilation=dilation
  )
  xp = np.pad(x, [(0, 0), *pads, (0, 0)], mode=NUMPY_MODE[padding_mode])
  y = np.zeros((x.shape[0], *out, w.shape[-1]), x.dtype)
  for n in np.ndindex(*out):
    wn = w[kernel_at(n)]
    for k in np.ndindex(*kernel):
      idx = tuple(n[d] * s[d] + k[d] * t[d] for d in range(nd))
      y[(slice(None), *n)] += xp[(slice(None), *idx)] @ wn[k]
  return y


def ref_local(x, w, *, stride=1, padding="VALID", dilation=1, padding_mode="zeros"):
  """y[b, n, o] = Σ_k Σ_c w[n, k, c, o] · x̃[b, n·s + k·t, c], one output at a time."""
  return _ref_unshared(
      x,
      w,
      lambda n: n,
      stride=stride,
      padding=padding,
      dilation=dilation,
      padding_mode=padding_mode,
  )


def ref_tiled(x, w, *, tile, stride=1, padding="VALID", dilation=1, padding_mode="zeros"):
  """y[b, n, o] = Σ_k Σ_c w[n mod T, k, c, o] · x̃[b, n·s + k·t, c], one output at a time."""
  nd = (np.ndim(w) - 2) // 2
  tile = per_dim(tile, nd)
  return _ref_unshared(
      x,
      w,
      lambda n: tuple(i % t for i, t in zip(n, tile, strict=True)),
      stride=stride,
      padding=padding,
      dilation=dilation,
      padding_mode=padding_mode,
  )


# ---------------------------------------------------------------------- pooling


def pool_windows(x, window, stride, padding):
  """Yields (output index, clipped input slices, output shape) for every window."""
  spatial = x.shape[1:-1]
  pads = ref_pads(padding, spatial, window, stride)
  out = [
      (n + lo + hi - k) // s + 1
      for n, k, s, (lo, hi) in zip(spatial, window, stride, pads, strict=True)
  ]
  for o in np.ndindex(*out):
    starts = [oi * s - lo for oi, s, (lo, _) in zip(o, stride, pads, strict=True)]
    slices = tuple(
        slice(max(a, 0), min(a + k, n)) for a, k, n in zip(starts, window, spatial, strict=True)
    )
    yield o, slices, out


def ref_pool(x, window, stride, padding, kind, *, count_include_pad=False, p=2):
  """max / avg / lp pooling by windows (padding never enters a max or an average)."""
  x = np.asarray(x, np.float64)
  nd = x.ndim - 2
  window = per_dim(window, nd)
  stride = window if stride is None else per_dim(stride, nd)
  out = None
  for o, slices, out_shape in pool_windows(x, window, stride, padding):
    if out is None:
      out = np.zeros((x.shape[0], *out_shape, x.shape[-1]))
    win = x[(slice(None), *slices, slice(None))]
    axes = tuple(range(1, nd + 1))
    if kind == "max":
      v = win.max(axis=axes)
    elif kind == "avg":
      count = math.prod(window) if count_include_pad else math.prod(win.shape[1:-1])
      v = win.sum(axis=axes) / count
    else:
      v = (np.abs(win) ** p).sum(axis=axes) ** (1 / p)
    out[(slice(None), *o, slice(None))] = v
  return out


def ref_max_grad(x, g, window, stride, padding):
  """Each window sends its gradient to its first maximum in row-major order."""
  x, g = np.asarray(x, np.float64), np.asarray(g, np.float64)
  nd = x.ndim - 2
  window = per_dim(window, nd)
  stride = window if stride is None else per_dim(stride, nd)
  dx = np.zeros_like(x)
  for o, slices, _ in pool_windows(x, window, stride, padding):
    win = x[(slice(None), *slices, slice(None))]
    shape = win.shape[1:-1]
    for b in range(x.shape[0]):
      for c in range(x.shape[-1]):
        flat = win[(b, *(slice(None),) * nd, c)].ravel()
        local = np.unravel_index(np.argmax(flat), shape)  # argmax: the first maximum / NaN
        pos = tuple(sl.start + i for sl, i in zip(slices, local, strict=True))
        dx[(b, *pos, c)] += g[(b, *o, c)]
  return dx


# PyTorch's pooling options (issue 32): ceil_mode, dilation, divisor_override. Written
# from PyTorch's documented formulas (torch.nn.MaxPool2d / AvgPool2d: the output size
# ⌊(n + 2p − d(k − 1) − 1 + (s − 1 if ceil_mode)) / s⌋ + 1, less one if the last window
# would start in the right padding; AvgPool2d's divisor: the window clipped to the
# padded input with count_include_pad, to the input without, or divisor_override),
# with (low, high) pads for 2p, one window and one tap at a time.


def ref_torch_out_size(n, k, s, lo, hi, *, dilation=1, ceil_mode=False):
  """PyTorch's pooling output size along one dim (pads ``lo`` before, ``hi`` after)."""
  out = (n + lo + hi - dilation * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
  if ceil_mode and (out - 1) * s >= n + lo:  # the last window must start before n
    out -= 1
  return out


def _torch_windows(x_spatial, window, stride, pads, dilation, ceil_mode):
  """Yields (output index, [per dim: (start, in-bounds tap positions)], out shape)."""
  out = [
      ref_torch_out_size(n, k, s, lo, hi, dilation=t, ceil_mode=ceil_mode)
      for n, k, s, (lo, hi), t in zip(x_spatial, window, stride, pads, dilation, strict=True)
  ]
  for o in np.ndindex(*out):
    dims = []
    for oi, n, k, s, (lo, _), t in zip(o, x_spatial, window, stride, pads, dilation, strict=True):
      start = oi * s - lo
      dims.append((start, [start + j * t for j in range(k) if 0 <= start + j * t < n]))
    yield o, dims, out


def ref_torch_pool(
    x,
    window,
    kind,
    *,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode=False,
    count_include_pad=False,
    divisor_override=None,
    p=2,
):
  """max / avg / lp pooling with PyTorch's options, in float64.

  ``padding``: a padding string (resolved by :func:`ref_pads`), an int or one int or
  ``(low, high)`` pair per dim. max: the maximum of the in-bounds taps (NaN if one is
  NaN, as PyTorch's ``val > max || isnan(val)``); avg: the in-bounds sum over the
  divisor (``divisor_override``; with ``count_include_pad`` the window clipped to the
  padded input, ``min(start + k, n + hi) − start`` per dim, positions a ceil_mode
  window reaches beyond the padding left out; else its in-bounds positions); lp:
  ``(Σ |x|^p)^(1/p)`` over the in-bounds taps (cnnjax's definition).
  """
  x = np.asarray(x, np.float64)
  nd = x.ndim - 2
  window = per_dim(window, nd)
  stride = window if stride is None else per_dim(stride, nd)
  dilation = per_dim(dilation, nd)
  spatial = x.shape[1:-1]
  r_eff = [(k - 1) * t + 1 for k, t in zip(window, dilation, strict=True)]
  pads = ref_pads(padding, spatial, r_eff, stride)
  y = None
  for o, dims, out in _torch_windows(spatial, window, stride, pads, dilation, ceil_mode):
    if y is None:
      y = np.zeros((x.shape[0], *out, x.shape[-1]))
    taps = list(itertools.product(*(positions for _, positions in dims)))
    vals = np.stack([x[(slice(None), *tap, slice(None))] for tap in taps])  # [T, N, C]
    if kind == "max":
      v = vals.max(axis=0)
    elif kind == "avg":
      if divisor_override is not None:
        divisor = divisor_override
      elif count_include_pad:
        divisor = math.prod(
            min(start + k, n + hi) - start
            for (start, _), k, n, (_, hi) in zip(dims, window, spatial, pads, strict=True)
        )
      else:
        divisor = len(taps)
      v = vals.sum(axis=0) / divisor
    else:
      v = (np.abs(vals) ** p).sum(axis=0) ** (1 / p)
    y[(slice(None), *o, slice(None))] = v
  return y


def ref_torch_max_grad(x, g, window, *, stride=None, padding=0, dilation=1, ceil_mode=False):
  """Each window sends its gradient to its first maximum among its in-bounds taps
  (row-major; the first NaN), PyTorch's ``maxindex``."""
  x, g = np.asarray(x, np.float64), np.asarray(g, np.float64)
  nd = x.ndim - 2
  window = per_dim(window, nd)
  stride = window if stride is None else per_dim(stride, nd)
  dilation = per_dim(dilation, nd)
  r_eff = [(k - 1) * t + 1 for k, t in zip(window, dilation, strict=True)]
  pads = ref_pads(padding, x.shape[1:-1], r_eff, stride)
  dx = np.zeros_like(x)
  for o, dims, _ in _torch_windows(x.shape[1:-1], window, stride, pads, dilation, ceil_mode):
    taps = list(itertools.product(*(positions for _, positions in dims)))
    for b in range(x.shape[0]):
      for c in range(x.shape[-1]):
        first = int(np.argmax([x[(b, *tap, c)] for tap in taps]))  # first max / NaN
        dx[(b, *taps[first], c)] += g[(b, *o, c)]
  return dx


def ref_torch_max_indices(x, window, *, stride=None, padding=0, dilation=1, ceil_mode=False):
  """PyTorch's max-pool indices with dilation and ceil_mode: each window's first
  maximum among its in-bounds taps, flattened row-major over the input's spatial axes."""
  x = np.asarray(x)
  nd = x.ndim - 2
  window = per_dim(window, nd)
  stride = window if stride is None else per_dim(stride, nd)
  dilation = per_dim(dilation, nd)
  r_eff = [(k - 1) * t + 1 for k, t in zip(window, dilation, strict=True)]
  pads = ref_pads(padding, x.shape[1:-1], r_eff, stride)
  idx = None
  for o, dims, out in _torch_windows(x.shape[1:-1], window, stride, pads, dilation, ceil_mode):
    if idx is None:
      idx = np.zeros((x.shape[0], *out, x.shape[-1]), np.int64)
    taps = list(itertools.product(*(positions for _, positions in dims)))
    for b in range(x.shape[0]):
      for c in range(x.shape[-1]):
        first = int(np.argmax([x[(b, *tap, c)] for tap in taps]))
        idx[(b, *o, c)] = np.ravel_multi_index(taps[first], x.shape[1:-1])
  return idx


def ref_depthwise_keras(x, kernel, *, stride=1, padding="VALID", dilation=1):
  """Keras ``DepthwiseConv2D``: ``y[b, n, c·M + m] = Σ_k x̃[b, n·s + k·t, c] ·
  kernel[k, c, m]`` with Keras' kernel ``[*kernel_size, C_in, M]`` (M the depth
  multiplier), zero padding; one output channel at a time."""
  x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
  nd = kernel.ndim - 2
  size, (c_in, mult) = kernel.shape[:nd], kernel.shape[nd:]
  s, t, pads, out = ref_geometry(
      x.shape[1:-1], size, stride=stride, padding=padding, dilation=dilation
  )
  xp = np.pad(x, [(0, 0), *pads, (0, 0)])
  y = np.zeros((x.shape[0], *out, c_in * mult))
  for n in np.ndindex(*out):
    for k in np.ndindex(*size):
      idx = tuple(n[d] * s[d] + k[d] * t[d] for d in range(nd))
      for c in range(c_in):
        for m in range(mult):
          y[(slice(None), *n, c * mult + m)] += xp[(slice(None), *idx, c)] * kernel[(*k, c, m)]
  return y


def ref_separable_keras(x, depthwise, pointwise, **settings):
  """Keras ``SeparableConv2D``: the depthwise step, then ``pointwise`` ``[1, …, 1,
  C_in · M, C_out]`` at each position (no bias)."""
  h = ref_depthwise_keras(x, depthwise, **settings)
  p = np.asarray(pointwise, np.float64)
  return np.einsum("...c,co->...o", h, p.reshape(p.shape[-2:]))


def ref_binomial_blur(x, stride, k, mode="reflect"):
  """Binomial low-pass (numpy pad + loops), then subsampling."""
  x = np.asarray(x, np.float64)
  nd = x.ndim - 2
  row = np.array([math.comb(k - 1, i) for i in range(k)], np.float64)
  row /= row.sum()
  pad = [(0, 0)] + [((k - 1) // 2, k // 2)] * nd + [(0, 0)]
  xp = np.pad(x, pad, mode={"reflect": "reflect", "zeros": "constant"}[mode])
  out_shape = [-(-n // stride) for n in x.shape[1:-1]]
  y = np.zeros((x.shape[0], *out_shape, x.shape[-1]))
  for o in np.ndindex(*out_shape):
    acc = 0.0
    for off in np.ndindex(*(k,) * nd):
      w = np.prod([row[i] for i in off])
      acc = (
          acc
          + w
          * xp[(slice(None), *(oi * stride + i for oi, i in zip(o, off, strict=True)), slice(None))]
      )
    y[(slice(None), *o, slice(None))] = acc
  return y


def ref_aps_phase(x, stride, p=2):
  """The phase APS keeps per example: the first maximum of the polyphase l_p norms."""
  x = np.asarray(x, np.float64)
  if not x.shape[0]:
    return []
  phases = list(itertools.product(*(range(s) for s in stride)))
  norms = []
  for r in phases:
    comp = x[
        (slice(None), *(slice(ri, None, s) for ri, s in zip(r, stride, strict=True)), slice(None))
    ]
    a = np.abs(comp).reshape(x.shape[0], -1)
    norms.append(a.max(axis=1) if np.isinf(p) else (a**p).sum(axis=1))
  return [phases[i] for i in np.argmax(np.stack(norms, axis=1), axis=1)]


def ref_aps(x, stride, p=2):
  """APS (polyphase downsampling): each example's chosen phase, ``[N, *(n // s), C]``."""
  x = np.asarray(x, np.float64)
  out = [n // s for n, s in zip(x.shape[1:-1], stride, strict=True)]
  y = np.zeros((x.shape[0], *out, x.shape[-1]))
  for b, r in enumerate(ref_aps_phase(x, stride, p)):
    y[b] = x[
        (
            b,
            *(slice(ri, ri + m * s, s) for ri, m, s in zip(r, out, stride, strict=True)),
            slice(None),
        )
    ]
  return y


def ref_lrn(x, size, alpha, beta, k):
  """Local response normalisation across channels, one channel at a time."""
  x = np.asarray(x, np.float64)
  out = np.empty_like(x)
  channels = x.shape[-1]
  for c in range(channels):
    lo, hi = max(0, c - size // 2), min(channels - 1, c + (size - 1) // 2)
    total = sum(x[..., j] ** 2 for j in range(lo, hi + 1))
    out[..., c] = x[..., c] / (k + alpha * total) ** beta
  return out


# ------------------------------------------------------------------- tolerances

# Relative tolerance of a result computed in `dtype` against a float64 reference, for a
# sum of up to a few hundred products. float32 contractions on GPU default to TF32
# (10-bit mantissa) and on TPU to bfloat16 passes, so default-precision float32 is
# held to the TF32/bf16 rounding there; precision="highest" to float32 rounding anywhere.
_RTOL = {
    "bfloat16": 3e-2,
    "float16": 5e-3,
    "float32": 2e-5,
    "float64": 1e-10,
    "complex64": 2e-5,
    "complex128": 1e-10,
}


def on_cpu() -> bool:
  return jax.default_backend() == "cpu"


def tolerance(dtype, *, precision=None) -> float:
  """rtol (also used as atol relative to the reference's scale) for ``dtype`` results."""
  name = np.dtype(dtype).name
  rtol = _RTOL[name]
  if name in ("float32", "complex64") and precision is None and not on_cpu():
    rtol = 1e-2 if jax.default_backend() == "tpu" else 2e-3
  return rtol


def assert_close(got, want, dtype=None, *, precision=None, scale=None):
  """``got`` within ``tolerance(dtype)`` of ``want``, relative to the reference's scale."""
  got = np.asarray(got)
  want = np.asarray(want)
  dtype = got.dtype if dtype is None else dtype
  rtol = tolerance(dtype, precision=precision)
  if scale is None:
    scale = max(float(np.max(np.abs(want))) if want.size else 0.0, 1.0)
  np.testing.assert_allclose(got.astype(want.dtype), want, rtol=rtol, atol=rtol * scale)


# ============================================================================
# Issue 17: the matrix view, weight gradient, unfold/fold, adaptive pooling,
# unpooling and group convolution. (Appended here; the sections above are shared.)
# ============================================================================


def lax_correlate(x, w, *, stride=1, padding="VALID", dilation=1, groups=1, padding_mode="zeros"):
  """``lax.conv_general_dilated`` (channels-last, HWIO), other modes padded by ``jnp.pad``.

  A JAX reference (differentiable, so ``jax.jacfwd`` / ``jax.grad`` can be taken) that
  does not go through cnnjax.
  """
  import jax.numpy as jnp
  from jax import lax

  nd = w.ndim - 2
  s, t, pads, _ = ref_geometry(
      x.shape[1:-1], w.shape[:nd], stride=stride, padding=padding, dilation=dilation
  )
  # Padded first, zeros too: XLA:CPU (jaxlib 0.10.2) aborts compiling jax's input
  # gradient of some strided convolutions given their padding (cnnjax._lowering.workarounds.aborts).
  mode = "constant" if padding_mode == "zeros" else NUMPY_MODE[padding_mode]
  x = jnp.pad(x, [(0, 0), *pads, (0, 0)], mode=mode)
  pads = [(0, 0)] * nd
  letters = "DHW"[-nd:] if nd < 3 else "DHW"
  spec = (f"N{letters}C", f"{letters}IO", f"N{letters}C")
  return lax.conv_general_dilated(
      x,
      w,
      window_strides=s,
      padding=pads,
      rhs_dilation=t,
      dimension_numbers=spec,
      feature_group_count=groups,
      precision=lax.Precision.HIGHEST,
  )


def ref_conv_matrix(w, input_shape, **settings):
  """``jax.jacfwd`` of :func:`lax_correlate` on one example: ``[P_out·C_out, P_in·C_in]``."""
  m = _conv_jacobian(jnp.asarray(w), tuple(input_shape), tuple(sorted(settings.items())))
  return np.asarray(m).reshape(-1, math.prod(input_shape))


@functools.partial(jax.jit, static_argnums=(1, 2))  # one program, not op-by-op dispatch
def _conv_jacobian(w, input_shape, settings):
  f = lambda x: lax_correlate(x[None], w, **dict(settings))[0].reshape(-1)
  return jax.jacfwd(f, holomorphic=jnp.iscomplexobj(w))(jnp.zeros(input_shape, w.dtype))


def ref_weight_grad(x, g, w_shape, **settings):
  """``jax.grad`` of ``Σ g · lax_correlate(x, w)`` with respect to ``w``."""
  return np.asarray(_weight_grad(x, g, tuple(w_shape), tuple(sorted(settings.items()))))


@functools.partial(jax.jit, static_argnums=(2, 3))  # one program, not op-by-op dispatch
def _weight_grad(x, g, w_shape, settings):
  w0 = jnp.zeros(w_shape, jnp.result_type(x, g))
  return jax.grad(lambda w: jnp.sum(lax_correlate(x, w, **dict(settings)) * g))(w0)


def ref_unfold(x, kernel, *, stride=1, padding="VALID", dilation=1, padding_mode="zeros"):
  """p[b, n, (k, c)] = x̃[b, n·s + k·t, c], one window at a time."""
  (x,) = _wide(x)
  nd = x.ndim - 2
  kernel = per_dim(kernel, nd)
  s, t, pads, out = ref_geometry(
      x.shape[1:-1], kernel, stride=stride, padding=padding, dilation=dilation
  )
  xp = np.pad(x, [(0, 0), *pads, (0, 0)], mode=NUMPY_MODE[padding_mode])
  p = np.zeros((x.shape[0], *out, math.prod(kernel), x.shape[-1]), x.dtype)
  for n in np.ndindex(*out):
    for i, k in enumerate(np.ndindex(*kernel)):
      idx = tuple(n[d] * s[d] + k[d] * t[d] for d in range(nd))
      p[(slice(None), *n, i)] = xp[(slice(None), *idx)]
  return p.reshape(*p.shape[:-2], math.prod(kernel) * x.shape[-1])


def ref_fold(p, output_shape, kernel, *, stride=1, padding="VALID", dilation=1):
  """The scatter: p[b, n, (k, c)] added onto x[b, n·s + k·t − lo, c] when inside."""
  (p,) = _wide(p)
  nd = len(output_shape) - 2
  kernel = per_dim(kernel, nd)
  s, t, pads, out = ref_geometry(
      output_shape[1:-1], kernel, stride=stride, padding=padding, dilation=dilation
  )
  c = output_shape[-1]
  p = p.reshape(*p.shape[:-1], math.prod(kernel), c)
  x = np.zeros(output_shape, p.dtype)
  for n in np.ndindex(*out):
    for i, k in enumerate(np.ndindex(*kernel)):
      idx = tuple(n[d] * s[d] + k[d] * t[d] - pads[d][0] for d in range(nd))
      if all(0 <= idx[d] < output_shape[1 + d] for d in range(nd)):
        x[(slice(None), *idx)] += p[(slice(None), *n, i)]
  return x


def toeplitz_1d(w, n, *, lo=0, hi=0):
  """The matrix of a 1-D, one-channel, stride-1 correlation with zero padding (lo, hi),
  by ``scipy.linalg.toeplitz``: row i holds w at columns i − lo .. i − lo + k − 1."""
  from scipy.linalg import toeplitz

  w = np.asarray(w)
  k = len(w)
  m = n + lo + hi - k + 1
  # The padded problem is Toeplitz with first column (w[0], 0, …) and first row
  # (w, 0, …); the padding crops columns.
  first_row = np.zeros(n + lo + hi, w.dtype)
  first_row[:k] = w
  first_col = np.zeros(m, w.dtype)
  first_col[0] = w[0]
  return toeplitz(first_col, first_row)[:, lo : lo + n]


def circulant_1d(w, n, *, lo):
  """The matrix of a 1-D, one-channel, stride-1 circular correlation whose window starts
  ``lo`` positions before the output position, by ``scipy.linalg.circulant``:
  M[i, j] = w[(j − i + lo) mod n] (w zero-extended to n)."""
  from scipy.linalg import circulant

  w = np.asarray(w)
  wn = np.zeros(n, w.dtype)
  wn[: len(w)] = w
  # circulant(c)[i, j] = c[(i − j) mod n]; take c[m] = wn[(lo − m) mod n].
  c = wn[(lo - np.arange(n)) % n]
  return circulant(c)


def doubly_block_toeplitz(w, h, wd):
  """The matrix of a 2-D, one-channel, VALID, stride-1 correlation of an ``h × wd``
  image: a block Toeplitz matrix whose block (i, i + a) is ``toeplitz_1d(w[a], wd)``."""
  w = np.asarray(w)
  kh = w.shape[0]
  oh = h - kh + 1
  blocks = [toeplitz_1d(w[a], wd) for a in range(kh)]
  m = np.zeros((oh * blocks[0].shape[0], h * wd), w.dtype)
  for a, block in enumerate(blocks):
    shift = np.eye(oh, h, k=a, dtype=w.dtype)  # row i has its 1 at column i + a
    m += np.kron(shift, block)
  return m


def ref_adaptive_pool(x, output_size, kind):
  """PyTorch's adaptive pooling: bin i of n → o covers [floor(i·n/o), ceil((i+1)·n/o)),
  written out as a loop over output positions (``kind`` "avg" or "max")."""
  x = np.asarray(x, np.float64)
  spatial = x.shape[1:-1]
  sizes = (output_size,) * len(spatial) if np.ndim(output_size) == 0 else output_size
  out = tuple(n if o is None else int(o) for n, o in zip(spatial, sizes, strict=True))
  y = np.zeros((x.shape[0], *out, x.shape[-1]))
  for o in np.ndindex(*out):
    sl = tuple(
        slice(math.floor(i * n / m), math.ceil((i + 1) * n / m))
        for i, n, m in zip(o, spatial, out, strict=True)
    )
    win = x[(slice(None), *sl, slice(None))]
    axes = tuple(range(1, len(spatial) + 1))
    y[(slice(None), *o, slice(None))] = win.mean(axes) if kind == "avg" else win.max(axes)
  return y


def ref_max_pool_indices(x, window, stride, padding):
  """PyTorch's max-pool indices: each window's first maximum (row-major over the window,
  padding never wins), as a row-major index into the input's flattened spatial axes."""
  x = np.asarray(x)
  nd = x.ndim - 2
  window = per_dim(window, nd)
  stride = window if stride is None else per_dim(stride, nd)
  idx = None
  for o, slices, out_shape in pool_windows(x, window, stride, padding):
    if idx is None:
      idx = np.zeros((x.shape[0], *out_shape, x.shape[-1]), np.int64)
    for b in range(x.shape[0]):
      for c in range(x.shape[-1]):
        win = x[(b, *slices, c)]
        local = np.unravel_index(np.argmax(win), win.shape)  # first max (first NaN)
        pos = tuple(s.start + i for s, i in zip(slices, local, strict=True))
        idx[(b, *o, c)] = np.ravel_multi_index(pos, x.shape[1:-1])
  return idx


def ref_max_unpool(y, indices, output_shape):
  """PyTorch's max-unpooling: out.view(N, C, -1)[b, c, indices[b, ..., c]] = y[b, ..., c]."""
  y, indices = np.asarray(y, np.float64), np.asarray(indices)
  n, c = output_shape[0], output_shape[-1]
  out = np.zeros((n, math.prod(output_shape[1:-1]), c))
  for b in range(n):
    for ch in range(c):
      out[b, indices[b, ..., ch].reshape(-1), ch] = y[b, ..., ch].reshape(-1)
  return out.reshape(output_shape)


# --------------------------------------------------------- group convolution (p4, p4m)


def ref_plane_transform(a, element, axes=(0, 1)):
  """Element 4·m + r of p4m on the plane ``axes`` of ``a``: r quarter turns
  (``np.rot90``), then m reversals of the second axis."""
  m, r = divmod(int(element), 4)
  a = np.rot90(np.asarray(a), r, axes=axes)
  return np.flip(a, axis=axes[1]) if m else a


def ref_group_table(group):
  """The Cayley table by brute force: ``table[g, h]`` is the element k with
  ``T_k = T_g ∘ T_h`` on a probe of distinct values (so not from a formula)."""
  n = {"p4": 4, "p4m": 8}[group]
  probe = np.arange(9.0).reshape(3, 3)
  images = [ref_plane_transform(probe, k) for k in range(n)]
  table = np.zeros((n, n), np.int64)
  for g in range(n):
    for h in range(n):
      both = ref_plane_transform(ref_plane_transform(probe, h), g)
      (matches,) = [k for k in range(n) if np.array_equal(images[k], both)]
      table[g, h] = matches
  return table


def ref_lift_conv(x, w, group, **settings):
  """y[..., g, :] = x ⋆ T_g w (Cohen & Welling's lifting correlation), by ref_correlate."""
  n = {"p4": 4, "p4m": 8}[group]
  return np.stack(
      [ref_correlate(x, ref_plane_transform(w, g), **settings) for g in range(n)], axis=-2
  )


def ref_group_conv(x, w, group, **settings):
  """y[..., g, :] = Σ_s x[..., s, :] ⋆ (T_g w)(·, g⁻¹s): the filter moved by g,
  ψ_g(p, s) = ψ(g⁻¹p, g⁻¹s), by ref_correlate."""
  table = ref_group_table(group)
  n = table.shape[0]
  inverse = [int(np.flatnonzero(table[g] == 0)[0]) for g in range(n)]
  out = []
  for g in range(n):
    total = 0
    for s in range(n):
      kernel = ref_plane_transform(w[:, :, table[inverse[g], s]], g)
      total = total + ref_correlate(x[..., s, :], kernel, **settings)
    out.append(total)
  return np.stack(out, axis=-2)


# ============================================================================
# Issue 19: the weight gradient as NumPy loops (the CPU lowering's row-stacked forms
# and batch-chunked weight gradients are checked against it). (Appended here.)
# ============================================================================


def ref_correlate_weight_grad(x, g, kernel, *, stride=1, padding="VALID", dilation=1):
  """∂⟨ref_correlate(x, w), g⟩ / ∂w (zero padding, groups 1), one kernel offset at a time:
  dw[k, c, o] = Σ_b Σ_n x̃[b, n·s + k·t, c] · g[b, n, o]."""
  x, g = _wide(x, g)
  nd = len(kernel)
  s, t, pads, out = ref_geometry(
      x.shape[1:-1], kernel, stride=stride, padding=padding, dilation=dilation
  )
  assert tuple(out) == tuple(g.shape[1:-1]), (out, g.shape)
  xp = np.pad(x, [(0, 0), *pads, (0, 0)])
  dw = np.zeros((*kernel, x.shape[-1], g.shape[-1]), x.dtype)
  for k in np.ndindex(*kernel):
    for n in np.ndindex(*out):
      idx = tuple(n[d] * s[d] + k[d] * t[d] for d in range(nd))
      dw[k] += xp[(slice(None), *idx)].T @ g[(slice(None), *n)]
  return dw


# ============================================================================
# Issue 28: exact integer references (Python ints, no rounding before the last step).
# (Appended here.)
# ============================================================================


def round_float32(q):
  """The float32 nearest the rational ``q`` (an int or ``fractions.Fraction``), ties to
  even: NumPy's float32 of ``float(q)`` and its two neighbours, compared exactly."""
  from fractions import Fraction

  q = Fraction(q)
  f = np.float32(float(q))
  candidates = [np.nextafter(f, np.float32(-np.inf)), f, np.nextafter(f, np.float32(np.inf))]

  def key(c):
    even = int(np.array(c, np.float32).view(np.uint32)) & 1
    return abs(Fraction(float(c)) - q), even

  return min((c for c in candidates if np.isfinite(c)), key=key)


def ref_int_avg_pool(x, window, stride, padding, *, count_include_pad=False):
  """Average pooling of integers: each window's exact sum (Python ints) over its count,
  rounded once to float32 (``round_float32``)."""
  from fractions import Fraction

  x = np.asarray(x)
  nd = x.ndim - 2
  window = per_dim(window, nd)
  stride = window if stride is None else per_dim(stride, nd)
  out = None
  for o, slices, out_shape in pool_windows(x, window, stride, padding):
    if out is None:
      out = np.zeros((x.shape[0], *out_shape, x.shape[-1]), np.float32)
    win = x[(slice(None), *slices, slice(None))].astype(object)
    count = math.prod(window) if count_include_pad else math.prod(win.shape[1:-1])
    for b in range(x.shape[0]):
      for c in range(x.shape[-1]):
        total = int(win[(b, ..., c)].sum())
        out[(b, *o, c)] = round_float32(Fraction(total, count))
  return out


def int_pieces(a):
  """``a`` (any integer dtype) as ``[(shift, float64 piece)]`` with ``a = Σ piece ·
  2**shift`` and ``|piece| < 2**16``: bilinear references run on the pieces in float64
  stay exact (products below 2**32, sums of fewer than 2**20 of them)."""
  bits = max(np.iinfo(np.asarray(a).dtype).bits, 16)
  a = np.asarray(a).astype(object)
  pieces = []
  for shift in range(0, bits, 16):
    part = a >> shift
    if shift + 16 < bits:
      part = part & 0xFFFF
    pieces.append((shift, part.astype(np.float64)))
  return pieces


def wrap_int(values, dtype):
  """Python ints reduced modulo 2**bits into ``dtype`` (two's complement for signed
  dtypes): what an integer sum in ``dtype`` gives, as lax's integer convolution does."""
  info = np.iinfo(dtype)
  values = np.asarray(values, dtype=object)
  wrapped = (values - info.min) % (2**info.bits) + info.min
  return np.array(wrapped.tolist(), dtype=dtype).reshape(values.shape)


def ref_exact_bilinear(ref, x, w, dtype, **settings):
  """``ref(x, w, **settings)`` for integer ``x`` and ``w`` of any width, exactly: ``ref``
  (bilinear, float64) applied to 16-bit pieces of each, recombined in Python ints, then
  wrapped into ``dtype``."""
  total = None
  for sx, px in int_pieces(x):
    for sw, pw in int_pieces(w):
      part = np.asarray(ref(px, pw, **settings))
      assert np.all(np.abs(part) < 2**53), "the pieces' reference is not exact"
      term = part.astype(np.int64).astype(object) * (1 << (sx + sw))
      total = term if total is None else total + term
  return wrap_int(total, dtype)


def ref_exact_linear(ref, a, dtype, **settings):
  """``ref(a, **settings)`` for integer ``a`` of any width, exactly: ``ref`` (linear,
  float64) applied to 16-bit pieces of ``a``, recombined in Python ints, then wrapped
  into ``dtype``."""
  total = None
  for shift, piece in int_pieces(a):
    part = np.asarray(ref(piece, **settings))
    assert np.all(np.abs(part) < 2**53), "the pieces' reference is not exact"
    term = part.astype(np.int64).astype(object) * (1 << shift)
    total = term if total is None else total + term
  return wrap_int(total, dtype)


def ref_int_adaptive_max_pool(x, output_size):
  """PyTorch's adaptive max pooling in ``x``'s own (integer) dtype: the bins of
  ``ref_adaptive_pool``, each reduced by ``np.max`` without a cast."""
  x = np.asarray(x)
  spatial = x.shape[1:-1]
  sizes = (output_size,) * len(spatial) if np.ndim(output_size) == 0 else output_size
  out = tuple(n if o is None else int(o) for n, o in zip(spatial, sizes, strict=True))
  y = np.zeros((x.shape[0], *out, x.shape[-1]), x.dtype)
  for o in np.ndindex(*out):
    sl = tuple(
        slice(math.floor(i * n / m), math.ceil((i + 1) * n / m))
        for i, n, m in zip(o, spatial, out, strict=True)
    )
    y[(slice(None), *o, slice(None))] = x[(slice(None), *sl, slice(None))].max(
        axis=tuple(range(1, len(spatial) + 1))
    )
  return y


# ============================================================================
# Issue 32: deformable convolution (Dai et al. 2017; modulated: Zhu et al. 2019).
# ============================================================================


def ref_bilinear(img, py, px):
  """The papers' ``x(p) = Σ_q G(q, p) · x(q)`` over the integer positions ``q`` of
  ``img`` (``[H, W, C]``), ``G(q, p) = g(q_y, p_y) · g(q_x, p_x)``,
  ``g(a, b) = max(0, 1 − |a − b|)``; positions outside the image read nothing (zeros),
  and neither do positions of weight 0 (cnnjax's documented rule: no ``0 · NaN``).
  A NaN coordinate gives NaN weights everywhere, so a NaN sample."""
  height, width, _ = img.shape
  with np.errstate(invalid="ignore"):
    gy = np.maximum(0.0, 1.0 - np.abs(np.arange(height) - py))
    gx = np.maximum(0.0, 1.0 - np.abs(np.arange(width) - px))
  if np.isnan(py) or np.isnan(px):
    return np.full(img.shape[-1], np.nan)
  out = np.zeros(img.shape[-1], img.dtype)
  for qy in np.flatnonzero(gy):
    for qx in np.flatnonzero(gx):
      out = out + (gy[qy] * gx[qx]) * img[qy, qx]
  return out


def ref_deform_conv(
    x,
    w,
    offsets,
    mask=None,
    *,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    offset_groups=1,
):
  """``y[b, p, o] = Σ_k Σ_c w[k, c, o] · m[b, p, k] · x(b, p̂ + p_k + Δp_k, c)``, one
  sample at a time (:func:`ref_bilinear`); torchvision's channel orders, channels-last:
  ``offsets[b, i, j, (g·K + k)·2 + {0: Δy, 1: Δx}]``, ``mask[b, i, j, g·K + k]``, with
  ``K`` the taps in row-major order and ``g`` the offset group of channel ``c``."""
  x, w, offsets = _wide(x, w, offsets)
  mask = None if mask is None else np.asarray(mask, np.float64)
  kh, kw, cg_w, c_out = w.shape
  batch, _, _, c_in = x.shape
  s, t, pads, (h_out, w_out) = ref_geometry(
      x.shape[1:3], (kh, kw), stride=stride, padding=padding, dilation=dilation
  )
  taps = kh * kw
  cg_off = c_in // offset_groups
  og_w = c_out // groups
  cols = np.zeros((batch, h_out, w_out, taps, c_in), x.dtype)
  for b, i, j in np.ndindex(batch, h_out, w_out):
    for k in range(taps):
      ki, kj = divmod(k, kw)
      for g in range(offset_groups):
        dy, dx = offsets[b, i, j, 2 * (g * taps + k) : 2 * (g * taps + k) + 2]
        py = i * s[0] - pads[0][0] + ki * t[0] + dy
        px = j * s[1] - pads[1][0] + kj * t[1] + dx
        chans = slice(g * cg_off, (g + 1) * cg_off)
        sample = ref_bilinear(x[b, :, :, chans], py, px)
        if mask is not None:
          sample = mask[b, i, j, g * taps + k] * sample
        cols[b, i, j, k, chans] = sample
  y = np.zeros((batch, h_out, w_out, c_out), x.dtype)
  wk = w.reshape(taps, cg_w, c_out)
  with np.errstate(invalid="ignore", over="ignore"):  # inf · w, inf − inf: as written
    for grp in range(groups):
      ins, outs = slice(grp * cg_w, (grp + 1) * cg_w), slice(grp * og_w, (grp + 1) * og_w)
      for k in range(taps):
        y[..., outs] += cols[:, :, :, k, ins] @ wk[k, :, outs]
  return y


# ============================================================================
# Issue 32: the other libraries' documented formulas, for the migration guide
# (docs/guides/migration.md, checked by tests/project/test_migration.py). Each in that
# library's own layout and argument conventions; the guide's rows call them by the
# other library's names through :func:`migration_namespace`.
# ============================================================================


class Uniform(NamedTuple):
  """An initialiser's documented distribution: ``U(low, high)`` samples of ``shape``."""

  low: float
  high: float
  shape: tuple


class TruncatedNormal(NamedTuple):
  """Samples of ``shape`` with standard deviation ``std`` (after truncation) and
  ``|sample| <= bound``."""

  std: float
  bound: float
  shape: tuple


def _cf_correlate(x, w, stride, pads, dilation, groups=1):
  """Cross-correlation of channels-first ``x [N, C, *spatial]`` with ``w [O, C / groups,
  *kernel]`` over ``x`` zero-padded by ``pads`` (one ``(low, high)`` per spatial dim):
  ``y[n, o, i] = Σ_c Σ_t w[o, c, t] · x̃[n, g·C/groups + c, i·s + t·d]`` for ``o`` in
  group ``g``, as a loop over output positions."""
  x, w = _wide(x, w)
  nd = x.ndim - 2
  kernel = w.shape[2:]
  xp = np.pad(x, [(0, 0), (0, 0), *pads])
  out = [
      (n - (k - 1) * d - 1) // s + 1
      for n, k, s, d in zip(xp.shape[2:], kernel, stride, dilation, strict=True)
  ]
  cg, og = x.shape[1] // groups, w.shape[0] // groups
  y = np.zeros((x.shape[0], w.shape[0], *out), x.dtype)
  axes = tuple(range(1, nd + 2))
  for o in np.ndindex(*out):
    taps = tuple(
        slice(i * s, i * s + (k - 1) * d + 1, d)
        for i, s, k, d in zip(o, stride, kernel, dilation, strict=True)
    )
    window = xp[(slice(None), slice(None), *taps)]
    for g in range(groups):
      part = window[:, g * cg : (g + 1) * cg]
      y[(slice(None), slice(g * og, (g + 1) * og), *o)] = np.tensordot(
          part, w[g * og : (g + 1) * og], axes=(axes, axes)
      )
  return y


_NUMPY_PAD: dict[str, Any] = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _cl(a):
  """Channels-last to channels-first (``[N, *spatial, C] -> [N, C, *spatial]``)."""
  return np.moveaxis(np.asarray(a, np.float64), -1, 1)


def _lc(a):
  """Channels-first back to channels-last."""
  return np.moveaxis(a, 1, -1)


def _same_pads(sizes, kernel_eff, stride, *, lower=False):
  """``lax.padtype_to_pads``' "SAME": output ``ceil(n / s)``, the odd pixel at the end
  (at the start with ``lower``, Equinox's "SAME_LOWER")."""
  pads = []
  for n, k, s in zip(sizes, kernel_eff, stride, strict=True):
    total = max((-(-n // s) - 1) * s + k - n, 0)
    lo = (total + 1) // 2 if lower else total // 2
    pads.append((lo, total - lo))
  return pads


def _window_pool(x, window, stride, pads, kind, *, divisor="valid"):
  """Channels-first window pooling over the real (unpadded) positions of each window:
  ``kind`` "max" or "avg", divided by the number of real positions (``divisor="valid"``)
  or by the window size (``"window"``)."""
  x = _lc(np.asarray(x, np.float64))
  out = None
  for o, slices, out_shape in pool_windows(x, window, stride, tuple(pads)):
    if out is None:
      out = np.zeros((x.shape[0], *out_shape, x.shape[-1]))
    win = x[(slice(None), *slices, slice(None))]
    axes = tuple(range(1, x.ndim - 1))
    if kind == "max":
      v = win.max(axis=axes)
    else:
      count = math.prod(window) if divisor == "window" else math.prod(win.shape[1:-1])
      v = win.sum(axis=axes) / count
    out[(slice(None), *o, slice(None))] = v
  assert out is not None, "no window"
  return np.moveaxis(out, -1, 1)


# ----------------------------------------------- PyTorch (torch.nn.functional, NCHW/OIHW)


def torch_conv(
    input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"
):
  """``F.conv{1,2,3}d`` (and ``nn.Conv{1,2,3}d``'s ``padding_mode``): ``out(N_i, C_out_j) =
  bias(C_out_j) + Σ_k weight(C_out_j, k) ⋆ input(N_i, k)``, ⋆ the cross-correlation, on
  NC* inputs and ``[C_out, C_in / groups, *kernel]`` weights. ``padding`` an int or one
  per dim (both sides), ``"valid"``, or ``"same"`` (stride 1 only; an odd total's extra
  pixel at the end); ``H_out = ⌊(H_in + 2p − d(k − 1) − 1) / s + 1⌋``."""
  x = np.asarray(input, np.float64)
  nd = x.ndim - 2
  kernel = weight.shape[2:]
  stride, dilation = per_dim(stride, nd), per_dim(dilation, nd)
  if padding == "valid":
    pads = [(0, 0)] * nd
  elif padding == "same":
    if any(s != 1 for s in stride):
      raise ValueError("padding='same' is not supported for strided convolutions")
    totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
    pads = [(t // 2, t - t // 2) for t in totals]
  else:
    pads = [(p, p) for p in per_dim(padding, nd)]
  if padding_mode != "zeros":
    x = np.pad(x, [(0, 0), (0, 0), *pads], mode=_NUMPY_PAD[padding_mode])
    pads = [(0, 0)] * nd
  y = _cf_correlate(x, weight, stride, pads, dilation, groups)
  if bias is not None:
    y = y + np.asarray(bias, np.float64).reshape(-1, *(1,) * nd)
  return y


def torch_conv_transpose(
    input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1
):
  """``F.conv_transpose{1,2,3}d``, "the gradient of Conv with respect to its input":
  input ``i`` meets tap ``t`` at output ``i·s − p + t·d``, weights ``[C_in, C_out / groups,
  *kernel]``, ``H_out = (H_in − 1)·s − 2p + d(k − 1) + output_padding + 1``."""
  x, w = _wide(input, weight)
  nd = x.ndim - 2
  kernel = w.shape[2:]
  s, p, a, d = (per_dim(v, nd) for v in (stride, padding, output_padding, dilation))
  out = [
      (n - 1) * si - 2 * pi + di * (k - 1) + ai + 1
      for n, si, pi, di, k, ai in zip(x.shape[2:], s, p, d, kernel, a, strict=True)
  ]
  cg, og = x.shape[1] // groups, w.shape[1]
  y = np.zeros((x.shape[0], og * groups, *out), x.dtype)
  for i in np.ndindex(*x.shape[2:]):
    for t in np.ndindex(*kernel):
      j = [ii * si - pi + ti * di for ii, si, pi, ti, di in zip(i, s, p, t, d, strict=True)]
      if all(0 <= jj < n for jj, n in zip(j, out, strict=True)):
        for g in range(groups):
          ins = slice(g * cg, (g + 1) * cg)
          y[(slice(None), slice(g * og, (g + 1) * og), *j)] += (
              x[(slice(None), ins, *i)] @ w[(ins, slice(None), *t)]
          )
  if bias is not None:
    y = y + np.asarray(bias, np.float64).reshape(-1, *(1,) * nd)
  return y


def _torch_pool_out(n, k, p, s, d, ceil_mode):
  """PyTorch's pooled size: ``⌊ or ⌈(n + 2p − d(k − 1) − 1) / s⌉ + 1``, less one when
  ``ceil_mode`` would start the last window in the right padding."""
  span = n + 2 * p - d * (k - 1) - 1
  out = (span + (s - 1 if ceil_mode else 0)) // s + 1
  if ceil_mode and (out - 1) * s >= n + p:
    out -= 1
  return out


def _torch_pool_args(x, kernel_size, stride, padding, dilation, ceil_mode):
  nd = x.ndim - 2
  k = per_dim(kernel_size, nd)
  s = k if stride is None else per_dim(stride, nd)
  p, d = per_dim(padding, nd), per_dim(dilation, nd)
  out = [
      _torch_pool_out(n, ki, pi, si, di, ceil_mode)
      for n, ki, pi, si, di in zip(x.shape[2:], k, p, s, d, strict=True)
  ]
  return k, s, p, d, out


def torch_max_pool(
    input,
    kernel_size,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode=False,
    return_indices=False,
):
  """``F.max_pool{1,2,3}d``: the maximum over the taps ``o·s − p + t·d`` inside the input
  (padding is ``−inf``); indices into the flattened spatial axes, the first maximum in
  window order (a NaN wins)."""
  x = np.asarray(input, np.float64)
  k, s, p, d, out = _torch_pool_args(x, kernel_size, stride, padding, dilation, ceil_mode)
  spatial = x.shape[2:]
  y = np.full((*x.shape[:2], *out), -np.inf)
  idx = np.full((*x.shape[:2], *out), -1, np.int64)
  for o in np.ndindex(*out):
    at = (slice(None), slice(None), *o)
    for t in np.ndindex(*k):
      pos = [oi * si - pi + ti * di for oi, si, pi, ti, di in zip(o, s, p, t, d, strict=True)]
      if not all(0 <= q < n for q, n in zip(pos, spatial, strict=True)):
        continue
      v = x[(slice(None), slice(None), *pos)]
      take = (v > y[at]) | np.isnan(v) | (idx[at] < 0)
      y[at] = np.where(take, v, y[at])
      idx[at] = np.where(take, np.ravel_multi_index(pos, spatial), idx[at])
  return (y, idx) if return_indices else y


def torch_avg_pool(
    input,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
):
  """``F.avg_pool{1,2,3}d``, ATen's divisor: a window ``[start, start + k)`` clipped to
  ``[−p, n + p)`` counts that many positions with ``count_include_pad`` (padding in,
  the ``ceil_mode`` overhang out), its real positions without; ``divisor_override``
  replaces both."""
  x = np.asarray(input, np.float64)
  k, s, p, _, out = _torch_pool_args(x, kernel_size, stride, padding, 1, ceil_mode)
  spatial = x.shape[2:]
  y = np.zeros((*x.shape[:2], *out))
  for o in np.ndindex(*out):
    starts = [oi * si - pi for oi, si, pi in zip(o, s, p, strict=True)]
    ends = [min(a + ki, n + pi) for a, ki, n, pi in zip(starts, k, spatial, p, strict=True)]
    pool_size = math.prod(e - a for a, e in zip(starts, ends, strict=True))
    lo = [max(a, 0) for a in starts]
    hi = [min(e, n) for e, n in zip(ends, spatial, strict=True)]
    win = x[(slice(None), slice(None), *(slice(a, b) for a, b in zip(lo, hi, strict=True)))]
    if divisor_override:
      divisor = divisor_override
    elif count_include_pad:
      divisor = pool_size
    else:
      divisor = math.prod(b - a for a, b in zip(lo, hi, strict=True))
    y[(slice(None), slice(None), *o)] = win.sum(axis=tuple(range(2, x.ndim))) / divisor
  return y


def torch_lp_pool(input, norm_type, kernel_size, stride=None, ceil_mode=False):
  """``F.lp_pool{1,2}d`` as torch/nn/functional.py computes it: ``(avg_pool(x^p) · k_h·k_w)
  ^ (1/p)`` (no absolute value: for odd ``p`` negative sums give NaN)."""
  x = np.asarray(input, np.float64)
  k = per_dim(kernel_size, x.ndim - 2)
  with np.errstate(invalid="ignore"):
    avg = torch_avg_pool(x**norm_type, k, stride, 0, ceil_mode)
    return (avg * math.prod(k)) ** (1.0 / norm_type)


def torch_adaptive_pool(input, output_size, kind):
  """``F.adaptive_{avg,max}_pool{1,2,3}d``: bin ``i`` of ``n → o`` covers
  ``[⌊i·n/o⌋, ⌈(i + 1)·n/o⌉)``."""
  x = np.asarray(input, np.float64)
  spatial = x.shape[2:]
  sizes = per_dim(output_size, len(spatial)) if output_size is not None else spatial
  y = np.zeros((*x.shape[:2], *sizes))
  for o in np.ndindex(*sizes):
    bins = tuple(
        slice(i * n // m, -(-(i + 1) * n // m)) for i, n, m in zip(o, spatial, sizes, strict=True)
    )
    win = x[(slice(None), slice(None), *bins)]
    axes = tuple(range(2, x.ndim))
    y[(slice(None), slice(None), *o)] = win.mean(axes) if kind == "avg" else win.max(axes)
  return y


def torch_max_unpool(input, indices, kernel_size, stride=None, padding=0, output_size=None):
  """``F.max_unpool{1,2,3}d``: ``out.view(N, C, -1)[n, c, indices[n, c]] = input[n, c]``,
  output ``(H_in − 1)·s − 2p + k`` by default."""
  y = np.asarray(input, np.float64)
  nd = y.ndim - 2
  k = per_dim(kernel_size, nd)
  s = k if stride is None else per_dim(stride, nd)
  p = per_dim(padding, nd)
  if output_size is None:
    out = [(n - 1) * si - 2 * pi + ki for n, si, pi, ki in zip(y.shape[2:], s, p, k, strict=True)]
  else:
    out = list(output_size)[-nd:]
  flat = np.zeros((*y.shape[:2], math.prod(out)))
  for n, c in np.ndindex(*y.shape[:2]):
    flat[n, c, np.asarray(indices)[n, c].reshape(-1)] = y[n, c].reshape(-1)
  return flat.reshape(*y.shape[:2], *out)


def torch_unfold(input, kernel_size, dilation=1, padding=0, stride=1):
  """``F.unfold`` (4-D input): ``[N, C·k_h·k_w, L]``, row ``c·k_h·k_w + i·k_w + j`` the tap
  ``(i, j)`` of channel ``c`` and ``L`` the output positions in row-major order."""
  x = np.asarray(input, np.float64)
  k, d, p, s = (per_dim(v, 2) for v in (kernel_size, dilation, padding, stride))
  xp = np.pad(x, [(0, 0), (0, 0), *((q, q) for q in p)])
  out = [
      (n - di * (ki - 1) - 1) // si + 1 for n, di, ki, si in zip(xp.shape[2:], d, k, s, strict=True)
  ]
  cols = np.zeros((x.shape[0], x.shape[1] * k[0] * k[1], out[0] * out[1]))
  for col, (oi, oj) in enumerate(np.ndindex(*out)):
    for c, i, j in np.ndindex(x.shape[1], *k):
      row = (c * k[0] + i) * k[1] + j
      cols[:, row, col] = xp[:, c, oi * s[0] + i * d[0], oj * s[1] + j * d[1]]
  return cols


def torch_local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
  """``F.local_response_norm``: ``b_c = a_c · (k + α/n · Σ_{c'} a_{c'}²)^(−β)`` over the
  channels ``c − ⌊n/2⌋ … c + ⌊(n − 1)/2⌋`` that exist."""
  x = np.asarray(input, np.float64)
  channels = x.shape[1]
  y = np.zeros_like(x)
  for c in range(channels):
    lo, hi = max(c - size // 2, 0), min(c + (size - 1) // 2, channels - 1)
    sq = (x[:, lo : hi + 1] ** 2).sum(axis=1)
    y[:, c] = x[:, c] * (k + alpha / size * sq) ** (-beta)
  return y


def torch_deform_conv2d(
    input, offset, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), mask=None
):
  """``torchvision.ops.deform_conv2d``: ``input [N, C_in, H, W]``, ``offset [N, 2·G·k_h·k_w,
  H_out, W_out]`` (per offset group, per tap in row-major order, the pair ``(Δy, Δx)``),
  ``weight [C_out, C_in / groups, k_h, k_w]``, ``mask [N, G·k_h·k_w, H_out, W_out]``; the
  sampling formula is :func:`ref_deform_conv`'s, in channels-last."""
  w = np.asarray(weight, np.float64)
  pads: Any = tuple((p, p) for p in per_dim(padding, 2))
  groups = np.asarray(input).shape[1] // w.shape[1]
  offset_groups = np.asarray(offset).shape[1] // (2 * w.shape[2] * w.shape[3])
  y = ref_deform_conv(
      _lc(np.asarray(input, np.float64)),
      np.moveaxis(w, (0, 1), (-1, -2)),
      _lc(np.asarray(offset, np.float64)),
      None if mask is None else _lc(np.asarray(mask, np.float64)),
      stride=stride,
      padding=pads,
      dilation=dilation,
      groups=groups,
      offset_groups=offset_groups,
  )
  y = _cl(y)
  if bias is not None:
    y = y + np.asarray(bias, np.float64).reshape(-1, 1, 1)
  return y


def torch_conv_init(in_channels, out_channels, kernel_size, groups=1, nd=2):
  """``nn.Conv{n}d``'s documented initialisation: weight and bias ``U(−√k, √k)``,
  ``k = groups / (C_in · Π kernel_size)``."""
  kernel = per_dim(kernel_size, nd)
  bound = math.sqrt(groups / (in_channels * math.prod(kernel)))
  weight = Uniform(-bound, bound, (out_channels, in_channels // groups, *kernel))
  return weight, Uniform(-bound, bound, (out_channels,))


# ------------------------------------------------------- Keras 3 (keras.ops, channels-last)


def keras_conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
  """``keras.ops.conv``: ``[N, *spatial, C]`` inputs, ``[*kernel, C / groups, C_out]`` kernels
  (``groups = C / kernel.shape[-2]``); ``"same"`` pads to ``ceil(n / s)`` outputs, the odd
  pixel at the end."""
  assert data_format in (None, "channels_last")
  x = _cl(inputs)
  w = np.moveaxis(np.asarray(kernel, np.float64), (-1, -2), (0, 1))
  nd = x.ndim - 2
  s, d = per_dim(strides, nd), per_dim(dilation_rate, nd)
  kernel_eff = [(k - 1) * di + 1 for k, di in zip(w.shape[2:], d, strict=True)]
  pads = _same_pads(x.shape[2:], kernel_eff, s) if padding == "same" else [(0, 0)] * nd
  return _lc(_cf_correlate(x, w, s, pads, d, x.shape[1] // w.shape[1]))


def keras_depthwise_conv(
    inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1
):
  """``keras.ops.depthwise_conv`` (``tf.nn.depthwise_conv2d``'s definition): kernel
  ``[*kernel, C, M]``, ``out[..., c·M + m] = Σ_t x[..., c] · kernel[t, c, m]``."""
  *k, c, m = np.shape(kernel)
  flat = np.asarray(kernel, np.float64).reshape(*k, 1, c * m)
  return keras_conv(inputs, flat, strides, padding, data_format, dilation_rate)


def keras_separable_conv(
    inputs,
    depthwise_kernel,
    pointwise_kernel,
    strides=1,
    padding="valid",
    data_format=None,
    dilation_rate=1,
):
  """``keras.ops.separable_conv``: the depthwise convolution, then a 1×1 ``conv`` with
  ``pointwise_kernel [1, 1, C·M, C_out]``."""
  depthwise = keras_depthwise_conv(
      inputs, depthwise_kernel, strides, padding, data_format, dilation_rate
  )
  return keras_conv(depthwise, pointwise_kernel)


def keras_conv_transpose(
    inputs,
    kernel,
    strides=1,
    padding="valid",
    output_padding=None,
    data_format=None,
    dilation_rate=1,
):
  """``keras.ops.conv_transpose``, kernel ``[*kernel, C_out, C_in]``, keras/src/backend/
  common/backend_utils.py's geometry: the output length is ``(n − 1)·s + max(k̂, s)``
  ("valid"), ``n·s`` ("same"), or with ``output_padding`` ``(n − 1)·s + k̂ + a``
  ("valid") and ``(n − 1)·s + k̂ mod 2 + a`` ("same"); input ``i`` meets tap ``t`` at
  ``i·s + t·d − (k̂ − 1 − left)``, ``left`` that file's left padding."""
  assert data_format in (None, "channels_last")
  x = _cl(inputs)
  w = np.asarray(kernel, np.float64)
  nd = x.ndim - 2
  s, d = per_dim(strides, nd), per_dim(dilation_rate, nd)
  a = [None] * nd if output_padding is None else per_dim(output_padding, nd)
  shifts, out = [], []
  for n, k, si, di, ai in zip(x.shape[2:], w.shape[:-2], s, d, a, strict=True):
    ke = (k - 1) * di + 1
    if padding == "valid":
      ai = max(ke, si) - ke if ai is None else ai
      left, right = ke - 1, ke - 1 + ai
    else:
      pad_len = si + ke - 2 if ai is None else ke + ke % 2 - 2 + ai
      left = min(pad_len // 2 + pad_len % 2, ke - 1)
      right = pad_len - left
    shifts.append(ke - 1 - left)
    out.append((n - 1) * si + 1 + left + right - (ke - 1))
  y = np.zeros((x.shape[0], w.shape[-2], *out))
  for i in np.ndindex(*x.shape[2:]):
    for t in np.ndindex(*w.shape[:-2]):
      j = [ii * si + ti * di - sh for ii, si, ti, di, sh in zip(i, s, t, d, shifts, strict=True)]
      if all(0 <= jj < m for jj, m in zip(j, out, strict=True)):
        y[(slice(None), slice(None), *j)] += x[(slice(None), slice(None), *i)] @ w[t].T
  return _lc(y)


def keras_pool(inputs, pool_size, strides=None, padding="valid", data_format=None, *, kind):
  """``keras.ops.max_pool`` / ``average_pool``: strides default to ``pool_size``;
  ``"same"`` as for the convolutions, and an average divides by the window's real
  (unpadded) positions."""
  assert data_format in (None, "channels_last")
  x = _cl(inputs)
  nd = x.ndim - 2
  k = per_dim(pool_size, nd)
  s = k if strides is None else per_dim(strides, nd)
  pads = _same_pads(x.shape[2:], k, s) if padding == "same" else [(0, 0)] * nd
  return _lc(_window_pool(x, k, s, pads, kind))


def keras_glorot_uniform(shape):
  """``keras.initializers.GlorotUniform``: ``U(−l, l)``, ``l = √(6 / (fan_in + fan_out))``,
  ``fan_in = Π shape[:-2] · shape[-2]``, ``fan_out = Π shape[:-2] · shape[-1]``."""
  receptive = math.prod(shape[:-2])
  limit = math.sqrt(6 / (receptive * (shape[-2] + shape[-1])))
  return Uniform(-limit, limit, tuple(shape))


# ---------------------------------------------------------- Flax NNX (channels-last, HWIO)


def flax_conv(
    inputs,
    kernel,
    strides=1,
    padding="SAME",
    input_dilation=1,
    kernel_dilation=1,
    feature_group_count=1,
    mask=None,
):
  """``nnx.Conv``: ``lax.conv_general_dilated`` on NHWC/HWIO, after ``"CIRCULAR"`` /
  ``"REFLECT"`` padding by ``((k̂ − 1) // 2, k̂ // 2)`` whatever the stride, and
  ``"CAUSAL"`` (1-D) by ``(k̂ − 1, 0)``; ``mask`` multiplies the kernel."""
  x = _cl(inputs)
  w = np.asarray(kernel, np.float64)
  if mask is not None:
    w = w * np.asarray(mask, np.float64)
  w = np.moveaxis(w, (-1, -2), (0, 1))
  nd = x.ndim - 2
  s, d, ld = (per_dim(v, nd) for v in (strides, kernel_dilation, input_dilation))
  if any(v != 1 for v in ld):
    raise NotImplementedError("input_dilation")
  kernel_eff = [(k - 1) * di + 1 for k, di in zip(w.shape[2:], d, strict=True)]
  if padding in ("CIRCULAR", "REFLECT"):
    pads = [((k - 1) // 2, k // 2) for k in kernel_eff]
    mode: Any = "wrap" if padding == "CIRCULAR" else "reflect"
    x = np.pad(x, [(0, 0), (0, 0), *pads], mode=mode)
    pads = [(0, 0)] * nd
  elif padding == "CAUSAL":
    assert nd == 1, "Causal padding is only implemented for 1D convolutions."
    pads = [(kernel_eff[0] - 1, 0)]
  elif padding == "SAME":
    pads = _same_pads(x.shape[2:], kernel_eff, s)
  elif padding == "VALID":
    pads = [(0, 0)] * nd
  elif np.ndim(padding) == 0:
    pads = [(int(padding), int(padding))] * nd
  else:
    pads = [(p, p) if np.ndim(p) == 0 else tuple(p) for p in padding]
  return _lc(_cf_correlate(x, w, s, pads, d, feature_group_count))


def flax_conv_transpose(
    inputs,
    kernel,
    strides=1,
    padding: Any = "SAME",
    kernel_dilation=1,
    mask=None,
    transpose_kernel=False,
):
  """``nnx.ConvTranspose``, i.e. ``lax.conv_transpose``: the input dilated by the stride,
  padded by lax's ``_conv_transpose_padding`` (``"SAME"``: ``k̂ + s − 2`` in all, the start
  ``k̂ − 1`` if ``s > k̂ − 1`` else ``⌈(k̂ + s − 2)/2⌉``; ``"VALID"``: ``k̂ − 1`` and
  ``k̂ − 1 + max(s − k̂, 0)``; pairs as given), then cross-correlated with the kernel
  ``[*kernel, C_in, C_out]`` as it is, or flipped with its channel axes swapped
  (``transpose_kernel``: kernel ``[*kernel, C_out, C_in]``)."""
  x = np.asarray(inputs, np.float64)
  w = np.asarray(kernel, np.float64)
  if mask is not None:
    w = w * np.asarray(mask, np.float64)
  nd = x.ndim - 2
  if transpose_kernel:
    w = np.flip(w, tuple(range(nd))).swapaxes(-1, -2)
  s, d = per_dim(strides, nd), per_dim(kernel_dilation, nd)
  pads = []
  for i, (k, si, di) in enumerate(zip(w.shape[:nd], s, d, strict=True)):
    ke = (k - 1) * di + 1
    if padding == "SAME":
      pad_len = ke + si - 2
      pad_a = ke - 1 if si > ke - 1 else -(-pad_len // 2)
    elif padding == "VALID":
      pad_len = ke + si - 2 + max(ke - si, 0)
      pad_a = ke - 1
    else:
      pad_a, pad_len = padding[i][0], sum(padding[i])
    pads.append((pad_a, pad_len - pad_a))
  dilated = np.zeros(
      (x.shape[0], *((n - 1) * si + 1 for n, si in zip(x.shape[1:-1], s, strict=True)), x.shape[-1])
  )
  dilated[(slice(None), *(slice(None, None, si) for si in s), slice(None))] = x
  return _lc(_cf_correlate(_cl(dilated), np.moveaxis(w, (-1, -2), (0, 1)), (1,) * nd, pads, d))


def flax_pool(inputs, window_shape, strides=None, padding="VALID", count_include_pad=True, *, kind):
  """``nnx.max_pool`` / ``nnx.avg_pool`` (flax.linen.pooling): strides default to 1;
  ``"SAME"`` as lax; an average divides by the window size (``count_include_pad=True``,
  the default) or by its real positions."""
  x = _cl(inputs)
  nd = x.ndim - 2
  k = tuple(window_shape)
  s = (1,) * nd if strides is None else tuple(strides)
  if padding == "SAME":
    pads = _same_pads(x.shape[2:], k, s)
  elif padding == "VALID":
    pads = [(0, 0)] * nd
  else:
    pads = [tuple(p) for p in padding]
  divisor = "window" if count_include_pad else "valid"
  return _lc(_window_pool(x, k, s, pads, kind, divisor=divisor))


def flax_lecun_normal(shape):
  """``nnx.initializers.lecun_normal()`` (``variance_scaling(1, "fan_in",
  "truncated_normal")``): standard deviation ``√(1 / fan_in)`` after truncation at two
  standard deviations of the untruncated normal, ``fan_in = Π shape[:-1]``."""
  std = math.sqrt(1 / math.prod(shape[:-1]))
  return TruncatedNormal(std, 2 * std / 0.87962566103423978, tuple(shape))


# -------------------------------------------------- Equinox (unbatched [C, *spatial], OIHW)


def _eqx_pads(padding, sizes, kernel_eff, stride):
  nd = len(sizes)
  if isinstance(padding, str):
    if padding.upper() == "VALID":
      return [(0, 0)] * nd
    return _same_pads(sizes, kernel_eff, stride, lower=padding.upper() == "SAME_LOWER")
  if np.ndim(padding) == 0:
    return [(int(padding), int(padding))] * nd
  return [(p, p) if np.ndim(p) == 0 else tuple(p) for p in padding]


def eqx_conv(x, weight, stride=1, padding=0, dilation=1, groups=1, padding_mode="ZEROS"):
  """``eqx.nn.Conv``: ``lax.conv_general_dilated`` on one ``[C, *spatial]`` example with an
  ``[O, C / groups, *kernel]`` weight; ``"SAME"`` / ``"SAME_LOWER"`` pad to ``ceil(n / s)``
  outputs with an odd total's extra pixel at the end / at the start; ``padding_mode``
  ``"REFLECT"``, ``"REPLICATE"`` or ``"CIRCULAR"`` pads by ``jnp.pad``."""
  x = np.asarray(x, np.float64)[None]
  w = np.asarray(weight, np.float64)
  nd = x.ndim - 2
  s, d = per_dim(stride, nd), per_dim(dilation, nd)
  kernel_eff = [(k - 1) * di + 1 for k, di in zip(w.shape[2:], d, strict=True)]
  pads = _eqx_pads(padding, x.shape[2:], kernel_eff, s)
  if padding_mode.upper() != "ZEROS":
    x = np.pad(x, [(0, 0), (0, 0), *pads], mode=_NUMPY_PAD[padding_mode.lower()])
    pads = [(0, 0)] * nd
  return _cf_correlate(x, w, s, pads, d, groups)[0]


def eqx_conv_transpose(x, weight, stride=1, padding=0, output_padding=0, dilation=1, groups=1):
  """``eqx.nn.ConvTranspose``: ``[O, C / groups, *kernel]`` weight cross-correlated, as it
  is, with the input dilated by the stride and padded by ``d(k − 1) − p_lo`` and
  ``d(k − 1) − p_hi + output_padding`` (Dumoulin & Visin's relationship 14)."""
  x = np.asarray(x, np.float64)
  w = np.asarray(weight, np.float64)
  nd = x.ndim - 1
  k = np.asarray(w.shape[2:])
  s, a, d = (np.asarray(per_dim(v, nd)) for v in (stride, output_padding, dilation))
  if isinstance(padding, str):
    if padding.upper() == "VALID":
      p0 = p1 = np.zeros(nd, np.int64)
    else:
      p_sum = d * (k - 1) - s + a + 1
      a = np.where(p_sum < 0, -p_sum, 0)
      p_sum = np.maximum(p_sum, 0)
      p0 = (p_sum + (padding.upper() == "SAME_LOWER")) // 2
      p1 = p_sum - p0
  else:
    pairs = np.asarray(_eqx_pads(padding, x.shape[1:], list(k), list(s)))
    p0, p1 = pairs[:, 0], pairs[:, 1]
  pads = [
      (int(di * (ki - 1) - q0), int(di * (ki - 1) - q1 + ai))
      for di, ki, q0, q1, ai in zip(d, k, p0, p1, a, strict=True)
  ]
  dilated = np.zeros(
      (x.shape[0], *((n - 1) * si + 1 for n, si in zip(x.shape[1:], s, strict=True)))
  )
  dilated[(slice(None), *(slice(None, None, int(si)) for si in s))] = x
  return _cf_correlate(dilated[None], w, (1,) * nd, pads, tuple(int(v) for v in d), groups)[0]


def eqx_pool(x, kernel_size, stride=1, padding=0, use_ceil=False, *, kind):
  """``eqx.nn.MaxPool{n}d`` / ``AvgPool{n}d``: stride 1 by default; ``use_ceil`` adds
  ``stride`` to the high padding where the windows do not tile exactly; an average
  divides by the window size, padding included."""
  x = np.asarray(x, np.float64)[None]
  nd = x.ndim - 2
  k, s = per_dim(kernel_size, nd), per_dim(stride, nd)
  pads = _eqx_pads(padding, x.shape[2:], k, s)
  if use_ceil:
    pads = [
        (lo, hi) if (n + lo + hi - ki) % si == 0 else (lo, hi + si)
        for n, (lo, hi), ki, si in zip(x.shape[2:], pads, k, s, strict=True)
    ]
  return _window_pool(x, k, s, pads, kind, divisor="window")[0]


def eqx_conv_init(in_channels, out_channels, kernel_size, groups=1, nd=2):
  """``eqx.nn.Conv``'s initialisation: weight and bias ``U(−l, l)``, ``l = 1 / √fan_in``,
  ``fan_in = C_in / groups · Π kernel_size``."""
  kernel = per_dim(kernel_size, nd)
  lim = 1 / math.sqrt(in_channels // groups * math.prod(kernel))
  weight = Uniform(-lim, lim, (out_channels, in_channels // groups, *kernel))
  return weight, Uniform(-lim, lim, (out_channels, *(1,) * nd))


# ------------------------------------------------- the names the migration guide's rows use


def _module_weights(names, op):
  if "w" not in names:
    raise ValueError(f"{op}: a module's row takes its weights from the row's `w`")
  return names["w"]


def migration_namespace(library, names):
  """The names a migration row's call uses, as references: ``F``, ``nn``, ``torch`` and
  ``torchvision`` for "PyTorch"; ``keras`` for "Keras"; ``nnx`` and ``rngs`` for "Flax";
  ``eqx`` and ``key`` for "Equinox". A module applies the row's ``w`` (its weights) and
  no bias; its ``weight`` / ``bias`` / ``kernel`` attributes are its documented
  initial distributions (:class:`Uniform`, :class:`TruncatedNormal`)."""

  def no_bias(use_bias, op):
    if use_bias:
      raise ValueError(f"{op}: a module's row has no bias (pass bias=False/use_bias=False)")

  if library == "PyTorch":

    class TorchConv:

      def __init__(
          self,
          in_channels,
          out_channels,
          kernel_size,
          stride=1,
          padding=0,
          dilation=1,
          groups=1,
          bias=True,
          padding_mode="zeros",
          *,
          nd,
      ):
        self.settings: dict[str, Any] = dict(
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            padding_mode=padding_mode,
        )
        self.use_bias = bias
        self.weight, self.bias = torch_conv_init(in_channels, out_channels, kernel_size, groups, nd)

      def __call__(self, x):
        no_bias(self.use_bias, "nn.Conv")
        return torch_conv(x, _module_weights(names, "nn.Conv"), **self.settings)

    functional = {}
    for nd in (1, 2, 3):
      functional.update(
          {
              f"conv{nd}d": torch_conv,
              f"conv_transpose{nd}d": torch_conv_transpose,
              f"max_pool{nd}d": torch_max_pool,
              f"avg_pool{nd}d": torch_avg_pool,
              f"adaptive_avg_pool{nd}d": functools.partial(torch_adaptive_pool, kind="avg"),
              f"adaptive_max_pool{nd}d": functools.partial(torch_adaptive_pool, kind="max"),
              f"max_unpool{nd}d": torch_max_unpool,
          }
      )
    functional.update(
        lp_pool1d=torch_lp_pool,
        lp_pool2d=torch_lp_pool,
        unfold=torch_unfold,
        local_response_norm=torch_local_response_norm,
    )
    modules = {f"Conv{nd}d": functools.partial(TorchConv, nd=nd) for nd in (1, 2, 3)}
    return {
        "F": SimpleNamespace(**functional),
        "nn": SimpleNamespace(**modules),
        "torch": SimpleNamespace(flip=np.flip),
        "torchvision": SimpleNamespace(ops=SimpleNamespace(deform_conv2d=torch_deform_conv2d)),
    }

  if library == "Keras":

    def glorot_uniform(seed=None):
      del seed
      return lambda shape, dtype=None: keras_glorot_uniform(shape)

    ops = SimpleNamespace(
        conv=keras_conv,
        conv_transpose=keras_conv_transpose,
        depthwise_conv=keras_depthwise_conv,
        separable_conv=keras_separable_conv,
        max_pool=functools.partial(keras_pool, kind="max"),
        average_pool=functools.partial(keras_pool, kind="avg"),
    )
    initializers = SimpleNamespace(GlorotUniform=glorot_uniform)
    return {"keras": SimpleNamespace(ops=ops, initializers=initializers)}

  if library == "Flax":

    def kernel_tuple(kernel_size):
      return (kernel_size,) if np.ndim(kernel_size) == 0 else tuple(kernel_size)

    class FlaxConv:

      def __init__(
          self,
          in_features,
          out_features,
          kernel_size,
          strides=1,
          *,
          padding="SAME",
          input_dilation=1,
          kernel_dilation=1,
          feature_group_count=1,
          use_bias=True,
          mask=None,
          rngs,
      ):
        del rngs
        shape = (*kernel_tuple(kernel_size), in_features // feature_group_count, out_features)
        self.kernel = flax_lecun_normal(shape)
        self.use_bias = use_bias
        self.settings: dict[str, Any] = dict(
            strides=strides,
            padding=padding,
            input_dilation=input_dilation,
            kernel_dilation=kernel_dilation,
            feature_group_count=feature_group_count,
            mask=mask,
        )

      def __call__(self, inputs):
        no_bias(self.use_bias, "nnx.Conv")
        return flax_conv(inputs, _module_weights(names, "nnx.Conv"), **self.settings)

    class FlaxConvTranspose:

      def __init__(
          self,
          in_features,
          out_features,
          kernel_size,
          strides=None,
          *,
          padding="SAME",
          kernel_dilation=None,
          use_bias=True,
          mask=None,
          transpose_kernel=False,
          rngs,
      ):
        del in_features, out_features, kernel_size, rngs
        self.use_bias = use_bias
        self.settings: dict[str, Any] = dict(
            strides=1 if strides is None else strides,
            padding=padding,
            kernel_dilation=1 if kernel_dilation is None else kernel_dilation,
            mask=mask,
            transpose_kernel=transpose_kernel,
        )

      def __call__(self, inputs):
        no_bias(self.use_bias, "nnx.ConvTranspose")
        w = _module_weights(names, "nnx.ConvTranspose")
        return flax_conv_transpose(inputs, w, **self.settings)

    def lecun_normal():
      return lambda key, shape, dtype=None: flax_lecun_normal(shape)

    nnx = SimpleNamespace(
        Conv=FlaxConv,
        ConvTranspose=FlaxConvTranspose,
        max_pool=functools.partial(flax_pool, kind="max"),
        avg_pool=functools.partial(flax_pool, kind="avg"),
        initializers=SimpleNamespace(lecun_normal=lecun_normal),
    )
    return {"nnx": nnx, "rngs": SimpleNamespace(params=lambda: None)}

  if library == "Equinox":

    class EqxConv:

      def __init__(
          self,
          in_channels,
          out_channels,
          kernel_size,
          stride=1,
          padding=0,
          dilation=1,
          groups=1,
          use_bias=True,
          padding_mode="ZEROS",
          dtype=None,
          *,
          key,
          nd,
      ):
        del dtype, key
        self.settings: dict[str, Any] = dict(
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            padding_mode=padding_mode,
        )
        self.use_bias = use_bias
        self.weight, self.bias = eqx_conv_init(in_channels, out_channels, kernel_size, groups, nd)

      def __call__(self, x, *, key=None):
        no_bias(self.use_bias, "eqx.nn.Conv")
        return eqx_conv(x, _module_weights(names, "eqx.nn.Conv"), **self.settings)

    class EqxConvTranspose:

      def __init__(
          self,
          in_channels,
          out_channels,
          kernel_size,
          stride=1,
          output_padding=0,
          padding=0,
          dilation=1,
          groups=1,
          use_bias=True,
          padding_mode="ZEROS",
          dtype=None,
          *,
          key,
      ):
        del in_channels, out_channels, kernel_size, dtype, key
        if padding_mode.upper() != "ZEROS":
          raise NotImplementedError("padding_mode")
        self.settings: dict[str, Any] = dict(
            stride=stride,
            padding=padding,
            output_padding=output_padding,
            dilation=dilation,
            groups=groups,
        )
        self.use_bias = use_bias

      def __call__(self, x, *, key=None):
        no_bias(self.use_bias, "eqx.nn.ConvTranspose")
        w = _module_weights(names, "eqx.nn.ConvTranspose")
        return eqx_conv_transpose(x, w, **self.settings)

    def pool(kind):
      def make(kernel_size, stride=1, padding=0, use_ceil=False):
        def apply(x, *, key=None):
          return eqx_pool(x, kernel_size, stride, padding, use_ceil, kind=kind)

        return apply

      return make

    layers = {}
    for nd in (1, 2, 3):
      layers.update(
          {
              f"Conv{nd}d": functools.partial(EqxConv, nd=nd),
              f"ConvTranspose{nd}d": EqxConvTranspose,
              f"MaxPool{nd}d": pool("max"),
              f"AvgPool{nd}d": pool("avg"),
          }
      )
    return {"eqx": SimpleNamespace(nn=SimpleNamespace(**layers)), "key": None}

  raise ValueError(f"migration_namespace: unknown library {library!r}")
