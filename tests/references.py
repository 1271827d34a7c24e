"""Independent NumPy references, shared by every test file (never copied into one).

Each reference is the textbook formula written as loops over output positions, in
float64 (complex128 where an operand is complex), with NumPy's own padding; none of it
imports cnnjax. Tolerances for comparing cnnjax against them live in :func:`tolerance`.
"""

from __future__ import annotations

import itertools
import math

import jax
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
    pads = []
    for n, r, s in zip(sizes, kernel_eff, stride, strict=True):
      total = max((-(-n // s) - 1) * s + r - n, 0)
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
  import jax.numpy as jnp

  w = jnp.asarray(w)
  x0 = jnp.zeros(input_shape, w.dtype)
  f = lambda x: lax_correlate(x[None], w, **settings)[0].reshape(-1)
  return np.asarray(jax.jacfwd(f, holomorphic=np.iscomplexobj(w))(x0)).reshape(
      -1, math.prod(input_shape)
  )


def ref_weight_grad(x, g, w_shape, **settings):
  """``jax.grad`` of ``Σ g · lax_correlate(x, w)`` with respect to ``w``."""
  import jax.numpy as jnp

  w0 = jnp.zeros(w_shape, np.result_type(x, g))
  return np.asarray(jax.grad(lambda w: jnp.sum(lax_correlate(x, w, **settings) * g))(w0))


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
