"""Cross-correlation, true convolution and transposed convolution on ``jax.lax``.

All functions take batched, channels-last inputs ``[N, *spatial, C]`` with 1, 2 or
3 spatial dims and kernels ``[*kernel_spatial, C_in // groups, C_out]`` (Flax's
HWIO layout); the kernel's rank sets the number of spatial dims. Arrays are
positional, configuration is keyword-only.

Lowering: on GPU and TPU each op is one ``lax.conv_general_dilated``; on CPU
``lax.platform_dependent`` picks forms XLA:CPU runs faster (batch chunks, depthwise as
shifted-slice multiply-adds, 1×1 as a matmul, bfloat16 stride-1 convolutions as patch
matmuls where the CPU has AMX / AVX512-BF16); see the "lowerings" section below.
``import cnnjax`` also sets an XLA:CPU flag that runs convolutions multi-threaded
(``cnnjax._xla_flags``).
Forward-mode differentiation (``jax.jvp``) of a bfloat16 stride-1 convolution on such a
CPU is not supported (reverse mode is, to any order).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from cnnjax import padding as _padding
from cnnjax.padding import PaddingLike
from cnnjax.patches import shifted_slices

__all__ = ["conv_transpose", "convolve", "cross_correlate"]

_SPATIAL_LETTERS = {1: "W", 2: "HW", 3: "DHW"}


def dimension_numbers(num_spatial: int) -> lax.ConvDimensionNumbers:
  """lax dimension numbers for channels-last inputs and HWIO kernels."""
  letters = _SPATIAL_LETTERS[num_spatial]
  spec = (f"N{letters}C", f"{letters}IO", f"N{letters}C")
  return lax.conv_dimension_numbers(
      (1,) * (num_spatial + 2), (1,) * (num_spatial + 2), spec
  )


def compute_dtype(x: jax.Array, w: jax.Array, *, op: str, names=("x", "w")):
  """The dtype an op computes and returns in: the input's, if it is floating."""
  for name, a in zip(names, (x, w)):
    if not (jnp.issubdtype(a.dtype, jnp.floating) or jnp.issubdtype(a.dtype, jnp.integer)):
      raise TypeError(
          f"{op}: {name} has dtype {a.dtype}; expected a floating or integer dtype."
      )
  if jnp.issubdtype(x.dtype, jnp.floating):
    return x.dtype
  if jnp.issubdtype(w.dtype, jnp.floating):
    return w.dtype
  return jnp.promote_types(x.dtype, w.dtype)


def check_kernel(w: jax.Array, *, op: str, name: str = "w") -> int:
  """Checks a ``[*kernel_spatial, C_in // groups, C_out]`` kernel; returns its spatial rank."""
  num_spatial = w.ndim - 2
  if num_spatial not in (1, 2, 3):
    raise ValueError(
        f"{op}: {name} has shape {tuple(w.shape)} (rank {w.ndim}); expected rank 3, 4 "
        "or 5: [*kernel(d), C_in // groups, C_out] with d = 1, 2 or 3 spatial dims."
    )
  return num_spatial


def _check_groups(groups, c_in: int, w_in: int, c_out: int, *, op: str) -> None:
  if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
    raise ValueError(f"{op}: groups got {groups!r}; expected a positive int.")
  if c_out % groups:
    raise ValueError(
        f"{op}: the kernel's out_channels ({c_out}) is not divisible by groups "
        f"({groups}); expected out_channels to be a multiple of groups."
    )
  if c_in != w_in * groups:
    raise ValueError(
        f"{op}: channel mismatch: x has {c_in} channels but the kernel expects "
        f"in_channels // groups = {w_in} with groups={groups} (so {w_in * groups} "
        "channels); expected x.shape[-1] == w.shape[-2] * groups."
    )


