"""Tests for cnnjax.adaptive_pool against PyTorch's bin rule written out in NumPy
(tests/references.py)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import cnnjax
from cnnjax.adaptive_pool import adaptive_avg_pool, adaptive_bins, adaptive_max_pool
from tests.references import assert_close, ref_adaptive_pool, ref_pool

_CASES = (
    dict(testcase_name="1d_5_to_3", x=(2, 5, 3), out=3),
    dict(testcase_name="1d_upsample", x=(1, 3, 2), out=7),
    dict(testcase_name="2d_mixed", x=(2, 7, 10, 3), out=(3, 4)),
    dict(testcase_name="2d_none", x=(1, 6, 5, 2), out=(4, None)),
    dict(testcase_name="2d_global", x=(2, 5, 6, 2), out=1),
    dict(testcase_name="3d", x=(1, 5, 4, 6, 2), out=(2, 3, 4)),
)


def _random(shape, seed):
  return np.random.default_rng(seed).standard_normal(shape)


class ReferenceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*_CASES)
  def test_avg_matches_torch_rule(self, x, out):
    xv = _random(x, 0)
    got = self.variant(functools.partial(adaptive_avg_pool, output_size=out))(xv)
    want = ref_adaptive_pool(xv, out, "avg")
    assert got.shape == want.shape and got.dtype == jnp.float64
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*_CASES)
  def test_max_matches_torch_rule(self, x, out):
    xv = _random(x, 1)
    got = self.variant(functools.partial(adaptive_max_pool, output_size=out))(xv)
    want = ref_adaptive_pool(xv, out, "max")
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)

  def test_bins(self):
    assert adaptive_bins(5, 3) == [(0, 2), (1, 4), (3, 5)]
    assert adaptive_bins(10, 4) == [(0, 3), (2, 5), (5, 8), (7, 10)]
    assert adaptive_bins(4, 4) == [(0, 1), (1, 2), (2, 3), (3, 4)]

  def test_divisible_sizes_are_plain_pooling(self):
    xv = _random((2, 8, 12, 3), 2)
    np.testing.assert_allclose(
        adaptive_avg_pool(xv, (4, 3)), ref_pool(xv, (2, 4), None, "VALID", "avg"), atol=1e-12
    )
    np.testing.assert_array_equal(
        adaptive_max_pool(xv, (4, 3)), ref_pool(xv, (2, 4), None, "VALID", "max")
    )
    np.testing.assert_array_equal(adaptive_max_pool(xv, (8, 12)), xv)

  @parameterized.parameters(np.float32, jnp.bfloat16)
  def test_low_precision_against_float64(self, dtype):
    xv = jnp.asarray(_random((2, 9, 7, 3), 3), dtype)
    xr = np.asarray(xv, np.float64)
    got = adaptive_avg_pool(xv, (4, 3))
    assert got.dtype == dtype
    assert_close(got, ref_adaptive_pool(xr, (4, 3), "avg"), dtype)
    got = adaptive_max_pool(xv, (4, 3))
    assert got.dtype == dtype
    np.testing.assert_array_equal(np.asarray(got, np.float64), ref_adaptive_pool(xr, (4, 3), "max"))

  def test_integer_max(self):
    xv = np.random.default_rng(4).integers(-50, 50, (2, 5, 5, 2)).astype(np.int32)
    got = adaptive_max_pool(xv, 3)
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(got, ref_adaptive_pool(xv, 3, "max"))

  def test_max_gradient_goes_to_the_first_maximum(self):
    # One bin [0, 3) x [0, 3) of a 3×3 input pooled to 2×2 covers rows 0-1, cols 0-1;
    # the bins overlap at row/col 1. Ties: the first maximum in row-major order wins.
    x = jnp.array([[1.0, 5, 5], [5, 0, 2], [3, 3, 3]]).reshape(1, 3, 3, 1)
    grad = jax.grad(lambda x: jnp.sum(adaptive_max_pool(x, 2)))(x)[0, :, :, 0]
    # Bins: (rows 0-1, cols 0-1) → (0,1); (rows 0-1, cols 1-2) → (0,1);
    # (rows 1-2, cols 0-1) → (1,0); (rows 1-2, cols 1-2) → (2,1) (first 3 of row 2 at
    # col 1, since row 1's max 2 < 3).
    want = np.zeros((3, 3))
    want[0, 1] = 2
    want[1, 0] = 1
    want[2, 1] = 1
    np.testing.assert_array_equal(grad, want)

  def test_avg_gradient(self):
    x = jnp.zeros((1, 5, 1))
    grad = jax.grad(lambda x: jnp.sum(adaptive_avg_pool(x, 3)))(x)[0, :, 0]
    # Bins [0,2), [1,4), [3,5): 1/2, 1/2 + 1/3, 1/3, 1/3 + 1/2, 1/2.
    np.testing.assert_allclose(grad, [1 / 2, 5 / 6, 1 / 3, 5 / 6, 1 / 2])

  def test_exported(self):
    assert cnnjax.adaptive_avg_pool is adaptive_avg_pool
    assert cnnjax.adaptive_max_pool is adaptive_max_pool


class ErrorTest(parameterized.TestCase):

  @parameterized.parameters(
      dict(out=0, match="output_size got 0"),
      dict(out=(2, 2, 2), match=r"output_size got \(2, 2, 2\) \(3 entries\)"),
      dict(out="2", match="output_size got '2'"),
      dict(out=(2, 1.5), match="output_size got"),
  )
  def test_bad_output_size(self, out, match):
    for f in (adaptive_avg_pool, adaptive_max_pool):
      with pytest.raises(ValueError, match=f"{f.__name__}: {match}"):
        f(jnp.ones((1, 4, 4, 1)), out)

  def test_bad_input(self):
    with pytest.raises(ValueError, match="adaptive_avg_pool: x has shape"):
      adaptive_avg_pool(jnp.ones((4, 4)), 2)
    with pytest.raises(TypeError, match="adaptive_avg_pool: x has dtype int32"):
      adaptive_avg_pool(jnp.ones((1, 4, 1), jnp.int32), 2)
    with pytest.raises(TypeError, match="adaptive_max_pool: x has dtype bool"):
      adaptive_max_pool(jnp.ones((1, 4, 1), bool), 2)
    assert adaptive_max_pool(jnp.ones((1, 4, 1)), np.int64(2)).shape == (1, 2, 1)


@pytest.mark.parametrize(
    "spatial, output_size",
    [((2,), (None,)), ((5,), 3), ((3,), 7), ((1, 2), (None, None)), ((4, 5), (3, 2)), ((3, 3), 3)],
)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("op, kind", [(adaptive_avg_pool, "avg"), (adaptive_max_pool, "max")])
def test_a_nonfinite_input_reaches_only_the_bins_that_hold_it(
    spatial, output_size, value, op, kind
):
  # The average was a matrix product with the bins' 0/1 weights: 0 * nan = nan reached
  # every bin of the row (adaptive_avg_pool of [nan, 1] gave [nan, nan]).
  sizes = output_size if isinstance(output_size, tuple) else (output_size,) * len(spatial)
  for flat in range(int(np.prod(spatial))):
    x = np.ones((1, *spatial, 2))
    x[(0, *np.unravel_index(flat, spatial), 0)] = value
    want = ref_adaptive_pool(x, sizes, kind)
    for dtype in (np.float64, np.float32):
      with jax.enable_x64(dtype == np.float64):
        got = np.asarray(op(x.astype(dtype), output_size), np.float64)
      np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{flat} {dtype}")
      np.testing.assert_array_equal(got[np.isinf(want)], want[np.isinf(want)])
      finite = np.isfinite(want)
      np.testing.assert_allclose(got[finite], want[finite], rtol=1e-6)
