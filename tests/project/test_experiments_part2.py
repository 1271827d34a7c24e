"""Experiments 6–9 (shift_invariance, filters, occlusion, bottleneck): their helpers, and
each script's ``--quick`` run end to end, as a user types it.

The end-to-end runs are subprocesses (the scripts run with JAX's defaults, not this suite's
float64 configuration) writing into a temporary ``--out``, never into the committed
``experiments/results``. They compile as the rest of the suite does (on CPU with most
optimizations off, ``tests/conftest.py``): these runs are compile-bound smoke tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPERIMENTS = os.path.join(ROOT, "experiments")
sys.path.insert(0, EXPERIMENTS)

import bottleneck  # noqa: E402
import filters  # noqa: E402
import occlusion  # noqa: E402
import shift_invariance  # noqa: E402

# --------------------------------------------------------------------------------------
# Helpers of the scripts.


def test_aps_net_is_exactly_invariant_to_circular_shifts_and_max_pool_net_is_not():
  x = jax.random.normal(jax.random.key(0), (4, 16, 16, 3), jnp.float32)
  outputs = {}
  for kind in ("aps", "max"):
    net = shift_invariance.DownsampleNet(
        num_classes=5, input_shape=(16, 16, 3), downsample=kind, widths=(4, 8, 8), rngs=nnx.Rngs(1)
    )
    f = jax.jit(lambda x, net=net: net(x))
    base = f(x)
    outputs[kind] = max(
        float(jnp.max(jnp.abs(f(jnp.roll(x, s, axis=(1, 2))) - base)))
        for s in ((1, 0), (0, 1), (3, 5))
    )
  assert outputs["aps"] < 1e-5 * (1 + outputs["max"])
  assert outputs["max"] > 1e-3


def test_downsample_net_rejects_unknown_downsampling():
  with pytest.raises(ValueError, match="downsample"):
    shift_invariance.DownsampleNet(
        num_classes=2, input_shape=(8, 8, 3), downsample="lp", rngs=nnx.Rngs(0)
    )


def test_crops_at_the_padding_offset_are_the_image_and_others_are_reflect_shifts():
  images = np.random.default_rng(0).integers(0, 255, (2, 6, 6, 3), dtype=np.uint8)
  same = shift_invariance.crops(images, np.array([[2, 2], [2, 2]]), pad=2)
  np.testing.assert_array_equal(same, images)
  moved = shift_invariance.crops(images, np.array([[3, 2], [2, 0]]), pad=2)
  np.testing.assert_array_equal(moved[0, :5], images[0, 1:])  # content moved up one row
  np.testing.assert_array_equal(moved[0, 5], images[0, 4])  # mirrored in at the bottom
  np.testing.assert_array_equal(moved[1, :, 2:], images[1, :, :4])  # moved right by two
  np.testing.assert_array_equal(moved[1, :, 0], images[1, :, 2])


def test_he_normal_has_the_fan_in_variance():
  w = shift_invariance.he_normal(jax.random.key(0), (3, 3, 50, 64))
  assert w.shape == (3, 3, 50, 64)
  np.testing.assert_allclose(float(jnp.var(w)), 2 / 450, rtol=0.05)


def test_low_frequency_share_is_one_for_constants_and_9_25_for_white_noise():
  noise = np.random.default_rng(0).standard_normal((4000, 5, 5, 3))
  np.testing.assert_allclose(filters.low_frequency_share(noise).mean(), 9 / 25, atol=0.01)
  np.testing.assert_allclose(filters.low_frequency_share(np.ones((2, 5, 5, 3))), 1.0)
  checker = np.indices((5, 5)).sum(0) % 2 * 2.0 - 1  # energy at the highest frequencies
  assert filters.low_frequency_share(checker[None, :, :, None])[0] < 0.2


def test_classic_kernels_checks_hold_on_a_random_image():
  image = jnp.asarray(np.random.default_rng(1).random((1, 9, 9, 3)), jnp.float32)
  by = {r["name"]: r for r in filters.kernel_checks(image)}
  assert set(by) == set(filters.KERNELS)
  assert all(r["flip_error"] < 1e-6 for r in by.values())
  assert by["identity"]["identity_error"] < 1e-7
  assert by["Sobel x"]["identity_error"] > 0.1
  for name in ("box blur 3×3", "Gaussian blur 3×3", "Gaussian blur 5×5"):
    assert by[name]["contrast"] < 0.9
  assert by["sharpen"]["contrast"] > 1.1
  assert all(r["constant_response"] < 1e-5 for r in by.values())
  # Sobel is antisymmetric: true convolution is minus the cross-correlation.
  k = filters.KERNELS["Sobel x"][0]
  np.testing.assert_allclose(
      filters.apply(image, k), -filters.apply(image, k, flip=False), atol=1e-6
  )


def test_occluded_places_a_grey_square_at_every_grid_position():
  image = np.zeros((10, 10, 3), np.uint8)
  copies, corners = occlusion.occluded(image, np.array([7, 8, 9], np.uint8), size=4, stride=3)
  assert corners == [(r, c) for r in (0, 3, 6) for c in (0, 3, 6)]
  assert copies.shape == (9, 10, 10, 3)
  for copy, (r, c) in zip(copies, corners, strict=True):
    np.testing.assert_array_equal(copy[r : r + 4, c : c + 4], np.broadcast_to([7, 8, 9], (4, 4, 3)))
    assert copy.sum() == 16 * (7 + 8 + 9)


def test_bottleneck_counts_match_the_lecture():
  macs, ops = bottleneck.formula_macs(), bottleneck.op_counts()
  assert macs["direct"] == 163_840_000  # the lecture's ≈163M
  assert macs["bottleneck"] == 3_276_800 + 13_107_200
  assert ops["direct"] == macs["direct"] + 32 * 32 * 32  # + one bias add per output


# --------------------------------------------------------------------------------------
# The scripts end to end.

# name -> (row labels its first table must have, PNGs it must write, text it must contain)
EXPECTED = {
    "shift_invariance": (
        shift_invariance.DOWNSAMPLING,
        ("consistency", "curves"),
        ("circular consistency",),
    ),
    "filters": (("seed-cnn", *filters.KERNELS), ("learned", "kernels"), ("low-frequency",)),
    "occlusion": ((), ("heatmaps",), ("p(class)",)),
    "bottleneck": (
        ("5×5 conv, 200 → 32", "bottleneck total"),
        (),
        ("163,840,000", "16,384,000", "≈163M", "time ratio"),
    ),
}


def _table_rows(markdown: str) -> list[list[str]]:
  return [
      [c.strip() for c in line.strip().strip("|").split("|")]
      for line in markdown.splitlines()
      if line.startswith("|") and not re.match(r"^\|[:\- |]+\|$", line.strip())
  ]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_quick_run_writes_its_page_and_plots(name, tmp_path):
  env = dict(os.environ, MPLBACKEND="Agg")
  committed = os.path.join(EXPERIMENTS, "results", f"{name}.md")
  before = os.stat(committed).st_mtime_ns if os.path.exists(committed) else None
  proc = subprocess.run(
      [sys.executable, os.path.join(EXPERIMENTS, f"{name}.py"), "--quick", "--out", str(tmp_path)],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  page = (tmp_path / f"{name}.md").read_text()
  labels, pngs, texts = EXPECTED[name]
  first_cells = {row[0] for row in _table_rows(page)}
  for label in labels:
    assert label in first_cells, (label, sorted(first_cells))
  if name == "occlusion":  # one row per image (an index), one image per class at most
    assert 2 <= sum(cell.isdigit() for cell in first_cells) <= 4, sorted(first_cells)
  for text in texts:
    assert text in page, text
  assert "--quick smoke run" in page and f"python experiments/{name}.py --quick" in page
  for stem in pngs:
    png = tmp_path / f"{name}_{stem}.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert f"({name}_{stem}.png)" in page
  after = os.stat(committed).st_mtime_ns if os.path.exists(committed) else None
  assert after == before, "a --quick run touched the committed results"
