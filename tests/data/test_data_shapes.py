"""The built-in shapes dataset."""

import numpy as np
import pytest

from cnnjax.data import shapes
from cnnjax.data.shapes import SHAPE_NAMES, make_shapes
from cnnjax.data.sources import load


def test_shapes_are_deterministic_and_seeded():
  a, la = make_shapes(40, seed=7)
  b, lb = make_shapes(40, seed=7)
  c, _ = make_shapes(40, seed=8)
  np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(la, lb)
  assert not np.array_equal(a, c)
  assert a.shape == (40, 32, 32, 3) and a.dtype == np.uint8 and la.dtype == np.int32


def test_labels_are_balanced_and_in_range():
  _, labels = make_shapes(60, num_classes=4, seed=0)
  assert np.bincount(labels).tolist() == [15, 15, 15, 15]
  assert len(set(labels[:12].tolist())) > 1  # shuffled, not sorted by class


def _area(kind, r, n=801, extent=16.0):
  """Area covered by shape ``kind`` of radius ``r`` on a fine grid, in pixel² units."""
  g = np.linspace(-extent, extent, n)
  dx, dy = np.meshgrid(g, g)
  mask = shapes._mask(kind, dx[None], dy[None], np.full((1, 1, 1), r))
  return mask.sum() * (g[1] - g[0]) ** 2


@pytest.mark.parametrize(
    "kind, area",
    [
        (0, lambda r: np.pi * r**2),  # circle
        (1, lambda r: (1.6 * r) ** 2),  # square of half-side 0.8 r
        (2, lambda r: 3 * np.sqrt(3) / 4 * r**2),  # equilateral, circumradius r
        (3, lambda r: 2 * r**2),  # diamond (a rotated square)
        (4, lambda r: 2 * (2 * r * 2 * r / 3) - (2 * r / 3) ** 2),  # two bars less the middle
        (5, lambda r: np.pi * r**2 * (1 - 0.55**2)),  # ring
    ],
)
def test_shape_areas_match_the_formulas(kind, area):
  for r in (6.0, 10.0):
    assert _area(kind, r) == pytest.approx(area(r), rel=0.02)


def test_shape_lies_inside_the_image_with_two_colours():
  images, labels = make_shapes(30, seed=1, noise=0.0)
  for img in images:
    # The border rows/columns are background: a smooth gradient, no edges of the shape.
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]]).astype(float)
    assert np.ptp(border, axis=0).max() < 60
    # The centre region differs from the border somewhere: the shape is drawn.
    assert np.abs(img.astype(float) - border.mean(0)).max() > 50


def test_argument_errors():
  with pytest.raises(ValueError, match="num_classes got 7"):
    make_shapes(10, num_classes=7)
  with pytest.raises(ValueError, match="num_examples got 0"):
    make_shapes(0)
  with pytest.raises(ValueError, match="image_size got 16"):
    make_shapes(10, image_size=16)


def test_load_shapes_defaults_and_options():
  ds = load("shapes", num_train=300, num_test=60, val_size=50, num_classes=3, seed=2)
  assert ds.train_images.shape == (250, 32, 32, 3) and ds.val_images.shape == (50, 32, 32, 3)
  assert ds.test_images.shape == (60, 32, 32, 3)
  assert ds.class_names == SHAPE_NAMES[:3] and ds.source == "generated"
  again = load("shapes", num_train=300, num_test=60, val_size=50, num_classes=3, seed=2)
  np.testing.assert_array_equal(ds.val_images, again.val_images)
  # train and test are drawn from different streams
  assert not any(np.array_equal(ds.test_images[0], x) for x in ds.train_images)


def test_load_shapes_default_sizes():
  ds = load("shapes", num_train=None, num_test=None)
  assert (len(ds.train_labels), len(ds.val_labels), len(ds.test_labels)) == (5000, 1000, 1000)
  assert ds.num_classes == 6 and ds.image_shape == (32, 32, 3)
