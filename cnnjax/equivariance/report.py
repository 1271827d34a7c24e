"""Where a network loses its symmetry: the equivariance error of each layer under transforms.

:func:`report` runs a model on images and on transformed images and compares, for every
named layer (the rows of :func:`cnnjax.summary.summary`: convolutions, pools, fc and
normalisation layers, and composite layers such as residual blocks), the layer's output
on the transformed images with the transform's *action* on its output for the original
images:

* a shift by ``t`` pixels acts on a layer whose inputs are ``S`` pixels apart (its
  cumulative stride, :func:`cnnjax.arithmetic.jump`) as a shift by ``t / S``; where
  ``t`` is not a multiple of ``S`` there is no exact counterpart and the nearest shift
  is used (``LayerError.approximate``);
* flips, quarter turns and transposes act on a layer's output as on the image; on a
  feature map over p4 or p4m (``[N, H, W, |G|, C]``, after :func:`cnnjax.lift_conv`)
  they act as :func:`~cnnjax.equivariance.group_action` (a reflection on a p4 map has
  no counterpart: approximate);
* a layer without spatial axes (after flattening or global pooling) should not change:
  its error is an invariance error.

Each error is split into the *interior*, the output positions whose input window (from
:mod:`cnnjax.arithmetic`: receptive field, jump and padding of the layers before) reads
neither padding nor pixels that the transform moved across the image's border, and the
*boundary*, the rest; the error map says where in the image the error sits. At the
logits the report gives the invariance error, the share of images whose predicted class
is unchanged and, with labels, the accuracy under the transform.

Layers are found by wrapping the ``__call__`` of the model's describable classes while
the model is traced (as :func:`cnnjax.summary.summary` does): Flax's ``nnx.capture``
(flax 0.12) records outputs by attribute path only, without the call order and the
inputs that place a layer in the arithmetic (a residual block's projection runs beside
its convolutions, not after them). Functions called between layers (activations,
reshapes, a pooling function) are taken to be pointwise.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from cnnjax import group as _group
from cnnjax import padding as _padding
from cnnjax._checks import is_int
from cnnjax.equivariance.group_actions import group_action
from cnnjax.equivariance.specs import parse_transforms
from cnnjax.equivariance.transforms import (
    Reflection,
    Rotation,
    Step,
    Transform,
    Translation,
    Transposition,
)

if TYPE_CHECKING:
  from flax import nnx

__all__ = ["EquivarianceReport", "LayerError", "LogitsError", "TransformReport", "report"]


@functools.cache
def _flax() -> tuple[Any, Any]:
  """``(flax.nnx, cnnjax.nn)``, imported on first use: ``import cnnjax`` stays light."""
  from flax import nnx  # noqa: PLC0415

  from cnnjax import nn as cnn  # noqa: PLC0415

  return nnx, cnn


# ------------------------------------------------------------------------------ results


@dataclasses.dataclass(frozen=True)
class LayerError:
  """The equivariance error of one layer's output under one transform.

  Relative errors are ``‖f_l(g·x) − ρ(g)·f_l(x)‖ / ‖ρ(g)·f_l(x)‖`` over all images
  (Frobenius norms in float32 or wider), ``ρ(g)`` the action described by ``action``;
  0 for an exactly equivariant layer.

  Attributes:
    name: the layer's attribute path in the model, e.g. ``"conv1"``,
      ``"blocks.layers.3"`` (``"#2"`` appended for a second call of the same layer).
    kind: its row name in layer tables, e.g. ``"conv(5, 32)"``.
    shape: its output shape without the batch.
    stride: its cumulative stride (jump) per spatial dim; None without spatial axes.
    action: how the transform acts on this output, e.g. ``"shift (1, 1)"``,
      ``"rot90(1), p4 element 1"``, ``"none (invariance)"``.
    approximate: True when the transform has no exact counterpart here (a shift that is
      not a multiple of ``stride``, a reflection of a p4 map): ``action`` is the nearest.
    error: the relative error over the whole output.
    interior_error: over the interior (None: no interior position, or the geometry of
      the layers before is unknown).
    boundary_error: over the rest (None: no boundary position, or unknown).
    interior_fraction: the share of output positions in the interior (None: unknown or
      no spatial axes).
    error_map: where the error sits, ``[*spatial]`` (the plane; None without spatial
      axes): the error at each position relative to the output's mean scale, so that
      the root mean square of the map is ``error``.
  """

  name: str
  kind: str
  shape: tuple[int, ...]
  stride: tuple[int, ...] | None
  action: str
  approximate: bool
  error: float
  interior_error: float | None
  boundary_error: float | None
  interior_fraction: float | None
  error_map: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)


@dataclasses.dataclass(frozen=True)
class LogitsError:
  """What a transform does to the model's output ``[N, K]``.

  Attributes:
    invariance_error: ``‖f(g·x) − f(x)‖ / ‖f(x)‖`` over all images.
    unchanged: the share of images whose predicted class (argmax) is unchanged.
    accuracy: the accuracy on the transformed images (None without labels).
  """

  invariance_error: float
  unchanged: float
  accuracy: float | None


@dataclasses.dataclass(frozen=True)
class TransformReport:
  """One transform's errors, layer by layer.

  Attributes:
    transform: the transform's name (``Transform.name``).
    layers: one :class:`LayerError` per reported layer, in call order.
    logits: the output's figures (None when the output is not ``[N, K]``).
  """

  transform: str
  layers: tuple[LayerError, ...]
  logits: LogitsError | None

  def layer(self, name: str) -> LayerError:
    """The :class:`LayerError` of the layer ``name``.

    Raises:
      KeyError: no reported layer has that name.
    """
    for layer in self.layers:
      if layer.name == name:
        return layer
    raise KeyError(f"{name!r}; the layers are {[ly.name for ly in self.layers]}")


@dataclasses.dataclass(frozen=True)
class EquivarianceReport:
  """The result of :func:`report`: one :class:`TransformReport` per transform.

  ``str(report)`` is a table (layers × transforms); :meth:`to_markdown`,
  :meth:`to_dict` (JSON-ready) and :meth:`figure` export it. ``report["rot90:1"]`` is
  a transform's :class:`TransformReport`.

  Attributes:
    transforms: one entry per transform, in the order given.
    num_images: the number of images compared.
    accuracy: the accuracy on the untransformed images (None without labels or logits).
    title: a heading for tables and plots (e.g. the model's name).
  """

  transforms: tuple[TransformReport, ...]
  num_images: int
  accuracy: float | None = None
  title: str = ""

  def __getitem__(self, name: str) -> TransformReport:
    for t in self.transforms:
      if t.transform == name:
        return t
    raise KeyError(f"{name!r}; the transforms are {[t.transform for t in self.transforms]}")

  def _layer_names(self) -> list[tuple[str, str, tuple[int, ...] | None]]:
    first = self.transforms[0].layers if self.transforms else ()
    return [(ly.name, ly.kind, ly.stride) for ly in first]

  def _cells(self) -> tuple[list[str], list[list[str]]]:
    header = ["layer", "kind", "stride"] + [t.transform for t in self.transforms]
    rows = []
    for i, (name, kind, stride) in enumerate(self._layer_names()):
      row = [name, kind, _stride_text(stride)]
      for t in self.transforms:
        row.append(_cell(t.layers[i]))
      rows.append(row)
    if any(t.logits is not None for t in self.transforms):
      for label, get in (
          ("logits: invariance error", lambda g: _num(g.invariance_error)),
          ("logits: prediction unchanged", lambda g: f"{g.unchanged:.1%}"),
          ("logits: accuracy", lambda g: "—" if g.accuracy is None else f"{g.accuracy:.1%}"),
      ):
        if label.endswith("accuracy") and self.accuracy is None:
          continue
        rows.append(
            [label, "", ""]
            + [("—" if t.logits is None else get(t.logits)) for t in self.transforms]
        )
    return header, rows

  def __str__(self) -> str:
    header, rows = self._cells()
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    head = self.title or "equivariance report"
    acc = "" if self.accuracy is None else f", accuracy {self.accuracy:.1%}"
    lines.append(f"{head}: {self.num_images} image(s){acc}")
    lines.append(_LEGEND)
    for j, row in enumerate([header, *rows]):
      cells = [f"{c:<{widths[i]}}" if i < 2 else f"{c:>{widths[i]}}" for i, c in enumerate(row)]
      lines.append("  ".join(cells).rstrip())
      if j == 0:
        lines.append("-" * (sum(widths) + 2 * (len(widths) - 1)))
    return "\n".join(lines)

  def to_markdown(self) -> str:
    """The table as GitHub markdown."""
    header, rows = self._cells()
    lines = [
        "| " + " | ".join(header) + " |",
        "|:--|:--|--:|" + "--:|" * len(self.transforms),
    ]
    for row in rows:
      lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines) + "\n"

  def to_dict(self) -> dict[str, Any]:
    """The report as plain Python values, ready for ``json.dump`` (NaN and inf as the
    strings ``"nan"``, ``"inf"``)."""

    def num(v: float | None) -> float | str | None:
      if v is None:
        return None
      return v if math.isfinite(v) else str(v)

    out: dict[str, Any] = {
        "title": self.title,
        "num_images": self.num_images,
        "accuracy": num(self.accuracy),
        "transforms": [],
    }
    for t in self.transforms:
      layers = []
      for ly in t.layers:
        layers.append(
            {
                "name": ly.name,
                "kind": ly.kind,
                "shape": list(ly.shape),
                "stride": None if ly.stride is None else list(ly.stride),
                "action": ly.action,
                "approximate": ly.approximate,
                "error": num(ly.error),
                "interior_error": num(ly.interior_error),
                "boundary_error": num(ly.boundary_error),
                "interior_fraction": num(ly.interior_fraction),
                "error_map": None
                if ly.error_map is None
                else [num(float(v)) for v in np.asarray(ly.error_map, np.float64).ravel()],
            }
        )
      out["transforms"].append(
          {
              "transform": t.transform,
              "layers": layers,
              "logits": None
              if t.logits is None
              else {
                  "invariance_error": num(t.logits.invariance_error),
                  "unchanged": t.logits.unchanged,
                  "accuracy": t.logits.accuracy,
              },
          }
      )
    return out

  def figure(self, *, max_maps: int = 8) -> Any:
    """A matplotlib figure: the error per layer for each transform (whole output and
    interior), and where in the image the error sits (each transform's error maps, on
    one colour scale).

    Args:
      max_maps: at most this many layers' error maps per transform (evenly chosen among
        the layers with spatial axes).

    Returns:
      A ``matplotlib.figure.Figure``, made without pyplot (no backend or global state is
      touched; ``fig.savefig(path)`` writes it). matplotlib is imported only here.
    """
    from matplotlib.figure import Figure  # noqa: PLC0415

    names = [n for n, _, _ in self._layer_names()]
    first = self.transforms[0].layers if self.transforms else ()
    spatial = [i for i, ly in enumerate(first) if ly.error_map is not None]
    if len(spatial) > max_maps:
      spatial = [spatial[round(j * (len(spatial) - 1) / (max_maps - 1))] for j in range(max_maps)]
    n_t = max(1, len(self.transforms))
    rows = 1 + (n_t if spatial else 0)
    cols = max(1, len(spatial))
    fig = Figure(figsize=(max(7.0, 1.5 * cols + 1), 3.4 + 1.45 * (rows - 1)), layout="constrained")
    grid = fig.add_gridspec(rows, cols, height_ratios=[2.4] + [1.0] * (rows - 1))
    ax = fig.add_subplot(grid[0, :])
    xs = np.arange(len(names))
    for k, t in enumerate(self.transforms):
      color = f"C{k % 10}"
      ax.plot(xs, [ly.error for ly in t.layers], "o-", color=color, label=t.transform, ms=4)
      inner = [np.nan if ly.interior_error is None else ly.interior_error for ly in t.layers]
      ax.plot(xs, inner, "x--", color=color, ms=4, alpha=0.7)
    ax.set_xticks(xs, names, rotation=30, ha="right", fontsize=8)
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("relative error")
    ax.grid(alpha=0.3)
    ax.set_title(
        (f"{self.title}: " if self.title else "")
        + "error per layer (solid: whole output, dashed: interior)",
        fontsize=9,
    )
    if self.transforms:
      ax.legend(fontsize=7, ncol=min(4, n_t))
    maps = {}
    for r, t in enumerate(self.transforms if spatial else ()):
      for c, i in enumerate(spatial):
        emap = np.asarray(t.layers[i].error_map, np.float64)
        if emap.ndim == 1:
          emap = emap[None, :]
        elif emap.ndim > 2:  # 3-D maps: the root mean square over the further axes
          emap = np.sqrt(np.mean(np.square(emap), axis=tuple(range(2, emap.ndim))))
        maps[r, c] = emap
    finite = [m[np.isfinite(m)] for m in maps.values()]
    finite = [m for m in finite if m.size]
    vmax = max((float(np.percentile(m, 99)) for m in finite), default=1.0) or 1.0
    image = None
    axes = []
    for (r, c), emap in maps.items():
      sub = fig.add_subplot(grid[1 + r, c])
      axes.append(sub)
      image = sub.imshow(emap, cmap="magma", vmin=0, vmax=vmax)
      sub.set_xticks([])
      sub.set_yticks([])
      if r == 0:
        sub.set_title(self.transforms[r].layers[spatial[c]].name, fontsize=7)
      if c == 0:
        sub.set_ylabel(self.transforms[r].transform, fontsize=7)
    if image is not None:
      bar = fig.colorbar(image, ax=axes, shrink=0.6, pad=0.02)
      bar.set_label("error at each position (relative to the mean scale)", fontsize=7)
    return fig


_LEGEND = (
    "relative error per layer (interior error in brackets; ~ : the transform has no exact "
    "counterpart at that layer, compared with the nearest)"
)


def _num(v: float | None) -> str:
  if v is None:
    return "—"
  if v == 0:
    return "0"
  if not math.isfinite(v):
    return str(v)
  return f"{v:.2e}" if v < 1e-3 else f"{v:.4f}"


def _cell(layer: LayerError) -> str:
  text = _num(layer.error)
  if layer.interior_error is not None and layer.boundary_error is not None:
    text += f" [{_num(layer.interior_error)}]"
  return ("~" if layer.approximate else "") + text


def _stride_text(stride: tuple[int, ...] | None) -> str:
  if stride is None:
    return ""
  return str(stride[0]) if len(set(stride)) == 1 else "x".join(map(str, stride))


# ----------------------------------------------------------------------------- geometry


@dataclasses.dataclass(frozen=True)
class _Geometry:
  """Where output position ``m`` of a layer reads the image: the window
  ``[m·jump − low, m·jump − low + field − 1]`` per spatial dim.

  ``wraps``: every layer so far commutes with circular shifts of its input by multiples
  of its stride over the whole map (circular padding or none, and windows that cover a
  whole number of strides), so no position is near a border.
  """

  field: tuple[int, ...]
  jump: tuple[int, ...]
  low: tuple[int, ...]
  wraps: bool


_FLAT = "flat"  # an output without spatial axes
_GeometryLike = _Geometry | str | None  # a _Geometry, _FLAT, or None: unknown


@dataclasses.dataclass(frozen=True)
class _LayerStep:
  kernel_eff: tuple[int, ...]
  stride: tuple[int, ...]
  low: tuple[int, ...]
  wraps: bool


def _then(g: _GeometryLike, step: _LayerStep | str | None) -> _GeometryLike:
  """The geometry after one more layer (``step``: its own geometry)."""
  if step == _FLAT:
    return _FLAT
  if g is None or step is None or not isinstance(g, _Geometry) or isinstance(step, str):
    return None
  return _Geometry(
      field=tuple(
          f + (k - 1) * j for f, k, j in zip(g.field, step.kernel_eff, g.jump, strict=True)
      ),
      jump=tuple(j * s for j, s in zip(g.jump, step.stride, strict=True)),
      low=tuple(p + lo * j for p, lo, j in zip(g.low, step.low, g.jump, strict=True)),
      wraps=g.wraps and step.wraps,
  )


def _merge(geometries: Sequence[_GeometryLike]) -> _GeometryLike:
  """One geometry covering branches that end at the same resolution (a composite's)."""
  if not geometries or any(g is None for g in geometries):
    return None
  if any(g == _FLAT for g in geometries):
    return _FLAT if all(g == _FLAT for g in geometries) else None
  gs = [g for g in geometries if isinstance(g, _Geometry)]
  top = tuple(max(js) for js in zip(*(g.jump for g in gs), strict=True))
  last = [g for g in gs if g.jump == top]
  if not last:
    return None
  low = tuple(max(ls) for ls in zip(*(g.low for g in last), strict=True))
  end = tuple(
      max(e)
      for e in zip(
          *((f - ly for f, ly in zip(g.field, g.low, strict=True)) for g in last), strict=True
      )
  )
  return _Geometry(
      field=tuple(e + ly for e, ly in zip(end, low, strict=True)),
      jump=top,
      low=low,
      wraps=all(g.wraps for g in gs),
  )


def _per_dim(value: Any, n_axes: int, d: int, *, name: str) -> tuple[int, ...]:
  """An int setting as one int per plane dim (``n_axes`` spatial axes, the first ``d``
  of them the plane's)."""
  if not is_int(value) and isinstance(value, Sequence) and len(value) == n_axes:
    value = tuple(value)[:d]
  return _padding.normalize_ints(cast(Any, value), d, name=name, op="report")


def _plane_padding(padding: Any, n_axes: int, d: int) -> Any:
  if isinstance(padding, str) or is_int(padding) or not isinstance(padding, Sequence):
    return padding
  return tuple(padding)[:d] if len(padding) == n_axes else padding


def _window_step(
    in_plane: tuple[int, ...],
    out_plane: tuple[int, ...],
    *,
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...] | int = 1,
    padding: Any,
    circular: bool,
) -> _LayerStep | None:
  geo = _padding.conv_geometry(
      in_plane, kernel, stride=stride, padding=padding, dilation=dilation, op="report"
  )
  if tuple(geo.out_spatial) != tuple(out_plane):
    return None  # not the layer we think it is
  unpadded = all(lo == 0 and hi == 0 for lo, hi in geo.pads)
  wraps = (circular or unpadded) and all(
      n % s == 0 and o == n // s
      for n, s, o in zip(in_plane, geo.stride, geo.out_spatial, strict=True)
  )
  return _LayerStep(
      tuple(geo.kernel_eff), tuple(geo.stride), tuple(lo for lo, _ in geo.pads), wraps
  )


