"""XLA:CPU forms of the convolution, chosen by measurement (jaxlib 0.10.2).

The portable form (one ``lax.conv_general_dilated``) leaves speed on the table on
XLA:CPU in a few configurations; :func:`conv` picks, per configuration:

- **depthwise** (``groups == C_in``, one input channel per group): ``Σ_k x̃[n·s + k·t] ·
  w[k]``, one fused elementwise loop (:func:`depthwise_conv`);
- **1×1 kernels** (groups 1): a matmul (:func:`cnnjax._lowering.portable.patch_conv`
  with a single slice, so no patch copy);
- **bfloat16, stride 1, no dilation, groups 1** on CPUs with AMX-BF16 or AVX512-BF16:
  patch matmuls with custom VJPs (:mod:`cnnjax._lowering.cpu_bf16`);
- **float32/float64, 2-D, no dilation, groups 1**, where
  :func:`cnnjax._lowering.cpu_rows.plan` measured a gain: a custom JVP
  (:mod:`cnnjax._lowering.cpu_rows`) whose input gradient is row-stacked, without most
  of the FULL-padded zeros (stride 1, kernels of 3 or more rows with less height
  padding than SAME, or at most 4 input channels), and whose weight gradient reads the stored input (:mod:`cnnjax._lowering.cpu_barrier`: no
  producer recomputed inside its transposes) and is computed in batch chunks (3×3
  kernels, 16 or more input channels);
- everything else: the portable form.

Each choice is re-measured by ``benchmarks/ops.py`` (its ``conv1x1``, ``depthwise`` and
``conv3x3_bf16*`` cases time these forms against lax's one call) and
``benchmarks/cpu_layers.py --forms`` and ``--steps`` (these forms, per layer and in whole
train steps; ``benchmarks/README.md``
holds the figures, including those of the forms removed when they stopped paying: the batch
chunks of every convolution, 2026-11-30). ``CNNJAX_CPU_LOWERING=0`` turns every CPU form
off (the portable form everywhere), for comparison and as an opt-out.

Two XLA:CPU defects are worked around here, with the CPU forms on or off. It aborts the
process compiling some convolutions, and jax's input gradients of some strided ones
(:func:`aborts` says which; "Window dimensions do not match RHS shape"): their padding
and input dilation are applied by ``lax.pad`` first, behind a
:func:`cnnjax._lowering.cpu_barrier.linear_barrier` in both directions so that XLA folds
neither the pad nor its transpose (a crop) back into a convolution. And negative
padding is never handed to it (:func:`cnnjax._lowering.portable.lax_conv`).
"""

from __future__ import annotations

import math

import jax

from cnnjax import _checks
from cnnjax import padding as _padding
from cnnjax._lowering import cpu_bf16, cpu_rows, forms
from cnnjax._lowering.cpu_barrier import linear_barrier
from cnnjax._lowering.config import ConvConfig
from cnnjax._lowering.portable import lax_conv, materialize, patch_conv, result_dtype
from cnnjax.patches import shifted_slices

__all__ = ["aborts", "conv", "depthwise_conv"]


def conv(x: jax.Array, w: jax.Array, cfg: ConvConfig, *, linear: str | None = None
         ) -> jax.Array:
  """The XLA:CPU lowering: the fastest measured form for the configuration.

  Args:
    x, w: the operands, one floating or complex dtype.
    cfg: the convolution.
    linear: ``"x"`` or ``"w"``: the result will be linearly transposed with respect to
      that operand (inside a custom JVP), so forms with custom derivatives (the bf16
      patch path, the ``cpu_rows`` forms) are not used, and the barrier's predicate
      reads the other operand.
  """
  if aborts(x.shape, w.shape, cfg):
    x, cfg = materialize(x, cfg)  # behind a barrier: XLA would fold the lax.pad back in
    return lax_conv(linear_barrier(x, x if linear == "w" else w), w, cfg)
  if not forms.current().enabled or not cfg.plain:
    return lax_conv(x, w, cfg)
  if cfg.groups == 1 and math.prod(w.shape[:-2]) == 1:
    return patch_conv(x, w, cfg)
  if cfg.groups > 1 and cfg.groups == x.shape[-1] and w.shape[-2] == 1:
    return depthwise_conv(x, w, cfg)
  if linear is None and cpu_bf16.applies(x, w, cfg):
    return cpu_bf16.patch_conv(x, w, cfg.pads)
  if linear is None and cpu_rows.applies(x, w, cfg):
    how = cpu_rows.plan(x.shape, w.shape, cfg)
    if not how.trivial:
      return cpu_rows.conv(x, w, cfg, how)
  return lax_conv(x, w, cfg)


