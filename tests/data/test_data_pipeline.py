"""The JAX input pipeline: statistics, normalisation, augmentation, batches."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from cnnjax.data import pipeline
from cnnjax.data.pipeline import (
    augment,
    channel_stats,
    epoch_batches,
    normalize,
    num_batches,
    random_crop,
    random_flip,
)

RNG = np.random.default_rng(0)


def _images(n=6, h=8, w=8, c=3):
  return RNG.integers(0, 256, (n, h, w, c), dtype=np.uint8)


def test_channel_stats_match_numpy():
  x = _images(20, 5, 6, 3)
  mean, std = channel_stats(x)
  ref = x.astype(np.float64).reshape(-1, 3)
  np.testing.assert_allclose(mean, ref.mean(0), rtol=1e-6)
  np.testing.assert_allclose(std, ref.std(0), rtol=1e-6)
  assert mean.shape == (3,) and std.shape == (3,)


def test_normalize_gives_zero_mean_unit_std():
  x = _images(30, 4, 4, 2)
  mean, std = channel_stats(x)
  y = normalize(x, mean, std)
  assert y.dtype == jnp.float32 and y.shape == x.shape
  flat = np.asarray(y, np.float64).reshape(-1, 2)
  np.testing.assert_allclose(flat.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(flat.std(0), 1, atol=1e-5)
  ref = (x.astype(np.float64) - np.asarray(mean, np.float64)) / np.asarray(std, np.float64)
  np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_normalize_errors():
  x = _images(2, 4, 4, 3)
  with pytest.raises(ValueError, match=r"mean has shape \(2,\); expected \(3,\)"):
    normalize(x, jnp.zeros(2), jnp.ones(3))
  with pytest.raises(ValueError, match=r"std has shape \(\); expected \(3,\)"):
    normalize(x, jnp.zeros(3), 1.0)
  with pytest.raises(ValueError, match=r"images has shape \(4, 4, 3\)"):
    normalize(x[0], jnp.zeros(3), jnp.ones(3))


def _windows(x, padding, mode):
  """Every (2p+1)² crop of each padded image, written with NumPy."""
  np_mode = {"zeros": "constant", "reflect": "reflect", "edge": "edge", "circular": "wrap"}[mode]
  padded = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode=np_mode)
  h, w = x.shape[1:3]
  return [
      [
          padded[i, a : a + h, b : b + w]
          for a in range(2 * padding + 1)
          for b in range(2 * padding + 1)
      ]
      for i in range(len(x))
  ]


class AugmentTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters("reflect", "zeros")
  def test_crop_is_a_window_of_the_padded_image(self, mode):
    x = _images(16, 7, 9, 2)
    crop = self.variant(functools.partial(random_crop, padding=3, padding_mode=mode))
    out = np.asarray(crop(jax.random.key(1), x))
    self.assertEqual(out.shape, x.shape)
    self.assertEqual(out.dtype, np.uint8)
    offsets = []
    for img, windows in zip(out, _windows(x, 3, mode), strict=True):
      matches = [k for k, win in enumerate(windows) if np.array_equal(img, win)]
      self.assertTrue(matches, "the crop is not a window of the padded image")
      offsets.append(matches[0])
    self.assertGreater(len(set(offsets)), 4)  # offsets vary across the batch

  @chex.variants(with_jit=True, without_jit=True)
  def test_augment_is_deterministic_and_keyed(self):
    x = jnp.asarray(_images(8, 8, 8, 3), jnp.float32)
    aug = self.variant(functools.partial(augment, padding=2))
    a, b = aug(jax.random.key(0), x), aug(jax.random.key(0), x)
    c = aug(jax.random.key(1), x)
    np.testing.assert_array_equal(a, b)
    self.assertFalse(np.array_equal(a, c))
    self.assertEqual(a.shape, x.shape)
    self.assertEqual(a.dtype, x.dtype)

  @chex.variants(with_jit=True, without_jit=True)
  def test_flip_twice_is_identity_and_flips_about_half(self):
    x = _images(200, 4, 5, 1)
    flip = self.variant(random_flip)
    key = jax.random.key(3)
    once = np.asarray(flip(key, x))
    np.testing.assert_array_equal(flip(key, once), x)
    flipped = np.array([np.array_equal(o, xi[:, ::-1]) for o, xi in zip(once, x, strict=True)])
    kept = np.array([np.array_equal(o, xi) for o, xi in zip(once, x, strict=True)])
    self.assertTrue(np.all(flipped | kept))
    self.assertTrue(60 < flipped.sum() < 140)

  def test_no_padding_no_flip_is_identity(self):
    x = _images(3)
    np.testing.assert_array_equal(augment(jax.random.key(0), x, padding=0, flip=False), x)

  def test_augment_errors(self):
    x = _images(2)
    with pytest.raises(ValueError, match="padding got -1"):
      augment(jax.random.key(0), x, padding=-1)
    with pytest.raises(ValueError, match="padding_mode got 'mirror'"):
      augment(jax.random.key(0), x, padding_mode="mirror")
    with pytest.raises(ValueError, match=r"images has shape \(8, 8, 3\)"):
      random_crop(jax.random.key(0), x[0])


def _indexed(n):
  """Images whose every pixel holds the example's index, and labels = index."""
  x = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[:, None, None, None], (n, 2, 2, 1))
  return x, jnp.arange(n, dtype=jnp.int32)


