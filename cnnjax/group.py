"""Group-equivariant convolution (Cohen & Welling 2016, G-CNNs) for p4 and p4m.

The groups act on the pixel grid of a square image about its centre:

- ``"p4"``: the 4 rotations by multiples of 90°, element ``r`` = ``R^r``;
- ``"p4m"``: rotations and mirrors, element ``4·m + r`` = ``M^m R^r`` (rotate ``r``
  quarter turns, then mirror ``m`` times), 8 elements.

``R`` is ``jnp.rot90`` in the (H, W) plane (:func:`cnnjax.equivariance.rot90`) and ``M``
reverses W. Since ``M R M = R⁻¹``, the product is
``(m, r)·(m', r') = (m + m' mod 2, (−1)^m' r + r' mod 4)``.

Feature maps on the group have layout ``[N, H, W, |G|, C]``: one ``[H, W, C]`` map per
group element. A group element ``h`` acts on them by moving space and permuting the
group axis, ``(L_h y)(p, g) = y(h⁻¹p, h⁻¹g)``:

- :func:`lift_conv` correlates an image with every transformed copy of its kernel,
  ``y(·, g) = x ⋆ T_g w``;
- :func:`group_conv` correlates a group map with transformed, permuted kernels,
  ``y(·, g) = Σ_s x(·, s) ⋆ T_g w(·, g⁻¹s)``;
- :func:`group_pool` reduces the group axis, which leaves an ordinary map that
  transforms like an image.

Both convolutions are one :func:`cnnjax.cross_correlate` with a kernel stacked from
the transformed copies. With a square input, an odd square kernel, stride 1 and
``"SAME"`` padding (or ``"VALID"``, or circular padding), the result is exactly
equivariant: ``f(L_h x) = L_h f(x)`` (:mod:`cnnjax.equivariance` has the actions).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from cnnjax import _checks
from cnnjax._lowering import exact_mean
from cnnjax.conv import cross_correlate
from cnnjax.padding import PaddingLike

__all__ = [
    "GROUPS",
    "REDUCTIONS",
    "group_conv",
    "group_inverse",
    "group_order",
    "group_pool",
    "group_product",
    "lift_conv",
    "transform_plane",
]

GROUPS = ("p4", "p4m")
REDUCTIONS = ("max", "mean")


def _check_group(group, *, op: str) -> str:
  if group not in GROUPS:
    raise ValueError(f"{op}: group got {group!r}; expected one of {GROUPS}.")
  return group


def group_order(group: str) -> int:
  """``|G|``: 4 for ``"p4"``, 8 for ``"p4m"``."""
  return 4 if _check_group(group, op="group_order") == "p4" else 8


def group_product(group: str) -> np.ndarray:
  """The Cayley table, ``[|G|, |G|]`` int: ``table[g, h]`` is the element ``g·h``
  (apply ``h`` first, then ``g``).

  Example:
    >>> int(group_product("p4")[1, 3])  # a quarter turn after three quarter turns
    0
  """
  n = group_order(group)
  table = np.zeros((n, n), np.int64)
  for g in range(n):
    for h in range(n):
      (m, r), (m2, r2) = divmod(g, 4), divmod(h, 4)
      table[g, h] = 4 * ((m + m2) % 2) + ((-1) ** m2 * r + r2) % 4
  return table


def group_inverse(group: str) -> np.ndarray:
  """``[|G|]`` int: the inverse of each element."""
  table = group_product(group)
  return np.argmax(table == 0, axis=1)


def transform_plane(
    a: ArrayLike, element: int, *, group: str, axes: tuple[int, int] = (0, 1)
) -> jax.Array:
  """``T_g``: group element ``element`` acting on the two axes ``axes`` of ``a``.

  ``M^m R^r`` for ``element = 4·m + r``: ``r`` quarter turns (``jnp.rot90``), then for
  ``m = 1`` a reversal of the second axis.

  Example:
    >>> a = jnp.arange(4.0).reshape(2, 2)
    >>> transform_plane(a, 5, group="p4m").tolist()  # rot90, then mirror
    [[3.0, 1.0], [2.0, 0.0]]
  """
  op = "transform_plane"
  n = group_order(_check_group(group, op=op))
  if not _checks.is_int(element) or not 0 <= element < n:
    raise ValueError(
        f"{op}: element got {element!r}; expected an int in [0, {n}) for group {group!r}."
    )
  m, r = divmod(int(element), 4)
  a = jnp.rot90(jnp.asarray(a), r, axes=axes)
  return jnp.flip(a, axis=axes[1]) if m else a


def _check_kernel(w: jax.Array, rank: int, *, name: str, op: str, layout: str) -> None:
  if w.ndim != rank or w.shape[0] != w.shape[1]:
    raise ValueError(f"{op}: {name} has shape {tuple(w.shape)}; expected a square kernel {layout}.")
  if w.shape[0] == 0:
    raise ValueError(
        f"{op}: {name} has a zero-size kernel dim: shape {tuple(w.shape)}; expected a "
        f"square kernel {layout} with k >= 1."
    )


def _correlate(x: jax.Array, w: jax.Array, *, op: str, **settings) -> jax.Array:
  """:func:`cnnjax.cross_correlate`, its errors naming ``op`` (the caller's stride or
  padding is the one refused)."""
  try:
    return cross_correlate(x, w, **settings)
  except (ValueError, TypeError) as e:
    message = str(e)
    if not message.startswith("cross_correlate:"):
      raise
    raise type(e)(op + message[len("cross_correlate") :]) from None


def _check_x(x: jax.Array, rank: int, *, op: str, layout: str) -> None:
  if x.ndim != rank:
    raise ValueError(
        f"{op}: x has shape {tuple(x.shape)} (rank {x.ndim}); expected rank {rank}, " f"{layout}."
    )


def lift_conv(
    x: ArrayLike,
    w: ArrayLike,
    *,
    group: str,
    stride: int | Sequence[int] = 1,
    padding: PaddingLike = "SAME",
) -> jax.Array:
  """Lifting correlation: an image correlated with every transformed copy of a kernel.

  ``y[b, n, g, o] = (x ⋆ T_g w)[b, n, o]``: one :func:`cnnjax.cross_correlate` with
  the ``|G|`` transformed kernels side by side.

  Args:
    x: image, ``[N, H, W, C_in]``.
    w: kernel, ``[k, k, C_in, C_out]`` (square).
    group: ``"p4"`` or ``"p4m"``.
    stride, padding: as :func:`cnnjax.cross_correlate`.

  Returns:
    ``[N, H', W', |G|, C_out]`` in the dtype :func:`cnnjax.cross_correlate` gives.

  Example:
    >>> lift_conv(jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 3, 16)), group="p4").shape
    (1, 8, 8, 4, 16)
  """
  op = "lift_conv"
  x, w = jnp.asarray(x), jnp.asarray(w)
  n = group_order(_check_group(group, op=op))
  _check_x(x, 4, op=op, layout="[N, H, W, C_in]")
  _check_kernel(w, 4, name="w", op=op, layout="[k, k, C_in, C_out]")
  stacked = jnp.stack([transform_plane(w, g, group=group) for g in range(n)], axis=-2)
  y = _correlate(
      x,
      stacked.reshape(*w.shape[:3], n * w.shape[-1]),
      stride=stride,
      padding=padding,
      op=op,
  )
  return y.reshape(*y.shape[:-1], n, w.shape[-1])


def group_conv(
    x: ArrayLike,
    w: ArrayLike,
    *,
    group: str,
    stride: int | Sequence[int] = 1,
    padding: PaddingLike = "SAME",
) -> jax.Array:
  """Group correlation: a map on the group correlated with transformed, permuted kernels.

  ``y[b, n, g, o] = Σ_s (x[:, :, :, s] ⋆ T_g w[:, :, g⁻¹s])[b, n, o]``: one
  :func:`cnnjax.cross_correlate` of ``x`` (group and channel axes merged) with the
  ``|G|`` kernels stacked.

  Args:
    x: ``[N, H, W, |G|, C_in]``.
    w: kernel, ``[k, k, |G|, C_in, C_out]`` (square).
    group: ``"p4"`` or ``"p4m"``.
    stride, padding: as :func:`cnnjax.cross_correlate`.

  Returns:
    ``[N, H', W', |G|, C_out]``.

  Example:
    >>> x = jnp.ones((1, 8, 8, 4, 16)); w = jnp.ones((3, 3, 4, 16, 32))
    >>> group_conv(x, w, group="p4").shape
    (1, 8, 8, 4, 32)
  """
  op = "group_conv"
  x, w = jnp.asarray(x), jnp.asarray(w)
  n = group_order(_check_group(group, op=op))
  _check_x(x, 5, op=op, layout=f"[N, H, W, |G| = {n}, C_in]")
  _check_kernel(w, 5, name="w", op=op, layout=f"[k, k, |G| = {n}, C_in, C_out]")
  if x.shape[3] != n or w.shape[2] != n:
    raise ValueError(
        f"{op}: x has shape {tuple(x.shape)} and w {tuple(w.shape)}; expected the group "
        f"axes (x's 4th, w's 3rd) of size |G| = {n} for group {group!r}."
    )
  if x.shape[-1] != w.shape[3]:
    raise ValueError(
        f"{op}: channel mismatch: x has {x.shape[-1]} channels per group element but w "
        f"expects {w.shape[3]}; expected x.shape[-1] == w.shape[3]."
    )
  product, inverse = group_product(group), group_inverse(group)
  parts = []
  for g in range(n):
    source = product[inverse[g]]  # w(·, g⁻¹s) for s = 0 .. |G| − 1
    parts.append(transform_plane(w[:, :, source], g, group=group))
  stacked = jnp.stack(parts, axis=-2)  # [k, k, |G| (s), C_in, |G| (g), C_out]
  k, c_in, c_out = w.shape[0], w.shape[3], w.shape[4]
  y = _correlate(
      x.reshape(*x.shape[:3], n * c_in),
      stacked.reshape(k, k, n * c_in, n * c_out),
      stride=stride,
      padding=padding,
      op=op,
  )
  return y.reshape(*y.shape[:-1], n, c_out)


def group_pool(x: ArrayLike, *, reduce: str = "max") -> jax.Array:
  """Pools over the group axis: ``[N, H, W, |G|, C]`` → ``[N, H, W, C]``.

  The result transforms like an image (``T_h`` in space only), so a network ending in
  ``group_pool`` and a global spatial pool is invariant to the group.

  Args:
    x: ``[N, H, W, |G|, C]``.
    reduce: ``"max"`` or ``"mean"``.

  Returns:
    ``[N, H, W, C]`` in ``x``'s dtype; an integer mean is the exact mean rounded toward
    zero (as ``int(a / b)``), for every input (the sum does not wrap).

  Example:
    >>> group_pool(jnp.arange(8.).reshape(1, 1, 1, 4, 2))[0, 0, 0].tolist()
    [6.0, 7.0]
  """
  op = "group_pool"
  x = jnp.asarray(x)
  _check_x(x, 5, op=op, layout="[N, H, W, |G|, C]")
  if reduce not in REDUCTIONS:
    raise ValueError(f"{op}: reduce got {reduce!r}; expected one of {REDUCTIONS}.")
  if x.shape[3] == 0:
    raise ValueError(
        f"{op}: x has shape {tuple(x.shape)}, an empty group axis; expected |G| >= 1 "
        "elements to pool."
    )
  if reduce == "max":
    return jnp.max(x, axis=3)
  if jnp.issubdtype(x.dtype, jnp.integer):
    return _integer_mean(x)
  acc = _checks.accumulation_dtype(x.dtype)
  return jnp.mean(x.astype(acc), axis=3).astype(x.dtype)


@jax.jit
def _integer_mean(x: jax.Array) -> jax.Array:
  """``trunc(mean)`` over the group axis, exactly (a float32 mean of int32 values was
  off by up to 128, and an int32 sum wraps)."""
  n = x.shape[3]
  planes = exact_mean.sum_planes(
      exact_mean.split(x), n, lambda a: jnp.sum(a, axis=3, dtype=jnp.int32)
  )
  return exact_mean.quotient_truncated(planes, n, x.dtype)