def cross_correlate(
    x: ArrayLike,
    w: ArrayLike,
    *,
    stride: int | Sequence[int] = 1,
    padding: PaddingLike = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    strict: bool = False,
    precision: lax.PrecisionLike = None,
) -> jax.Array:
  """Cross-correlation, what deep-learning libraries call convolution.

  ``y[b, n, o] = Σ_k Σ_c w[k, c, o] · x̃[b, n·s + k·t, c]`` over the padded input
  ``x̃``, for each output position ``n`` (``s`` the stride, ``t`` the dilation).

  Args:
    x: input, ``[N, *spatial, C_in]`` with 1, 2 or 3 spatial dims.
    w: kernel, ``[*kernel_spatial, C_in // groups, C_out]``.
    stride: an int, or one int per spatial dim.
    padding: ``"VALID"``, ``"SAME"`` (output ``ceil(n / stride)``), ``"FULL"``
      (``r̂ − 1`` each side), an int, a tuple of ints or a tuple of ``(low, high)``.
    dilation: kernel dilation (à trous), effective size ``r̂ = r + (r − 1)(t − 1)``.
    groups: feature groups; ``C_in`` and ``C_out`` must be divisible by it.
    padding_mode: ``"zeros"``, ``"circular"``, ``"reflect"`` or ``"edge"``.
    strict: refuse a stride that drops trailing input positions silently.
    precision: passed to ``lax.conv_general_dilated``.

  Returns:
    ``[N, *out_spatial, C_out]`` with ``out = ⌊(n + lo + hi − r̂) / s⌋ + 1``, in the
    input's dtype.

  Example:
    >>> x = jnp.ones((1, 5, 5, 1)); w = jnp.ones((3, 3, 1, 1))
    >>> cross_correlate(x, w).shape
    (1, 3, 3, 1)
  """
  op = "cross_correlate"
  x, w = jnp.asarray(x), jnp.asarray(w)
  num_spatial = check_kernel(w, op=op)
  _padding.check_spatial_rank(x, num_spatial, name="x", op=op)
  _padding.check_padding_mode(padding_mode, op=op)
  _check_groups(groups, x.shape[-1], w.shape[-2], w.shape[-1], op=op)
  geo = _padding.conv_geometry(
      x.shape[1:-1], w.shape[:-2], stride=stride, padding=padding,
      dilation=dilation, strict=strict, op=op,
  )
  dtype = compute_dtype(x, w, op=op)
  x, w = x.astype(dtype), w.astype(dtype)
  pads = geo.pads
  if padding_mode != "zeros":
    x = _padding.pad_spatial(x, pads, padding_mode)
    pads = ((0, 0),) * num_spatial
  return _conv(
      x, w, stride=geo.stride, pads=pads, dilation=geo.dilation, groups=groups,
      precision=precision,
  )


def convolve(
    x: ArrayLike,
    w: ArrayLike,
    *,
    stride: int | Sequence[int] = 1,
    padding: PaddingLike = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    strict: bool = False,
    precision: lax.PrecisionLike = None,
) -> jax.Array:
  """True convolution: :func:`cross_correlate` with the kernel flipped in every spatial dim.

  ``y[b, n, o] = Σ_k Σ_c w[k, c, o] · x̃[b, n·s − k·t + (r̂ − 1), c]``; for one channel,
  stride 1 and ``padding="FULL"`` it equals ``scipy.signal.convolve(x, w, "full")``
  (``"VALID"`` gives scipy's ``"valid"``).

  Args and Returns: as :func:`cross_correlate`.

  Example:
    >>> x = jnp.arange(5.).reshape(1, 5, 1); w = jnp.array([1., 2.]).reshape(2, 1, 1)
    >>> convolve(x, w, padding="FULL")[0, :, 0]
    Array([0., 1., 4., 7., 10., 8.], dtype=float32)
  """
  w = jnp.asarray(w)
  num_spatial = check_kernel(w, op="convolve")
  w = jnp.flip(w, axis=tuple(range(num_spatial)))
  try:
    return cross_correlate(
        x, w, stride=stride, padding=padding, dilation=dilation, groups=groups,
        padding_mode=padding_mode, strict=strict, precision=precision,
    )
  except (ValueError, TypeError) as e:
    raise type(e)(str(e).replace("cross_correlate:", "convolve:", 1)) from None


