"""Lecture-style layer tables: parameters, ops, output shape and symmetry per layer.

``summary(model, input_shape)`` traces the model abstractly (``nnx.eval_shape``: no
array is allocated, so VGG-16 at 224×224×3 costs no memory) and records one row per
layer it calls, in call order. Counts follow :mod:`cnnjax.arithmetic` (conv ops =
output volume × (kernel volume × in / groups + 1); pooling and normalisation ops =
input volume; fc ops = parameters; activations none).

How a layer describes itself:

- a *leaf* layer (a conv, a pool, an fc layer, a norm) has a describer registered
  for its class with :func:`register_describer`, which names the row and counts its
  parameters and ops; cnnjax's modules and ``nnx.Linear``, ``nnx.Conv``,
  ``nnx.BatchNorm`` have one here;
- a *composite* layer (an inception module, a residual block) defines a
  ``summary_name()`` method: it is one row whose parameters and ops are the sums of
  the rows of the layers it calls (kept in ``Row.children``);
- every other module (a model, ``nnx.Sequential``, dropout) is transparent, and plain
  functions (activations, reshapes) give no row.

Recording works by wrapping the ``__call__`` of the describable classes found in the
model for the duration of the trace (restored afterwards).

**The symmetry column.** Each row also says what the network *from its input up to that
row's output* is exactly equivariant or invariant to, in eval mode, for every input and
every value of the weights (a :class:`Symmetry`, ``Row.symmetry``). It is derived from
the arithmetic of the layers (strides, padding, kernel and window geometry;
:mod:`cnnjax.arithmetic`, :func:`cnnjax.padding.conv_geometry`), never from the
weights, and it claims nothing it cannot derive exactly. The notation, per spatial axis
``P`` an integer and ``Pℤ`` its multiples (``ℤ``: every integer; ``2ℤ×4ℤ`` when the
axes differ):

=========================  ==========================================================
``shift 4ℤ``               circular shifts of the input by multiples of 4 shift the
                           output circularly by a quarter as much, on the whole map
                           (circular padding, or none, and sizes the strides divide)
``shift 4ℤ (interior)``    shifts by multiples of 4 (circular or zero-filled) shift the
                           output by a quarter as much on the *interior*: the positions
                           whose receptive field stays off the padding and the border
                           (:func:`cnnjax.equivariance.interior_region`); written only
                           when some position is interior for a shift by ±4
``shift 2ℤ→2ℤ``            the output shift is not the input shift over ``P``: after
                           an upsampling layer (a transposed convolution), input shifts
                           by ``2k`` move the output by ``2k``
``shift ℤ (adaptive)``     circular shifts by multiples of ``P`` shift the output
                           circularly by an amount that depends on the input: after
                           adaptive polyphase sampling (APS), exact when the largest
                           polyphase norm is unique
``invariant 4ℤ``           circular shifts by multiples of 4 leave the output unchanged
                           (global pooling of a whole-map ``shift`` or ``adaptive`` row)
``p4``, ``p4m``            equivariant to the group (:mod:`cnnjax.group`): quarter turns
                           (and mirrors) of a square input move the output by the same
                           element: a map over the group ``[H, W, |G|, C]`` by
                           :func:`cnnjax.equivariance.group_action`, an image by
                           :func:`cnnjax.equivariance.plane_action`
``invariant p4``           the group leaves the output unchanged
``invariant 4ℤ, p4``       invariant to both
``none``                   nothing exact: after a flatten, a fully connected layer on
                           a flattened map, unshared weights, or an interior that no
                           position survives
=========================  ==========================================================

How rows get their claim: the network input is equivariant to every shift (``shift ℤ``)
and, if square and 2-D, to ``p4m``. A strided layer (conv, pooling, blur pool) with
stride ``s`` keeps only shifts whose layer-input shift is a multiple of ``s``, so the
period is the cumulative stride (a tiled convolution also needs output shifts that are
multiples of its tile); its geometry keeps the whole map only with circular padding (or
none) and sizes the stride divides, else the claim moves to the interior. Pointwise
layers (batch norm in eval mode, LRN, maxout, a fully connected layer on the channels of
a map, 1×1 convolutions) keep every claim. Rotations and mirrors survive only layers
whose window is symmetric (pooling and blur, on a grid symmetric about the centre:
``s·(m − 1) = n − r̂ + 2·lo``), and the group convolutions of :mod:`cnnjax.nn.group`;
a convolution with a learned kernel ends them. Global pooling turns whole-map claims
into invariance and ends interior ones; a function of an invariant output stays
invariant (so fully connected layers after global pooling keep it). A composite row
(``res``, ``inc``) combines the rows inside it: every claim its rows share, with the
period the least common multiple of theirs.

Plain functions give no row, so the column assumes what models do with them: a function
between two rows that keeps the shape acts on each position alone, or at least commutes
with shifts and the group (activations, casts, a circular stride-1 max); a row whose
input matches no earlier output's shape follows a reshape or another unseen function
(a flatten), and only invariance survives it; a layer's input is the latest earlier
output of its shape (or the composite's input).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import math
import sys
import types
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from cnnjax import arithmetic
from cnnjax import nn as cnn
from cnnjax.padding import Geometry, conv_geometry

__all__ = [
    "SYMMETRY_RULES",
    "TRANSLATIONS",
    "Row",
    "Summary",
    "Symmetry",
    "register_describer",
    "summary",
]

Describer = Callable[[Any, tuple, tuple], tuple[str, int, int]]
_DESCRIBERS: dict[type, Describer] = {}
# A leaf class's effect on the symmetry column, ``rule(module, in_shape, out_shape)``.
_Rule = Callable[[Any, tuple, tuple], Any]
_SYMMETRY: dict[type, _Rule] = {}
_USER_RULES: dict[str, _Rule] = {
    "none": lambda m, i, o: _OPAQUE,
    "pointwise": lambda m, i, o: _POINTWISE,
    "global": lambda m, i, o: _GLOBAL,
}

TRANSLATIONS = ("equivariant", "interior", "adaptive", "invariant", "none")
SYMMETRY_RULES = ("none", "pointwise", "global")
_GROUP_ORDER = {"p4": 4, "p4m": 8}  # (p4 ⊂ p4m)


def _lattice(values: Sequence[int]) -> str:
  """``ℤ``, ``4ℤ``, or ``2ℤ×4ℤ`` when the axes differ."""
  cells = ["ℤ" if v == 1 else f"{v}ℤ" for v in values]
  return cells[0] if len(set(cells)) == 1 else "×".join(cells)


@dataclasses.dataclass(frozen=True)
class Symmetry:
  """What the network up to a row is exactly equivariant or invariant to.

  ``str(symmetry)`` is the compact notation of the layer table (see the module's
  docstring): ``"shift 4ℤ (interior)"``, ``"invariant p4"``, ``"none"``, ...

  Attributes:
    translation: one of :data:`TRANSLATIONS`: ``"equivariant"`` (circular shifts of the
      input by ``period·k`` shift the output circularly by ``step·k``, per spatial
      axis, on the whole map), ``"interior"`` (the same for circular or zero-filled
      shifts, on the positions whose receptive field stays off the padding and the
      border), ``"adaptive"`` (circular shifts by ``period·k`` shift the output
      circularly by an input-dependent amount: adaptive polyphase sampling),
      ``"invariant"`` (circular shifts by ``period·k`` leave the output unchanged) or
      ``"none"``.
    period: the input shifts, as multiples per spatial axis (``()`` for ``"none"``):
      the cumulative stride of the layers so far, for a plain strided stack.
    step: the output shift per ``period`` of input shift, per spatial axis, for
      ``"equivariant"`` and ``"interior"`` (``()`` otherwise); 1 unless an upsampling
      layer came after the strides.
    group: ``"p4"`` or ``"p4m"``, or None: the rotations (and mirrors) of a square
      input the network is equivariant or invariant to.
    group_action: how the group moves the output: ``"plane"`` (an image ``[H, W, C]``,
      :func:`cnnjax.equivariance.plane_action`), ``"map"`` (a map over the group
      ``[H, W, |G|, C]``, :func:`cnnjax.equivariance.group_action`) or
      ``"invariant"``; None without a group.

  Example:
    >>> print(Symmetry("interior", period=(4, 4), step=(1, 1), group="p4", group_action="map"))
    shift 4ℤ (interior), p4
    >>> print(Symmetry("invariant", period=(1, 1), group="p4", group_action="invariant"))
    invariant ℤ, p4
  """

  translation: str = "none"
  period: tuple[int, ...] = ()
  step: tuple[int, ...] = ()
  group: str | None = None
  group_action: str | None = None

  def __str__(self) -> str:
    t, parts = self.translation, []
    if t in ("equivariant", "interior"):
      shift = _lattice(self.period)
      if any(q != 1 for q in self.step):
        shift += f"→{_lattice(self.step)}"
      parts.append(f"shift {shift}" + (" (interior)" if t == "interior" else ""))
    elif t == "adaptive":
      parts.append(f"shift {_lattice(self.period)} (adaptive)")
    elif t == "invariant":
      parts.append(f"invariant {_lattice(self.period)}")
    if self.group is not None:
      if self.group_action != "invariant":
        parts.append(f"equivariant {self.group}" if t == "invariant" else self.group)
      elif t == "invariant":
        parts.append(self.group)  # "invariant 4ℤ, p4": invariant to both
      else:
        parts.append(f"invariant {self.group}")
    return ", ".join(parts) if parts else "none"


@dataclasses.dataclass(frozen=True)
class Row:
  """One layer of a :class:`Summary`.

  Attributes:
    name: e.g. ``"conv(5, 32)"``, ``"pool(2)"``, ``"fc(100)"``,
      ``"inc(64, (96, 128), (16, 32), 32)"``.
    params: the layer's parameters.
    ops: the layer's ops per example.
    shape: the output shape without the batch, e.g. ``(28, 28, 32)``.
    children: for a composite layer, the rows of the layers it called.
    symmetry: what the network up to this row is exactly equivariant or invariant
      to (:class:`Symmetry`), or None when not derived (a row made by hand).
  """

  name: str
  params: int
  ops: int
  shape: tuple[int, ...]
  children: tuple[Row, ...] = ()
  symmetry: Symmetry | None = None


def _shape_str(shape: Sequence[int], sep: str = "×") -> str:
  return sep.join(str(d) for d in shape)


@dataclasses.dataclass(frozen=True)
class Summary:
  """A layer table: ``rows``, ``total_params``, ``total_ops``.

  ``str(summary)`` is the table with thousands separators; :meth:`to_markdown` and
  :meth:`to_csv` export it.

  Attributes:
    rows: one :class:`Row` per layer, in call order.
    input_shape: the input shape without the batch.
    title: the model's zoo name or class name.
  """

  rows: tuple[Row, ...]
  input_shape: tuple[int, ...]
  title: str = ""

  @property
  def total_params(self) -> int:
    return sum(r.params for r in self.rows)

  @property
  def total_ops(self) -> int:
    return sum(r.ops for r in self.rows)

  def _cells(self) -> list[tuple[str, str, str, str, str]]:
    cells = [("input", "", "", _shape_str(self.input_shape), "")]
    cells += [
        (
            r.name,
            f"{r.params:,}",
            f"{r.ops:,}",
            _shape_str(r.shape),
            "" if r.symmetry is None else str(r.symmetry),
        )
        for r in self.rows
    ]
    cells.append(("total", f"{self.total_params:,}", f"{self.total_ops:,}", "", ""))
    return cells

  def __str__(self) -> str:
    header = ("layer", "params", "ops", "output", "symmetry")
    cells = [header, *self._cells()]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [f"{self.title} on {_shape_str(self.input_shape)}"] if self.title else []
    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    for i, (name, params, ops, shape, symmetry) in enumerate(cells):
      lines.append(
          f"{name:<{widths[0]}}  {params:>{widths[1]}}  {ops:>{widths[2]}}  "
          f"{shape:<{widths[3]}}  {symmetry}".rstrip()
      )
      if i == 0 or i == len(cells) - 2:
        lines.append(rule)
    return "\n".join(lines)

  def to_markdown(self) -> str:
    """The table as GitHub markdown (numbers with thousands separators)."""
    lines = ["| layer | params | ops | output | symmetry |", "|:--|--:|--:|:--|:--|"]
    for name, params, ops, shape, symmetry in self._cells():
      if name == "total":
        name, params, ops = "**total**", f"**{params}**", f"**{ops}**"
      lines.append(f"| {name} | {params} | {ops} | {shape} | {symmetry} |")
    return "\n".join(lines) + "\n"

  def to_csv(self) -> str:
    """The layer rows as CSV: ``layer,params,ops,output,symmetry`` (plain integers,
    shapes like ``28x28x32``, the symmetry notation as in the table)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["layer", "params", "ops", "output", "symmetry"])
    for r in self.rows:
      symmetry = "" if r.symmetry is None else str(r.symmetry)
      writer.writerow([r.name, r.params, r.ops, _shape_str(r.shape, "x"), symmetry])
    return out.getvalue()


