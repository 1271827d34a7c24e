"""Normalisation modules: thin Flax NNX wrappers of :mod:`cnnjax.normalization`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.typing import ArrayLike

from cnnjax.nn._dtypes import check_dtypes, compute
from cnnjax.normalization import local_response_norm

__all__ = ["LocalResponseNorm"]


class LocalResponseNorm(nnx.Module):
  """AlexNet's local response normalisation across channels,
  :func:`cnnjax.normalization.local_response_norm`.

  ``b_c = a_c / (k + α Σ_{j near c} a_j²)^β`` over ``size`` neighbouring channels;
  the defaults are the AlexNet paper's. No parameters.

  Args:
    size: the number of neighbouring channels summed over.
    alpha: the scale ``α`` (not divided by ``size``, as in the paper).
    beta: the exponent ``β``.
    k: the additive constant ``k``.
    dtype: the computation dtype: the input is cast to it (None: left as it is).
    param_dtype: accepted for a uniform interface (Flax's); this layer has no parameters.

  Example:
    >>> LocalResponseNorm()(jnp.ones((1, 27, 27, 96))).shape
    (1, 27, 27, 96)
  """

  def __init__(
      self,
      *,
      size: int = 5,
      alpha: float = 1e-4,
      beta: float = 0.75,
      k: float = 2.0,
      dtype: Any = None,
      param_dtype: Any = jnp.float32,
  ):
    self.dtype: jnp.dtype | None
    self.param_dtype: jnp.dtype
    self.dtype, self.param_dtype = check_dtypes(dtype, param_dtype, op="LocalResponseNorm")
    self.size = size
    self.alpha = alpha
    self.beta = beta
    self.k = k

  def __call__(self, x: ArrayLike) -> jax.Array:
    """``[N, *spatial, C]`` → the same shape."""
    return local_response_norm(
        compute(x, self.dtype), size=self.size, alpha=self.alpha, beta=self.beta, k=self.k
    )
