"""Tests for max_pool(..., return_indices=True) and cnnjax.unpool.max_unpool against
PyTorch's conventions written out in NumPy (tests/references.py)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import cnnjax
from cnnjax.pooling import max_pool
from cnnjax.unpool import max_unpool
from tests.references import ref_max_pool_indices, ref_max_unpool, ref_pool

_CASES = (
    dict(testcase_name="1d", x=(2, 9, 3), window=2, config={}),
    dict(testcase_name="2d", x=(2, 6, 7, 2), window=2, config={}),
    dict(
        testcase_name="2d_overlap_same",
        x=(2, 7, 6, 2),
        window=3,
        config=dict(stride=2, padding="SAME"),
    ),
    dict(
        testcase_name="2d_padded_rect",
        x=(1, 5, 6, 3),
        window=(3, 2),
        config=dict(stride=(1, 2), padding=((1, 1), (1, 0))),
    ),
    dict(testcase_name="2d_large_overlapping", x=(1, 12, 12, 1), window=9, config=dict(stride=3)),
    dict(testcase_name="2d_large_disjoint", x=(1, 18, 9, 2), window=9, config={}),
    dict(testcase_name="3d", x=(1, 4, 5, 4, 2), window=2, config=dict(padding="SAME")),
)


def _random(shape, seed):
  return np.random.default_rng(seed).standard_normal(shape)


class IndicesTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*_CASES)
  def test_indices_match_torch_convention(self, x, window, config):
    xv = _random(x, 0)
    y, idx = self.variant(
        functools.partial(max_pool, window=window, return_indices=True, **config)
    )(xv)
    stride = config.get("stride")
    padding = config.get("padding", "VALID")
    assert idx.dtype == jnp.int32 and idx.shape == y.shape
    np.testing.assert_array_equal(idx, ref_max_pool_indices(xv, window, stride, padding))
    np.testing.assert_array_equal(y, ref_pool(xv, window, stride, padding, "max"))
    # The index points at the maximum.
    flat = xv.reshape(x[0], -1, x[-1])
    np.testing.assert_array_equal(
        np.take_along_axis(flat, np.asarray(idx).reshape(x[0], -1, x[-1]), 1).reshape(y.shape), y
    )

  def test_ties_take_the_first_and_padding_never_wins(self):
    x = jnp.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [-jnp.inf, -jnp.inf, 2.0]])
    _, idx = max_pool(x.reshape(1, 3, 3, 1), 2, stride=1, padding=1, return_indices=True)
    idx = np.asarray(idx[0, :, :, 0])
    # Window (0, 0) covers only x[0, 0]; (0, 1) covers x[0, 0:2] → first tie 0;
    # (3, 0) covers x[2, 0] = -inf only (padding ties) → a real position, 6.
    assert idx[0, 0] == 0 and idx[0, 1] == 0 and idx[3, 0] == 6
    assert idx[3, 3] == 8 and idx[2, 2] == 8
    assert np.all((idx >= 0) & (idx < 9))

  def test_integer_input(self):
    xv = np.random.default_rng(1).integers(-9, 9, (2, 6, 6, 2)).astype(np.int32)
    y, idx = max_pool(xv, 3, stride=2, return_indices=True)
    assert y.dtype == jnp.int32
    np.testing.assert_array_equal(idx, ref_max_pool_indices(xv, 3, 2, "VALID"))

  def test_gradient_unchanged(self):
    xv = _random((2, 6, 6, 2), 2)
    g1 = jax.grad(lambda x: jnp.sum(max_pool(x, 2) ** 2))(xv)
    g2 = jax.grad(lambda x: jnp.sum(max_pool(x, 2, return_indices=True)[0] ** 2))(xv)
    np.testing.assert_array_equal(g1, g2)

  def test_return_indices_must_be_bool(self):
    with pytest.raises(TypeError, match="max_pool: return_indices got 1"):
      max_pool(jnp.ones((1, 4, 4, 1)), 2, return_indices=1)


class UnpoolTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*_CASES)
  def test_matches_torch_rule(self, x, window, config):
    xv = _random(x, 3)
    y, idx = max_pool(xv, window, return_indices=True, **config)
    got = self.variant(functools.partial(max_unpool, output_shape=x))(y, idx)
    np.testing.assert_array_equal(got, ref_max_unpool(y, idx, x))

  def test_round_trip_keeps_the_maxima(self):
    xv = np.abs(_random((2, 6, 8, 3), 4)) + 0.1  # positive, so the zeros never win
    y, idx = max_pool(xv, 2, return_indices=True)
    up = np.asarray(max_unpool(y, idx, xv.shape))
    # Every 2×2 block holds its maximum in place and zeros elsewhere.
    blocks = up.reshape(2, 3, 2, 4, 2, 3)
    assert np.all((blocks != 0).sum(axis=(2, 4)) == 1)
    np.testing.assert_array_equal(up[up != 0], xv[up != 0])
    np.testing.assert_array_equal(max_pool(up, 2), y)

  def test_gradient_is_the_gather(self):
    xv = _random((1, 4, 4, 2), 5)
    y, idx = max_pool(xv, 2, return_indices=True)
    v = _random(xv.shape, 6)
    grad = jax.grad(lambda y: jnp.sum(max_unpool(y, idx, xv.shape) * v))(y)
    flat = v.reshape(1, -1, 2)
    want = np.take_along_axis(flat, np.asarray(idx).reshape(1, -1, 2), 1).reshape(y.shape)
    np.testing.assert_array_equal(grad, want)

  def test_errors(self):
    y, idx = jnp.ones((1, 2, 2, 3)), jnp.zeros((1, 2, 2, 3), jnp.int32)
    with pytest.raises(ValueError, match="max_unpool: indices has shape"):
      max_unpool(y, idx[..., :2], (1, 4, 4, 3))
    with pytest.raises(TypeError, match="max_unpool: indices has dtype float"):
      max_unpool(y, idx.astype(jnp.float32), (1, 4, 4, 3))
    with pytest.raises(ValueError, match="max_unpool: output_shape got"):
      max_unpool(y, idx, (1, 4, 4, 2))
    with pytest.raises(ValueError, match="max_unpool: output_shape got"):
      max_unpool(y, idx, (4, 4, 3))
    with pytest.raises(ValueError, match="max_unpool: y has shape"):
      max_unpool(jnp.ones((2, 2)), jnp.zeros((2, 2), jnp.int32), (2, 2))
    assert max_unpool(y, idx, (np.int64(1), 4, 4, 3)).shape == (1, 4, 4, 3)

  def test_exported(self):
    assert cnnjax.max_unpool is max_unpool
