"""Canonicalisation of convolution geometry, and padding by mode.

This is the one place where cnnjax turns user-facing configuration (``stride``,
``padding``, ``dilation``, ``tile``) into canonical tuples, validates it, and pads
arrays by mode. Every op (convolution, locally connected, tiled, pooling) and
:mod:`cnnjax.arithmetic` go through :func:`conv_geometry`, so the rules and the
error messages are the same everywhere.

Conventions: arrays are batched and channels-last, ``[N, *spatial, C]``; an int
hyperparameter applies to every spatial dim, a tuple gives one value per dim.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import cast

import jax
import jax.numpy as jnp

from cnnjax import _checks
from cnnjax._checks import INT64_MAX
from cnnjax._checks import ArgumentTypeError as _ArgumentTypeError
from cnnjax._checks import is_int as _is_int

PaddingLike = str | int | Sequence[int] | Sequence[tuple[int, int]]

PADDING_STRINGS = ("VALID", "SAME", "SAME_LOWER", "FULL", "CAUSAL")
PADDING_MODES = ("zeros", "circular", "reflect", "edge")
_NUMPY_PAD_MODE = {"circular": "wrap", "reflect": "reflect", "edge": "edge"}
# Sequences that are not sequences of ints (b"2" would be the stride 50).
_TEXT = (str, bytes, bytearray)

__all__ = [
    "Geometry",
    "PADDING_MODES",
    "PaddingLike",
    "check_padding_mode",
    "check_spatial_rank",
    "conv_geometry",
    "effective_kernel_size",
    "normalize_ints",
    "pad_spatial",
    "resolve_padding",
]


def normalize_ints(
    value: int | Sequence[int], num_dims: int, *, name: str, op: str, minimum: int = 1
) -> tuple[int, ...]:
  """Returns ``value`` as a tuple of ``num_dims`` ints, each ``>= minimum``.

  Args:
    value: an int (applied to every spatial dim) or a sequence of ``num_dims`` ints.
    num_dims: the number of spatial dims.
    name: the argument's name, used in error messages.
    op: the calling function's name, used in error messages.
    minimum: the smallest value allowed.

  Raises:
    ArgumentTypeError: ``value`` is neither an int nor a sequence of ints (a bool, a
      float, a string); a ``ValueError`` and a ``TypeError``.
    ValueError: wrong length, an entry below ``minimum`` or above 2**63 − 1.
  """
  allowed = "a positive int" if minimum == 1 else f"an int >= {minimum}"
  expected = f"{allowed} or a tuple of {num_dims} such ints"
  if _is_int(value):
    values = (int(value),) * num_dims
  elif isinstance(value, Sequence) and not isinstance(value, _TEXT):
    values = tuple(int(v) if _is_int(v) else v for v in value)
    if not all(_is_int(v) for v in values):
      raise _ArgumentTypeError(f"{op}: {name} got {value!r}; expected {expected}.")
    if len(values) != num_dims:
      raise ValueError(
          f"{op}: {name} got {value!r} ({len(values)} values) for {num_dims} "
          f"spatial dim(s); expected {expected}."
      )
  else:
    raise _ArgumentTypeError(f"{op}: {name} got {value!r}; expected {expected}.")
  if any(v < minimum for v in values):
    raise ValueError(f"{op}: {name} got {value!r}; expected {expected}.")
  if any(v > INT64_MAX for v in values):
    raise ValueError(
        f"{op}: {name} got {value!r}; expected {expected}, each at most 2**63 - 1 "
        "(int64, what lax takes)."
    )
  return values


def effective_kernel_size(kernel_size: int, *, dilation: int = 1) -> int:
  """The dilated ("à trous") kernel size r̂ = r + (r − 1)(t − 1).

  Args:
    kernel_size: the kernel size r along one dim.
    dilation: the dilation t along that dim.

  Returns:
    The number of input positions one kernel application spans.

  Example:
    >>> effective_kernel_size(3, dilation=2)
    5
  """
  op = "effective_kernel_size"
  kernel_size = _checks.check_positive_int(kernel_size, name="kernel_size", op=op)
  dilation = _checks.check_positive_int(dilation, name="dilation", op=op)
  r_eff = kernel_size + (kernel_size - 1) * (dilation - 1)
  if r_eff > INT64_MAX:
    raise ValueError(
        f"{op}: dilation got {dilation!r}, which makes the effective kernel size "
        f"{r_eff} (kernel {kernel_size}) exceed 2**63 - 1; expected a dilation whose "
        "effective kernel size fits int64."
    )
  return r_eff


def resolve_padding(
    padding: PaddingLike,
    in_spatial: Sequence[int],
    kernel_eff: Sequence[int],
    stride: Sequence[int],
    *,
    op: str,
) -> tuple[tuple[int, int], ...]:
  """Turns a padding spec into one ``(low, high)`` pair per spatial dim.

  Args:
    padding: ``"VALID"`` (none), ``"SAME"`` (as lax: output ``ceil(n / stride)``, the
      extra pixel on the high side), ``"SAME_LOWER"`` (the same total, the extra
      pixel on the low side: lax's and Equinox's ``"SAME_LOWER"``), ``"FULL"``
      (``r̂ − 1`` on each side), ``"CAUSAL"`` (1 spatial dim only: ``r̂ − 1`` on the low
      side, none on the high side, as Flax: output ``y[t]`` reads ``x[≤ t]``), an
      int, a tuple of ints (one per dim), or a tuple of ``(low, high)`` pairs.
      Strings are case-insensitive.
    in_spatial: the unpadded spatial shape.
    kernel_eff: the effective (dilated) kernel size per dim.
    stride: the stride per dim.
    op: the calling function's name, for error messages.

  Returns:
    A tuple of ``(low, high)`` pairs of non-negative ints.

  Raises:
    ValueError: an unknown string, ``"CAUSAL"`` for other than 1 spatial dim, or
      negative or too large pads (a wrong type is an
      :class:`~cnnjax._checks.ArgumentTypeError`, also a ``TypeError``).

  Example:
    >>> resolve_padding("SAME", (5,), (2,), (1,), op="f")
    ((0, 1),)
    >>> resolve_padding("SAME_LOWER", (5,), (2,), (1,), op="f")
    ((1, 0),)
    >>> resolve_padding("CAUSAL", (5,), (3,), (1,), op="f")
    ((2, 0),)
  """
  n = len(in_spatial)
  expected = (
      f"one of {PADDING_STRINGS}, a non-negative int, a tuple of {n} non-negative "
      f"ints or a tuple of {n} (low, high) pairs"
  )
  if isinstance(padding, str):
    mode = padding.upper()
    if mode == "VALID":
      return ((0, 0),) * n
    if mode == "FULL":
      return tuple((r - 1, r - 1) for r in kernel_eff)
    if mode == "CAUSAL":
      if n != 1:
        raise ValueError(
            f"{op}: padding got {padding!r}, which is for 1 spatial dim, but the input "
            f"has {n}; expected 'CAUSAL' only for 1-D inputs, or another padding (e.g. "
            "(low, high) pairs)."
        )
      return ((kernel_eff[0] - 1, 0),)
    if mode in ("SAME", "SAME_LOWER"):
      pads = []
      for size, r, s in zip(in_spatial, kernel_eff, stride, strict=True):
        out = -(-size // s)
        total = max((out - 1) * s + r - size, 0)
        small, large = total // 2, total - total // 2
        pads.append((small, large) if mode == "SAME" else (large, small))
      return tuple(pads)
    raise ValueError(f"{op}: padding got {padding!r}; expected {expected}.")
  if _is_int(padding):
    pads = ((int(padding), int(padding)),) * n
  elif isinstance(padding, Sequence) and not isinstance(padding, _TEXT):
    items = tuple(padding)
    if len(items) != n:
      raise ValueError(
          f"{op}: padding got {padding!r} ({len(items)} entries) for {n} spatial "
          f"dim(s); expected {expected}."
      )
    if all(_is_int(p) for p in items):
      pads = tuple((int(p), int(p)) for p in cast("tuple[int, ...]", items))
    elif all(
        isinstance(p, Sequence)
        and not isinstance(p, _TEXT)
        and len(p) == 2
        and all(_is_int(q) for q in p)
        for p in items
    ):
      pads = tuple((int(p[0]), int(p[1])) for p in cast("tuple[tuple[int, int], ...]", items))
    else:
      raise _ArgumentTypeError(f"{op}: padding got {padding!r}; expected {expected}.")
  else:
    raise _ArgumentTypeError(f"{op}: padding got {padding!r}; expected {expected}.")
  if any(lo < 0 or hi < 0 for lo, hi in pads):
    raise ValueError(f"{op}: padding got {padding!r}; expected {expected}.")
  if any(lo > INT64_MAX or hi > INT64_MAX for lo, hi in pads):
    raise ValueError(
        f"{op}: padding got {padding!r}; expected {expected}, each at most 2**63 - 1 "
        "(int64, what lax takes)."
    )
  return pads


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Canonical geometry of one sliding-window op over ``len(in_spatial)`` dims.

  Attributes:
    in_spatial: the unpadded input spatial shape.
    kernel: the kernel (window) size per dim.
    stride: the stride per dim.
    dilation: the dilation per dim.
    kernel_eff: the effective kernel size r̂ per dim.
    pads: one ``(low, high)`` padding pair per dim (with ``ceil_mode``, the high
      padding that the last window reaches, which can differ from the one asked for).
    out_spatial: the output spatial shape ``⌊(n + lo + hi − r̂) / s⌋ + 1``.
  """

  in_spatial: tuple[int, ...]
  kernel: tuple[int, ...]
  stride: tuple[int, ...]
  dilation: tuple[int, ...]
  kernel_eff: tuple[int, ...]
  pads: tuple[tuple[int, int], ...]
  out_spatial: tuple[int, ...]

  @property
  def padded_spatial(self) -> tuple[int, ...]:
    return tuple(n + lo + hi for n, (lo, hi) in zip(self.in_spatial, self.pads, strict=True))


