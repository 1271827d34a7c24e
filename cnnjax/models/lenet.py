"""LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998, "Gradient-based learning applied to
document recognition", Proc. IEEE 86(11), §II.B and Table I)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from cnnjax.models.builder import LayerBuilder, as_logits, check_input, flatten
from cnnjax.models.registry import register
from cnnjax.nn import AvgPool

__all__ = ["C3_TABLE", "LeNet5"]


def _c3_table() -> tuple[tuple[int, ...], ...]:
  """Table I of the paper: which of S2's 6 maps (rows) feed each of C3's 16 (columns).

  Maps 0–5 see 3 contiguous S2 maps, 6–11 see 4 contiguous ones, 12–14 see 4
  non-contiguous ones and map 15 sees all 6 (60 connections).
  """
  sets = [{j % 6, (j + 1) % 6, (j + 2) % 6} for j in range(6)]
  sets += [{j % 6, (j + 1) % 6, (j + 2) % 6, (j + 3) % 6} for j in range(6)]
  sets += [{0, 1, 3, 4}, {1, 2, 4, 5}, {0, 2, 3, 5}, set(range(6))]
  return tuple(tuple(int(i in s) for s in sets) for i in range(6))


C3_TABLE = _c3_table()

_ACTIVATIONS = ("scaled_tanh", "tanh", "relu")


def scaled_tanh(x: jax.Array) -> jax.Array:
  """The paper's squashing function ``f(a) = A tanh(S a)``, ``A = 1.7159``, ``S = 2/3``."""
  return 1.7159 * jnp.tanh(x * (2.0 / 3.0))


@register("lenet5")
class LeNet5(nnx.Module):
  """LeNet-5 (LeCun et al. 1998).

  C1 conv(5, 6) → S2 avg(2) → C3 conv(5, 16) → S4 avg(2) → C5 conv(5, 120) → F6 fc(84)
  → fc(num_classes), on 32×32×1 images, with the paper's scaled tanh after every
  layer but the last. 61,706 parameters with a fully connected C3 (the default);
  60,806 with the paper's partial connection table (``connection_table=True``; C3
  then has the paper's 1,516 trainable parameters). Simplifications: the
  subsampling layers are plain average pooling (the paper's have a trainable
  coefficient and bias per map) and the output is a linear layer (the paper's is a
  layer of Euclidean RBF units).

  Args:
    num_classes: the number of outputs.
    input_shape: ``(H, W, C)``, default ``(32, 32, 1)``.
    connection_table: use Table I's partial connections between S2 and C3.
    activation: ``"scaled_tanh"`` (the paper's), ``"tanh"`` or ``"relu"``.
    conv: ``"shared"``, ``"tiled"`` or ``"local"`` convolutions.
    tile: the tile of ``conv="tiled"``.
    dtype: the computation dtype, e.g. ``"bfloat16"`` (None: float32, from the
      parameters); BatchNorm statistics and the logits stay float32.
    param_dtype: the parameters' dtype (default float32).
    rngs: the ``nnx.Rngs`` for the parameters.
  """

  default_input_shape: tuple[int, ...] = (32, 32, 1)
  default_num_classes = 10

  def __init__(
      self,
      *,
      num_classes: int = 10,
      input_shape: Sequence[int] = (32, 32, 1),
      connection_table: bool = False,
      activation: str = "scaled_tanh",
      conv: str = "shared",
      tile: int | Sequence[int] = 2,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      rngs: nnx.Rngs,
  ):
    if activation not in _ACTIVATIONS:
      raise ValueError(f"lenet5: activation got {activation!r}; expected one of {_ACTIVATIONS}.")
    b = LayerBuilder(
        input_shape,
        rngs=rngs,
        conv=conv,
        tile=tile,
        op="lenet5",
        dtype=dtype,
        param_dtype=param_dtype,
    )
    self.input_shape: tuple[int, ...] = b.shape
    self.activation = activation
    self.c1: nnx.Module = b.conv(6, 5)
    self.s2: AvgPool = b.avg_pool(2)
    self.c3: nnx.Module = b.conv(16, 5, connections=C3_TABLE if connection_table else None)
    self.s4: AvgPool = b.avg_pool(2)
    self.c5: nnx.Module = b.conv(120, 5)
    self.f6: nnx.Linear = b.fc(84)
    self.output: nnx.Linear = b.fc(num_classes)

  def __call__(self, x: jax.Array) -> jax.Array:
    """``[N, 32, 32, 1]`` → logits ``[N, num_classes]``."""
    check_input(x, self.input_shape, op="lenet5")
    f = {"scaled_tanh": scaled_tanh, "tanh": jnp.tanh, "relu": jax.nn.relu}[self.activation]
    x = self.s2(f(self.c1(x)))
    x = self.s4(f(self.c3(x)))
    x = f(self.c5(x))
    x = f(self.f6(flatten(x)))
    return as_logits(self.output(x))