def aborts(x_shape, w_shape, cfg: ConvConfig) -> bool:
  """Whether XLA:CPU (jaxlib 0.10.2) aborts compiling this convolution or its input gradient.

  Its algebraic simplifier swaps a convolution's operands when the kernel is the larger
  one, and keeps as they were the spatial dimensions it takes for feature-group ones
  (window size ``r`` equal to the input dilation, stride ``r − 1``, no padding, no
  kernel dilation) or for contractions (window = input, stride 1, nothing else). Where
  the input's size in a kept group dimension is not ``r``, the swapped convolution's
  shapes disagree and the process aborts (a failed check, not an error). Such a
  dimension beside one that is not kept is taken here as the defect, whether or not the
  swap pays (which also needs the kernel larger than the input there): on the
  convolution itself, and on the one jax's transpose rule builds for the input gradient
  (over the output, input dilation = the stride, padding ``r̂ − 1 − lo`` below). E.g. a
  2×2 kernel with stride 2 and padding ``(1, 1)`` over 4 rows, beside a 3-wide kernel
  over 4 columns: the gradient's convolution has window 2, input dilation 2, stride 1
  and no padding over 3 rows. (XLA:GPU's pipelines turn this swap off, so only the CPU
  lowering asks.)
  """
  forward, gradient = [], []
  for n, r, s, t, d, (lo, hi) in zip(x_shape[1:-1], w_shape[:-2], cfg.stride, cfg.dilation,
                                     cfg.lhs_dilation, cfg.pads):
    dilated, window = (n - 1) * d + 1, _padding.effective_kernel_size(r, dilation=t)
    m = (dilated + lo + hi - window) // s + 1  # the output's size
    before = window - 1 - lo
    after = dilated + window - 1 - ((m - 1) * s + 1) - before
    forward.append((n, r, d, t, s, lo, hi))
    gradient.append((m, r, s, t, d, before, after))
  return _mishandled(forward) or _mishandled(gradient)


def _mishandled(dims) -> bool:
  """``dims``: (size, window, input dilation, window dilation, stride, low, high) each."""
  def kept(size, window, base, window_dilation, stride, lo, hi):
    group = window == base == stride + 1
    contraction = window == size and base == stride == 1
    return (group or contraction) and window_dilation == 1 and lo == hi == 0

  kept_dims = [kept(*dim) for dim in dims]
  return not all(kept_dims) and any(
      k and dim[0] != dim[1] for k, dim in zip(kept_dims, dims))


def depthwise_conv(x: jax.Array, w: jax.Array, cfg: ConvConfig) -> jax.Array:
  """Depthwise convolution (groups == C_in): ``Σ_k x̃[n·s + k·t] · w[k]``, elementwise.

  ``w`` is ``[*k, 1, C_in·m]``; output channel ``c·m + j`` reads input channel ``c``
  (lax's group order). XLA fuses the whole sum into one loop.
  """
  nd = w.ndim - 2
  geo = _padding.conv_geometry(
      x.shape[1:-1], w.shape[:-2], stride=cfg.stride, padding=cfg.pads,
      dilation=cfg.dilation, op="depthwise_conv",
  )
  out_dtype = result_dtype(x, cfg)
  acc = _checks.accumulation_dtype(out_dtype, x.dtype)
  c_in, c_out = x.shape[-1], w.shape[-1]
  mult = c_out // c_in
  wk = w.reshape(-1, c_in, mult).astype(acc)
  y = None
  for s, wi in zip(shifted_slices(_padding.pad_spatial(x, geo.pads), geo), wk):
    term = s.astype(acc)[..., None] * wi.reshape((1,) * (nd + 1) + (c_in, mult))
    y = term if y is None else y + term
  return y.reshape(*y.shape[:-2], c_out).astype(out_dtype)