def _transpose_kernel(w: jax.Array, groups: int) -> jax.Array:
  """``[*k, C_x // g, C_y]`` → spatially flipped ``[*k, C_y // g, C_x]`` per group."""
  num_spatial = w.ndim - 2
  *k, cxg, cy = w.shape
  w = jnp.flip(w, axis=tuple(range(num_spatial)))
  w = w.reshape(*k, cxg, groups, cy // groups)
  w = jnp.swapaxes(w, -1, -3)  # [*k, C_y // g, g, C_x // g]
  return w.reshape(*k, cy // groups, groups * cxg)


def conv_transpose(
    y: ArrayLike,
    w: ArrayLike,
    *,
    stride: int | Sequence[int] = 1,
    padding: PaddingLike = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    input_shape: Sequence[int] | None = None,
    precision: lax.PrecisionLike = None,
) -> jax.Array:
  """Transposed convolution: the adjoint of :func:`cross_correlate` with the same settings.

  The result is exactly ``vjp(x ↦ cross_correlate(x, w, same settings))(y)``, computed
  as one ``lax.conv_general_dilated`` with ``lhs_dilation=stride`` (the output is
  "fractionally strided").

  Args:
    y: ``[N, *out_spatial, C_y]``, shaped like the forward op's output.
    w: the forward kernel, ``[*kernel_spatial, C_x // groups, C_y]``.
    stride, padding, dilation, groups: the forward op's settings (``padding`` as in
      :func:`cross_correlate`, resolved against the forward input's size).
    input_shape: the forward input's spatial shape. With a stride several input sizes
      give the same output size; by default the smallest is taken
      (``(m − 1)·s + r̂ − lo − hi``), or ``m·s`` for ``"SAME"``.
    precision: passed to lax.

  Returns:
    ``[N, *input_shape, C_x]`` in ``y``'s dtype.

  Example:
    >>> y = jnp.ones((1, 3, 3, 2)); w = jnp.ones((3, 3, 4, 2))
    >>> conv_transpose(y, w, stride=2).shape
    (1, 7, 7, 4)
  """
  op = "conv_transpose"
  y, w = jnp.asarray(y), jnp.asarray(w)
  num_spatial = check_kernel(w, op=op)
  _padding.check_spatial_rank(y, num_spatial, name="y", op=op)
  if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
    raise ValueError(f"{op}: groups got {groups!r}; expected a positive int.")
  cxg, cy = w.shape[-2:]
  if y.shape[-1] != cy:
    raise ValueError(
        f"{op}: channel mismatch: y has {y.shape[-1]} channels but the kernel's "
        f"out_channels (w.shape[-1]) is {cy}; expected y.shape[-1] == w.shape[-1]."
    )
  if cy % groups:
    raise ValueError(
        f"{op}: the kernel's out_channels ({cy}) is not divisible by groups "
        f"({groups}); expected a multiple of groups."
    )
  out_spatial = tuple(y.shape[1:-1])
  stride_t = _padding.normalize_ints(stride, num_spatial, name="stride", op=op)
  dilation_t = _padding.normalize_ints(dilation, num_spatial, name="dilation", op=op)
  kernel_eff = tuple(
      _padding.effective_kernel_size(k, dilation=t)
      for k, t in zip(w.shape[:-2], dilation_t)
  )
  user_input_shape = input_shape is not None
  if input_shape is None:
    if isinstance(padding, str) and padding.upper() == "SAME":
      input_shape = tuple(m * s for m, s in zip(out_spatial, stride_t))
    else:
      probe = _padding.resolve_padding(
          padding, (0,) * num_spatial, kernel_eff, stride_t, op=op
      )
      input_shape = tuple(
          max((m - 1) * s + r - lo - hi, 1)
          for m, s, r, (lo, hi) in zip(out_spatial, stride_t, kernel_eff, probe)
      )
  input_shape = _padding.normalize_ints(
      tuple(input_shape), num_spatial, name="input_shape", op=op
  )
  geo = _padding.conv_geometry(
      input_shape, w.shape[:-2], stride=stride_t, padding=padding,
      dilation=dilation_t, op=op,
  )
  if geo.out_spatial != out_spatial and not user_input_shape:
    raise ValueError(
        f"{op}: no forward input size gives y's spatial shape {out_spatial} with "
        f"padding={padding!r}, stride={stride!r}, dilation={dilation!r} and kernel "
        f"{tuple(w.shape[:-2])}; expected y shaped like a forward output (or pass "
        "input_shape)."
    )
  if geo.out_spatial != out_spatial:
    raise ValueError(
        f"{op}: input_shape {input_shape} gives a forward output of spatial shape "
        f"{geo.out_spatial} with these settings, but y has spatial shape "
        f"{out_spatial}; expected an input_shape whose forward output matches y."
    )
  dtype = compute_dtype(y, w, op=op, names=("y", "w"))
  y, w = y.astype(dtype), w.astype(dtype)
  # The adjoint pads the dilated y by r̂ − 1 − lo below and r̂ − 1 − hi plus the
  # positions the forward stride dropped above (negative padding crops).
  pads = []
  for n, r, s, m, (lo, hi) in zip(input_shape, kernel_eff, stride_t, out_spatial, geo.pads):
    dropped = n + lo + hi - r - (m - 1) * s
    pads.append((r - 1 - lo, r - 1 - hi + dropped))
  spec = _AdjointSpec(
      stride=stride_t, dilation=dilation_t, groups=groups, precision=precision,
      forward_pads=geo.pads, adjoint_pads=tuple(pads), input_shape=input_shape,
  )
  return _adjoint_conv(y, w, spec)


# ------------------------------------------------------------------- lowerings
#
# The public ops validate and canonicalise; `_conv` computes. On GPU and TPU (every
# platform but CPU) it is one `lax.conv_general_dilated`. On XLA:CPU (jax 0.10.2,
# 2-core AVX-512 machine; benchmarks/ops.py, numbers in benchmarks/README.md) that one
# call leaves a lot on the table, and `lax.platform_dependent` picks `_cpu_conv`:
#   - the weight gradient slows down 2–4× per example once the batch passes ~16–32
#     images (3×3, 32×32×64: 51 ms CPU at batch 32, 437 ms at 128), so the batch is cut
#     into chunks of a few MB (`_batch_split_conv`): fwd+bwd 0.5–0.6× of one call;
#   - depthwise convolutions (groups == in_channels) run 8–25× faster forward as
#     shifted-slice multiply-adds (`_depthwise_conv`), and faster backward too;
#   - a 1×1 kernel is a matmul (`_im2col_conv` without a patch copy): 0.35× forward;
#   - bfloat16 with stride 1, no dilation and groups 1 is patch matmuls with custom VJPs
#     (`_bf16_patch_conv`, below) where the CPU has AMX / AVX512-BF16 for the bf16 dots.
# In float32, a patch-matrix (im2col) lowering for k > 1 was measured and loses: XLA:CPU's
# concatenate writes ~1 GB/s and fresh buffers page-fault, so building the patches costs
# 2.5–4× the convolution it replaces. `_im2col_conv` stays exact for every setting
# (tested) and is used where no patch is copied.
# These choices were measured with XLA:CPU's default YNNPACK convolutions, which run on
# one thread. cnnjax now turns those off at import (`_xla_flags`: Eigen's convolution, on
# all cores, 3–5× faster). Re-measured with Eigen (2026-11-26, batch 128; seed-cnn's and
# resnet20's layers, 3×3 32×32×64), the chunks take 1.1–1.5× one call's time forward and
# 0.87–1.07× forward+backward, and the seed-cnn train step is the same within noise
# either way, so the chunks stay.
# A jit for CPU compiles only the CPU branch; other platforms never see it. Every
# float32 branch is made of differentiable primitives, so forward and reverse mode,
# higher orders and vmap work as for lax; the bf16 patch path supports reverse mode (any
# order) and vmap.

# Batch chunking of the CPU lowering: chunks of at most this many bytes of input (or
# output) per chunk, at most _CPU_MAX_CHUNK examples, and at most _CPU_MAX_CHUNKS
# chunks (the chunks are unrolled in the program; a while loop would hide the
# convolutions from XLA:CPU's fast kernels, measured ~100× slower backward).
_CPU_CHUNK_BYTES = 4 * 2**20
_CPU_MAX_CHUNK = 32
_CPU_MAX_CHUNKS = 16


def _conv(
    x: jax.Array,
    w: jax.Array,
    *,
    stride: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    dilation: tuple[int, ...],
    groups: int,
    precision: lax.PrecisionLike,
    lhs_dilation: tuple[int, ...] | None = None,
) -> jax.Array:
  """``lax.conv_general_dilated`` (channels-last, HWIO) with a faster lowering on CPU.

  ``x`` and ``w`` are already validated and share a dtype; ``pads`` may be negative
  (cropping) and ``lhs_dilation`` (the transposed convolution's stride) may be set.
  """
  num_spatial = w.ndim - 2
  config = dict(
      stride=tuple(stride), pads=tuple(tuple(p) for p in pads), dilation=tuple(dilation),
      groups=groups, precision=precision,
      lhs_dilation=tuple(lhs_dilation or (1,) * num_spatial),
  )
  return lax.platform_dependent(
      x, w,
      cpu=lambda x, w: _cpu_conv(x, w, **config),
      default=lambda x, w: _lax_conv(x, w, **config),
  )


def _lax_conv(x, w, *, stride, pads, dilation, groups, precision, lhs_dilation):
  """The one-call lowering: ``lax.conv_general_dilated``."""
  return lax.conv_general_dilated(
      x, w,
      window_strides=stride,
      padding=pads,
      lhs_dilation=lhs_dilation,
      rhs_dilation=dilation,
      dimension_numbers=dimension_numbers(w.ndim - 2),
      feature_group_count=groups,
      precision=precision,
  )


def _cpu_conv(x, w, *, stride, pads, dilation, groups, precision, lhs_dilation):
  """The XLA:CPU lowering: picks the fastest measured form for the configuration."""
  config = dict(
      stride=stride, pads=pads, dilation=dilation, groups=groups, precision=precision,
      lhs_dilation=lhs_dilation,
  )
  if any(d != 1 for d in lhs_dilation):
    # conv_transpose's forward: one call measured fastest; its weight gradient is
    # taken care of by _adjoint_conv's custom JVP.
    dilated = [(size - 1) * ld + 1 for size, ld in zip(x.shape[1:-1], lhs_dilation)]
    kernel = [_padding.effective_kernel_size(k, dilation=t)
              for k, t in zip(w.shape[:-2], dilation)]
    if any(k > size for k, size in zip(kernel, dilated)):
      # XLA:CPU (jaxlib 0.10.2) aborts the process compiling an lhs-dilated convolution
      # whose window is larger than the dilated input in some dimension ("Window
      # dimensions do not match RHS shape", algebraic simplifier). Dilating and padding
      # with lax.pad first leaves it a plain convolution, which compiles.
      x = lax.optimization_barrier(lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), *(
          (lo, hi, ld - 1) for (lo, hi), ld in zip(pads, lhs_dilation)), (0, 0, 0)]))
      config.update(pads=tuple((0, 0) for _ in pads), lhs_dilation=(1,) * len(pads))
    return _lax_conv(x, w, **config)
  plain = all(lo >= 0 and hi >= 0 for lo, hi in pads)
  kernel_volume = math.prod(w.shape[:-2])
  if plain and groups == 1 and kernel_volume == 1:
    return _im2col_conv(
        x, w, stride=stride, pads=pads, dilation=dilation, groups=groups,
        precision=precision,
    )
  if plain and groups > 1 and groups == x.shape[-1] and w.shape[-2] == 1:
    return _depthwise_conv(x, w, stride=stride, pads=pads, dilation=dilation)
  if _bf16_patch_path(x, w, stride=stride, pads=pads, dilation=dilation, groups=groups):
    return _bf16_patch_conv(x, w, tuple(tuple(p) for p in pads))
  return _batch_split_conv(x, w, **config)


