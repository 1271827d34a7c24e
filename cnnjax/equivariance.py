"""Testing equivariance and invariance of functions on images.

Tools for researchers to check their own functions and Flax modules: a function ``f``
is *equivariant* to a transform ``g`` when ``f(g(x)) = g'(f(x))`` for the matching
output transform ``g'`` (often ``g`` itself), and *invariant* when ``f(g(x)) = f(x)``.

* Transforms are any callable array → array. The factories here (:func:`translate`,
  :func:`flip`, :func:`rot90`, :func:`transpose`, :func:`compose`) are pure and
  jit-able and act on the spatial axes of batched, channels-last arrays
  ``[N, *spatial, C]``; each also knows how it acts on an HWIO kernel
  (:meth:`Transform.on_kernel`), so that ``g(f_w(x)) = f_{g(w)}(g(x))`` can be
  written down for a convolution ``f_w``.
* :func:`equivariance_error` and :func:`invariance_error` measure the relative error;
  :func:`assert_equivariant` and :func:`assert_invariant` are one-line test
  assertions that say where the largest difference is.
* :func:`interior_region` and :func:`output_shift` give the region that a
  zero-padded (or strided) stack leaves exactly comparable, and the output shift of a
  strided stack, from :mod:`cnnjax.arithmetic`.
* :func:`images`, :func:`kernels`, :func:`conv_settings` and :func:`conv_problems`
  are Hypothesis strategies (Hypothesis is imported only when they are called).
* :func:`shift_consistency` is Zhang (2019)'s classification consistency.

Example:
  >>> from cnnjax.conv import cross_correlate
  >>> x = jnp.ones((1, 8, 8, 1)).at[0, 2, 3, 0].set(5.0)
  >>> w = jnp.arange(9.0).reshape(3, 3, 1, 1)
  >>> f = lambda x: cross_correlate(x, w, padding="SAME", padding_mode="circular")
  >>> assert_equivariant(f, x, translate((1, 2)))  # passes silently
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from cnnjax import arithmetic as _arithmetic
from cnnjax import padding as _padding

__all__ = [
    "Transform",
    "assert_equivariant",
    "assert_invariant",
    "compose",
    "conv_problems",
    "conv_settings",
    "default_tolerance",
    "equivariance_error",
    "flip",
    "images",
    "interior_region",
    "invariance_error",
    "kernels",
    "output_shift",
    "rot90",
    "shift_consistency",
    "translate",
    "transpose",
]

Region = Union[tuple, np.ndarray, jax.Array, None]
TRANSLATE_MODES = ("circular", "zeros")


def _is_int(value) -> bool:
  return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------
# Transforms.


@dataclasses.dataclass(frozen=True, eq=False)
class Transform:
  """A spatial transform of batched, channels-last arrays, with its kernel counterpart.

  Calling it on ``x`` (``[N, *spatial, C]``) transforms the spatial axes ``1 .. d``;
  :meth:`on_kernel` applies the counterpart to an HWIO kernel
  ``[*kernel_spatial, C_in, C_out]`` (spatial axes ``0 .. d − 1``): for a
  cross-correlation or convolution ``f_w`` with symmetric padding (``"VALID"``,
  circular, or ``"SAME"`` with an odd kernel),

      ``g(f_w(x)) = f_{g.on_kernel(w)}(g(x))``.

  Flips, rotations and transposes act on the kernel as on the image; a translation
  leaves the kernel unchanged. Instances are made by the factories
  (:func:`translate`, :func:`flip`, ...); they are pure and can be used inside
  ``jax.jit`` or passed to it.

  Attributes:
    name: a readable description, e.g. ``"translate((1, 0), mode='zeros')"``.
  """

  name: str
  _spatial: Callable[[jax.Array, tuple[int, ...]], jax.Array]
  _kernel: Callable[[jax.Array, tuple[int, ...]], jax.Array] | None

  def __call__(self, x: ArrayLike) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim < 3:
      raise ValueError(
          f"{self.name}: x has shape {tuple(x.shape)} (rank {x.ndim}); expected a "
          "batched, channels-last array [N, *spatial, C] with at least one spatial dim."
      )
    return self._spatial(x, tuple(range(1, x.ndim - 1)))

  def on_kernel(self, w: ArrayLike) -> jax.Array:
    """Applies the kernel counterpart to ``w``, ``[*kernel_spatial, C_in, C_out]``.

    Example:
      >>> w = jnp.arange(4.0).reshape(2, 2, 1, 1)
      >>> flip(0).on_kernel(w)[:, :, 0, 0]
      Array([[2., 3.],
             [0., 1.]], dtype=float32)
    """
    w = jnp.asarray(w)
    if w.ndim < 3:
      raise ValueError(
          f"{self.name}.on_kernel: w has shape {tuple(w.shape)} (rank {w.ndim}); "
          "expected a kernel [*kernel_spatial, C_in, C_out] with at least one spatial dim."
      )
    if self._kernel is None:
      return w
    return self._kernel(w, tuple(range(w.ndim - 2)))

  def __repr__(self) -> str:
    return self.name


def translate(shift: int | Sequence[int], *, mode: str = "circular") -> Transform:
  """Translation of the spatial axes: ``g(x)[n] = x[n − shift]``.

  Args:
    shift: an int (the same shift along every spatial dim) or one int per spatial dim;
      positive shifts move the content towards higher indices.
    mode: ``"circular"`` (content leaving one side re-enters on the other, as
      ``jnp.roll``) or ``"zeros"`` (vacated pixels are 0, content shifted out is lost).

  Returns:
    A :class:`Transform` on ``[N, *spatial, C]``; on a kernel it is the identity
    (convolution commutes with translation).

  Example:
    >>> x = jnp.arange(4.0).reshape(1, 4, 1)
    >>> translate(1)(x)[0, :, 0], translate(1, mode="zeros")(x)[0, :, 0]
    (Array([3., 0., 1., 2.], dtype=float32), Array([0., 0., 1., 2.], dtype=float32))
  """
  op = "translate"
  if mode not in TRANSLATE_MODES:
    raise ValueError(f"{op}: mode got {mode!r}; expected one of {TRANSLATE_MODES}.")
  shift = _shift_spec(shift, op=op)

  def spatial(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    shifts = _per_dim(shift, len(axes), name="shift", op=op)
    return _translate_jit(x, jnp.asarray(shifts, jnp.int32), axes=axes, mode=mode)

  return Transform(f"translate({shift!r}, mode={mode!r})", spatial, None)


def _translate_array(x: jax.Array, shifts: jax.Array, *, axes: tuple[int, ...], mode: str) -> jax.Array:
  """Translates ``x`` along ``axes`` by ``shifts`` (an int array, which may be traced)."""
  rolled = jnp.roll(x, tuple(shifts[i] for i in range(len(axes))), axis=axes)
  if mode == "circular":
    return rolled
  keep = None
  for i, axis in enumerate(axes):  # position n holds x[n − shift] if that exists
    source = lax.broadcasted_iota(jnp.int32, x.shape, axis) - shifts[i]
    inside = (source >= 0) & (source < x.shape[axis])
    keep = inside if keep is None else keep & inside
  return jnp.where(keep, rolled, jnp.zeros((), rolled.dtype))


# The shift is traced, so each input shape compiles once whatever the shift (eager
# jnp.roll and lax.pad compile once per distinct shift); inside a caller's jit it is a
# constant.
_translate_jit = jax.jit(_translate_array, static_argnames=("axes", "mode"))


def _per_dim(value, num_dims: int, *, name: str, op: str) -> tuple[int, ...]:
  if isinstance(value, int):
    return (value,) * num_dims
  if len(value) != num_dims:
    raise ValueError(
        f"{op}: {name} got {value!r} ({len(value)} values) for an array with "
        f"{num_dims} spatial dim(s); expected an int or {num_dims} ints."
    )
  return tuple(value)


def _spatial_axis(axis: int, num_dims: int, *, op: str) -> int:
  if not -num_dims <= axis < num_dims:
    raise ValueError(
        f"{op}: axis got {axis!r} for an array with {num_dims} spatial dim(s); expected "
        f"a spatial axis index in [{-num_dims}, {num_dims - 1}] (0 is the first spatial "
        "axis, not the batch)."
    )
  return axis % num_dims


def flip(axis: int) -> Transform:
  """Reversal of one spatial axis: ``g(x)[.., n, ..] = x[.., size − 1 − n, ..]``.

  Args:
    axis: the spatial axis, ``0 .. d − 1`` (0 is the first spatial axis, e.g. H of
      ``[N, H, W, C]``); negative values count from the last spatial axis.

  Returns:
    A :class:`Transform`; on a kernel it flips the same spatial axis.

  Example:
    >>> x = jnp.arange(3.0).reshape(1, 3, 1)
    >>> flip(0)(x)[0, :, 0]
    Array([2., 1., 0.], dtype=float32)
  """
  op = "flip"
  if not _is_int(axis):
    raise TypeError(f"{op}: axis got {axis!r}; expected an int, a spatial axis index.")
  axis = int(axis)

  def spatial(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    return jnp.flip(x, axis=axes[_spatial_axis(axis, len(axes), op=op)])

  return Transform(f"flip({axis})", spatial, spatial)


def _first_two(axes: tuple[int, ...], *, op: str) -> tuple[int, int]:
  if len(axes) < 2:
    raise ValueError(
        f"{op}: x has {len(axes)} spatial dim(s); expected at least 2 (it acts on the "
        "first two spatial axes)."
    )
  return axes[0], axes[1]


def rot90(k: int = 1) -> Transform:
  """Rotation by ``k`` quarter turns in the plane of the first two spatial axes.

  The same rotation as ``np.rot90(image, k)`` on an ``[H, W]`` image: one quarter turn
  maps ``x[i, j]`` to position ``(W − 1 − j, i)`` (counter-clockwise as displayed with
  row 0 at the top).

  Args:
    k: the number of quarter turns (any int; negative turns clockwise).

  Returns:
    A :class:`Transform` on ``[N, H, W, ...]`` (at least 2 spatial dims); on a kernel
    it rotates the first two kernel axes.

  Example:
    >>> x = jnp.arange(4.0).reshape(1, 2, 2, 1)
    >>> rot90()(x)[0, :, :, 0]
    Array([[1., 3.],
           [0., 2.]], dtype=float32)
  """
  op = "rot90"
  if not _is_int(k):
    raise TypeError(f"{op}: k got {k!r}; expected an int number of quarter turns.")
  k = int(k)

  def spatial(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    return jnp.rot90(x, k, axes=_first_two(axes, op=op))

  return Transform(f"rot90({k})", spatial, spatial)


def transpose() -> Transform:
  """Swaps the first two spatial axes (reflection in the main diagonal).

  Returns:
    A :class:`Transform` on ``[N, H, W, ...]`` (at least 2 spatial dims); on a kernel
    it swaps the first two kernel axes.

  Example:
    >>> x = jnp.arange(6.0).reshape(1, 2, 3, 1)
    >>> transpose()(x).shape
    (1, 3, 2, 1)
  """
  op = "transpose"

  def spatial(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    a, b = _first_two(axes, op=op)
    return jnp.swapaxes(x, a, b)

  return Transform(f"{op}()", spatial, spatial)


def compose(*gs: Callable[[jax.Array], jax.Array]) -> Transform:
  """Applies transforms one after another, **in the given order**.

  ``compose(g1, g2)(x) = g2(g1(x))`` (first ``g1``, then ``g2``); ``compose()`` is the
  identity. Any callables may be composed; :meth:`Transform.on_kernel` of the result
  works when every part is a :class:`Transform`.

  Args:
    *gs: the transforms, first applied first.

  Returns:
    A :class:`Transform`.

  Example:
    >>> g = compose(flip(1), transpose())  # = rot90(1)
    >>> x = jnp.arange(4.0).reshape(1, 2, 2, 1)
    >>> bool((g(x) == rot90(1)(x)).all())
    True
  """
  op = "compose"
  for i, g in enumerate(gs):
    if not callable(g):
      raise TypeError(f"{op}: gs[{i}] got {g!r}; expected a callable array -> array.")

  def spatial(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    for g in gs:
      x = g._spatial(x, axes) if isinstance(g, Transform) else g(x)
    return x

  def kernel(w: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    for i, g in enumerate(gs):
      if not isinstance(g, Transform):
        raise TypeError(
            f"{op}: gs[{i}] got {g!r}, a plain callable with no kernel counterpart; "
            "expected cnnjax.equivariance transforms to use on_kernel."
        )
      w = w if g._kernel is None else g._kernel(w, axes)
    return w

  parts = (repr(g) if isinstance(g, Transform) else getattr(g, "__name__", repr(g)) for g in gs)
  return Transform(f"compose({', '.join(parts)})", spatial, kernel)


# --------------------------------------------------------------------------------------
# Errors and assertions.


def default_tolerance(dtype) -> tuple[float, float]:
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


def _compare(f, x, g_in, g_out, region, *, op: str, names: tuple[str, str],
             args: tuple[str, str] = ("f", "g_in")) -> _Comparison:
  for name, fn in zip(args, (f, g_in)):
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
  return _Comparison(
      np.asarray(test).astype(wide), np.asarray(reference).astype(wide), mask, dtype
  )


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
    >>> w = jnp.ones((3, 3, 1, 1))
    >>> f = lambda x: cross_correlate(x, w, padding="SAME", padding_mode="circular")
    >>> equivariance_error(f, jnp.arange(36.0).reshape(1, 6, 6, 1), translate(2))
    0.0
  """
  cmp = _compare(
      f, x, g_in, g_out if g_out is not None else g_in, region,
      op="equivariance_error", names=("f(g_in(x))", "g_out(f(x))"),
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
    >>> f = lambda x: x.sum(axis=(1, 2))  # global sum pooling
    >>> invariance_error(f, jnp.arange(16.0).reshape(1, 4, 4, 1), rot90())
    0.0
  """
  cmp = _compare(
      f, x, g, None, region, op="invariance_error", names=("f(g(x))", "f(x)"),
      args=("f", "g"),
  )
  return cmp.relative_error


def _check(cmp: _Comparison, *, rtol, atol, op: str, names: tuple[str, str]) -> None:
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
    >>> f = lambda x: jnp.maximum(x, 0.0)
    >>> assert_equivariant(f, jnp.ones((1, 4, 4, 1)), rot90())
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
    >>> f = lambda x: x.mean(axis=(1, 2))
    >>> assert_invariant(f, jnp.arange(16.0).reshape(1, 4, 4, 1), translate(1))
  """
  op = "assert_invariant"
  names = ("f(g(x))", "f(x)")
  cmp = _compare(f, x, g, None, region, op=op, names=names, args=("f", "g"))
  _check(cmp, rtol=rtol, atol=atol, op=op, names=names)


# --------------------------------------------------------------------------------------
# Regions and shifts of conv stacks.


def _shift_spec(shift, *, op: str) -> int | tuple[int, ...]:
  """Checks a shift: an int, or a non-empty tuple of ints."""
  if _is_int(shift):
    return int(shift)
  if (
      isinstance(shift, Sequence)
      and not isinstance(shift, str)
      and len(shift) > 0
      and all(_is_int(s) for s in shift)
  ):
    return tuple(int(s) for s in shift)
  raise ValueError(f"{op}: shift got {shift!r}; expected an int or a tuple of ints.")


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
      if _is_int(entry) and entry >= 1:
        continue
      if (
          isinstance(entry, Sequence)
          and not isinstance(entry, str)
          and entry
          and all(_is_int(e) and e >= 1 for e in entry)
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
  return [tuple(int(e) if _is_int(e) else int(e[dim]) for e in layer) for layer in layers]


def _jump(layers, dim: int) -> int:
  return _arithmetic.jump(_dim_layers(layers, dim)) if layers else 1


def _output_shift(shifts: tuple[int, ...], layers, *, shift, op: str) -> tuple[int, ...]:
  jumps = tuple(_jump(layers, dim) for dim in range(len(shifts)))
  bad = [dim for dim, (s, j) in enumerate(zip(shifts, jumps)) if s % j]
  if bad:
    raise ValueError(
        f"{op}: shift got {shift!r}, which is not a multiple of the stack's total "
        f"stride (jump) {jumps if len(jumps) > 1 else jumps[0]} in spatial dim(s) {bad}; "
        "expected a multiple: a strided stack is only equivariant to shifts by multiples "
        "of its jump."
    )
  return tuple(s // j for s, j in zip(shifts, jumps))


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
    shift: int | Sequence[int], layers: Sequence[tuple]
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
    layers: Sequence[tuple],
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
  in_spatial = _padding.normalize_ints(
      tuple(in_spatial), len(in_spatial), name="in_spatial", op=op
  )
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
  for dims_layer, pad in zip(zip(*(_dim_layers(layers, dim) for dim in range(d))), paddings):
    kernel, stride, dilation = zip(*((*l, 1)[:3] for l in dims_layer))
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


# --------------------------------------------------------------------------------------
# Zhang (2019) consistency.


@functools.partial(jax.jit, static_argnames="mode")
def _shift_each(x: jax.Array, shifts: jax.Array, mode: str) -> jax.Array:
  """Translates image ``i`` of ``x`` (``[N, *spatial, C]``) by ``shifts[i]`` (``[N, d]``)."""
  axes = tuple(range(1, x.ndim - 1))
  one = lambda image, shift: _translate_array(image[None], shift, axes=axes, mode=mode)[0]
  return jax.vmap(one)(x, shifts)


def shift_consistency(
    predict_fn: Callable[[jax.Array], jax.Array],
    images: ArrayLike,
    *,
    max_shift: int | Sequence[int],
    key: jax.Array,
    mode: str = "circular",
) -> float:
  """Zhang (2019)'s classification consistency under random shifts.

  Each image is translated by two independent random shifts, drawn uniformly from
  ``[−max_shift, max_shift]`` per spatial dim, and the predicted classes compared:
  the result is the fraction of images whose two predictions agree (1 for a
  shift-invariant classifier). Zhang, "Making Convolutional Networks Shift-Invariant
  Again", ICML 2019, §4.1.

  Args:
    predict_fn: ``[N, *spatial, C] → [N]`` class indices, or ``[N, K]`` logits (or
      probabilities), whose argmax is taken.
    images: ``[N, *spatial, C]``.
    max_shift: the largest shift, an int (every spatial dim) or one int per dim, ≥ 0.
    key: a ``jax.random`` key.
    mode: ``"circular"`` (as :func:`translate`) or ``"zeros"``.

  Returns:
    The consistency in ``[0, 1]``, a Python float.

  Example:
    >>> predict = lambda x: x.sum(axis=(1, 2))  # logits [N, C], shift-invariant
    >>> shift_consistency(predict, jnp.ones((4, 8, 8, 3)), max_shift=3,
    ...                   key=jax.random.key(0))
    1.0
  """
  op = "shift_consistency"
  if not callable(predict_fn):
    raise TypeError(f"{op}: predict_fn got {predict_fn!r}; expected a callable.")
  if mode not in TRANSLATE_MODES:
    raise ValueError(f"{op}: mode got {mode!r}; expected one of {TRANSLATE_MODES}.")
  x = jnp.asarray(images)
  if x.ndim < 3:
    raise ValueError(
        f"{op}: images has shape {tuple(x.shape)} (rank {x.ndim}); expected "
        "[N, *spatial, C] with at least one spatial dim."
    )
  d = x.ndim - 2
  limits = _padding.normalize_ints(max_shift, d, name="max_shift", op=op, minimum=0)
  n = x.shape[0]
  bound = jnp.broadcast_to(jnp.asarray(limits, dtype=jnp.int32), (n, d))
  key1, key2 = jax.random.split(key)
  predictions = []
  for k in (key1, key2):
    shifts = jax.random.randint(k, (n, d), -bound, bound + 1)
    out = jnp.asarray(predict_fn(_shift_each(x, shifts, mode)))
    if out.ndim == 2:
      out = jnp.argmax(out, axis=-1)
    if out.ndim != 1 or out.shape[0] != n:
      raise ValueError(
          f"{op}: predict_fn returned shape {tuple(out.shape)} for {n} images; "
          f"expected [{n}] class indices or [{n}, num_classes] logits."
      )
    predictions.append(out)
  return float(jnp.mean(predictions[0] == predictions[1]))


# --------------------------------------------------------------------------------------
# Hypothesis strategies (Hypothesis is imported only when these are called).


def _hypothesis():
  try:
    from hypothesis import strategies
  except ImportError as e:  # pragma: no cover - hypothesis is a test extra
    raise ImportError(
        "cnnjax.equivariance strategies need Hypothesis: pip install hypothesis"
    ) from e
  return strategies


def _bounds(value, *, name: str, op: str, minimum: int = 1) -> tuple[int, int]:
  """An int ``v`` → ``(v, v)``; a pair ``(lo, hi)`` → itself, both ``>= minimum``."""
  if _is_int(value):
    lo = hi = int(value)
  elif (
      isinstance(value, Sequence)
      and len(value) == 2
      and all(_is_int(v) for v in value)
  ):
    lo, hi = (int(v) for v in value)
  else:
    lo, hi = minimum - 1, minimum - 2  # fails below
  if not minimum <= lo <= hi:
    raise ValueError(
        f"{op}: {name} got {value!r}; expected an int >= {minimum} or a (min, max) pair "
        f"with {minimum} <= min <= max."
    )
  return lo, hi


def _normal(seed: int, shape: tuple[int, ...], dtype) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _spatial_sizes(st, draw, bounds, num_spatial, square, odd=False):
  lo, hi = bounds
  values = st.integers(lo, hi)
  if odd:
    values = values.filter(lambda v: v % 2 == 1)
  if square:
    return (draw(values),) * num_spatial
  return tuple(draw(values) for _ in range(num_spatial))


def images(
    *,
    num_spatial: int = 2,
    batch: int | tuple[int, int] = (1, 2),
    size: int | tuple[int, int] = (4, 8),
    channels: int | tuple[int, int] = (1, 3),
    square: bool = False,
    dtype=np.float64,
):
  """Hypothesis strategy for images ``[N, *spatial, C]`` with standard normal values.

  Values come from a drawn seed (``np.random.default_rng``), so they are well
  conditioned (no huge or subnormal floats) and examples shrink by shape.

  Args:
    num_spatial: the number of spatial dims.
    batch: the batch size, an int or an inclusive ``(min, max)`` range.
    size: each spatial size, an int or a ``(min, max)`` range.
    channels: the channel count, an int or a ``(min, max)`` range.
    square: one size drawn for every spatial dim.
    dtype: a NumPy dtype.

  Returns:
    A strategy of NumPy arrays.

  Example:
    >>> @hypothesis.given(images(size=(5, 7), channels=2))
    ... def test_relu_flip(x):
    ...   assert_equivariant(jax.nn.relu, x, flip(0))
  """
  op = "images"
  st = _hypothesis()
  num_spatial = _bounds(num_spatial, name="num_spatial", op=op)[0]
  batch = _bounds(batch, name="batch", op=op)
  size = _bounds(size, name="size", op=op)
  channels = _bounds(channels, name="channels", op=op)

  @st.composite
  def draw_image(draw):
    shape = (
        draw(st.integers(*batch)),
        *_spatial_sizes(st, draw, size, num_spatial, square),
        draw(st.integers(*channels)),
    )
    return _normal(draw(st.integers(0, 2**32 - 1)), shape, dtype)

  return draw_image()


def kernels(
    *,
    num_spatial: int = 2,
    size: int | tuple[int, int] = (1, 3),
    in_channels: int | tuple[int, int] = (1, 3),
    out_channels: int | tuple[int, int] = (1, 3),
    square: bool = False,
    odd: bool = False,
    dtype=np.float64,
):
  """Hypothesis strategy for HWIO kernels ``[*kernel_spatial, C_in, C_out]``.

  Args:
    num_spatial: the number of spatial dims.
    size: each kernel size, an int or an inclusive ``(min, max)`` range.
    in_channels: ``C_in``, an int or a range.
    out_channels: ``C_out``, an int or a range.
    square: one size for every spatial dim.
    odd: only odd sizes (a centred kernel: ``"SAME"`` padding is then symmetric).
    dtype: a NumPy dtype.

  Returns:
    A strategy of NumPy arrays with standard normal values.
  """
  op = "kernels"
  st = _hypothesis()
  num_spatial = _bounds(num_spatial, name="num_spatial", op=op)[0]
  size_bounds = _bounds(size, name="size", op=op)
  if odd and size_bounds[0] == size_bounds[1] and size_bounds[0] % 2 == 0:
    raise ValueError(
        f"{op}: size got {size!r} with odd=True; expected a range holding an odd size."
    )
  size = size_bounds
  in_channels = _bounds(in_channels, name="in_channels", op=op)
  out_channels = _bounds(out_channels, name="out_channels", op=op)

  @st.composite
  def draw_kernel(draw):
    shape = (
        *_spatial_sizes(st, draw, size, num_spatial, square, odd),
        draw(st.integers(*in_channels)),
        draw(st.integers(*out_channels)),
    )
    return _normal(draw(st.integers(0, 2**32 - 1)), shape, dtype)

  return draw_kernel()


def conv_settings(
    *,
    num_spatial: int = 2,
    stride: int | tuple[int, int] = (1, 2),
    dilation: int | tuple[int, int] = (1, 2),
    padding: Sequence[Any] = ("VALID", "SAME"),
    padding_mode: Sequence[str] = ("zeros", "circular"),
):
  """Hypothesis strategy for keyword arguments of :func:`cnnjax.conv.cross_correlate`.

  Args:
    num_spatial: the number of spatial dims.
    stride: each dim's stride, an int or an inclusive ``(min, max)`` range.
    dilation: each dim's dilation, an int or a range.
    padding: the padding specs to choose from.
    padding_mode: the padding modes to choose from.

  Returns:
    A strategy of dicts ``{"stride": (..), "dilation": (..), "padding": ..,
    "padding_mode": ..}`` with one stride and dilation per spatial dim.

  Example:
    >>> @hypothesis.given(conv_settings(stride=1, padding=("SAME",)))
    ... def test_shapes(settings): ...
  """
  op = "conv_settings"
  st = _hypothesis()
  num_spatial = _bounds(num_spatial, name="num_spatial", op=op)[0]
  stride = _bounds(stride, name="stride", op=op)
  dilation = _bounds(dilation, name="dilation", op=op)
  for name, options in (("padding", padding), ("padding_mode", padding_mode)):
    if isinstance(options, str) or not isinstance(options, Sequence) or not options:
      raise ValueError(
          f"{op}: {name} got {options!r}; expected a non-empty sequence of options."
      )
  for mode in padding_mode:
    _padding.check_padding_mode(mode, op=op)
  per_dim = lambda lo_hi: st.tuples(*(st.integers(*lo_hi) for _ in range(num_spatial)))
  return st.fixed_dictionaries({
      "stride": per_dim(stride),
      "dilation": per_dim(dilation),
      "padding": st.sampled_from(tuple(padding)),
      "padding_mode": st.sampled_from(tuple(padding_mode)),
  })


def conv_problems(
    *,
    num_spatial: int = 2,
    batch: int | tuple[int, int] = (1, 2),
    size: int | tuple[int, int] = (5, 9),
    kernel_size: int | tuple[int, int] = (1, 3),
    channels: int | tuple[int, int] = (1, 3),
    out_channels: int | tuple[int, int] = (1, 3),
    dtype=np.float64,
    **settings,
):
  """Hypothesis strategy for consistent ``(x, w, settings)`` triples.

  ``x`` from :func:`images`, ``w`` from :func:`kernels` with ``C_in`` matching ``x``,
  and ``settings`` from :func:`conv_settings` (``**settings`` are passed to it),
  filtered so that the effective kernel fits the padded input.

  Returns:
    A strategy of ``(x, w, settings)`` for ``cross_correlate(x, w, **settings)``.

  Example:
    >>> @hypothesis.given(conv_problems(padding_mode=("circular",), stride=1))
    ... def test_circular(problem):
    ...   x, w, kw = problem
    ...   f = lambda x: cross_correlate(x, w, **kw)
    ...   assert_equivariant(f, x, translate(1))
  """
  st = _hypothesis()
  from hypothesis import assume

  settings_strategy = conv_settings(num_spatial=num_spatial, **settings)
  channel_bounds = _bounds(channels, name="channels", op="conv_problems")

  @st.composite
  def draw_problem(draw):
    c = draw(st.integers(*channel_bounds))
    x = draw(images(
        num_spatial=num_spatial, batch=batch, size=size, channels=c, dtype=dtype
    ))
    w = draw(kernels(
        num_spatial=num_spatial, size=kernel_size, in_channels=c,
        out_channels=out_channels, dtype=dtype,
    ))
    kw = draw(settings_strategy)
    geo_ok = True
    try:
      _padding.conv_geometry(
          x.shape[1:-1], w.shape[:-2], stride=kw["stride"], padding=kw["padding"],
          dilation=kw["dilation"], op="conv_problems",
      )
    except ValueError:
      geo_ok = False
    assume(geo_ok)
    return x, w, kw

  return draw_problem()
