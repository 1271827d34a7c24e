"""The actions of the groups p4 and p4m on images and on feature maps over the group.

For :mod:`cnnjax.group`'s layers: :func:`plane_action` moves an image ``[N, H, W, C]``
(rotate and mirror the plane, ``T_h``); :func:`group_action` moves a map on the group
``[N, H, W, |G|, C]``, ``(L_h y)(p, g) = y(h⁻¹p, h⁻¹g)``: the plane transformed and the
group axis permuted. With them, ``assert_equivariant(lift_conv_fn, x, plane_action(h),
group_action(h))`` states that a G-CNN layer is equivariant, and
``assert_invariant(net, x, plane_action(h))`` that a network ending in
:func:`cnnjax.group_pool` and global pooling is invariant.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cnnjax import group as _group
from cnnjax._checks import is_int
from cnnjax.equivariance.transforms import Reflection, Rotation, Step, Transform

__all__ = ["group_action", "plane_action"]


def _element(element, group: str, *, op: str) -> int:
  if group not in _group.GROUPS:
    raise ValueError(f"{op}: group got {group!r}; expected one of {_group.GROUPS}.")
  n = _group.group_order(group)
  if not is_int(element) or not 0 <= element < n:
    raise ValueError(
        f"{op}: element got {element!r}; expected an int in [0, {n}) for group {group!r} "
        "(4·m + r: r quarter turns, then m mirrors)."
    )
  return int(element)


def _check_plane(x: jax.Array, axes: tuple[int, ...], *, name: str) -> None:
  if len(axes) < 2 or x.shape[axes[0]] != x.shape[axes[1]]:
    raise ValueError(
        f"{name}: x has shape {tuple(x.shape)}; expected a square plane on the first two "
        "spatial axes (H == W)."
    )


def plane_action(element: int, *, group: str) -> Transform:
  """Group element ``element`` acting on images ``[N, H, W, C]`` (square): ``T_h`` in space.

  Args:
    element: ``4·m + r`` (``r`` quarter turns as :func:`rot90`, then ``m`` mirrors of
      W), in ``[0, |G|)``.
    group: ``"p4"`` or ``"p4m"``.

  Returns:
    A :class:`Transform`; on a kernel ``[k, k, ...]`` it applies ``T_h`` to the first
    two axes. Its steps are ``r`` quarter turns, then (``m = 1``) a reflection of W.

  Example:
    >>> from cnnjax.equivariance import rot90
    >>> x = jnp.arange(4.0).reshape(1, 2, 2, 1)
    >>> bool((plane_action(1, group="p4")(x) == rot90(1)(x)).all())
    True
  """
  op = "plane_action"
  element = _element(element, group, op=op)
  name = f"plane_action({element}, group={group!r})"

  def spatial(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    _check_plane(x, axes, name=name)
    return _group.transform_plane(x, element, group=group, axes=(axes[0], axes[1]))

  m, r = divmod(element, 4)
  steps: tuple[Step, ...] = (Rotation(r),) + ((Reflection(1),) if m else ())
  return Transform(name, spatial, spatial, steps)


def group_action(element: int, *, group: str) -> Transform:
  """Group element ``h`` acting on maps over the group ``[N, H, W, |G|, C]``.

  ``(L_h y)[:, p, g] = y[:, h⁻¹p, h⁻¹g]``: ``T_h`` on (H, W), and the group axis
  permuted so that slot ``g`` holds the old slot ``h⁻¹g``. The output of
  :func:`cnnjax.lift_conv` and :func:`cnnjax.group_conv` moves this way when their
  input moves by ``h``.

  Args:
    element: as :func:`plane_action`.
    group: ``"p4"`` or ``"p4m"``.

  Returns:
    A :class:`Transform` on ``[N, H, W, |G|, C]`` (no kernel counterpart).

  Example:
    >>> y = jnp.zeros((1, 3, 3, 4, 1)).at[0, 0, 0, 0, 0].set(1.0)
    >>> moved = group_action(1, group="p4")(y)
    >>> [int(i) for i in jnp.argwhere(moved[0, ..., 0])[0]]  # rotated, slot 0 → 1
    [2, 0, 1]
  """
  op = "group_action"
  element = _element(element, group, op=op)
  n = _group.group_order(group)
  source = _group.group_product(group)[_group.group_inverse(group)[element]]
  name = f"group_action({element}, group={group!r})"

  def spatial(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    if x.ndim != 5 or x.shape[3] != n:
      raise ValueError(f"{name}: x has shape {tuple(x.shape)}; expected [N, H, W, |G| = {n}, C].")
    _check_plane(x, axes, name=name)
    moved = _group.transform_plane(x, element, group=group, axes=(1, 2))
    return jnp.take(moved, jnp.asarray(source), axis=3)

  def kernel(w: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    raise TypeError(f"{name}.on_kernel: group_action has no kernel counterpart.")

  return Transform(name, spatial, kernel)