def _accumulation_dtype(dtype):
  """Accumulate half-precision floats in float32 (as XLA:CPU's convolution does)."""
  if jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32:
    return jnp.float32
  return dtype


def _geometry(x, w, *, stride, pads, dilation) -> _padding.Geometry:
  return _padding.conv_geometry(
      x.shape[1:-1], w.shape[:-2], stride=stride, padding=pads, dilation=dilation,
      op="cross_correlate",
  )


def _im2col_conv(x, w, *, stride, pads, dilation, groups=1, precision=None):
  """Patch-matmul lowering: the shifted slices side by side on the channel axis, one matmul.

  ``y = concat_k(x̃[n·s + k·t]) @ w.reshape(K·C_in, C_out)`` (per group a batched
  matmul). Exact for any stride, dilation, non-negative padding and groups; on
  XLA:CPU it is the fastest form only for 1×1 kernels, where there is no concatenate.
  """
  nd = w.ndim - 2
  geo = _geometry(x, w, stride=stride, pads=pads, dilation=dilation)
  acc = _accumulation_dtype(x.dtype)
  slices = shifted_slices(_padding.pad_spatial(x, geo.pads), geo)
  patches = slices[0] if len(slices) == 1 else jnp.concatenate(slices, axis=-1)
  kernel_volume, c_out = len(slices), w.shape[-1]
  if groups == 1:
    y = lax.dot_general(
        patches, w.reshape(-1, c_out), (((nd + 1,), (0,)), ((), ())),
        precision=precision, preferred_element_type=acc,
    )
    return y.astype(x.dtype)
  cg, og = w.shape[-2], c_out // groups
  patches = patches.reshape(*patches.shape[:-1], kernel_volume, groups, cg)
  wg = w.reshape(kernel_volume, cg, groups, og)
  # Contract (kernel offset, channel in group), batch over groups: [G, N, *out, O_g].
  y = lax.dot_general(
      patches, wg, (((nd + 1, nd + 3), (0, 1)), ((nd + 2,), (2,))),
      precision=precision, preferred_element_type=acc,
  )
  y = jnp.moveaxis(y, 0, -2)
  return y.reshape(*y.shape[:-2], c_out).astype(x.dtype)


