"""Transforms written as short specs (``"shift:1,2,4"``, ``"rot90"``, ``"flip+shift:2"``)
and random group elements drawn with a seed.

:func:`parse_transforms` reads the specs that ``cnnjax equivariance --transform`` takes;
:func:`random_elements` draws ``trials`` random elements of a group of transforms with a
seed (as e3nn's ``equivariance_error`` draws one random element per trial). Both return
:class:`~cnnjax.equivariance.Transform` values with their typed steps, named by their
spec, ready for :func:`cnnjax.equivariance.report`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from cnnjax._checks import is_int
from cnnjax.equivariance.group_actions import plane_action
from cnnjax.equivariance.transforms import (
    TRANSLATE_MODES,
    Transform,
    compose,
    flip,
    rot90,
    translate,
    transpose,
)

__all__ = ["RANDOM_KINDS", "SPEC_NAMES", "parse_transforms", "random_elements"]

SPEC_NAMES = ("identity", "shift", "flip", "rot90", "transpose", "p4", "p4m", "random")
RANDOM_KINDS = ("shift", "p4", "p4m")

_SYNTAX = (
    "NAME[:ARG,...] or parts joined by '+' (applied left to right), NAME one of "
    f"{', '.join(SPEC_NAMES)}; e.g. shift:1,2,4  shift:1x0,mode=zeros  flip  rot90:1,2,3  "
    "p4m  random:p4m,trials=8,seed=0  rot90+flip"
)


def _named(t: Transform, name: str) -> Transform:
  return dataclasses.replace(t, name=name)


def _shift_name(shift: int | tuple[int, ...], mode: str) -> str:
  text = str(shift) if isinstance(shift, int) else "x".join(map(str, shift))
  return f"shift:{text}" + ("" if mode == "circular" else f",mode={mode}")


def _shift(shift: int | tuple[int, ...], mode: str) -> Transform:
  return _named(translate(shift, mode=mode), _shift_name(shift, mode))


def _element(element: int, group: str) -> Transform:
  return _named(plane_action(element, group=group), f"{group}:{element}")


def random_elements(
    kind: str,
    *,
    trials: int,
    seed: int = 0,
    max_shift: int = 4,
    num_dims: int = 2,
    mode: str = "circular",
) -> tuple[Transform, ...]:
  """``trials`` random elements of a group of transforms, drawn uniformly with a seed.

  Args:
    kind: ``"shift"`` (integer shifts, each component uniform in
      ``[−max_shift, max_shift]``), ``"p4"`` (one of the 4 quarter turns) or ``"p4m"``
      (one of the 8 quarter turns and reflections, as :func:`plane_action`). The
      identity can be drawn.
    trials: how many elements, a positive int.
    seed: the seed of the NumPy generator that draws them.
    max_shift: the largest shift component (``"shift"``), a non-negative int.
    num_dims: the spatial dims a shift has (``"shift"``).
    mode: ``"circular"`` or ``"zeros"`` (``"shift"``), as :func:`translate`.

  Returns:
    ``trials`` transforms, named by their spec and draw, e.g. ``"p4m:5 (draw 2)"``.

  Raises:
    ValueError: an unknown ``kind``, or a bad count, seed, shift or mode.

  Example:
    >>> [t.name for t in random_elements("p4", trials=3, seed=0)]
    ['p4:3 (draw 1)', 'p4:2 (draw 2)', 'p4:2 (draw 3)']
  """
  op = "random_elements"
  if kind not in RANDOM_KINDS:
    raise ValueError(f"{op}: kind got {kind!r}; expected one of {RANDOM_KINDS}.")
  for name, value, low in (
      ("trials", trials, 1),
      ("max_shift", max_shift, 0),
      ("num_dims", num_dims, 1),
      ("seed", seed, 0),
  ):
    if isinstance(value, bool) or not is_int(value) or value < low:
      raise ValueError(f"{op}: {name} got {value!r}; expected an int >= {low}.")
  if mode not in TRANSLATE_MODES:
    raise ValueError(f"{op}: mode got {mode!r}; expected one of {TRANSLATE_MODES}.")
  rng = np.random.default_rng(int(seed))
  out = []
  for i in range(int(trials)):
    if kind == "shift":
      drawn = rng.integers(-max_shift, max_shift + 1, size=int(num_dims))
      t = _shift(tuple(int(v) for v in drawn), mode)
    else:
      t = _element(int(rng.integers(0, 4 if kind == "p4" else 8)), kind)
    out.append(_named(t, f"{t.name} (draw {i + 1})"))
  return tuple(out)


# ------------------------------------------------------------------------------ parsing


class _SpecError(ValueError):
  pass


def _int(text: str, *, what: str) -> int:
  if not re.fullmatch(r"[+-]?\d+", text):
    raise _SpecError(f"{what} got {text!r}; expected an integer")
  return int(text)


def _values_and_options(args: str) -> tuple[list[str], dict[str, str]]:
  values, options = [], {}
  for item in args.split(","):
    item = item.strip()
    if not item:
      raise _SpecError("an empty argument (two commas, or a trailing comma)")
    if "=" in item:
      key, value = (s.strip() for s in item.split("=", 1))
      if key in options:
        raise _SpecError(f"the option {key!r} is given twice")
      options[key] = value
    else:
      values.append(item)
  return values, options


def _no_options(name: str, options: dict[str, str], allowed: Sequence[str] = ()) -> None:
  extra = sorted(set(options) - set(allowed))
  if extra:
    wanted = f"only {', '.join(allowed)}" if allowed else "none"
    raise _SpecError(f"{name} got the option(s) {', '.join(extra)}; expected {wanted}")


def _part(text: str) -> list[Transform]:
  name, _, args = text.partition(":")
  name = name.strip()
  if name not in SPEC_NAMES:
    raise _SpecError(f"unknown transform {name!r}")
  if _ and not args.strip():
    raise _SpecError(f"{name}: nothing after the colon")
  values, options = _values_and_options(args) if args.strip() else ([], {})
  if name == "identity":
    _no_options(name, options)
    if values:
      raise _SpecError("identity takes no arguments")
    return [_named(compose(), "identity")]
  if name == "shift":
    _no_options(name, options, ("mode",))
    mode = options.get("mode", "circular")
    if mode not in TRANSLATE_MODES:
      raise _SpecError(f"shift: mode got {mode!r}; expected one of {TRANSLATE_MODES}")
    if not values:
      raise _SpecError("shift needs at least one shift, e.g. shift:1 or shift:1x0")
    shifts = []
    for v in values:
      parts = v.split("x")
      ints = tuple(_int(p.strip(), what="shift") for p in parts)
      shifts.append(ints[0] if len(ints) == 1 else ints)
    return [_shift(s, mode) for s in shifts]
  if name in ("flip", "rot90"):
    _no_options(name, options)
    default = 1
    ints = [_int(v, what=f"{name}'s {'axis' if name == 'flip' else 'k'}") for v in values]
    make = flip if name == "flip" else rot90
    return [_named(make(i), f"{name}:{i}") for i in ints or [default]]
  if name == "transpose":
    _no_options(name, options)
    if values:
      raise _SpecError("transpose takes no arguments")
    return [_named(transpose(), "transpose")]
  if name in ("p4", "p4m"):
    _no_options(name, options)
    order = 4 if name == "p4" else 8
    elements = [_int(v, what=f"{name} element") for v in values] or list(range(1, order))
    for e in elements:
      if not 0 <= e < order:
        raise _SpecError(f"{name} element got {e}; expected an int in [0, {order})")
    return [_element(e, name) for e in elements]
  # random:KIND,trials=N,seed=S[,max=M][,mode=MODE]
  _no_options(name, options, ("trials", "seed", "max", "mode"))
  if len(values) != 1 or values[0] not in RANDOM_KINDS:
    raise _SpecError(f"random needs one kind out of {', '.join(RANDOM_KINDS)}, e.g. random:p4m")
  kind = values[0]
  if kind != "shift" and ({"max", "mode"} & set(options)):
    raise _SpecError(f"random:{kind} got max= or mode=; expected them with random:shift only")
  try:
    return list(
        random_elements(
            kind,
            trials=_int(options.get("trials", "4"), what="trials"),
            seed=_int(options.get("seed", "0"), what="seed"),
            max_shift=_int(options.get("max", "4"), what="max"),
            mode=options.get("mode", "circular"),
        )
    )
  except ValueError as e:
    raise _SpecError(str(e).removeprefix("random_elements: ").rstrip(".")) from None


def parse_transforms(spec: str) -> tuple[Transform, ...]:
  """The transforms a spec such as ``"shift:1,2,4"`` or ``"rot90+flip"`` names.

  A spec is ``NAME[:ARG,...]``; a list of arguments gives one transform each. Parts
  joined by ``+`` are composed, applied left to right (every combination of their
  transforms).

  =========================================  ==============================================
  spec                                       transforms
  =========================================  ==============================================
  ``identity``                               the identity (error 0: a sanity check)
  ``shift:1,2,4``                            :func:`translate` by 1, 2 and 4 pixels along
                                             every spatial axis (circular)
  ``shift:1x0,0x1``                          by one pixel down, one pixel right
  ``shift:2,mode=zeros``                     as a crop: content shifted out is lost,
                                             vacated pixels are 0
  ``flip``, ``flip:0``                       :func:`flip` of W (a mirror), of H
  ``rot90``, ``rot90:1,2,3``                 :func:`rot90` by 1 (1, 2, 3) quarter turns
  ``transpose``                              :func:`transpose`
  ``p4``, ``p4m``, ``p4m:4,5``               the non-identity elements of p4 or p4m (or
                                             the ones listed), as :func:`plane_action`
  ``random:p4m,trials=8,seed=0``             :func:`random_elements` (kinds ``shift``
                                             with ``max=M`` and ``mode=``, ``p4``,
                                             ``p4m``; 4 trials and seed 0 by default)
  ``rot90+shift:2``                          a quarter turn, then a shift by 2
  =========================================  ==============================================

  Args:
    spec: the spec.

  Returns:
    The transforms, each named by its own spec (``"shift:2"``, ``"rot90:1+flip:1"``).

  Raises:
    ValueError: a spec that does not parse, in one line that says what was expected.

  Example:
    >>> [t.name for t in parse_transforms("shift:1,2x0")]
    ['shift:1', 'shift:2x0']
    >>> [t.name for t in parse_transforms("rot90:1,3+flip")]
    ['rot90:1+flip:1', 'rot90:3+flip:1']
  """
  op = "parse_transforms"
  if not isinstance(spec, str):
    raise TypeError(f"{op}: spec got {spec!r}; expected a string such as 'shift:1,2,4'.")
  text = spec.strip()
  try:
    if not text:
      raise _SpecError("an empty spec")
    combos: list[list[Transform]] = [[]]
    for part in text.split("+"):
      if not part.strip():
        raise _SpecError("an empty part ('+' at an end, or two in a row)")
      combos = [c + [t] for c in combos for t in _part(part.strip())]
  except _SpecError as e:
    raise ValueError(f"{op}: spec got {spec!r}: {e}; expected {_SYNTAX}.") from None
  out = []
  for parts in combos:
    out.append(
        parts[0] if len(parts) == 1 else _named(compose(*parts), "+".join(t.name for t in parts))
    )
  return tuple(out)
