"""The CIFAR ResNets (He, Zhang, Ren & Sun 2016, "Deep residual learning for image
recognition", CVPR, §4.2): ResNet-20, 32, 44, 56 and 110."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from cnnjax.models.builder import LayerBuilder, as_logits, check_input_shape
from cnnjax.models.registry import register
from cnnjax.nn import GlobalAvgPool

__all__ = ["BasicBlock", "CifarResNet", "DEPTHS"]

DEPTHS = (20, 32, 44, 56, 110)
SHORTCUTS = ("A", "B")


class BasicBlock(nnx.Module):
  """A residual block: conv(3) → BN → ReLU → conv(3) → BN, plus the shortcut, → ReLU.

  Where the block changes the shape (stride 2, more channels), the shortcut is option
  A of the paper (parameter-free: subsample by the stride and pad the new channels
  with zeros) or option B (1×1 projection conv + BN). In layer tables it is one row,
  ``res(C)`` or ``res(C, s2)``.

  Args:
    features: the output channels.
    stride: the first conv's stride.
    shortcut: ``"A"`` or ``"B"``.
    builder: a :class:`cnnjax.models.builder.LayerBuilder` at the input's shape; it
      advances to the output's.
  """

  def __init__(self, features: int, *, stride: int = 1, shortcut: str = "A", builder: LayerBuilder):
    in_shape = builder.shape
    self.features = features
    self.stride = stride
    self.conv1: nnx.Module = builder.conv(features, 3, stride=stride, padding=1, use_bias=False)
    self.bn1: nnx.BatchNorm = builder.batch_norm()
    self.conv2: nnx.Module = builder.conv(features, 3, padding=1, use_bias=False)
    self.bn2: nnx.BatchNorm = builder.batch_norm()
    changes = stride != 1 or in_shape[-1] != features
    self.pad: int = features - in_shape[-1] if changes and shortcut == "A" else 0
    self.proj: nnx.Sequential | None
    if changes and shortcut == "B":
      b = builder.at(in_shape)
      self.proj = nnx.Sequential(b.conv(features, 1, stride=stride, use_bias=False), b.batch_norm())
    else:
      self.proj = None

  def shortcut(self, x: jax.Array) -> jax.Array:
    if self.proj is not None:
      return self.proj(x)
    if self.stride != 1:
      x = x[:, :: self.stride, :: self.stride, :]
    if self.pad:
      x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (self.pad // 2, self.pad - self.pad // 2)))
    return x

  def __call__(self, x: jax.Array) -> jax.Array:
    """``[N, H, W, C_in]`` → ``[N, H / stride, W / stride, features]``."""
    y = jax.nn.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return jax.nn.relu(y + self.shortcut(x))

  def summary_name(self) -> str:
    """The row name in layer tables."""
    return f"res({self.features})" if self.stride == 1 else f"res({self.features}, s{self.stride})"


class CifarResNet(nnx.Module):
  """The CIFAR-10 ResNet of depth 6n + 2 (He et al. 2016, §4.2).

  conv(3, 16, p1) → BN → ReLU → n blocks of 16 → n blocks of 32 (the first with stride
  2) → n blocks of 64 (stride 2) → global average pooling → fc(num_classes); convs
  without bias (BN follows), He-normal initialisation, option A shortcuts. Train and
  eval mode (BN batch statistics vs running averages) by ``model.train()`` /
  ``model.eval()``. ResNet-20 has 269,722 parameters (the paper's 0.27M), ResNet-110
  1,727,962 (1.7M). Zoo names ``"resnet20"``, ``"resnet32"``, ``"resnet44"``,
  ``"resnet56"``, ``"resnet110"``.

  Args:
    depth: 6n + 2 (20, 32, 44, 56, 110, ...).
    num_classes: the number of outputs (default 10).
    input_shape: ``(H, W, C)``, default ``(32, 32, 3)``; it sizes locally connected
      weights (``conv="local"``), any size works otherwise.
    width: the channels of the first stage (16; the later stages double it).
    shortcut: ``"A"`` (zero-padding identity, the paper's CIFAR choice) or ``"B"``
      (projections where the shape changes).
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
      depth: int = 20,
      num_classes: int = 10,
      input_shape: Sequence[int] = (32, 32, 3),
      width: int = 16,
      shortcut: str = "A",
      conv: str = "shared",
      tile: int | Sequence[int] = 2,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      rngs: nnx.Rngs,
  ):
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
      raise ValueError(
          f"resnet: depth got {depth!r}; expected 6n + 2 for n >= 1 (20, 32, 44, 56, 110)."
      )
    if shortcut not in SHORTCUTS:
      raise ValueError(f"resnet: shortcut got {shortcut!r}; expected one of {SHORTCUTS}.")
    n = (depth - 2) // 6
    b = LayerBuilder(
        input_shape,
        rngs=rngs,
        conv=conv,
        tile=tile,
        init="he",
        op="resnet",
        dtype=dtype,
        param_dtype=param_dtype,
    )
    self.input_shape: tuple[int, ...] = check_input_shape(input_shape, op="resnet")
    self.depth = depth
    self.conv: nnx.Module = b.conv(width, 3, padding=1, use_bias=False)
    self.bn: nnx.BatchNorm = b.batch_norm()
    blocks = []
    for stage in range(3):
      for i in range(n):
        stride = 2 if stage > 0 and i == 0 else 1
        blocks.append(BasicBlock(width * 2**stage, stride=stride, shortcut=shortcut, builder=b))
    self.blocks: nnx.Sequential = nnx.Sequential(*blocks)
    self.pool: GlobalAvgPool = b.global_avg_pool()
    self.fc: nnx.Linear = b.fc(num_classes)

  def __call__(self, x: jax.Array) -> jax.Array:
    """``[N, H, W, C]`` → logits ``[N, num_classes]``."""
    x = jax.nn.relu(self.bn(self.conv(x)))
    return as_logits(self.fc(self.pool(self.blocks(x))))


for _depth in DEPTHS:
  register(f"resnet{_depth}", CifarResNet, depth=_depth)
