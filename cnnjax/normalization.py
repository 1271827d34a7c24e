"""Local response normalisation (Krizhevsky, Sutskever & Hinton 2012, §3.3).

``b[..., c] = a[..., c] / (k + α Σ_{j ∈ window(c)} a[..., j]²)^β``, the sum over the
``size`` channels centred on ``c`` (clipped at the first and last channel): a form of
lateral inhibition between neighbouring feature maps, used by AlexNet, ZFNet and
GoogLeNet. Inputs are batched and channels-last, ``[N, *spatial, C]``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from cnnjax import _checks

__all__ = ["local_response_norm"]


def local_response_norm(
    x: ArrayLike,
    *,
    size: int = 5,
    alpha: float = 1e-4,
    beta: float = 0.75,
    k: float = 2.0,
) -> jax.Array:
  """Local response normalisation across channels, as in the AlexNet paper.

  ``b[..., c] = a[..., c] / (k + α Σ_j a[..., j]²)^β`` with ``j`` running from
  ``c − size // 2`` to ``c + (size − 1) // 2``, clipped to the valid channels. The
  defaults are the paper's (``n = 5``, ``α = 10⁻⁴``, ``β = 0.75``, ``k = 2``).

  Caffe and PyTorch divide ``α`` by ``size`` (and Caffe's default ``k`` is 1): their
  ``LRN(size, alpha=a, k=k)`` is ``local_response_norm(x, size=size, alpha=a / size,
  k=k)`` here.

  Args:
    x: input, ``[N, *spatial, C]`` (any rank ≥ 2; the last axis is the channels).
    size: the number of neighbouring channels summed over, a positive int.
    alpha: the scale ``α`` of the sum of squares.
    beta: the exponent ``β``.
    k: the additive constant ``k``; with ``k > 0`` the denominator is never zero.

  Returns:
    An array of ``x``'s shape and (floating) dtype.

  Example:
    >>> x = jnp.ones((1, 2, 2, 3))
    >>> y = local_response_norm(x, size=3, alpha=1.0, beta=1.0, k=1.0)
    >>> [round(v, 4) for v in y[0, 0, 0].tolist()]
    [0.3333, 0.25, 0.3333]
  """
  op = "local_response_norm"
  x = jnp.asarray(x)
  size = _checks.check_positive_int(size, name="size", op=op)  # (int64: what lax takes)
  if x.ndim < 2:
    raise ValueError(
        f"{op}: x has shape {tuple(x.shape)} (rank {x.ndim}); expected rank >= 2, "
        "[N, *spatial, C] with the channels last."
    )
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.result_type(float))
  # Half-precision inputs are normalised in float32 and the result cast back.
  acc = jnp.float32 if jnp.dtype(x.dtype).itemsize < 4 else x.dtype
  a = x.astype(acc)
  window = (1,) * (x.ndim - 1) + (size,)
  pads = ((0, 0),) * (x.ndim - 1) + ((size // 2, (size - 1) // 2),)
  # A concrete zero init (NumPy, not a traced jnp value) lets lax pick its
  # differentiable windowed-sum primitive.
  sums = lax.reduce_window(jnp.square(a), np.zeros((), acc), lax.add, window, (1,) * x.ndim, pads)
  return (a / jnp.power(k + alpha * sums, beta)).astype(x.dtype)
