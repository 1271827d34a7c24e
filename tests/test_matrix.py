"""Tests for cnnjax.matrix.conv_matrix: the dense matrix of a cross-correlation.

References (tests/references.py): ``jax.jacfwd`` of ``lax.conv_general_dilated`` (the
Jacobian of a linear map is its matrix), ``scipy.linalg.toeplitz`` / ``circulant`` for
the 1-D and 2-D structure, and the NumPy adjoint loop for the transpose.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

import cnnjax
from cnnjax.matrix import conv_matrix
from tests.references import (
    assert_close,
    circulant_1d,
    doubly_block_toeplitz,
    ref_conv_matrix,
    ref_correlate,
    ref_correlate_adjoint,
    toeplitz_1d,
)

_CASES = (
    dict(testcase_name="1d", x=(7, 2), w=(3, 2, 3), config={}),
    dict(
        testcase_name="1d_same_stride", x=(8, 3), w=(3, 3, 2), config=dict(stride=2, padding="SAME")
    ),
    dict(
        testcase_name="2d_full_dilated",
        x=(5, 4, 2),
        w=(2, 3, 2, 2),
        config=dict(padding="FULL", dilation=(2, 1)),
    ),
    dict(
        testcase_name="2d_groups_pairs",
        x=(6, 5, 4),
        w=(3, 2, 2, 6),
        config=dict(padding=((2, 0), (1, 1)), stride=(1, 2), groups=2),
    ),
    dict(
        testcase_name="2d_circular",
        x=(5, 5, 2),
        w=(3, 3, 2, 3),
        config=dict(padding="SAME", padding_mode="circular"),
    ),
    dict(
        testcase_name="2d_reflect_strided",
        x=(6, 5, 1),
        w=(3, 3, 1, 2),
        config=dict(padding=2, stride=2, padding_mode="reflect"),
    ),
    dict(
        testcase_name="2d_edge_depthwise",
        x=(4, 5, 3),
        w=(3, 2, 1, 6),
        config=dict(padding="SAME", groups=3, padding_mode="edge"),
    ),
    dict(testcase_name="3d", x=(3, 4, 3, 2), w=(2, 2, 2, 2, 2), config=dict(padding=1)),
)


def _random(shape, seed, dtype=np.float64):
  rng = np.random.default_rng(seed)
  a = rng.standard_normal(shape)
  if np.issubdtype(dtype, np.complexfloating):
    a = a + 1j * rng.standard_normal(shape)
  return a.astype(dtype)


class ReferenceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*_CASES[::3])
  def test_matches_the_jacobian_jit(self, x, w, config):
    wv = _random(w, 0)
    got = self.variant(functools.partial(conv_matrix, input_shape=x, **config))(wv)
    np.testing.assert_allclose(got, ref_conv_matrix(wv, x, **config), rtol=1e-12, atol=1e-12)

  @parameterized.named_parameters(*_CASES)
  def test_matches_the_jacobian(self, x, w, config):
    wv = _random(w, 0)
    got = conv_matrix(wv, x, **config)
    want = ref_conv_matrix(wv, x, **config)
    assert got.shape == want.shape
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

  @parameterized.named_parameters(*_CASES)
  def test_matrix_times_vector_is_the_loop(self, x, w, config):
    xv, wv = _random((2, *x), 1), _random(w, 2)
    m = np.asarray(conv_matrix(wv, x, **config))
    want = ref_correlate(xv, wv, **config)
    for b in range(2):
      np.testing.assert_allclose(m @ xv[b].reshape(-1), want[b].reshape(-1), atol=1e-12)

  @parameterized.named_parameters(*(c for c in _CASES if "padding_mode" not in c["config"]))
  def test_transpose_is_the_adjoint(self, x, w, config):
    wv, yv = _random(w, 3), None
    m = np.asarray(conv_matrix(wv, x, **config))
    yv = _random((1, *ref_correlate(np.zeros((1, *x)), wv, **config).shape[1:]), 4)
    want = ref_correlate_adjoint(yv, wv, (1, *x), **config)
    np.testing.assert_allclose(m.T @ yv.reshape(-1), want.reshape(-1), atol=1e-12)
    got = cnnjax.conv_transpose(yv, wv, input_shape=x[:-1], **config)
    np.testing.assert_allclose(got.reshape(-1), m.T @ yv.reshape(-1), atol=1e-12)

  @parameterized.parameters(np.float32, jnp.bfloat16)
  def test_low_precision_against_float64(self, dtype):
    w = _random((3, 3, 2, 3), 5)
    got = conv_matrix(jnp.asarray(w, dtype), (5, 4, 2), padding="SAME")
    assert got.dtype == dtype
    # The matrix only copies kernel entries: exact up to the kernel's own rounding.
    want = ref_conv_matrix(np.asarray(jnp.asarray(w, dtype), np.float64), (5, 4, 2), padding="SAME")
    np.testing.assert_array_equal(np.asarray(got, np.float64), want)
    assert_close(got, ref_conv_matrix(w, (5, 4, 2), padding="SAME"), dtype)

  @parameterized.parameters(np.complex64, np.complex128)
  def test_complex(self, dtype):
    w = _random((3, 2, 2, 2), 6, dtype)
    x = _random((2, 5, 4, 2), 7, dtype)
    m = conv_matrix(w, (5, 4, 2), padding="SAME", padding_mode="circular")
    assert m.dtype == dtype
    want = ref_correlate(x, w, padding="SAME", padding_mode="circular")
    got = np.stack([np.asarray(m) @ x[b].reshape(-1) for b in range(2)])
    assert_close(got, want.reshape(2, -1), dtype)
    np.testing.assert_allclose(
        m,
        ref_conv_matrix(w, (5, 4, 2), padding="SAME", padding_mode="circular"),
        rtol=1e-6 if dtype == np.complex64 else 1e-12,
        atol=1e-6,
    )
    # And against cnnjax's own complex cross_correlate.
    y = jax.jit(functools.partial(cnnjax.cross_correlate, padding="SAME", padding_mode="circular"))(
        x, w
    )
    assert_close(got, np.asarray(y).reshape(2, -1), dtype)

  def test_differentiable_in_w(self):
    w, v = _random((3, 1, 2), 8), _random((4 * 2, 6), 9)
    grad = jax.grad(lambda w: jnp.sum(conv_matrix(w, (6, 1)) * v))(w)
    # M[2n + o, j] = w[j − n, 0, o]: the gradient sums v along the diagonals.
    want = np.zeros_like(w)
    for n in range(4):
      for o in range(2):
        for k in range(3):
          want[k, 0, o] += v[2 * n + o, n + k]
    np.testing.assert_allclose(grad, want, atol=1e-12)


class StructureTest(chex.TestCase):
  """The lecture's matrix forms, from scipy.linalg."""

  @parameterized.parameters(
      dict(k=3, n=7, lo=0, hi=0),
      dict(k=3, n=6, lo=1, hi=1),
      dict(k=4, n=5, lo=3, hi=3),
      dict(k=2, n=5, lo=0, hi=1),
  )
  def test_1d_is_toeplitz(self, k, n, lo, hi):
    w = np.arange(1.0, k + 1)
    m = conv_matrix(w.reshape(k, 1, 1), (n, 1), padding=((lo, hi),))
    want = toeplitz_1d(w, n, lo=lo, hi=hi)
    np.testing.assert_array_equal(m, want)
    # Constant along every diagonal.
    for d in range(-m.shape[0] + 1, m.shape[1]):
      assert len(set(np.diagonal(np.asarray(m), d).tolist())) == 1

  @parameterized.parameters(dict(k=3, n=7), dict(k=5, n=6), dict(k=2, n=4))
  def test_1d_circular_is_circulant(self, k, n):
    w = np.arange(1.0, k + 1)
    m = conv_matrix(w.reshape(k, 1, 1), (n, 1), padding="SAME", padding_mode="circular")
    lo = (k - 1) // 2
    np.testing.assert_array_equal(m, circulant_1d(w, n, lo=lo))
    # Every row is the row above it, rotated one place to the right.
    np.testing.assert_array_equal(np.roll(np.asarray(m), 1, axis=1)[:-1], m[1:])

  @parameterized.parameters(dict(h=4, wd=5, kh=2, kw=3), dict(h=5, wd=5, kh=3, kw=3))
  def test_2d_is_doubly_block_toeplitz(self, h, wd, kh, kw):
    w = np.arange(1.0, kh * kw + 1).reshape(kh, kw)
    m = conv_matrix(w.reshape(kh, kw, 1, 1), (h, wd, 1))
    np.testing.assert_array_equal(m, doubly_block_toeplitz(w, h, wd))

  def test_2d_circular_is_block_circulant(self):
    w = _random((3, 3, 1, 1), 10)
    m = np.asarray(conv_matrix(w, (4, 5, 1), padding="SAME", padding_mode="circular"))
    blocks = m.reshape(4, 5, 4, 5).transpose(0, 2, 1, 3)  # [row block, col block, 5, 5]
    for i in range(4):
      for j in range(4):
        np.testing.assert_array_equal(blocks[i, j], blocks[(i + 1) % 4, (j + 1) % 4])
        np.testing.assert_array_equal(  # each block circulant
            np.roll(blocks[i, j], 1, axis=1)[:-1], blocks[i, j][1:]
        )

  def test_docstring_example(self):
    np.testing.assert_array_equal(
        conv_matrix(jnp.array([1.0, 2.0]).reshape(2, 1, 1), (3, 1)),
        [[1, 2, 0], [0, 1, 2]],
    )