def register_describer(cls: type, *, symmetry: str = "none") -> Callable[[Describer], Describer]:
  """Registers how a leaf layer class describes itself in layer tables.

  The describer is called as ``describer(module, in_shape, out_shape)`` (shapes
  without the batch) and returns ``(name, params, ops)``. Subclasses inherit it.

  Args:
    cls: the layer class.
    symmetry: what the layer does to the symmetry column (one of
      :data:`SYMMETRY_RULES`): ``"none"`` (the default: no claim survives it),
      ``"pointwise"`` (it acts on each position alone, as a normalisation or an
      activation: every claim survives) or ``"global"`` (it pools over every spatial
      position: whole-map claims become invariance).

  Returns:
    A decorator that registers the describer and returns it.

  Raises:
    ValueError: an unknown ``symmetry``.

  Example:
    >>> from flax import nnx
    >>> from cnnjax import arithmetic
    >>> class MyNorm(nnx.Module):
    ...   def __call__(self, x):
    ...     return x / (1 + abs(x))
    >>> @register_describer(MyNorm, symmetry="pointwise")
    ... def _(m, in_shape, out_shape):
    ...   return "mynorm", 0, arithmetic.op_count("norm", in_shape=in_shape)
    >>> print(summary(MyNorm(), (4, 4, 3)))
    MyNorm on 4×4×3
    layer   params  ops  output  symmetry
    -----------------------------------------
    input                4×4×3
    mynorm       0   48  4×4×3   shift ℤ, p4m
    -----------------------------------------
    total        0   48
  """
  if symmetry not in SYMMETRY_RULES:
    raise ValueError(
        f"register_describer: symmetry got {symmetry!r}; expected one of {SYMMETRY_RULES}."
    )

  def add(describer: Describer) -> Describer:
    _DESCRIBERS[cls] = describer
    _SYMMETRY[cls] = _USER_RULES[symmetry]
    return describer

  return add


