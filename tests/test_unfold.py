"""Tests for cnnjax.unfold: unfold (im2col) against a NumPy loop and the convolution, fold
against the NumPy scatter and as unfold's adjoint."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from cnnjax.unfold import fold, unfold
from tests.references import assert_close, ref_correlate, ref_fold, ref_unfold

_CASES = (
    dict(testcase_name="1d", x=(2, 9, 3), k=3, config={}),
    dict(testcase_name="1d_stride_drops", x=(2, 10, 2), k=(3,), config=dict(stride=3)),
    dict(
        testcase_name="2d_same_strided", x=(2, 7, 6, 3), k=3, config=dict(stride=2, padding="SAME")
    ),
    dict(
        testcase_name="2d_dilated_pairs",
        x=(1, 8, 7, 2),
        k=(2, 3),
        config=dict(padding=((2, 1), (0, 3)), dilation=(2, 1), stride=(1, 2)),
    ),
    dict(
        testcase_name="2d_circular",
        x=(2, 5, 5, 2),
        k=3,
        config=dict(padding="SAME", padding_mode="circular"),
    ),
    dict(
        testcase_name="2d_reflect",
        x=(1, 6, 5, 2),
        k=(3, 2),
        config=dict(padding=2, padding_mode="reflect"),
    ),
    dict(
        testcase_name="3d_edge",
        x=(1, 4, 4, 3, 2),
        k=2,
        config=dict(padding="SAME", padding_mode="edge"),
    ),
)


def _random(shape, seed):
  return np.random.default_rng(seed).standard_normal(shape)


def _zeros_only(config):
  return {k: v for k, v in config.items() if k != "padding_mode"}


class UnfoldTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*_CASES)
  def test_matches_the_loop(self, x, k, config):
    xv = _random(x, 0)
    got = self.variant(functools.partial(unfold, kernel_size=k, **config))(xv)
    want = ref_unfold(xv, k, **config)
    assert got.shape == want.shape
    np.testing.assert_array_equal(got, want)

  @parameterized.named_parameters(*_CASES)
  def test_times_the_kernel_is_the_correlation(self, x, k, config):
    nd = len(x) - 2
    kernel = (k,) * nd if isinstance(k, int) else k
    xv, w = _random(x, 1), _random((*kernel, x[-1], 4), 2)
    got = unfold(xv, k, **config) @ w.reshape(-1, 4)
    np.testing.assert_allclose(got, ref_correlate(xv, w, **config), atol=1e-12)

  @parameterized.parameters(np.float32, jnp.bfloat16, np.complex64, np.int32)
  def test_keeps_the_dtype_and_copies_exactly(self, dtype):
    xv = jnp.asarray(_random((2, 5, 6, 3), 3) * 10, dtype)
    got = unfold(xv, 3, padding="SAME")
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, ref_unfold(np.asarray(xv), 3, padding="SAME"))

  def test_docstring_example(self):
    np.testing.assert_array_equal(
        unfold(jnp.arange(4.0).reshape(1, 4, 1), 2)[0], [[0, 1], [1, 2], [2, 3]]
    )


class FoldTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*_CASES)
  def test_matches_the_scatter(self, x, k, config):
    config = _zeros_only(config)
    p_shape = jax.eval_shape(
        functools.partial(unfold, kernel_size=k, **config), jax.ShapeDtypeStruct(x, jnp.float64)
    ).shape
    p = _random(p_shape, 4)
    got = self.variant(functools.partial(fold, output_shape=x, kernel_size=k, **config))(p)
    np.testing.assert_allclose(got, ref_fold(p, x, k, **config), atol=1e-12)

  @parameterized.named_parameters(*_CASES)
  def test_is_the_adjoint_of_unfold(self, x, k, config):
    config = _zeros_only(config)
    xv = _random(x, 5)
    px = unfold(xv, k, **config)
    p = _random(px.shape, 6)
    np.testing.assert_allclose(jnp.vdot(px, p), jnp.vdot(xv, fold(p, x, k, **config)), rtol=1e-12)

  def test_overlap_counts(self):
    # fold(unfold(1)) counts the windows covering each position.
    x = jnp.ones((1, 5, 4, 1))
    counts = fold(unfold(x, (3, 2)), x.shape, (3, 2))[0, :, :, 0]
    rows, cols = np.array([1, 2, 3, 2, 1]), np.array([1, 2, 2, 1])
    np.testing.assert_array_equal(counts, np.outer(rows, cols))

  def test_complex(self):
    p = _random((2, 4, 4, 9 * 3), 8) + 1j * _random((2, 4, 4, 9 * 3), 9)
    got = fold(p, (2, 6, 6, 3), 3)
    assert got.dtype == jnp.complex128
    np.testing.assert_allclose(got, ref_fold(p, (2, 6, 6, 3), 3), atol=1e-12)

  @parameterized.parameters(np.float32, jnp.bfloat16)
  def test_low_precision_against_float64(self, dtype):
    p = _random((2, 4, 4, 9 * 3), 7)
    got = fold(jnp.asarray(p, dtype), (2, 6, 6, 3), 3)
    assert got.dtype == dtype
    pr = np.asarray(jnp.asarray(p, dtype), np.float64)
    assert_close(got, ref_fold(pr, (2, 6, 6, 3), 3), dtype)

  def test_docstring_example(self):
    np.testing.assert_array_equal(fold(jnp.ones((1, 3, 2)), (1, 4, 1), 2)[0, :, 0], [1, 2, 2, 1])


class ErrorTest(parameterized.TestCase):

  def test_unfold_errors(self):
    with pytest.raises(ValueError, match="unfold: x has shape"):
      unfold(jnp.ones((5, 5)), 3)
    with pytest.raises(ValueError, match="unfold: kernel_size got"):
      unfold(jnp.ones((1, 5, 5, 1)), (3, 3, 3))
    with pytest.raises(ValueError, match="unfold: padding_mode got"):
      unfold(jnp.ones((1, 5, 5, 1)), 3, padding_mode="wrap")
    with pytest.raises(ValueError, match="unfold: the effective kernel size"):
      unfold(jnp.ones((1, 2, 5, 1)), 3)
    with pytest.raises(TypeError, match="unfold: x has dtype bool"):
      unfold(jnp.ones((1, 5, 5, 1), bool), 3)

  def test_fold_errors(self):
    p = jnp.ones((1, 3, 3, 9))
    with pytest.raises(ValueError, match="fold: output_shape got"):
      fold(p, (5, 5, 1), 3)
    with pytest.raises(ValueError, match="fold: output_shape got"):
      fold(p, (1, 5, 0, 1), 3)
    with pytest.raises(
        ValueError, match=r"fold: p has shape \(1, 3, 3, 9\); expected \(1, 4, 4, 9\)"
    ):
      fold(p, (1, 6, 6, 1), 3)
    assert fold(p, (np.int64(1), 5, 5, 1), 3).shape == (1, 5, 5, 1)
