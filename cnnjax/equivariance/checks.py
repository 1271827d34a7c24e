"""Equivariance and invariance errors, and the assertions built on them.

:func:`equivariance_error` and :func:`invariance_error` measure the relative error;
:func:`assert_equivariant` and :func:`assert_invariant` are one-line test assertions
that say where the largest difference is; :func:`default_tolerance` is their tolerance
by dtype.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike, DTypeLike

__all__ = [
    "Region",
    "assert_equivariant",
    "assert_invariant",
    "default_tolerance",
    "equivariance_error",
    "invariance_error",
]

Region = tuple[slice, ...] | np.ndarray | jax.Array | None


def default_tolerance(dtype: DTypeLike) -> tuple[float, float]:
  """The default ``(rtol, atol)`` of :func:`assert_equivariant` for a result dtype.

  ========================  ===========  ======
  dtype                     rtol         atol
  ========================  ===========  ======
  float64, complex128       ``1e-10``    0
  float32, complex64        ``1e-5``     0
  float16, bfloat16         ``1e-2``     0
  integer, bool             0 (exact)    0
  ========================  ===========  ======

  The check is ``max|difference| ≤ atol + rtol · max|reference|`` (see
  :func:`assert_equivariant`), so rtol is relative to the output's scale, a few
  hundred ulps of float32 and float64 for stacks of small convolutions.

  Example:
    >>> default_tolerance(jnp.float32)
    (1e-05, 0.0)
  """
  dtype = jnp.dtype(dtype)
  if dtype in (jnp.dtype(jnp.float64), jnp.dtype(jnp.complex128)):
    return 1e-10, 0.0
  if dtype in (jnp.dtype(jnp.float32), jnp.dtype(jnp.complex64)):
    return 1e-5, 0.0
  if jnp.issubdtype(dtype, jnp.inexact):  # float16, bfloat16, fp8 …
    return 1e-2, 0.0
  return 0.0, 0.0


def _region_mask(region, shape: tuple[int, ...], *, op: str) -> np.ndarray:
  """A boolean mask of ``shape`` (the compared arrays' full shape) selecting ``region``."""
  if region is None:
    return np.ones(shape, dtype=bool)
  if len(shape) < 3:
    raise ValueError(
        f"{op}: region got {region!r} but the output has shape {shape}, with no spatial "
        "axes; expected region=None, or an output [N, *spatial, C]."
    )
  spatial = shape[1:-1]
  if isinstance(region, tuple):
    if len(region) > len(spatial) or not all(isinstance(r, slice) for r in region):
      raise ValueError(
          f"{op}: region got {region!r}; expected a tuple of at most {len(spatial)} "
          f"slices over the output's spatial axes {spatial}, or a boolean mask of that "
          "shape."
      )
    spatial_mask = np.zeros(spatial, dtype=bool)
    spatial_mask[region] = True
  else:
    spatial_mask = np.asarray(region)
    if spatial_mask.dtype != bool or spatial_mask.shape != spatial:
      raise ValueError(
          f"{op}: region got an array of shape {spatial_mask.shape} and dtype "
          f"{spatial_mask.dtype}; expected a boolean mask of the output's spatial shape "
          f"{spatial}, or a tuple of slices."
      )
  if not spatial_mask.any():
    raise ValueError(
        f"{op}: region got {region!r}, which selects no output position of the spatial "
        f"shape {spatial}; expected a non-empty region."
    )
  return np.broadcast_to(spatial_mask[None, ..., None], shape)


@dataclasses.dataclass
class _Comparison:
  test: np.ndarray  # f(g_in(x)), float64 or complex128
  reference: np.ndarray  # g_out(f(x))
  mask: np.ndarray  # bool, full shape
  dtype: Any  # the result dtype of the two outputs

  @property
  def relative_error(self) -> float:
    diff = np.linalg.norm((self.test - self.reference)[self.mask])
    ref = np.linalg.norm(self.reference[self.mask])
    if np.isnan(diff):
      return math.nan
    if ref == 0:
      return 0.0 if diff == 0 else math.inf
    return float(diff / ref)


def _compare(
    f,
    x,
    g_in,
    g_out,
    region,
    *,
    op: str,
    names: tuple[str, str],
    args: tuple[str, str] = ("f", "g_in"),
) -> _Comparison:
  for name, fn in zip(args, (f, g_in), strict=True):
    if not callable(fn):
      raise TypeError(f"{op}: {name} got {fn!r}; expected a callable.")
  if g_out is not None and not callable(g_out):
    raise TypeError(f"{op}: g_out got {g_out!r}; expected a callable or None.")
  test = jnp.asarray(f(g_in(x)))
  fx = jnp.asarray(f(x))
  reference = jnp.asarray(g_out(fx)) if g_out is not None else fx
  if test.shape != reference.shape:
    raise ValueError(
        f"{op}: {names[0]} has shape {tuple(test.shape)} but {names[1]} has shape "
        f"{tuple(reference.shape)}; expected equal shapes (for a strided f, translate "
        "the output by output_shift(shift, layers), and check that f keeps the size)."
    )
  dtype = jnp.result_type(test.dtype, reference.dtype)
  wide = np.complex128 if jnp.issubdtype(dtype, jnp.complexfloating) else np.float64
  mask = _region_mask(region, tuple(test.shape), op=op)
  return _Comparison(np.asarray(test).astype(wide), np.asarray(reference).astype(wide), mask, dtype)


def equivariance_error(
    f: Callable[[jax.Array], jax.Array],
    x: ArrayLike,
    g_in: Callable[[jax.Array], jax.Array],
    g_out: Callable[[jax.Array], jax.Array] | None = None,
    *,
    region: Region = None,
) -> float:
  """The relative equivariance error ``‖f(g_in(x)) − g_out(f(x))‖ / ‖g_out(f(x))‖``.

  Norms are Frobenius norms over the compared values, computed in float64.

  Args:
    f: the function under test, ``[N, *spatial, C] → [N, *out_spatial, C']`` (any
      output shape if ``region`` is None).
    x: the input, e.g. ``[N, *spatial, C]`` (or any pytree ``f`` and ``g_in`` accept,
      such as an ``(image, kernel)`` pair).
    g_in: the input transform, a callable array → array (e.g. :func:`translate`).
    g_out: the output transform; defaults to ``g_in``.
    region: restricts the comparison to part of the output: a tuple of slices over the
      output's spatial axes (e.g. from :func:`interior_region`), or a boolean mask of
      the output's spatial shape. None compares everything.

  Returns:
    The relative error as a Python float: 0 for an exactly equivariant ``f``; ``inf``
    if the reference is 0 but the test is not; NaN if either holds NaN.

  Raises:
    ValueError: the two sides have different shapes, or a bad ``region``.

  Example:
    >>> from cnnjax.conv import cross_correlate
    >>> from cnnjax.equivariance import translate
    >>> w = jnp.ones((3, 3, 1, 1))
    >>> f = lambda x: cross_correlate(x, w, padding="SAME", padding_mode="circular")
    >>> equivariance_error(f, jnp.arange(36.0).reshape(1, 6, 6, 1), translate(2))
    0.0
  """
  cmp = _compare(
      f,
      x,
      g_in,
      g_out if g_out is not None else g_in,
      region,
      op="equivariance_error",
      names=("f(g_in(x))", "g_out(f(x))"),
  )
  return cmp.relative_error


def invariance_error(
    f: Callable[[jax.Array], jax.Array],
    x: ArrayLike,
    g: Callable[[jax.Array], jax.Array],
    *,
    region: Region = None,
) -> float:
  """The relative invariance error ``‖f(g(x)) − f(x)‖ / ‖f(x)‖``.

  Args:
    f: the function under test, e.g. a classifier ``[N, H, W, C] → [N, K]``.
    x: the input (an array, or any pytree ``f`` and ``g`` accept).
    g: the input transform.
    region: as :func:`equivariance_error` (for outputs ``[N, *spatial, C]``).

  Returns:
    The relative error as a Python float (see :func:`equivariance_error`).

  Example:
    >>> from cnnjax.equivariance import rot90
    >>> f = lambda x: x.sum(axis=(1, 2))  # global sum pooling
    >>> invariance_error(f, jnp.arange(16.0).reshape(1, 4, 4, 1), rot90())
    0.0
  """
  cmp = _compare(
      f,
      x,
      g,
      None,
      region,
      op="invariance_error",
      names=("f(g(x))", "f(x)"),
      args=("f", "g"),
  )
  return cmp.relative_error


def _check(
    cmp: _Comparison, *, rtol: float | None, atol: float | None, op: str, names: tuple[str, str]
) -> None:
  default_rtol, default_atol = default_tolerance(cmp.dtype)
  defaults = []
  if rtol is None:
    rtol = default_rtol
    defaults.append("rtol")
  if atol is None:
    atol = default_atol
    defaults.append("atol")
  for name, value in (("rtol", rtol), ("atol", atol)):
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value >= 0:
      raise ValueError(f"{op}: {name} got {value!r}; expected a non-negative number.")
  diff = np.abs(cmp.test - cmp.reference)
  diff = np.where(np.isnan(diff), np.inf, diff)
  masked = np.where(cmp.mask, diff, -1.0)
  index = np.unravel_index(int(np.argmax(masked)), masked.shape)
  largest = float(masked[index])
  scale = float(np.max(np.abs(cmp.reference[cmp.mask])))
  bound = atol + rtol * scale
  if largest <= bound:
    return
  compared = int(cmp.mask.sum())
  where = "whole output" if cmp.mask.all() else "compared region"
  axes = "[batch, *spatial, channel]" if cmp.test.ndim >= 3 else "of the output"
  source = f" ({', '.join(defaults)}: {cmp.dtype} default)" if defaults else ""
  raise AssertionError(
      f"{op}: {names[0]} != {names[1]}: relative error {cmp.relative_error:.3e} "
      f"(‖{names[0]} − {names[1]}‖ / ‖{names[1]}‖ over {compared} values, {where}). "
      f"Largest difference {largest:.3e} at index {tuple(int(i) for i in index)} "
      f"{axes}: {names[0]} = {cmp.test[index]:.6g}, {names[1]} = "
      f"{cmp.reference[index]:.6g}. Tolerance: max|difference| <= atol + rtol * "
      f"max|{names[1]}| = {atol:g} + {rtol:g} * {scale:.3g} = {bound:.3e}{source}."
  )


def assert_equivariant(
    f: Callable[[jax.Array], jax.Array],
    x: ArrayLike,
    g_in: Callable[[jax.Array], jax.Array],
    g_out: Callable[[jax.Array], jax.Array] | None = None,
    *,
    region: Region = None,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
  """Asserts ``f(g_in(x)) = g_out(f(x))`` up to a tolerance.

  Passes when ``max|f(g_in(x)) − g_out(f(x))| ≤ atol + rtol · max|g_out(f(x))|`` over
  the compared values (a bound relative to the output's scale, so values that cancel
  to near zero do not fail spuriously, while a violation at a single position still
  does).

  Args:
    f: the function under test.
    x: the input, e.g. ``[N, *spatial, C]``, or a pytree (as :func:`equivariance_error`).
    g_in: the input transform.
    g_out: the output transform; defaults to ``g_in``.
    region: as :func:`equivariance_error`.
    rtol: relative tolerance; by default from the outputs' dtype
      (:func:`default_tolerance`: float64 1e-10, float32 1e-5, bfloat16 1e-2).
    atol: absolute tolerance; by default 0.

  Raises:
    AssertionError: stating the relative error, the tolerance, and the index (in the
      full output, ``[batch, *spatial, channel]``) and the two values of the largest
      difference.
    ValueError: different output shapes, a bad ``region``, ``rtol`` or ``atol``.

  Example:
    >>> from cnnjax.equivariance import rot90
    >>> f = lambda x: jnp.maximum(x, 0.0)
    >>> assert_equivariant(f, jnp.ones((1, 4, 4, 1)), rot90())  # passes silently
  """
  op = "assert_equivariant"
  names = ("f(g_in(x))", "g_out(f(x))")
  cmp = _compare(f, x, g_in, g_out if g_out is not None else g_in, region, op=op, names=names)
  _check(cmp, rtol=rtol, atol=atol, op=op, names=names)


def assert_invariant(
    f: Callable[[jax.Array], jax.Array],
    x: ArrayLike,
    g: Callable[[jax.Array], jax.Array],
    *,
    region: Region = None,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
  """Asserts ``f(g(x)) = f(x)`` up to a tolerance (see :func:`assert_equivariant`).

  Args:
    f: the function under test, e.g. a classifier ``[N, H, W, C] → [N, K]``.
    x: the input.
    g: the input transform.
    region: as :func:`equivariance_error`.
    rtol: relative tolerance; by default from the dtype (:func:`default_tolerance`).
    atol: absolute tolerance; by default 0.

  Raises:
    AssertionError: stating the relative error, the tolerance and where the largest
      difference is.

  Example:
    >>> from cnnjax.equivariance import translate
    >>> f = lambda x: x.mean(axis=(1, 2))
    >>> assert_invariant(f, jnp.arange(16.0).reshape(1, 4, 4, 1), translate(1))
  """
  op = "assert_invariant"
  names = ("f(g(x))", "f(x)")
  cmp = _compare(f, x, g, None, region, op=op, names=names, args=("f", "g"))
  _check(cmp, rtol=rtol, atol=atol, op=op, names=names)
