"""Shared helpers of the tests of cnnjax._lowering (tests/_lowering/test_lowering*.py):
the lax anchor every form is checked against, random arrays and configurations, the
text of lowered and compiled programs, and the hypothesis cases."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume
from hypothesis import strategies as st
from jax import lax

from cnnjax._lowering.config import ConvConfig

_SETTINGS = dict(
    deadline=None,
    max_examples=8,
    suppress_health_check=[HealthCheck.differing_executors, HealthCheck.too_slow],
)
_LETTERS = {1: "W", 2: "HW", 3: "DHW"}


def lax_reference(x, w, *, stride, pads, dilation=None, groups=1, lhs_dilation=None):
  """The anchor: one lax.conv_general_dilated, channels-last and HWIO, spelled out.

  The input is dilated and padded by ``lax.pad`` first: XLA:CPU (jaxlib 0.10.2) aborts
  compiling some convolutions given their padding and dilation, and jax's input
  gradients of some strided ones (``workarounds.aborts``), never these.
  """
  nd = w.ndim - 2
  letters = _LETTERS[nd]
  ld = lhs_dilation or (1,) * nd
  x = lax.pad(
      x,
      jnp.zeros((), x.dtype),
      [(0, 0, 0), *((lo, hi, d - 1) for (lo, hi), d in zip(pads, ld, strict=True)), (0, 0, 0)],
  )
  return lax.conv_general_dilated(
      x,
      w,
      window_strides=stride,
      padding=((0, 0),) * nd,
      rhs_dilation=dilation or (1,) * nd,
      dimension_numbers=(f"N{letters}C", f"{letters}IO", f"N{letters}C"),
      feature_group_count=groups,
      precision=lax.Precision.HIGHEST,
  )


def _random(shape, seed=0, dtype=np.float64):
  return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def _cfg(nd, **config):
  return ConvConfig.make(nd, **config)


def _jit(f, **config):
  """jit with static configuration: one compile per example, not one per primitive."""
  return jax.jit(functools.partial(f, **config))


def _count(text, op):
  return len(re.findall(rf"stablehlo\.{op}\b", text))


def _lowered_text(f, *args, platform="cpu"):
  """The StableHLO of ``f`` lowered for ``platform`` (on any host)."""
  return jax.jit(f).trace(*args).lower(lowering_platforms=(platform,)).as_text()


# The jaxlib releases whose XLA:CPU program text the compiled-program checks were written
# against; elsewhere they skip (a jaxlib upgrade fails the suite on numerics, which every
# form's tests check, not on the text of an optimised program).
PROGRAM_TEXT_JAXLIB = ("0.10.2",)


def _cpu_compiled_text(f, *args):
  """The optimised HLO of ``f`` as XLA:CPU compiles it, on any host (the arguments are
  committed to a CPU device; accelerator hosts have one too)."""
  if jax.lib.__version__ not in PROGRAM_TEXT_JAXLIB:
    pytest.skip(
        f"matches XLA:CPU's program text as jaxlib {PROGRAM_TEXT_JAXLIB} compiles "
        f"it; jaxlib {jax.lib.__version__} writes other text"
    )
  cpu = jax.devices("cpu")[0]
  return jax.jit(f).lower(*jax.device_put(args, cpu)).compile().as_text()


# ------------------------------------------------------------- hypothesis cases


@st.composite
def lowering_cases(draw, *, groups=(1, 2, 3), negative_pads=False, lhs_dilation=False):
  """Tiny settings in lax's own terms: explicit (low, high) pads, groups, multipliers."""
  nd = draw(st.integers(1, 3))
  kernel = [draw(st.integers(1, 3)) for _ in range(nd)]
  stride = [draw(st.integers(1, 3)) for _ in range(nd)]
  dilation = [draw(st.integers(1, 2)) for _ in range(nd)]
  lhs = [draw(st.integers(1, 2)) if lhs_dilation else 1 for _ in range(nd)]
  low = -1 if negative_pads else 0
  pads = [(draw(st.integers(low, 2)), draw(st.integers(low, 2))) for _ in range(nd)]
  max_extra = {1: 5, 2: 3, 3: 1}[nd]
  sizes = [draw(st.integers(1, 2 + max_extra)) for _ in range(nd)]
  r_eff = [(r - 1) * t + 1 for r, t in zip(kernel, dilation, strict=True)]
  assume(
      all(
          (n - 1) * ld + 1 + lo + hi >= r
          for n, ld, (lo, hi), r in zip(sizes, lhs, pads, r_eff, strict=True)
      )
  )
  g = draw(st.sampled_from(groups))
  c_in_per_group = draw(st.integers(1, 2))
  c_out = g * draw(st.integers(1, 2))
  return dict(
      x_shape=(draw(st.integers(1, 3)), *sizes, g * c_in_per_group),
      w_shape=(*kernel, c_in_per_group, c_out),
      config=dict(
          stride=tuple(stride),
          pads=tuple(pads),
          dilation=tuple(dilation),
          groups=g,
          lhs_dilation=tuple(lhs),
      ),
  )


def _arrays(case, dtype=np.float64):
  return _random(case["x_shape"], 0, dtype), _random(case["w_shape"], 1, dtype)


def _lax_padding(x_shape, w_shape, kw):
  """Resolves the public padding spec into lax's (low, high) pairs, independently."""
  nd = len(w_shape) - 2
  tup = lambda v: (v,) * nd if isinstance(v, int) else tuple(v)
  stride, dilation = tup(kw.get("stride", 1)), tup(kw.get("dilation", 1))
  r_eff = [(r - 1) * t + 1 for r, t in zip(w_shape[:nd], dilation, strict=True)]
  padding = kw.get("padding", "VALID")
  if padding == "FULL":
    pads = [(r - 1, r - 1) for r in r_eff]
  elif isinstance(padding, str):
    pads = lax.padtype_to_pads(x_shape[1:-1], r_eff, stride, padding)
  elif isinstance(padding, int):
    pads = [(padding, padding)] * nd
  else:
    pads = [tuple(p) for p in padding]
  return dict(stride=stride, dilation=dilation, pads=tuple(pads), groups=kw.get("groups", 1))
