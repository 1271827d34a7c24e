"""The lecture's baselines and its CIFAR-10 seed network.

``"linear"`` (a linear classifier on the raw pixels), ``"mlp"`` (one hidden layer of
100 ReLU units) and ``"seed-cnn"``: conv(5, 32) → ReLU → max-pool(2) → conv(5, 64) →
ReLU → max-pool(2) → fc(100) → ReLU → fc(10), valid padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from cnnjax.models.builder import LayerBuilder, as_logits, check_input, flatten
from cnnjax.models.registry import register
from cnnjax.nn import MaxPool

__all__ = ["Linear", "MLP", "SeedCNN"]


@register("linear")
class Linear(nnx.Module):
  """A linear classifier on the flattened pixels, ``W x + b`` (the lecture's baseline).

  Args:
    num_classes: the number of outputs.
    input_shape: ``(H, W, C)``, default CIFAR-10's ``(32, 32, 3)``.
    dtype: the computation dtype, e.g. ``"bfloat16"`` (None: float32, from the
      parameters); BatchNorm statistics and the logits stay float32.
    param_dtype: the parameters' dtype (default float32).
    rngs: the ``nnx.Rngs`` for the parameters.
  """

  default_input_shape: tuple[int, ...] = (32, 32, 3)
  default_num_classes = 10

  def __init__(
      self,
      *,
      num_classes: int = 10,
      input_shape: Sequence[int] = (32, 32, 3),
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      rngs: nnx.Rngs,
  ):
    b = LayerBuilder(input_shape, rngs=rngs, op="linear", dtype=dtype, param_dtype=param_dtype)
    self.input_shape: tuple[int, ...] = b.shape
    self.fc: nnx.Linear = b.fc(num_classes)

  def __call__(self, x: jax.Array) -> jax.Array:
    """``[N, H, W, C]`` → logits ``[N, num_classes]``."""
    check_input(x, self.input_shape, op="linear")
    return as_logits(self.fc(flatten(x)))


@register("mlp")
class MLP(nnx.Module):
  """A multilayer perceptron with one hidden ReLU layer (the lecture's baseline).

  Args:
    num_classes: the number of outputs.
    input_shape: ``(H, W, C)``, default ``(32, 32, 3)``.
    hidden: the hidden layer's width (default 100).
    dtype: the computation dtype, e.g. ``"bfloat16"`` (None: float32, from the
      parameters); BatchNorm statistics and the logits stay float32.
    param_dtype: the parameters' dtype (default float32).
    rngs: the ``nnx.Rngs`` for the parameters.
  """

  default_input_shape: tuple[int, ...] = (32, 32, 3)
  default_num_classes = 10

  def __init__(
      self,
      *,
      num_classes: int = 10,
      input_shape: Sequence[int] = (32, 32, 3),
      hidden: int = 100,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      rngs: nnx.Rngs,
  ):
    b = LayerBuilder(input_shape, rngs=rngs, op="mlp", dtype=dtype, param_dtype=param_dtype)
    self.input_shape: tuple[int, ...] = b.shape
    self.fc1: nnx.Linear = b.fc(hidden)
    self.fc2: nnx.Linear = b.fc(num_classes)

  def __call__(self, x: jax.Array) -> jax.Array:
    """``[N, H, W, C]`` → logits ``[N, num_classes]``."""
    check_input(x, self.input_shape, op="mlp")
    return as_logits(self.fc2(jax.nn.relu(self.fc1(flatten(x)))))


@register("seed-cnn")
class SeedCNN(nnx.Module):
  """The lecture's CIFAR-10 seed CNN.

  conv(5, 32) → ReLU → max-pool(2) → conv(5, 64) → ReLU → max-pool(2) → fc(100) →
  ReLU → fc(num_classes), valid padding; 214,806 parameters on 32×32×3 with 10
  classes (the lecture's layer table: :func:`cnnjax.summary.summary`).

  Args:
    num_classes: the number of outputs.
    input_shape: ``(H, W, C)``, default ``(32, 32, 3)``.
    hidden: the width of the hidden fully connected layer (default 100).
    conv: ``"shared"``, ``"tiled"`` or ``"local"`` convolutions.
    tile: the tile of ``conv="tiled"``.
    dtype: the computation dtype, e.g. ``"bfloat16"`` (None: float32, from the
      parameters); BatchNorm statistics and the logits stay float32.
    param_dtype: the parameters' dtype (default float32).
    rngs: the ``nnx.Rngs`` for the parameters.
  """

  default_input_shape: tuple[int, ...] = (32, 32, 3)
  default_num_classes = 10

  def __init__(
      self,
      *,
      num_classes: int = 10,
      input_shape: Sequence[int] = (32, 32, 3),
      hidden: int = 100,
      conv: str = "shared",
      tile: int | Sequence[int] = 2,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      rngs: nnx.Rngs,
  ):
    b = LayerBuilder(
        input_shape,
        rngs=rngs,
        conv=conv,
        tile=tile,
        op="seed-cnn",
        dtype=dtype,
        param_dtype=param_dtype,
    )
    self.input_shape: tuple[int, ...] = b.shape
    self.conv1: nnx.Module = b.conv(32, 5)
    self.pool1: MaxPool = b.max_pool(2)
    self.conv2: nnx.Module = b.conv(64, 5)
    self.pool2: MaxPool = b.max_pool(2)
    self.fc1: nnx.Linear = b.fc(hidden)
    self.fc2: nnx.Linear = b.fc(num_classes)

  def __call__(self, x: jax.Array) -> jax.Array:
    """``[N, H, W, C]`` → logits ``[N, num_classes]``."""
    check_input(x, self.input_shape, op="seed-cnn")
    x = self.pool1(jax.nn.relu(self.conv1(x)))
    x = self.pool2(jax.nn.relu(self.conv2(x)))
    return as_logits(self.fc2(jax.nn.relu(self.fc1(flatten(x)))))