# bfloat16 on XLA:CPU: patch matmuls. XLA:CPU runs a bf16 dot with float32 accumulation
# (AMX / AVX512-BF16) several times faster than its bf16 or float32 convolution, but it
# carries out bf16 data movement (pad, slice, concatenate) through float32 copies: the
# patch matrix is therefore built from the bits as uint16, at integer-copy speed. The
# forward pass and both gradients are such patch matmuls:
#   y  = P(x) @ w                       (P: the kernel offsets' shifted slices, side by side)
#   dx = P'(g) @ flip(w)ᵀ               (stride 1: a correlation of g, padded k − 1 − pad;
#                                        lax's convolution where C_in < C_out)
#   dw = P(x)ᵀ @ g                      (contracting batch and space; Pᵀ built channel-major)
# Each is a custom-VJP function whose backward pass is made of the same functions (and
# lax's convolution), so reverse mode works to any order; forward mode (jvp) is not
# defined for this path.
# Batch chunks bound the patch matrix (and let XLA reuse its buffer).
_BF16_CHUNK_BYTES = 16 * 2**20  # patch-matrix bytes per batch chunk


@functools.lru_cache(maxsize=None)
def _cpu_has_bf16_matmul() -> bool:
  """Whether this host's CPU has bf16 matmul units (AMX-BF16 or AVX512-BF16; read from
  Linux's ``/proc/cpuinfo``, False elsewhere). Without them XLA:CPU emulates bf16 dots
  and the patch matrix costs more than it saves (see the float32 measurements above)."""
  try:
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
      words = set(f.read().split())
  except OSError:
    return False
  return bool(words & {"amx_bf16", "avx512_bf16"})