def _describer(cls: type) -> Describer | None:
  for base in cls.__mro__:
    if base in _DESCRIBERS:
      return _DESCRIBERS[base]
  return None


def _describable(cls: type) -> bool:
  return _describer(cls) is not None or callable(getattr(cls, "summary_name", None))


# ------------------------------------------------------------------ name formatting


def _ints(value, num_dims: int) -> tuple:
  if isinstance(value, int):
    return (value,) * num_dims
  return tuple(value)


def _size(value, num_dims: int) -> str:
  """``5`` for a square 5×5, ``3x5`` otherwise."""
  values = _ints(value, num_dims)
  return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))


def _padding(padding, num_dims: int) -> str | None:
  if isinstance(padding, str):
    return None if padding.upper() == "VALID" else padding.lower()
  if isinstance(padding, int):
    return f"p{padding}" if padding else None
  pads = tuple(padding)
  if all(isinstance(p, int) for p in pads):
    return None if not any(pads) else f"p{_size(pads, num_dims)}"
  pairs = tuple(tuple(p) for p in pads)
  if all(lo == hi for lo, hi in pairs):
    return _padding(tuple(lo for lo, _ in pairs), num_dims)
  return "p" + ",".join(f"{lo}:{hi}" for lo, hi in pairs)


def _name(kind: str, *items) -> str:
  return f"{kind}({', '.join(str(i) for i in items if i is not None)})"


def _extras(
    m,
    num_dims: int,
    *,
    stride: int | Sequence[int] = 1,
    padding: Any = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
) -> list:
  # (padding: a cnnjax or a Flax padding spec)
  extras = []
  if _ints(stride, num_dims) != (1,) * num_dims:
    extras.append(f"s{_size(stride, num_dims)}")
  extras.append(_padding(padding, num_dims))
  if _ints(dilation, num_dims) != (1,) * num_dims:
    extras.append(f"d{_size(dilation, num_dims)}")
  if groups != 1:
    extras.append(f"g{groups}")
  mode = getattr(m, "padding_mode", "zeros")
  if mode != "zeros":
    extras.append(mode)
  return extras


def _pool_name(kind: str, window, stride, padding, num_dims: int, m: Any = None) -> str:
  w = _size(window, num_dims)
  s = (
      None
      if stride is None or _ints(stride, num_dims) == _ints(window, num_dims)
      else _size(stride, num_dims)
  )
  # PyTorch's options of the pooling modules: d2, ceil, ÷4.
  dilation = getattr(m, "dilation", 1)
  extras = [] if _ints(dilation, num_dims) == (1,) * num_dims else [f"d{_size(dilation, num_dims)}"]
  extras += ["ceil"] if getattr(m, "ceil_mode", False) else []
  divisor = getattr(m, "divisor_override", None)
  extras += [] if divisor is None else [f"÷{divisor}"]
  return _name(kind, w, s, _padding(padding, num_dims), *extras)


# -------------------------------------------------------------------- describers


@register_describer(cnn.Conv)
def _conv(m: cnn.Conv, in_shape, out_shape):
  k, nd = m.kernel_size, len(m.kernel_size)
  extras = _extras(m, nd, stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups)
  if m.flip_kernel:
    extras.append("flipped")
  if getattr(m, "mask", None) is not None:
    extras.append("masked")
  if m.connections is not None:
    links = sum(sum(row) for row in m.connections)
    extras.append(f"{links} links")
    params = math.prod(k) * links + (m.out_features if m.use_bias else 0)
    ops = math.prod(out_shape[:-1]) * (math.prod(k) * links + m.out_features)
  else:
    params = arithmetic.param_count(
        "conv",
        kernel=k,
        in_channels=m.in_features,
        out_channels=m.out_features,
        groups=m.groups,
        use_bias=m.use_bias,
    )
    ops = arithmetic.op_count(
        "conv", in_shape=in_shape, out_shape=out_shape, kernel=k, groups=m.groups
    )
  return _name("conv", _size(k, nd), m.out_features, *extras), params, ops


@register_describer(cnn.DepthwiseConv)
def _depthwise(m: cnn.DepthwiseConv, in_shape, out_shape):
  k, nd, cin = m.kernel_size, len(m.kernel_size), m.in_features
  extras = _extras(m, nd, stride=m.stride, padding=m.padding, dilation=m.dilation)
  params = arithmetic.param_count(
      "conv",
      kernel=k,
      in_channels=cin,
      out_channels=m.out_features,
      groups=cin,
      use_bias=m.use_bias,
  )
  ops = arithmetic.op_count("conv", in_shape=in_shape, out_shape=out_shape, kernel=k, groups=cin)
  return _name("dwconv", _size(k, nd), m.out_features, *extras), params, ops


@register_describer(cnn.SeparableConv)
def _separable(m: cnn.SeparableConv, in_shape, out_shape):
  # The depthwise step (no bias: one multiply-add per weight and output), then 1×1.
  k, nd = m.kernel_size, len(m.kernel_size)
  mid = m.in_features * m.depth_multiplier
  extras = _extras(m, nd, stride=m.stride, padding=m.padding, dilation=m.dilation)
  extras += [f"×{m.depth_multiplier}"] if m.depth_multiplier != 1 else []
  params = math.prod(k) * mid + arithmetic.param_count(
      "conv", kernel=(1,) * nd, in_channels=mid, out_channels=m.out_features, use_bias=m.use_bias
  )
  ops = math.prod(out_shape[:-1]) * mid * math.prod(k) + arithmetic.op_count(
      "conv", in_shape=(*out_shape[:-1], mid), out_shape=out_shape, kernel=(1,) * nd
  )
  return _name("sepconv", _size(k, nd), m.out_features, *extras), params, ops


