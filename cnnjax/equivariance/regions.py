"""Regions and shifts of conv stacks: what a strided, zero-padded stack leaves comparable.

:func:`output_shift` (the output shift of an input shift, from the stack's jump) and
:func:`interior_region` (the output positions that zero padding does not reach), both
from :mod:`cnnjax.arithmetic`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cnnjax import arithmetic as _arithmetic
from cnnjax import padding as _padding
from cnnjax._checks import is_int
from cnnjax.equivariance.transforms import _shift_spec

__all__ = ["interior_region", "output_shift"]


_LAYERS_EXPECTED = (
    "a sequence of (kernel, stride) or (kernel, stride, dilation) tuples, each entry a "
    "positive int or one positive int per spatial dim"
)


def _layer_dims(layers, *, op: str) -> int | None:
  """Validates layers; returns their number of spatial dims (None if all entries are ints)."""
  if isinstance(layers, str) or not isinstance(layers, Sequence):
    raise ValueError(f"{op}: layers got {layers!r}; expected {_LAYERS_EXPECTED}.")
  num_dims = None
  for i, layer in enumerate(layers):
    if isinstance(layer, str) or not isinstance(layer, Sequence) or len(layer) not in (2, 3):
      raise ValueError(f"{op}: layers[{i}] got {layer!r}; expected {_LAYERS_EXPECTED}.")
    for entry in layer:
      if is_int(entry) and entry >= 1:
        continue
      if (
          isinstance(entry, Sequence)
          and not isinstance(entry, str)
          and entry
          and all(is_int(e) and e >= 1 for e in entry)
      ):
        if num_dims is not None and len(entry) != num_dims:
          raise ValueError(
              f"{op}: layers[{i}] got {layer!r}, with {len(entry)} values where other "
              f"entries have {num_dims}; expected one value per spatial dim throughout."
          )
        num_dims = len(entry)
        continue
      raise ValueError(f"{op}: layers[{i}] got {layer!r}; expected {_LAYERS_EXPECTED}.")
  return num_dims


def _dim_layers(layers, dim: int) -> list[tuple[int, ...]]:
  """The layers of one spatial dim, as int tuples for :mod:`cnnjax.arithmetic`."""
  return [tuple(int(e) if is_int(e) else int(e[dim]) for e in layer) for layer in layers]


def _jump(layers, dim: int) -> int:
  return _arithmetic.jump(_dim_layers(layers, dim)) if layers else 1


def _output_shift(shifts: tuple[int, ...], layers, *, shift, op: str) -> tuple[int, ...]:
  jumps = tuple(_jump(layers, dim) for dim in range(len(shifts)))
  bad = [dim for dim, (s, j) in enumerate(zip(shifts, jumps, strict=True)) if s % j]
  if bad:
    raise ValueError(
        f"{op}: shift got {shift!r}, which is not a multiple of the stack's total "
        f"stride (jump) {jumps if len(jumps) != 1 else jumps[0]} in spatial dim(s) {bad}; "
        "expected a multiple: a strided stack is only equivariant to shifts by multiples "
        "of its jump."
    )
  return tuple(s // j for s, j in zip(shifts, jumps, strict=True))


def _num_dims(shift, layer_dims: int | None, *, op: str, default: int) -> int:
  if isinstance(shift, tuple):
    if layer_dims is not None and len(shift) != layer_dims:
      raise ValueError(
          f"{op}: shift got {shift!r} ({len(shift)} values) but layers have "
          f"{layer_dims} spatial dims; expected an int or {layer_dims} ints."
      )
    return len(shift)
  return layer_dims if layer_dims is not None else default


def output_shift(
    shift: int | Sequence[int], layers: Sequence[tuple[int | Sequence[int], ...]]
) -> int | tuple[int, ...]:
  """The output shift of a translation-equivariant stack with strides.

  A stack whose strides multiply to ``S`` (its jump, :func:`cnnjax.arithmetic.jump`)
  maps an input shift by ``S·k`` to an output shift by ``k``; other shifts have no
  output counterpart.

  Args:
    shift: the input shift, an int (every spatial dim) or one int per spatial dim.
    layers: ``(kernel, stride)`` or ``(kernel, stride, dilation)`` per layer, first
      first, as :func:`cnnjax.arithmetic.receptive_field`; each entry may also be one
      int per spatial dim.

  Returns:
    ``shift // S`` per dim: an int if ``shift`` and every layer entry are ints, else a
    tuple.

  Raises:
    ValueError: ``shift`` is not a multiple of the jump in some dim, or bad arguments.

  Example:
    >>> output_shift(4, [(3, 2), (3, 1), (2, 2)])
    1
    >>> output_shift((2, 0), [(3, (2, 1))])
    (1, 0)
  """
  op = "output_shift"
  shift = _shift_spec(shift, op=op)
  layer_dims = _layer_dims(layers, op=op)
  d = _num_dims(shift, layer_dims, op=op, default=1)
  shifts = shift if isinstance(shift, tuple) else (shift,) * d
  out = _output_shift(shifts, layers, shift=shift, op=op)
  return out if isinstance(shift, tuple) or layer_dims is not None else out[0]


def interior_region(
    in_spatial: Sequence[int],
    layers: Sequence[tuple[int | Sequence[int], ...]],
    *,
    shift: int | Sequence[int] = 0,
    padding: Any = "SAME",
) -> tuple[slice, ...]:
  """The output region a zero-padded stack leaves exactly comparable under a shift.

  For a stack of translation-equivariant layers (convolutions, pooling, pointwise
  maps) with zero (or any non-circular) padding, output position ``m`` depends on the
  input window ``[m·S − P, m·S − P + R − 1]`` per dim (``R`` the receptive field and
  ``S`` the jump, from :mod:`cnnjax.arithmetic`; ``P`` the layers' low padding in
  input pixels). Where that window lies inside the part of the shifted input that is
  an unwrapped copy of the original, no padding reaches the output and
  ``f(translate(shift)(x))[m] = f(x)[m − k]`` exactly, with
  ``k = output_shift(shift, layers)``, whichever translate mode (circular or zeros) is
  used on the input and the output. The region is sufficient, not always the largest.
  (With circular padding throughout, no region is needed: the whole output compares.)

  Args:
    in_spatial: the input's spatial shape.
    layers: ``(kernel, stride)`` or ``(kernel, stride, dilation)`` per layer, first
      first (entries ints or one per dim), as :func:`cnnjax.arithmetic.receptive_field`.
    shift: the input shift, an int (every dim) or one int per dim; a multiple of the
      stack's jump.
    padding: every layer's padding (``"SAME"``, ``"VALID"``, ``"FULL"``, ints or
      pairs, as :func:`cnnjax.conv.cross_correlate`), or a ``list`` of one spec per
      layer.

  Returns:
    A tuple of slices, one per output spatial axis, for ``region=``.

  Raises:
    ValueError: bad layers or padding, a shift that is not a multiple of the jump, or
      no exactly comparable output position.

  Example:
    >>> interior_region((16, 16), [(3, 1), (3, 1)], shift=(2, -1))
    (slice(4, 14, None), slice(2, 13, None))
  """
  op = "interior_region"
  if isinstance(in_spatial, str) or not isinstance(in_spatial, Sequence) or not in_spatial:
    raise ValueError(
        f"{op}: in_spatial got {in_spatial!r}; expected the input's spatial shape, a "
        "tuple of positive ints."
    )
  in_spatial = _padding.normalize_ints(tuple(in_spatial), len(in_spatial), name="in_spatial", op=op)
  d = len(in_spatial)
  layer_dims = _layer_dims(layers, op=op)
  if layer_dims not in (None, d):
    raise ValueError(
        f"{op}: in_spatial got {in_spatial!r} ({d} dims) but layers have {layer_dims} "
        "spatial dims; expected the same number."
    )
  shift = _shift_spec(shift, op=op)
  if isinstance(shift, tuple) and len(shift) != d:
    raise ValueError(
        f"{op}: shift got {shift!r} ({len(shift)} values) for {d} spatial dims; "
        f"expected an int or {d} ints."
    )
  shifts = shift if isinstance(shift, tuple) else (shift,) * d
  _output_shift(shifts, layers, shift=shift, op=op)
  if isinstance(padding, list):
    if len(padding) != len(layers):
      raise ValueError(
          f"{op}: padding got a list of {len(padding)} specs for {len(layers)} layers; "
          "expected one per layer (or one spec, not in a list, for every layer)."
      )
    paddings = padding
  else:
    paddings = [padding] * len(layers)
  # Each layer's geometry, through the one place that resolves padding.
  sizes, lows = in_spatial, []
  for dims_layer, pad in zip(
      zip(*(_dim_layers(layers, dim) for dim in range(d)), strict=True), paddings, strict=True
  ):
    kernel, stride, dilation = zip(*((*layer, 1)[:3] for layer in dims_layer), strict=True)
    geo = _padding.conv_geometry(
        sizes, kernel, stride=stride, padding=pad, dilation=dilation, op=op
    )
    lows.append(tuple(lo for lo, _ in geo.pads))
    sizes = geo.out_spatial
  region = []
  for dim in range(d):
    dim_layers = _dim_layers(layers, dim)
    field = _arithmetic.receptive_field(dim_layers)
    step = _jump(layers, dim)
    low_pad = sum(low[dim] * _jump(layers[:i], dim) for i, low in enumerate(lows))
    n, s = in_spatial[dim], shifts[dim]
    first_copy, last_copy = max(0, s), min(n, n + s) - 1  # the unwrapped copy of x
    start = max(0, -(-(first_copy + low_pad) // step))
    stop = min(sizes[dim], (last_copy + 1 - field + low_pad) // step + 1)
    if start >= stop:
      raise ValueError(
          f"{op}: no output position in spatial dim {dim} is out of the border's reach: "
          f"input size {n}, shift {s}, receptive field {field}, jump {step}, low padding "
          f"{low_pad} input pixels; expected a larger in_spatial or a smaller shift."
      )
    region.append(slice(start, stop))
  return tuple(region)
