"""Tests for cnnjax.deform: the NumPy reference of the papers' formula, cross_correlate at
zero offsets, torchvision's layouts and boundary rule, NaN/inf, gradients, errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from references import assert_close, ref_deform_conv, ref_geometry

import cnnjax
from cnnjax.deform import deform_conv

CONFIGS = [
    # (x shape, kernel, groups, offset_groups, settings)
    ((2, 6, 7, 4), (3, 3), 1, 1, {}),
    ((1, 7, 6, 4), (3, 2), 2, 2, dict(stride=2, padding=1)),
    ((2, 8, 8, 6), (3, 3), 3, 2, dict(dilation=2, padding="SAME")),
    ((1, 5, 9, 6), (2, 3), 2, 3, dict(stride=(1, 2), dilation=(2, 1), padding=((2, 0), (1, 3)))),
    ((1, 4, 4, 2), (1, 1), 1, 2, dict(padding="VALID")),
]


# deform_conv and cross_correlate jitted: one program per shape and setting instead of
# op-by-op dispatch, which compiled each primitive (~5x the time). The eager path is
# test_jit's reference and test_errors'.
_STATIC = ("stride", "padding", "dilation", "groups", "offset_groups")
_deform = jax.jit(deform_conv, static_argnames=_STATIC)
_cross_correlate = jax.jit(cnnjax.cross_correlate, static_argnames=_STATIC[:4])


def _out_shape(x_shape, kernel, settings):
  _, _, _, out = ref_geometry(x_shape[1:3], kernel, **settings)
  return (x_shape[0], *out)


def _case(x_shape, kernel, groups, og, settings, *, seed=0, c_out=4, spread=2.0):
  """x, w, offsets (fractional, some far outside the input) and a mask."""
  rng = np.random.default_rng(seed)
  c_out = groups * 2 if groups > 1 else c_out
  x = rng.normal(size=x_shape)
  w = rng.normal(size=(*kernel, x_shape[-1] // groups, c_out))
  out = _out_shape(x_shape, kernel, settings)
  taps = kernel[0] * kernel[1]
  offsets = rng.normal(scale=spread, size=(*out, og * taps * 2))
  mask = rng.uniform(-0.5, 1.5, size=(*out, og * taps))
  return x, w, offsets, mask


# ------------------------------------------------------------- values


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("modulated", [False, True])
def test_float64_equals_the_papers_formula(config, modulated):
  x_shape, kernel, groups, og, settings = config
  x, w, offsets, mask = _case(*config)
  mask = mask if modulated else None
  kwargs = dict(settings, groups=groups, offset_groups=og)
  got = _deform(x, w, offsets, mask=mask, **kwargs)
  assert got.dtype == jnp.float64
  assert_close(got, ref_deform_conv(x, w, offsets, mask, **kwargs), np.float64)


@pytest.mark.parametrize("config", CONFIGS)
def test_zero_offsets_and_unit_mask_are_cross_correlate(config):
  x_shape, kernel, groups, og, settings = config
  x, w, offsets, mask = _case(*config)
  kwargs = dict(settings, groups=groups)
  want = _cross_correlate(x, w, **kwargs)
  zeros, ones = np.zeros_like(offsets), np.ones_like(mask)
  assert_close(_deform(x, w, zeros, offset_groups=og, **kwargs), want, np.float64)
  assert_close(_deform(x, w, zeros, mask=ones, offset_groups=og, **kwargs), want, np.float64)
  # NaN/inf too: at integer positions a sample reads one pixel, as a tap of the conv does.
  x = x.copy()
  x[0, 1, 2, 0], x[0, -1, -1, -1], x[-1, 0, 0, 1] = np.nan, np.inf, -np.inf
  got = np.asarray(_deform(x, w, zeros, offset_groups=og, **kwargs))
  want = np.asarray(_cross_correlate(x, w, **kwargs))
  np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
  np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
  np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
  assert np.isnan(got).any()


def test_an_integer_shift_is_a_shifted_cross_correlate():
  # Every tap moved by (dy, dx) = (1, -2): the conv of x shifted up 1 and right 2 with
  # zeros coming in, i.e. the pair's order is (dy, dx).
  rng = np.random.default_rng(1)
  x, w = rng.normal(size=(2, 7, 8, 3)), rng.normal(size=(3, 3, 3, 5))
  offsets = np.tile(np.array([1.0, -2.0]), (2, 5, 6, 9))
  shifted = np.zeros_like(x)
  shifted[:, :-1, 2:] = x[:, 1:, :-2]
  assert_close(_deform(x, w, offsets), _cross_correlate(shifted, w), np.float64)


def test_taps_are_row_major_and_offset_groups_come_first():
  rng = np.random.default_rng(2)
  x, w = rng.normal(size=(1, 6, 6, 4)), rng.normal(size=(2, 2, 4, 3))
  offsets = np.zeros((1, 5, 5, 2, 4, 2))
  # Offset group 1 (channels 2, 3): tap 1 = (0, 1) moves by (1, -1) onto tap 2 = (1, 0).
  offsets[..., 1, 1, :] = (1.0, -1.0)
  got = _deform(x, w, offsets.reshape(1, 5, 5, 16), offset_groups=2)
  moved = w.copy()
  moved[1, 0, 2:] += moved[0, 1, 2:]
  moved[0, 1, 2:] = 0
  assert_close(got, _cross_correlate(x, moved), np.float64)


def test_the_mask_scales_its_tap():
  rng = np.random.default_rng(3)
  x, w = rng.normal(size=(1, 5, 5, 2)), rng.normal(size=(3, 3, 2, 2))
  mask = np.ones((1, 3, 3, 9))
  mask[..., 4] = 0.25  # the centre tap
  scaled = w.copy()
  scaled[1, 1] *= 0.25
  got = _deform(x, w, np.zeros((1, 3, 3, 18)), mask=mask)
  assert_close(got, _cross_correlate(x, scaled), np.float64)


def _one_sample(x, dy, dx):
  """deform_conv of a 1×1 identity kernel at output (0, 0) with offset (dy, dx)."""
  offsets = np.zeros((1, *x.shape[1:3], 2))
  offsets[0, 0, 0] = (dy, dx)
  return np.asarray(_deform(x, np.ones((1, 1, 1, 1)), offsets))[0, 0, 0, 0]


def test_the_boundary_rule_is_torchvisions():
  # A sample inside (−1, H) × (−1, W) interpolates its in-range corners with zeros
  # outside; a sample on or beyond −1 or H reads 0.
  x = np.arange(1.0, 13.0).reshape(1, 3, 4, 1)
  assert _one_sample(x, -0.25, 0.0) == 0.75 * x[0, 0, 0, 0]
  assert _one_sample(x, -0.5, -0.5) == 0.25 * x[0, 0, 0, 0]
  assert _one_sample(x, 2.5, 3.0) == 0.5 * x[0, 2, 3, 0]
  assert _one_sample(x, 1.5, 2.25) == (
      0.5 * 0.75 * (x[0, 1, 2, 0] + x[0, 2, 2, 0]) + 0.5 * 0.25 * (x[0, 1, 3, 0] + x[0, 2, 3, 0])
  )
  for dy, dx in [(-1.0, 0.0), (0.0, -1.0), (3.0, 0.0), (0.0, 4.0), (-7.5, 1.0), (1.0, 1e6)]:
    assert _one_sample(x, dy, dx) == 0.0, (dy, dx)
  for dy, dx in [(np.inf, 0.0), (-np.inf, 0.0), (0.0, np.inf), (0.0, -np.inf)]:
    assert _one_sample(x, dy, dx) == 0.0, (dy, dx)


def test_batch_zero():
  x, w, offsets, mask = _case((0, 5, 5, 2), (3, 3), 1, 1, {})
  assert _deform(x, w, offsets, mask=mask).shape == (0, 3, 3, 4)


# --------------------------------------------------------- non-finite values


def test_a_nan_input_reaches_the_outputs_that_weigh_it_nonzero():
  x = np.ones((1, 6, 6, 1))
  x[0, 3, 2, 0] = np.nan
  w = np.ones((3, 3, 1, 1))
  for shift in (0.0, 0.5, 0.25, -1.0):
    offsets = np.full((1, 4, 4, 18), shift)
    got = np.asarray(_deform(x, w, offsets))[0, :, :, 0]
    want = ref_deform_conv(x, w, offsets)[0, :, :, 0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"shift {shift}")
    np.testing.assert_array_equal(got[~np.isnan(got)], want[~np.isnan(want)])
  # At zero offsets the 3×3 outputs of cross_correlate. Half a pixel down-right, a tap
  # with window origin + tap position b reads b and b + 1 with weight ½ each, so pixel
  # (3, 2) reaches the outputs (i, j) with i + k_h ∈ {2, 3} and j + k_w ∈ {1, 2}: 4 rows
  # (i = 0…3) and 3 columns (j = 0…2) of the 4×4 output.
  nan_at = lambda shift: np.isnan(_deform(x, w, np.full((1, 4, 4, 18), shift))).sum()
  assert (nan_at(0.0), nan_at(0.5)) == (9, 12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nonfinite_offsets_and_mask(dtype):
  rng = np.random.default_rng(4)
  x, w = rng.normal(size=(1, 5, 5, 4)), rng.normal(size=(3, 3, 2, 4))
  offsets = rng.normal(size=(1, 3, 3, 36))
  mask = rng.uniform(size=(1, 3, 3, 18))
  offsets[0, 0, 1, 5] = np.nan  # offset group 0, tap 2's dx
  offsets[0, 2, 2, 18] = np.inf  # offset group 1, tap 0's dy: a sample outside, 0
  offsets[0, 1, 0, 3] = -np.inf
  mask[0, 2, 0, 10] = np.nan
  mask[0, 1, 1, 3] = np.inf
  kwargs = dict(groups=2, offset_groups=2)
  args = [a.astype(dtype) for a in (x, w, offsets, mask)]
  got = np.asarray(_deform(*args[:3], mask=args[3], **kwargs), np.float64)
  want = np.asarray(
      ref_deform_conv(*[np.asarray(a, np.float64) for a in args], **kwargs), np.float64
  )
  for test in (np.isnan, np.isposinf, np.isneginf):
    np.testing.assert_array_equal(test(got), test(want), err_msg=test.__name__)
  # Offset group g holds the channels of feature group g here: NaN in outputs 2g, 2g + 1.
  assert np.isnan(got[0, 0, 1, :2]).all() and not np.isnan(got[0, 0, 1, 2:]).any()
  assert np.isnan(got[0, 2, 0, 2:]).all() and not np.isnan(got[0, 2, 0, :2]).any()
  assert np.isfinite(got[0, 2, 2]).all() and np.isfinite(got[0, 1, 0]).all()
  finite = np.isfinite(want)
  assert_close(np.where(finite, got, 0), np.where(finite, want, 0), dtype)


# -------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_low_precision_is_float64_rounded(dtype):
  x_shape, kernel, groups, og, settings = CONFIGS[2]
  x, w, offsets, mask = _case(*CONFIGS[2])
  kwargs = dict(settings, groups=groups, offset_groups=og)
  low = [jnp.asarray(a, dtype) for a in (x, w, offsets, mask)]
  got = _deform(*low[:3], mask=low[3], **kwargs)
  assert got.dtype == dtype
  high = [np.asarray(a, np.float64) for a in low]
  want = _deform(*high[:3], mask=high[3], **kwargs)
  assert_close(got, want, dtype)


def test_integer_input_takes_the_kernels_dtype():
  x = np.arange(2 * 5 * 5 * 2).reshape(2, 5, 5, 2).astype(np.int32)
  w = np.ones((3, 3, 2, 1), np.float32)
  offsets = np.full((2, 3, 3, 18), 0.5, np.float32)
  got = _deform(x, w, offsets)
  assert got.dtype == jnp.float32
  assert_close(got, ref_deform_conv(x, w, offsets), np.float32)


def test_jit():
  x, w, offsets, mask = _case(*CONFIGS[1])
  f = jax.jit(functools.partial(deform_conv, stride=2, padding=1, groups=2, offset_groups=2))
  want = deform_conv(x, w, offsets, mask=mask, stride=2, padding=1, groups=2, offset_groups=2)
  assert_close(f(x, w, offsets, mask=mask), want, np.float64)


# ----------------------------------------------------------- gradients


def _off_integer(rng, shape):
  """Offsets whose sample positions stay ≥ 0.2 from integers (bilinear sampling is not
  differentiable there) and from the bounds −1, H, W."""
  return rng.integers(-2, 3, size=shape) + rng.uniform(0.2, 0.8, size=shape)


@pytest.mark.parametrize("config", [CONFIGS[0], CONFIGS[1], CONFIGS[3]])
def test_gradients_in_every_argument(config):
  x_shape, kernel, groups, og, settings = config
  x, w, _, mask = _case(*config)
  offsets = _off_integer(np.random.default_rng(5), _case(*config)[2].shape)
  kwargs = dict(settings, groups=groups, offset_groups=og)
  f = jax.jit(lambda x, w, offsets, mask: deform_conv(x, w, offsets, mask=mask, **kwargs))
  check_grads(f, (x, w, offsets, mask), order=1, modes=("fwd", "rev"))
  check_grads(lambda x, w, o: f(x, w, o, None), (x, w, offsets), order=1, modes=("rev",))


def test_gradients_against_finite_differences_of_the_reference():
  x_shape, kernel, groups, og, settings = CONFIGS[1]
  x, w, _, mask = _case(*CONFIGS[1])
  rng = np.random.default_rng(6)
  offsets = _off_integer(rng, _case(*CONFIGS[1])[2].shape)
  kwargs = dict(settings, groups=groups, offset_groups=og)
  ct = rng.normal(size=_deform(x, w, offsets, mask=mask, **kwargs).shape)
  args = [x, w, offsets, mask]
  grads = jax.jit(
      jax.grad(
          lambda *a: jnp.sum(deform_conv(*a[:3], mask=a[3], **kwargs) * ct), argnums=(0, 1, 2, 3)
      )
  )(*args)
  loss = lambda a: float(np.sum(ref_deform_conv(*a, **kwargs) * ct))
  eps = 1e-6
  for i, g in enumerate(grads):
    for flat in rng.choice(args[i].size, size=6, replace=False):
      plus, minus = [a.copy() for a in args], [a.copy() for a in args]
      plus[i].reshape(-1)[flat] += eps
      minus[i].reshape(-1)[flat] -= eps
      want = (loss(plus) - loss(minus)) / (2 * eps)
      np.testing.assert_allclose(np.asarray(g).reshape(-1)[flat], want, rtol=1e-6, atol=1e-6)


def test_the_offset_gradient_at_integer_positions_is_the_derivative_from_above():
  # Zero offsets (a freshly initialised DeformConv): the gradient is the one-sided
  # derivative towards ⌊P⌋ + 1, as torchvision's; it must not lose the corner of weight 0.
  rng = np.random.default_rng(7)
  x, w = rng.normal(size=(1, 5, 6, 2)), rng.normal(size=(3, 3, 2, 3))
  offsets = np.zeros((1, 5, 6, 18))
  ct = rng.normal(size=(1, 5, 6, 3))
  g = jax.jit(jax.grad(lambda o: jnp.sum(deform_conv(x, w, o, padding=1) * ct)))(offsets)
  loss = lambda o: np.sum(ref_deform_conv(x, w, o, padding=1) * ct)
  eps = 1e-7
  for flat in rng.choice(offsets.size, size=12, replace=False):
    step = offsets.copy()
    step.reshape(-1)[flat] = eps
    want = (loss(step) - loss(offsets)) / eps
    np.testing.assert_allclose(np.asarray(g).reshape(-1)[flat], want, rtol=1e-5, atol=1e-6)
  assert np.count_nonzero(np.asarray(g)) > g.size // 2


# --------------------------------------------------------------- errors


def test_errors():
  x, w = np.ones((1, 5, 5, 4)), np.ones((3, 3, 4, 2))
  off = np.zeros((1, 3, 3, 18))
  with pytest.raises(ValueError, match=r"deform_conv: x has shape \(5, 5, 4\) \(rank 3\)"):
    deform_conv(x[0], w, off)
  with pytest.raises(ValueError, match=r"deform_conv: w has shape \(3, 4, 2\) \(rank 3\).*2-D"):
    deform_conv(x, w[0], off)
  with pytest.raises(ValueError, match=r"deform_conv: w has shape \(1, 3, 3, 4, 2\) \(rank 5\)"):
    deform_conv(x[:, None], w[None], off)
  with pytest.raises(ValueError, match=r"deform_conv: offsets has shape \(1, 3, 3, 9\); expected"):
    deform_conv(x, w, off[..., :9])
  with pytest.raises(
      ValueError, match=r"offsets has shape \(1, 3, 3, 18\); expected \(1, 3, 3, 36\)"
  ):
    deform_conv(x, w, off, offset_groups=2)
  with pytest.raises(ValueError, match=r"deform_conv: mask has shape \(1, 3, 3, 18\)"):
    deform_conv(x, w, off, mask=np.ones((1, 3, 3, 18)))
  with pytest.raises(ValueError, match="deform_conv: offset_groups got 3, which does not divide"):
    deform_conv(x, w, np.zeros((1, 3, 3, 54)), offset_groups=3)
  with pytest.raises(ValueError, match="deform_conv: offset_groups got 0"):
    deform_conv(x, w, off, offset_groups=0)
  with pytest.raises(ValueError, match="deform_conv: the kernel's out_channels"):
    deform_conv(x, np.ones((3, 3, 2, 3)), off, groups=2)
  with pytest.raises(ValueError, match="deform_conv: channel mismatch"):
    deform_conv(x, np.ones((3, 3, 3, 2)), off)
  with pytest.raises(ValueError, match="deform_conv: stride got 0"):
    deform_conv(x, w, off, stride=0)
  with pytest.raises(ValueError, match="deform_conv: padding got 'HALF'"):
    deform_conv(x, w, off, padding="HALF")
  with pytest.raises(ValueError, match="deform_conv: the effective kernel size 5"):
    deform_conv(np.ones((1, 3, 3, 4)), w, off, dilation=2)
  with pytest.raises(TypeError, match="deform_conv: x and w have dtypes int32 and int32"):
    deform_conv(x.astype(np.int32), w.astype(np.int32), off)
  with pytest.raises(TypeError, match="deform_conv: offsets has dtype bool"):
    deform_conv(x, w, off.astype(bool))
  with pytest.raises(TypeError, match="deform_conv: mask has dtype complex"):
    deform_conv(x, w, off, mask=np.ones((1, 3, 3, 9), np.complex64))


def test_gradients_at_a_layers_size():
  # A layer's size in float32 against float64 (a sum over the 2×2 window's axes crashed
  # XLA:CPU here, jaxlib 0.10.2: see cnnjax/deform.py's _samples).
  rng = np.random.default_rng(8)
  x, w = rng.normal(size=(2, 32, 32, 64)), rng.normal(size=(3, 3, 64, 8)) / 24
  offsets, mask = rng.normal(size=(2, 32, 32, 18)), rng.uniform(size=(2, 32, 32, 9))
  ct = rng.normal(size=(2, 32, 32, 8))

  def grads(dtype):
    f = lambda *a: jnp.vdot(deform_conv(*a[:3], mask=a[3], padding=1), ct.astype(dtype))
    args = [jnp.asarray(a, dtype) for a in (x, w, offsets, mask)]
    return jax.jit(jax.grad(f, argnums=(0, 1, 2, 3)))(*args)

  for got, want in zip(grads(jnp.float32), grads(jnp.float64), strict=True):
    assert got.dtype == jnp.float32
    assert_close(got, want, np.float32)
