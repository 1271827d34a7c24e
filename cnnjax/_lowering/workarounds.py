"""The XLA defects cnnjax works around, each with its upstream report and its canary.

Each canary (``tests/_lowering/test_lowering_workarounds.py``) runs the defect's reproducer
on the installed jaxlib and fails once the defect is gone, saying that its workaround can go.

1. **Negative convolution padding** (openxla/xla#48713, found by cnnjax's issue 18):
   XLA:CPU's float32 convolution (Eigen's spatial convolution) with a negative low and a
   positive high padding reads outside its input, so positions that should be padding
   hold data of the next row or uninitialised memory (``tiled_conv`` returned ~1e15).
   Workaround: :func:`negative_padding` convolutions are cropped by ``lax.pad`` first
   (:func:`cnnjax._lowering.portable.lax_conv`, on every platform). jaxlib 0.12.1
   computes the reproducer right (:data:`NEGATIVE_PADDING_FIXED_IN`); the crop, right
   everywhere, goes once the project's floor reaches it.
2. **A compile abort on some strided input gradients** (not reported upstream; the
   report, as it would be filed): "XLA:CPU aborts the process with 'Window dimensions
   do not match RHS shape' compiling ``jax.grad`` of
   ``lax.conv_general_dilated(x, ones((2, 3, 1, 1)), (2, 1), ((1, 1), (0, 0)))`` for
   ``x`` of shape ``(1, 4, 4, 1)`` (NHWC/HWIO). The algebraic simplifier swaps the
   operands of the input gradient's convolution (its kernel is larger than its input)
   and keeps a dimension it takes for a feature-group one whose size is not the
   window's, so the swapped convolution's shapes disagree (a failed check, jaxlib
   0.10.2)." Workaround: :func:`aborts` names such convolutions, and
   :func:`cnnjax._lowering.cpu.conv` applies their padding and input dilation by
   ``lax.pad`` behind a barrier first. XLA:GPU's pipelines turn this swap off.
"""

from __future__ import annotations

from cnnjax import padding as _padding
from cnnjax._lowering.config import ConvConfig

__all__ = ["NEGATIVE_PADDING_FIXED_IN", "aborts", "negative_padding"]

# The first jaxlib seen to compute defect 1's reproducer right (0.10.2 does not).
NEGATIVE_PADDING_FIXED_IN = (0, 12, 1)


def negative_padding(cfg: ConvConfig) -> bool:
  """Whether ``cfg`` crops (a negative padding): defect 1, handed to lax cropped."""
  return any(lo < 0 or hi < 0 for lo, hi in cfg.pads)


def aborts(x_shape, w_shape, cfg: ConvConfig) -> bool:
  """Whether XLA:CPU aborts compiling this convolution or its input gradient (defect 2).

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
  for n, r, s, t, d, (lo, hi) in zip(
      x_shape[1:-1],
      w_shape[:-2],
      cfg.stride,
      cfg.dilation,
      cfg.lhs_dilation,
      cfg.pads,
      strict=True,
  ):
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
      k and dim[0] != dim[1] for k, dim in zip(kept_dims, dims, strict=True)
  )