def test_shuffled_epoch_covers_every_example_once():
  x, y = _indexed(23)
  batches = list(epoch_batches(x, y, batch_size=5, key=jax.random.key(0)))
  assert [b.labels.shape[0] for b in batches] == [5, 5, 5, 5, 3]
  seen = np.concatenate([np.asarray(b.labels) for b in batches])
  assert sorted(seen.tolist()) == list(range(23)) and seen.tolist() != list(range(23))
  for b in batches:  # images travel with their labels
    np.testing.assert_array_equal(b.images[:, 0, 0, 0], b.labels)
    assert b.mask is None

  def order(key):
    return np.concatenate(
        [np.asarray(b.labels) for b in epoch_batches(x, y, batch_size=5, key=key)]
    )

  again, other = order(jax.random.key(0)), order(jax.random.key(1))
  np.testing.assert_array_equal(seen, again)
  assert not np.array_equal(seen, other)


def test_drop_last_and_in_order_without_key():
  x, y = _indexed(23)
  batches = list(epoch_batches(x, y, batch_size=5, key=jax.random.key(0), drop_last=True))
  assert len(batches) == 4 == num_batches(23, 5, drop_last=True)
  assert all(b.images.shape == (5, 2, 2, 1) for b in batches)
  ordered = np.concatenate([np.asarray(b.labels) for b in epoch_batches(x, y, batch_size=5)])
  np.testing.assert_array_equal(ordered, np.arange(23))
  assert num_batches(23, 5) == 5 and num_batches(25, 5) == 5


def test_pad_last_keeps_shapes_static_and_masks_padding():
  x, y = _indexed(12)
  batches = list(epoch_batches(x, y, batch_size=5, pad_last=True))
  assert [b.images.shape[0] for b in batches] == [5, 5, 5]
  masks = np.concatenate([np.asarray(b.mask) for b in batches])
  assert masks.tolist() == [True] * 12 + [False] * 3
  real = np.concatenate([np.asarray(b.labels) for b in batches])[masks]
  np.testing.assert_array_equal(real, np.arange(12))
  # Exact multiple: no padding, all-True masks.
  assert all(np.asarray(b.mask).all() for b in epoch_batches(x, y, batch_size=4, pad_last=True))


def test_batches_compile_once_per_shape():
  x, y = _indexed(40)
  before = pipeline._gather._cache_size()
  for epoch in range(3):
    for _ in epoch_batches(x, y, batch_size=8, key=jax.random.key(epoch), drop_last=True):
      pass
  assert pipeline._gather._cache_size() - before <= 1


def test_epoch_batches_errors():
  x, y = _indexed(6)
  with pytest.raises(ValueError, match="batch_size got 0"):
    next(epoch_batches(x, y, batch_size=0))
  with pytest.raises(ValueError, match=r"labels has shape \(5,\); expected \(6,\)"):
    next(epoch_batches(x, y[:5], batch_size=2))