class ErrorTest(parameterized.TestCase):

  def test_refuses_a_matrix_over_the_limit(self):
    w = jnp.ones((3, 3, 64, 64), jnp.float32)
    with pytest.raises(
        ValueError, match=r"conv_matrix: input_shape got \(256, 256, 64\).*max_bytes"
    ):
      conv_matrix(w, (256, 256, 64))
    with pytest.raises(ValueError, match="max_bytes"):
      conv_matrix(jnp.ones((3, 1, 1)), (10, 1), max_bytes=100)
    assert conv_matrix(jnp.ones((3, 1, 1)), (10, 1), max_bytes=8 * 80).shape == (8, 10)

  @parameterized.parameters(
      dict(w=(3, 3, 2, 4), input_shape=(5, 5), match="input_shape got"),
      dict(w=(3, 3, 2, 4), input_shape=(5, 5, 0), match="input_shape got"),
      dict(w=(3, 3, 2, 4), input_shape="55", match="input_shape got"),
      dict(w=(3, 3, 2, 4), input_shape=(5, 5, 3), match="channel mismatch"),
      dict(w=(3, 2), input_shape=(5, 2), match="w has shape"),
      dict(w=(3, 3, 2, 4), input_shape=(2, 2, 2), match="larger than the padded input"),
  )
  def test_bad_arguments(self, w, input_shape, match):
    with pytest.raises(ValueError, match=f"conv_matrix: .*{match}"):
      conv_matrix(jnp.ones(w), input_shape)

  def test_bad_settings(self):
    w = jnp.ones((3, 2, 4))
    with pytest.raises(ValueError, match="conv_matrix: padding_mode got 'wrap'"):
      conv_matrix(w, (5, 2), padding_mode="wrap")
    with pytest.raises(ValueError, match="conv_matrix: groups got 0"):
      conv_matrix(w, (5, 2), groups=0)
    with pytest.raises(TypeError, match="conv_matrix: w has dtype bool"):
      conv_matrix(jnp.ones((3, 2, 4), bool), (5, 2))
    # NumPy integers are ints.
    assert conv_matrix(w, (np.int64(5), np.int32(2)), stride=np.int64(2)).shape == (8, 10)
