"""Float convolutions on XLA:CPU with row-stacked forms and chunked weight gradients.

XLA:CPU (Eigen's convolution, with cnnjax's XLA flag) differentiates a VALID
convolution into an input gradient that is a FULL-padded convolution of the output
gradient: for seed-cnn's conv2 (5×5, 32 → 64, 14×14 → 10×10) about half of its
multiplies hit padding zeros. The **row-stacked** form avoids the zeros in one spatial
dim: the kernel's ``k_h`` rows are stacked into the channels,

  X̂[n, i, j, (a, c)] = x̃[n, i + a, j, c]         (``k_h`` shifted slices, side by side)
  y = conv_{1×k_w}(X̂, ŵ)    with ŵ[0, b, (a, c), o] = w[a, b, c, o],

so the convolution left is one row high. Its transpose (the input gradient) is a
``1×k_w`` convolution of ``g`` that is FULL-padded in width only, to ``k_h·C_in``
channels, followed by ``k_h`` row-shifted adds (pads and adds XLA fuses into one loop):
2.6 → 1.8 GFLOP for conv2 at batch 128, with no padded zeros in height.

:func:`conv` is a ``jax.custom_jvp`` whose tangent is written in transposable JAX ops,
so reverse mode transposes it into the chosen gradient forms, and forward mode,
``jax.linear_transpose`` of the tangents and higher orders keep working:

  ẏ = R(ẋ, w) + Σ_chunks conv(x_chunk, ẇ)

- ``R`` is the row-stacked form when :class:`Plan` ``input_grad == "rows"`` (its
  transpose is the input gradient above), else lax's convolution;
- the ``ẇ`` term is one lax convolution per batch chunk, concatenated (its transpose:
  one weight-gradient convolution per chunk, summed), ``weight_chunks`` chunks;
- the primal is the row-stacked form when ``forward == "rows"``, else lax's.

:func:`plan` chooses per layer shape. The rule, from ``benchmarks/cpu_layers.py``
(batch 128, float32, 2-core CPU, jaxlib 0.10.2, ratios to lax's form in the same
alternating rounds; ``benchmarks/README.md``, section "CPU layers (issue 19)"):

- ``input_grad="rows"`` where the kernel has 3 or more rows and the input gradient
  would pad more zero rows than SAME padding does (``top + bottom < k_h - 1``:
  VALID-like layers), or the input is narrow (``C_in <= 4``: lax's input gradient has
  ``C_in`` output channels, which Eigen's convolution runs slowly). Measured: seed-cnn
  conv2 (5×5 VALID, 32 → 64, 14×14) dx 0.55–0.69× lax's in six runs (12.7 → 8.2 ms),
  its training work (forward, dx, dw) 0.69–0.84×, the seed-cnn train step 0.91–0.94×; seed-cnn conv1 (5×5 VALID,
  3 → 32) dx 0.17–0.21×; resnet20's first layer (3×3 SAME, 3 → 16) dx 0.30–0.44×.
  resnet20's 3×3 SAME layers (16, 32, 64 channels) measured 1.04–1.34×, 0.91–2.07× and
  0.82–1.06× (no gain beyond the noise of a shared machine), so they keep lax's form.
- ``forward="lax"`` and ``weight_chunks=1`` everywhere: the row-stacked forward and batch
  chunks of dw won only while other processes loaded the 2 cores (conv1 forward
  0.70–0.84×, conv1 dw in 4 chunks 0.62–0.71×) and not on a quieter machine (forward
  0.91–1.02×, dw in 4 chunks 0.81–1.01×). conv1's dw in 8 chunks was 0.56–0.87× in
  five runs, but not in the whole seed-cnn train step: 0.953× of lax's step time with
  them vs 0.938× without (the row-stacked conv2 dx alone; one interleaved run, 21
  rounds), so XLA already overlaps that work there. With 32 or more input channels the
  row-stacked forward lost (1.25–1.53× for seed-cnn conv2, 2.3–3.7× for resnet20's
  layers) and dw chunks were within noise (0.90–1.02× for conv2, 0.83–1.61× for
  resnet20's). Both stay selectable through :class:`Plan`, for
  ``benchmarks/cpu_layers.py --forms`` to re-measure.

Only 2-D, stride 1, no dilation, groups 1, non-negative padding, float32/float64
inputs with the inputs' result dtype take these forms. ``CNNJAX_CPU_ROWS=0`` turns them
off alone (for comparison), ``CNNJAX_CPU_LOWERING=0`` with the other CPU forms.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from cnnjax._lowering.chunks import batch_chunks
from cnnjax._lowering.config import ConvConfig
from cnnjax._lowering.portable import lax_conv

__all__ = ["OPT_OUT", "Plan", "applies", "conv", "enabled", "plan", "rows_conv"]

OPT_OUT = "CNNJAX_CPU_ROWS"
NARROW_C_IN = 4  # input channels up to which the input gradient is row-stacked


def enabled() -> bool:
  """Whether these forms are on (``CNNJAX_CPU_ROWS=0`` turns them off alone)."""
  return os.environ.get(OPT_OUT, "1").strip().lower() not in ("0", "false", "no", "off")


class Plan(NamedTuple):
  """The forms of one convolution and its derivatives.

  Attributes:
    forward: ``"rows"`` or ``"lax"``, the form of the primal.
    input_grad: ``"rows"`` or ``"lax"``, the form of the ``x`` tangent (and so of the
      input gradient, its transpose).
    weight_chunks: batch chunks of the ``w`` tangent (and of the weight gradient).
  """

  forward: str = "lax"
  input_grad: str = "lax"
  weight_chunks: int = 1

  @property
  def trivial(self) -> bool:
    return self.forward == "lax" and self.input_grad == "lax" and self.weight_chunks == 1


def applies(x: jax.Array, w: jax.Array, cfg: ConvConfig) -> bool:
  """Whether the configuration can take these forms (before :func:`plan` picks)."""
  return (
      w.ndim == 4 and x.dtype in (jnp.float32, jnp.float64)
      and (cfg.preferred_element_type is None  # (np.dtype("float64") == None is True)
           or jnp.dtype(cfg.preferred_element_type) == x.dtype)
      and cfg.groups == 1 and cfg.plain
      and all(s == 1 for s in cfg.stride) and all(d == 1 for d in cfg.dilation)
      and enabled()
  )


def plan(x_shape, w_shape, cfg: ConvConfig) -> Plan:
  """The measured choice for one 2-D, stride-1 convolution (see the module docstring)."""
  kh, _, c_in, _ = w_shape
  (top, bottom), _ = cfg.pads
  rows = kh >= 3 and (top + bottom < kh - 1 or c_in <= NARROW_C_IN)
  return Plan(input_grad="rows" if rows else "lax")


def rows_conv(x: jax.Array, w: jax.Array, cfg: ConvConfig) -> jax.Array:
  """The row-stacked form: ``k_h`` shifted row slices stacked into the channels, then
  one ``1 × k_w`` convolution (2-D, stride 1, no dilation, groups 1)."""
  kh, kw, c_in, c_out = w.shape
  (top, bottom), width_pads = cfg.pads
  if top or bottom:
    x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (top, bottom, 0), (0, 0, 0), (0, 0, 0)))
  rows = x.shape[1] - kh + 1
  stacked = x if kh == 1 else jnp.concatenate(
      [lax.slice_in_dim(x, a, a + rows, axis=1) for a in range(kh)], axis=-1)
  w_rows = jnp.transpose(w, (1, 0, 2, 3)).reshape(1, kw, kh * c_in, c_out)
  return lax_conv(stacked, w_rows, cfg._replace(pads=((0, 0), width_pads)))


def _chunked(x: jax.Array, w: jax.Array, cfg: ConvConfig, chunks: int) -> jax.Array:
  """lax's convolution per batch chunk, concatenated along the batch."""
  if chunks <= 1:
    return lax_conv(x, w, cfg)
  bounds = batch_chunks(x.shape[0], 1, chunk_bytes=-(-x.shape[0] // chunks),
                        max_chunks=chunks)
  if len(bounds) == 1:
    return lax_conv(x, w, cfg)
  return jnp.concatenate(
      [lax_conv(lax.slice_in_dim(x, lo, hi, axis=0), w, cfg) for lo, hi in bounds], axis=0)


def _form(name: str):
  return rows_conv if name == "rows" else lax_conv


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def conv(x: jax.Array, w: jax.Array, cfg: ConvConfig, how: Plan) -> jax.Array:
  """The convolution ``cfg`` of ``x`` and ``w`` in the forms of ``how``."""
  return _form(how.forward)(x, w, cfg)


def _conv_jvp(cfg: ConvConfig, how: Plan, primals, tangents):
  x, w = primals
  x_dot, w_dot = tangents
  out = _form(how.forward)(x, w, cfg)
  terms = []
  if not isinstance(x_dot, SymbolicZero):
    terms.append(_form(how.input_grad)(x_dot, w, cfg))
  if not isinstance(w_dot, SymbolicZero):
    terms.append(_chunked(x, w_dot, cfg, how.weight_chunks))
  if not terms:
    return out, jnp.zeros_like(out)
  return out, functools.reduce(jnp.add, terms)


conv.defjvp(_conv_jvp, symbolic_zeros=True)
