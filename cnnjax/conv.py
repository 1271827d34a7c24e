"""Cross-correlation, true convolution and transposed convolution on ``jax.lax``.

All functions take batched, channels-last inputs ``[N, *spatial, C]`` with 1, 2 or
3 spatial dims and kernels ``[*kernel_spatial, C_in // groups, C_out]`` (Flax's
HWIO layout); the kernel's rank sets the number of spatial dims. Arrays are
positional, configuration is keyword-only.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from cnnjax import padding as _padding
from cnnjax.padding import PaddingLike

__all__ = ["conv_transpose", "convolve", "cross_correlate"]

_SPATIAL_LETTERS = {1: "W", 2: "HW", 3: "DHW"}


def dimension_numbers(num_spatial: int) -> lax.ConvDimensionNumbers:
  """lax dimension numbers for channels-last inputs and HWIO kernels."""
  letters = _SPATIAL_LETTERS[num_spatial]
  spec = (f"N{letters}C", f"{letters}IO", f"N{letters}C")
  return lax.conv_dimension_numbers(
      (1,) * (num_spatial + 2), (1,) * (num_spatial + 2), spec
  )


def compute_dtype(x: jax.Array, w: jax.Array, *, op: str):
  """The dtype an op computes and returns in: the input's, if it is floating."""
  for name, a in (("x", x), ("w", w)):
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
  return lax.conv_general_dilated(
      x, w,
      window_strides=geo.stride,
      padding=pads,
      rhs_dilation=geo.dilation,
      dimension_numbers=dimension_numbers(num_spatial),
      feature_group_count=groups,
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
      _padding.effective_kernel_size(k, t) for k, t in zip(w.shape[:-2], dilation_t)
  )
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
  if geo.out_spatial != out_spatial:
    raise ValueError(
        f"{op}: input_shape {input_shape} gives a forward output of spatial shape "
        f"{geo.out_spatial} with these settings, but y has spatial shape "
        f"{out_spatial}; expected an input_shape whose forward output matches y."
    )
  dtype = compute_dtype(y, w, op=op)
  y, w = y.astype(dtype), w.astype(dtype)
  # The adjoint pads the dilated y by r̂ − 1 − lo below and r̂ − 1 − hi plus the
  # positions the forward stride dropped above (negative padding crops).
  pads = []
  for n, r, s, m, (lo, hi) in zip(input_shape, kernel_eff, stride_t, out_spatial, geo.pads):
    dropped = n + lo + hi - r - (m - 1) * s
    pads.append((r - 1 - lo, r - 1 - hi + dropped))
  return lax.conv_general_dilated(
      y, _transpose_kernel(w, groups),
      window_strides=(1,) * num_spatial,
      padding=pads,
      lhs_dilation=stride_t,
      rhs_dilation=dilation_t,
      dimension_numbers=dimension_numbers(num_spatial),
      feature_group_count=groups,
      precision=precision,
  )
