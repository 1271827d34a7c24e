"""Float convolutions on XLA:CPU: a row-stacked input gradient, chunked weight gradients
that read a stored input.

XLA:CPU differentiates a VALID convolution into an input gradient that is a FULL-padded
convolution of the output gradient, about half of whose multiplies hit padding zeros
for seed-cnn's conv2. The **row-stacked** form stacks the kernel's ``k_h`` rows into the
channels,

  X̂[n, i, j, (a, c)] = x̃[n, i + a, j, c],   y = conv_{1×k_w}(X̂, ŵ),
  ŵ[0, b, (a, c), o] = w[a, b, c, o],

so its transpose (the input gradient) is FULL-padded in width only, followed by ``k_h``
row-shifted adds. :func:`conv` is a ``jax.custom_jvp`` whose tangent is written in
transposable JAX ops (so reverse mode transposes it into these forms, and forward mode,
``jax.linear_transpose`` and higher orders keep working):

  ẏ = R(ẋ, w) + Σ_chunks conv(x_chunk, ẇ)

- ``R`` is the row-stacked form where :class:`Plan` says ``input_grad="rows"``, with
  ``dx_barrier`` reading ``ẋ`` through :func:`cnnjax._lowering.cpu_barrier.linear_barrier`
  (the row-shifted adds are stored once, not fused into each consumer);
- the ``ẇ`` term is one lax convolution per batch chunk (its transpose: one weight-gradient
  convolution per chunk; independent operations XLA:CPU runs concurrently), of ``x``
  through :func:`cnnjax._lowering.cpu_barrier.barrier` with ``dw_barrier`` (the weight
  gradient reads the stored ``x`` instead of recomputing its producers);
- the primal is lax's convolution (or the row-stacked one with ``forward="rows"``).

Each form only rearranges the same products (no zero taps, no padding multiplied that
lax does not multiply), so results are lax's up to rounding, NaN and ±inf included.
:func:`plan` is the per-shape rule, measured on :data:`MEASURED_ON`
(``benchmarks/cpu_layers.py``; the figures and the forms that lost, the 2×2-block
forward among them, are in ``benchmarks/README.md``, "CPU layers (issue 19)"). Only 2-D,
no dilation, groups 1, non-negative padding, float32/float64 take these forms, and only
stride 1 the row-stacked one; ``cnnjax.cpu_forms(rows=False)`` turns them off.
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
from cnnjax._lowering.config import ConvConfig
from cnnjax._lowering.cpu_barrier import barrier, linear_barrier
from cnnjax._lowering.portable import lax_conv

__all__ = ["MEASURED_ON", "Plan", "applies", "conv", "plan", "rows_conv"]

# Where plan()'s thresholds were measured: re-measure them (benchmarks/cpu_layers.py) on
# another jaxlib or CPU before trusting them there.
MEASURED_ON = "jaxlib 0.10.2; 2-core Intel Xeon (AVX-512) and AMD EPYC (AVX2) hosts"
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
    return (
        self.forward == "lax"
        and self.input_grad == "lax"
        and self.weight_chunks == 1
        and not self.dw_barrier
        and not self.dx_barrier
    )


def applies(x: jax.Array, w: jax.Array, cfg: ConvConfig) -> bool:
  """Whether the configuration can take these forms (before :func:`plan` picks)."""
  return (
      w.ndim == 4
      and x.dtype in (jnp.float32, jnp.float64)
      and (
          cfg.preferred_element_type is None  # (np.dtype("float64") == None is True)
          or jnp.dtype(cfg.preferred_element_type) == x.dtype
      )
      and cfg.groups == 1
      and cfg.plain
      and all(d == 1 for d in cfg.dilation)
      and forms.current().rows
  )


def plan(x_shape, w_shape, cfg: ConvConfig) -> Plan:
  """The measured choice for one 2-D convolution, on :data:`MEASURED_ON`.

  - ``input_grad="rows"`` (with ``dx_barrier``): stride 1, 3 or more kernel rows, and
    less height padding than SAME (``top + bottom < k_h − 1``) or at most
    ``NARROW_C_IN`` input channels (seed-cnn step 0.91–0.94× lax's);
  - ``weight_chunks``: 3×3 kernels with ``WIDE_C_IN`` or more input channels at batch
    ``CHUNKED_BATCH`` or more (resnet20 step 0.88×);
  - ``dw_barrier``: 3×3 kernels (resnet20 step 0.88–0.94×).
  """
  kh, kw, c_in, _ = w_shape
  (top, bottom), _ = cfg.pads
  narrow = c_in <= NARROW_C_IN
  unit = all(s == 1 for s in cfg.stride)  # the stacked forms are stride-1 forms
  rows = unit and kh >= 3 and (top + bottom < kh - 1 or narrow)
  wide = (kh, kw) == (3, 3) and c_in >= WIDE_C_IN and x_shape[0] >= CHUNKED_BATCH
  chunks = WIDE_WEIGHT_CHUNKS if wide else 1
  return Plan(
      input_grad="rows" if rows else "lax",
      weight_chunks=chunks,
      dw_barrier=(kh, kw) == (3, 3),
      dx_barrier=rows,
  )


def rows_conv(x: jax.Array, w: jax.Array, cfg: ConvConfig) -> jax.Array:
  """The row-stacked form: ``k_h`` shifted row slices stacked into the channels, then
  one ``1 × k_w`` convolution (2-D, stride 1, no dilation, groups 1)."""
  kh, kw, c_in, c_out = w.shape
  (top, bottom), width_pads = cfg.pads
  if top or bottom:
    x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (top, bottom, 0), (0, 0, 0), (0, 0, 0)))
  rows = x.shape[1] - kh + 1
  stacked = (
      x
      if kh == 1
      else jnp.concatenate([lax.slice_in_dim(x, a, a + rows, axis=1) for a in range(kh)], axis=-1)
  )
  w_rows = jnp.transpose(w, (1, 0, 2, 3)).reshape(1, kw, kh * c_in, c_out)
  return lax_conv(stacked, w_rows, cfg._replace(pads=((0, 0), width_pads)))


def _chunked(x: jax.Array, w: jax.Array, cfg: ConvConfig, chunks: int) -> jax.Array:
  """lax's convolution per batch chunk, concatenated along the batch."""
  if chunks <= 1:
    return lax_conv(x, w, cfg)
  bounds = batch_chunks(x.shape[0], 1, chunk_bytes=-(-x.shape[0] // chunks), max_chunks=chunks)
  if len(bounds) == 1:
    return lax_conv(x, w, cfg)
  return jnp.concatenate(
      [lax_conv(lax.slice_in_dim(x, lo, hi, axis=0), w, cfg) for lo, hi in bounds], axis=0
  )


def _form(name: str):
  return rows_conv if name == "rows" else lax_conv


def _check(cfg: ConvConfig, how: Plan) -> None:
  if (how.forward, how.input_grad) != ("lax", "lax") and any(s != 1 for s in cfg.stride):
    raise ValueError(
        f"cpu_rows.conv: the stacked forms of {how} are stride-1 forms; " f"got stride {cfg.stride}"
    )


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def conv(x: jax.Array, w: jax.Array, cfg: ConvConfig, how: Plan) -> jax.Array:
  """The convolution ``cfg`` of ``x`` and ``w`` in the forms of ``how``.

  Not for the configurations :func:`cnnjax._lowering.workarounds.aborts` names (XLA:CPU would
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
