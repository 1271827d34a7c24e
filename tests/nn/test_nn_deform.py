"""cnnjax.nn.DeformConv: the function with the predicted offsets and mask; a plain
convolution at initialisation; gradients reach the offset convolution; summary; errors."""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from references import assert_close

import cnnjax
from cnnjax import nn as cnn
from cnnjax.conv import cross_correlate
from cnnjax.deform import deform_conv


def _init(key, shape, dtype):
  """NumPy-drawn weights (nnx's initialisers compile per shape)."""
  del key
  seed = int(np.sum(shape)) + len(shape)
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape) * 0.3, dtype)


# The layer, deform_conv and cross_correlate are called jitted: one program each instead of
# op-by-op dispatch, which compiles every primitive (the same code traced, ~4x faster).
_call = nnx.jit(lambda layer, x: layer(x))
_deform_conv = jax.jit(
    deform_conv, static_argnames=("stride", "padding", "groups", "offset_groups")
)
_cross_correlate = jax.jit(cross_correlate, static_argnames=("stride", "padding"))


def _x(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@pytest.mark.parametrize("modulated", [False, True])
def test_the_module_is_the_function_with_its_predictions(modulated):
  settings: dict[str, Any] = dict(stride=2, padding="SAME", groups=2, offset_groups=2)
  layer = cnn.DeformConv(
      4, 6, (3, 2), modulated=modulated, kernel_init=_init, rngs=nnx.Rngs(0), **settings
  )
  # Non-zero offset predictions, so that the module's wiring shows.
  conv = layer.offset_conv
  assert conv.bias is not None and layer.bias is not None
  conv.kernel[...] = _init(None, conv.kernel.shape, jnp.float32)
  conv.bias[...] = _x(conv.bias.shape, 3)
  layer.bias[...] = _x((6,), 2)
  x = _x((2, 7, 8, 4), 1)
  predicted = _cross_correlate(x, conv.kernel[...], stride=2, padding="SAME") + conv.bias[
      ...
  ].reshape(1, 1, 1, -1)
  assert predicted.shape[-1] == 2 * 6 * (3 if modulated else 2)
  offsets = predicted[..., :24]
  mask = jax.nn.sigmoid(predicted[..., 24:]) if modulated else None
  want = _deform_conv(x, layer.kernel[...], offsets, mask=mask, **settings)
  assert_close(_call(layer, x), want + layer.bias[...].reshape(1, 1, 1, -1), np.float32)
  assert layer.kernel.shape == (3, 2, 2, 6)


@pytest.mark.parametrize("modulated", [False, True])
def test_a_new_layer_is_a_plain_convolution(modulated):
  layer = cnn.DeformConv(3, 5, 3, padding=1, modulated=modulated, rngs=nnx.Rngs(0))
  assert layer.bias is not None and layer.offset_conv.bias is not None
  layer.bias[...] = _x((5,), 2)
  x = _x((2, 6, 6, 3))
  scale = 0.5 if modulated else 1.0  # the papers' initial mask, sigmoid(0)
  want = _cross_correlate(x, scale * layer.kernel[...], padding=1) + layer.bias[...].reshape(
      1, 1, 1, 5
  )
  assert_close(_call(layer, x), want, np.float32)
  assert not np.any(layer.offset_conv.kernel[...]) and not np.any(layer.offset_conv.bias[...])


def test_gradients_reach_the_offset_convolution_at_initialisation():
  # The offsets start at 0, integer sample positions: their gradient (from above) is what
  # lets the layer learn to deform at all.
  layer = cnn.DeformConv(2, 3, 3, padding=1, modulated=True, rngs=nnx.Rngs(0))
  x = _x((2, 5, 5, 2))

  def loss(layer):
    return jnp.sum(layer(x) ** 2)

  grads = nnx.jit(nnx.grad(loss))(layer)
  g = grads.offset_conv.kernel[...]
  taps = 9
  assert np.any(np.asarray(g[..., : 2 * taps]))  # the offsets'
  assert np.any(np.asarray(g[..., 2 * taps :]))  # the mask's
  assert np.all(np.isfinite(np.asarray(g)))


def test_jit_and_bfloat16():
  layer = cnn.DeformConv(2, 4, 3, dtype=jnp.bfloat16, kernel_init=_init, rngs=nnx.Rngs(0))
  y = nnx.jit(lambda m, x: m(x))(layer, jnp.ones((1, 5, 5, 2)))
  assert y.dtype == jnp.bfloat16 and y.shape == (1, 3, 3, 4)


def test_summary_counts_both_convolutions_and_the_sampling():
  class Net(nnx.Module):

    def __init__(self):
      self.layer = cnn.DeformConv(4, 8, 3, padding=1, offset_groups=2, rngs=nnx.Rngs(0))

    def __call__(self, x):
      return self.layer(x)

  table = cnnjax.summary(Net(), (10, 10, 4))
  (row,) = table.rows
  assert row.name == "dconv(3, 8, p1, og2)" and row.shape == (10, 10, 8)
  predicted = 2 * 9 * 2
  assert row.params == (9 * 4 * 8 + 8) + (9 * 4 * predicted + predicted)
  positions = 10 * 10
  assert row.ops == (
      positions * 8 * (9 * 4 + 1) + positions * predicted * (9 * 4 + 1) + 4 * positions * 9 * 4
  )


def test_errors():
  rngs = nnx.Rngs(0)
  with pytest.raises(ValueError, match=r"DeformConv: kernel_size got \(3, 3, 3\).*2-D"):
    cnn.DeformConv(2, 4, (3, 3, 3), rngs=rngs)
  with pytest.raises(ValueError, match="DeformConv: in_features got 3, which offset_groups=2"):
    cnn.DeformConv(3, 4, 3, offset_groups=2, rngs=rngs)
  with pytest.raises(ValueError, match="DeformConv: out_features got 3, which groups=2"):
    cnn.DeformConv(4, 3, 3, groups=2, rngs=rngs)
  with pytest.raises(ValueError, match="DeformConv: offset_groups got 0"):
    cnn.DeformConv(4, 4, 3, offset_groups=0, rngs=rngs)
  with pytest.raises(ValueError, match="DeformConv: modulated got 'yes'"):
    cnn.DeformConv(4, 4, 3, modulated="yes", rngs=rngs)  # pyright: ignore[reportArgumentType]
  with pytest.raises(ValueError, match="DeformConv: dtype got 'int8'"):
    cnn.DeformConv(4, 4, 3, dtype="int8", rngs=rngs)
