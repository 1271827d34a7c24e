"""Patch extraction by shifted strided slices (im2col without a gather).

One strided slice of the padded input per kernel offset: slice ``k`` holds
``x̃[b, n·s + k·t, c]`` for every output position ``n``. On XLA:CPU this is far
faster to differentiate than ``lax.conv_general_dilated_patches`` (whose backward is
a convolution with a one-hot kernel), and every op that needs the input seen through
a window (locally connected, im2col convolution) builds on it.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
from jax import lax

from cnnjax.padding import Geometry

__all__ = ["extract_patches", "shifted_slices"]


def shifted_slices(x_padded: jax.Array, geo: Geometry) -> list[jax.Array]:
  """The input seen at each kernel offset.

  Args:
    x_padded: the already padded input, ``[N, *geo.padded_spatial, C]``.
    geo: the op's geometry (from :func:`cnnjax.padding.conv_geometry`).

  Returns:
    ``prod(geo.kernel)`` arrays ``[N, *geo.out_spatial, C]``, kernel offsets in
    row-major order (the order of ``w.reshape(-1, C_in, C_out)`` for a
    ``[*kernel, C_in, C_out]`` kernel).
  """
  slices = []
  for offset in itertools.product(*(range(k) for k in geo.kernel)):
    start = (0, *(o * t for o, t in zip(offset, geo.dilation, strict=True)), 0)
    limit = (
        x_padded.shape[0],
        *(
            st + (m - 1) * s + 1
            for st, m, s in zip(start[1:-1], geo.out_spatial, geo.stride, strict=True)
        ),
        x_padded.shape[-1],
    )
    slices.append(lax.slice(x_padded, start, limit, (1, *geo.stride, 1)))
  return slices


def extract_patches(x_padded: jax.Array, geo: Geometry) -> jax.Array:
  """Stacks :func:`shifted_slices` into ``[N, *geo.out_spatial, prod(geo.kernel), C]``."""
  return jnp.stack(shifted_slices(x_padded, geo), axis=-2)