@register_describer(cnn.ConvTranspose)
def _conv_transpose(m: cnn.ConvTranspose, in_shape, out_shape):
  k, nd = m.kernel_size, len(m.kernel_size)
  extras = _extras(m, nd, stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups)
  params = arithmetic.param_count(
      "conv_transpose",
      kernel=k,
      in_channels=m.out_features,
      out_channels=m.in_features,
      groups=m.groups,
      use_bias=False,
  ) + (m.out_features if m.use_bias else 0)
  ops = arithmetic.op_count(
      "conv_transpose", in_shape=in_shape, out_shape=out_shape, kernel=k, groups=m.groups
  )
  return _name("convT", _size(k, nd), m.out_features, *extras), params, ops


@register_describer(cnn.LocallyConnected)
def _local(m: cnn.LocallyConnected, in_shape, out_shape):
  k, nd = m.kernel_size, len(m.kernel_size)
  extras = _extras(m, nd, stride=m.stride, padding=m.padding, dilation=m.dilation)
  params = arithmetic.param_count(
      "locally_connected",
      kernel=k,
      in_channels=m.in_features,
      out_channels=m.out_features,
      use_bias=m.use_bias,
      out_spatial=m.out_spatial,
  )
  ops = arithmetic.op_count("locally_connected", in_shape=in_shape, out_shape=out_shape, kernel=k)
  return _name("local", _size(k, nd), m.out_features, *extras), params, ops


@register_describer(cnn.TiledConv)
def _tiled(m: cnn.TiledConv, in_shape, out_shape):
  k, nd = m.kernel_size, len(m.kernel_size)
  extras = [f"t{_size(m.tile, nd)}"]
  extras += _extras(m, nd, stride=m.stride, padding=m.padding, dilation=m.dilation)
  params = arithmetic.param_count(
      "tiled",
      kernel=k,
      in_channels=m.in_features,
      out_channels=m.out_features,
      use_bias=m.use_bias,
      tile=m.tile,
  )
  ops = arithmetic.op_count("tiled", in_shape=in_shape, out_shape=out_shape, kernel=k)
  return _name("tiled", _size(k, nd), m.out_features, *extras), params, ops


@register_describer(cnn.DeformConv)
def _deform_conv(m: cnn.DeformConv, in_shape, out_shape):
  # The convolution it computes, plus its offset (and mask) convolution, plus the bilinear
  # sampling: 4 multiply-adds per sample (output position, tap and input channel).
  k, nd = m.kernel_size, 2
  extras = _extras(m, nd, stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups)
  if m.offset_groups != 1:
    extras.append(f"og{m.offset_groups}")
  if m.modulated:
    extras.append("modulated")
  predicted = m.offset_conv.out_features
  params = arithmetic.param_count(
      "conv",
      kernel=k,
      in_channels=m.in_features,
      out_channels=m.out_features,
      groups=m.groups,
      use_bias=m.use_bias,
  ) + arithmetic.param_count(
      "conv", kernel=k, in_channels=m.in_features, out_channels=predicted, use_bias=True
  )
  ops = (
      arithmetic.op_count("conv", in_shape=in_shape, out_shape=out_shape, kernel=k, groups=m.groups)
      + arithmetic.op_count(
          "conv", in_shape=in_shape, out_shape=(*out_shape[:-1], predicted), kernel=k
      )
      + 4 * math.prod(out_shape[:-1]) * math.prod(k) * m.in_features
  )
  return _name("dconv", _size(k, nd), m.out_features, *extras), params, ops


def _pool_ops(in_shape) -> int:
  return arithmetic.op_count("pool", in_shape=in_shape)


@register_describer(cnn.LiftConv)
@register_describer(cnn.GroupConv)
def _group_conv(m, in_shape, out_shape):
  # Counted as the convolution it is: one weight per (offset, input channel, output
  # channel), the group axis part of the input channels of a group convolution.
  lifting = isinstance(m, cnn.LiftConv)
  k = (m.kernel_size, m.kernel_size)
  in_channels = m.in_features * (1 if lifting else in_shape[-2])
  params = arithmetic.param_count(
      "conv", kernel=k, in_channels=in_channels, out_channels=m.out_features, use_bias=m.use_bias
  )
  # The |G| output maps of each channel as output channels of one 2-D convolution.
  ops = arithmetic.op_count(
      "conv",
      in_shape=(*in_shape[:2], in_channels),
      out_shape=(*out_shape[:2], math.prod(out_shape[2:])),
      kernel=k,
  )
  kind = "lift" if lifting else "gconv"
  return (
      _name(
          f"{kind}-{m.group}",
          _size(k, 2),
          m.out_features,
          *_extras(m, 2, stride=m.stride, padding=m.padding),
      ),
      params,
      ops,
  )


@register_describer(cnn.GroupPool)
def _group_pool(m, in_shape, out_shape):
  return _name("gpool", m.reduce), 0, _pool_ops(in_shape)


@register_describer(cnn.MaxPool)
def _max_pool(m, in_shape, out_shape):
  return (
      _pool_name("pool", m.window, m.stride, m.padding, len(in_shape) - 1, m),
      0,
      _pool_ops(in_shape),
  )


@register_describer(cnn.AvgPool)
def _avg_pool(m, in_shape, out_shape):
  name = _pool_name("avg", m.window, m.stride, m.padding, len(in_shape) - 1, m)
  return name, 0, _pool_ops(in_shape)


@register_describer(cnn.LpPool)
def _lp_pool(m, in_shape, out_shape):
  name = _pool_name(f"lp{m.p:g}", m.window, m.stride, m.padding, len(in_shape) - 1, m)
  return name, 0, _pool_ops(in_shape)


@register_describer(cnn.GlobalAvgPool)
def _global_avg(m, in_shape, out_shape):
  return "avg(global)", 0, _pool_ops(in_shape)


@register_describer(cnn.GlobalMaxPool)
def _global_max(m, in_shape, out_shape):
  return "pool(global)", 0, _pool_ops(in_shape)


@register_describer(cnn.Maxout)
def _maxout(m, in_shape, out_shape):
  return f"maxout({m.pieces})", 0, _pool_ops(in_shape)


@register_describer(cnn.BlurPool)
def _blur(m, in_shape, out_shape):
  nd = len(in_shape) - 1
  return _name("blur", _size(m.kernel_size, nd), f"s{_size(m.stride, nd)}"), 0, _pool_ops(in_shape)


@register_describer(cnn.PolyphaseDownsample)
def _aps(m, in_shape, out_shape):
  return _name("aps", f"s{_size(m.stride, len(in_shape) - 1)}"), 0, _pool_ops(in_shape)


@register_describer(cnn.LocalResponseNorm)
def _lrn(m, in_shape, out_shape):
  return f"lrn({m.size})", 0, arithmetic.op_count("norm", in_shape=in_shape)


