"""GoogLeNet (Szegedy et al. 2015, "Going deeper with convolutions", CVPR; Table 1
and Figure 2(b))."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from cnnjax.models.builder import LayerBuilder, as_logits, flatten
from cnnjax.models.registry import register
from cnnjax.nn import MaxPool

__all__ = ["GoogLeNet", "Inception", "INCEPTION_CONFIGS"]

relu: Callable[[jax.Array], jax.Array] = jax.nn.relu

# Table 1: #1×1, (#3×3 reduce, #3×3), (#5×5 reduce, #5×5), pool proj.
INCEPTION_CONFIGS = {
    "3a": (64, (96, 128), (16, 32), 32),
    "3b": (128, (128, 192), (32, 96), 64),
    "4a": (192, (96, 208), (16, 48), 64),
    "4b": (160, (112, 224), (24, 64), 64),
    "4c": (128, (128, 256), (24, 64), 64),
    "4d": (112, (144, 288), (32, 64), 64),
    "4e": (256, (160, 320), (32, 128), 128),
    "5a": (256, (160, 320), (32, 128), 128),
    "5b": (384, (192, 384), (48, 128), 128),
}


class Inception(nnx.Module):
  """An inception module (Szegedy et al. 2015, Figure 2(b)).

  Four branches on the same input, concatenated on the channels: 1×1 conv (``c1``);
  1×1 reduction (``r3``) → 3×3 conv (``c3``); 1×1 reduction (``r5``) → 5×5 conv
  (``c5``); 3×3 max-pool (stride 1) → 1×1 projection (``pool_proj``); ReLU after
  every conv. Output channels ``c1 + c3 + c5 + pool_proj``, spatial size unchanged.
  In a :func:`cnnjax.summary.summary` table it is one row,
  ``inc(c1, (r3, c3), (r5, c5), pool_proj)``.

  Args:
    c1: the 1×1 branch's channels.
    branch3: ``(r3, c3)``.
    branch5: ``(r5, c5)``.
    pool_proj: the pool branch's projection channels.
    builder: a :class:`cnnjax.models.builder.LayerBuilder` at the input's shape;
      the branches are built with its settings and it advances to the output shape.
  """

  def __init__(
      self,
      c1: int,
      branch3: tuple[int, int],
      branch5: tuple[int, int],
      pool_proj: int,
      *,
      builder: LayerBuilder,
  ):
    (r3, c3), (r5, c5) = branch3, branch5
    shape = builder.shape
    self.config: tuple[int, tuple[int, int], tuple[int, int], int]
    self.config = (c1, (r3, c3), (r5, c5), pool_proj)
    self.b1: nnx.Module = builder.at(shape).conv(c1, 1)
    self.b3_reduce: nnx.Module
    self.b3: nnx.Module
    self.b5_reduce: nnx.Module
    self.b5: nnx.Module
    self.pool: MaxPool
    self.pool_proj: nnx.Module
    b = builder.at(shape)
    self.b3_reduce, self.b3 = b.conv(r3, 1), b.conv(c3, 3, padding=1)
    b = builder.at(shape)
    self.b5_reduce, self.b5 = b.conv(r5, 1), b.conv(c5, 5, padding=2)
    b = builder.at(shape)
    self.pool, self.pool_proj = b.max_pool(3, stride=1, padding=1), b.conv(pool_proj, 1)
    builder.shape = (*shape[:-1], c1 + c3 + c5 + pool_proj)

  def __call__(self, x: jax.Array) -> jax.Array:
    """``[N, H, W, C]`` → ``[N, H, W, c1 + c3 + c5 + pool_proj]``."""
    return jnp.concatenate(
        [
            relu(self.b1(x)),
            relu(self.b3(relu(self.b3_reduce(x)))),
            relu(self.b5(relu(self.b5_reduce(x)))),
            relu(self.pool_proj(self.pool(x))),
        ],
        axis=-1,
    )

  def summary_name(self) -> str:
    """The row name in layer tables."""
    c1, (r3, c3), (r5, c5), pool_proj = self.config
    return f"inc({c1}, ({r3}, {c3}), ({r5}, {c5}), {pool_proj})"


class AuxHead(nnx.Module):
  """An auxiliary classifier (Szegedy et al. 2015, §5): avg-pool(5, 3) → 1×1 conv 128 →
  fc(1024) → dropout 0.7 → fc(num_classes)."""

  def __init__(self, num_classes: int, *, builder: LayerBuilder):
    b = builder.at(builder.shape)
    self.layers: nnx.Sequential = nnx.Sequential(
        b.avg_pool(5, stride=3),
        b.conv(128, 1),
        relu,
        flatten,
        b.fc(1024),
        relu,
        b.dropout(0.7),
        b.fc(num_classes),
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.layers(x)


@register("googlenet")
class GoogLeNet(nnx.Module):
  """GoogLeNet (Szegedy et al. 2015, Table 1), without auxiliary heads by default.

  conv(7, 64, s2, p3) → max-pool(3, 2) → LRN → conv(1, 64) → conv(3, 192, p1) → LRN →
  max-pool(3, 2) → inception 3a, 3b → max-pool(3, 2) → 4a–4e → max-pool(3, 2) → 5a, 5b →
  global average pooling → dropout 0.4 → fc(num_classes); ReLU after every conv. The
  stride-2 pools use ``"SAME"`` padding (Caffe's ceil mode: 112 → 56 → 28 → 14 → 7).

  Args:
    num_classes: the number of outputs (default 1000).
    input_shape: ``(H, W, C)``, default ``(224, 224, 3)``; other sizes run too (global
      pooling before the fc layer), except with ``conv="local"`` or ``aux_heads``.
    aux_heads: add the two auxiliary classifiers (after 4a and 4d); the model then
      returns ``(logits, aux_4a, aux_4d)``.
    dropout: the dropout rate before the last fc layer.
    conv: ``"shared"``, ``"tiled"`` or ``"local"`` convolutions.
    tile: the tile of ``conv="tiled"``.
    dtype: the computation dtype, e.g. ``"bfloat16"`` (None: float32, from the
      parameters); BatchNorm statistics and the logits stay float32.
    param_dtype: the parameters' dtype (default float32).
    rngs: the ``nnx.Rngs`` for the parameters and dropout.
  """

  default_input_shape: tuple[int, ...] = (224, 224, 3)
  default_num_classes = 1000

  def __init__(
      self,
      *,
      num_classes: int = 1000,
      input_shape: Sequence[int] = (224, 224, 3),
      aux_heads: bool = False,
      dropout: float = 0.4,
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
        op="googlenet",
        dtype=dtype,
        param_dtype=param_dtype,
    )
    self.input_shape: tuple[int, ...] = b.shape
    self.stem: nnx.Sequential = nnx.Sequential(
        b.conv(64, 7, stride=2, padding=3),
        relu,
        b.max_pool(3, stride=2, padding="SAME"),
        b.lrn(),
        b.conv(64, 1),
        relu,
        b.conv(192, 3, padding=1),
        relu,
        b.lrn(),
        b.max_pool(3, stride=2, padding="SAME"),
    )
    inc = lambda name: Inception(*INCEPTION_CONFIGS[name], builder=b)  # noqa: E731
    self.stage3: nnx.Sequential
    self.stage3 = nnx.Sequential(inc("3a"), inc("3b"), b.max_pool(3, stride=2, padding="SAME"))
    self.inc4a: Inception = inc("4a")
    self.aux1: AuxHead | None = AuxHead(num_classes, builder=b) if aux_heads else None
    self.stage4: nnx.Sequential = nnx.Sequential(inc("4b"), inc("4c"), inc("4d"))
    self.aux2: AuxHead | None = AuxHead(num_classes, builder=b) if aux_heads else None
    self.stage5: nnx.Sequential = nnx.Sequential(
        inc("4e"),
        b.max_pool(3, stride=2, padding="SAME"),
        inc("5a"),
        inc("5b"),
        b.global_avg_pool(),
        b.dropout(dropout),
        b.fc(num_classes),
    )

  def __call__(self, x: jax.Array) -> jax.Array | tuple[jax.Array, jax.Array, jax.Array]:
    """``[N, H, W, 3]`` → logits ``[N, num_classes]`` (with ``aux_heads``, a tuple
    of the logits and the two auxiliary logits)."""
    x4a = self.inc4a(self.stage3(self.stem(x)))
    x4d = self.stage4(x4a)
    logits = as_logits(self.stage5(x4d))
    if self.aux1 is None or self.aux2 is None:  # both or neither (aux_heads)
      return logits
    return logits, as_logits(self.aux1(x4a)), as_logits(self.aux2(x4d))
