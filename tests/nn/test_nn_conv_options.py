"""cnnjax.nn's Keras and Flax convolution options (issue 32): DepthwiseConv and
SeparableConv against NumPy loops of Keras' formulas, Conv's kernel mask (Flax's
``nnx.Conv(mask=...)``), the new padding strings on the modules, jit, grad, dtypes,
NaN, errors, and their summary rows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from references import assert_close, ref_correlate, ref_depthwise_keras, ref_separable_keras

from cnnjax import nn as cnn
from cnnjax import summary
from cnnjax.conv import cross_correlate


def _x(shape, seed=0, dtype=jnp.float64):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def _init(key, shape, dtype):
  """A NumPy initialiser for tests about values, not about initialisation."""
  seed = int(np.sum(shape)) + len(shape)
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape) * 0.3, dtype)


def _bias(module, seed=5):
  module.bias[...] = _x(module.bias.shape, seed, module.bias.dtype)
  return module


# ------------------------------------------------------------------ DepthwiseConv

DEPTHWISE_CASES = [
    # x shape, kernel_size, depth_multiplier, options
    ((2, 9, 8, 3), 3, 1, {}),
    ((2, 9, 8, 3), (3, 2), 2, dict(stride=2, padding="SAME")),
    ((1, 7, 7, 2), 3, 3, dict(dilation=2, padding="SAME_LOWER")),
    ((2, 11, 2), (3,), 2, dict(padding="CAUSAL", dilation=2)),
    ((1, 5, 4, 6, 2), (2, 3, 2), 2, dict(padding=((1, 0), (0, 2), (1, 1)), stride=(1, 2, 1))),
]


@pytest.mark.parametrize("shape, kernel_size, multiplier, options", DEPTHWISE_CASES)
def test_depthwise_is_keras_depthwise(shape, kernel_size, multiplier, options):
  c_in = shape[-1]
  dw = _bias(
      cnn.DepthwiseConv(
          c_in,
          kernel_size,
          depth_multiplier=multiplier,
          param_dtype=jnp.float64,
          kernel_init=_init,
          rngs=nnx.Rngs(0),
          **options,
      )
  )
  size = dw.kernel_size
  assert dw.kernel.shape == (*size, 1, c_in * multiplier)
  assert dw.out_features == c_in * multiplier
  x = _x(shape)
  keras_kernel = np.asarray(dw.kernel[...]).reshape(*size, c_in, multiplier)
  want = ref_depthwise_keras(x, keras_kernel, **options) + np.asarray(dw.bias[...])
  assert_close(jax.jit(lambda x: dw(x))(x), want, np.float64)


@pytest.mark.parametrize("shape, kernel_size, multiplier, options", DEPTHWISE_CASES[:4])
def test_separable_is_keras_separable(shape, kernel_size, multiplier, options):
  c_in, c_out = shape[-1], 5
  sep = _bias(
      cnn.SeparableConv(
          c_in,
          c_out,
          kernel_size,
          depth_multiplier=multiplier,
          param_dtype=jnp.float64,
          depthwise_init=_init,
          pointwise_init=lambda k, s, d: _init(k, s, d) + 0.1,
          rngs=nnx.Rngs(0),
          **options,
      )
  )
  size = sep.kernel_size
  assert sep.depthwise_kernel.shape == (*size, 1, c_in * multiplier)
  assert sep.pointwise_kernel.shape == (*(1,) * len(size), c_in * multiplier, c_out)
  x = _x(shape)
  dk = np.asarray(sep.depthwise_kernel[...]).reshape(*size, c_in, multiplier)
  want = ref_separable_keras(x, dk, sep.pointwise_kernel[...], **options)
  assert_close(jax.jit(lambda x: sep(x))(x), want + np.asarray(sep.bias[...]), np.float64)


def test_parameter_counts_are_keras():
  # Keras: DepthwiseConv2D(3, depth_multiplier=2) on 32 channels has 3·3·32·2 + 64 weights;
  # SeparableConv2D(64, 3) on 32 channels 3·3·32 + 32·64 + 64.
  count = lambda m: sum(p.size for p in jax.tree.leaves(nnx.state(m, nnx.Param)))  # noqa: E731
  assert (
      count(cnn.DepthwiseConv(32, 3, depth_multiplier=2, rngs=nnx.Rngs(0))) == 3 * 3 * 32 * 2 + 64
  )
  assert count(cnn.SeparableConv(32, 64, 3, rngs=nnx.Rngs(0))) == 3 * 3 * 32 + 32 * 64 + 64
  assert count(cnn.SeparableConv(32, 64, 3, use_bias=False, rngs=nnx.Rngs(0))) == 288 + 2048


def test_default_init_fan_in_is_one_channel_window():
  # LeCun normal: variance 1 / fan_in, the fan-in of a depthwise kernel being its window.
  dw = cnn.DepthwiseConv(256, 5, rngs=nnx.Rngs(0))
  np.testing.assert_allclose(np.var(np.asarray(dw.kernel[...])), 1 / 25, rtol=0.1)
  sep = cnn.SeparableConv(64, 256, 3, depth_multiplier=4, rngs=nnx.Rngs(1))
  np.testing.assert_allclose(np.var(np.asarray(sep.pointwise_kernel[...])), 1 / 256, rtol=0.1)


def test_jit_grad_and_dtypes():
  sep = _bias(cnn.SeparableConv(2, 3, 3, padding="SAME", rngs=nnx.Rngs(0)))
  x = _x((2, 6, 6, 2), dtype=jnp.float32)

  @nnx.jit
  def loss_and_grad(module, x):
    return nnx.value_and_grad(lambda m: jnp.sum(m(x) ** 2))(module)

  loss, grads = loss_and_grad(sep, x)
  dk, pk, b = sep.depthwise_kernel[...], sep.pointwise_kernel[...], sep.bias[...]

  def by_function(dk, pk, b):
    h = cross_correlate(x, dk, padding="SAME", groups=2)
    return jnp.sum((cross_correlate(h, pk) + b.reshape(1, 1, 1, -1)) ** 2)

  np.testing.assert_allclose(loss, by_function(dk, pk, b), rtol=1e-5)
  want = jax.grad(by_function, argnums=(0, 1, 2))(dk, pk, b)
  got = (grads.depthwise_kernel[...], grads.pointwise_kernel[...], grads.bias[...])
  for g, w in zip(got, want, strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
  for make in (
      lambda **kw: cnn.DepthwiseConv(2, 3, rngs=nnx.Rngs(0), **kw),
      lambda **kw: cnn.SeparableConv(2, 4, 3, rngs=nnx.Rngs(0), **kw),
  ):
    assert make(param_dtype=jnp.bfloat16)(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16
    assert make(dtype=jnp.bfloat16)(x).dtype == jnp.bfloat16
    assert make()(x).dtype == jnp.float32


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda: cnn.DepthwiseConv(3, 3, depth_multiplier=0, rngs=nnx.Rngs(0)),
            r"DepthwiseConv: depth_multiplier got 0; expected a positive int",
        ),
        (
            lambda: cnn.DepthwiseConv(0, 3, rngs=nnx.Rngs(0)),
            r"DepthwiseConv: in_features got 0; expected a positive int",
        ),
        (
            lambda: cnn.DepthwiseConv(3, 3, padding_mode="mirror", rngs=nnx.Rngs(0)),
            r"DepthwiseConv: padding_mode got 'mirror'",
        ),
        (
            lambda: cnn.DepthwiseConv(3, (3, 3), stride=(1, 2, 1), rngs=nnx.Rngs(0)),
            r"DepthwiseConv: stride got \(1, 2, 1\)",
        ),
        (
            lambda: cnn.SeparableConv(3, 0, 3, rngs=nnx.Rngs(0)),
            r"SeparableConv: out_features got 0; expected a positive int",
        ),
        (
            lambda: cnn.SeparableConv(3, 4, 3, depth_multiplier=1.5, rngs=nnx.Rngs(0)),
            r"SeparableConv: depth_multiplier got 1.5; expected a positive int",
        ),
        (
            lambda: cnn.SeparableConv(3, 4, 0, rngs=nnx.Rngs(0)),
            r"SeparableConv: kernel_size got 0; expected a positive int",
        ),
    ],
)
def test_construction_errors_name_the_argument(make, match):
  with pytest.raises(ValueError, match=match):
    make()


def test_call_errors_name_the_argument():
  dw = cnn.DepthwiseConv(3, 3, padding="CAUSAL", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"cross_correlate: padding got 'CAUSAL', which is for 1"):
    dw(jnp.ones((1, 6, 6, 3)))
  with pytest.raises(ValueError, match="channel"):
    cnn.SeparableConv(3, 4, 3, rngs=nnx.Rngs(0))(jnp.ones((1, 6, 6, 2)))


def test_nan_reaches_only_the_outputs_that_read_it():
  # A NaN in channel 0 reaches the depthwise outputs of channel 0 in its window only;
  # the pointwise step then mixes the channels at each position.
  x = np.ones((1, 7, 7, 2))
  x[0, 3, 3, 0] = np.nan
  dw = cnn.DepthwiseConv(2, 3, depth_multiplier=2, padding="SAME", rngs=nnx.Rngs(0))
  y = np.asarray(dw(x))
  window = np.zeros((7, 7), bool)
  window[2:5, 2:5] = True
  for o in range(4):
    np.testing.assert_array_equal(np.isnan(y[0, :, :, o]), window if o < 2 else False)
  sep = cnn.SeparableConv(2, 3, 3, padding="SAME", rngs=nnx.Rngs(0))
  y = np.asarray(sep(x))
  for o in range(3):
    np.testing.assert_array_equal(np.isnan(y[0, :, :, o]), window)


# ------------------------------------------------------------------ Conv's mask


def test_mask_multiplies_the_kernel_as_flax():
  rng = np.random.default_rng(6)
  mask = rng.integers(0, 2, (3, 3, 2, 4)).astype(np.float64) * rng.uniform(0.5, 2, (3, 3, 2, 4))
  conv = _bias(
      cnn.Conv(
          4,
          4,
          3,
          groups=2,
          padding="SAME",
          mask=mask,
          param_dtype=jnp.float64,
          kernel_init=_init,
          rngs=nnx.Rngs(0),
      )
  )
  x = _x((2, 6, 5, 4))
  kernel = np.asarray(conv.kernel[...])
  want = ref_correlate(x, kernel * mask, padding="SAME", groups=2) + np.asarray(conv.bias[...])
  assert_close(conv(x), want, np.float64)
  # Flax's nnx.Conv with the same kernel, bias and mask gives the same result.
  flax_conv = nnx.Conv(
      4,
      4,
      (3, 3),
      padding="SAME",
      feature_group_count=2,
      mask=jnp.asarray(mask),
      param_dtype=jnp.float64,
      rngs=nnx.Rngs(0),
  )
  flax_conv.kernel[...] = conv.kernel[...]
  flax_conv.bias[...] = conv.bias[...]
  assert_close(flax_conv(x), want, np.float64)
  # The mask is a constant, not a parameter: the kernel gradient is zero where it is.
  grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(conv)
  assert "mask" not in nnx.state(conv, nnx.Param)
  np.testing.assert_array_equal(np.asarray(grads.kernel[...])[mask == 0], 0)
  assert np.all(np.asarray(grads.kernel[...])[mask != 0] != 0)


def test_causal_mask_and_causal_padding():
  # A 1-D causal convolution two ways: CAUSAL padding, and SAME padding with the taps
  # after the centre masked out. Output t reads inputs <= t only.
  k = 5
  mask = np.ones((k, 1, 1))
  mask[k // 2 + 1 :] = 0
  masked = cnn.Conv(
      1, 1, (k,), padding="SAME", mask=mask, use_bias=False, kernel_init=_init, rngs=nnx.Rngs(0)
  )
  causal = cnn.Conv(
      1, 1, (3,), padding="CAUSAL", use_bias=False, kernel_init=_init, rngs=nnx.Rngs(0)
  )
  causal.kernel[...] = masked.kernel[...][: k // 2 + 1]
  x = _x((1, 12, 1), dtype=jnp.float32)
  np.testing.assert_allclose(masked(x), causal(x), rtol=1e-6)
  jac = jax.jacobian(lambda x: causal(x)[0, :, 0])(x)[:, 0, :, 0]
  assert np.all(np.triu(np.asarray(jac), k=1) == 0)  # no output reads a later input


def test_mask_errors_name_the_argument():
  with pytest.raises(
      ValueError,
      match=r"Conv: mask has shape \(3, 3, 2\); expected the kernel's shape \(3, 3, 2, 4\)",
  ):
    cnn.Conv(2, 4, 3, mask=np.ones((3, 3, 2)), rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"Conv: mask has shape \(3, 3, 4, 4\); expected .*"):
    cnn.Conv(4, 4, 3, groups=2, mask=np.ones((3, 3, 4, 4)), rngs=nnx.Rngs(0))
  with pytest.raises(TypeError, match=r"Conv: mask has dtype complex64; expected a real"):
    cnn.Conv(2, 4, 3, mask=np.ones((3, 3, 2, 4), np.complex64), rngs=nnx.Rngs(0))
  with pytest.raises(TypeError, match=r"Conv: mask got a str; expected an array"):
    cnn.Conv(2, 4, 3, mask="causal", rngs=nnx.Rngs(0))


def test_bool_mask_keeps_the_kernel_dtype():
  mask = np.zeros((3, 3, 2, 4), bool)
  mask[1, 1] = True  # the centre tap only: a 1×1 convolution
  conv = cnn.Conv(2, 4, 3, padding="SAME", mask=mask, param_dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  x = _x((1, 5, 5, 2), dtype=jnp.bfloat16)
  y = conv(x)
  assert y.dtype == jnp.bfloat16
  want = cross_correlate(x, conv.kernel[...][1:2, 1:2]) + conv.bias[...].reshape(1, 1, 1, -1)
  np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(want, np.float32))


# ----------------------------------------------------------------------- summary


def test_summary_describes_the_new_modules():
  class Net(nnx.Module):

    def __init__(self, rngs):
      self.dw = cnn.DepthwiseConv(8, 3, depth_multiplier=2, padding="SAME", rngs=rngs)
      self.sep = cnn.SeparableConv(16, 32, 3, stride=2, padding="SAME", rngs=rngs)
      self.masked = cnn.Conv(32, 32, 3, padding="SAME", mask=np.ones((3, 3, 32, 32)), rngs=rngs)
      self.pool = cnn.MaxPool(3, stride=2, ceil_mode=True)

    def __call__(self, x):
      return self.pool(self.masked(self.sep(self.dw(x))))

  rows = summary(Net(nnx.Rngs(0)), (16, 16, 8)).rows
  names = [r.name for r in rows]
  assert names[0].startswith("dwconv(3, 16") and names[1].startswith("sepconv(3, 32")
  assert "masked" in names[2] and "ceil" in names[3], names
  dw, sep, masked, pool = rows
  assert (dw.params, dw.shape) == (3 * 3 * 16 + 16, (16, 16, 16))
  assert dw.ops == 16 * 16 * 16 * (3 * 3 + 1)  # one input channel per output, + bias
  assert (sep.params, sep.shape) == (3 * 3 * 16 + 16 * 32 + 32, (8, 8, 32))
  assert sep.ops == 8 * 8 * 16 * 3 * 3 + 8 * 8 * (16 * 32 + 32)
  assert masked.params == 3 * 3 * 32 * 32 + 32
  assert pool.shape == (4, 4, 32)  # ⌈(8 − 3) / 2⌉ + 1
