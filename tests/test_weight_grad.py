"""Tests for cnnjax.weight_grad.conv_weight_grad against ``jax.grad`` of lax's convolution
(tests/references.py) and a hand-computed example."""

import functools

import chex
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from cnnjax.weight_grad import conv_weight_grad
from tests.references import assert_close, ref_geometry, ref_unfold, ref_weight_grad

_CASES = (
    dict(testcase_name="1d", x=(2, 9, 3), w=(3, 3, 2), config={}),
    dict(testcase_name="1d_stride_drops", x=(3, 10, 2), w=(3, 2, 4), config=dict(stride=3)),
    dict(
        testcase_name="2d_same_strided",
        x=(2, 7, 6, 3),
        w=(3, 3, 3, 4),
        config=dict(stride=2, padding="SAME"),
    ),
    dict(
        testcase_name="2d_dilated_pairs",
        x=(2, 8, 7, 2),
        w=(2, 3, 2, 3),
        config=dict(padding=((2, 1), (0, 3)), dilation=(2, 1), stride=(1, 2)),
    ),
    dict(
        testcase_name="2d_groups", x=(3, 6, 6, 4), w=(3, 3, 2, 6), config=dict(padding=1, groups=2)
    ),
    dict(
        testcase_name="2d_depthwise_batch1",
        x=(1, 6, 5, 3),
        w=(3, 3, 1, 6),
        config=dict(padding="SAME", groups=3),
    ),
    dict(
        testcase_name="2d_circular",
        x=(2, 5, 5, 2),
        w=(3, 3, 2, 2),
        config=dict(padding="SAME", padding_mode="circular"),
    ),
    dict(
        testcase_name="2d_reflect_strided",
        x=(2, 7, 6, 2),
        w=(3, 2, 2, 3),
        config=dict(padding=2, stride=2, padding_mode="reflect"),
    ),
    dict(
        testcase_name="3d_edge",
        x=(2, 4, 4, 3, 2),
        w=(2, 2, 2, 2, 2),
        config=dict(padding="SAME", padding_mode="edge"),
    ),
)


def _random(shape, seed):
  return np.random.default_rng(seed).standard_normal(shape)


def _out_shape(x, w, config):
  config = {k: v for k, v in config.items() if k not in ("groups", "padding_mode")}
  out = ref_geometry(x[1:-1], w[:-2], **config)[3]
  return (x[0], *out, w[-1])


class ReferenceTest(chex.TestCase):

  @chex.variants(with_jit=True)
  @parameterized.named_parameters(*_CASES[::3])
  def test_matches_jax_grad_under_jit(self, x, w, config):
    xv = _random(x, 0)
    g = _random(_out_shape(x, w, config), 1)
    got = self.variant(functools.partial(conv_weight_grad, kernel_shape=w, **config))(xv, g)
    np.testing.assert_allclose(got, ref_weight_grad(xv, g, w, **config), rtol=1e-12, atol=1e-12)

  @parameterized.named_parameters(*_CASES)
  def test_matches_jax_grad(self, x, w, config):
    xv = _random(x, 0)
    g = _random(_out_shape(x, w, config), 1)
    got = conv_weight_grad(xv, g, w, **config)
    want = ref_weight_grad(xv, g, w, **config)
    assert got.shape == w
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

  @parameterized.parameters(np.float32, jnp.bfloat16)
  def test_low_precision_against_float64(self, dtype):
    x, w, config = (8, 6, 6, 3), (3, 3, 3, 4), dict()
    xv, g = _random(x, 2), _random(_out_shape(x, w, config), 3)
    got = conv_weight_grad(jnp.asarray(xv, dtype), jnp.asarray(g, dtype), w, **config)
    assert got.dtype == dtype
    # The reference sees the same rounded inputs; the sums are 8·4·4 = 128 products.
    xr = np.asarray(jnp.asarray(xv, dtype), np.float64)
    gr = np.asarray(jnp.asarray(g, dtype), np.float64)
    assert_close(got, ref_weight_grad(xr, gr, w, **config), dtype)

  @parameterized.parameters(np.complex64, np.complex128)
  def test_complex_is_the_im2col_product(self, dtype):
    # dw = P(x)ᵀ g with P the NumPy im2col of x: no conjugation (the bilinear ⟨g, y⟩).
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((2, 6, 5, 2)) + 1j * rng.standard_normal((2, 6, 5, 2))).astype(dtype)
    g = (rng.standard_normal((2, 3, 3, 4)) + 1j * rng.standard_normal((2, 3, 3, 4))).astype(dtype)
    config = dict(stride=(2, 1), padding=((1, 0), (0, 0)), padding_mode="reflect")
    got = conv_weight_grad(x, g, (3, 3, 2, 4), **config)
    assert got.dtype == dtype
    p = ref_unfold(x, (3, 3), **config).reshape(-1, 9 * 2)
    want = (p.T @ g.reshape(-1, 4)).reshape(3, 3, 2, 4)
    assert_close(got, want, dtype)

  def test_lecture_example(self):
    # dw[k] = Σ_n x[n + k] g[n]: x = 0..4, g = 1 everywhere → window sums 3, 6, 9.
    x = jnp.arange(5.0).reshape(1, 5, 1)
    got = conv_weight_grad(x, jnp.ones((1, 3, 1)), (3, 1, 1))
    np.testing.assert_array_equal(got[:, 0, 0], [3.0, 6.0, 9.0])

  def test_empty_batch(self):
    got = conv_weight_grad(jnp.zeros((0, 5, 2)), jnp.zeros((0, 3, 4)), (3, 2, 4))
    np.testing.assert_array_equal(got, np.zeros((3, 2, 4)))


class ErrorTest(parameterized.TestCase):

  @parameterized.parameters(
      dict(x=(2, 5, 2), g=(2, 3, 4), k=(3, 2), match="kernel_shape got"),
      dict(x=(2, 5, 2), g=(2, 3, 4), k=(3, 0, 4), match="kernel_shape got"),
      dict(
          x=(2, 5, 2),
          g=(2, 4, 4),
          k=(3, 2, 4),
          match=r"g has shape \(2, 4, 4\); expected \(2, 3, 4\)",
      ),
      dict(x=(2, 5, 5, 2), g=(2, 3, 4), k=(3, 2, 4), match="x has shape"),
      dict(x=(2, 5, 3), g=(2, 3, 4), k=(3, 2, 4), match="channel mismatch"),
  )
  def test_bad_arguments(self, x, g, k, match):
    with pytest.raises(ValueError, match=f"conv_weight_grad: {match}"):
      conv_weight_grad(jnp.ones(x), jnp.ones(g), k)

  def test_bad_settings(self):
    x, g = jnp.ones((2, 5, 2)), jnp.ones((2, 3, 4))
    with pytest.raises(ValueError, match="conv_weight_grad: padding_mode got 'wrap'"):
      conv_weight_grad(x, g, (3, 2, 4), padding_mode="wrap")
    with pytest.raises(ValueError, match="conv_weight_grad: groups got 0"):
      conv_weight_grad(x, g, (3, 2, 4), groups=0)
    assert conv_weight_grad(x, g, (np.int64(3), 2, 4)).shape == (3, 2, 4)
