"""The static description of one convolution, as every lowering receives it."""

from __future__ import annotations

from typing import Any, NamedTuple

from jax import lax


class ConvConfig(NamedTuple):
  """One ``lax.conv_general_dilated`` call in lax's own terms, channels-last and HWIO.

  Attributes:
    stride: window stride per spatial dim.
    pads: ``(low, high)`` per spatial dim, applied to the (lhs-dilated) input; may be
      negative (a crop).
    dilation: kernel (rhs) dilation per spatial dim.
    lhs_dilation: input dilation per spatial dim (a transposed convolution's stride).
    groups: feature groups.
    precision: the contraction precision (``None``: JAX's default for the platform).
    preferred_element_type: the result dtype (``None``: the inputs' dtype).
  """

  stride: tuple[int, ...]
  pads: tuple[tuple[int, int], ...]
  dilation: tuple[int, ...]
  lhs_dilation: tuple[int, ...]
  groups: int = 1
  precision: Any = None
  preferred_element_type: Any = None

  @classmethod
  def make(
      cls,
      num_spatial,
      *,
      stride,
      pads,
      dilation=None,
      lhs_dilation=None,
      groups=1,
      precision=None,
      preferred_element_type=None,
  ) -> ConvConfig:
    ones = (1,) * num_spatial
    return cls(
        stride=tuple(int(s) for s in stride),
        pads=tuple((int(lo), int(hi)) for lo, hi in pads),
        dilation=tuple(int(t) for t in (dilation or ones)),
        lhs_dilation=tuple(int(t) for t in (lhs_dilation or ones)),
        groups=int(groups),
        precision=tuple(precision) if isinstance(precision, list) else precision,
        preferred_element_type=preferred_element_type,
    )

  @property
  def plain(self) -> bool:
    """No input dilation and no negative (cropping) padding."""
    return all(d == 1 for d in self.lhs_dilation) and all(
        lo >= 0 and hi >= 0 for lo, hi in self.pads
    )


_SPATIAL_LETTERS = {1: "W", 2: "HW", 3: "DHW"}


def dimension_numbers(num_spatial: int) -> lax.ConvDimensionNumbers:
  """lax dimension numbers for channels-last inputs and HWIO kernels."""
  letters = _SPATIAL_LETTERS[num_spatial]
  spec = (f"N{letters}C", f"{letters}IO", f"N{letters}C")
  return lax.conv_dimension_numbers((1,) * (num_spatial + 2), (1,) * (num_spatial + 2), spec)