@register_describer(nnx.BatchNorm)
def _batch_norm(m: nnx.BatchNorm, in_shape, out_shape):
  # arithmetic counts a normalisation's parameters as 0 (LRN has none); batch norm's
  # learned scale and offset are counted here (its running statistics are not).
  params = m.num_features * (int(m.use_scale) + int(m.use_bias))
  return "bn", params, arithmetic.op_count("norm", in_shape=in_shape)


@register_describer(nnx.Linear)
def _linear(m: nnx.Linear, in_shape, out_shape):
  params = arithmetic.param_count(
      "fc", in_channels=m.in_features, out_channels=m.out_features, use_bias=m.use_bias
  )
  ops = arithmetic.op_count("fc", in_shape=in_shape, out_shape=out_shape)
  return f"fc({m.out_features})", params, ops


@register_describer(nnx.Conv)
def _flax_conv(m: nnx.Conv, in_shape, out_shape):
  k, nd = tuple(m.kernel_size), len(m.kernel_size)
  extras = _extras(
      m,
      nd,
      stride=m.strides or 1,
      padding=m.padding,
      dilation=m.kernel_dilation or 1,
      groups=m.feature_group_count,
  )
  params = arithmetic.param_count(
      "conv",
      kernel=k,
      in_channels=m.in_features,
      out_channels=m.out_features,
      groups=m.feature_group_count,
      use_bias=m.use_bias,
  )
  ops = arithmetic.op_count(
      "conv", in_shape=in_shape, out_shape=out_shape, kernel=k, groups=m.feature_group_count
  )
  return _name("conv", _size(k, nd), m.out_features, *extras), params, ops


# ---------------------------------------------------------------------- symmetry
#
# A value's state (_State): the translation claim (kind, period P and step Q per spatial
# axis), and for "interior" claims the window of each output position in input pixels,
# ``[m·J − low, m·J − low + extent]`` with ``J = P / Q`` (exact fractions: an upsampling
# layer divides J); and the group claim (group, action). A leaf layer describes its
# effect (_Window or one of the plain effects); _apply maps a state through it.

_POINTWISE, _GLOBAL, _OPAQUE, _GROUP_POOL, _ADAPTIVE = (
    "pointwise",
    "global",
    "opaque",
    "group_pool",
    "adaptive",
)


@dataclasses.dataclass(frozen=True)
class _State:
  kind: str = "none"  # one of TRANSLATIONS
  dims: int = 0  # the leading spatial axes the claims are about
  period: tuple[int, ...] = ()
  step: tuple[int, ...] = ()
  low: tuple[Fraction, ...] = ()
  extent: tuple[Fraction, ...] = ()
  group: str | None = None
  action: str | None = None  # "plane", "map", "invariant"

  def public(self) -> Symmetry:
    moving = self.kind in ("equivariant", "interior")
    return Symmetry(
        self.kind,
        period=self.period if self.kind != "none" else (),
        step=self.step if moving else (),
        group=self.group,
        group_action=self.action,
    )

  def only_invariance(self) -> _State:
    """What survives an unseen function of this value: its invariance."""
    if self.kind == "invariant":
      kind, period = "invariant", self.period
    else:
      kind, period = "none", ()
    group, action = (self.group, self.action) if self.action == "invariant" else (None, None)
    return _State(kind, period=period, group=group, action=action)


def _input_state(input_shape: tuple[int, ...]) -> _State:
  dims = len(input_shape) - 1
  square = dims == 2 and input_shape[0] == input_shape[1]
  group, action = ("p4m", "plane") if square else (None, None)
  if dims < 1:
    return _State(group=group, action=action)
  one = (1,) * dims
  zero = (Fraction(0),) * dims
  return _State("equivariant", dims, one, one, zero, zero, group, action)


@dataclasses.dataclass(frozen=True)
class _Window:
  """A sliding-window layer: ``geometry`` over its spatial axes (the claims' ``dims``
  leading ones, then any extra axis such as the group axis of a pooled group map)."""

  geometry: Geometry
  mode: str = "zeros"  # the padding's mode; "zeros" for any constant (−inf too)
  # "conv": a learned kernel; "pool": a window that every rotation and mirror maps to
  # itself (pooling, blur); "lift", "gconv": the group convolutions of `group`;
  # "tiled"; "unshared"; "transpose" (upsampling by the stride).
  kind: str = "conv"
  group: str | None = None
  tile: tuple[int, ...] = ()


_Effect = _Window | str


def _lcm(values: Sequence[int]) -> int:
  return math.lcm(*values) if values else 1


def _has_interior(n: int, size: int, period: int, step: int, low, extent) -> bool:
  """Whether some output position's window is off the border for a shift by ±period."""
  jump = Fraction(period, step)
  for t in (period, -period):
    first, last = max(0, t), min(n, n + t) - 1  # the unwrapped copy of the input
    lo = math.ceil((first + low) / jump)
    hi = math.floor((last - extent + low) / jump)
    if max(0, lo) <= min(size - 1, hi):
      return True
  return False


def _interior_or_none(state: _State, out_shape, n_input) -> _State:
  if state.kind != "interior":
    return state
  for d in range(state.dims):
    if not _has_interior(
        n_input[d], out_shape[d], state.period[d], state.step[d], state.low[d], state.extent[d]
    ):
      return dataclasses.replace(state, kind="none", period=(), step=(), low=(), extent=())
  return state