def conv_geometry(
    in_spatial: Sequence[int],
    kernel: Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: PaddingLike = "VALID",
    dilation: int | Sequence[int] = 1,
    strict: bool = False,
    ceil_mode: bool = False,
    op: str,
    kernel_name: str = "w",
) -> Geometry:
  """Validates and canonicalises the geometry of a sliding-window op.

  Args:
    in_spatial: the input's spatial shape (no batch, no channels).
    kernel: the kernel's spatial shape.
    stride: an int or one int per dim, each positive.
    padding: see :func:`resolve_padding`.
    dilation: an int or one int per dim, each positive.
    strict: if True, refuse settings that "do not click": where
      ``(n + lo + hi − r̂)`` is not divisible by the stride, so trailing input pixels
      would be dropped silently. A bool (a truthy string is refused).
    ceil_mode: PyTorch's pooling ``ceil_mode``: ``⌈(n + lo + hi − r̂) / s⌉ + 1``
      outputs, less one if the last window would start in the high padding
      (``(m − 1)·s >= n + lo``). The last window may overhang the padding; the
      geometry's high padding is then extended to reach it. With ``strict``, only a
      setting that still drops trailing input is refused.
    op: the calling function's name, for error messages.
    kernel_name: the argument the kernel's shape comes from, for error messages.

  Returns:
    A :class:`Geometry`.

  Raises:
    ValueError: bad hyperparameters (a wrong type is an
      :class:`~cnnjax._checks.ArgumentTypeError`, also a ``TypeError``), a zero-size
      kernel, a kernel larger than the padded input, sizes whose arithmetic overflows
      int64 (what lax takes), or (with ``strict``) a stride that does not click.
  """
  in_spatial = tuple(int(n) for n in in_spatial)
  kernel = tuple(int(k) for k in kernel)
  nd = len(in_spatial)
  strict = _checks.check_bool(strict, name="strict", op=op)
  ceil_mode = _checks.check_bool(ceil_mode, name="ceil_mode", op=op)
  stride = normalize_ints(stride, nd, name="stride", op=op)
  dilation = normalize_ints(dilation, nd, name="dilation", op=op)
  for d, k in enumerate(kernel):
    if k < 1 or k > INT64_MAX:
      what = "a zero-size" if k == 0 else "an invalid"
      raise ValueError(
          f"{op}: {kernel_name} has {what} kernel dim: kernel spatial shape {kernel} "
          f"(spatial dim {d}); expected every kernel size in [1, 2**63 - 1]."
      )
  kernel_eff = tuple(k + (k - 1) * (t - 1) for k, t in zip(kernel, dilation, strict=True))
  for d, (k, t, r) in enumerate(zip(kernel, dilation, kernel_eff, strict=True)):
    if r > INT64_MAX:
      raise ValueError(
          f"{op}: dilation got {t if len(set(dilation)) == 1 else dilation!r}, which "
          f"makes the effective kernel size {r} (kernel {k}) in spatial dim {d} exceed "
          "2**63 - 1; expected a dilation whose effective kernel size fits int64 (what "
          "lax takes)."
      )
  pads = resolve_padding(padding, in_spatial, kernel_eff, stride, op=op)
  if ceil_mode:
    pads = _ceil_mode_pads(in_spatial, kernel_eff, stride, pads)
  padded = tuple(n + lo + hi for n, (lo, hi) in zip(in_spatial, pads, strict=True))
  positions = 1
  for size in padded:
    positions *= size
  if positions > INT64_MAX:
    blame = (
        f"padding got {padding!r}, which makes"
        if any(lo or hi for lo, hi in pads)
        else "the input's spatial shape makes"
    )
    raise ValueError(
        f"{op}: {blame} the padded input {padded} (input {in_spatial}, padding "
        f"{pads}), {positions} positions; expected at most 2**63 - 1 positions (int64, "
        "what lax takes)."
    )
  out = []
  for d, (n, r, s, (lo, hi)) in enumerate(zip(in_spatial, kernel_eff, stride, pads, strict=True)):
    span = n + lo + hi - r
    if span < 0:
      raise ValueError(
          f"{op}: the effective kernel size {r} (kernel {kernel[d]}, dilation "
          f"{dilation[d]}) is larger than the padded input size {n + lo + hi} "
          f"(input {n}, padding {(lo, hi)}) in spatial dim {d}; expected a kernel "
          "no larger than the padded input."
      )
    if strict and span % s:
      raise ValueError(
          f"{op}: stride {s} does not click in spatial dim {d}: input {n} + padding "
          f"{lo + hi} − effective kernel {r} = {span} is not divisible by the stride, "
          f"so {span % s} trailing input position(s) would be dropped (strict=True). "
          "Change the padding or stride, or pass strict=False."
      )
    out.append(span // s + 1)
  return Geometry(in_spatial, kernel, stride, dilation, kernel_eff, pads, tuple(out))


def _ceil_mode_pads(
    in_spatial: Sequence[int],
    kernel_eff: Sequence[int],
    stride: Sequence[int],
    pads: Sequence[tuple[int, int]],
) -> tuple[tuple[int, int], ...]:
  """The pads whose floor output size is PyTorch's ``ceil_mode`` output size.

  PyTorch (``pooling_output_shape``): ``m = ⌈(n + lo + hi − r̂) / s⌉ + 1``, less one if
  ``(m − 1)·s >= n + lo`` (a window may not start in the high padding). The high side
  becomes ``(m − 1)·s + r̂ − n − lo`` (at least 0), for which ``⌊(n + lo + hi − r̂) / s⌋
  + 1 = m``. A kernel larger than the padded input is left to the caller's check.
  """
  out = []
  for n, r, s, (lo, hi) in zip(in_spatial, kernel_eff, stride, pads, strict=True):
    span = n + lo + hi - r
    if span < 0:
      out.append((lo, hi))
      continue
    m = -(-span // s) + 1
    if m > 1 and (m - 1) * s >= n + lo:
      m -= 1
    out.append((lo, max((m - 1) * s + r - n - lo, 0)))
  return tuple(out)


def check_spatial_rank(x: jax.Array, num_spatial: int, *, name: str, op: str) -> None:
  """Checks that ``x`` is ``[N, *spatial, C]`` with ``num_spatial`` spatial dims."""
  if x.ndim != num_spatial + 2:
    hint = " (an unbatched input? add a leading batch axis)" if x.ndim == num_spatial + 1 else ""
    raise ValueError(
        f"{op}: {name} has shape {tuple(x.shape)} (rank {x.ndim}){hint}; expected rank "
        f"{num_spatial + 2}, [batch, *spatial({num_spatial}), channels], to match the "
        "kernel."
    )


def check_padding_mode(padding_mode: str, *, op: str) -> str:
  if padding_mode not in PADDING_MODES:
    raise ValueError(f"{op}: padding_mode got {padding_mode!r}; expected one of {PADDING_MODES}.")
  return padding_mode


def pad_spatial(
    x: jax.Array, pads: Sequence[tuple[int, int]], padding_mode: str = "zeros"
) -> jax.Array:
  """Pads the spatial axes of ``x`` (``[N, *spatial, C]``) by ``pads`` and mode.

  Args:
    x: the input, ``[N, *spatial, C]``.
    pads: one ``(low, high)`` pair per spatial dim.
    padding_mode: ``"zeros"``, ``"circular"`` (wrap around), ``"reflect"`` (mirror
      without repeating the edge) or ``"edge"`` (repeat the edge).

  Returns:
    The padded array, ``[N, *(spatial + low + high), C]``.
  """
  if not any(lo or hi for lo, hi in pads):
    return x
  widths = [(0, 0), *pads, (0, 0)]
  if padding_mode == "zeros":
    return jnp.pad(x, widths)
  return jnp.pad(x, widths, mode=_NUMPY_PAD_MODE[padding_mode])
