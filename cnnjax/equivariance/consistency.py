"""Zhang (2019)'s classification consistency under random shifts."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from cnnjax import padding as _padding
from cnnjax.equivariance.transforms import TRANSLATE_MODES, _translate_array

__all__ = ["shift_consistency"]


@functools.partial(jax.jit, static_argnames="mode")
def _shift_each(x: jax.Array, shifts: jax.Array, mode: str) -> jax.Array:
  """Translates image ``i`` of ``x`` (``[N, *spatial, C]``) by ``shifts[i]`` (``[N, d]``)."""
  axes = tuple(range(1, x.ndim - 1))

  def one(image, shift):
    return _translate_array(image[None], shift, axes=axes, mode=mode)[0]

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