def _window_translation(state: _State, w: _Window, out_shape, n_input) -> _State:
  g = w.geometry
  none = dataclasses.replace(state, kind="none", period=(), step=(), low=(), extent=())
  if state.kind in ("none", "invariant"):
    return state
  if w.kind == "unshared" or len(g.in_spatial) < state.dims:
    return none
  dims = range(state.dims)
  exact = []
  for d in dims:
    n, m, s, (lo, hi) = g.in_spatial[d], g.out_spatial[d], g.stride[d], g.pads[d]
    t = w.tile[d] if w.tile else 1
    if w.kind == "transpose":
      exact.append(n == m and s == 1 and g.kernel_eff[d] == 1 and lo == hi == 0)
    else:
      exact.append(
          (lo + hi == 0 or w.mode == "circular") and n % s == 0 and m == n // s and m % t == 0
      )
  whole = all(exact)
  if state.kind == "adaptive":
    tiles = w.tile or (1,) * len(g.in_spatial)
    moves = any(g.stride[d] != 1 or tiles[d] != 1 for d in dims)
    return state if whole and not moves and w.kind != "transpose" else none
  period, step, low, extent = [], [], [], []
  for d in dims:
    p, q, lo_d, e_d = state.period[d], state.step[d], state.low[d], state.extent[d]
    jump = Fraction(p, q)
    s, r, pad = g.stride[d], g.kernel_eff[d], g.pads[d][0]
    if w.kind == "transpose":
      # The adjoint of a forward window op of stride s: the output shift is s times the
      # input's; output j reads inputs in [(j + lo − r̂ + 1) / s, (j + lo) / s].
      period.append(p)
      step.append(q * s)
      low.append(lo_d + (r - 1 - pad) * jump / s)
      extent.append(e_d + (r - 1) * jump / s)
      continue
    c = s * (w.tile[d] if w.tile else 1)  # layer-input shifts must be multiples of c
    k = c // math.gcd(q, c)
    period.append(p * k)
    step.append(q * k // s)
    low.append(lo_d + pad * jump)
    extent.append(e_d + (r - 1) * jump)
  kind = "equivariant" if whole and state.kind == "equivariant" else "interior"
  new = dataclasses.replace(
      state,
      kind=kind,
      period=tuple(period),
      step=tuple(step),
      low=tuple(low),
      extent=tuple(extent),
  )
  return _interior_or_none(new, out_shape, n_input)


def _symmetric_plane(g: Geometry) -> bool:
  """Whether the window grid on the first two axes is one square grid symmetric about
  the centre, so that quarter turns and mirrors map windows onto windows."""
  if len(g.in_spatial) < 2:
    return False
  per_dim = [(g.in_spatial[d], g.kernel_eff[d], g.stride[d], g.pads[d]) for d in range(2)]
  if per_dim[0] != per_dim[1]:
    return False
  n, r, s, (lo, _) = per_dim[0]
  return s * (g.out_spatial[0] - 1) == n - r + 2 * lo


def _trivial(g: Geometry, dims: Sequence[int]) -> bool:
  return all(g.kernel_eff[d] == 1 and g.stride[d] == 1 and g.pads[d] == (0, 0) for d in dims)


def _window_group(state: _State, w: _Window) -> tuple[str | None, str | None]:
  if state.action in (None, "invariant"):
    return state.group, state.action
  g = w.geometry
  nd = len(g.in_spatial)
  if w.kind == "conv" and _trivial(g, range(nd)):
    return state.group, state.action  # 1×1, stride 1: acts on each position alone
  symmetric = state.dims == 2 and _symmetric_plane(g)
  if w.kind == "pool" and symmetric and _trivial(g, range(2, nd)):
    return state.group, state.action
  order = _GROUP_ORDER.get
  if (
      w.kind == "lift"
      and symmetric
      and state.action == "plane"
      and order(w.group or "", 99) <= order(state.group or "", 0)  # p4 ⊂ p4m
  ):
    return w.group, "map"
  if w.kind == "gconv" and symmetric and state.action == "map" and state.group == w.group:
    return w.group, "map"
  return None, None


def _apply(effect: _Effect, state: _State, out_shape, n_input) -> _State:
  """The state of a leaf layer's output, from its input's."""
  if effect == _POINTWISE:
    return state
  if effect == _OPAQUE:
    return state.only_invariance()
  if effect == _GLOBAL:
    if state.kind in ("equivariant", "adaptive", "invariant"):
      kind, period = "invariant", state.period
    else:
      kind, period = "none", ()
    action = "invariant" if state.action is not None else None
    return _State(kind, period=period, group=state.group if action else None, action=action)
  if effect == _GROUP_POOL:
    if state.action == "map":
      return dataclasses.replace(state, action="plane")
    if state.action == "invariant":
      return state
    return dataclasses.replace(state, group=None, action=None)
  if effect == _ADAPTIVE:
    kind = state.kind
    if kind in ("equivariant", "adaptive"):
      kind = "adaptive"
    elif kind == "interior":
      kind = "none"
    invariant = state.action == "invariant"
    return dataclasses.replace(
        state,
        kind=kind,
        period=state.period if kind != "none" else (),
        step=(),
        low=(),
        extent=(),
        group=state.group if invariant else None,
        action=state.action if invariant else None,
    )
  assert isinstance(effect, _Window)
  state = _window_translation(state, effect, out_shape, n_input)
  group, action = _window_group(state, effect)
  return dataclasses.replace(state, group=group, action=action)


def _combine(values: Sequence[tuple[tuple[int, ...], _State]], out_shape, n_input) -> _State:
  """A composite's output state from the values inside it (its input first): every
  claim they share, the period the lcm of theirs, the output's motion from the values
  with the output's spatial shape (those it can be made of)."""
  states = [s for _, s in values]
  candidates = [s for shape, s in values if shape[:-1] == tuple(out_shape[:-1])]
  kinds = {s.kind for s in states}
  moving = [c for c in candidates if c.kind in ("equivariant", "interior", "adaptive")]
  dims = {len(s.period) for s in states}
  translation = _State()
  if "none" not in kinds and candidates and len(dims) == 1:
    period = tuple(_lcm([s.period[d] for s in states]) for d in range(dims.pop()))
    if "adaptive" in kinds and states[0].kind != "adaptive":
      pass  # adaptive sampling inside: branches may move differently
    elif not moving:
      translation = _State("invariant", period=period)
    elif states[0].kind == "adaptive":
      translation = _State("adaptive", moving[0].dims, period)
    else:
      jumps = {tuple(Fraction(p, q) for p, q in zip(c.period, c.step, strict=True)) for c in moving}
      if len(jumps) == 1:
        jump = jumps.pop()
        kind = "equivariant" if kinds <= {"equivariant", "invariant"} else "interior"
        low = tuple(max(c.low[d] for c in moving) for d in range(len(period)))
        extent = tuple(
            max(c.extent[d] - c.low[d] for c in moving) + low[d] for d in range(len(period))
        )
        step = tuple(int(p / j) for p, j in zip(period, jump, strict=True))
        translation = _interior_or_none(
            _State(kind, moving[0].dims, period, step, low, extent), out_shape, n_input
        )
  group = action = None
  groups = {s.group for s in states if s.group is not None}
  if all(s.group is not None for s in states) and candidates:
    shared = min(groups, key=lambda g: _GROUP_ORDER[g])  # p4 ⊂ p4m
    actions = {c.action for c in candidates}
    maps = {s.group for s in states if s.action == "map"}
    if actions == {"invariant"}:
      group, action = shared, "invariant"
    elif len(actions - {"invariant"}) == 1 and maps <= {shared}:
      group, action = shared, (actions - {"invariant"}).pop()
  dims_out = translation.dims if translation.kind != "none" else states[0].dims
  return dataclasses.replace(translation, dims=dims_out, group=group, action=action)


def _rule(*classes: type) -> Callable[[_Rule], _Rule]:
  """Registers the symmetry effect of cnnjax's own leaf layers (after their describers)."""

  def add(rule: _Rule) -> _Rule:
    for cls in classes:
      _SYMMETRY[cls] = rule
    return rule

  return add


def _effect(m: Any, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> _Effect:
  for base in type(m).__mro__:
    if base in _SYMMETRY:
      try:
        return _SYMMETRY[base](m, in_shape, out_shape)
      except (ValueError, TypeError):  # a geometry the arithmetic does not resolve
        return _OPAQUE
  return _OPAQUE


def _geometry(
    spatial,
    kernel,
    *,
    stride: Any = 1,
    padding: Any = "VALID",
    dilation: Any = 1,
    ceil_mode: bool = False,
):
  return conv_geometry(
      tuple(spatial),
      tuple(kernel),
      stride=stride,
      padding=padding,
      dilation=dilation,
      ceil_mode=ceil_mode,
      op="summary",
  )


@_rule(cnn.Conv, cnn.DepthwiseConv, cnn.SeparableConv)
def _conv_effect(
    m: cnn.Conv | cnn.DepthwiseConv | cnn.SeparableConv, in_shape, out_shape
) -> _Effect:
  geo = _geometry(
      in_shape[:-1], m.kernel_size, stride=m.stride, padding=m.padding, dilation=m.dilation
  )
  return _Window(geo, m.padding_mode)


@_rule(cnn.TiledConv)
def _tiled_effect(m: cnn.TiledConv, in_shape, out_shape) -> _Effect:
  geo = _geometry(
      in_shape[:-1], m.kernel_size, stride=m.stride, padding=m.padding, dilation=m.dilation
  )
  return _Window(geo, m.padding_mode, kind="tiled", tile=tuple(m.tile))


@_rule(cnn.ConvTranspose)
def _transpose_effect(m: cnn.ConvTranspose, in_shape, out_shape) -> _Effect:
  # The forward convolution it transposes maps the output's shape to the input's.
  geo = _geometry(
      out_shape[:-1], m.kernel_size, stride=m.stride, padding=m.padding, dilation=m.dilation
  )
  if geo.out_spatial != tuple(in_shape[:-1]):
    return _OPAQUE
  return _Window(geo, kind="transpose")


@_rule(cnn.LiftConv, cnn.GroupConv)
def _group_conv_effect(m, in_shape, out_shape) -> _Effect:
  geo = _geometry(in_shape[:2], (m.kernel_size, m.kernel_size), stride=m.stride, padding=m.padding)
  kind = "lift" if isinstance(m, cnn.LiftConv) else "gconv"
  return _Window(geo, kind=kind, group=m.group)


@_rule(cnn.MaxPool, cnn.AvgPool, cnn.LpPool)
def _pool_effect(m, in_shape, out_shape) -> _Effect:
  nd = len(in_shape) - 1
  window = _ints(m.window, nd)
  stride = window if m.stride is None else m.stride
  geo = _geometry(
      in_shape[:-1],
      window,
      stride=stride,
      padding=m.padding,
      dilation=getattr(m, "dilation", 1),
      ceil_mode=getattr(m, "ceil_mode", False),
  )
  return _Window(geo, kind="pool")


@_rule(cnn.BlurPool)
def _blur_effect(m: cnn.BlurPool, in_shape, out_shape) -> _Effect:
  sizes = _ints(m.kernel_size, len(in_shape) - 1)
  pads = tuple(((k - 1) // 2, k // 2) for k in sizes)
  geo = _geometry(in_shape[:-1], sizes, stride=m.stride, padding=pads)
  return _Window(geo, m.padding_mode, kind="pool")


@_rule(cnn.GlobalAvgPool, cnn.GlobalMaxPool)
def _global_effect(m, in_shape, out_shape) -> _Effect:
  return _GLOBAL


@_rule(cnn.GroupPool)
def _group_pool_effect(m, in_shape, out_shape) -> _Effect:
  return _GROUP_POOL


@_rule(cnn.PolyphaseDownsample)
def _aps_effect(m, in_shape, out_shape) -> _Effect:
  return _ADAPTIVE


@_rule(cnn.LocalResponseNorm, nnx.Linear)
def _pointwise_effect(m, in_shape, out_shape) -> _Effect:
  return _POINTWISE  # (nnx.Linear maps the last axis: a flattened vector, or channels)


@_rule(cnn.Maxout)
def _maxout_effect(m: cnn.Maxout, in_shape, out_shape) -> _Effect:
  return _POINTWISE if m.axis in (-1, len(in_shape)) else _OPAQUE


@_rule(nnx.BatchNorm)
def _batch_norm_effect(m: nnx.BatchNorm, in_shape, out_shape) -> _Effect:
  # Eval mode (summary traces it so): an affine map per channel.
  return _POINTWISE if m.axis in (-1, len(in_shape)) else _OPAQUE


@_rule(nnx.Conv)
def _flax_conv_effect(m: nnx.Conv, in_shape, out_shape) -> _Effect:
  kernel = tuple(m.kernel_size)
  nd = len(kernel)
  if len(in_shape) - 1 != nd or _ints(m.input_dilation or 1, nd) != (1,) * nd:
    return _OPAQUE  # batch axes inside the map, or an input dilation
  dilation = _ints(m.kernel_dilation or 1, nd)
  padding, mode = m.padding, "zeros"
  if isinstance(padding, str) and padding.upper() in ("CIRCULAR", "REFLECT"):
    eff = [(k - 1) * t + 1 for k, t in zip(kernel, dilation, strict=True)]
    mode = "circular" if padding.upper() == "CIRCULAR" else "reflect"
    padding = tuple(((r - 1) // 2, r // 2) for r in eff)
  elif not isinstance(padding, str) and not isinstance(padding, int):
    padding = tuple(p if isinstance(p, int) else tuple(p) for p in padding)
  geo = _geometry(in_shape[:-1], kernel, stride=m.strides or 1, padding=padding, dilation=dilation)
  return _Window(geo, mode)


# --------------------------------------------------------------------- recording


class _Frame:
  """The rows of one call (the model's, or a composite layer's) and the values they
  made: ``(shape, state)`` of its input, then of each row's output."""

  def __init__(self, in_shape: tuple[int, ...], state: _State):
    self.rows: list[Row] = []
    self.values: list[tuple[tuple[int, ...], _State]] = [(in_shape, state)]

  def state_of(self, in_shape: tuple[int, ...]) -> _State:
    """The state of a layer's input: the latest value of its shape; else an unseen
    function (a reshape) of the latest value, of which only invariance survives."""
    for shape, state in reversed(self.values):
      if shape == in_shape:
        return state
    return self.values[-1][1].only_invariance()


class _Recorder:
  """Rows recorded during one trace; a frame per composite layer being called."""

  def __init__(self, input_shape: tuple[int, ...]):
    self.input_spatial = input_shape[:-1]
    self.frames: list[_Frame] = [_Frame(input_shape, _input_state(input_shape))]
    self.calling: list[Any] = []


_ACTIVE: list[_Recorder] = []


def _out_shape(out) -> tuple[int, ...]:
  leaf = jax.tree.leaves(out)[0]
  return tuple(leaf.shape[1:])


def _recording_call(orig: Callable) -> Callable:
  @functools.wraps(orig)
  def call(self, *args, **kwargs):
    rec = _ACTIVE[-1] if _ACTIVE else None
    if rec is None or (rec.calling and rec.calling[-1] is self) or not args:
      return orig(self, *args, **kwargs)
    in_shape = tuple(jnp.shape(args[0])[1:])
    parent = rec.frames[-1]
    in_state = parent.state_of(in_shape)
    rec.calling.append(self)
    rec.frames.append(_Frame(in_shape, in_state))
    try:
      out = orig(self, *args, **kwargs)
    finally:
      frame = rec.frames.pop()
      rec.calling.pop()
    out_shape = _out_shape(out)
    describer = _describer(type(self))
    if describer is not None:
      name, params, ops = describer(self, in_shape, out_shape)
      state = _apply(_effect(self, in_shape, out_shape), in_state, out_shape, rec.input_spatial)
      row = Row(name, int(params), int(ops), out_shape, symmetry=state.public())
    else:
      children = tuple(frame.rows)
      state = _combine(frame.values, out_shape, rec.input_spatial)
      row = Row(
          self.summary_name(),
          sum(r.params for r in children),
          sum(r.ops for r in children),
          out_shape,
          children,
          state.public(),
      )
    parent.rows.append(row)
    parent.values.append((out_shape, state))
    return out

  call.__dict__["_cnnjax_recording"] = True  # (a function attribute: what __enter__ checks)
  return call


class _Patched:
  """Wraps ``__call__`` of the given classes while active; restores it on exit."""

  def __init__(self, classes):
    self.classes = [c for c in dict.fromkeys(classes) if _describable(c)]
    self.saved: list[tuple[type, Any]] = []

  def __enter__(self):
    for cls in self.classes:
      current = cls.__call__
      if getattr(current, "_cnnjax_recording", False):
        continue
      self.saved.append((cls, cls.__dict__.get("__call__")))
      cls.__call__ = _recording_call(current)
    return self

  def __exit__(self, *exc):
    for cls, own in reversed(self.saved):
      if own is None:
        del cls.__call__
      else:
        cls.__call__ = own
    return False


def _eval_mode_call(model: nnx.Module, x: jax.Array):
  # ``model`` is eval_shape's copy: eval mode changes no state of the caller's model,
  # and without batch-statistic updates the trace is far cheaper.
  model.eval()
  return model(x)


def _check_input_shape(input_shape, *, op: str) -> tuple[int, ...]:
  if (
      isinstance(input_shape, (str, int))
      or not isinstance(input_shape, Sequence)
      or not input_shape
      or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in input_shape)
  ):
    raise ValueError(
        f"{op}: input_shape got {input_shape!r}; expected the input shape without the "
        "batch, a tuple of positive ints such as (32, 32, 3)."
    )
  return tuple(input_shape)


def summary(
    model: nnx.Module | str,
    input_shape: Sequence[int] | None = None,
    *,
    num_classes: int | None = None,
    dtype: Any = jnp.float32,
    **options: Any,
) -> Summary:
  """The layer table of a model: parameters, ops, output shape and symmetry per layer.

  Works abstractly: a zoo model is built under ``nnx.eval_shape`` and every model is
  traced with ``nnx.eval_shape`` (in eval mode), so nothing is allocated or computed.

  The symmetry column (``Row.symmetry``, a :class:`Symmetry`) says what the network
  from its input up to each row is exactly equivariant or invariant to, derived from
  the layers' arithmetic: ``shift 4ℤ`` (circular shifts by multiples of 4 shift the
  output by a quarter as much, on the whole map), ``shift 4ℤ (interior)`` (the same,
  on the positions that padding and the border cannot reach), ``shift ℤ (adaptive)``
  (after APS: by an input-dependent amount), ``invariant 4ℤ``, ``p4`` / ``p4m``
  (equivariant to quarter turns and mirrors of a square input), ``invariant p4``, or
  ``none``. The module's docstring has the full notation and the rules.

  Args:
    model: an ``nnx.Module`` taking ``[N, *input_shape]``, or a zoo name
      (:func:`cnnjax.models.names`).
    input_shape: the input shape without the batch, e.g. ``(32, 32, 3)``; default the
      zoo model's default, or the model's ``input_shape`` attribute.
    num_classes: for a zoo name, the number of classes (default the model's).
    dtype: the input dtype used for tracing.
    **options: for a zoo name, options for :func:`cnnjax.models.get`
      (e.g. ``conv="tiled"``).

  Returns:
    A :class:`Summary`.

  Raises:
    ValueError: an unknown name, a bad ``input_shape``, or options with a model
      instance.

  Example:
    >>> print(summary("seed-cnn", (32, 32, 3)))
    seed-cnn on 32×32×3
    layer         params        ops  output    symmetry
    --------------------------------------------------------------
    input                            32×32×3
    conv(5, 32)    2,432  1,906,688  28×28×32  shift ℤ (interior)
    pool(2)            0     25,088  14×14×32  shift 2ℤ (interior)
    conv(5, 64)   51,264  5,126,400  10×10×64  shift 2ℤ (interior)
    pool(2)            0      6,400  5×5×64    shift 4ℤ (interior)
    fc(100)      160,100    160,100  100       none
    fc(10)         1,010      1,010  10        none
    --------------------------------------------------------------
    total        214,806  7,225,686
  """
  op = "summary"
  if isinstance(model, str):
    from cnnjax import models  # the zoo imports cnnjax.nn; import it only when needed

    name = model
    if name not in models.names():
      raise ValueError(f"{op}: model got {name!r}; expected a module or one of {models.names()}.")
    if input_shape is None:
      input_shape = models.default_input_shape(name)
    input_shape = _check_input_shape(input_shape, op=op)
    model = models.abstract(name, num_classes=num_classes, input_shape=input_shape, **options)
    title = name
  else:
    if num_classes is not None or options:
      raise ValueError(
          f"{op}: num_classes/options got {num_classes!r}/{options!r} with a model "
          "instance; expected them only with a zoo name."
      )
    if input_shape is None:
      input_shape = getattr(model, "input_shape", None)
      if input_shape is None:
        raise ValueError(
            f"{op}: input_shape got None for a {type(model).__name__} without an "
            "input_shape attribute; expected the input shape without the batch."
        )
    input_shape = _check_input_shape(input_shape, op=op)
    title = type(model).__name__
  classes = [type(m) for _, m in nnx.iter_modules(model)] + list(_DESCRIBERS)
  recorder = _Recorder(input_shape)
  x = jax.ShapeDtypeStruct((1, *input_shape), dtype)
  with _Patched(classes):
    _ACTIVE.append(recorder)
    try:
      nnx.eval_shape(_eval_mode_call, model, x)
    finally:
      _ACTIVE.pop()
  return Summary(tuple(recorder.frames[0].rows), input_shape, title)


class _CallableModule(types.ModuleType):
  """This module, callable as its :func:`summary`.

  ``cnnjax.summary`` is the function (``cnnjax``'s lazy attribute), but Python's import
  system binds the package attribute to this module whenever the module is first imported
  before that attribute was read (``import cnnjax.summary``, or a helper importing it), and
  ``cnnjax.summary(model, shape)`` then called a module. Calling the module calls the
  function, so both spellings work in any import order.
  """

  def __call__(self, *args: Any, **kwargs: Any) -> Summary:
    return summary(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
