"""Cross-correlation, true convolution and transposed convolution.

All functions take batched, channels-last inputs ``[N, *spatial, C]`` with 1, 2 or
3 spatial dims and kernels ``[*kernel_spatial, C_in // groups, C_out]`` (Flax's
HWIO layout); the kernel's rank sets the number of spatial dims. Arrays are
positional, configuration is keyword-only. Integer, floating and complex dtypes are
accepted on every platform.

Each op validates its arguments and makes one call into :mod:`cnnjax._lowering`,
which computes ``lax.conv_general_dilated`` with the form each platform runs best
(integer inputs as an exact patch matmul everywhere; XLA:CPU-specific forms there).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from cnnjax import _checks, _lowering
from cnnjax import padding as _padding
from cnnjax._lowering import adjoint as _adjoint
from cnnjax.padding import PaddingLike

__all__ = ["conv_transpose", "convolve", "cross_correlate"]


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
    preferred_element_type: jax.typing.DTypeLike | None = None,
) -> jax.Array:
  """Cross-correlation, what deep-learning libraries call convolution.

  ``y[b, n, o] = Σ_k Σ_c w[k, c, o] · x̃[b, n·s + k·t, c]`` over the padded input
  ``x̃``, for each output position ``n`` (``s`` the stride, ``t`` the dilation).

  Args:
    x: input, ``[N, *spatial, C_in]`` with 1, 2 or 3 spatial dims.
    w: kernel, ``[*kernel_spatial, C_in // groups, C_out]``.
    stride: an int, or one int per spatial dim.
    padding: ``"VALID"``, ``"SAME"`` (output ``ceil(n / stride)``, an odd total
      padding's extra pixel high), ``"SAME_LOWER"`` (the same, the extra pixel low),
      ``"FULL"`` (``r̂ − 1`` each side), ``"CAUSAL"`` (1-D only: ``r̂ − 1`` low, none
      high), an int, a tuple of ints or a tuple of ``(low, high)``
      (:func:`cnnjax.padding.resolve_padding`).
    dilation: kernel dilation (à trous), effective size ``r̂ = r + (r − 1)(t − 1)``.
    groups: feature groups; ``C_in`` and ``C_out`` must be divisible by it.
    padding_mode: ``"zeros"``, ``"circular"``, ``"reflect"`` or ``"edge"``.
    strict: refuse a stride that drops trailing input positions silently.
    precision: the contraction's precision, as in ``lax.conv_general_dilated``.
      ``None`` is JAX's default for the platform: float32 products in float32 on CPU,
      in TF32 on recent NVIDIA GPUs and in bfloat16 passes on TPU;
      ``"highest"`` gives float32 rounding everywhere.
    preferred_element_type: the result dtype (the accumulation is at least as wide),
      as in ``lax.conv_general_dilated``: e.g. ``jnp.int32`` for int8 inputs (no
      wrap-around), ``jnp.float32`` for bfloat16 inputs. Same kind as the inputs.

  Returns:
    ``[N, *out_spatial, C_out]`` with ``out = ⌊(n + lo + hi − r̂) / s⌋ + 1``, in
    ``preferred_element_type`` or the input's dtype (an integer, floating or complex
    dtype; a floating input with an integer kernel computes in the input's dtype).

  Example:
    >>> x = jnp.ones((1, 5, 5, 1)); w = jnp.ones((3, 3, 1, 1))
    >>> cross_correlate(x, w).shape
    (1, 3, 3, 1)
  """
  op = "cross_correlate"
  x, w = jnp.asarray(x), jnp.asarray(w)
  num_spatial = _checks.check_kernel(w, op=op)
  _padding.check_spatial_rank(x, num_spatial, name="x", op=op)
  _padding.check_padding_mode(padding_mode, op=op)
  groups = _checks.check_groups(groups, x.shape[-1], w.shape[-2], w.shape[-1], op=op)
  geo = _padding.conv_geometry(
      x.shape[1:-1],
      w.shape[:-2],
      stride=stride,
      padding=padding,
      dilation=dilation,
      strict=strict,
      op=op,
  )
  dtype = _checks.compute_dtype(x, w, op=op)
  out_dtype = _checks.result_dtype(dtype, preferred_element_type, op=op)
  out_shape = (x.shape[0], *geo.out_spatial, w.shape[-1])
  _checks.check_extent(out_shape, out_dtype, name="padding", value=padding, op=op)
  x, w = x.astype(dtype), w.astype(dtype)
  pads = geo.pads
  if padding_mode != "zeros":
    x = _padding.pad_spatial(x, pads, padding_mode)
    pads = ((0, 0),) * num_spatial
  cfg = _lowering.ConvConfig.make(
      num_spatial,
      stride=geo.stride,
      pads=pads,
      dilation=geo.dilation,
      groups=groups,
      precision=precision,
      preferred_element_type=out_dtype,
  )
  return _lowering.conv(x, w, cfg)


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
    preferred_element_type: jax.typing.DTypeLike | None = None,
) -> jax.Array:
  """True convolution: :func:`cross_correlate` with the kernel flipped in every spatial dim.

  ``y[b, n, o] = Σ_k Σ_c w[k, c, o] · x̃[b, n·s − k·t + (r̂ − 1), c]``; for one channel,
  stride 1 and ``padding="FULL"`` it equals ``scipy.signal.convolve(x, w, "full")``
  (``"VALID"`` gives scipy's ``"valid"``).

  Args and Returns: as :func:`cross_correlate`.

  Example:
    >>> x = jnp.arange(5.).reshape(1, 5, 1); w = jnp.array([1., 2.]).reshape(2, 1, 1)
    >>> convolve(x, w, padding="FULL")[0, :, 0].tolist()
    [0.0, 1.0, 4.0, 7.0, 10.0, 8.0]
  """
  w = jnp.asarray(w)
  num_spatial = _checks.check_kernel(w, op="convolve")
  w = jnp.flip(w, axis=tuple(range(num_spatial)))
  try:
    return cross_correlate(
        x,
        w,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
        strict=strict,
        precision=precision,
        preferred_element_type=preferred_element_type,
    )
  except (ValueError, TypeError) as e:
    raise type(e)(str(e).replace("cross_correlate:", "convolve:", 1)) from None


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
    preferred_element_type: jax.typing.DTypeLike | None = None,
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
      (``(m − 1)·s + r̂ − lo − hi``), or ``m·s`` for ``"SAME"`` and ``"SAME_LOWER"``.
    precision, preferred_element_type: as in :func:`cross_correlate`.

  Returns:
    ``[N, *input_shape, C_x]`` in ``preferred_element_type`` or ``y``'s dtype.

  Example:
    >>> y = jnp.ones((1, 3, 3, 2)); w = jnp.ones((3, 3, 4, 2))
    >>> conv_transpose(y, w, stride=2).shape
    (1, 7, 7, 4)
  """
  op = "conv_transpose"
  y, w = jnp.asarray(y), jnp.asarray(w)
  num_spatial = _checks.check_kernel(w, op=op)
  _padding.check_spatial_rank(y, num_spatial, name="y", op=op)
  groups = _checks.check_positive_int(groups, name="groups", op=op)
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
      for k, t in zip(w.shape[:-2], dilation_t, strict=True)
  )
  user_input_shape = input_shape is not None
  if input_shape is None:
    if isinstance(padding, str) and padding.upper() in ("SAME", "SAME_LOWER"):
      input_shape = tuple(m * s for m, s in zip(out_spatial, stride_t, strict=True))
    else:
      probe = _padding.resolve_padding(padding, (0,) * num_spatial, kernel_eff, stride_t, op=op)
      input_shape = tuple(
          max((m - 1) * s + r - lo - hi, 1)
          for m, s, r, (lo, hi) in zip(out_spatial, stride_t, kernel_eff, probe, strict=True)
      )
  input_shape = _padding.normalize_ints(tuple(input_shape), num_spatial, name="input_shape", op=op)
  geo = _padding.conv_geometry(
      input_shape,
      w.shape[:-2],
      stride=stride_t,
      padding=padding,
      dilation=dilation_t,
      op=op,
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
  dtype = _checks.compute_dtype(y, w, op=op, names=("y", "w"))
  out_dtype = _checks.result_dtype(dtype, preferred_element_type, op=op)
  y, w = y.astype(dtype), w.astype(dtype)
  # The adjoint pads the dilated y by r̂ − 1 − lo below and r̂ − 1 − hi plus the
  # positions the forward stride dropped above (negative padding crops).
  pads = []
  for n, r, s, m, (lo, hi) in zip(
      input_shape, kernel_eff, stride_t, out_spatial, geo.pads, strict=True
  ):
    dropped = n + lo + hi - r - (m - 1) * s
    pads.append((r - 1 - lo, r - 1 - hi + dropped))
  forward = _lowering.ConvConfig.make(
      num_spatial,
      stride=stride_t,
      pads=geo.pads,
      dilation=dilation_t,
      groups=groups,
      precision=precision,
      preferred_element_type=out_dtype,
  )
  spec = _adjoint.AdjointSpec(forward, tuple(pads), input_shape)
  return _adjoint.adjoint_conv(y, w, spec)
