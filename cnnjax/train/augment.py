"""Training-time flips that depend on the epoch, and test-time augmentation (TTA).

Both come from airbench (Jordan 2024, §3.6 and §3.5):

- :func:`alternating_flip`: in epoch 0 each training image is flipped left-right or not
  by a fixed coin toss of its own; from then on every image is flipped in odd epochs
  relative to epoch 0. Every image is seen both ways in every pair of epochs, which
  random flipping only does on average (it repeats an orientation half the time).
- :func:`tta_logits`: the logits of a model averaged over the flipped image (``"flip"``)
  and over one-pixel translations (``"flip_translate"``, airbench's level 2).

The random crop itself is :func:`cnnjax.data.pipeline.random_crop` (``--crop-padding``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from cnnjax import padding as _padding
from cnnjax.train.config import FLIP_MODES, TTA_MODES

__all__ = ["FLIP_MODES", "TTA_MODES", "alternating_flip", "tta_logits"]


def _check_images(x: jax.Array, *, op: str) -> None:
  if x.ndim != 4:
    raise ValueError(f"{op}: images has shape {tuple(x.shape)}; expected rank 4, [N, H, W, C].")


def alternating_flip(
    key: jax.Array, images: ArrayLike, indices: ArrayLike, epoch: ArrayLike
) -> jax.Array:
  """Flips image ``i`` left-right iff ``coin(key, i) XOR (epoch is odd)``.

  The coin of each training example is drawn from ``key`` and its index in the training
  set, so it is the same in every epoch and every run with the same key, whatever the
  batch order: example ``i`` is flipped in epochs ``0, 2, 4, …`` exactly when it is not
  flipped in epochs ``1, 3, 5, …``.

  Args:
    key: the run's flip key (a PRNG key).
    images: the batch, ``[B, H, W, C]``.
    indices: ``[B]`` int, each image's index in the training set.
    epoch: the 0-based epoch, an int scalar (may be traced).

  Returns:
    ``[B, H, W, C]``, same dtype.

  Example:
    >>> x = jnp.arange(4.).reshape(1, 1, 4, 1)
    >>> a = alternating_flip(jax.random.key(0), x, jnp.array([7]), 0)
    >>> b = alternating_flip(jax.random.key(0), x, jnp.array([7]), 1)
    >>> bool(jnp.all(a == b[:, :, ::-1]))
    True
  """
  op = "alternating_flip"
  x = jnp.asarray(images)
  _check_images(x, op=op)
  indices = jnp.asarray(indices)
  if indices.shape != x.shape[:1] or not jnp.issubdtype(indices.dtype, jnp.integer):
    raise ValueError(
        f"{op}: indices has shape {tuple(indices.shape)} and dtype {indices.dtype}; "
        f"expected ({x.shape[0]},) integers, one training-set index per image."
    )
  coins = jax.vmap(lambda i: jax.random.bernoulli(jax.random.fold_in(key, i)))(indices)
  flip = coins ^ (jnp.asarray(epoch) % 2 == 1)
  return jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)


def tta_logits(
    model: Callable[[jax.Array], jax.Array], images: ArrayLike, *, mode: str = "flip"
) -> jax.Array:
  """The model's logits averaged over test-time augmentations of ``images``.

  - ``"none"``: ``f(x)``.
  - ``"flip"``: ``(f(x) + f(flip(x))) / 2``.
  - ``"flip_translate"``: ``m(x) / 2 + (m(x↘) + m(x↖)) / 4`` with ``m`` the ``"flip"``
    average and ``x↘``, ``x↖`` the image moved one pixel down-right and up-left (after
    one pixel of reflect padding): airbench's ``tta_level=2``, six forward passes.

  Args:
    model: maps ``[B, H, W, C]`` to logits ``[B, K]`` (in evaluation mode: BatchNorm
      running statistics, so the views do not interact).
    images: ``[B, H, W, C]``, preprocessed.
    mode: one of ``TTA_MODES``.

  Returns:
    ``[B, K]`` averaged logits.

  Example:
    >>> f = lambda x: x.sum((1, 2))
    >>> tta_logits(f, jnp.ones((2, 4, 4, 3)), mode="flip").shape
    (2, 3)
  """
  op = "tta_logits"
  if mode not in TTA_MODES:
    raise ValueError(f"{op}: mode got {mode!r}; expected one of {TTA_MODES}.")
  x = jnp.asarray(images)
  _check_images(x, op=op)
  if mode == "none":
    return model(x)

  def mirror(v):
    return (model(v) + model(v[:, :, ::-1, :])) / 2

  logits = mirror(x)
  if mode == "flip":
    return logits
  h, w = x.shape[1:3]
  padded = _padding.pad_spatial(x, ((1, 1), (1, 1)), "reflect")
  moved = [padded[:, :h, :w], padded[:, 2 : h + 2, 2 : w + 2]]  # down-right, up-left
  return logits / 2 + (mirror(moved[0]) + mirror(moved[1])) / 4