def _bf16_patch_path(x, w, *, stride, pads, dilation, groups) -> bool:
  """Whether ``_cpu_conv`` uses the bf16 patch-matmul lowering for this configuration."""
  kernel = w.shape[:-2]
  return (
      x.dtype == jnp.bfloat16 and _cpu_has_bf16_matmul()
      and groups == 1 and math.prod(kernel) > 1
      and all(s == 1 for s in stride) and all(d == 1 for d in dilation)
      and all(0 <= lo < k and 0 <= hi < k for (lo, hi), k in zip(pads, kernel))
  )


def _bf16_chunk_bounds(x_shape, kernel) -> list[tuple[int, int]]:
  n = x_shape[0]
  per_example = 2 * math.prod(x_shape[1:]) * math.prod(kernel)
  chunk = max(1, _BF16_CHUNK_BYTES // max(per_example, 1))
  num = max(1, min(-(-n // chunk), _CPU_MAX_CHUNKS))  # one (empty) chunk for n == 0
  bounds = [round(i * n / num) for i in range(num + 1)]
  return list(zip(bounds[:-1], bounds[1:]))


def _bf16_patch_chunks(x, kernel, pads):
  """``(lo, hi, patches)`` per batch chunk: bf16 ``[hi − lo, *out, K·C]``."""
  nd = len(kernel)
  geo = _padding.conv_geometry(
      x.shape[1:-1], kernel, stride=(1,) * nd, padding=pads, dilation=(1,) * nd,
      op="cross_correlate",
  )
  bits = lax.bitcast_convert_type(x, jnp.uint16)
  for lo, hi in _bf16_chunk_bounds(x.shape, kernel):
    chunk = _padding.pad_spatial(lax.slice_in_dim(bits, lo, hi, axis=0), geo.pads)
    slices = shifted_slices(chunk, geo)
    patches = slices[0] if len(slices) == 1 else jnp.concatenate(slices, axis=-1)
    yield lo, hi, lax.bitcast_convert_type(patches, jnp.bfloat16)


def _back_pads(kernel, pads):
  return tuple((k - 1 - lo, k - 1 - hi) for (lo, hi), k in zip(pads, kernel))


def _back_kernel(w):
  """The kernel of the input gradient: flipped in space, in/out channels swapped."""
  return jnp.swapaxes(jnp.flip(w, tuple(range(w.ndim - 2))), -1, -2)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _bf16_patch_conv(x, w, pads):
  """Stride-1 ``cross_correlate`` of bf16 ``x [N, *S, C]`` and ``w [*K, C, O]``, zero pads
  ``0 <= pad < K``, as chunked patch matmuls with float32 accumulation."""
  nd = w.ndim - 2
  wm = w.reshape(-1, w.shape[-1])
  ys = [
      lax.dot_general(p, wm, (((nd + 1,), (0,)), ((), ())),
                      preferred_element_type=jnp.float32).astype(x.dtype)
      for _, _, p in _bf16_patch_chunks(x, w.shape[:-2], pads)
  ]
  return ys[0] if len(ys) == 1 else jnp.concatenate(ys, axis=0)


def _bf16_transposed_patches(x_bits, kernel, pads):
  """uint16 ``[n, *S, C]`` → the patch matrix transposed, ``[K·C, n·prod(S')]``.

  Built channel-major (one transpose of ``x``, then slices stacked along the major
  axis), so that ``P(x)ᵀ @ g`` is a plain row-major matmul: XLA:CPU runs the same
  contraction written against ``P(x)`` (contracting its major axis) 2–5× slower.
  """
  nd = len(kernel)
  xt = jnp.moveaxis(x_bits, -1, 0)  # [C, n, *S]
  xt = jnp.pad(xt, ((0, 0), (0, 0), *pads))
  out = [size - k + 1 for size, k in zip(xt.shape[2:], kernel)]
  slices = [
      lax.slice(xt, (0, 0, *offset), (*xt.shape[:2], *(o + m for o, m in zip(offset, out))))
      for offset in itertools.product(*(range(k) for k in kernel))
  ]
  return jnp.concatenate(slices, axis=0).reshape(len(slices) * x_bits.shape[-1], -1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _bf16_weight_grad(x, g, pads, kernel):
  """``∂⟨_bf16_patch_conv(x, w, pads), g⟩ / ∂w = P(x)ᵀ g``: ``[*kernel, C, O]`` in bf16."""
  bits = lax.bitcast_convert_type(x, jnp.uint16)
  dw = None
  for lo, hi in _bf16_chunk_bounds(x.shape, kernel):
    pt = _bf16_transposed_patches(lax.slice_in_dim(bits, lo, hi, axis=0), kernel, pads)
    part = lax.dot(
        lax.bitcast_convert_type(pt, jnp.bfloat16),
        lax.slice_in_dim(g, lo, hi, axis=0).reshape(-1, g.shape[-1]),
        preferred_element_type=jnp.float32,
    )
    dw = part if dw is None else dw + part
  return dw.reshape(*kernel, x.shape[-1], g.shape[-1]).astype(x.dtype)


def _bf16_patch_conv_fwd(x, w, pads):
  return _bf16_patch_conv(x, w, pads), (x, w)


def _bf16_input_grad(g, w, pads):
  """``∂⟨_bf16_patch_conv(x, w, pads), g⟩ / ∂x``: ``g`` correlated with the back kernel.

  As patch matmuls when ``C_in >= C_out``; else the patch matrix of ``g`` (``K·C_out``
  wide) is large for a narrow result, and lax's convolution was measured faster (3×3,
  31×31, 24 ← 64 channels, batch 1024: 334 vs 703 ms).
  """
  nd = w.ndim - 2
  back_w, back_pads = _back_kernel(w), _back_pads(w.shape[:-2], pads)
  if w.shape[-2] >= w.shape[-1]:
    return _bf16_patch_conv(g, back_w, back_pads)
  ones = (1,) * nd
  return _batch_split_conv(g, back_w, stride=ones, pads=back_pads, dilation=ones, groups=1,
                           precision=None, lhs_dilation=ones)


def _bf16_patch_conv_bwd(pads, res, g):
  x, w = res
  g = g.astype(x.dtype)
  return _bf16_input_grad(g, w, pads), _bf16_weight_grad(x, g, pads, w.shape[:-2])


def _bf16_weight_grad_fwd(x, g, pads, kernel):
  return _bf16_weight_grad(x, g, pads, kernel), (x, g)


def _bf16_weight_grad_bwd(pads, kernel, res, v):
  # ⟨P(x)ᵀ g, v⟩ = ⟨g, conv(x, v)⟩ = ⟨x, conv(g, flip(v)ᵀ, back pads)⟩.
  x, g = res
  v = v.astype(x.dtype)
  return _bf16_input_grad(g, v, pads), _bf16_patch_conv(x, v, pads)


_bf16_patch_conv.defvjp(_bf16_patch_conv_fwd, _bf16_patch_conv_bwd)
_bf16_weight_grad.defvjp(_bf16_weight_grad_fwd, _bf16_weight_grad_bwd)


def _depthwise_conv(x, w, *, stride, pads, dilation):
  """Depthwise lowering (groups == C_in): ``Σ_k x̃[n·s + k·t] · w[k]``, elementwise.

  ``w`` is ``[*k, 1, C_in·m]``; output channel ``c·m + j`` reads input channel ``c``
  (lax's group order). XLA fuses the whole sum into one loop.
  """
  nd = w.ndim - 2
  geo = _geometry(x, w, stride=stride, pads=pads, dilation=dilation)
  acc = _accumulation_dtype(x.dtype)
  c_in, c_out = x.shape[-1], w.shape[-1]
  mult = c_out // c_in
  wk = w.reshape(-1, c_in, mult).astype(acc)
  y = None
  for s, wi in zip(shifted_slices(_padding.pad_spatial(x, geo.pads), geo), wk):
    term = s.astype(acc)[..., None] * wi.reshape((1,) * (nd + 1) + (c_in, mult))
    y = term if y is None else y + term
  return y.reshape(*y.shape[:-2], c_out).astype(x.dtype)


def _batch_split_conv(x, w, *, stride, pads, dilation, groups, precision, lhs_dilation):
  """``lax.conv_general_dilated`` on batch chunks, concatenated.

  XLA:CPU's weight gradient is several times faster per example on chunks of a few MB
  than on the whole batch; the forward pass is unchanged within noise.
  """
  n = x.shape[0]
  out_spatial = [
      ((size - 1) * ld + 1 + lo + hi - _padding.effective_kernel_size(k, dilation=t)) // s + 1
      for size, ld, (lo, hi), k, t, s in zip(
          x.shape[1:-1], lhs_dilation, pads, w.shape[:-2], dilation, stride
      )
  ]
  per_example = x.dtype.itemsize * max(
      math.prod(x.shape[1:]), math.prod(out_spatial) * w.shape[-1]
  )
  chunk = max(1, min(_CPU_MAX_CHUNK, _CPU_CHUNK_BYTES // max(per_example, 1)))
  num_chunks = min(-(-n // chunk), _CPU_MAX_CHUNKS)
  config = dict(
      stride=stride, pads=pads, dilation=dilation, groups=groups, precision=precision,
      lhs_dilation=lhs_dilation,
  )
  if num_chunks <= 1:
    return _lax_conv(x, w, **config)
  bounds = [round(i * n / num_chunks) for i in range(num_chunks + 1)]
  return jnp.concatenate(
      [
          _lax_conv(lax.slice_in_dim(x, lo, hi, axis=0), w, **config)
          for lo, hi in zip(bounds[:-1], bounds[1:])
      ],
      axis=0,
  )


# ---------------------------------------------------- the transposed convolution
#
# conv_transpose is one lhs-dilated convolution. Differentiated by JAX's own rules, its
# weight gradient is an lhs-dilated "window" convolution that XLA:CPU runs ~20–60×
# slower than the forward (measured: 406 ms vs 20 ms CPU, stride 2, 16×16×64 → 32×32,
# batch 32). The custom JVP below gives the same derivative, written so that reverse
# mode transposes it into the weight gradient of the *forward* strided convolution
# (<conv_transpose(y, ẇ), g> = <y, cross_correlate(g, ẇ)>), which XLA runs fast on
# every platform. Forward mode, reverse mode and higher orders all work.


class _AdjointSpec(NamedTuple):
  stride: tuple[int, ...]
  dilation: tuple[int, ...]
  groups: int
  precision: Any
  forward_pads: tuple[tuple[int, int], ...]
  adjoint_pads: tuple[tuple[int, int], ...]
  input_shape: tuple[int, ...]


def _adjoint_conv_impl(y, w, spec: _AdjointSpec):
  """vjp of ``x ↦ cross_correlate(x, w)`` at ``y``: one lhs-dilated convolution."""
  return _conv(
      y, _transpose_kernel(w, spec.groups), stride=(1,) * len(spec.stride),
      pads=spec.adjoint_pads, lhs_dilation=spec.stride, dilation=spec.dilation,
      groups=spec.groups, precision=spec.precision,
  )


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _adjoint_conv(y, w, spec: _AdjointSpec):
  return _adjoint_conv_impl(y, w, spec)


def _adjoint_conv_jvp(spec: _AdjointSpec, primals, tangents):
  y, w = primals
  y_dot, w_dot = tangents
  out = _adjoint_conv_impl(y, w, spec)
  terms = []
  if not isinstance(y_dot, jax.custom_derivatives.SymbolicZero):
    terms.append(_adjoint_conv_impl(y_dot, w, spec))
  if not isinstance(w_dot, jax.custom_derivatives.SymbolicZero):
    x_shape = (y.shape[0], *spec.input_shape, w.shape[-2] * spec.groups)
    x_struct = jax.ShapeDtypeStruct(x_shape, y.dtype)

    def forward_weight_grad(g):  # g ↦ ∂_w <y, cross_correlate(g, w)>, linear in g
      forward = lambda w_: _conv(
          g, w_, stride=spec.stride, pads=spec.forward_pads, dilation=spec.dilation,
          groups=spec.groups, precision=spec.precision,
      )
      return jax.vjp(forward, w)[1](y)[0]

    (term,) = jax.linear_transpose(forward_weight_grad, x_struct)(w_dot)
    terms.append(term)
  if not terms:
    return out, jnp.zeros_like(out)
  return out, functools.reduce(jnp.add, terms)


_adjoint_conv.defjvp(_adjoint_conv_jvp, symbolic_zeros=True)
