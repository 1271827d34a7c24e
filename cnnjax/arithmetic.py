"""Convolution arithmetic: output sizes, receptive fields, parameter and op counts.

Pure integer maths, no arrays. Output sizes go through
:func:`cnnjax.padding.conv_geometry`, the same code every op uses, so a size computed
here is the size the op returns, and the padding strings, strict check and error
messages are the same.

Counting convention (the lecture's, used by :func:`cnnjax.summary` layer tables):
shapes exclude the batch; a multiply-add counts as one op; a convolution's ops are
``output volume × (kernel volume × in_channels / groups + 1)`` (the ``+ 1`` is the
bias); pooling and normalisation ops are the input volume; a fully connected layer's
ops equal its parameters; activations count none; a softmax counts its size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

from cnnjax._checks import check_bool, check_positive_int
from cnnjax._checks import is_int as _is_int
from cnnjax.padding import (
    PADDING_STRINGS,
    PaddingLike,
    conv_geometry,
    effective_kernel_size,
    normalize_ints,
)

__all__ = [
    "KINDS",
    "effective_kernel_size",
    "jump",
    "op_count",
    "output_size",
    "param_count",
    "receptive_field",
]

KINDS = (
    "conv",
    "conv_transpose",
    "locally_connected",
    "tiled",
    "fc",
    "pool",
    "norm",
    "activation",
    "softmax",
)
_CONV_KINDS = ("conv", "conv_transpose", "locally_connected", "tiled")
_TEXT = (str, bytes, bytearray)  # sequences that are not sequences of ints


def _positive_int(value, *, name: str, op: str) -> int:
  # The counts are exact Python-int maths: no int64 bound (output_size has the ops' one).
  if not _is_int(value) or value < 1:
    raise ValueError(f"{op}: {name} got {value!r}; expected a positive int.")
  return int(value)


def _shape(value, *, name: str, op: str, what: str) -> tuple[int, ...]:
  """Checks a non-empty tuple of positive ints; ``what`` says what it should hold."""
  expected = f"a non-empty tuple of positive ints ({what})"
  if _is_int(value) or isinstance(value, _TEXT) or not isinstance(value, Sequence):
    raise ValueError(f"{op}: {name} got {value!r}; expected {expected}.")
  values = tuple(value)
  if not values:
    raise ValueError(f"{op}: {name} is missing (got {value!r}); expected {expected}.")
  if not all(_is_int(v) and v >= 1 for v in values):
    raise ValueError(f"{op}: {name} got {value!r}; expected {expected}.")
  return values


def _check_kind(kind, *, op: str) -> str:
  if kind not in KINDS:
    raise ValueError(f"{op}: kind got {kind!r}; expected one of {KINDS}.")
  return kind


def _check_groups(groups, in_channels: int, out_channels: int | None, *, op: str) -> int:
  _positive_int(groups, name="groups", op=op)
  if in_channels % groups:
    raise ValueError(
        f"{op}: groups got {groups!r}, which does not divide in_channels "
        f"({in_channels}); expected a divisor of in_channels."
    )
  if out_channels is not None and out_channels % groups:
    raise ValueError(
        f"{op}: groups got {groups!r}, which does not divide out_channels "
        f"({out_channels}); expected a divisor of out_channels."
    )
  return groups


def output_size(
    n: int,
    kernel: int,
    *,
    stride: int = 1,
    padding: int | tuple[int, int] | str = 0,
    dilation: int = 1,
    strict: bool = False,
    ceil_mode: bool = False,
) -> int:
  """The output size of a sliding-window op along one spatial dim.

  ``⌊(n + lo + hi − r̂) / s⌋ + 1`` with ``r̂ = r + (r − 1)(t − 1)`` the effective
  (dilated) kernel size, computed by :func:`cnnjax.padding.conv_geometry` exactly as
  the ops compute it.

  Args:
    n: the input size.
    kernel: the kernel (window) size r.
    stride: the stride s.
    padding: an int p (``p`` on each side, so ``n + 2p``), a ``(low, high)`` pair, or
      ``"VALID"``, ``"SAME"`` (output ``ceil(n / s)``, as lax; an odd total padding
      has its extra pixel high), ``"SAME_LOWER"`` (the same size, the extra pixel
      low), ``"FULL"`` (``r̂ − 1`` on each side) or ``"CAUSAL"`` (``r̂ − 1`` low, as
      Flax).
    dilation: the dilation t.
    strict: if True, raise when ``(n + lo + hi − r̂)`` is not divisible by the stride
      (the hyperparameters "do not click" and trailing inputs would be dropped).
    ceil_mode: PyTorch's pooling ``ceil_mode``: ``⌈(n + lo + hi − r̂) / s⌉ + 1``, less
      one if that last window would start in the high padding (the size
      :func:`cnnjax.max_pool` and the other pools return with ``ceil_mode=True``).

  Returns:
    The output size.

  Raises:
    ValueError: a bad argument, a kernel larger than the padded input, or (with
      ``strict``) a stride that does not click.

  Example:
    >>> output_size(32, 5)
    28
    >>> output_size(32, 3, stride=2, padding="SAME")
    16
    >>> output_size(7, 3, stride=2, padding=(1, 0), dilation=2)
    2
    >>> output_size(112, 3, stride=2), output_size(112, 3, stride=2, ceil_mode=True)
    (55, 56)
    >>> output_size(16, 4, padding="CAUSAL")
    16
  """
  op = "output_size"
  check_positive_int(n, name="n", op=op)  # (int64, as the ops: the size they return)
  check_positive_int(kernel, name="kernel", op=op)
  pads: PaddingLike
  if isinstance(padding, str) or _is_int(padding):
    pads = cast(PaddingLike, padding)  # (an int may be a NumPy integer: conv_geometry takes it)
  elif (
      isinstance(padding, Sequence)
      and not isinstance(padding, _TEXT)
      and len(padding) == 2
      and all(_is_int(p) and p >= 0 for p in padding)
  ):
    pads = (cast("tuple[int, int]", tuple(padding)),)  # (of length 2, checked above)
  else:
    raise ValueError(
        f"{op}: padding got {padding!r}; expected a non-negative int, a (low, high) "
        f"pair of non-negative ints, or one of {PADDING_STRINGS}."
    )
  geo = conv_geometry(
      (n,),
      (kernel,),
      stride=stride,
      padding=pads,
      dilation=dilation,
      strict=strict,
      ceil_mode=ceil_mode,
      op=op,
      kernel_name="kernel",
  )
  return geo.out_spatial[0]


def _layers(layers, *, op: str) -> list[tuple[int, int, int]]:
  """Canonicalises ``(kernel, stride[, dilation])`` tuples."""
  expected = "a sequence of (kernel, stride) or (kernel, stride, dilation) tuples of positive ints"
  if isinstance(layers, _TEXT) or not isinstance(layers, Sequence):
    raise ValueError(f"{op}: layers got {layers!r}; expected {expected}.")
  out = []
  for i, layer in enumerate(layers):
    if (
        isinstance(layer, _TEXT)
        or not isinstance(layer, Sequence)
        or len(layer) not in (2, 3)
        or not all(_is_int(v) and v >= 1 for v in layer)
    ):
      raise ValueError(f"{op}: layers[{i}] got {layer!r}; expected {expected}.")
    kernel, stride, *rest = layer
    out.append((kernel, stride, rest[0] if rest else 1))
  return out


def receptive_field(layers: Sequence[tuple[int, ...]]) -> int:
  """The receptive field of one output pixel of a stack of sliding-window layers.

  With ``r_0 = 1`` and ``j_0 = 1`` (one input pixel, unit step), layer ``l`` with
  effective kernel size ``r̂_l`` and stride ``s_l`` gives

      r_l = r_{l−1} + (r̂_l − 1) · j_{l−1},   j_l = j_{l−1} · s_l,

  where ``j_{l−1} = s_1 ⋯ s_{l−1}`` (see :func:`jump`) is the step, in input pixels,
  between neighbouring positions of layer ``l``'s input. Padding does not change it.

  Args:
    layers: ``(kernel, stride)`` or ``(kernel, stride, dilation)`` per layer, first
      layer first; pooling layers count like convolutions.

  Returns:
    The receptive field size ``r_L`` in input pixels (1 for no layers).

  Example:
    >>> receptive_field([(3, 1)] * 3)
    7
    >>> receptive_field([(5, 1), (2, 2), (5, 1), (2, 2)])  # conv, pool, conv, pool
    16
    >>> receptive_field([(3, 1, 1), (3, 1, 2), (3, 1, 4)])  # dilations 1, 2, 4
    15
  """
  field, step = 1, 1
  for kernel, stride, dilation in _layers(layers, op="receptive_field"):
    field += (kernel - 1) * dilation * step  # r̂ − 1 = (r − 1)·t, in exact Python ints
    step *= stride
  return field


def jump(layers: Sequence[tuple[int, ...]]) -> int:
  """The product of the strides: one output step of the stack, in input pixels.

  Args:
    layers: as :func:`receptive_field`.

  Returns:
    ``s_1 · s_2 ⋯ s_L`` (1 for no layers).

  Example:
    >>> jump([(5, 1), (2, 2), (5, 1), (2, 2)])
    4
  """
  return math.prod(stride for _, stride, _ in _layers(layers, op="jump"))


def param_count(
    kind: str,
    *,
    kernel: Sequence[int] = (),
    in_channels: int = 0,
    out_channels: int = 0,
    groups: int = 1,
    use_bias: bool = True,
    out_spatial: Sequence[int] | None = None,
    tile: int | Sequence[int] | None = None,
) -> int:
  """The number of parameters of one layer.

  ========================  =================================================================
  ``kind``                  parameters
  ========================  =================================================================
  ``"conv"``,               ``prod(kernel) · in_channels / groups · out_channels``
  ``"conv_transpose"``      (``+ out_channels`` with ``use_bias``)
  ``"locally_connected"``   ``prod(out_spatial) · prod(kernel) · in / groups · out``
                            (``+ prod(out_spatial) · out`` with ``use_bias``)
  ``"tiled"``               ``prod(tile) · prod(kernel) · in / groups · out`` (``+ out``)
  ``"fc"``                  ``in_channels · out_channels`` (``+ out_channels``)
  ``"pool"``, ``"norm"``,   0
  ``"activation"``,
  ``"softmax"``
  ========================  =================================================================

  Args:
    kind: one of :data:`KINDS`.
    kernel: the kernel's spatial shape, one int per spatial dim (e.g. ``(5, 5)``).
    in_channels: input channels (for ``"fc"``: input features).
    out_channels: output channels (for ``"fc"``: output features).
    groups: feature groups of a convolution.
    use_bias: whether the layer has a bias.
    out_spatial: the output's spatial shape (``"locally_connected"``: one kernel per
      output position).
    tile: the tile shape of a ``"tiled"`` layer, an int or one int per spatial dim.

  Returns:
    The parameter count.

  Raises:
    ValueError: an unknown ``kind`` or a missing or bad argument for it.

  Example:
    >>> param_count("conv", kernel=(5, 5), in_channels=3, out_channels=32)
    2432
    >>> param_count("locally_connected", kernel=(7, 7), in_channels=3, out_channels=5,
    ...             out_spatial=(24, 24), use_bias=False)
    423360
    >>> param_count("fc", in_channels=1600, out_channels=100)
    160100
  """
  op = "param_count"
  _check_kind(kind, op=op)
  use_bias = check_bool(use_bias, name="use_bias", op=op)
  if kind in ("pool", "norm", "activation", "softmax"):
    return 0
  cin = _positive_int(in_channels, name="in_channels", op=op)
  cout = _positive_int(out_channels, name="out_channels", op=op)
  bias = cout if use_bias else 0
  if kind == "fc":
    return cin * cout + bias
  k = _shape(kernel, name="kernel", op=op, what="one kernel size per spatial dim")
  _check_groups(groups, cin, cout, op=op)
  weights = math.prod(k) * (cin // groups) * cout
  if kind in ("conv", "conv_transpose"):
    return weights + bias
  if kind == "locally_connected":
    if out_spatial is None:
      raise ValueError(
          f"{op}: out_spatial is missing; expected the output's spatial shape, one "
          f"int per spatial dim, for kind={kind!r}."
      )
    out = _shape(out_spatial, name="out_spatial", op=op, what="the output's spatial shape")
    if len(out) != len(k):
      raise ValueError(
          f"{op}: out_spatial got {out_spatial!r} ({len(out)} dims) but kernel has "
          f"{len(k)}; expected one int per spatial dim."
      )
    return math.prod(out) * (weights + bias)
  # kind == "tiled"
  if tile is None:
    raise ValueError(
        f"{op}: tile is missing; expected a positive int or one per spatial dim for "
        f"kind={kind!r}."
    )
  t = normalize_ints(tile, len(k), name="tile", op=op)
  return math.prod(t) * weights + bias


def op_count(
    kind: str,
    *,
    in_shape: Sequence[int] = (),
    out_shape: Sequence[int] = (),
    kernel: Sequence[int] = (),
    in_channels: int = 0,
    groups: int = 1,
) -> int:
  """The number of ops (multiply-adds, compares, ...) of one layer, per example.

  ========================  =================================================================
  ``kind``                  ops
  ========================  =================================================================
  ``"conv"``,               ``prod(out_shape) · (prod(kernel) · in_channels / groups + 1)``
  ``"locally_connected"``,  (every output value: one multiply-add per weight, plus the bias)
  ``"tiled"``
  ``"conv_transpose"``      ``prod(in_shape[:-1]) · prod(kernel) · in_channels / groups ·
                            out_shape[-1] + prod(out_shape)``: the multiply-adds of the
                            forward convolution it transposes (not of the inserted zeros),
                            plus the bias
  ``"fc"``                  its parameters, ``prod(in_shape) · prod(out_shape) +
                            prod(out_shape)``
  ``"pool"``, ``"norm"``    ``prod(in_shape)``
  ``"activation"``          0
  ``"softmax"``             its size, ``prod(in_shape)`` (or ``prod(out_shape)``)
  ========================  =================================================================

  Args:
    kind: one of :data:`KINDS`.
    in_shape: the input shape without the batch, channels last (e.g. ``(32, 32, 3)``).
    out_shape: the output shape without the batch (e.g. ``(28, 28, 32)``).
    kernel: the kernel's spatial shape, one int per spatial dim.
    in_channels: the input channels; by default ``in_shape[-1]``.
    groups: feature groups of a convolution.

  Returns:
    The op count.

  Raises:
    ValueError: an unknown ``kind`` or a missing or bad argument for it.

  Example:
    >>> op_count("conv", in_shape=(32, 32, 3), out_shape=(28, 28, 32), kernel=(5, 5))
    1906688
    >>> op_count("pool", in_shape=(28, 28, 32), out_shape=(14, 14, 32))
    25088
    >>> op_count("fc", in_shape=(5, 5, 64), out_shape=(100,))
    160100
  """
  op = "op_count"
  _check_kind(kind, op=op)
  if kind == "activation":
    return 0
  what_in = "the input shape without the batch, channels last"
  what_out = "the output shape without the batch, channels last"
  if kind in ("pool", "norm"):
    return math.prod(_shape(in_shape, name="in_shape", op=op, what=what_in))
  if kind == "softmax":
    if in_shape:
      return math.prod(_shape(in_shape, name="in_shape", op=op, what=what_in))
    return math.prod(_shape(out_shape, name="out_shape", op=op, what=what_out))
  out = _shape(out_shape, name="out_shape", op=op, what=what_out)
  if kind == "fc":
    if in_shape:
      features = math.prod(_shape(in_shape, name="in_shape", op=op, what=what_in))
    else:
      features = _positive_int(in_channels, name="in_channels (or in_shape)", op=op)
    return (features + 1) * math.prod(out)
  # The convolution kinds.
  k = _shape(kernel, name="kernel", op=op, what="one kernel size per spatial dim")
  if len(out) != len(k) + 1:
    raise ValueError(
        f"{op}: out_shape got {out_shape!r} (rank {len(out)}) for a kernel with "
        f"{len(k)} spatial dim(s); expected [*spatial({len(k)}), channels]."
    )
  shape_in = _shape(in_shape, name="in_shape", op=op, what=what_in) if in_shape else None
  if shape_in is not None and len(shape_in) != len(k) + 1:
    raise ValueError(
        f"{op}: in_shape got {in_shape!r} (rank {len(shape_in)}) for a kernel with "
        f"{len(k)} spatial dim(s); expected [*spatial({len(k)}), channels]."
    )
  if not _is_int(in_channels):  # (0, the default, means "from in_shape"; False is not 0)
    raise ValueError(
        f"{op}: in_channels got {in_channels!r}; expected a positive int (or leave it out)."
    )
  if in_channels == 0 and shape_in is not None:
    cin = shape_in[-1]
  else:
    cin = _positive_int(in_channels, name="in_channels (or in_shape)", op=op)
    if shape_in is not None and shape_in[-1] != cin:
      raise ValueError(
          f"{op}: in_channels got {in_channels!r} but in_shape {in_shape!r} has "
          f"{shape_in[-1]} channels; expected them to agree (or leave in_channels out)."
      )
  _check_groups(groups, cin, out[-1], op=op)
  if kind == "conv_transpose":
    if shape_in is None:
      raise ValueError(f"{op}: in_shape is missing; expected {what_in}, for kind='conv_transpose'.")
    return math.prod(shape_in[:-1]) * math.prod(k) * (cin // groups) * out[-1] + math.prod(out)
  return math.prod(out) * (math.prod(k) * (cin // groups) + 1)
