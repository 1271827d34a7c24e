"""How cnnjax's ops are computed: the one place a platform-specific form is selected.

The public op files (``conv.py``, ``local.py``, ``tiled.py``, ``pooling.py``) validate their
arguments, state what they compute, and make one call in here. The forms:

- :mod:`~cnnjax._lowering.portable`: one ``lax.conv_general_dilated`` (never with
  negative padding), and the patch-matmul form that integer inputs take on every
  platform (XLA:GPU has no integer convolution; an integer ``dot_general`` works
  everywhere and is exact);
- :mod:`~cnnjax._lowering.cpu` (with :mod:`~cnnjax._lowering.cpu_bf16`,
  :mod:`~cnnjax._lowering.cpu_rows`,
  :mod:`~cnnjax._lowering.cpu_barrier` and the one
  chunking policy in :mod:`~cnnjax._lowering.chunks`): forms XLA:CPU runs faster,
  chosen by measurement; GPU and TPU never compile them (``lax.platform_dependent``);
- :mod:`~cnnjax._lowering.adjoint`, :mod:`~cnnjax._lowering.tiled`,
  :mod:`~cnnjax._lowering.unshared`: the transposed, tiled and locally connected
  convolutions, built on :func:`conv` (with derivative rules that keep reverse mode on
  fast forward convolutions);
- :mod:`~cnnjax._lowering.pooling`: the pools' one generic window pool and max pooling's
  first-maximum gradient (the same on every backend).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from cnnjax._lowering import cpu, portable
from cnnjax._lowering.config import ConvConfig, dimension_numbers

__all__ = ["ConvConfig", "conv", "dimension_numbers"]


def conv(x: jax.Array, w: jax.Array, cfg: ConvConfig, *, linear: str | None = None) -> jax.Array:
  """``lax.conv_general_dilated(x, w, cfg)``, channels-last and HWIO, on every platform.

  ``x`` and ``w`` share one dtype (integer, floating or complex). The result has
  ``cfg.preferred_element_type`` (default: that dtype).

  Args:
    linear: ``"x"`` or ``"w"``: the caller will ``jax.linear_transpose`` the result
      with respect to that operand (a custom JVP's tangent), so forms with custom VJPs
      are not used, and nothing but linear operations touches that operand.
  """
  if jnp.issubdtype(x.dtype, jnp.integer):
    return portable.patch_conv(x, w, cfg)
  return lax.platform_dependent(
      x,
      w,
      cpu=lambda x, w: cpu.conv(x, w, cfg, linear=linear),
      default=lambda x, w: portable.lax_conv(x, w, cfg),
  )