def _leaf_step(module: Any, in_shape: tuple[int, ...], out_shape: tuple[int, ...], d: int):
  """A leaf layer's own geometry: a :class:`_LayerStep`, ``_FLAT`` or None (unknown).

  Shapes are without the batch; the plane is the first ``d`` axes.
  """
  if len(out_shape) < d + 1:
    return _FLAT
  if len(in_shape) < d + 1:
    return None
  in_plane, out_plane = tuple(in_shape[:d]), tuple(out_shape[:d])
  n_axes = len(in_shape) - 1
  one = (1,) * d
  nnx, cnn = _flax()
  pointwise = (
      cnn.GroupPool,
      cnn.Maxout,
      cnn.LocalResponseNorm,
      nnx.BatchNorm,
      nnx.LayerNorm,
      nnx.GroupNorm,
      nnx.RMSNorm,
      nnx.Linear,
  )
  try:
    if isinstance(module, pointwise):
      return _LayerStep(one, one, (0,) * d, True) if in_plane == out_plane else None
    if isinstance(module, (cnn.Conv, cnn.LocallyConnected, cnn.TiledConv)):
      return _window_step(
          in_plane,
          out_plane,
          kernel=_per_dim(module.kernel_size, n_axes, d, name="kernel_size"),
          stride=_per_dim(module.stride, n_axes, d, name="stride"),
          dilation=_per_dim(module.dilation, n_axes, d, name="dilation"),
          padding=_plane_padding(module.padding, n_axes, d),
          circular=module.padding_mode == "circular",
      )
    if isinstance(module, (cnn.LiftConv, cnn.GroupConv)):
      return _window_step(
          in_plane,
          out_plane,
          kernel=(module.kernel_size,) * d,
          stride=_per_dim(module.stride, d, d, name="stride"),
          padding=module.padding,
          circular=False,
      )
    if isinstance(module, (cnn.MaxPool, cnn.AvgPool, cnn.LpPool)):
      window = _per_dim(module.window, n_axes, d, name="window")
      stride = window if module.stride is None else module.stride
      return _window_step(
          in_plane,
          out_plane,
          kernel=window,
          stride=_per_dim(stride, n_axes, d, name="stride"),
          padding=_plane_padding(module.padding, n_axes, d),
          circular=False,
      )
    if isinstance(module, cnn.BlurPool):
      taps = _per_dim(module.kernel_size, n_axes, d, name="kernel_size")
      return _window_step(
          in_plane,
          out_plane,
          kernel=taps,
          stride=_per_dim(module.stride, n_axes, d, name="stride"),
          padding=tuple(((k - 1) // 2, k // 2) for k in taps),
          circular=module.padding_mode == "circular",
      )
    if isinstance(module, cnn.PolyphaseDownsample):
      return _window_step(
          in_plane,
          out_plane,
          kernel=one,
          stride=_per_dim(module.stride, n_axes, d, name="stride"),
          padding="VALID",
          circular=True,
      )
    if isinstance(module, nnx.Conv):
      padding = module.padding
      circular = isinstance(padding, str) and padding.upper() == "CIRCULAR"
      if isinstance(padding, str) and padding.upper() not in ("SAME", "VALID", "CIRCULAR"):
        return None  # REFLECT, CAUSAL: not a zero-padded window
      return _window_step(
          in_plane,
          out_plane,
          kernel=_per_dim(tuple(module.kernel_size), n_axes, d, name="kernel_size"),
          stride=_per_dim(module.strides or 1, n_axes, d, name="stride"),
          dilation=_per_dim(module.kernel_dilation or 1, n_axes, d, name="dilation"),
          padding="SAME" if circular else padding,
          circular=circular,
      )
  except (TypeError, ValueError):
    return None
  return None  # a layer whose geometry we do not know (a transposed conv, a user's)


# ---------------------------------------------------------------------------- recording


@dataclasses.dataclass
class _Call:
  """One recorded layer call (during a trace)."""

  module: Any
  name: str
  kind: str
  leaf: bool
  depth: int
  geometry: _GeometryLike
  group: str | None
  out: Any


def _summary_lookup() -> tuple[Callable[[type], Any], Callable[[type], bool]]:
  """``cnnjax.summary``'s describer lookup: which classes are layers, and their names."""
  # (by its module name: ``cnnjax.summary`` the attribute is the function)
  summary_module = importlib.import_module("cnnjax.summary")
  return summary_module._describer, summary_module._describable


class _Recorder:
  """Records the layer calls of one trace of a model, in call order, with the geometry
  of each output (see the module docstring)."""

  def __init__(self, model: nnx.Module, x: Any, d: int):
    nnx, _ = _flax()
    self.describer, describable = _summary_lookup()
    self.d = d
    self.paths: dict[int, str] = {}
    for path, m in nnx.iter_modules(model):
      if id(m) not in self.paths:  # the model itself is a layer only if it is a leaf
        self.paths[id(m)] = ".".join(str(p) for p in path) if path else type(m).__name__
    self.classes = [
        c for c in dict.fromkeys(type(m) for _, m in nnx.iter_modules(model)) if describable(c)
    ]
    self.calls: list[_Call] = []
    self.stack: list[tuple[Any, bool, int]] = []  # (module, leaf, first call index inside)
    start = _Geometry((1,) * d, (1,) * d, (0,) * d, True)
    self.known: dict[int, tuple[Any, _GeometryLike, str | None]] = {id(x): (x, start, None)}
    self.last: tuple[_GeometryLike, str | None] = (start, None)
    self.seen: dict[str, int] = {}
    self.saved: list[tuple[type, Any]] = []

  def __enter__(self) -> _Recorder:
    for cls in self.classes:
      current = cls.__call__
      self.saved.append((cls, cls.__dict__.get("__call__")))
      cls.__call__ = self._wrap(current)
    return self

  def __exit__(self, *exc: Any) -> None:
    for cls, own in reversed(self.saved):
      if own is None:
        del cls.__call__
      else:
        cls.__call__ = own
    self.saved.clear()

  def _source(self, x: Any) -> tuple[_GeometryLike, str | None]:
    hit = self.known.get(id(x))
    return (hit[1], hit[2]) if hit is not None and hit[0] is x else self.last

  def _wrap(self, orig: Callable) -> Callable:
    recorder = self

    @functools.wraps(orig)
    def call(module, *args, **kwargs):
      inside_leaf = any(leaf for _, leaf, _ in recorder.stack)
      if (
          not args
          or inside_leaf
          or id(module) not in recorder.paths
          or (recorder.stack and recorder.stack[-1][0] is module)
      ):
        return orig(module, *args, **kwargs)
      return recorder._record(orig, module, args, kwargs)

    return call

  def _record(self, orig: Callable, module: Any, args: tuple, kwargs: dict) -> Any:
    x = args[0]
    geometry, group = self._source(x)
    leaf = self.describer(type(module)) is not None
    depth = len(self.stack)
    if not leaf:
      self.known[id(x)] = (x, geometry, group)  # the branches inside start here
    self.stack.append((module, leaf, len(self.calls)))
    try:
      out = orig(module, *args, **kwargs)
    finally:
      _, _, first = self.stack.pop()
    leaves = jax.tree.leaves(out)
    y = leaves[0] if leaves else None
    in_shape = tuple(jnp.shape(x)[1:])
    out_shape = tuple(jnp.shape(y)[1:]) if y is not None else ()
    if leaf:
      _, cnn = _flax()
      geometry = _then(geometry, _leaf_step(module, in_shape, out_shape, self.d))
      if isinstance(module, (cnn.LiftConv, cnn.GroupConv)):
        group = module.group
      elif isinstance(module, cnn.GroupPool):
        group = None
    else:
      inner = [c for c in self.calls[first:] if c.depth == depth + 1]
      if len(out_shape) < self.d + 1:
        geometry = _FLAT
      elif inner:
        geometry = _merge([c.geometry for c in inner])
      if inner:
        group = inner[-1].group
    name = self.paths[id(module)]
    self.seen[name] = self.seen.get(name, 0) + 1
    if self.seen[name] > 1:
      name = f"{name}#{self.seen[name]}"
    self.calls.append(
        _Call(
            module,
            name,
            _kind(module, leaf, self.describer, in_shape, out_shape),
            leaf,
            depth,
            geometry,
            group,
            y,
        )
    )
    if y is not None:
      self.known[id(y)] = (y, geometry, group)
      self.last = (geometry, group)
    return out


def _kind(module: Any, leaf: bool, describer: Callable, in_shape, out_shape) -> str:
  try:
    if leaf:
      return str(describer(type(module))(module, in_shape, out_shape)[0])
    return str(module.summary_name())
  except Exception:  # noqa: BLE001 (a name is only a label: fall back to the class name)
    return type(module).__name__


# ------------------------------------------------------------------------------ actions


def _roll(xp: Any, y: Any, shifts: tuple[int, ...], axes: tuple[int, ...], zeros: bool) -> Any:
  """``y`` shifted by ``shifts`` along ``axes`` (NumPy or jax.numpy), circularly or with
  zeros entering."""
  out = xp.roll(y, shifts, axis=axes)
  if not zeros:
    return out
  keep = np.ones([y.shape[a] if a in axes else 1 for a in range(y.ndim)], bool)
  for s, a in zip(shifts, axes, strict=True):
    idx = np.arange(y.shape[a]) - s
    inside = (idx >= 0) & (idx < y.shape[a])
    keep = keep & inside.reshape([-1 if b == a else 1 for b in range(y.ndim)])
  return xp.where(keep, out, xp.zeros((), out.dtype))


# The p4m element (4·m + r: r quarter turns, then m mirrors of W, as plane_action) of each
# symmetry step of a square plane (checked against plane_action in the tests).
def _element_of(step: Step, d: int) -> int | None:
  if d != 2:
    return None
  if isinstance(step, Rotation):
    return step.k % 4
  if isinstance(step, Reflection):
    return 4 if step.axis % 2 == 1 else 6
  if isinstance(step, Transposition):
    return 7
  return None


@dataclasses.dataclass(frozen=True)
class _Action:
  """How a transform acts on one layer's output ``[N, *plane, (|G|,) C]``."""

  fn: Callable[[Any, Any], Any]  # (xp, array) -> array
  text: str
  approximate: bool


def _shift_of(step: Translation, d: int) -> tuple[int, ...]:
  return (step.shift,) * d if isinstance(step.shift, int) else tuple(step.shift)


def _action(
    steps: Sequence[Step],
    *,
    d: int,
    jump: tuple[int, ...] | None,
    group: str | None,
    zeros: bool = False,
) -> _Action:
  """The action of ``steps`` on an output with cumulative stride ``jump`` (None: no
  spatial axes, invariance) that is a map over ``group`` (None: a plain map).
  ``zeros``: shifts let zeros enter whatever their mode (for masks)."""
  if jump is None:
    return _Action(lambda xp, y: y, "none (invariance)", False)
  plane = tuple(range(1, d + 1))
  fns: list[Callable[[Any, Any], Any]] = []
  texts: list[str] = []
  approximate = False
  for step in steps:
    if isinstance(step, Translation):
      shifts = _shift_of(step, d)
      out = tuple(math.floor(s / j + 0.5) for s, j in zip(shifts, jump, strict=True))
      inexact = any(s % j for s, j in zip(shifts, jump, strict=True))
      approximate |= inexact
      z = zeros or step.mode == "zeros"
      fns.append(lambda xp, y, out=out, z=z: _roll(xp, y, out, plane, z))
      texts.append(f"shift {out if d > 1 else out[0]}")
      continue
    element = _element_of(step, d)
    order = _group.group_order(group) if group is not None else 0
    if group is not None and element is not None and element < order:
      action = group_action(element, group=group)
      fns.append(lambda xp, y, action=action: action(y))
      texts.append(f"{group} element {element}")
      continue
    if group is not None:
      approximate = True  # a reflection of a p4 map: no counterpart on p4
    if isinstance(step, Reflection):
      axis = 1 + step.axis % d
      fns.append(lambda xp, y, axis=axis: xp.flip(y, axis=axis))
      texts.append(f"flip({step.axis})")
    elif isinstance(step, Rotation):
      k = step.k
      fns.append(lambda xp, y, k=k: xp.rot90(y, k, axes=(1, 2)))
      texts.append(f"rot90({k})")
    else:
      fns.append(lambda xp, y: xp.swapaxes(y, 1, 2))
      texts.append("transpose")

  def apply(xp: Any, y: Any) -> Any:
    for f in fns:
      y = f(xp, y)
    return y

  return _Action(apply, ", ".join(texts) or "identity", approximate)


# -------------------------------------------------------------------------------- masks


def _windows_inside(valid: np.ndarray, g: _Geometry, out_plane: tuple[int, ...]) -> np.ndarray:
  """``out[m]``: output position ``m``'s input window lies inside the image and within
  ``valid`` (a boolean map of the input plane)."""
  a = valid
  for i, m_size in enumerate(out_plane):
    n = a.shape[i]
    cols = []
    for m in range(m_size):
      start = m * g.jump[i] - g.low[i]
      stop = start + g.field[i]
      if start < 0 or stop > n:
        cols.append(np.zeros(a.shape[:i] + a.shape[i + 1 :], bool))
      else:
        cols.append(np.take(a, np.arange(start, stop), axis=i).all(axis=i))
    a = np.stack(cols, axis=i)
  return a


def _input_steps_zeros(steps: Sequence[Step]) -> list[Step]:
  return [dataclasses.replace(s, mode="zeros") if isinstance(s, Translation) else s for s in steps]


def _interior_mask(
    steps: Sequence[Step],
    g: _GeometryLike,
    in_plane: tuple[int, ...],
    out_plane: tuple[int, ...],
) -> np.ndarray | None:
  """The output positions out of the border's reach (see the module docstring); None
  when the geometry is unknown."""
  if not isinstance(g, _Geometry):
    return None
  d = len(in_plane)
  if g.wraps and all(s.mode == "circular" for s in steps if isinstance(s, Translation)):
    return np.ones(out_plane, bool)
  ones = np.ones((1, *in_plane, 1), np.float32)
  moved_in = _action(_input_steps_zeros(steps), d=d, jump=(1,) * d, group=None).fn(np, ones)
  test_side = _windows_inside(moved_in[0, ..., 0] > 0.5, g, out_plane)
  reference = _windows_inside(np.ones(in_plane, bool), g, out_plane)
  moved_ref = _action(steps, d=d, jump=g.jump, group=None, zeros=True).fn(
      np, reference[None, ..., None].astype(np.float32)
  )[0, ..., 0]
  if moved_ref.shape != test_side.shape:
    return None
  return test_side & (moved_ref > 0.5)


# ------------------------------------------------------------------------------ running


@dataclasses.dataclass(frozen=True)
class _Layer:
  """A reported layer, as the first trace found it."""

  index: int  # in the recorded calls
  name: str
  kind: str
  shape: tuple[int, ...]
  geometry: _GeometryLike
  group: str | None

  def jump(self, in_plane: tuple[int, ...]) -> tuple[int, ...] | None:
    if self.geometry == _FLAT or len(self.shape) < len(in_plane) + 1:
      return None
    if isinstance(self.geometry, _Geometry):
      return self.geometry.jump
    # Unknown geometry: the stride the shapes suggest.
    return tuple(
        max(1, round(n / max(1, o)))
        for n, o in zip(in_plane, self.shape[: len(in_plane)], strict=True)
    )

  def group_map(self, d: int) -> str | None:
    if self.group is None or len(self.shape) != d + 2:
      return None
    return self.group if self.shape[d] == _group.group_order(self.group) else None


def _check_transforms(transforms: Any, *, op: str) -> list[Transform]:
  if isinstance(transforms, (Transform, str)):
    transforms = [transforms]
  if not isinstance(transforms, Sequence) or not transforms:
    raise ValueError(
        f"{op}: transforms got {transforms!r}; expected a non-empty sequence of "
        "cnnjax.equivariance transforms or specs such as 'shift:1,2'."
    )
  out: list[Transform] = []
  for i, t in enumerate(transforms):
    if isinstance(t, str):
      out.extend(parse_transforms(t))
    elif isinstance(t, Transform) and t.steps is not None:
      out.append(t)
    else:
      raise TypeError(
          f"{op}: transforms[{i}] got {t!r}; expected a Transform made by translate, flip, "
          "rot90, transpose, plane_action or compose of them (with typed steps), or a "
          "spec string such as 'rot90'."
      )
  return out


def _ratio(num: float, den: float) -> float:
  if math.isnan(num) or math.isnan(den):
    return math.nan
  if den == 0:
    return 0.0 if num == 0 else math.inf
  return math.sqrt(num / den)


def _batches(n: int, size: int) -> Iterator[tuple[int, int]]:
  for start in range(0, n, size):
    yield start, min(start + size, n)


def report(
    model_or_fn: nnx.Module | Callable[[jax.Array], jax.Array],
    images: ArrayLike,
    transforms: Sequence[Transform | str] | Transform | str,
    *,
    layers: Sequence[str] | None = None,
    labels: ArrayLike | None = None,
    batch_size: int = 250,
    title: str = "",
) -> EquivarianceReport:
  """The equivariance error of each layer of a model under each transform.

  For every transform ``g`` and every layer ``ly`` it compares ``f_l(g·x)`` with the
  action of ``g`` on ``f_l(x)`` (see :mod:`cnnjax.equivariance.report`: shifts scaled
  by the layer's cumulative stride, flips and quarter turns, the p4/p4m action on
  group feature maps, nothing at all for outputs without spatial axes), over all
  ``images``; splits the error into the interior and the boundary; and at the logits
  gives the invariance error, the share of unchanged predictions and (with ``labels``)
  the accuracy under the transform. A module is run in evaluation mode (a copy: the
  caller's module is unchanged). One program is compiled for the untransformed images
  and one per transform, each run on batches of ``batch_size`` images.

  Args:
    model_or_fn: an ``nnx.Module`` (its layers are reported) or a function of the
      images (only its output is: logits ``[N, K]``, or a map ``[N, *spatial, C]``
      reported as the layer ``"output"``).
    images: ``[N, *spatial, C]``, what the model takes (e.g. ``uint8`` for a
      :class:`~cnnjax.train.Classifier`).
    transforms: :class:`Transform` values with typed steps (:func:`translate`,
      :func:`flip`, :func:`rot90`, :func:`transpose`, :func:`plane_action`,
      :func:`compose` of them, :func:`random_elements`) or specs for
      :func:`parse_transforms` (``"shift:1,2,4"``, ``"rot90"``); one or a sequence.
    layers: the names (attribute paths) of the layers to report, any depth, e.g.
      ``["conv1", "blocks.layers.0.conv1"]``; None: the model's top-level layers, the
      rows of :func:`cnnjax.summary.summary` (a residual block is one).
    labels: ``[N]`` integer classes, for the accuracy under each transform.
    batch_size: images per compiled call (the last batch is padded).
    title: a heading for the report's tables and plots.

  Returns:
    An :class:`EquivarianceReport`.

  Raises:
    ValueError: bad images, labels, layer names or batch size; a transform that does
      not apply to the images (a quarter turn of a non-square image), or whose action
      does not fit a layer's output.
    TypeError: a transform without typed steps (a composition of plain callables).

  Example:
    >>> from flax import nnx
    >>> from cnnjax import nn as cnn
    >>> net = nnx.Sequential(
    ...     cnn.Conv(1, 2, 3, padding="SAME", padding_mode="circular", rngs=nnx.Rngs(0)),
    ...     cnn.Conv(2, 2, 3, stride=2, padding="SAME", padding_mode="circular",
    ...              rngs=nnx.Rngs(1)))
    >>> x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    >>> r = report(net, x, "shift:2")
    >>> [(ly.name, ly.stride, ly.action, ly.error < 1e-5) for ly in r["shift:2"].layers]
    [('layers.0', (1, 1), 'shift (2, 2)', True), ('layers.1', (2, 2), 'shift (1, 1)', True)]
  """
  op = "report"
  nnx, _ = _flax()
  ts = _check_transforms(transforms, op=op)
  x = jnp.asarray(images)
  if x.ndim < 3 or x.shape[0] < 1:
    raise ValueError(
        f"{op}: images has shape {tuple(x.shape)}; expected [N, *spatial, C] with N >= 1 "
        "and at least one spatial dim."
    )
  n, d = int(x.shape[0]), x.ndim - 2
  in_plane = tuple(int(s) for s in x.shape[1:-1])
  if isinstance(batch_size, bool) or not is_int(batch_size) or batch_size < 1:
    raise ValueError(f"{op}: batch_size got {batch_size!r}; expected a positive int.")
  y = None
  if labels is not None:
    y = jnp.asarray(labels)
    if y.shape != (n,) or not jnp.issubdtype(y.dtype, jnp.integer):
      raise ValueError(
          f"{op}: labels has shape {tuple(y.shape)} and dtype {y.dtype}; expected [{n}] "
          "integer classes, one per image."
      )
  if layers is not None and (isinstance(layers, str) or not isinstance(layers, Sequence)):
    raise ValueError(f"{op}: layers got {layers!r}; expected None or a sequence of layer names.")
  if layers is not None and not isinstance(model_or_fn, nnx.Module):
    raise ValueError(
        f"{op}: layers got {list(layers)!r} for a plain function; expected None (only an "
        "nnx.Module's layers can be found)."
    )
  if not callable(model_or_fn):
    raise TypeError(f"{op}: model_or_fn got {model_or_fn!r}; expected an nnx.Module or a function.")
  for t in ts:  # a transform that does not apply to these images fails here, in one line
    try:
      shape = jax.eval_shape(t, jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype)).shape
    except ValueError as e:
      raise ValueError(f"{op}: transform {t.name!r} does not apply to the images: {e}") from None
    if tuple(shape) != (1, *x.shape[1:]):
      raise ValueError(
          f"{op}: transform {t.name!r} maps images of shape {tuple(x.shape[1:])} to "
          f"{tuple(shape[1:])}; expected the same shape (quarter turns and transposes "
          "need square images)."
      )

  size = min(int(batch_size), n)
  forward, found = _forward(model_or_fn, d, x, size)
  if layers is None:
    chosen = [lay for lay, top in found if top]
  else:
    names = {lay.name: lay for lay, _ in found}
    unknown = [name for name in layers if name not in names]
    if unknown:
      raise ValueError(
          f"{op}: layers got {list(layers)!r}, with unknown name(s) {unknown}; expected "
          f"names out of {list(names)}."
      )
    chosen = [names[name] for name in layers]
  select = tuple(lay.index for lay in chosen)
  state = nnx.split(model_or_fn)[1] if isinstance(model_or_fn, nnx.Module) else None

  @jax.jit
  def reference(state, xb):
    outs, logits = forward(state, xb)
    return tuple(outs[i] for i in select), logits

  ref_logits_shape = jax.eval_shape(reference, state, x[:size])[1]
  has_logits = ref_logits_shape is not None and len(ref_logits_shape.shape) == 2

  actions = []
  for t in ts:
    steps = t.steps or ()
    acts = []
    for lay in chosen:
      acts.append(_action(steps, d=d, jump=lay.jump(in_plane), group=lay.group_map(d)))
    actions.append(acts)

  programs = [
      _compare_program(
          forward, t, acts, chosen, select=select, d=d, in_plane=in_plane, has_logits=has_logits
      )
      for t, acts in zip(ts, actions, strict=True)
  ]
  totals: list[list[list[np.ndarray]]] = [[[] for _ in chosen] for _ in ts]
  logit_totals = [dict(d2=0.0, r2=0.0, same=0.0, correct=0.0) for _ in ts]
  base_correct = 0.0
  for start, stop in _batches(n, size):
    xb = x[start:stop]
    w = jnp.ones((stop - start,), jnp.float32)
    yb = None if y is None else y[start:stop]
    if stop - start < size:  # pad the last batch: one shape, one compile
      pad = size - (stop - start)
      xb = jnp.concatenate([xb, jnp.zeros((pad, *xb.shape[1:]), xb.dtype)])
      w = jnp.concatenate([w, jnp.zeros((pad,), w.dtype)])
      yb = None if yb is None else jnp.concatenate([yb, jnp.zeros((pad,), yb.dtype)])
    refs, ref_logits = reference(state, xb)
    if has_logits and yb is not None:
      base_correct += float(jnp.sum(jnp.where(jnp.argmax(ref_logits, -1) == yb, w, 0)))
    for k, program in enumerate(programs):
      sums, extra = program(state, xb, w, yb, refs, ref_logits)
      for j, (d2, r2) in enumerate(sums):
        pair = [np.asarray(d2, np.float64), np.asarray(r2, np.float64)]
        if totals[k][j]:
          totals[k][j][0] += pair[0]
          totals[k][j][1] += pair[1]
        else:
          totals[k][j] = pair
      if extra is not None:
        for key, value in extra.items():
          if value is not None:
            logit_totals[k][key] += float(value)

  results = []
  for k, t in enumerate(ts):
    rows = [
        _layer_error(lay, actions[k][j], *totals[k][j], steps=t.steps or (), in_plane=in_plane)
        for j, lay in enumerate(chosen)
    ]
    logits = None
    if has_logits:
      lt = logit_totals[k]
      logits = LogitsError(
          invariance_error=_ratio(lt["d2"], lt["r2"]),
          unchanged=lt["same"] / n,
          accuracy=None if y is None else lt["correct"] / n,
      )
    results.append(TransformReport(t.name, tuple(rows), logits))
  accuracy = base_correct / n if (has_logits and y is not None) else None
  return EquivarianceReport(tuple(results), n, accuracy, title)


def _forward(
    model_or_fn: Any, d: int, x: jax.Array, size: int
) -> tuple[
    Callable[[Any, jax.Array], tuple[tuple[jax.Array, ...], Any]], list[tuple[_Layer, bool]]
]:
  """``forward(state, images) -> (recorded outputs, model output)`` and the layers it
  records (each with whether it is a top-level layer), found by tracing once."""
  spec = jax.ShapeDtypeStruct((size, *x.shape[1:]), x.dtype)
  nnx, _ = _flax()
  if not isinstance(model_or_fn, nnx.Module):
    fn = model_or_fn

    def plain(state, xb):
      out = jnp.asarray(fn(xb))
      return ((out,) if out.ndim >= d + 2 else ()), (out if out.ndim == 2 else None)

    shape = jax.eval_shape(lambda xb: jnp.asarray(fn(xb)), spec)
    found = []
    if len(shape.shape) >= d + 2:
      found.append((_Layer(0, "output", "output", tuple(shape.shape[1:]), None, None), True))
    return plain, found

  graphdef = nnx.split(model_or_fn)[0]

  def forward(state, xb, record: list[_Call] | None = None):
    model = nnx.merge(graphdef, state)
    model.eval()
    with _Recorder(model, xb, d) as rec:
      out = model(xb)
    if record is not None:
      record.extend(rec.calls)
    outs = tuple(c.out for c in rec.calls)
    out = jnp.asarray(out) if out is not None else None
    return outs, (out if out is not None and out.ndim == 2 else None)

  state = nnx.split(model_or_fn)[1]
  calls: list[_Call] = []
  jax.eval_shape(functools.partial(forward, record=calls), state, spec)
  found = [
      (
          _Layer(i, c.name, c.kind, tuple(c.out.shape[1:]), c.geometry, c.group),
          c.depth == 0,
      )
      for i, c in enumerate(calls)
      if c.out is not None
  ]
  return forward, found


def _compare_program(
    forward: Callable,
    t: Transform,
    acts: list[_Action],
    chosen: list[_Layer],
    *,
    select: tuple[int, ...],
    d: int,
    in_plane: tuple[int, ...],
    has_logits: bool,
) -> Callable:
  """The compiled program of one transform: the model on the transformed batch, each
  layer's output against the action on the reference output, summed over the batch
  (and the channel and group axes): ``[*plane]`` maps of ``Σ diff²`` and ``Σ ref²``;
  and at the logits the sums behind the invariance error, unchanged predictions and
  accuracy. Padded images (weight 0) count for nothing."""
  op = "report"

  @jax.jit
  def program(state, xb, w, yb, refs, ref_logits):
    outs, logits = forward(state, t(xb))
    outs = tuple(outs[i] for i in select)
    sums = []
    for out, ref, act, lay in zip(outs, refs, acts, chosen, strict=True):
      moved = act.fn(jnp, ref)
      if moved.shape != out.shape:
        raise ValueError(
            f"{op}: transform {t.name!r} acting on layer {lay.name!r} as {act.text!r} "
            f"gives shape {tuple(moved.shape)}, but the layer's output on the "
            f"transformed images has shape {tuple(out.shape)}; expected equal shapes."
        )
      dt = jnp.promote_types(jnp.promote_types(out.dtype, moved.dtype), jnp.float32)
      diff2 = jnp.square(out.astype(dt) - moved.astype(dt))
      ref2 = jnp.square(moved.astype(dt))
      wb = w.astype(dt).reshape((-1,) + (1,) * (out.ndim - 1))
      spatial = lay.jump(in_plane) is not None
      axes = (0, *range(1 + d, out.ndim)) if spatial else tuple(range(out.ndim))
      sums.append((jnp.sum(diff2 * wb, axis=axes), jnp.sum(ref2 * wb, axis=axes)))
    extra = None
    if has_logits:
      dt = jnp.promote_types(logits.dtype, jnp.float32)
      lt, lr = logits.astype(dt), ref_logits.astype(dt)
      wl = w.astype(dt)
      predicted = jnp.argmax(lt, -1)
      extra = {
          "d2": jnp.sum(wl[:, None] * jnp.square(lt - lr)),
          "r2": jnp.sum(wl[:, None] * jnp.square(lr)),
          "same": jnp.sum(jnp.where(predicted == jnp.argmax(lr, -1), wl, 0)),
          "correct": None if yb is None else jnp.sum(jnp.where(predicted == yb, wl, 0)),
      }
    return sums, extra

  return program


def _layer_error(
    lay: _Layer,
    act: _Action,
    d2: np.ndarray,
    r2: np.ndarray,
    *,
    steps: Sequence[Step],
    in_plane: tuple[int, ...],
) -> LayerError:
  """A layer's figures from its summed maps ``d2`` (``Σ diff²``) and ``r2`` (``Σ ref²``)."""
  jump = lay.jump(in_plane)
  inner = outer = fraction = None
  emap = None
  if jump is not None:
    mean_r2 = float(r2.sum()) / max(1, r2.size)
    emap = np.sqrt(d2 / mean_r2) if mean_r2 > 0 else np.where(d2 > 0, np.inf, 0.0)
    mask = _interior_mask(steps, lay.geometry, in_plane, tuple(lay.shape[: len(in_plane)]))
    if mask is not None and mask.shape == d2.shape:
      fraction = float(mask.mean())
      if mask.any():
        inner = _ratio(float(d2[mask].sum()), float(r2[mask].sum()))
      if (~mask).any():
        outer = _ratio(float(d2[~mask].sum()), float(r2[~mask].sum()))
  return LayerError(
      name=lay.name,
      kind=lay.kind,
      shape=lay.shape,
      stride=jump,
      action=act.text,
      approximate=act.approximate,
      error=_ratio(float(d2.sum()), float(r2.sum())),
      interior_error=inner,
      boundary_error=outer,
      interior_fraction=fraction,
      error_map=emap,
  )
