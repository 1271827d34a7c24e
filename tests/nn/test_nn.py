"""cnnjax.nn: every module equals its function for the same weights; jit, grad, dtypes,
initialisation, errors. Also the local response normalisation function."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st
from references import ref_lrn

from cnnjax import nn as cnn
from cnnjax.conv import conv_transpose, convolve, cross_correlate
from cnnjax.local import locally_connected
from cnnjax.normalization import local_response_norm
from cnnjax.pooling import (
    avg_pool,
    blur_pool,
    global_avg_pool,
    global_max_pool,
    lp_pool,
    max_pool,
    maxout,
    polyphase_downsample,
)
from cnnjax.tiled import tiled_conv


def _x(shape, seed=0, dtype=jnp.float32):
  # NumPy data: no XLA compilation per shape (this suite is compile-bound on CPU).
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def _init(key, shape, dtype):
  """A NumPy initialiser for tests about values, not about initialisation."""
  seed = int(np.sum(shape)) + len(shape)
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape) * 0.3, dtype)


def _with_random_bias(module, seed=1):
  """Gives a module a non-zero bias, so that a missing bias add would show."""
  if module.bias is not None:
    module.bias[...] = _x(module.bias.shape, seed)
  return module


def _expand(bias, y):
  return y + bias.reshape((1,) * (y.ndim - bias.ndim) + bias.shape)


CONV_CASES = [
    dict(testcase_name="valid", shape=(2, 9, 9, 3), features=4, kernel=3, options={}),
    dict(
        testcase_name="same_stride",
        shape=(2, 9, 9, 3),
        features=4,
        kernel=3,
        options=dict(stride=2, padding="SAME"),
    ),
    dict(
        testcase_name="circular_dilated",
        shape=(1, 9, 8, 2),
        features=3,
        kernel=(3, 2),
        options=dict(padding=2, dilation=2, padding_mode="circular"),
    ),
    dict(
        testcase_name="reflect",
        shape=(1, 7, 7, 2),
        features=2,
        kernel=3,
        options=dict(padding=1, padding_mode="reflect"),
    ),
    dict(
        testcase_name="groups",
        shape=(2, 6, 6, 4),
        features=6,
        kernel=3,
        options=dict(groups=2, padding="FULL"),
    ),
    dict(
        testcase_name="flip_1d",
        shape=(2, 10, 2),
        features=3,
        kernel=(4,),
        options=dict(flip_kernel=True, padding="FULL"),
    ),
    dict(
        testcase_name="3d_no_bias",
        shape=(1, 5, 5, 5, 2),
        features=2,
        kernel=(3, 3, 3),
        options=dict(use_bias=False, stride=(1, 2, 1)),
    ),
]


class ConvModuleTest(parameterized.TestCase):

  @parameterized.named_parameters(*CONV_CASES)
  def test_conv_equals_function(self, shape, features, kernel, options):
    conv = _with_random_bias(
        cnn.Conv(shape[-1], features, kernel, kernel_init=_init, rngs=nnx.Rngs(0), **options)
    )
    x = _x(shape)
    options = dict(options)
    flip = options.pop("flip_kernel", False)
    options.pop("use_bias", None)
    y = (convolve if flip else cross_correlate)(x, conv.kernel[...], **options)
    if conv.bias is not None:
      y = _expand(conv.bias[...], y)
    np.testing.assert_allclose(conv(x), y, rtol=1e-6, atol=1e-6)

  def test_kernel_shape(self):
    conv = cnn.Conv(64, 8, 3, groups=4, kernel_init=_init, rngs=nnx.Rngs(0))
    self.assertEqual(conv.kernel.shape, (3, 3, 16, 8))
    self.assertEqual(conv.bias.shape, (8,))
    self.assertEqual(
        cnn.Conv(4, 8, (5,), use_bias=False, kernel_init=_init, rngs=nnx.Rngs(0)).bias, None
    )

  def test_connection_table_masks_the_kernel(self):
    table = [[1, 0, 1], [0, 1, 1]]
    conv = _with_random_bias(
        cnn.Conv(2, 3, 3, connections=table, kernel_init=_init, rngs=nnx.Rngs(0))
    )
    x = _x((1, 6, 6, 2))
    mask = jnp.asarray(table, jnp.float32)[None, None]
    np.testing.assert_allclose(
        conv(x),
        _expand(conv.bias[...], cross_correlate(x, conv.kernel[...] * mask)),
        rtol=1e-6,
        atol=1e-6,
    )
    # Output map 0 sees input map 0 only: the gradient w.r.t. input map 1 is zero.
    g = jax.grad(lambda x: conv(x)[..., 0].sum())(x)
    self.assertEqual(float(jnp.abs(g[..., 1]).max()), 0.0)
    self.assertGreater(float(jnp.abs(g[..., 0]).max()), 0.0)

  @parameterized.named_parameters(
      dict(testcase_name="stride2", options=dict(stride=2)),
      dict(testcase_name="same_groups", options=dict(padding="SAME", groups=2)),
      dict(testcase_name="input_shape", options=dict(stride=2, input_shape=(12, 12))),
  )
  def test_conv_transpose_equals_function(self, options):
    up = _with_random_bias(
        cnn.ConvTranspose(4, 6, 3, kernel_init=_init, rngs=nnx.Rngs(0), **options)
    )
    self.assertEqual(up.kernel.shape, (3, 3, 6 // options.get("groups", 1), 4))
    y = _x((2, 5, 5, 4))
    expected = _expand(up.bias[...], conv_transpose(y, up.kernel[...], **options))
    np.testing.assert_allclose(up(y), expected, rtol=1e-6, atol=1e-6)

  def test_conv_transpose_is_the_adjoint_of_conv(self):
    # ConvTranspose(a, b) with Conv(b, a)'s kernel is Conv's input-gradient.
    conv = cnn.Conv(3, 5, 3, stride=2, use_bias=False, kernel_init=_init, rngs=nnx.Rngs(0))
    up = cnn.ConvTranspose(
        5, 3, 3, stride=2, use_bias=False, input_shape=(9, 9), kernel_init=_init, rngs=nnx.Rngs(1)
    )
    up.kernel[...] = conv.kernel[...]
    x, y = _x((1, 9, 9, 3)), _x((1, 4, 4, 5), 1)
    _, vjp = jax.vjp(conv, x)
    np.testing.assert_allclose(up(y), vjp(y)[0], rtol=1e-5, atol=1e-5)

  @parameterized.named_parameters(
      dict(testcase_name="valid", shape=(2, 8, 8, 3), options={}),
      dict(
          testcase_name="strided_padded",
          shape=(1, 9, 7, 2),
          options=dict(stride=2, padding=1, padding_mode="edge"),
      ),
      dict(testcase_name="1d_dilated", shape=(2, 11, 2), options=dict(dilation=2), kernel=(3,)),
  )
  def test_locally_connected_equals_function(self, shape, options, kernel=3):
    lc = _with_random_bias(
        cnn.LocallyConnected(
            shape[-1],
            4,
            kernel,
            input_shape=shape[1:-1],
            kernel_init=_init,
            rngs=nnx.Rngs(0),
            **options,
        )
    )
    self.assertEqual(lc.kernel.shape[: len(shape) - 2], lc.out_spatial)
    self.assertEqual(lc.bias.shape, (*lc.out_spatial, 4))
    x = _x(shape)
    expected = _expand(lc.bias[...], locally_connected(x, lc.kernel[...], **options))
    np.testing.assert_allclose(lc(x), expected, rtol=1e-6, atol=1e-6)

  def test_default_init_uses_one_kernels_fan_in(self):
    # (Default initialisers compile per shape, seconds each on CPU: one test covers them.)
    lc = cnn.LocallyConnected(3, 4, 5, input_shape=(12, 12), rngs=nnx.Rngs(0))
    tc = cnn.TiledConv(3, 4, 5, tile=(8, 8), rngs=nnx.Rngs(0))
    self.assertEqual(lc.kernel.shape, (8, 8, 5, 5, 3, 4))
    self.assertEqual(tc.kernel.shape, (8, 8, 5, 5, 3, 4))
    # LeCun normal with fan-in 5·5·3 = 75, not 8·8·75: the grid axes are batch axes.
    for module in (lc, tc):
      np.testing.assert_allclose(np.std(module.kernel[...]), (1 / 75) ** 0.5, rtol=0.1)

  @parameterized.named_parameters(
      dict(testcase_name="tile2_same", tile=2, options=dict(padding="SAME")),
      dict(testcase_name="tile_2x3_strided", tile=(2, 3), options=dict(stride=2)),
      dict(
          testcase_name="tile1_circular", tile=1, options=dict(padding=1, padding_mode="circular")
      ),
  )
  def test_tiled_equals_function(self, tile, options):
    tc = _with_random_bias(
        cnn.TiledConv(2, 3, 3, tile=tile, kernel_init=_init, rngs=nnx.Rngs(0), **options)
    )
    t = (tile, tile) if isinstance(tile, int) else tile
    self.assertEqual(tc.kernel.shape, (*t, 3, 3, 2, 3))
    x = _x((2, 10, 10, 2))
    expected = _expand(tc.bias[...], tiled_conv(x, tc.kernel[...], tile=tile, **options))
    np.testing.assert_allclose(tc(x), expected, rtol=1e-6, atol=1e-6)

  @parameterized.named_parameters(
      dict(
          testcase_name="conv",
          make=lambda r: cnn.Conv(2, 3, 3, padding=1, kernel_init=_init, rngs=r),
          fn=lambda x, k: cross_correlate(x, k, padding=1),
      ),
      dict(
          testcase_name="conv_transpose",
          make=lambda r: cnn.ConvTranspose(2, 3, 3, stride=2, kernel_init=_init, rngs=r),
          fn=lambda x, k: conv_transpose(x, k, stride=2),
      ),
      dict(
          testcase_name="local",
          make=lambda r: cnn.LocallyConnected(
              2, 3, 3, input_shape=(6, 6), kernel_init=_init, rngs=r
          ),
          fn=locally_connected,
      ),
      dict(
          testcase_name="tiled",
          make=lambda r: cnn.TiledConv(2, 3, 3, tile=2, kernel_init=_init, rngs=r),
          fn=lambda x, k: tiled_conv(x, k, tile=2),
      ),
  )
  def test_nnx_jit_and_grad(self, make, fn):
    module = _with_random_bias(make(nnx.Rngs(0)))
    x = _x((2, 6, 6, 2))

    @nnx.jit
    def loss_and_grad(module, x):
      return nnx.value_and_grad(lambda m: jnp.sum(m(x) ** 2))(module)

    loss, grads = loss_and_grad(module, x)
    kernel, bias = module.kernel[...], module.bias[...]
    by_function = lambda k, b: jnp.sum(_expand(b, fn(x, k)) ** 2)  # noqa: E731
    np.testing.assert_allclose(loss, jax.jit(by_function)(kernel, bias), rtol=1e-5)
    expected_k, expected_b = jax.jit(jax.grad(by_function, argnums=(0, 1)))(kernel, bias)
    np.testing.assert_allclose(grads.kernel[...], expected_k, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grads.bias[...], expected_b, rtol=1e-4, atol=1e-4)

  def test_dtypes(self):
    x = _x((1, 8, 8, 2))
    bf16 = cnn.Conv(2, 3, 3, param_dtype=jnp.bfloat16, kernel_init=_init, rngs=nnx.Rngs(0))
    self.assertEqual(bf16.kernel.dtype, jnp.bfloat16)
    self.assertEqual(bf16(x.astype(jnp.bfloat16)).dtype, jnp.bfloat16)
    forced = cnn.Conv(2, 3, 3, dtype=jnp.bfloat16, kernel_init=_init, rngs=nnx.Rngs(0))
    self.assertEqual(forced(x).dtype, jnp.bfloat16)
    self.assertEqual(cnn.Conv(2, 3, 3, kernel_init=_init, rngs=nnx.Rngs(0))(x).dtype, jnp.float32)
    lc = cnn.LocallyConnected(
        2, 3, 3, input_shape=(8, 8), param_dtype=jnp.float64, kernel_init=_init, rngs=nnx.Rngs(0)
    )
    self.assertEqual(lc(x.astype(jnp.float64)).dtype, jnp.float64)

  @parameterized.named_parameters(
      dict(
          testcase_name="groups_in",
          match="in_features",
          make=lambda r: cnn.Conv(3, 4, 3, groups=2, rngs=r),
      ),
      dict(
          testcase_name="groups_out",
          match="out_features",
          make=lambda r: cnn.Conv(4, 3, 3, groups=2, rngs=r),
      ),
      dict(
          testcase_name="groups_zero",
          match="groups",
          make=lambda r: cnn.Conv(4, 4, 3, groups=0, rngs=r),
      ),
      dict(
          testcase_name="in_features", match="in_features", make=lambda r: cnn.Conv(0, 4, 3, rngs=r)
      ),
      dict(
          testcase_name="kernel_size", match="kernel_size", make=lambda r: cnn.Conv(2, 4, 0, rngs=r)
      ),
      dict(
          testcase_name="kernel_rank",
          match="kernel_size",
          make=lambda r: cnn.Conv(2, 4, (1, 1, 1, 1), rngs=r),
      ),
      dict(
          testcase_name="padding_mode",
          match="padding_mode",
          make=lambda r: cnn.Conv(2, 4, 3, padding_mode="mirror", rngs=r),
      ),
      dict(
          testcase_name="connections",
          match="connections",
          make=lambda r: cnn.Conv(2, 4, 3, connections=[[1, 1, 1, 1]], rngs=r),
      ),
      dict(
          testcase_name="transpose_groups",
          match="out_features",
          make=lambda r: cnn.ConvTranspose(4, 3, 3, groups=2, rngs=r),
      ),
      dict(
          testcase_name="local_input_shape",
          match="input_shape",
          make=lambda r: cnn.LocallyConnected(2, 4, 3, input_shape=(8, 8, 2), rngs=r),
      ),
      dict(
          testcase_name="local_input_int",
          match="input_shape",
          make=lambda r: cnn.LocallyConnected(2, 4, 3, input_shape=8, rngs=r),
      ),
      dict(
          testcase_name="local_too_small",
          match="kernel",
          make=lambda r: cnn.LocallyConnected(2, 4, 5, input_shape=(3, 3), rngs=r),
      ),
      dict(
          testcase_name="local_stride",
          match="stride",
          make=lambda r: cnn.LocallyConnected(2, 4, 3, input_shape=(8, 8), stride=0, rngs=r),
      ),
      dict(
          testcase_name="tile", match="tile", make=lambda r: cnn.TiledConv(2, 4, 3, tile=0, rngs=r)
      ),
      dict(
          testcase_name="stride", match="stride", make=lambda r: cnn.Conv(2, 4, 3, stride=0, rngs=r)
      ),
      dict(
          testcase_name="dilation",
          match="dilation",
          make=lambda r: cnn.ConvTranspose(2, 4, 3, dilation=(1, 2, 1), rngs=r),
      ),
      dict(
          testcase_name="tiled_stride",
          match="stride",
          make=lambda r: cnn.TiledConv(2, 4, 3, tile=2, stride=-1, rngs=r),
      ),
  )
  def test_errors_name_the_argument(self, make, match):
    with pytest.raises(ValueError, match=match):
      make(nnx.Rngs(0))

  def test_call_errors_come_from_the_function(self):
    with pytest.raises(ValueError, match="channel mismatch"):
      cnn.Conv(3, 4, 3, kernel_init=_init, rngs=nnx.Rngs(0))(_x((1, 8, 8, 2)))
    with pytest.raises(ValueError, match="weight grid"):
      cnn.LocallyConnected(2, 4, 3, input_shape=(8, 8), kernel_init=_init, rngs=nnx.Rngs(0))(
          _x((1, 9, 9, 2))
      )


POOL_CASES = [
    dict(testcase_name="max", module=cnn.MaxPool(2), fn=functools.partial(max_pool, window=2)),
    dict(
        testcase_name="max_overlapping",
        module=cnn.MaxPool(3, stride=2, padding=1),
        fn=functools.partial(max_pool, window=3, stride=2, padding=1),
    ),
    dict(
        testcase_name="avg",
        module=cnn.AvgPool((2, 3), padding="SAME"),
        fn=functools.partial(avg_pool, window=(2, 3), padding="SAME"),
    ),
    dict(
        testcase_name="avg_include_pad",
        module=cnn.AvgPool(3, stride=1, padding=1, count_include_pad=True),
        fn=functools.partial(avg_pool, window=3, stride=1, padding=1, count_include_pad=True),
    ),
    dict(
        testcase_name="lp", module=cnn.LpPool(2, p=3), fn=functools.partial(lp_pool, window=2, p=3)
    ),
    dict(testcase_name="global_avg", module=cnn.GlobalAvgPool(), fn=global_avg_pool),
    dict(
        testcase_name="global_max_keepdims",
        module=cnn.GlobalMaxPool(keepdims=True),
        fn=functools.partial(global_max_pool, keepdims=True),
    ),
    dict(testcase_name="maxout", module=cnn.Maxout(2), fn=functools.partial(maxout, pieces=2)),
    dict(
        testcase_name="blur",
        module=cnn.BlurPool(stride=2, kernel_size=4, padding_mode="zeros"),
        fn=functools.partial(blur_pool, stride=2, kernel_size=4, padding_mode="zeros"),
    ),
    dict(
        testcase_name="aps",
        module=cnn.PolyphaseDownsample(stride=2, p=1),
        fn=functools.partial(polyphase_downsample, stride=2, p=1),
    ),
    dict(
        testcase_name="lrn",
        module=cnn.LocalResponseNorm(size=3, alpha=0.1, beta=0.5, k=1.0),
        fn=functools.partial(local_response_norm, size=3, alpha=0.1, beta=0.5, k=1.0),
    ),
]


class ParameterFreeModuleTest(parameterized.TestCase):

  @parameterized.named_parameters(*POOL_CASES)
  def test_module_equals_function(self, module, fn):
    x = _x((2, 8, 8, 4))
    np.testing.assert_array_equal(module(x), fn(x))
    self.assertEqual(nnx.state(module, nnx.Param), nnx.State({}))

  def test_grad_through_pooling_module(self):
    pool = cnn.MaxPool(2)
    x = _x((1, 4, 4, 1))
    g = nnx.jit(jax.grad(lambda x: pool(x).sum()))(x)
    # One maximum per 2×2 window receives the gradient.
    np.testing.assert_array_equal(g.sum(), 4.0)


# One compilation per (shape, size); alpha, beta and k are traced.
_LRN_JIT = jax.jit(local_response_norm, static_argnames="size")


class LocalResponseNormTest(chex.TestCase):

  @settings(max_examples=12, deadline=None)
  @given(
      channels=st.sampled_from([1, 7]),
      size=st.integers(1, 6),
      alpha=st.floats(1e-4, 1.0),
      beta=st.floats(0.25, 1.0),
      k=st.floats(0.5, 2.0),
  )
  def test_matches_numpy_loop(self, channels, size, alpha, beta, k):
    x = _x((2, 3, 3, channels), seed=size, dtype=jnp.float64) * 3
    np.testing.assert_allclose(
        _LRN_JIT(x, size=size, alpha=alpha, beta=beta, k=k),
        ref_lrn(x, size, alpha, beta, k),
        rtol=1e-12,
    )

  @chex.variants(with_jit=True, without_jit=True)
  def test_alexnet_defaults_and_caffe_convention(self):
    x = _x((1, 4, 4, 16), dtype=jnp.float64) * 10
    np.testing.assert_allclose(
        self.variant(local_response_norm)(x), ref_lrn(x, 5, 1e-4, 0.75, 2.0), rtol=1e-12
    )
    # Caffe's LRN(local_size=5, alpha=1e-4, k=1): alpha divided by the size.
    caffe = x / (1 + 1e-4 / 5 * _window_sums(x**2, 5)) ** 0.75
    np.testing.assert_allclose(
        local_response_norm(x, size=5, alpha=1e-4 / 5, k=1.0), caffe, rtol=1e-12
    )

  def test_dtype_rank_and_grad(self):
    x = _x((2, 5, 3), dtype=jnp.bfloat16) * 20
    y = _LRN_JIT(x, alpha=0.1)
    self.assertEqual(y.dtype, jnp.bfloat16)
    np.testing.assert_allclose(np.asarray(y, np.float64), ref_lrn(x, 5, 0.1, 0.75, 2.0), rtol=1e-2)
    self.assertEqual(_LRN_JIT(_x((2, 4, 4, 4, 6))).shape, (2, 4, 4, 4, 6))
    g = jax.jit(jax.grad(lambda x: local_response_norm(x, alpha=1.0).sum()))(_x((1, 2, 2, 4)))
    self.assertTrue(bool(jnp.all(jnp.isfinite(g))))
    # Non-linear: the gradient is not the all-ones of the identity.
    self.assertGreater(float(jnp.abs(g - 1).max()), 1e-3)

  def test_errors(self):
    with pytest.raises(ValueError, match="size"):
      local_response_norm(_x((1, 2, 2, 3)), size=0)
    with pytest.raises(ValueError, match="x has shape"):
      local_response_norm(jnp.ones((3,)))


def _window_sums(a, size):
  """Channel-window sums by explicit padding and slicing (an independent route)."""
  a = np.asarray(a)
  padded = np.pad(a, [(0, 0)] * (a.ndim - 1) + [(size // 2, (size - 1) // 2)])
  return sum(padded[..., j : j + a.shape[-1]] for j in range(size))


def test_optional_arguments_are_keyword_only():
  import inspect

  positional_ok = {"self", "in_features", "out_features", "kernel_size", "window", "pieces"}
  for name in cnn.__all__:
    for param in inspect.signature(getattr(cnn, name).__init__).parameters.values():
      if param.kind is param.POSITIONAL_OR_KEYWORD:
        assert param.name in positional_ok, (name, param.name)
        assert param.default is param.empty, (name, param.name)
  for param in list(inspect.signature(local_response_norm).parameters.values())[1:]:
    assert param.kind is param.KEYWORD_ONLY, param.name
