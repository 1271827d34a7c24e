"""Exact integer averages: the sum without overflow, the quotient rounded once.

An average of integers (:func:`cnnjax.avg_pool`, :func:`cnnjax.global_avg_pool`,
:func:`cnnjax.group_pool`'s mean) is ``T / c``: ``T`` the exact sum of some integers of
one dtype (int8 … int64, uint8 … uint64), ``c`` a positive count. Without
``jax_enable_x64`` JAX has no 64-bit integers, and an int32 sum wraps (nine int32 values
of 3e8 sum to -1.3e9; a uint32 2**31 read as int32 is negative), so the sum and the
division run on int32 pieces whose every intermediate value is bounded:

1. *Planes* (:func:`split`, :func:`sum_planes`). Each value is cut into bit fields,
   ``value = Σ field · 2**shift`` (16 bits each, the top field signed); before a sum of
   ``count`` terms, a field whose sum could leave int32 is cut again into narrower
   fields, so every sum of every field is exact in int32. A two-level sum (blocks, then
   the blocks' sums) cuts again between the levels.
2. *Digits.* The fields' sums are combined with carries into base-2**16 digits of
   ``|T|`` and its sign.
3. *Division.* Schoolbook long division of ``|T| · 2**m`` by ``c`` (a count per
   output position, or one for all), a few bits at a time so that ``remainder ·
   2**bits`` fits int32, gives the quotient ``Q`` and whether a remainder is left.
4. *Rounding* (:func:`quotient_float32`). ``m`` makes ``Q`` at least 2**24 for every
   ``T != 0``; the top 32 bits of ``Q``, with the bits below and the remainder folded
   into the lowest bit (a sticky bit), convert to float32 with the one
   round-to-nearest-even of the integer-to-float conversion, and that is the rounding
   of ``T / c`` itself; a power of two scales it back exactly.

So the result is the float32 nearest to ``T / c`` (ties to even), what ``fractions``
or a float64 reference rounds it to, for every input. :func:`quotient_truncated` gives
``trunc(T / c)`` in the input's integer dtype instead. Counts up to ``2**30 − 1`` per
sum (the division's remainder times 2 must fit int32); more by blocks (two levels).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["MAX_COUNT", "Plane", "quotient_float32", "quotient_truncated", "split", "sum_planes"]

_INT32_MAX = 2**31 - 1
_DIGIT = 16
_DIGIT_MASK = 2**_DIGIT - 1
# The largest count of one sum (and the largest divisor): the long division needs
# divisor · 2 <= 2**31 - 1.
MAX_COUNT = 2**30 - 1


class Plane(NamedTuple):
  """``values · 2**shift``: int32 ``values``, each in ``[low, high]`` (``low <= 0 <= high``)."""

  shift: int
  values: jax.Array
  low: int
  high: int


def split(x: jax.Array) -> list[Plane]:
  """``x`` (any integer dtype) as 16-bit fields, the top one signed for signed dtypes."""
  info = jnp.iinfo(x.dtype)
  if info.bits <= _DIGIT:
    return [Plane(0, x.astype(jnp.int32), min(int(info.min), 0), int(info.max))]
  planes = []
  for shift in range(0, info.bits, _DIGIT):
    field = x >> np.asarray(shift, x.dtype) if shift else x  # arithmetic for signed
    if shift + _DIGIT < info.bits:
      planes.append(
          Plane(shift, (field & np.asarray(_DIGIT_MASK, x.dtype)).astype(jnp.int32), 0, _DIGIT_MASK)
      )
    else:
      low, high = (-(2**15), 2**15 - 1) if info.min < 0 else (0, _DIGIT_MASK)
      planes.append(Plane(shift, field.astype(jnp.int32), low, high))
  return planes


def _cut(plane: Plane, count: int) -> list[Plane]:
  """``plane`` as fields each of whose sums of ``count`` values fits int32."""
  if plane.low == plane.high == 0:
    return []
  if max(-plane.low, plane.high) * count <= _INT32_MAX:
    return [plane]
  bits = (_INT32_MAX // count + 1).bit_length() - 1  # (2**bits - 1) · count fits
  mask = 2**bits - 1
  low = Plane(plane.shift, plane.values & np.int32(mask), 0, mask)
  high = Plane(
      plane.shift + bits,
      plane.values >> np.int32(bits),
      min(plane.low >> bits, 0),
      plane.high >> bits,
  )
  return [low, *_cut(high, count)]


def sum_planes(
    planes: list[Plane], count: int, reduce: Callable[[jax.Array], jax.Array]
) -> list[Plane]:
  """Sums of at most ``count`` terms of each plane (``reduce``), exact in int32.

  ``reduce`` maps an int32 array to its sums (a window or an axis sum); terms it adds
  beyond the values (zero padding) must be zeros.
  """
  if not 1 <= count <= MAX_COUNT:
    raise ValueError(f"exact_mean: a sum of {count} terms; expected at most {MAX_COUNT}.")
  out = []
  for plane in planes:
    for p in _cut(plane, count):
      out.append(Plane(p.shift, reduce(p.values).astype(jnp.int32), p.low * count, p.high * count))
  return out


def _carry(digits: list[jax.Array]) -> list[jax.Array]:
  """Base-2**16 digits with carries moved up: all but the top digit in [0, 2**16)."""
  out, carry = [], None
  for d in digits[:-1]:
    d = d if carry is None else d + carry
    out.append(d & np.int32(_DIGIT_MASK))
    carry = d >> np.int32(_DIGIT)
  out.append(digits[-1] if carry is None else digits[-1] + carry)
  return out


def _magnitude(planes: list[Plane]) -> tuple[jax.Array, list[jax.Array]]:
  """The sign of ``T = Σ values · 2**shift`` and ``|T|`` as base-2**16 digits, low first."""
  bound = sum(max(-p.low, p.high) << p.shift for p in planes)
  top_shift = max(p.shift for p in planes)
  num = max(bound.bit_length() // _DIGIT + 2, top_shift // _DIGIT + 3)
  shape = jnp.broadcast_shapes(*(p.values.shape for p in planes))
  digits = [jnp.zeros(shape, jnp.int32) for _ in range(num)]
  for p in planes:
    q, r = divmod(p.shift, _DIGIT)
    # values · 2**r, as a low part below 2**16 and the rest (|rest| < 2**30).
    low = (p.values & np.int32(2 ** (_DIGIT - r) - 1)) << np.int32(r)
    rest = p.values >> np.int32(_DIGIT - r)
    digits[q] = digits[q] + low
    digits[q + 1] = digits[q + 1] + rest
    digits = _carry(digits)
  negative = digits[-1] < 0
  negated = _carry([-d for d in digits])
  return negative, [jnp.where(negative, n, d) for n, d in zip(negated, digits, strict=True)]


def _divide(
    digits: list[jax.Array], divisor, max_divisor: int, extra: int
) -> tuple[list[jax.Array], jax.Array]:
  """``floor(M · 2**(16·extra) / divisor)`` as digits (high first) and the remainder.

  ``M`` is given by its digits, low first; ``divisor`` is an int or an int32 array of
  values in ``[1, max_divisor]``, broadcastable to the digits.
  """
  bits = _DIGIT
  while max_divisor << bits > _INT32_MAX:
    bits //= 2
  if bits == 0:
    raise ValueError(f"exact_mean: a divisor of {max_divisor}; expected at most {MAX_COUNT}.")
  divisor = divisor if isinstance(divisor, int) else jnp.asarray(divisor, jnp.int32)
  mask = np.int32(2**bits - 1)
  remainder = jnp.zeros_like(digits[0])
  quotient = []
  zero = jnp.zeros_like(digits[0])
  for d in [*reversed(digits), *[zero] * extra]:
    q = zero
    for j in range(_DIGIT // bits):
      chunk = (d >> np.int32(_DIGIT - bits * (j + 1))) & mask
      remainder = (remainder << np.int32(bits)) | chunk
      part = remainder // divisor
      remainder = remainder - part * divisor
      q = (q << np.int32(bits)) | part
    quotient.append(q)
  return quotient, remainder


def _extra_digits(max_divisor: int) -> int:
  """Fraction digits ``m / 16`` that make ``Q = |T| · 2**m / c >= 2**24`` for ``|T| >= 1``."""
  return -(-(24 + max_divisor.bit_length()) // _DIGIT)


def _pow2_float32(e: jax.Array) -> jax.Array:
  return lax.bitcast_convert_type((e + np.int32(127)) << np.int32(23), jnp.float32)


def quotient_float32(planes: list[Plane], divisor, max_divisor: int) -> jax.Array:
  """The float32 nearest ``T / divisor`` (ties to even), ``T = Σ values · 2**shift``.

  ``divisor``: an int or an integer array (broadcastable to the sums) of values in
  ``[1, max_divisor]``, ``max_divisor <= MAX_COUNT``.
  """
  negative, digits = _magnitude(planes)
  extra = _extra_digits(max_divisor)
  q, remainder = _divide(digits, divisor, max_divisor, extra)
  while len(q) < 3:
    q.insert(0, jnp.zeros_like(q[0]))
  k = len(q)
  # Move the leading nonzero digit to the front; count the moves.
  moves = jnp.zeros_like(q[0])
  for _ in range(k - 1):
    lead_zero = q[0] == 0
    q = [jnp.where(lead_zero, q[i + 1], q[i]) for i in range(k - 1)] + [
        jnp.where(lead_zero, jnp.zeros_like(q[0]), q[k - 1])
    ]
    moves = moves + lead_zero.astype(jnp.int32)
  is_zero = q[0] == 0
  s = lax.clz(q[0]) - np.int32(_DIGIT)  # leading zeros of the 16-bit digit, 0 .. 15
  s = jnp.where(is_zero, np.int32(0), s)
  us = s.astype(jnp.uint32)
  lead, second, third = (d.astype(jnp.uint32) for d in q[:3])
  top = (
      (lead << (us + np.uint32(16))) | (second << us) | (third >> (np.uint32(16) - us))
  )  # 32 bits, the highest set
  below = q[2] & ((np.int32(1) << (np.int32(_DIGIT) - s)) - np.int32(1))
  sticky = (below != 0) | (remainder != 0)
  for d in q[3:]:
    sticky = sticky | (d != 0)
  value = (top | sticky.astype(jnp.uint32)).astype(jnp.float32)  # the one rounding
  exponent = np.int32(_DIGIT * (k - 2 - extra)) - s - np.int32(_DIGIT) * moves
  y = value * _pow2_float32(exponent)
  y = jnp.where(is_zero, np.float32(0), y)
  return jnp.where(negative, -y, y)


def quotient_truncated(planes: list[Plane], divisor: int, dtype) -> jax.Array:
  """``trunc(T / divisor)`` in the integer ``dtype``, for a quotient that fits it."""
  negative, digits = _magnitude(planes)
  q, _ = _divide(digits, divisor, divisor, 0)
  bits = jnp.iinfo(dtype).bits
  wide = jnp.dtype(jnp.uint64 if bits == 64 else jnp.uint32)
  acc = jnp.zeros(q[0].shape, wide)
  for d in q[-(max(bits, 32) // _DIGIT) :]:  # the digits below 2**32 (or 2**64)
    acc = (acc << np.asarray(_DIGIT, wide)) | d.astype(wide)
  acc = jnp.where(negative, np.asarray(0, wide) - acc, acc)  # modulo 2**32 (or 2**64)
  signed = jnp.dtype(wide.name[1:])  # uint32 -> int32: the same bits
  result = lax.bitcast_convert_type(acc, signed)
  return result.astype(dtype)  # exact: the quotient fits ``dtype``
