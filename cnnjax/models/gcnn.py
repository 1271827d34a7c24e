"""Group-equivariant CNNs (Cohen & Welling 2016): ``"p4-cnn"``, seed-cnn's shape on p4.

conv(5, 32) → ReLU → max-pool(2) → conv(5, 64) → ReLU → max-pool(2) as a lifting and a
group convolution (:mod:`cnnjax.group`, valid padding), then a max over the group
axis and a global average over space, then fc(100) → ReLU → fc(num_classes). The
global pooling replaces seed-cnn's flatten, so the logits are exactly invariant to
rotations of the input by multiples of 90° (square inputs whose feature maps pool
evenly, as 32×32: 28, 14, 10, 5). With the same widths as seed-cnn it has the same
number of parameters, 214,806 on 32×32×3 with 10 classes: the group convolution holds
4× seed-cnn's second conv (204,864), the first fc layer sees 64 features instead of
1,600 (6,500).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from cnnjax import padding as _padding
from cnnjax.models.builder import as_logits, check_input, check_input_shape
from cnnjax.models.registry import register
from cnnjax.nn import GlobalAvgPool, GroupConv, GroupPool, LiftConv, MaxPool
from cnnjax.nn._dtypes import check_dtypes

__all__ = ["P4CNN"]


@register("p4-cnn", group="p4")
class P4CNN(nnx.Module):
  """seed-cnn with p4 (or p4m) group convolutions, invariant to the group.

  Args:
    num_classes: the number of outputs.
    input_shape: ``(H, W, C)``, default ``(32, 32, 3)``; H == W for invariance.
    group: ``"p4"`` (fixed by the zoo name ``"p4-cnn"``) or ``"p4m"``.
    widths: the channels per group element of the two convolutions.
    hidden: the width of the hidden fully connected layer.
    dtype: the computation dtype, e.g. ``"bfloat16"`` (None: float32, from the
      parameters); the logits stay float32.
    param_dtype: the parameters' dtype (default float32).
    rngs: the ``nnx.Rngs`` for the parameters.

  Example:
    >>> model = P4CNN(rngs=nnx.Rngs(0))
    >>> model(jnp.ones((2, 32, 32, 3))).shape
    (2, 10)
  """

  default_input_shape: tuple[int, ...] = (32, 32, 3)
  default_num_classes = 10

  def __init__(
      self,
      *,
      num_classes: int = 10,
      input_shape: Sequence[int] = (32, 32, 3),
      group: str = "p4",
      widths: Sequence[int] = (32, 64),
      hidden: int = 100,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      rngs: nnx.Rngs,
  ):
    op = "p4-cnn"
    self.input_shape: tuple[int, ...] = check_input_shape(input_shape, op=op)
    if len(self.input_shape) != 3:
      raise ValueError(f"{op}: input_shape got {input_shape!r}; expected (H, W, C), a 2-D image.")
    if len(widths) != 2:
      raise ValueError(f"{op}: widths got {widths!r}; expected two positive ints.")
    size = self.input_shape[:2]
    for _ in range(2):  # conv 5 (valid), pool 2: refuse inputs that vanish
      size = _padding.conv_geometry(size, (5, 5), op=op).out_spatial
      size = _padding.conv_geometry(size, (2, 2), stride=2, op=op).out_spatial
    c1, c2 = widths
    dt = dict(zip(("dtype", "param_dtype"), check_dtypes(dtype, param_dtype, op=op), strict=True))
    self.lift: LiftConv
    self.lift = LiftConv(self.input_shape[-1], c1, 5, group=group, padding="VALID", rngs=rngs, **dt)
    self.pool1: MaxPool = MaxPool((2, 2, 1), **dt)  # space only; the group axis rides along
    self.gconv: GroupConv = GroupConv(c1, c2, 5, group=group, padding="VALID", rngs=rngs, **dt)
    self.pool2: MaxPool = MaxPool((2, 2, 1), **dt)
    self.group_pool: GroupPool = GroupPool(reduce="max", **dt)
    self.global_pool: GlobalAvgPool = GlobalAvgPool(**dt)
    self.fc1: nnx.Linear = nnx.Linear(c2, hidden, rngs=rngs, **dt)
    self.fc2: nnx.Linear = nnx.Linear(hidden, num_classes, rngs=rngs, **dt)

  def __call__(self, x: jax.Array) -> jax.Array:
    """``[N, H, W, C]`` → logits ``[N, num_classes]``."""
    check_input(x, self.input_shape, op="p4-cnn")
    x = self.pool1(jax.nn.relu(self.lift(x)))
    x = self.pool2(jax.nn.relu(self.gconv(x)))
    x = self.global_pool(self.group_pool(x))
    return as_logits(self.fc2(jax.nn.relu(self.fc1(x))))
