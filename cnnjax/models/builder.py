"""Building zoo models layer by layer while tracking the activation shape.

A :class:`LayerBuilder` knows the shape ``(*spatial, C)`` of the activation at the
point a layer is added, so a model never hard-codes the input channels of a layer,
the flattened size before its first fully connected layer, or the weight grid of a
locally connected layer. It is also where a model's convolutions are swapped for
tiled or locally connected ones (``conv="shared" | "tiled" | "local"``), for
experiments on weight sharing. Output sizes come from
:func:`cnnjax.padding.conv_geometry`, the code the ops use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from cnnjax import padding as _padding
from cnnjax.nn import (
    AvgPool,
    Conv,
    GlobalAvgPool,
    GlobalMaxPool,
    LocallyConnected,
    LocalResponseNorm,
    MaxPool,
    TiledConv,
)
from cnnjax.nn._dtypes import check_dtypes
from cnnjax.padding import PaddingLike

__all__ = ["CONV_KINDS", "LayerBuilder", "as_logits", "check_input", "check_input_shape", "flatten"]

CONV_KINDS = ("shared", "tiled", "local")
_INITS = ("lecun", "he")


def check_input_shape(input_shape: Sequence[int], *, op: str) -> tuple[int, ...]:
  """Checks an ``(H, W, C)`` input shape (any spatial rank, channels last, no batch)."""
  if (
      isinstance(input_shape, (str, int))
      or not isinstance(input_shape, Sequence)
      or not 2 <= len(input_shape) <= 4
      or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in input_shape)
  ):
    raise ValueError(
        f"{op}: input_shape got {input_shape!r}; expected (*spatial, channels) without "
        "the batch, e.g. (32, 32, 3): 2 to 4 positive ints."
    )
  return tuple(input_shape)


class LayerBuilder:
  """Creates layers for an activation of shape ``shape`` and advances the shape.

  Args:
    shape: the current activation shape without the batch, ``(*spatial, C)``, or
      ``(features,)`` after flattening.
    rngs: the ``nnx.Rngs`` the layers draw their parameters from.
    conv: ``"shared"`` (ordinary convolution), ``"tiled"`` (:class:`cnnjax.nn.TiledConv`
      with ``tile``) or ``"local"`` (:class:`cnnjax.nn.LocallyConnected`): the kind
      of every convolution :meth:`conv` creates.
    tile: the tile of ``conv="tiled"``.
    init: ``"lecun"`` (LeCun normal) or ``"he"`` (He normal, for ReLU nets) kernel
      initialisation, over one kernel's fan-in for every conv kind.
    dtype: the computation dtype of every layer it creates (None: promoted from the input
      and the parameters, as in Flax); BatchNorm computes its statistics in float32 and
      keeps its running averages in float32 whatever ``dtype``.
    param_dtype: the parameters' dtype (default float32).
    op: the model's name, for error messages.

  Example:
    >>> b = LayerBuilder((32, 32, 3), rngs=nnx.Rngs(0))
    >>> conv = b.conv(32, 5); pool = b.max_pool(2); b.shape
    (14, 14, 32)
  """

  def __init__(
      self,
      shape: Sequence[int],
      *,
      rngs: nnx.Rngs,
      conv: str = "shared",
      tile: int | Sequence[int] = 2,
      init: str = "lecun",
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
      op: str = "model",
  ) -> None:
    if conv not in CONV_KINDS:
      raise ValueError(f"{op}: conv got {conv!r}; expected one of {CONV_KINDS}.")
    if init not in _INITS:
      raise ValueError(f"{op}: init got {init!r}; expected one of {_INITS}.")
    self.shape: tuple[int, ...] = check_input_shape(shape, op=op)
    self.dtype: jnp.dtype | None
    self.param_dtype: jnp.dtype
    self.dtype, self.param_dtype = check_dtypes(dtype, param_dtype, op=op)
    self.rngs = rngs
    self.conv_kind = conv
    self.tile = tile
    self.init = init
    self.op = op

  def at(self, shape: Sequence[int]) -> LayerBuilder:
    """A builder with the same settings at another shape (for a branch)."""
    return LayerBuilder(
        tuple(shape),
        rngs=self.rngs,
        conv=self.conv_kind,
        tile=self.tile,
        init=self.init,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        op=self.op,
    )

  @property
  def dtypes(self) -> dict[str, Any]:
    """``{"dtype": ..., "param_dtype": ...}`` for a layer built outside the builder."""
    return {"dtype": self.dtype, "param_dtype": self.param_dtype}

  @property
  def spatial(self) -> tuple[int, ...]:
    return self.shape[:-1]

  @property
  def channels(self) -> int:
    return self.shape[-1]

  def _kernel_init(self, num_lead: int):
    make = nnx.initializers.he_normal if self.init == "he" else nnx.initializers.lecun_normal
    return make(batch_axis=tuple(range(num_lead)))

  def _advance(
      self,
      kernel: Sequence[int],
      *,
      stride: int | Sequence[int],
      padding: PaddingLike,
      dilation: int | Sequence[int] = 1,
      channels: int | None = None,
  ) -> None:
    geo = _padding.conv_geometry(
        self.spatial,
        kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        op=self.op,
    )
    self.shape = (*geo.out_spatial, self.channels if channels is None else channels)

  def conv(
      self,
      features: int,
      kernel_size: int | Sequence[int],
      *,
      stride: int | Sequence[int] = 1,
      padding: PaddingLike = "VALID",
      dilation: int | Sequence[int] = 1,
      groups: int = 1,
      use_bias: bool = True,
      connections: Sequence[Sequence[int]] | None = None,
  ) -> nnx.Module:
    """A convolution of the builder's kind with ``features`` output channels."""
    nd = len(self.spatial)
    kernel = (kernel_size,) * nd if isinstance(kernel_size, int) else tuple(kernel_size)
    common: dict[str, Any]
    common = dict(
        stride=stride, padding=padding, dilation=dilation, use_bias=use_bias, **self.dtypes
    )
    if self.conv_kind != "shared":
      for name, value, default in (("groups", groups, 1), ("connections", connections, None)):
        if value != default:
          raise ValueError(
              f"{self.op}: {name} got {value!r} with conv={self.conv_kind!r}; expected "
              f"{name}={default!r}: only conv='shared' supports it."
          )
    if self.conv_kind == "shared":
      layer = Conv(
          self.channels,
          features,
          kernel,
          groups=groups,
          connections=connections,
          kernel_init=self._kernel_init(0),
          rngs=self.rngs,
          **common,
      )
    elif self.conv_kind == "tiled":
      layer = TiledConv(
          self.channels,
          features,
          kernel,
          tile=self.tile,
          kernel_init=self._kernel_init(nd),
          rngs=self.rngs,
          **common,
      )
    else:
      layer = LocallyConnected(
          self.channels,
          features,
          kernel,
          input_shape=self.spatial,
          kernel_init=self._kernel_init(nd),
          rngs=self.rngs,
          **common,
      )
    self._advance(kernel, stride=stride, padding=padding, dilation=dilation, channels=features)
    return layer

  def _window(self, window: int | Sequence[int]) -> tuple[int, ...]:
    return (window,) * len(self.spatial) if isinstance(window, int) else tuple(window)

  def max_pool(
      self,
      window: int | Sequence[int],
      *,
      stride: int | Sequence[int] | None = None,
      padding: PaddingLike = "VALID",
  ) -> MaxPool:
    """Max pooling (stride defaults to the window)."""
    w = self._window(window)
    self._advance(w, stride=w if stride is None else stride, padding=padding)
    return MaxPool(window, stride=stride, padding=padding, **self.dtypes)

  def avg_pool(
      self,
      window: int | Sequence[int],
      *,
      stride: int | Sequence[int] | None = None,
      padding: PaddingLike = "VALID",
  ) -> AvgPool:
    """Average pooling (stride defaults to the window)."""
    w = self._window(window)
    self._advance(w, stride=w if stride is None else stride, padding=padding)
    return AvgPool(window, stride=stride, padding=padding, **self.dtypes)

  def global_avg_pool(self) -> GlobalAvgPool:
    """The mean over all spatial positions; the shape becomes ``(C,)``."""
    self.shape = (self.channels,)
    return GlobalAvgPool(**self.dtypes)

  def global_max_pool(self) -> GlobalMaxPool:
    """The maximum over all spatial positions; the shape becomes ``(C,)``."""
    self.shape = (self.channels,)
    return GlobalMaxPool(**self.dtypes)

  def lrn(self, **options: Any) -> LocalResponseNorm:
    """Local response normalisation (shape unchanged)."""
    return LocalResponseNorm(**{**self.dtypes, **options})

  def batch_norm(self, **options: Any) -> nnx.BatchNorm:
    """Batch normalisation over the channels (shape unchanged); momentum 0.9. In the
    builder's ``dtype``, with float32 statistics and running averages (Flax's)."""
    options = {"momentum": 0.9, "epsilon": 1e-5, **self.dtypes, **options}
    return nnx.BatchNorm(self.channels, rngs=self.rngs, **options)

  def flatten(self) -> int:
    """Marks a flatten; returns the flattened size (the model reshapes in ``__call__``)."""
    self.shape = (math.prod(self.shape),)
    return self.shape[0]

  def fc(self, features: int, *, use_bias: bool = True) -> nnx.Linear:
    """A fully connected layer on the flattened activation."""
    size = self.flatten()
    self.shape = (features,)
    return nnx.Linear(size, features, use_bias=use_bias, rngs=self.rngs, **self.dtypes)

  def dropout(self, rate: float) -> nnx.Dropout:
    """Dropout (shape unchanged); active in train mode, off after ``model.eval()``."""
    return nnx.Dropout(rate, rngs=self.rngs)


def check_input(x: jax.Array, input_shape: tuple[int, ...], *, op: str) -> None:
  """Checks that a batch ``x`` has the shape a size-aware model was built for."""
  if tuple(x.shape[1:]) != tuple(input_shape):
    raise ValueError(
        f"{op}: x has shape {tuple(x.shape)}; expected [batch, {', '.join(map(str, input_shape))}]"
        f", the input_shape={tuple(input_shape)} the model was built for (pass "
        "input_shape= when building it for another size)."
    )


def flatten(x: jax.Array) -> jax.Array:
  """``[N, ...]`` → ``[N, prod(...)]`` (the step before a model's first fc layer)."""
  return x.reshape(x.shape[0], math.prod(x.shape[1:]))  # (-1 is ambiguous for N = 0)


def as_logits(x: jax.Array) -> jax.Array:
  """A model's output in at least float32: low-precision (bfloat16, float16) logits are
  cast up, so that the softmax and the loss run in float32 whatever the model's dtype."""
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))
