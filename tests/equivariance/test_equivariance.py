"""Tests of cnnjax.equivariance: the transforms, errors, assertions, helpers, strategies.

Item 8 of issue 3: the tools pass on equivariant functions and catch planted
violations (a position-dependent bias, a one-pixel offset, a stride mismatch) with a
message that states the error, the tolerance and the location.
"""

import inspect
import itertools
import re

import chex
import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnjax import equivariance as eq
from cnnjax.conv import cross_correlate
from cnnjax.equivariance import (
    assert_equivariant,
    assert_invariant,
    compose,
    equivariance_error,
    flip,
    interior_region,
    invariance_error,
    output_shift,
    rot90,
    shift_consistency,
    translate,
    transpose,
)

SETTINGS = settings(max_examples=12, deadline=None, derandomize=True)


def _rng(seed=0):
  return np.random.default_rng(seed)


def _circular_conv(w, **kw):
  return lambda x: cross_correlate(x, w, padding="SAME", padding_mode="circular", **kw)


def _zeros_translate_reference(x, shift):
  """NumPy loops: out[n] = x[n − shift] where that index exists, else 0."""
  out = np.zeros_like(x)
  spatial = x.shape[1:-1]
  for n in itertools.product(*(range(s) for s in spatial)):
    src = tuple(i - s for i, s in zip(n, shift, strict=True))
    if all(0 <= j < size for j, size in zip(src, spatial, strict=True)):
      out[(slice(None), *n, slice(None))] = x[(slice(None), *src, slice(None))]
  return out


# ---------------------------------------------------------------------------------------
# Transforms.


class TransformTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(
      ((5,), 2),
      ((5,), -7),
      ((4, 6), (1, -2)),
      ((4, 6), 3),
      ((3, 4, 5), (0, 5, -1)),
  )
  def test_translate_matches_numpy(self, spatial, shift):
    x = _rng().standard_normal((2, *spatial, 3))
    shifts = (shift,) * len(spatial) if isinstance(shift, int) else shift
    circular = self.variant(translate(shift))(x)
    np.testing.assert_array_equal(
        circular, np.roll(x, shifts, axis=tuple(range(1, len(spatial) + 1)))
    )
    zeros = self.variant(translate(shift, mode="zeros"))(x)
    np.testing.assert_array_equal(zeros, _zeros_translate_reference(x, shifts))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters((0,), (1,), (-1,), (2,))
  def test_flip_matches_numpy(self, axis):
    x = _rng().standard_normal((2, 3, 4, 5, 2))
    np.testing.assert_array_equal(self.variant(flip(axis))(x), np.flip(x, 1 + axis % 3))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters((0,), (1,), (2,), (3,), (-1,), (5,))
  def test_rot90_matches_numpy(self, k):
    x = _rng().standard_normal((2, 3, 4, 2))
    np.testing.assert_array_equal(self.variant(rot90(k))(x), np.rot90(x, k, axes=(1, 2)))

  @chex.variants(with_jit=True, without_jit=True)
  def test_transpose_matches_numpy(self):
    x = _rng().standard_normal((2, 3, 4, 5, 2))
    np.testing.assert_array_equal(self.variant(transpose())(x), np.swapaxes(x, 1, 2))

  def test_compose_applies_in_the_given_order(self):
    x = _rng().standard_normal((1, 4, 4, 1))
    g1, g2 = translate((1, 0), mode="zeros"), flip(0)
    np.testing.assert_array_equal(compose(g1, g2)(x), g2(g1(x)))
    assert not np.array_equal(compose(g1, g2)(x), compose(g2, g1)(x))
    np.testing.assert_array_equal(compose(flip(1), transpose())(x), rot90(1)(x))
    np.testing.assert_array_equal(compose()(x), x)
    np.testing.assert_array_equal(compose(jnp.negative, g2)(x), -np.flip(x, 1))
    np.testing.assert_array_equal(jax.jit(compose(g1, g2))(x), g2(g1(x)))

  def test_group_relations(self):
    x = _rng().standard_normal((1, 3, 5, 2))
    np.testing.assert_array_equal(compose(rot90(1), rot90(-1))(x), x)
    np.testing.assert_array_equal(rot90(4)(x), x)
    np.testing.assert_array_equal(compose(translate((2, -3)), translate((-2, 3)))(x), x)
    np.testing.assert_array_equal(compose(rot90(), rot90())(x), compose(flip(0), flip(1))(x))

  def test_on_kernel(self):
    w = _rng().standard_normal((2, 3, 4, 5))
    np.testing.assert_array_equal(flip(1).on_kernel(w), np.flip(w, 1))
    np.testing.assert_array_equal(rot90(3).on_kernel(w), np.rot90(w, 3, axes=(0, 1)))
    np.testing.assert_array_equal(transpose().on_kernel(w), np.swapaxes(w, 0, 1))
    np.testing.assert_array_equal(translate((1, 2)).on_kernel(w), w)
    np.testing.assert_array_equal(
        compose(flip(0), translate(1), rot90()).on_kernel(w), np.rot90(np.flip(w, 0), axes=(0, 1))
    )

  def test_repr_names_the_transform(self):
    assert repr(translate((1, 2), mode="zeros")) == "translate((1, 2), mode='zeros')"
    assert repr(compose(flip(0), rot90(2))) == "compose(flip(0), rot90(2))"

  def test_errors(self):
    x2 = jnp.zeros((1, 4, 4, 1))
    x1 = jnp.zeros((1, 4, 1))
    with pytest.raises(ValueError, match="mode got 'reflect'"):
      translate(1, mode="reflect")
    with pytest.raises(ValueError, match="shift got 1.5"):
      translate(1.5)
    with pytest.raises(ValueError, match=r"shift got \(1, 2, 3\) \(3 values\).*2 spatial"):
      translate((1, 2, 3))(x2)
    with pytest.raises(ValueError, match=r"translate.*x has shape \(4, 4\)"):
      translate(1)(jnp.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"flip: axis got 2 .*2 spatial dim"):
      flip(2)(x2)
    with pytest.raises(TypeError, match="axis got 0.5"):
      flip(0.5)
    with pytest.raises(TypeError, match="k got"):
      rot90(1.0)
    with pytest.raises(ValueError, match="rot90: x has 1 spatial dim"):
      rot90()(x1)
    with pytest.raises(ValueError, match="transpose: x has 1 spatial dim"):
      transpose()(x1)
    with pytest.raises(TypeError, match=r"compose: gs\[1\] got 3"):
      compose(flip(0), 3)
    with pytest.raises(TypeError, match=r"gs\[0\].*no kernel counterpart"):
      compose(jnp.negative).on_kernel(jnp.zeros((3, 3, 1, 1)))
    with pytest.raises(ValueError, match="on_kernel: w has shape"):
      flip(0).on_kernel(jnp.zeros((3, 3)))


