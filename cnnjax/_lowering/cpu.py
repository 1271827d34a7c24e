"""XLA:CPU forms of the convolution, chosen per configuration by measurement.

The portable form (one ``lax.conv_general_dilated``) leaves speed on the table on
XLA:CPU in a few configurations; :func:`conv` picks:

- **depthwise** (``groups == C_in``, one input channel per group): ``Σ_k x̃[n·s + k·t] ·
  w[k]``, one fused elementwise loop (:func:`depthwise_conv`);
- **1×1 kernels** (groups 1): a matmul (:func:`cnnjax._lowering.portable.patch_conv`
  with one slice, no patch copy);
- **bfloat16, stride 1, no dilation, groups 1**, where asked
  (``cnnjax.cpu_forms(bf16_matmul=True)``; :func:`cnnjax.configure_cpu` asks on CPUs
  with AMX-BF16 or AVX512-BF16): patch matmuls (:mod:`cnnjax._lowering.cpu_bf16`);
- **float32/float64, 2-D**: the row-stacked input gradient and the stored, chunked
  weight gradient of :mod:`cnnjax._lowering.cpu_rows`, where its :func:`plan
  <cnnjax._lowering.cpu_rows.plan>` measured a gain;
- everything else: the portable form.

Each form computes the products lax computes (no zero taps: NaN and ±inf land where
lax's do). ``benchmarks/ops.py`` and ``benchmarks/cpu_layers.py`` re-measure the choices
(figures, and the forms removed when they stopped paying, in ``benchmarks/README.md``);
``cnnjax.cpu_forms(enabled=False)`` turns them all off. XLA:CPU's defects are worked around with
the forms on or off (:mod:`cnnjax._lowering.workarounds`).
"""

from __future__ import annotations

import math
from typing import cast

import jax

from cnnjax import _checks
from cnnjax import padding as _padding
from cnnjax._lowering import cpu_bf16, cpu_rows, forms
from cnnjax._lowering.config import ConvConfig
from cnnjax._lowering.cpu_barrier import linear_barrier
from cnnjax._lowering.portable import lax_conv, materialize, patch_conv, result_dtype
from cnnjax._lowering.workarounds import aborts
from cnnjax.patches import shifted_slices

__all__ = ["conv", "depthwise_conv"]


def conv(x: jax.Array, w: jax.Array, cfg: ConvConfig, *, linear: str | None = None) -> jax.Array:
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


def depthwise_conv(x: jax.Array, w: jax.Array, cfg: ConvConfig) -> jax.Array:
  """Depthwise convolution (groups == C_in): ``Σ_k x̃[n·s + k·t] · w[k]``, elementwise.

  ``w`` is ``[*k, 1, C_in·m]``; output channel ``c·m + j`` reads input channel ``c``
  (lax's group order). XLA fuses the whole sum into one loop.
  """
  nd = w.ndim - 2
  geo = _padding.conv_geometry(
      x.shape[1:-1],
      w.shape[:-2],
      stride=cfg.stride,
      padding=cfg.pads,
      dilation=cfg.dilation,
      op="depthwise_conv",
  )
  out_dtype = result_dtype(x, cfg)
  acc = _checks.accumulation_dtype(out_dtype, x.dtype)
  c_in, c_out = x.shape[-1], w.shape[-1]
  mult = c_out // c_in
  wk = w.reshape(-1, c_in, mult).astype(acc)
  y = None
  for s, wi in zip(shifted_slices(_padding.pad_spatial(x, geo.pads), geo), wk, strict=True):
    term = s.astype(acc)[..., None] * wi.reshape((1,) * (nd + 1) + (c_in, mult))
    y = term if y is None else y + term
  y = cast(jax.Array, y)  # (the kernel has at least one position)
  return y.reshape(*y.shape[:-2], c_out).astype(out_dtype)
