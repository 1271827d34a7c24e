"""The classic input pipeline in JAX, on the device: statistics, normalisation,
augmentation and batches.

A few small pure functions over device-resident arrays::

    x = jax.device_put(ds.train_images)                  # uint8 [N, H, W, C], once
    mean, std = channel_stats(x)                         # per channel, training part only
    for batch in epoch_batches(x, y, batch_size=128, key=k_epoch, drop_last=True):
      images = augment(k_step, normalize(batch.images, mean, std))
      ...

Augmentation is the CIFAR recipe: pad 4 pixels on each side, crop a random window of
the original size, flip horizontally with probability ½. Padding is by *reflection*
by default (mirror without repeating the edge, as :func:`cnnjax.padding.pad_spatial`),
which adds no artificial black border; ``padding_mode="zeros"`` is the torchvision
``RandomCrop(32, padding=4)`` behaviour — apply it after :func:`normalize` so that the
border is the mean colour rather than black.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike, DTypeLike

from cnnjax import padding as _padding

__all__ = [
    "Batch",
    "augment",
    "channel_stats",
    "epoch_batches",
    "normalize",
    "num_batches",
    "random_crop",
    "random_flip",
]


def _check_images(images: jax.Array, *, op: str, name: str = "images") -> None:
  if images.ndim != 4:
    raise ValueError(
        f"{op}: {name} has shape {tuple(images.shape)} (rank {images.ndim}); expected "
        "rank 4, [N, H, W, C]."
    )


def channel_stats(images: ArrayLike) -> tuple[jax.Array, jax.Array]:
  """Per-channel mean and (population) standard deviation of ``images``.

  Computed in float32 (float64 when x64 is enabled) by two passes (mean, then mean
  squared deviation), so uint8 inputs of any size give accurate results.

  Args:
    images: ``[N, H, W, C]``, any real dtype (typically the uint8 training part).

  Returns:
    ``(mean, std)``, each ``[C]`` in the pixel units of ``images``.

  Example:
    >>> mean, std = channel_stats(jnp.array([0, 2], jnp.uint8).reshape(2, 1, 1, 1))
    >>> mean.tolist(), std.tolist()
    ([1.0], [1.0])
  """
  x = jnp.asarray(images)
  _check_images(x, op="channel_stats")
  x = x.astype(jnp.promote_types(jnp.float32, jnp.result_type(float)))
  mean = jnp.mean(x, axis=(0, 1, 2), keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
  return mean.reshape(-1), jnp.sqrt(var)


def normalize(
    images: ArrayLike, mean: ArrayLike, std: ArrayLike, *, dtype: DTypeLike = jnp.float32
) -> jax.Array:
  """``(images - mean) / std`` per channel, in ``dtype``.

  Args:
    images: ``[N, H, W, C]`` (e.g. uint8).
    mean: ``[C]``, from :func:`channel_stats` of the training part.
    std: ``[C]``, positive.
    dtype: the floating dtype of the result.

  Returns:
    ``[N, H, W, C]`` in ``dtype``.

  Example:
    >>> x = jnp.full((1, 1, 1, 2), 3, jnp.uint8)
    >>> normalize(x, jnp.array([1., 2.]), jnp.array([2., 1.]))[0, 0, 0].tolist()
    [1.0, 1.0]
  """
  x = jnp.asarray(images)
  _check_images(x, op="normalize")
  c = x.shape[-1]
  mean, std = jnp.asarray(mean, dtype), jnp.asarray(std, dtype)
  for name, v in (("mean", mean), ("std", std)):
    if v.shape != (c,):
      raise ValueError(
          f"normalize: {name} has shape {tuple(v.shape)}; expected ({c},), one value per "
          "channel of images."
      )
  return (x.astype(dtype) - mean.reshape(1, 1, 1, c)) / std.reshape(1, 1, 1, c)


def random_crop(
    key: jax.Array, images: ArrayLike, *, padding: int = 4, padding_mode: str = "reflect"
) -> jax.Array:
  """Pads every image by ``padding`` pixels and crops a random window of the original size.

  Each image gets its own offset, uniform over the ``(2·padding + 1)²`` positions; offset
  ``(padding, padding)`` returns the image unchanged.

  Args:
    key: a PRNG key.
    images: ``[N, H, W, C]``, any dtype.
    padding: pixels added on each side, a non-negative int.
    padding_mode: ``"reflect"`` (default), ``"zeros"``, ``"edge"`` or ``"circular"``.

  Returns:
    ``[N, H, W, C]``, same dtype.

  Example:
    >>> random_crop(jax.random.key(0), jnp.zeros((2, 32, 32, 3))).shape
    (2, 32, 32, 3)
  """
  op = "random_crop"
  x = jnp.asarray(images)
  _check_images(x, op=op)
  _padding.check_padding_mode(padding_mode, op=op)
  if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
    raise ValueError(f"{op}: padding got {padding!r}; expected a non-negative int.")
  if padding == 0:
    return x
  n, h, w, c = x.shape
  padded = _padding.pad_spatial(x, ((padding, padding), (padding, padding)), padding_mode)
  offsets = jax.random.randint(key, (n, 2), 0, 2 * padding + 1)

  def crop(image, offset):
    return lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, c))

  return jax.vmap(crop)(padded, offsets)


def random_flip(key: jax.Array, images: ArrayLike, *, probability: float = 0.5) -> jax.Array:
  """Flips each image left-right with probability ``probability``.

  Args:
    key: a PRNG key.
    images: ``[N, H, W, C]``.
    probability: the chance that an image is flipped.

  Returns:
    ``[N, H, W, C]``, same dtype.

  Example:
    >>> random_flip(jax.random.key(0), jnp.zeros((2, 4, 4, 1))).shape
    (2, 4, 4, 1)
  """
  x = jnp.asarray(images)
  _check_images(x, op="random_flip")
  flip = jax.random.bernoulli(key, probability, (x.shape[0],))
  return jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)


def augment(
    key: jax.Array,
    images: ArrayLike,
    *,
    padding: int = 4,
    padding_mode: str = "reflect",
    flip: bool = True,
) -> jax.Array:
  """The CIFAR augmentation: :func:`random_crop` after padding, then :func:`random_flip`.

  Pure and jit-able (configuration is static): the same key and batch give the same
  result, e.g. ``jax.jit(augment, static_argnames=("padding", "padding_mode", "flip"))``.

  Args:
    key: a PRNG key (split inside for the crop and the flip).
    images: ``[N, H, W, C]``.
    padding: the crop's padding; 0 disables cropping.
    padding_mode: see :func:`random_crop`.
    flip: whether to flip horizontally at random.

  Returns:
    ``[N, H, W, C]``, same dtype.

  Example:
    >>> augment(jax.random.key(0), jnp.zeros((8, 32, 32, 3))).shape
    (8, 32, 32, 3)
  """
  k_crop, k_flip = jax.random.split(key)
  x = random_crop(k_crop, images, padding=padding, padding_mode=padding_mode)
  return random_flip(k_flip, x) if flip else x


class Batch(NamedTuple):
  """One batch: ``images [B, H, W, C]``, ``labels [B]`` and, for padded batches, ``mask [B]``.

  ``mask`` is None unless :func:`epoch_batches` was asked to ``pad_last``; then it is
  True for real examples and False for the padding rows at the end of the last batch.
  A NamedTuple is a pytree, so a ``Batch`` can be passed to a jitted step as is.
  """

  images: jax.Array
  labels: jax.Array
  mask: jax.Array | None = None


def num_batches(num_examples: int, batch_size: int, *, drop_last: bool = False) -> int:
  """How many batches :func:`epoch_batches` yields: ``⌊N / B⌋`` or ``⌈N / B⌉``."""
  if drop_last:
    return num_examples // batch_size
  return -(-num_examples // batch_size)


@functools.partial(jax.jit, static_argnames=("batch_size",))
def _gather(images, labels, order, start, *, batch_size):
  idx = lax.dynamic_slice_in_dim(order, start, batch_size)
  return jnp.take(images, idx, axis=0), jnp.take(labels, idx, axis=0)


def epoch_batches(
    images: jax.Array,
    labels: jax.Array,
    *,
    batch_size: int,
    key: jax.Array | None = None,
    drop_last: bool = False,
    pad_last: bool = False,
) -> Iterator[Batch]:
  """Yields the batches of one epoch, gathered on the device from device-resident arrays.

  The order is ``jax.random.permutation(key, N)``, or ``0..N-1`` when ``key`` is None
  (evaluation). Every full batch has the same shape, so a jitted step compiles once.
  The last ``N mod B`` examples are dropped with ``drop_last`` (training), padded to a
  full batch with ``pad_last`` (evaluation: the padding rows repeat real examples and
  ``Batch.mask`` marks them False; still one compilation), or otherwise yielded as a
  smaller batch.

  Args:
    images: ``[N, H, W, C]``, ideally already on the device (``jax.device_put``).
    labels: ``[N]``.
    batch_size: ``B``, a positive int.
    key: a PRNG key to shuffle with, or None to keep the order.
    drop_last: drop the last partial batch.
    pad_last: pad the last partial batch and return masks (ignored with ``drop_last``).

  Yields:
    :class:`Batch` ``(images [B, H, W, C], labels [B], mask [B] or None)``.

  Example:
    >>> x, y = jnp.zeros((10, 4, 4, 1)), jnp.arange(10)
    >>> [b.labels.shape[0] for b in epoch_batches(x, y, batch_size=4)]
    [4, 4, 2]
    >>> [b.mask.sum().item() for b in epoch_batches(x, y, batch_size=4, pad_last=True)]
    [4, 4, 2]
  """
  op = "epoch_batches"
  images, labels = jnp.asarray(images), jnp.asarray(labels)
  n = images.shape[0]
  if labels.shape != (n,):
    raise ValueError(
        f"{op}: labels has shape {tuple(labels.shape)}; expected ({n},), one label per image."
    )
  if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"{op}: batch_size got {batch_size!r}; expected a positive int.")
  order = jnp.arange(n) if key is None else jax.random.permutation(key, n)
  count = num_batches(n, batch_size, drop_last=drop_last)
  full = n // batch_size
  if pad_last and not drop_last and count > full:
    order = jnp.concatenate([order, jnp.zeros(count * batch_size - n, order.dtype)])
  for i in range(count):
    start = i * batch_size
    size = min(batch_size, order.shape[0] - start)
    x, y = _gather(images, labels, order, start, batch_size=size)
    mask = None
    if pad_last:
      mask = start + jnp.arange(batch_size) < n
    yield Batch(x, y, mask)
