"""VGG (Simonyan & Zisserman 2015, "Very deep convolutional networks for large-scale
image recognition", ICLR; Table 1, configurations A, A-LRN, B, D and E)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import nnx

from cnnjax.models.builder import LayerBuilder, as_logits, check_input, flatten
from cnnjax.models.registry import register

__all__ = ["CONFIGS", "VGG"]

# Table 1: the number of 3×3 conv maps per layer, "M" a 2×2 max-pool.
CONFIGS: dict[str, tuple[int | Literal["M"], ...]] = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "E": (
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ),
}


class VGG(nnx.Module):
  """VGG-11/13/16/19 (configurations A, B, D, E of Simonyan & Zisserman 2015).

  Stacks of conv(3, C, p1) + ReLU separated by 2×2 max pooling, then fc(4096) →
  fc(4096) → fc(num_classes) with ReLU and dropout 0.5. VGG-16 has 138,357,544
  parameters at 224×224×3 with 1000 classes. Zoo names: ``"vgg11"``, ``"vgg11-lrn"``
  (A-LRN: local response normalisation after the first conv), ``"vgg13"``,
  ``"vgg16"``, ``"vgg19"``.

  Args:
    config: ``"A"``, ``"B"``, ``"D"`` or ``"E"``.
    num_classes: the number of outputs (default 1000).
    input_shape: ``(H, W, C)``, default ``(224, 224, 3)``; any size divisible by 32
      keeps every pool exact (``(32, 32, 3)`` gives a 1×1×512 map before the fc).
    lrn: A-LRN's normalisation after the first conv.
    batch_norm: add batch normalisation after every conv (not in the paper).
    hidden: the width of the two hidden fc layers (default 4096).
    dropout: the dropout rate of the fc layers.
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
      config: str = "D",
      num_classes: int = 1000,
      input_shape: Sequence[int] = (224, 224, 3),
      lrn: bool = False,
      batch_norm: bool = False,
      hidden: int = 4096,
      dropout: float = 0.5,
      conv: str = "shared",
      tile: int | Sequence[int] = 2,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      rngs: nnx.Rngs,
  ):
    if config not in CONFIGS:
      raise ValueError(f"vgg: config got {config!r}; expected one of {tuple(CONFIGS)}.")
    b = LayerBuilder(
        input_shape,
        rngs=rngs,
        conv=conv,
        tile=tile,
        init="he",
        op="vgg",
        dtype=dtype,
        param_dtype=param_dtype,
    )
    self.input_shape: tuple[int, ...] = b.shape
    self.config = config
    layers = []
    for i, item in enumerate(CONFIGS[config]):
      if item == "M":
        layers.append(b.max_pool(2))
        continue
      layers.append(b.conv(item, 3, padding=1))
      if batch_norm:
        layers.append(b.batch_norm())
      layers.append(jax.nn.relu)
      if lrn and i == 0:
        layers.append(b.lrn())
    layers += [
        flatten,
        b.fc(hidden),
        jax.nn.relu,
        b.dropout(dropout),
        b.fc(hidden),
        jax.nn.relu,
        b.dropout(dropout),
        b.fc(num_classes),
    ]
    self.layers: nnx.Sequential = nnx.Sequential(*layers)

  def __call__(self, x: jax.Array) -> jax.Array:
    """``[N, H, W, C]`` → logits ``[N, num_classes]``."""
    check_input(x, self.input_shape, op="vgg")
    return as_logits(self.layers(x))


register("vgg11", VGG, config="A")
register("vgg11-lrn", VGG, config="A", lrn=True)
register("vgg13", VGG, config="B")
register("vgg16", VGG, config="D")
register("vgg19", VGG, config="E")
