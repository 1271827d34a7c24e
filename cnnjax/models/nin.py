"""Network in Network (Lin, Chen & Yan 2014, "Network in network", ICLR), the
CIFAR-10 model of the authors' Caffe release."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from cnnjax.models.builder import LayerBuilder, as_logits, check_input_shape
from cnnjax.models.registry import register

__all__ = ["NiN"]

relu: Callable[[jax.Array], jax.Array] = jax.nn.relu


@register("nin")
class NiN(nnx.Module):
  """Network in Network for CIFAR-10: three mlpconv blocks and global average pooling.

  Each mlpconv block is a spatial conv followed by two 1×1 convs (the "micro
  network", a per-position MLP), all with ReLU: conv(5, 192, p2) → 1×1 160 → 1×1 96 →
  max-pool(3, 2) → dropout → conv(5, 192, p2) → 1×1 192 → 1×1 192 → avg-pool(3, 2) →
  dropout → conv(3, 192, p1) → 1×1 192 → 1×1 num_classes → global average pooling
  (no fully connected layer). Pools use ``"SAME"`` padding (32 → 16 → 8, as Caffe's
  ceil-mode pooling). 966,986 parameters with 10 classes.

  Any input size works (there is no fc layer); ``input_shape`` only sizes locally
  connected weights (``conv="local"``).

  Args:
    num_classes: the number of outputs (default 10).
    input_shape: ``(H, W, C)``, default ``(32, 32, 3)``.
    dropout: the dropout rate after the first two blocks.
    conv: ``"shared"``, ``"tiled"`` or ``"local"`` convolutions.
    tile: the tile of ``conv="tiled"``.
    dtype: the computation dtype, e.g. ``"bfloat16"`` (None: float32, from the
      parameters); BatchNorm statistics and the logits stay float32.
    param_dtype: the parameters' dtype (default float32).
    rngs: the ``nnx.Rngs`` for the parameters and dropout.
  """

  default_input_shape: tuple[int, ...] = (32, 32, 3)
  default_num_classes = 10

  def __init__(
      self,
      *,
      num_classes: int = 10,
      input_shape: Sequence[int] = (32, 32, 3),
      dropout: float = 0.5,
      conv: str = "shared",
      tile: int | Sequence[int] = 2,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      rngs: nnx.Rngs,
  ):
    b = LayerBuilder(
        input_shape, rngs=rngs, conv=conv, tile=tile, op="nin", dtype=dtype, param_dtype=param_dtype
    )
    self.input_shape: tuple[int, ...] = check_input_shape(input_shape, op="nin")
    self.layers: nnx.Sequential = nnx.Sequential(
        b.conv(192, 5, padding=2),
        relu,
        b.conv(160, 1),
        relu,
        b.conv(96, 1),
        relu,
        b.max_pool(3, stride=2, padding="SAME"),
        b.dropout(dropout),
        b.conv(192, 5, padding=2),
        relu,
        b.conv(192, 1),
        relu,
        b.conv(192, 1),
        relu,
        b.avg_pool(3, stride=2, padding="SAME"),
        b.dropout(dropout),
        b.conv(192, 3, padding=1),
        relu,
        b.conv(192, 1),
        relu,
        b.conv(num_classes, 1),
        relu,
        b.global_avg_pool(),
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    """``[N, H, W, C]`` → logits ``[N, num_classes]``."""
    return as_logits(self.layers(x))
