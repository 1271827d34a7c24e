"""Float convolutions on XLA:CPU: a row-stacked input gradient, chunked weight gradients
that read a stored input.

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
  transpose is the input gradient above), else lax's convolution; with ``dx_barrier``
  it reads ``ẋ`` through :func:`cnnjax._lowering.cpu_barrier.linear_barrier`, so the
  input gradient's row-shifted adds are stored once instead of fused into (and repeated
  by) each consumer;
- the ``ẇ`` term is one lax convolution per batch chunk, concatenated (its transpose:
  one weight-gradient convolution per chunk, summed), ``weight_chunks`` chunks, of
  ``x`` itself or, with ``dw_barrier``, of ``x`` through
  :func:`cnnjax._lowering.cpu_barrier.barrier` (a primal value, so the weight gradient
  reads the stored ``x``);
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
- ``weight_chunks=4`` for 3×3 kernels with 16 or more input channels (resnet20's
  layers, stride 1 and 2) at batch sizes of 64 or more (measured at 128; each chunk
  adds a convolution to compile: resnet20's train step compiled in 4.0–4.3 s instead
  of 2.9–3.1 s). Not visible per layer: XLA:CPU runs a program of at most 8
  operations sequentially, and Eigen runs a weight-gradient convolution (a GEMM with a
  ``9·C_in × C_out`` output and a ``N·H·W`` contraction) on one thread (14.1 ms on 2
  cores, 14.7 ms on one, for 32×32×16 → 16 at batch 128; its forward 4.8 vs 10.5 ms),
  so one layer's chunks ran no faster (0.92–1.24×). In a whole train step the chunks
  are independent operations that run concurrently: resnet20's step 0.88×, 0.88×, 0.88×
  and 0.92× of the unchunked step's time in four interleaved runs (2 chunks 0.94–0.97×,
  8 chunks 0.92×; ``benchmarks/cpu_layers.py --steps``); the two stride-2 layers'
  chunks too: 0.95× and 0.96× of the step without them (whose weight gradients'
  transposed inputs took 21 and 11 ms of the step in a profile).
- ``dw_barrier`` for 3×3 kernels: without it, XLA:CPU fuses ``x``'s producers
  (BatchNorm, ReLU, residual adds through several blocks, the batch gather of a first
  layer) into the transposes the weight gradient's convolution needs and recomputes them
  there (see :mod:`cnnjax._lowering.cpu_barrier`). resnet20's train step with it:
  0.88–0.94× of its time without it in six interleaved runs (``benchmarks/cpu_layers.py
  --steps`` and throwaway scripts, 2026-12-01), 0.88× at batch 32 (no chunks there).
  Where ``x`` is stored anyway (after max pooling) it costs a pass over ``x``: seed-cnn's
  5×5 layers 1.02× (25 rounds of 8 steps), so they go without; vgg11 and fastnet (3×3,
  after pooling or GELU) 1.01×, within their noise.
- ``dx_barrier`` wherever ``input_grad="rows"``: XLA fused the ``k_h`` row-shifted adds
  into their consumer, and a 2×2 max pool's backward reads each input-gradient value
  four times: seed-cnn's conv1-gradient fusion took 4.6 ms per train step, 2.9 ms with
  the adds stored (1.6 + 1.1 + 0.2 ms: the pool's backward, the adds, the
  conditional; ``jax.profiler`` with ``--xla_cpu_enable_xprof_traceme``, AMD EPYC host);
  seed-cnn's step 0.95×/0.93× of its time without (two interleaved pairs, 2026-12-01).
- ``forward="rows"`` nowhere, and no chunks elsewhere: the row-stacked forward won
  only while other processes loaded the 2 cores (conv1 forward 0.70–0.84×) and not on a
  quieter machine (0.91–1.02×), and lost with 32 or more input channels (1.25–1.53× for
  seed-cnn conv2, 2.3–3.7× for resnet20's layers). dw chunks for seed-cnn's 5×5 layers
  measured within the noise of the whole step (8 chunks for conv1 and conv2: 0.88× and
  1.00× in two runs; conv2 alone: 0.93× with 8, 1.00× with 4; conv1 alone: 0.95×, 1.25×
  with 8). Every form
  stays selectable through :class:`Plan`, for ``benchmarks/cpu_layers.py --forms`` and
  ``--steps`` to re-measure.

Only 2-D, no dilation, groups 1, non-negative padding, float32/float64 inputs with the
inputs' result dtype take these forms, and only stride 1 the stacked ones (strided
layers can take the dw chunks). ``CNNJAX_CPU_ROWS=0`` turns them
off alone (for comparison), ``CNNJAX_CPU_LOWERING=0`` with the other CPU forms.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from cnnjax._lowering import forms
from cnnjax._lowering.chunks import batch_chunks
from cnnjax._lowering.cpu_barrier import barrier, linear_barrier
from cnnjax._lowering.config import ConvConfig
from cnnjax._lowering.portable import lax_conv

__all__ = ["Plan", "applies", "conv", "plan", "rows_conv"]

NARROW_C_IN = 4  # input channels up to which dx is row-stacked
WIDE_C_IN = 16  # 3×3 layers with at least these input channels chunk their dw ...
WIDE_WEIGHT_CHUNKS = 4  # ... into this many batch chunks ...
CHUNKED_BATCH = 64  # ... from this batch size on (measured at 128)


class Plan(NamedTuple):
  """The forms of one convolution and its derivatives.

  Attributes:
    forward: ``"rows"`` or ``"lax"``, the form of the primal.
    input_grad: ``"rows"`` or ``"lax"``, the form of the ``x`` tangent (and so of the
      input gradient, its transpose).
    weight_chunks: batch chunks of the ``w`` tangent (and of the weight gradient).
    dw_barrier: the ``w`` tangent (and so the weight gradient) reads ``x`` through
      :func:`cnnjax._lowering.cpu_barrier.barrier`.
    dx_barrier: the ``x`` tangent passes through
      :func:`cnnjax._lowering.cpu_barrier.linear_barrier` (so the input gradient is
      stored before its consumers read it).
  """

  forward: str = "lax"
  input_grad: str = "lax"
  weight_chunks: int = 1
  dw_barrier: bool = False
  dx_barrier: bool = False

  @property
  def trivial(self) -> bool:
    return (self.forward == "lax" and self.input_grad == "lax" and self.weight_chunks == 1
            and not self.dw_barrier and not self.dx_barrier)


def applies(x: jax.Array, w: jax.Array, cfg: ConvConfig) -> bool:
  """Whether the configuration can take these forms (before :func:`plan` picks)."""
  return (
      w.ndim == 4 and x.dtype in (jnp.float32, jnp.float64)
      and (cfg.preferred_element_type is None  # (np.dtype("float64") == None is True)
           or jnp.dtype(cfg.preferred_element_type) == x.dtype)
      and cfg.groups == 1 and cfg.plain and all(d == 1 for d in cfg.dilation)
      and forms.current().rows
  )


def plan(x_shape, w_shape, cfg: ConvConfig) -> Plan:
  """The measured choice for one 2-D convolution (see the module docstring)."""
  kh, kw, c_in, _ = w_shape
  (top, bottom), _ = cfg.pads
  narrow = c_in <= NARROW_C_IN
  unit = all(s == 1 for s in cfg.stride)  # the stacked forms are stride-1 forms
  rows = unit and kh >= 3 and (top + bottom < kh - 1 or narrow)
  wide = (kh, kw) == (3, 3) and c_in >= WIDE_C_IN and x_shape[0] >= CHUNKED_BATCH
  chunks = WIDE_WEIGHT_CHUNKS if wide else 1
  return Plan(input_grad="rows" if rows else "lax",
              weight_chunks=chunks, dw_barrier=(kh, kw) == (3, 3), dx_barrier=rows)


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



def _check(cfg: ConvConfig, how: Plan) -> None:
  if (how.forward, how.input_grad) != ("lax", "lax") and any(s != 1 for s in cfg.stride):
    raise ValueError(f"cpu_rows.conv: the stacked forms of {how} are stride-1 forms; "
                     f"got stride {cfg.stride}")


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def conv(x: jax.Array, w: jax.Array, cfg: ConvConfig, how: Plan) -> jax.Array:
  """The convolution ``cfg`` of ``x`` and ``w`` in the forms of ``how``.

  Not for the configurations :func:`cnnjax._lowering.cpu.aborts` names (XLA:CPU would
  abort compiling lax's input gradient); :func:`cnnjax._lowering.cpu.conv` pads those
  first and never comes here with them.
  """
  _check(cfg, how)
  return _form(how.forward)(x, w, cfg)


def _conv_jvp(cfg: ConvConfig, how: Plan, primals, tangents):
  _check(cfg, how)
  x, w = primals
  x_dot, w_dot = tangents
  out = _form(how.forward)(x, w, cfg)
  terms = []
  if not isinstance(x_dot, SymbolicZero):
    x_dot = linear_barrier(x_dot, w) if how.dx_barrier else x_dot
    terms.append(_form(how.input_grad)(x_dot, w, cfg))
  if not isinstance(w_dot, SymbolicZero):
    terms.append(_chunked(barrier(x, w) if how.dw_barrier else x, w_dot, cfg, how.weight_chunks))
  if not terms:
    return out, jnp.zeros_like(out)
  return out, functools.reduce(jnp.add, terms)


conv.defjvp(_conv_jvp, symbolic_zeros=True)