# ---------------------------------------------------------------------------------------
# Errors and assertions.


class ErrorTest(chex.TestCase):

  def test_equivariance_error_value(self):
    x = _rng().standard_normal((2, 5, 6, 3))
    identity = lambda a: a
    rolled = np.roll(x, (1, 1), axis=(1, 2))
    expected = np.linalg.norm(rolled - x) / np.linalg.norm(x)
    self.assertAlmostEqual(
        equivariance_error(identity, x, translate(1), identity), expected, places=12
    )
    self.assertAlmostEqual(invariance_error(identity, x, translate(1)), expected, places=12)
    assert equivariance_error(identity, x, translate(1)) == 0.0

  def test_region_slices_and_mask(self):
    x = _rng().standard_normal((2, 5, 6, 3))
    f = lambda a: a * jnp.arange(6.0)[None, None, :, None] ** 2  # position-dependent
    g = translate((0, 1))
    full_test, full_ref = np.asarray(f(g(x))), np.asarray(g(f(x)))
    region = (slice(1, 4), slice(2, 6, 2))
    sel = (slice(None), *region, slice(None))
    expected = np.linalg.norm((full_test - full_ref)[sel]) / np.linalg.norm(full_ref[sel])
    self.assertAlmostEqual(equivariance_error(f, x, g, region=region), expected, places=12)
    mask = np.zeros((5, 6), bool)
    mask[region] = True
    self.assertAlmostEqual(equivariance_error(f, x, g, region=mask), expected, places=12)
    self.assertAlmostEqual(
        equivariance_error(f, x, g, region=jnp.asarray(mask)), expected, places=12
    )
    self.assertAlmostEqual(
        equivariance_error(f, x, g, region=(slice(1, 4),)),
        np.linalg.norm((full_test - full_ref)[:, 1:4]) / np.linalg.norm(full_ref[:, 1:4]),
        places=12,
    )

  def test_zero_reference(self):
    x = jnp.ones((1, 4, 1))
    assert equivariance_error(lambda a: 0 * a, x, translate(1)) == 0.0
    assert equivariance_error(lambda a: a, x, translate(1, mode="zeros"), lambda a: 0 * a) == float(
        "inf"
    )

  @chex.variants(with_jit=True, without_jit=True)
  @hypothesis.settings(max_examples=6, deadline=None, derandomize=True)
  @given(
      problem=eq.conv_problems(stride=1, padding=("SAME", "VALID"), padding_mode=("circular",)),
      shift=st.tuples(st.integers(-4, 4), st.integers(-4, 4)),
  )
  def test_passes_on_circular_conv(self, problem, shift):
    x, w, kw = problem
    f = self.variant(lambda x: jax.nn.relu(cross_correlate(x, w, **kw)))
    if kw["padding"] == "SAME":
      assert_equivariant(f, x, translate(shift))
    assert equivariance_error(lambda a: jnp.tanh(a) ** 2, x, translate(shift)) == 0.0

  @parameterized.parameters(flip(0), flip(1), rot90(1), rot90(2), transpose())
  def test_passes_on_pointwise_maps(self, g):
    x = _rng().standard_normal((2, 5, 5, 3))
    assert_equivariant(jax.nn.gelu, x, g)
    assert_invariant(lambda a: a.max(axis=(1, 2)), x, g)

  def test_float32_and_bfloat16_defaults(self):
    w = _rng(1).standard_normal((3, 3, 2, 4)).astype(np.float32)
    x = _rng(2).standard_normal((2, 8, 8, 2)).astype(np.float32)
    assert_equivariant(_circular_conv(w), x, translate((3, 2)))  # float32 round-off passes
    noisy = lambda a: a * (1 + 1e-4 * jnp.linspace(0, 1, a.shape[1])[None, :, None, None]).astype(
        a.dtype
    )
    with pytest.raises(AssertionError, match="float32 default"):
      assert_equivariant(noisy, x, translate(1))
    assert_equivariant(noisy, x.astype(jnp.bfloat16), translate(1))  # below bfloat16's 1e-2
    assert_equivariant(noisy, x, translate(1), rtol=1e-3)
    assert eq.default_tolerance(jnp.float64) == (1e-10, 0.0)
    assert eq.default_tolerance(jnp.float32) == (1e-5, 0.0)
    assert eq.default_tolerance(jnp.bfloat16) == (1e-2, 0.0)
    assert eq.default_tolerance(jnp.int32) == (0.0, 0.0)

  def test_atol(self):
    x = jnp.zeros((1, 4, 4, 1))
    tiny = lambda a: a + 1e-9 * jnp.arange(4.0)[None, :, None, None]
    with pytest.raises(AssertionError):
      assert_equivariant(tiny, x, translate(1))
    assert_equivariant(tiny, x, translate(1), atol=1e-8)


