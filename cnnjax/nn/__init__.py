"""Flax NNX modules for every cnnjax op — thin wrappers, no maths of their own.

Parameterised layers follow ``nnx.Conv``: ``Layer(in_features, out_features,
kernel_size, *, ..., kernel_init, bias_init, use_bias, dtype, param_dtype, rngs)``
with weights as ``nnx.Param``; parameter-free layers (pooling, normalisation) take
only their configuration. Every ``__call__`` is one call into the cnnjax function.
"""

from cnnjax.nn.conv import (
    Conv,
    ConvTranspose,
    DepthwiseConv,
    LocallyConnected,
    SeparableConv,
    TiledConv,
)
from cnnjax.nn.deform import DeformConv
from cnnjax.nn.group import GroupConv, GroupPool, LiftConv
from cnnjax.nn.normalization import LocalResponseNorm
from cnnjax.nn.pooling import (
    AvgPool,
    BlurPool,
    GlobalAvgPool,
    GlobalMaxPool,
    LpPool,
    Maxout,
    MaxPool,
    PolyphaseDownsample,
)

__all__ = [
    "AvgPool",
    "BlurPool",
    "Conv",
    "ConvTranspose",
    "DeformConv",
    "DepthwiseConv",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "GroupConv",
    "GroupPool",
    "LiftConv",
    "LocalResponseNorm",
    "LocallyConnected",
    "LpPool",
    "MaxPool",
    "Maxout",
    "PolyphaseDownsample",
    "SeparableConv",
    "TiledConv",
]
