"""A built-in dataset that needs no download: procedurally drawn shapes.

Each image is one filled shape — circle, square, triangle, diamond, cross or ring — of
a random size (radius 5 to 12 pixels) at a random position, in a random colour on a
random background with a gentle gradient and a little pixel noise. The label is the
shape, so a classifier has to learn the form regardless of where it is, how large it
is and what colours it has: a convolutional network with pooling learns it in a minute,
and moving the shape around makes translation invariance visible.

Images are rendered with 2×2 supersampling (anti-aliased edges) and are a pure
function of the seed: the same ``seed`` gives the same bytes on every machine.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SHAPE_NAMES", "make_shapes"]

SHAPE_NAMES = ("circle", "square", "triangle", "diamond", "cross", "ring")
_SUPERSAMPLE = 2
_CHUNK = 500


def _mask(kind: int, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
  """Boolean coverage of shape ``kind``: ``dx, dy [n, S, S]`` from the centre, ``r [n, 1, 1]``."""
  ax, ay = np.abs(dx), np.abs(dy)
  if kind == 0:  # circle
    return dx * dx + dy * dy <= r * r
  if kind == 1:  # square
    return np.maximum(ax, ay) <= 0.8 * r
  if kind == 2:  # equilateral triangle, apex up, circumradius r
    s3 = np.sqrt(3.0) / 2
    return (dy <= r / 2) & (-s3 * dx - dy / 2 <= r / 2) & (s3 * dx - dy / 2 <= r / 2)
  if kind == 3:  # diamond
    return ax + ay <= r
  if kind == 4:  # cross
    return ((ax <= r / 3) & (ay <= r)) | ((ay <= r / 3) & (ax <= r))
  dist2 = dx * dx + dy * dy  # ring
  return (dist2 <= r * r) & (dist2 >= (0.55 * r) ** 2)


def _colours(rng: np.random.Generator, n: int, min_distance: float = 100.0):
  """Foreground and background RGB colours at least ``min_distance`` apart."""
  fg = rng.uniform(0, 255, (n, 3))
  bg = rng.uniform(0, 255, (n, 3))
  close = np.linalg.norm(fg - bg, axis=1) < min_distance
  while close.any():
    fg[close] = rng.uniform(0, 255, (int(close.sum()), 3))
    close = np.linalg.norm(fg - bg, axis=1) < min_distance
  return fg, bg


def make_shapes(
    num_examples: int,
    *,
    num_classes: int = len(SHAPE_NAMES),
    image_size: int = 32,
    seed: int = 0,
    noise: float = 6.0,
) -> tuple[np.ndarray, np.ndarray]:
  """Draws ``num_examples`` shape images with balanced, shuffled labels.

  Args:
    num_examples: how many images.
    num_classes: how many shapes, the first ones of :data:`SHAPE_NAMES` (2 to 6).
    image_size: height and width in pixels (at least 24, so every shape fits).
    seed: the random seed; everything is a function of it.
    noise: standard deviation of the Gaussian pixel noise, in pixel values.

  Returns:
    ``(images, labels)``: ``uint8 [num_examples, image_size, image_size, 3]`` and
    ``int32 [num_examples]`` with label ``k`` meaning ``SHAPE_NAMES[k]``.

  Example:
    >>> images, labels = make_shapes(12, num_classes=3)
    >>> images.shape, sorted(set(labels.tolist()))
    ((12, 32, 32, 3), [0, 1, 2])
  """
  if (
      isinstance(num_examples, bool)
      or not isinstance(num_examples, (int, np.integer))
      or (num_examples < 1)
  ):
    raise ValueError(f"make_shapes: num_examples got {num_examples!r}; expected a positive int.")
  if (
      isinstance(num_classes, bool)
      or not isinstance(num_classes, (int, np.integer))
      or not (2 <= num_classes <= len(SHAPE_NAMES))
  ):
    raise ValueError(
        f"make_shapes: num_classes got {num_classes!r}; expected an int in "
        f"[2, {len(SHAPE_NAMES)}] (the shapes {SHAPE_NAMES})."
    )
  if (
      isinstance(image_size, bool)
      or not isinstance(image_size, (int, np.integer))
      or (image_size < 24)
  ):
    raise ValueError(f"make_shapes: image_size got {image_size!r}; expected an int >= 24.")
  rng = np.random.default_rng(seed)
  n = num_examples
  labels = rng.permutation(np.arange(n) % num_classes).astype(np.int32)
  scale = image_size / 32
  radius = rng.uniform(5, 12, n) * scale
  margin = radius + 1
  cx = rng.uniform(margin, image_size - margin)
  cy = rng.uniform(margin, image_size - margin)
  fg, bg = _colours(rng, n)
  gradient = rng.normal(0, 15, (n, 2))  # pixel values across the image, per axis

  s = image_size * _SUPERSAMPLE
  grid = (np.arange(s) + 0.5) / _SUPERSAMPLE  # sample positions in pixel units
  pixel = (np.arange(image_size) + 0.5) / image_size - 0.5  # -0.5..0.5 across the image
  images = np.empty((n, image_size, image_size, 3), np.uint8)
  for start in range(0, n, _CHUNK):
    sl = slice(start, min(start + _CHUNK, n))
    m = sl.stop - sl.start
    mask = np.empty((m, s, s), bool)
    for k in range(num_classes):
      idx = sl.start + np.flatnonzero(labels[sl] == k)
      dx = grid[None, None, :] - cx[idx, None, None]
      dy = grid[None, :, None] - cy[idx, None, None]
      mask[idx - sl.start] = _mask(k, dx, dy, radius[idx, None, None])
    cover = (
        mask.reshape(m, image_size, _SUPERSAMPLE, image_size, _SUPERSAMPLE)
        .sum((2, 4), dtype=np.uint8)
        .astype(np.float32)
        / _SUPERSAMPLE**2
    )
    back = (
        bg[sl, None, None, :]
        + gradient[sl, 0, None, None, None] * pixel[None, None, :, None]
        + gradient[sl, 1, None, None, None] * pixel[None, :, None, None]
    ).astype(np.float32)
    image = back + cover[..., None] * (fg[sl, None, None, :].astype(np.float32) - back)
    image += noise * rng.standard_normal(image.shape, dtype=np.float32)
    images[sl] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
  return images, labels