def _message(fn):
  with pytest.raises(AssertionError) as info:
    fn()
  return str(info.value)


def _largest(test, ref):
  diff = np.abs(np.asarray(test) - np.asarray(ref))
  index = np.unravel_index(np.argmax(diff), diff.shape)
  return tuple(int(i) for i in index), diff[index]


class PlantedViolationTest(chex.TestCase):
  """The helpers catch violations and say how large they are and where."""

  def setUp(self):
    super().setUp()
    self.x = _rng(3).standard_normal((2, 7, 6, 2))
    self.w = _rng(4).standard_normal((3, 3, 2, 3))
    self.conv = _circular_conv(self.w)

  def _check_message(self, message, relative_error, index, test, ref):
    assert re.search(r"relative error \d\.\d{3}e[+-]\d\d", message), message
    reported = float(re.search(r"relative error (\S+) ", message).group(1))
    assert reported == pytest.approx(relative_error, rel=1e-3)
    assert f"at index {index}" in message, message
    assert f"= {test:.6g}" in message and f"= {ref:.6g}" in message, message
    assert "Tolerance: max|difference| <= atol + rtol" in message, message

  def test_position_dependent_bias(self):
    bias = 0.01 * _rng(5).standard_normal((7, 6, 3))
    f = lambda a: self.conv(a) + bias[None]
    g = translate((2, 1))
    assert_equivariant(self.conv, self.x, g)
    message = _message(lambda: assert_equivariant(f, self.x, g))
    test, ref = f(g(self.x)), g(f(self.x))
    index, _ = _largest(test, ref)
    self._check_message(message, equivariance_error(f, self.x, g), index, test[index], ref[index])

  def test_one_pixel_offset(self):
    g, off_by_one = translate((2, 1)), translate((3, 1))
    message = _message(lambda: assert_equivariant(self.conv, self.x, g, off_by_one))
    test, ref = self.conv(g(self.x)), off_by_one(self.conv(self.x))
    index, _ = _largest(test, ref)
    self._check_message(
        message,
        equivariance_error(self.conv, self.x, g, off_by_one),
        index,
        test[index],
        ref[index],
    )
    assert equivariance_error(self.conv, self.x, g, off_by_one) > 0.5

  def test_stride_mismatch(self):
    x = _rng(6).standard_normal((2, 8, 8, 2))
    f = _circular_conv(self.w, stride=2)
    layers = [(3, 2)]
    g = translate(2)
    assert_equivariant(f, x, g, translate(output_shift(2, layers)))
    message = _message(lambda: assert_equivariant(f, x, g))  # output moved by 1, not 2
    test, ref = f(g(x)), g(f(x))
    index, _ = _largest(test, ref)
    self._check_message(message, equivariance_error(f, x, g), index, test[index], ref[index])
    with pytest.raises(ValueError, match=r"output_shift: shift got 1, .*jump\) 2"):
      output_shift(1, layers)
    # A one-pixel input shift has no output counterpart at all.
    out = f(x).shape[1:3]
    for k in itertools.product(*(range(n) for n in out)):
      assert equivariance_error(f, x, translate(1), translate(k)) > 0.1

  def test_single_position_violation_is_located(self):
    scale = np.ones((1, 7, 6, 1))
    scale[0, 4, 2, 0] = 1.5
    f = lambda a: a * scale
    g = translate((1, 0))
    message = _message(lambda: assert_equivariant(f, self.x, g))
    index, _ = _largest(f(g(self.x)), g(f(self.x)))
    assert index[1:3] in ((4, 2), (5, 2)), index
    assert f"at index {index}" in message

  def test_region_excludes_the_border(self):
    f = lambda a: cross_correlate(a, self.w, padding="SAME")  # zero padding
    g = translate((1, -2), mode="zeros")
    with pytest.raises(AssertionError, match="whole output"):
      assert_equivariant(f, self.x, g)
    region = interior_region((7, 6), [(3, 1)], shift=(1, -2))
    assert_equivariant(f, self.x, g, region=region)
    mask = np.zeros((7, 6), bool)
    mask[region] = True
    assert_equivariant(f, self.x, g, region=mask)
    mask[0, 0] = True
    message = _message(lambda: assert_equivariant(f, self.x, g, region=mask))
    assert "compared region" in message and re.search(
        r"at index \(\d, 0, 0, \d\)", message
    ), message

  def test_assert_invariant(self):
    gap = lambda a: jnp.mean(jax.nn.relu(self.conv(a)), axis=(1, 2))
    assert_invariant(gap, self.x, translate((3, -2)))
    corner = lambda a: self.conv(a)[:, 0, 0, :]
    message = _message(lambda: assert_invariant(corner, self.x, translate(1)))
    assert "f(g(x)) != f(x)" in message and "at index (" in message
    assert f"{invariance_error(corner, self.x, translate(1)):.3e}" in message

  def test_argument_errors(self):
    x = jnp.ones((1, 4, 4, 1))
    ident = lambda a: a
    with pytest.raises(
        ValueError,
        match=(
            r"f\(g_in\(x\)\) has shape \(1, 4, 4, 1\) "
            r"but g_out\(f\(x\)\) has shape \(1, 2, 2, 1\)"
        ),
    ):
      assert_equivariant(ident, x, ident, lambda a: a[:, ::2, ::2])
    with pytest.raises(ValueError, match="region got"):
      equivariance_error(ident, x, ident, region=(1, 2))
    with pytest.raises(ValueError, match="region got"):
      equivariance_error(ident, x, ident, region=(slice(None),) * 3)
    with pytest.raises(ValueError, match=r"region got an array of shape \(3, 4\)"):
      equivariance_error(ident, x, ident, region=np.ones((3, 4), bool))
    with pytest.raises(ValueError, match="region got.*selects no output position"):
      equivariance_error(ident, x, ident, region=(slice(2, 2),))
    with pytest.raises(ValueError, match="region got.*no spatial axes"):
      invariance_error(lambda a: a.sum(axis=(1, 2)), x, ident, region=(slice(0, 1),))
    with pytest.raises(ValueError, match="rtol got -1"):
      assert_equivariant(ident, x, ident, rtol=-1)
    with pytest.raises(ValueError, match="atol got 'a'"):
      assert_invariant(ident, x, ident, atol="a")
    with pytest.raises(TypeError, match="f got 3"):
      equivariance_error(3, x, ident)
    with pytest.raises(TypeError, match="g_in got None"):
      assert_equivariant(ident, x, None)
    with pytest.raises(TypeError, match="g got None"):
      assert_invariant(ident, x, None)
    with pytest.raises(TypeError, match="g_out got 1"):
      equivariance_error(ident, x, ident, 1)


