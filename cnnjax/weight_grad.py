"""The weight gradient of a convolution, as the lecture derives it: a correlation.

For ``y = cross_correlate(x, w)`` and an output gradient ``g = ∂L/∂y``,

    ``∂L/∂w[k, c, o] = Σ_b Σ_n x̃[b, n·s + k·t, c] · g[b, n, o]``,

the padded input ``x̃`` correlated with the output gradient: the kernel offsets ``k``
play the output positions, the output positions ``n`` the kernel offsets, the batch
the channels. So it is one :func:`cnnjax.cross_correlate` with the batch and channel
axes of ``x̃`` swapped, ``g`` as the kernel, the forward stride as the dilation and the
forward dilation as the stride.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from cnnjax import _checks
from cnnjax import padding as _padding
from cnnjax.conv import cross_correlate
from cnnjax.padding import PaddingLike

__all__ = ["conv_weight_grad"]


def conv_weight_grad(
    x: ArrayLike,
    g: ArrayLike,
    kernel_shape: Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: PaddingLike = "VALID",
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
) -> jax.Array:
  """``∂⟨g, cross_correlate(x, w, ...)⟩ / ∂w``, as a correlation of ``x`` with ``g``.

  ``dw[k, c, o] = Σ_b Σ_n x̃[b, n·s + k·t, c] · g[b, n, o]`` (within each feature group),
  the gradient backpropagation gives the kernel, without ``jax.grad``. The result does
  not depend on ``w``, only on its shape.

  Args:
    x: the forward input, ``[N, *spatial, C_in]`` with 1, 2 or 3 spatial dims.
    g: the output gradient, ``[N, *out_spatial, C_out]``, shaped like the forward output.
    kernel_shape: the kernel's shape, ``(*kernel, C_in // groups, C_out)``.
    stride, padding, dilation, groups, padding_mode: the forward op's settings, as
      :func:`cnnjax.cross_correlate`.

  Returns:
    ``dw``, ``[*kernel, C_in // groups, C_out]``, in the dtype
    :func:`cnnjax.cross_correlate` computes ``x`` and ``g`` in.

  Example:
    >>> x = jnp.arange(5.).reshape(1, 5, 1); g = jnp.ones((1, 3, 1))
    >>> conv_weight_grad(x, g, (3, 1, 1))[:, 0, 0].tolist()
    [3.0, 6.0, 9.0]
  """
  op = "conv_weight_grad"
  x, g = jnp.asarray(x), jnp.asarray(g)
  if (
      isinstance(kernel_shape, str)
      or not isinstance(kernel_shape, Sequence)
      or len(kernel_shape) not in (3, 4, 5)
      or not all(_checks.is_int(v) and 1 <= v <= _checks.INT64_MAX for v in kernel_shape)
  ):
    raise ValueError(
        f"{op}: kernel_shape got {kernel_shape!r}; expected 3, 4 or 5 positive ints, "
        "(*kernel(d), C_in // groups, C_out) with d = 1, 2 or 3 spatial dims, each at most "
        "2**63 - 1."
    )
  kernel_shape = tuple(int(v) for v in kernel_shape)
  num_spatial = len(kernel_shape) - 2
  _padding.check_spatial_rank(x, num_spatial, name="x", op=op)
  _padding.check_spatial_rank(g, num_spatial, name="g", op=op)
  _padding.check_padding_mode(padding_mode, op=op)
  *kernel, cg, c_out = kernel_shape
  groups = _checks.check_groups(groups, x.shape[-1], cg, c_out, op=op)
  geo = _padding.conv_geometry(
      x.shape[1:-1],
      kernel,
      stride=stride,
      padding=padding,
      dilation=dilation,
      op=op,
  )
  expected = (x.shape[0], *geo.out_spatial, c_out)
  if tuple(g.shape) != expected:
    raise ValueError(
        f"{op}: g has shape {tuple(g.shape)}; expected {expected}, the shape of the "
        f"forward output for x of shape {tuple(x.shape)} and kernel_shape "
        f"{kernel_shape}."
    )
  _checks.compute_dtype(x, g, op=op, names=("x", "g"))  # refuses bool and the like
  n = x.shape[0]
  if n == 0:
    dtype = _checks.compute_dtype(x, g, op=op, names=("x", "g"))
    return jnp.zeros(kernel_shape, dtype)
  xp = _padding.pad_spatial(x, geo.pads, padding_mode)
  # x̃ [N, *P, G·cg] → [cg, *P, G·N]: the batch becomes the channels, group-major.
  xt = xp.reshape(n, *xp.shape[1:-1], groups, cg)
  xt = jnp.moveaxis(xt, (0, -2, -1), (-1, -2, 0)).reshape(cg, *xp.shape[1:-1], groups * n)
  # g [N, *out, C_out] → [*out, N, C_out]: a kernel with N inputs per group.
  gt = jnp.moveaxis(g, 0, -2)
  dw = cross_correlate(xt, gt, stride=geo.dilation, dilation=geo.stride, groups=groups)
  # [cg, *span, C_out]: the stride may leave trailing positions no output read.
  dw = dw[(slice(None), *(slice(0, k) for k in kernel))]
  return jnp.moveaxis(dw, 0, -2)
