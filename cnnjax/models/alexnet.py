"""AlexNet (CaffeNet variant) and ZFNet: the ImageNet nets of 2012 and 2013.

- AlexNet: Krizhevsky, Sutskever & Hinton 2012, "ImageNet classification with deep
  convolutional neural networks", NeurIPS; as the BVLC CaffeNet reference model
  (Jia et al. 2014, Caffe), which pools *before* normalising.
- ZFNet: Zeiler & Fergus 2014, "Visualizing and understanding convolutional
  networks", ECCV; the variant with 512, 1024, 512 maps in layers 3–5 (as taught in
  CS231n).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from cnnjax.models.builder import LayerBuilder, as_logits, check_input, flatten
from cnnjax.models.registry import register

__all__ = ["AlexNet", "ZFNet"]


relu: Callable[[jax.Array], jax.Array] = jax.nn.relu


def _classifier(b: LayerBuilder, num_classes: int, dropout: float) -> list[Any]:
  return [
      flatten,
      b.fc(4096),
      relu,
      b.dropout(dropout),
      b.fc(4096),
      relu,
      b.dropout(dropout),
      b.fc(num_classes),
  ]


@register("alexnet")
class AlexNet(nnx.Module):
  """AlexNet as the CaffeNet reference model (Krizhevsky et al. 2012; Jia et al. 2014).

  conv(11, 96, s4) → pool(3, 2) → LRN → conv(5, 256, p2) → pool(3, 2) → LRN →
  conv(3, 384, p1) → conv(3, 384, p1) → conv(3, 256, p1) → pool(3, 2) → fc(4096) →
  fc(4096) → fc(num_classes), ReLU after every conv and hidden fc, dropout 0.5 before
  the last two fc layers; on 227×227×3 crops. 62,378,344 parameters (1000 classes);
  with the paper's two-GPU grouping (``groups=2`` on conv 2, 4 and 5) 60,965,224.

  Args:
    num_classes: the number of outputs (default 1000).
    input_shape: ``(H, W, C)``, default ``(227, 227, 3)``.
    groups: feature groups of conv 2, 4 and 5 (2 is the paper's two-GPU split).
    dropout: the dropout rate of the fc layers.
    lrn: options for :class:`cnnjax.nn.LocalResponseNorm` (default the paper's
      ``size=5, alpha=1e-4, beta=0.75, k=2``).
    conv: ``"shared"``, ``"tiled"`` or ``"local"`` convolutions.
    tile: the tile of ``conv="tiled"``.
    dtype: the computation dtype, e.g. ``"bfloat16"`` (None: float32, from the
      parameters); BatchNorm statistics and the logits stay float32.
    param_dtype: the parameters' dtype (default float32).
    rngs: the ``nnx.Rngs`` for the parameters and dropout.
  """

  default_input_shape: tuple[int, ...] = (227, 227, 3)
  default_num_classes = 1000

  def __init__(
      self,
      *,
      num_classes: int = 1000,
      input_shape: Sequence[int] = (227, 227, 3),
      groups: int = 1,
      dropout: float = 0.5,
      lrn: dict[str, Any] | None = None,
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
        op="alexnet",
        dtype=dtype,
        param_dtype=param_dtype,
    )
    self.input_shape: tuple[int, ...] = b.shape
    lrn = dict(lrn or {})
    self.layers: nnx.Sequential = nnx.Sequential(
        b.conv(96, 11, stride=4),
        relu,
        b.max_pool(3, stride=2),
        b.lrn(**lrn),
        b.conv(256, 5, padding=2, groups=groups),
        relu,
        b.max_pool(3, stride=2),
        b.lrn(**lrn),
        b.conv(384, 3, padding=1),
        relu,
        b.conv(384, 3, padding=1, groups=groups),
        relu,
        b.conv(256, 3, padding=1, groups=groups),
        relu,
        b.max_pool(3, stride=2),
        *_classifier(b, num_classes, dropout),
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    """``[N, 227, 227, 3]`` → logits ``[N, num_classes]``."""
    check_input(x, self.input_shape, op="alexnet")
    return as_logits(self.layers(x))


@register("zfnet")
class ZFNet(nnx.Module):
  """ZFNet (Zeiler & Fergus 2014), with 512, 1024, 512 maps in layers 3–5.

  conv(7, 96, s2, p1) → pool(3, 2, p1) → LRN → conv(5, 256, s2) → pool(3, 2, p1) → LRN
  → conv(3, 512, p1) → conv(3, 1024, p1) → conv(3, 512, p1) → pool(3, 2) → fc(4096) →
  fc(4096) → fc(num_classes), ReLU after every conv and hidden fc, dropout 0.5; on
  224×224×3 images (110 → 55 → 26 → 13 → 6 spatially, as in the paper's Figure 3).

  Args:
    num_classes: the number of outputs (default 1000).
    input_shape: ``(H, W, C)``, default ``(224, 224, 3)``.
    dropout: the dropout rate of the fc layers.
    lrn: options for :class:`cnnjax.nn.LocalResponseNorm`.
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
      dropout: float = 0.5,
      lrn: dict[str, Any] | None = None,
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
        op="zfnet",
        dtype=dtype,
        param_dtype=param_dtype,
    )
    self.input_shape: tuple[int, ...] = b.shape
    lrn = dict(lrn or {})
    self.layers: nnx.Sequential = nnx.Sequential(
        b.conv(96, 7, stride=2, padding=1),
        relu,
        b.max_pool(3, stride=2, padding=1),
        b.lrn(**lrn),
        b.conv(256, 5, stride=2),
        relu,
        b.max_pool(3, stride=2, padding=1),
        b.lrn(**lrn),
        b.conv(512, 3, padding=1),
        relu,
        b.conv(1024, 3, padding=1),
        relu,
        b.conv(512, 3, padding=1),
        relu,
        b.max_pool(3, stride=2),
        *_classifier(b, num_classes, dropout),
    )

  def __call__(self, x: jax.Array) -> jax.Array:
    """``[N, 224, 224, 3]`` → logits ``[N, num_classes]``."""
    check_input(x, self.input_shape, op="zfnet")
    return as_logits(self.layers(x))