# ---------------------------------------------------------------------------------------
# Regions and output shifts of conv stacks.


@st.composite
def _stacks(draw, num_spatial):
  """A random zero-padded stack: layers, paddings, input size and a shift."""
  num_layers = draw(st.integers(1, 3))
  layers, paddings = [], []
  for _ in range(num_layers):
    layers.append((draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))))
    paddings.append(draw(st.sampled_from(["SAME", "VALID", "FULL", 1])))
  step = int(np.prod([s for _, s, _ in layers]))
  sizes = tuple(draw(st.integers(16, 22)) for _ in range(num_spatial))
  shift = tuple(step * draw(st.integers(-2, 2)) for _ in range(num_spatial))
  return layers, paddings, sizes, shift


def _stack_fn(layers, paddings, weights):
  def f(x):
    for i, ((_k, s, t), pad, w) in enumerate(zip(layers, paddings, weights, strict=True)):
      x = cross_correlate(x, w, stride=s, dilation=t, padding=pad)
      x = jnp.tanh(x) if i < len(layers) - 1 else x
    return x

  return f


class RegionTest(chex.TestCase):

  @SETTINGS
  @given(stack=_stacks(2), seed=st.integers(0, 2**16), mode=st.sampled_from(["circular", "zeros"]))
  def test_interior_region_is_exact(self, stack, seed, mode):
    layers, paddings, sizes, shift = stack
    rng = _rng(seed)
    weights = [rng.standard_normal((k, k, 2, 2)) for k, _, _ in layers]
    f = jax.jit(_stack_fn(layers, paddings, weights))
    x = rng.standard_normal((1, *sizes, 2))
    try:
      region = interior_region(sizes, layers, shift=shift, padding=paddings)
    except ValueError as e:  # a border reaching every output: the helper says so
      assert "no output position" in str(e)
      hypothesis.assume(False)
    k = output_shift(shift, layers)
    assert_equivariant(f, x, translate(shift, mode=mode), translate(k, mode=mode), region=region)

  @SETTINGS
  @given(
      num_layers=st.integers(1, 3),
      kernel=st.integers(2, 3),
      n=st.integers(12, 16),
      shift=st.integers(-3, 3).filter(bool),
      pad=st.sampled_from(["SAME", "VALID", "FULL"]),
      seed=st.integers(0, 2**16),
  )
  def test_interior_region_is_tight_for_contiguous_stacks(
      self, num_layers, kernel, n, shift, pad, seed
  ):
    """Stride 1, no dilation, circular input shift: the positions just outside differ."""
    layers, paddings = [(kernel, 1)] * num_layers, [pad] * num_layers
    rng = _rng(seed)
    weights = [rng.standard_normal((kernel, 1, 1)) for _ in layers]
    f = _stack_fn([(kernel, 1, 1)] * num_layers, paddings, weights)
    x = rng.standard_normal((1, n, 1))
    (region,) = interior_region((n,), layers, shift=shift, padding=paddings)
    test, ref = np.asarray(f(translate(shift)(x))), np.asarray(translate(shift)(f(x)))
    np.testing.assert_allclose(test[:, region], ref[:, region], rtol=1e-12, atol=1e-12)
    for m in (region.start - 1, region.stop):
      if 0 <= m < test.shape[1]:
        assert abs(test[0, m, 0] - ref[0, m, 0]) > 1e-9, (m, region)

  def test_interior_region_values(self):
    assert interior_region((16, 16), [(3, 1), (3, 1)], shift=(2, -1)) == (
        slice(4, 14),
        slice(2, 13),
    )
    # VALID padding, no shift: the whole output. FULL: only where no padding reaches.
    assert interior_region((10,), [(3, 1)], padding="VALID") == (slice(0, 8),)
    assert interior_region((10,), [(3, 1)], padding="FULL") == (slice(2, 10),)
    # Stride 2 (SAME pads (0, 1) for n = 10, k = 3): positions 0..3 use x[0..8] only.
    assert interior_region((10,), [(3, 2)]) == (slice(0, 4),)
    assert interior_region((10,), [(3, 2)], shift=2) == (slice(1, 4),)
    # Per-dim layer entries.
    assert interior_region((8, 8), [((3, 1), 1)], shift=(1, 1)) == (slice(2, 7), slice(1, 8))

  def test_output_shift(self):
    assert output_shift(4, [(3, 2), (3, 1), (2, 2)]) == 1
    assert output_shift(-6, [(3, 3)]) == -2
    assert output_shift((2, 0), [(3, (2, 1))]) == (1, 0)
    assert output_shift((4, 6), [(3, 2)]) == (2, 3)
    assert output_shift(5, []) == 5

  def test_errors(self):
    with pytest.raises(ValueError, match=r"interior_region: shift got 1, .*jump\) 2"):
      interior_region((8,), [(3, 2)], shift=1)
    with pytest.raises(ValueError, match=r"no output position in spatial dim 0.*larger in_spatial"):
      interior_region((6,), [(3, 1)] * 3, shift=2)
    with pytest.raises(ValueError, match="padding got a list of 1 specs for 2 layers"):
      interior_region((8,), [(3, 1), (3, 1)], padding=["SAME"])
    with pytest.raises(ValueError, match=r"layers\[1\] got \(3,\)"):
      interior_region((8,), [(3, 1), (3,)])
    with pytest.raises(ValueError, match=r"layers\[0\] got \(0, 1\)"):
      output_shift(1, [(0, 1)])
    with pytest.raises(ValueError, match="layers got 3"):
      output_shift(1, 3)
    with pytest.raises(ValueError, match=r"in_spatial got \(8, 8\).*layers have 3"):
      interior_region((8, 8), [((3, 3, 3), 1)])
    with pytest.raises(ValueError, match=r"shift got \(1, 2, 3\)"):
      interior_region((8, 8), [(3, 1)], shift=(1, 2, 3))
    with pytest.raises(ValueError, match=r"shift got \(1, 2\).*layers have 3"):
      output_shift((1, 2), [((3, 3, 3), 1)])
    with pytest.raises(ValueError, match="in_spatial got 8"):
      interior_region(8, [(3, 1)])
    with pytest.raises(ValueError, match="padding got 'HALF'"):
      interior_region((8,), [(3, 1)], padding="HALF")
    with pytest.raises(ValueError, match="shift got 'a'"):
      output_shift("a", [(3, 1)])


