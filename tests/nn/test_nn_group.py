"""Tests for cnnjax.nn.group: each module equals its function for the same weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cnnjax import nn as cnn
from cnnjax.group import group_conv, group_pool, lift_conv


def _init(key, shape, dtype):
  """NumPy-drawn weights: nnx's default initialiser takes seconds to compile per shape."""
  del key
  return jnp.asarray(np.random.default_rng(0).standard_normal(shape), dtype)


def test_lift_conv_module_is_the_function():
  layer = cnn.LiftConv(
      3, 5, 3, group="p4m", stride=2, padding="VALID", kernel_init=_init, rngs=nnx.Rngs(0)
  )
  layer.bias[...] = jnp.arange(5.0, dtype=jnp.float32)
  x = jax.random.normal(jax.random.key(1), (2, 9, 9, 3))
  assert layer.kernel.shape == (3, 3, 3, 5) and layer.bias.shape == (5,)
  want = lift_conv(x, layer.kernel[...], group="p4m", stride=2, padding="VALID")
  np.testing.assert_array_equal(layer(x), want + jnp.arange(5.0).reshape(1, 1, 1, 1, 5))


def test_group_conv_module_is_the_function():
  layer = cnn.GroupConv(4, 6, 3, group="p4", use_bias=False, kernel_init=_init, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(2), (2, 7, 7, 4, 4))
  assert layer.kernel.shape == (3, 3, 4, 4, 6) and layer.bias is None
  np.testing.assert_array_equal(layer(x), group_conv(x, layer.kernel[...], group="p4"))


def test_group_pool_module_is_the_function():
  x = jax.random.normal(jax.random.key(4), (2, 3, 3, 8, 2))
  np.testing.assert_array_equal(cnn.GroupPool(reduce="mean")(x), group_pool(x, reduce="mean"))


def test_bfloat16_computation():
  layer = cnn.LiftConv(3, 4, 3, dtype=jnp.bfloat16, kernel_init=_init, rngs=nnx.Rngs(0))
  assert layer(jnp.ones((1, 5, 5, 3))).dtype == jnp.bfloat16


def test_errors():
  with pytest.raises(ValueError, match="LiftConv: group got 'p6'"):
    cnn.LiftConv(3, 4, 3, group="p6", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="GroupConv: kernel_size got 0"):
    cnn.GroupConv(3, 4, 0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="GroupPool: reduce got 'sum'"):
    cnn.GroupPool(reduce="sum")
