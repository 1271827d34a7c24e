"""Lecture-style layer tables: parameters, ops and output shape per layer.

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
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from cnnjax import arithmetic
from cnnjax import nn as cnn

__all__ = ["Row", "Summary", "register_describer", "summary"]

Describer = Callable[[Any, tuple, tuple], tuple[str, int, int]]
_DESCRIBERS: dict[type, Describer] = {}


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
  """

  name: str
  params: int
  ops: int
  shape: tuple[int, ...]
  children: tuple[Row, ...] = ()


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

  def _cells(self) -> list[tuple[str, str, str, str]]:
    cells = [("input", "", "", _shape_str(self.input_shape))]
    cells += [(r.name, f"{r.params:,}", f"{r.ops:,}", _shape_str(r.shape)) for r in self.rows]
    cells.append(("total", f"{self.total_params:,}", f"{self.total_ops:,}", ""))
    return cells

  def __str__(self) -> str:
    header = ("layer", "params", "ops", "output")
    cells = [header, *self._cells()]
    widths = [max(len(row[i]) for row in cells) for i in range(4)]
    lines = [f"{self.title} on {_shape_str(self.input_shape)}"] if self.title else []
    for i, (name, params, ops, shape) in enumerate(cells):
      lines.append(
          f"{name:<{widths[0]}}  {params:>{widths[1]}}  {ops:>{widths[2]}}  {shape}".rstrip()
      )
      if i == 0 or i == len(cells) - 2:
        lines.append("-" * (sum(widths) + 6))
    return "\n".join(lines)

  def to_markdown(self) -> str:
    """The table as GitHub markdown (numbers with thousands separators)."""
    lines = ["| layer | params | ops | output |", "|:--|--:|--:|:--|"]
    for name, params, ops, shape in self._cells():
      if name == "total":
        name, params, ops = "**total**", f"**{params}**", f"**{ops}**"
      lines.append(f"| {name} | {params} | {ops} | {shape} |")
    return "\n".join(lines) + "\n"

  def to_csv(self) -> str:
    """The layer rows as CSV: ``layer,params,ops,output`` (plain integers, shapes
    like ``28x28x32``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["layer", "params", "ops", "output"])
    for r in self.rows:
      writer.writerow([r.name, r.params, r.ops, _shape_str(r.shape, "x")])
    return out.getvalue()


def register_describer(cls: type) -> Callable[[Describer], Describer]:
  """Registers how a leaf layer class describes itself in layer tables.

  The describer is called as ``describer(module, in_shape, out_shape)`` (shapes
  without the batch) and returns ``(name, params, ops)``. Subclasses inherit it.

  Example:
    >>> from flax import nnx
    >>> from cnnjax import arithmetic
    >>> class MyNorm(nnx.Module):
    ...   def __call__(self, x):
    ...     return x / (1 + abs(x))
    >>> @register_describer(MyNorm)
    ... def _(m, in_shape, out_shape):
    ...   return "mynorm", 0, arithmetic.op_count("norm", in_shape=in_shape)
    >>> print(summary(MyNorm(), (4, 4, 3)))
    MyNorm on 4×4×3
    layer   params  ops  output
    ---------------------------
    input                4×4×3
    mynorm       0   48  4×4×3
    ---------------------------
    total        0   48
  """

  def add(describer: Describer) -> Describer:
    _DESCRIBERS[cls] = describer
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


def _pool_name(kind: str, window, stride, padding, num_dims: int) -> str:
  w = _size(window, num_dims)
  s = (
      None
      if stride is None or _ints(stride, num_dims) == _ints(window, num_dims)
      else _size(stride, num_dims)
  )
  return _name(kind, w, s, _padding(padding, num_dims))


# -------------------------------------------------------------------- describers


@register_describer(cnn.Conv)
def _conv(m: cnn.Conv, in_shape, out_shape):
  k, nd = m.kernel_size, len(m.kernel_size)
  extras = _extras(m, nd, stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups)
  if m.flip_kernel:
    extras.append("flipped")
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
      _pool_name("pool", m.window, m.stride, m.padding, len(in_shape) - 1),
      0,
      _pool_ops(in_shape),
  )


@register_describer(cnn.AvgPool)
def _avg_pool(m, in_shape, out_shape):
  return _pool_name("avg", m.window, m.stride, m.padding, len(in_shape) - 1), 0, _pool_ops(in_shape)


@register_describer(cnn.LpPool)
def _lp_pool(m, in_shape, out_shape):
  name = _pool_name(f"lp{m.p:g}", m.window, m.stride, m.padding, len(in_shape) - 1)
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


# --------------------------------------------------------------------- recording


class _Recorder:
  """Rows recorded during one trace; a frame per composite layer being called."""

  def __init__(self):
    self.frames: list[list[Row]] = [[]]
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
    rec.calling.append(self)
    rec.frames.append([])
    try:
      out = orig(self, *args, **kwargs)
    finally:
      children = tuple(rec.frames.pop())
      rec.calling.pop()
    out_shape = _out_shape(out)
    describer = _describer(type(self))
    if describer is not None:
      name, params, ops = describer(self, in_shape, out_shape)
      row = Row(name, int(params), int(ops), out_shape)
    else:
      row = Row(
          self.summary_name(),
          sum(r.params for r in children),
          sum(r.ops for r in children),
          out_shape,
          children,
      )
    rec.frames[-1].append(row)
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
  """The layer table of a model: parameters, ops and output shape per layer.

  Works abstractly: a zoo model is built under ``nnx.eval_shape`` and every model is
  traced with ``nnx.eval_shape``, so nothing is allocated or computed.

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
    layer         params        ops  output
    -----------------------------------------
    input                            32×32×3
    conv(5, 32)    2,432  1,906,688  28×28×32
    pool(2)            0     25,088  14×14×32
    conv(5, 64)   51,264  5,126,400  10×10×64
    pool(2)            0      6,400  5×5×64
    fc(100)      160,100    160,100  100
    fc(10)         1,010      1,010  10
    -----------------------------------------
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
  recorder = _Recorder()
  x = jax.ShapeDtypeStruct((1, *input_shape), dtype)
  with _Patched(classes):
    _ACTIVE.append(recorder)
    try:
      nnx.eval_shape(_eval_mode_call, model, x)
    finally:
      _ACTIVE.pop()
  return Summary(tuple(recorder.frames[0]), input_shape, title)