# ---------------------------------------------------------------------------------------
# Hypothesis strategies.


class StrategyTest(chex.TestCase):

  @SETTINGS
  @given(x=eq.images(num_spatial=3, batch=(1, 3), size=(2, 4), channels=2, dtype=np.float32))
  def test_images(self, x):
    assert x.dtype == np.float32 and x.ndim == 5
    assert 1 <= x.shape[0] <= 3 and all(2 <= s <= 4 for s in x.shape[1:4]) and x.shape[-1] == 2

  @SETTINGS
  @given(x=eq.images(size=(3, 6), square=True), w=eq.kernels(size=(1, 4), odd=True, in_channels=3))
  def test_square_and_odd(self, x, w):
    assert x.shape[1] == x.shape[2] and x.dtype == np.float64
    assert all(k % 2 == 1 for k in w.shape[:2]) and w.shape[2] == 3

  @SETTINGS
  @given(
      problem=eq.conv_problems(
          num_spatial=1, size=(3, 5), kernel_size=(2, 3), padding=("VALID", "SAME", "FULL")
      )
  )
  def test_conv_problems_are_consistent(self, problem):
    x, w, kw = problem
    assert set(kw) == {"stride", "dilation", "padding", "padding_mode"}
    assert all(s in (1, 2) for s in kw["stride"]) and len(kw["dilation"]) == 1
    assert x.shape[-1] == w.shape[-2]
    y = cross_correlate(x, w, **kw)  # the kernel fits
    assert y.shape[0] == x.shape[0] and y.shape[-1] == w.shape[-1]

  def test_errors(self):
    with pytest.raises(ValueError, match=r"images: size got \(5, 3\)"):
      eq.images(size=(5, 3))
    with pytest.raises(ValueError, match="kernels: size got 2 with odd=True"):
      eq.kernels(size=2, odd=True)
    with pytest.raises(ValueError, match="conv_settings: stride got 0"):
      eq.conv_settings(stride=0)
    with pytest.raises(ValueError, match="padding_mode got 'wrap'"):
      eq.conv_settings(padding_mode=("wrap",))
    with pytest.raises(ValueError, match="padding got 'SAME'"):
      eq.conv_settings(padding="SAME")


