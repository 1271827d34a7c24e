"""Spatial transforms of batched, channels-last arrays, with their kernel counterparts.

:class:`Transform` and its factories :func:`translate`, :func:`flip`, :func:`rot90`,
:func:`transpose` and :func:`compose`; pure and jit-able. A transform made by the
factories also says what it is, as a tuple of typed steps (:class:`Translation`,
:class:`Reflection`, :class:`Rotation`, :class:`Transposition`): what
:func:`cnnjax.equivariance.report` reads to move a layer's output the way the input moved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import cast

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from cnnjax._checks import is_int

__all__ = [
    "TRANSLATE_MODES",
    "Reflection",
    "Rotation",
    "Step",
    "Transform",
    "Translation",
    "Transposition",
    "compose",
    "flip",
    "rot90",
    "translate",
    "transpose",
]

TRANSLATE_MODES = ("circular", "zeros")


@dataclasses.dataclass(frozen=True)
class Translation:
  """A translation step: ``g(x)[n] = x[n − shift]`` (see :func:`translate`).

  Attributes:
    shift: an int (every spatial dim) or one int per spatial dim.
    mode: ``"circular"`` or ``"zeros"``.
  """

  shift: int | tuple[int, ...]
  mode: str = "circular"


@dataclasses.dataclass(frozen=True)
class Reflection:
  """A reflection step: the reversal of one spatial axis (see :func:`flip`).

  Attributes:
    axis: the spatial axis (0 is the first spatial axis; negative counts from the last).
  """

  axis: int


@dataclasses.dataclass(frozen=True)
class Rotation:
  """A rotation step: ``k`` quarter turns of the first two spatial axes (see :func:`rot90`).

  Attributes:
    k: the number of quarter turns (negative turns clockwise).
  """

  k: int


@dataclasses.dataclass(frozen=True)
class Transposition:
  """A transposition step: the first two spatial axes swapped (see :func:`transpose`)."""


Step = Translation | Reflection | Rotation | Transposition
"""One typed step of a :class:`Transform` (``Transform.steps``)."""


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
    steps: what the transform is, as typed steps applied first to last (a
      :func:`compose` of factory-made transforms concatenates theirs); None for a
      transform that composes plain callables.
  """

  name: str
  _spatial: Callable[[jax.Array, tuple[int, ...]], jax.Array]
  _kernel: Callable[[jax.Array, tuple[int, ...]], jax.Array] | None
  steps: tuple[Step, ...] | None = None

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
      >>> flip(0).on_kernel(w)[:, :, 0, 0].tolist()
      [[2.0, 3.0], [0.0, 1.0]]
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
    >>> translate(1)(x)[0, :, 0].tolist(), translate(1, mode="zeros")(x)[0, :, 0].tolist()
    ([3.0, 0.0, 1.0, 2.0], [0.0, 0.0, 1.0, 2.0])
  """
  op = "translate"
  if mode not in TRANSLATE_MODES:
    raise ValueError(f"{op}: mode got {mode!r}; expected one of {TRANSLATE_MODES}.")
  shift = _shift_spec(shift, op=op)

  def spatial(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    shifts = _per_dim(shift, len(axes), name="shift", op=op)
    return _translate_jit(x, jnp.asarray(shifts, jnp.int32), axes=axes, mode=mode)

  return Transform(
      f"translate({shift!r}, mode={mode!r})", spatial, None, (Translation(shift, mode),)
  )


def _translate_array(
    x: jax.Array, shifts: jax.Array, *, axes: tuple[int, ...], mode: str
) -> jax.Array:
  """Translates ``x`` along ``axes`` by ``shifts`` (an int array, which may be traced)."""
  # (jax annotates shift as ArrayLike | Sequence[int]; a tuple of traced ints works)
  shift = tuple(shifts[i] for i in range(len(axes)))
  rolled = jnp.roll(x, shift, axis=axes)  # pyright: ignore[reportArgumentType]
  if mode == "circular":
    return rolled
  keep = None
  for i, axis in enumerate(axes):  # position n holds x[n − shift] if that exists
    source = lax.broadcasted_iota(jnp.int32, x.shape, axis) - shifts[i]
    inside = (source >= 0) & (source < x.shape[axis])
    keep = inside if keep is None else keep & inside
  # (axes is not empty: a Transform takes arrays with a spatial dim)
  return jnp.where(cast(jax.Array, keep), rolled, jnp.zeros((), rolled.dtype))


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
    >>> flip(0)(x)[0, :, 0].tolist()
    [2.0, 1.0, 0.0]
  """
  op = "flip"
  if not is_int(axis):
    raise TypeError(f"{op}: axis got {axis!r}; expected an int, a spatial axis index.")
  axis = int(axis)

  def spatial(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    return jnp.flip(x, axis=axes[_spatial_axis(axis, len(axes), op=op)])

  return Transform(f"flip({axis})", spatial, spatial, (Reflection(axis),))


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
    >>> rot90()(x)[0, :, :, 0].tolist()
    [[1.0, 3.0], [0.0, 2.0]]
  """
  op = "rot90"
  if not is_int(k):
    raise TypeError(f"{op}: k got {k!r}; expected an int number of quarter turns.")
  k = int(k)

  def spatial(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    return jnp.rot90(x, k, axes=_first_two(axes, op=op))

  return Transform(f"rot90({k})", spatial, spatial, (Rotation(k),))


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

  return Transform(f"{op}()", spatial, spatial, (Transposition(),))


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
  steps: tuple[Step, ...] | None = ()
  for g in gs:
    own = g.steps if isinstance(g, Transform) else None
    steps = None if steps is None or own is None else steps + own
  return Transform(f"compose({', '.join(parts)})", spatial, kernel, steps)


def _shift_spec(shift, *, op: str) -> int | tuple[int, ...]:
  """Checks a shift: an int, or a non-empty tuple of ints."""
  if is_int(shift):
    return int(shift)
  if (
      isinstance(shift, Sequence)
      and not isinstance(shift, str)
      and len(shift) > 0
      and all(is_int(s) for s in shift)
  ):
    return tuple(int(s) for s in shift)
  raise ValueError(f"{op}: shift got {shift!r}; expected an int or a tuple of ints.")
