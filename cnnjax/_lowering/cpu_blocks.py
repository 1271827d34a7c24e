"""The space-to-depth ("blocks") form of a narrow-input convolution on XLA:CPU.

A network's first layer has 1–4 input channels (RGB images: 3), and Eigen's convolution
(XLA:CPU with cnnjax's XLA flag) runs it far below its speed on wider layers: seed-cnn's
conv1 (5×5, 3 → 32 on 32×32) at about 47 GFLOP/s. Cutting the padded input into 2×2
blocks and stacking each block into the channels gives the same convolution with four
times the input channels and half the size:

  X̂[n, I, J, (R, S, c)] = x̃[n, 2I + R, 2J + S, c]                  (R, S ∈ {0, 1})
  ŷ = conv_{P×Q}(X̂, ŵ),   ŵ[I, J, (R, S, c), (r, s, o)] = w[2I + R − r, 2J + S − s, c, o]
  y[n, 2p + r, 2q + s, o] = ŷ[n, p, q, (r, s, o)]

with ``P = ⌊k_h/2⌋ + 1`` block rows (``ŵ`` is zero where ``2I + R − r`` falls outside
``[0, k_h)``). Each output is the same sum of products as the direct convolution, in
another order: exact up to float rounding. The block kernel multiplies
``(2P·2Q)/(k_h·k_w)`` times the direct convolution's FLOPs (1.44× for 5×5, 1.78× for
3×3), which Eigen's wider convolution more than repays at 1–4 channels and not beyond.

Measured (``benchmarks/cpu_layers.py --forms``, batch 128, float32, 2-core CPU, jaxlib
0.10.2, forward, ratio to lax's convolution in the same alternating rounds): seed-cnn conv1
(5×5 VALID, 3 → 32) 0.82×, resnet20's first layer (3×3 SAME, 3 → 16) 0.45×; with 8 input
channels (3×3 SAME, 8 → 16, 32×32) 1.14×, 16 → 16 1.69×, seed-cnn conv2 (5×5, 32 → 64)
1.53×. :func:`cnnjax._lowering.cpu_rows.plan` takes it for the forward pass of layers
with at most ``NARROW_C_IN`` (4) input channels and kernels of 3×3 or more.

Only 2-D, stride 1, no dilation, groups 1 and non-negative padding; the caller checks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from cnnjax._lowering.config import ConvConfig
from cnnjax._lowering.portable import lax_conv

__all__ = ["blocks_conv", "blocks_kernel"]

BLOCK = 2  # 2×2 blocks: 4× the input channels


def _block_taps(k: int) -> int:
  """Block rows (or columns) of the block kernel for a kernel of ``k`` rows."""
  return k // BLOCK + 1


def blocks_kernel(w: jax.Array) -> jax.Array:
  """``ŵ``: the ``[P, Q, 4·C_in, 4·C_out]`` block kernel of ``w`` ``[k_h, k_w, C_in, C_out]``.

  Input channel ``(R, S, c)`` and output channel ``(r, s, o)``, row-major, as
  :func:`blocks_conv` stacks them.
  """
  kh, kw, c_in, c_out = w.shape
  p, q = _block_taps(kh), _block_taps(kw)
  phases = []
  for r in range(BLOCK):
    for s in range(BLOCK):
      # Shifted by the output phase (r, s), then cut into blocks: [P, R, Q, S, c, o].
      shifted = jnp.pad(w, ((r, BLOCK * p - kh - r), (s, BLOCK * q - kw - s), (0, 0), (0, 0)))
      shifted = shifted.reshape(p, BLOCK, q, BLOCK, c_in, c_out).transpose(0, 2, 1, 3, 4, 5)
      phases.append(shifted.reshape(p, q, BLOCK * BLOCK * c_in, c_out))
  return jnp.stack(phases, axis=3).reshape(p, q, BLOCK * BLOCK * c_in, BLOCK * BLOCK * c_out)


def blocks_conv(x: jax.Array, w: jax.Array, cfg: ConvConfig) -> jax.Array:
  """The convolution ``cfg`` of ``x`` ``[N, H, W, C_in]`` and ``w`` ``[k_h, k_w, C_in,
  C_out]`` computed over 2×2 blocks; returns ``[N, H_out, W_out, C_out]`` as
  ``lax_conv(x, w, cfg)`` does (2-D, stride 1, no dilation, groups 1)."""
  kh, kw, _, c_out = w.shape
  n, c_in = x.shape[0], x.shape[-1]
  (top, bottom), (left, right) = cfg.pads
  out_h = x.shape[1] + top + bottom - kh + 1
  out_w = x.shape[2] + left + right - kw + 1
  blocks_h = -(-out_h // BLOCK) + _block_taps(kh) - 1  # input blocks the output reads
  blocks_w = -(-out_w // BLOCK) + _block_taps(kw) - 1
  # The layer's padding, then zeros up to whole blocks (never fewer rows than x has:
  # BLOCK·blocks_h ≥ out_h + k_h - 1 = the padded height).
  extra_h = BLOCK * blocks_h - (x.shape[1] + top + bottom)
  extra_w = BLOCK * blocks_w - (x.shape[2] + left + right)
  x = lax.pad(x, jnp.zeros((), x.dtype),
              ((0, 0, 0), (top, bottom + extra_h, 0), (left, right + extra_w, 0), (0, 0, 0)))
  x = x.reshape(n, blocks_h, BLOCK, blocks_w, BLOCK, c_in).transpose(0, 1, 3, 2, 4, 5)
  x = x.reshape(n, blocks_h, blocks_w, BLOCK * BLOCK * c_in)
  y = lax_conv(x, blocks_kernel(w), cfg._replace(pads=((0, 0), (0, 0))))
  y_h, y_w = y.shape[1], y.shape[2]
  y = y.reshape(n, y_h, y_w, BLOCK, BLOCK, c_out).transpose(0, 1, 3, 2, 4, 5)
  y = y.reshape(n, BLOCK * y_h, BLOCK * y_w, c_out)
  return y[:, :out_h, :out_w]