# ---------------------------------------------------------------------------------------
# Shift consistency.


class ShiftConsistencyTest(chex.TestCase):

  def test_invariant_classifier_is_fully_consistent(self):
    x = _rng().standard_normal((16, 8, 8, 3))
    gap = lambda a: jnp.mean(a, axis=(1, 2))  # logits [N, 3]
    assert shift_consistency(gap, x, max_shift=3, key=jax.random.key(0)) == 1.0
    positional = lambda a: jnp.argmax(a[..., 0].reshape(a.shape[0], -1), axis=-1)
    assert shift_consistency(positional, x, max_shift=0, key=jax.random.key(0)) == 1.0

  @parameterized.parameters(("circular",), ("zeros",))
  def test_matches_the_drawn_shifts(self, mode):
    """Delta images: the predicted class is the shifted position, so shifts are visible."""
    n, size, p, max_shift = 64, 9, (4, 4), (2, 1)
    x = np.zeros((n, size, size, 1))
    x[:, p[0], p[1], 0] = 1.0
    seen = []

    def predict(a):
      cls = jnp.argmax(a[..., 0].reshape(a.shape[0], -1), axis=-1)
      seen.append(np.stack(np.unravel_index(np.asarray(cls), (size, size)), -1) - np.asarray(p))
      return cls

    value = shift_consistency(predict, x, max_shift=max_shift, key=jax.random.key(1), mode=mode)
    s1, s2 = seen
    for s in (s1, s2):
      assert (np.abs(s) <= np.asarray(max_shift)).all()
      assert {-2, 2} <= set(s[:, 0].tolist()) and set(s[:, 1].tolist()) == {-1, 0, 1}
    assert value == pytest.approx(np.mean((s1 == s2).all(-1)))
    assert 0 < value < 0.5

  def test_zeros_mode_fills_with_zeros(self):
    x = np.ones((32, 6, 6, 1))
    count = lambda a: jnp.round(a.sum(axis=(1, 2, 3))).astype(jnp.int32)  # class = pixels left
    assert shift_consistency(count, x, max_shift=2, key=jax.random.key(2)) == 1.0
    assert shift_consistency(count, x, max_shift=2, key=jax.random.key(2), mode="zeros") < 0.5

  def test_errors(self):
    x = jnp.ones((4, 6, 6, 1))
    ok = lambda a: a.sum(axis=(1, 2))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="max_shift got -1"):
      shift_consistency(ok, x, max_shift=-1, key=key)
    with pytest.raises(ValueError, match=r"max_shift got \(1, 2, 3\)"):
      shift_consistency(ok, x, max_shift=(1, 2, 3), key=key)
    with pytest.raises(ValueError, match="mode got 'edge'"):
      shift_consistency(ok, x, max_shift=1, key=key, mode="edge")
    with pytest.raises(ValueError, match=r"predict_fn returned shape \(4, 6, 6, 1\)"):
      shift_consistency(lambda a: a, x, max_shift=1, key=key)
    with pytest.raises(ValueError, match=r"images has shape \(6, 6\)"):
      shift_consistency(ok, jnp.ones((6, 6)), max_shift=1, key=key)
    with pytest.raises(TypeError, match="predict_fn got"):
      shift_consistency(None, x, max_shift=1, key=key)


def test_optional_arguments_are_keyword_only():
  """Arrays and callables positional, configuration keyword-only (dm-pix's api_test)."""
  allowed = {("rot90", "k"), ("equivariance_error", "g_out"), ("assert_equivariant", "g_out")}
  for name in eq.__all__:
    obj = getattr(eq, name)
    if not inspect.isfunction(obj):
      continue
    for param in inspect.signature(obj).parameters.values():
      if param.default is not inspect.Parameter.empty and (name, param.name) not in allowed:
        assert param.kind in (param.KEYWORD_ONLY, param.VAR_KEYWORD), (name, param.name)
