"""Tests for cnnjax._lowering: each form against lax, the selection, and the programs.

``cnnjax._lowering.conv`` computes ``lax.conv_general_dilated`` with the form each platform
runs best: integer inputs as an exact patch matmul (every platform), XLA:CPU's forms
(depthwise as shifted-slice multiply-adds, 1×1 as a matmul, bfloat16 stride-1 convolutions
as patch matmuls with custom VJPs, VALID-like and narrow float convolutions with a
row-stacked input gradient) on CPU, one ``lax.conv_general_dilated`` elsewhere.
Each form, called directly and through the public ops, is checked against a
``lax.conv_general_dilated`` call written here (float64) over a hypothesis grid of dims,
kernels, strides, dilations, paddings (including negative, cropping pads and
``lhs_dilation`` for the transposed convolution), groups and channel multipliers; plus
gradients (forward and reverse mode, second order), vmap, dtypes, and the structure of
the programs lowered for CPU and for GPU/TPU (lowered explicitly for each platform, so
these hold on any host).
"""

import contextlib
import functools
import json
import os
import re
import subprocess
import sys
import textwrap
import unittest.mock

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jax import lax
from jax.test_util import check_grads

from cnnjax import _lowering, cpu_forms
from cnnjax._lowering import (adjoint, cpu, cpu_barrier, cpu_bf16, cpu_rows, workarounds,
                              portable)
from cnnjax._lowering.chunks import batch_chunks
from cnnjax._lowering.config import ConvConfig
from cnnjax.conv import conv_transpose, convolve, cross_correlate
from cnnjax.pooling import max_pool
from cnnjax.tiled import tiled_conv
from references import assert_close, on_cpu

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
  x = lax.pad(x, jnp.zeros((), x.dtype),
              [(0, 0, 0), *((lo, hi, d - 1) for (lo, hi), d in zip(pads, ld)), (0, 0, 0)])
  return lax.conv_general_dilated(
      x, w,
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
    pytest.skip(f"matches XLA:CPU's program text as jaxlib {PROGRAM_TEXT_JAXLIB} compiles "
                f"it; jaxlib {jax.lib.__version__} writes other text")
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
  r_eff = [(r - 1) * t + 1 for r, t in zip(kernel, dilation)]
  assume(all(
      (n - 1) * ld + 1 + lo + hi >= r
      for n, ld, (lo, hi), r in zip(sizes, lhs, pads, r_eff)
  ))
  g = draw(st.sampled_from(groups))
  c_in_per_group = draw(st.integers(1, 2))
  c_out = g * draw(st.integers(1, 2))
  return dict(
      x_shape=(draw(st.integers(1, 3)), *sizes, g * c_in_per_group),
      w_shape=(*kernel, c_in_per_group, c_out),
      config=dict(
          stride=tuple(stride), pads=tuple(pads), dilation=tuple(dilation), groups=g,
          lhs_dilation=tuple(lhs),
      ),
  )


def _arrays(case, dtype=np.float64):
  return _random(case["x_shape"], 0, dtype), _random(case["w_shape"], 1, dtype)


# ------------------------------------------------------- each form vs lax


class FormsMatchLaxTest(chex.TestCase):

  @settings(**_SETTINGS)
  @given(lowering_cases(negative_pads=True, lhs_dilation=True))
  def test_portable_lax_form(self, case):
    x, w = _arrays(case)
    want = lax_reference(x, w, **case["config"])
    cfg = _cfg(len(case["w_shape"]) - 2, **case["config"])
    if on_cpu():  # XLA:CPU aborts on these; the CPU lowering pads them first (SwapDefectTest)
      assume(not workarounds.aborts(x.shape, w.shape, cfg))
    got = jax.jit(portable.lax_conv, static_argnums=2)(x, w, cfg)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)

  @settings(**_SETTINGS)
  @given(lowering_cases(negative_pads=True, lhs_dilation=True))
  def test_patch_form(self, case):
    x, w = _arrays(case)
    want = lax_reference(x, w, **case["config"])
    cfg = _cfg(len(case["w_shape"]) - 2, **case["config"])
    got = jax.jit(portable.patch_conv, static_argnums=2)(x, w, cfg)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)

  @settings(**_SETTINGS)
  @given(lowering_cases(negative_pads=True, lhs_dilation=True))
  def test_cpu_form(self, case):
    x, w = _arrays(case)
    want = lax_reference(x, w, **case["config"])
    cfg = _cfg(len(case["w_shape"]) - 2, **case["config"])
    got = jax.jit(cpu.conv, static_argnums=2)(x, w, cfg)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)

  @settings(**_SETTINGS)
  @given(lowering_cases(groups=(1, 2, 3)), st.integers(1, 3))
  def test_depthwise_form(self, case, multiplier):
    # Depthwise: groups == C_in, one input channel per group, any channel multiplier.
    c_in = case["x_shape"][-1]
    x = _random(case["x_shape"], 0)
    w = _random((*case["w_shape"][:-2], 1, c_in * multiplier), 1)
    config = dict(case["config"], groups=c_in)
    want = lax_reference(x, w, **config)
    cfg = _cfg(x.ndim - 2, **config)
    for form in (cpu.depthwise_conv, cpu.conv):
      got = jax.jit(form, static_argnums=2)(x, w, cfg)
      np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)

  @settings(**_SETTINGS)
  @given(lowering_cases(negative_pads=True, lhs_dilation=True),
         st.sampled_from([np.int8, np.int16, np.int32, np.int64, np.uint8]))
  def test_integer_inputs_are_exact(self, case, dtype):
    # Integers take the patch form on every platform (XLA:GPU has no integer
    # convolution); narrow types accumulate in int32 and wrap only when cast back.
    rng = np.random.default_rng(3)
    lo = 0 if np.issubdtype(dtype, np.unsignedinteger) else -4
    x = rng.integers(lo, 5, case["x_shape"]).astype(dtype)
    w = rng.integers(lo, 5, case["w_shape"]).astype(dtype)
    cfg = _cfg(len(case["w_shape"]) - 2, **case["config"])
    want = lax_reference(x.astype(np.float64), w.astype(np.float64), **case["config"])
    got = jax.jit(_lowering.conv, static_argnums=2)(x, w, cfg)
    self.assertEqual(got.dtype, dtype)
    np.testing.assert_array_equal(got, np.round(want).astype(np.int64).astype(dtype))
    wide = jax.jit(_lowering.conv, static_argnums=2)(
        x, w, cfg._replace(preferred_element_type=jnp.dtype(np.int64)))
    np.testing.assert_array_equal(wide, np.round(want).astype(np.int64))

  def test_batch_chunks_cover_the_batch(self):
    self.assertEqual(batch_chunks(7, 10, chunk_bytes=30, max_chunks=3), [(0, 2), (2, 5), (5, 7)])
    self.assertEqual(batch_chunks(7, 10, chunk_bytes=10), [(i, i + 1) for i in range(7)])
    self.assertEqual(batch_chunks(40, 10, chunk_bytes=1, max_chunks=5),
                     [(0, 8), (8, 16), (16, 24), (24, 32), (32, 40)])
    self.assertEqual(batch_chunks(0, 10, chunk_bytes=1), [(0, 0)])

  def test_opt_out_gives_the_portable_form(self):
    x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 1, 8))
    cfg = _cfg(2, stride=(1, 1), pads=((1, 1), (1, 1)), groups=4)
    f = lambda: functools.partial(cpu.conv, cfg=cfg)  # a new function: no cached trace
    self.assertEqual(_count(_lowered_text(f(), x, w), "convolution"), 0)
    with cpu_forms(False):
      self.assertEqual(_count(_lowered_text(f(), x, w), "convolution"), 1)


# ------------------------------------ convolutions XLA:CPU aborts compiling from lax


@st.composite
def swap_defect_cases(draw, *, tiled=False):
  """2-D and 3-D convolutions with one dimension XLA:CPU's operand swap mishandles in
  jax's input gradient (a 2-row kernel, stride 2, padding (1, 1) or (1, 2), an even
  size other than 2), beside any other dims. ``tiled``: a tiled convolution whose phase
  convolutions are such (stride 1 and tile 2 there, so that the phases have stride 2)."""
  nd = draw(st.integers(2, 3))
  special = draw(st.integers(0, nd - 1))
  sizes, kernel, stride, pads, tile = [], [], [], [], []
  for i in range(nd):
    if i == special:
      k, s, n, lo, hi = 2, 1 if tiled else 2, 2 * draw(st.integers(2, 3)), 1, draw(
          st.integers(0 if tiled else 1, 2))
      t = 2
    else:
      k, s = draw(st.integers(1, 4 if nd == 2 else 3)), draw(st.integers(1, 2))
      lo, hi = draw(st.integers(0, k)), draw(st.integers(0, k))
      n = draw(st.integers(max(1, k - lo - hi), k + 2))
      t = draw(st.integers(1, 2))
    sizes.append(n), kernel.append(k), stride.append(s), pads.append((lo, hi)), tile.append(t)
  c_in = draw(st.integers(1, 2))
  return dict(x_shape=(draw(st.integers(1, 2)), *sizes, c_in),
              w_shape=(*kernel, c_in, draw(st.integers(1, 2))),
              stride=tuple(stride), pads=tuple(pads), tile=tuple(tile))


class SwapDefectTest(chex.TestCase):
  """XLA:CPU (jaxlib 0.10.2) aborts the process compiling jax's input gradient of such
  convolutions (and some lhs-dilated ones): ``workarounds.aborts`` names them and ``cpu.conv``
  pads them first. A worker crash here is that defect back."""

  @settings(**_SETTINGS)
  @given(swap_defect_cases(), st.booleans())
  def test_gradients_compile_and_match_the_references(self, case, forms_on):
    # The CPU forms on and off: cross_correlate's output and both gradients, and
    # conv_transpose's output, against NumPy loops of the definitions; float64 exactly,
    # float32 and bfloat16 within their rounding (of the references on rounded inputs).
    from references import (  # noqa: PLC0415
        ref_correlate, ref_correlate_adjoint, ref_correlate_weight_grad)
    kw = dict(stride=case["stride"], padding=case["pads"])
    f = lambda x, w: cross_correlate(x, w, **kw)
    step = lambda x, w, g: (lambda y, vjp: (y, *vjp(g)))(*jax.vjp(f, x, w))
    x_shape = case["x_shape"]
    adjoint = lambda g, w: conv_transpose(g, w, input_shape=x_shape[1:-1], **kw)
    x, w = _random(x_shape), _random(case["w_shape"], 1)
    g = _random(jax.eval_shape(f, x, w).shape, 2)
    for dtype in (np.float64, jnp.float32, jnp.bfloat16):
      xs, ws, gs = (np.asarray(a.astype(dtype), np.float64) for a in (x, w, g))
      with cpu_forms(forms_on):
        got = jax.jit(step)(*(a.astype(dtype) for a in (xs, ws, gs)))
        got = (*got, jax.jit(adjoint)(gs.astype(dtype), ws.astype(dtype)))
      dx = ref_correlate_adjoint(gs, ws, x_shape, **kw)
      want = (ref_correlate(xs, ws, **kw), dx,
              ref_correlate_weight_grad(xs, gs, ws.shape[:-2], **kw), dx)
      for a, b in zip(got, want):
        self.assertEqual(a.dtype, dtype)
        assert_close(a, b, dtype)

  @settings(**_SETTINGS)
  @given(swap_defect_cases(tiled=True))
  def test_tiled_conv_gradients_compile_and_are_its_adjoints(self, case):
    # tiled_conv's custom JVP takes the weight tangent through the CPU lowering (linear
    # in w): the gradients are the adjoints of the NumPy reference, <dx, u> =
    # <ref(u, w), g> and <dw, v> = <ref(x, v), g>.
    from references import ref_tiled  # noqa: PLC0415
    kw = dict(stride=case["stride"], padding=case["pads"], tile=case["tile"])
    x = _random(case["x_shape"])
    w = _random(case["tile"] + case["w_shape"], 1)
    y, vjp = jax.jit(lambda x, w: jax.vjp(functools.partial(tiled_conv, **kw), x, w))(x, w)
    np.testing.assert_allclose(y, ref_tiled(x, w, **kw), rtol=1e-10, atol=1e-10)
    g = _random(y.shape, 2)
    dx, dw = jax.jit(vjp)(g)
    u, v = _random(x.shape, 3), _random(w.shape, 4)
    np.testing.assert_allclose(np.vdot(dx, u), np.vdot(ref_tiled(u, w, **kw), g), rtol=1e-9)
    np.testing.assert_allclose(np.vdot(dw, v), np.vdot(ref_tiled(x, v, **kw), g), rtol=1e-9)

  def test_the_rule(self):
    x, w = (1, 4, 4, 1), (2, 3, 1, 1)
    cfg = lambda **c: _cfg(2, **dict(dict(stride=(2, 1), pads=((1, 1), (0, 0))), **c))
    self.assertTrue(workarounds.aborts(x, w, cfg()))
    self.assertTrue(workarounds.aborts(x, w, cfg(pads=((1, 2), (0, 0)))))
    self.assertTrue(workarounds.aborts((1, 1, 4, 6), (2, 2, 2, 6), cfg(stride=(2, 2), pads=((1, 1),) * 2)))
    self.assertFalse(workarounds.aborts((1, 5, 4, 1), w, cfg()))  # odd size: the gradient is padded
    self.assertFalse(workarounds.aborts(x, w, cfg(pads=((0, 1), (0, 0)))))
    self.assertFalse(workarounds.aborts(x, w, cfg(stride=(1, 1))))
    self.assertFalse(workarounds.aborts(x, w, cfg(dilation=(2, 1))))
    self.assertFalse(workarounds.aborts((1, 4, 1), (2, 1, 1), _cfg(1, stride=(2,), pads=((1, 1),))))
    self.assertFalse(workarounds.aborts((1, 6, 6, 1), (2, 2, 1, 1), cfg(stride=(2, 2),
                                                                pads=((1, 1),) * 2)))
    # An lhs-dilated convolution (conv_transpose's): window 2 = input dilation, stride 1,
    # no padding, an input size other than 2 (and the old case: window over 1 row).
    lhs = lambda **c: cfg(stride=(1, 1), lhs_dilation=(2, 1), **c)
    self.assertTrue(workarounds.aborts((1, 3, 2, 1), w, lhs(pads=((0, 0), (0, 0)))))
    self.assertFalse(workarounds.aborts((1, 2, 2, 1), w, lhs(pads=((0, 0), (0, 0)))))
    self.assertFalse(workarounds.aborts((1, 3, 2, 1), w, lhs(pads=((1, 1), (0, 0)))))


# --------------------------------------------------- the public ops on CPU vs lax


_PUBLIC_CASES = (
    dict(testcase_name="3x3_same", x=(4, 9, 9, 4), w=(3, 3, 4, 5), kw=dict(padding="SAME")),
    dict(testcase_name="strided_dilated", x=(3, 11, 10, 2), w=(3, 2, 2, 3),
         kw=dict(stride=(2, 3), dilation=(2, 1), padding=((1, 2), (0, 1)))),
    dict(testcase_name="grouped", x=(2, 8, 8, 4), w=(3, 3, 2, 6),
         kw=dict(groups=2, padding=1)),
    dict(testcase_name="depthwise", x=(2, 8, 7, 3), w=(3, 3, 1, 6),
         kw=dict(groups=3, padding="SAME", stride=2)),
    dict(testcase_name="one_by_one", x=(3, 7, 7, 4), w=(1, 1, 4, 5),
         kw=dict(stride=2, padding=1)),
    dict(testcase_name="conv1d", x=(3, 17, 3), w=(4, 3, 2),
         kw=dict(dilation=3, padding="FULL")),
    dict(testcase_name="conv3d", x=(2, 5, 6, 4, 2), w=(2, 3, 2, 2, 3),
         kw=dict(stride=(1, 2, 1), padding="SAME")),
)


def _lax_padding(x_shape, w_shape, kw):
  """Resolves the public padding spec into lax's (low, high) pairs, independently."""
  nd = len(w_shape) - 2
  tup = lambda v: (v,) * nd if isinstance(v, int) else tuple(v)
  stride, dilation = tup(kw.get("stride", 1)), tup(kw.get("dilation", 1))
  r_eff = [(r - 1) * t + 1 for r, t in zip(w_shape[:nd], dilation)]
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


class PublicOpsOnCpuTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*_PUBLIC_CASES)
  def test_cross_correlate_matches_lax(self, x, w, kw):
    xs, ws = _random(x), _random(w, 1)
    want = lax_reference(xs, ws, **_lax_padding(x, w, kw))
    got = self.variant(functools.partial(cross_correlate, **kw))(xs, ws)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*_PUBLIC_CASES)
  def test_convolve_matches_lax_of_the_flipped_kernel(self, x, w, kw):
    xs, ws = _random(x), _random(w, 1)
    flipped = np.flip(ws, axis=tuple(range(len(w) - 2)))
    want = lax_reference(xs, flipped, **_lax_padding(x, w, kw))
    got = self.variant(functools.partial(convolve, **kw))(xs, ws)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*_PUBLIC_CASES)
  def test_conv_transpose_is_the_vjp_of_lax(self, x, w, kw):
    xs, ws = _random(x), _random(w, 1)
    cfg = _lax_padding(x, w, kw)
    y, vjp = jax.vjp(lambda x: lax_reference(x, ws, **cfg), xs)
    ct = _random(y.shape, 2)
    (want,) = vjp(ct)
    config = {k: v for k, v in kw.items() if k in ("stride", "padding", "dilation", "groups")}
    got = self.variant(
        functools.partial(conv_transpose, input_shape=x[1:-1], **config)
    )(ct, ws)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)

  def test_float32_matches_lax_within_tolerance(self):
    # The main benchmark shape at a tiny batch; float32, as users run it, with the
    # precision pinned (the suite's default, conftest.py) and with the platform's default.
    x, w = _random((2, 16, 16, 32), 0, np.float32), _random((3, 3, 32, 16), 1, np.float32)
    want = lax_reference(x.astype(np.float64), w.astype(np.float64),
                         stride=(1, 1), pads=((1, 1), (1, 1)))
    f = jax.jit(functools.partial(cross_correlate, padding="SAME"))
    got = f(x, w)
    self.assertEqual(got.dtype, jnp.float32)
    assert_close(got, want, np.float32, precision="highest")
    with jax.default_matmul_precision("default"):
      got = jax.jit(functools.partial(cross_correlate, padding="SAME"))(x, w)
    assert_close(got, want, np.float32)  # TF32 on NVIDIA GPUs, bf16 passes on TPU


# ------------------------------------------------------------ transformations


class TransformTest(chex.TestCase):

  @parameterized.named_parameters(
      dict(testcase_name="split", x=(3, 5, 5, 2), w=(3, 3, 2, 2), kw=dict(padding=1)),
      dict(testcase_name="depthwise", x=(2, 5, 5, 2), w=(3, 3, 1, 4),
           kw=dict(groups=2, stride=2, padding="SAME")),
      dict(testcase_name="one_by_one", x=(2, 5, 5, 2), w=(1, 1, 2, 3), kw=dict(stride=2)),
  )
  def test_grads_fwd_and_rev(self, x, w, kw):
    args = (_random(x), _random(w, 1))
    f = jax.jit(functools.partial(cross_correlate, **kw))
    check_grads(f, args, order=1, modes=("fwd", "rev"))
    if w[0] > 1 and kw.get("groups", 1) == 1:
      check_grads(f, args, order=2, modes=("rev",))

  @parameterized.named_parameters(*_PUBLIC_CASES)
  def test_grad_matches_grad_of_lax(self, x, w, kw):
    xs, ws = _random(x), _random(w, 1)
    cfg = _lax_padding(x, w, kw)
    loss = lambda f: (lambda x, w: jnp.sum(jnp.sin(f(x, w))))
    want = jax.grad(loss(lambda x, w: lax_reference(x, w, **cfg)), (0, 1))(xs, ws)
    got = jax.jit(jax.grad(loss(functools.partial(cross_correlate, **kw)), (0, 1)))(xs, ws)
    for g, r in zip(got, want):
      np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10)

  @parameterized.named_parameters(
      dict(testcase_name="stride2_same", kw=dict(stride=2, padding="SAME"), y=(2, 3, 3, 2),
           w=(3, 3, 2, 2), x=(6, 6)),
      dict(testcase_name="dilated_grouped", kw=dict(stride=(2, 3), dilation=(1, 2),
           groups=2, padding=((1, 0), (2, 1))), y=(1, 3, 2, 4), w=(2, 3, 2, 4), x=(6, 6)),
      dict(testcase_name="conv1d_dropped", kw=dict(stride=3, padding="VALID"),
           y=(2, 3, 2), w=(2, 3, 2), x=(8,)),
  )
  def test_conv_transpose_grads_match_lax(self, kw, y, w, x):
    # conv_transpose has a custom JVP (fast weight gradient on XLA:CPU); its derivatives
    # must equal those of the vjp of lax's forward convolution.
    ys, ws = _random(y, 3), _random(w, 4)
    cfg = _lax_padding((1, *x, 1), w, kw)
    xs = np.zeros((y[0], *x, w[-2] * cfg["groups"]))
    g = _random(xs.shape, 5)

    def lax_adjoint(y, w):
      return jax.vjp(lambda x: lax_reference(x, w, **cfg), xs)[1](y)[0]

    ours = functools.partial(conv_transpose, input_shape=x, **kw)
    loss = lambda f: (lambda y, w: jnp.sum(jnp.sin(f(y, w)) * g))
    want = jax.grad(loss(lax_adjoint), (0, 1))(ys, ws)
    got = jax.jit(jax.grad(loss(ours), (0, 1)))(ys, ws)
    for a, b in zip(got, want):
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    # Forward mode, one tangent at a time and both (symbolic zeros in the custom JVP).
    jvp = lambda f, t: jax.jvp(f, (ys, ws), t)[1]
    for t in ((ys, np.zeros_like(ws)), (np.zeros_like(ys), ws), (ys, ws)):
      np.testing.assert_allclose(jax.jit(jvp, static_argnums=0)(ours, t), jvp(lax_adjoint, t),
                                 rtol=1e-10, atol=1e-10)
    # vmap over the batch, one kernel per example: the weight gradient per example.
    w_stack = np.stack([ws * (i + 1) for i in range(y[0])])
    vloss = lambda w: jnp.sum(jnp.sin(jax.vmap(ours)(ys[:, None], w)))
    grad_v = jax.jit(jax.grad(vloss))(w_stack)
    grad_0 = jax.grad(lambda w: jnp.sum(jnp.sin(ours(ys[:1], w))))(w_stack[0])
    np.testing.assert_allclose(grad_v[0], grad_0, rtol=1e-10, atol=1e-10)

  def test_conv_transpose_second_order(self):
    # Forward over reverse through the custom JVP: the Hessian in w equals lax's.
    ys, ws, g = _random((1, 3, 2), 3), _random((2, 3, 2), 4), _random((1, 7, 3), 5)

    def lax_adjoint(y, w):
      x = np.zeros((1, 7, 3))
      fwd = lambda x: lax_reference(x, w, stride=(3,), pads=((1, 0),))
      return jax.vjp(fwd, x)[1](y)[0]

    ours = functools.partial(conv_transpose, stride=3, padding=((1, 0),), input_shape=(7,))
    hess = lambda f: jax.hessian(lambda w: jnp.sum(jnp.sin(f(ys, w)) * g))(ws)
    np.testing.assert_allclose(jax.jit(hess, static_argnums=0)(ours), hess(lax_adjoint),
                               rtol=1e-10, atol=1e-10)
    check_grads(jax.jit(ours), (ys, ws), order=1, modes=("fwd", "rev"))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      dict(testcase_name="split", w=(3, 3, 2, 2), kw=dict(padding="SAME")),
      dict(testcase_name="depthwise", w=(3, 3, 1, 2), kw=dict(groups=2)),
      dict(testcase_name="one_by_one", w=(1, 1, 2, 3), kw=dict(stride=2)),
  )
  def test_vmap(self, w, kw):
    xs, ws = _random((3, 2, 6, 6, 2)), _random((3, *w), 1)
    f = functools.partial(cross_correlate, **kw)
    got = self.variant(jax.vmap(f))(xs, ws)
    for i in range(3):
      np.testing.assert_allclose(got[i], f(xs[i], ws[i]), rtol=1e-10, atol=1e-10)

  @parameterized.product(
      dtype=(jnp.float32, jnp.bfloat16, jnp.float64, jnp.int32),
      case=("split", "depthwise", "one_by_one"),
  )
  def test_dtype_is_kept_and_close_to_lax(self, dtype, case):
    w_shape, kw = {
        "split": ((3, 3, 2, 4), dict(padding="SAME")),
        "depthwise": ((3, 3, 1, 4), dict(groups=2, padding="SAME")),
        "one_by_one": ((1, 1, 2, 4), {}),
    }[case]
    x = jnp.asarray(np.round(_random((2, 6, 6, 2)) * 3)).astype(dtype)
    w = jnp.asarray(np.round(_random(w_shape, 1) * 3)).astype(dtype)
    got = jax.jit(functools.partial(cross_correlate, **kw))(x, w)
    self.assertEqual(got.dtype, dtype)
    cfg = _lax_padding(x.shape, w_shape, kw)
    want = lax_reference(np.asarray(x, np.float64), np.asarray(w, np.float64), **cfg)
    # Integer-valued inputs: exact in every dtype but bfloat16 (8-bit mantissa).
    tol = 0.1 if dtype == jnp.bfloat16 else 0
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=tol, atol=tol)


# ------------------------------------------- bfloat16 patch matmuls on XLA:CPU


@pytest.fixture(autouse=True)
def _bf16_matmul_units(request):
  """The bf16 tests run the patch path whatever this CPU has (it only sets the speed)."""
  if request.cls is not None and request.cls.__name__ == "Bf16PatchLoweringTest":
    with cpu_forms(bf16_matmul=True):
      yield
  else:
    yield


@contextlib.contextmanager
def tiny_bf16_chunks():
  """Makes the bf16 patch-matmul lowering take one example per chunk."""
  saved = cpu_bf16._CHUNK_BYTES
  cpu_bf16._CHUNK_BYTES = 1
  try:
    yield
  finally:
    cpu_bf16._CHUNK_BYTES = saved


@st.composite
def bf16_patch_cases(draw):
  """Configurations the bf16 lowering takes: stride 1, no dilation, 0 <= pad < kernel."""
  nd = draw(st.integers(1, 3))
  kernel = [draw(st.integers(1, 3)) for _ in range(nd)]
  assume(np.prod(kernel) > 1)
  pads = tuple((draw(st.integers(0, k - 1)), draw(st.integers(0, k - 1))) for k in kernel)
  sizes = [draw(st.integers(max(1, k - lo - hi), k + 3)) for k, (lo, hi) in zip(kernel, pads)]
  c_in, c_out = draw(st.integers(1, 5)), draw(st.integers(1, 4))
  return dict(
      x_shape=(draw(st.integers(1, 3)), *sizes, c_in),
      w_shape=(*kernel, c_in, c_out),
      config=dict(stride=(1,) * nd, pads=pads, dilation=(1,) * nd, groups=1),
  )


def _bf16_arrays(case):
  """bf16 inputs and the same values in float32 (the reference computes on those)."""
  x, w = _arrays(case, np.float32)
  x, w = jnp.asarray(x, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16)
  return x, w, x.astype(jnp.float32), w.astype(jnp.float32)


def _assert_bf16_close(got, want, *, rtol=2 ** -7):
  """bf16 result vs a float32 reference: within bf16 rounding of the largest entry."""
  assert got.dtype == jnp.bfloat16, got.dtype
  want = np.asarray(want, np.float32)
  scale = max(float(np.max(np.abs(want))), 1e-6)
  np.testing.assert_allclose(np.asarray(got, np.float32), want, rtol=rtol, atol=rtol * scale)


class Bf16PatchLoweringTest(chex.TestCase):

  @settings(**_SETTINGS)
  @given(bf16_patch_cases(), st.booleans())
  def test_forward_matches_lax(self, case, chunked):
    x, w, x32, w32 = _bf16_arrays(case)
    cfg = _cfg(x.ndim - 2, **case["config"])
    self.assertTrue(cpu_bf16.applies(x, w, cfg))
    want = lax_reference(x32, w32, **case["config"])
    with tiny_bf16_chunks() if chunked else contextlib.nullcontext():
      got = jax.jit(cpu.conv, static_argnums=2)(x, w, cfg)
    _assert_bf16_close(got, want)

  @settings(**_SETTINGS)
  @given(bf16_patch_cases(), st.booleans())
  def test_gradients_match_lax(self, case, chunked):
    x, w, x32, w32 = _bf16_arrays(case)
    y, vjp_ref = jax.vjp(lambda x, w: lax_reference(x, w, **case["config"]), x32, w32)
    ct = jnp.asarray(_random(y.shape, 2, np.float32), jnp.bfloat16)
    want_x, want_w = vjp_ref(ct.astype(jnp.float32))
    conv = functools.partial(cpu.conv, cfg=_cfg(x.ndim - 2, **case["config"]))
    with tiny_bf16_chunks() if chunked else contextlib.nullcontext():
      got_x, got_w = jax.jit(lambda x, w, ct: jax.vjp(conv, x, w)[1](ct))(x, w, ct)
    _assert_bf16_close(got_x, want_x)
    _assert_bf16_close(got_w, want_w)

  def test_public_ops_and_second_order(self):
    # cross_correlate (3×3: SAME, VALID, asymmetric pads) and convolve in bf16 take the
    # patch path and agree with lax; so do second derivatives, which reverse mode takes
    # through the custom VJPs' own backward passes.
    x, w, x32, w32 = _bf16_arrays(dict(x_shape=(5, 7, 6, 3), w_shape=(3, 3, 3, 4)))
    for padding in ("SAME", "VALID", ((0, 2), (1, 0))):
      f = functools.partial(cross_correlate, padding=padding)
      cfg = _lax_padding(x.shape, w.shape, dict(padding=padding))
      _assert_bf16_close(jax.jit(f)(x, w), lax_reference(x32, w32, **cfg))
      text = _lowered_text(f, x, w)
      self.assertEqual(_count(text, "convolution"), 0)
      # and its gradients (conv_transpose's custom JVP transposes the tangents, so
      # those take lax's convolution): reverse mode works (it raised before).
      ct = jnp.ones_like(jax.jit(f)(x, w))
      gy, gw = jax.jit(jax.grad(lambda y, w: jnp.sum(
          conv_transpose(y, w, padding=padding, input_shape=x.shape[1:-1]).astype(
              jnp.float32) * x32), argnums=(0, 1)))(ct, w)
      want_y, want_w = jax.grad(lambda y, w: jnp.sum(jax.vjp(
          lambda x: lax_reference(x, w, **cfg), x32)[1](y)[0] * x32), argnums=(0, 1))(
              ct.astype(jnp.float32), w32)
      _assert_bf16_close(gy, want_y, rtol=2 ** -5)
      _assert_bf16_close(gw, want_w, rtol=2 ** -5)
      self.assertGreaterEqual(_count(text, "bitcast_convert"), 2)
    flipped = jnp.flip(w32, (0, 1))
    _assert_bf16_close(
        jax.jit(functools.partial(convolve, padding="SAME"))(x, w),
        lax_reference(x32, flipped, **_lax_padding(x.shape, w.shape, dict(padding="SAME"))),
    )

    def second_order(conv):
      def h(x, w):
        gx, gw = jax.grad(lambda x, w: jnp.sum(jnp.sin(conv(x, w).astype(jnp.float32))),
                          argnums=(0, 1))(x, w)
        return jnp.sum(gx.astype(jnp.float32) ** 2) + jnp.sum(gw.astype(jnp.float32) ** 2)
      return jax.jit(jax.grad(h, argnums=(0, 1)))

    # C_in < C_out takes lax's convolution for the input gradient, C_in >= C_out patches.
    for x_shape, w_shape in (((5, 7, 6, 3), (3, 3, 3, 4)), ((3, 6, 5, 4), (2, 3, 4, 2))):
      x, w, x32, w32 = _bf16_arrays(dict(x_shape=x_shape, w_shape=w_shape))
      cfg = _lax_padding(x.shape, w.shape, dict(padding="SAME"))
      got = second_order(functools.partial(cross_correlate, padding="SAME"))(x, w)
      want = second_order(lambda x, w: lax_reference(x, w, **cfg))(x32, w32)
      for g, r in zip(got, want):
        _assert_bf16_close(g, r, rtol=2 ** -5)  # three bf16 roundings deep

  def test_conv_transpose_gradients_through_the_module(self):
    # Reverse mode through bf16 conv_transpose with stride 1 raised NotImplementedError
    # (no transpose rule for custom_vjp_call): its custom JVP transposes its tangents.
    from flax import nnx  # noqa: PLC0415
    import cnnjax.nn  # noqa: PLC0415
    y = jnp.asarray(_random((2, 6, 6, 4), 3, np.float32), jnp.bfloat16)
    module = cnnjax.nn.ConvTranspose(4, 3, 3, padding="SAME", rngs=nnx.Rngs(0))
    loss = lambda m, y: jnp.sum(jnp.sin(m(y).astype(jnp.float32)))
    grads, gy = jax.jit(nnx.grad(loss, argnums=(0, 1)))(module, y)
    self.assertEqual(gy.dtype, jnp.bfloat16)
    module32 = cnnjax.nn.ConvTranspose(4, 3, 3, padding="SAME", rngs=nnx.Rngs(0))
    grads32, gy32 = nnx.grad(loss, argnums=(0, 1))(module32, y.astype(jnp.float32))
    _assert_bf16_close(gy, gy32, rtol=2 ** -5)
    np.testing.assert_allclose(np.asarray(grads.kernel[...], np.float32),
                               grads32.kernel[...], rtol=2 ** -5,
                               atol=2 ** -5 * float(np.abs(grads32.kernel[...]).max()))

  def test_configurations_it_leaves_to_lax(self):
    # float32, strides, dilations, groups and pads of a whole kernel or more keep their
    # lowerings; a 1×1 kernel stays a plain matmul.
    x = jnp.ones((2, 8, 8, 4), jnp.bfloat16)
    w = jnp.ones((3, 3, 4, 4), jnp.bfloat16)
    base = dict(stride=(1, 1), pads=((1, 1), (1, 1)), dilation=(1, 1), groups=1)
    applies = lambda x, w, **c: cpu_bf16.applies(x, w, _cfg(2, **c))
    self.assertTrue(applies(x, w, **base))
    self.assertFalse(applies(x.astype(jnp.float32), w, **base))
    for change in (dict(stride=(2, 1)), dict(dilation=(1, 2)), dict(groups=2),
                   dict(pads=((3, 0), (1, 1))), dict(lhs_dilation=(2, 1)),
                   dict(preferred_element_type=jnp.dtype(jnp.float32)),
                   dict(preferred_element_type=jnp.dtype(jnp.float64))):  # == None in NumPy
      self.assertFalse(applies(x, w, **{**base, **change}))
    self.assertTrue(applies(x, w, **base, preferred_element_type=jnp.dtype(jnp.bfloat16)))
    self.assertFalse(applies(x, w[:1, :1], **base))
    with cpu_forms(bf16_matmul=False):
      self.assertFalse(applies(x, w, **base))  # not asked for (no AMX / AVX512-BF16)
    text = _lowered_text(functools.partial(cross_correlate, stride=2, padding="SAME"), x, w)
    self.assertGreaterEqual(_count(text, "convolution"), 1)

  def test_chunks_cover_the_batch(self):
    x, w, x32, w32 = _bf16_arrays(dict(x_shape=(7, 5, 5, 2), w_shape=(3, 3, 2, 3)))
    cfg = dict(stride=(1, 1), pads=((1, 1), (1, 1)), dilation=(1, 1), groups=1)
    # A new partial per call: jit caches traces by function, and the chunk size is global.
    conv = lambda: functools.partial(cpu.conv, cfg=_cfg(2, **cfg))
    # On XLA:CPU, the only backend that runs this form: an accelerator's GEMMs may pick
    # another accumulation order per shape.
    x, w = jax.device_put((x, w), jax.devices("cpu")[0])
    whole = jax.jit(conv())(x, w)
    with tiny_bf16_chunks():
      chunked = jax.jit(conv())(x, w)
      text = _lowered_text(conv(), x, w)
    self.assertEqual(_count(text, "dot_general"), 7)
    np.testing.assert_array_equal(np.asarray(chunked, np.float32), np.asarray(whole, np.float32))
    _assert_bf16_close(chunked, lax_reference(x32, w32, **cfg))
    # An empty batch gives an empty result, and empty gradients.
    y, vjp = jax.vjp(conv(), x[:0], w)
    self.assertEqual(y.shape, (0, 5, 5, 3))
    gx, gw = vjp(y)
    self.assertEqual(gx.shape, (0, 5, 5, 2))
    np.testing.assert_array_equal(np.asarray(gw, np.float32), 0)


# ----------------------------------------------------- which program is lowered


class LoweredProgramTest(chex.TestCase):

  @parameterized.parameters("cuda", "rocm", "tpu")
  def test_other_platforms_get_one_lax_convolution(self, platform):
    x, w = jnp.ones((64, 8, 8, 4)), jnp.ones((3, 3, 4, 4))
    for f in (
        functools.partial(cross_correlate, padding="SAME", stride=2, dilation=1),
        functools.partial(convolve, padding="SAME"),
        functools.partial(cross_correlate, padding=1, padding_mode="circular"),
    ):
      text = _lowered_text(f, x, w, platform=platform)
      self.assertEqual(_count(text, "convolution"), 1)
      self.assertEqual(_count(text, "dot_general"), 0)
      if "padding_mode" not in f.keywords:  # circular padding concatenates; zeros don't
        self.assertEqual(_count(text, "concatenate"), 0)
    dw = jnp.ones((3, 3, 1, 4))
    text = _lowered_text(functools.partial(cross_correlate, groups=4), x, dw, platform=platform)
    self.assertEqual(_count(text, "convolution"), 1)
    text = _lowered_text(
        functools.partial(conv_transpose, stride=2, padding="SAME"), x, w, platform=platform
    )
    self.assertEqual(_count(text, "convolution"), 1)

  @parameterized.parameters("cpu", "cuda", "rocm", "tpu")
  def test_integers_take_the_patch_form_everywhere(self, platform):
    # XLA:GPU has no integer convolution (cuDNN: int8 only), so an integer convolution
    # must never reach one; every conv-family op becomes patches and a dot_general.
    x, w = jnp.ones((2, 8, 8, 4), jnp.int32), jnp.ones((3, 3, 4, 4), jnp.int32)
    for f in (
        functools.partial(cross_correlate, padding="SAME", stride=2),
        functools.partial(convolve, padding="SAME", preferred_element_type=jnp.int64),
        functools.partial(cross_correlate, groups=2, padding=1),
        functools.partial(conv_transpose, stride=2, padding="SAME"),
    ):
      text = _lowered_text(f, x, w[..., :2, :] if "groups" in f.keywords else w,
                           platform=platform)
      self.assertEqual(_count(text, "convolution"), 0)
      self.assertGreaterEqual(_count(text, "dot_general"), 1)

  def test_cpu_depthwise_and_one_by_one_have_no_convolution(self):
    x = jnp.ones((2, 8, 8, 4))
    text = _lowered_text(functools.partial(cross_correlate, groups=4), x, jnp.ones((3, 3, 1, 8)))
    self.assertEqual(_count(text, "convolution"), 0)
    text = _lowered_text(cross_correlate, x, jnp.ones((1, 1, 4, 8)))
    self.assertEqual(_count(text, "convolution"), 0)
    self.assertEqual(_count(text, "dot_general"), 1)

  def test_cpu_general_case_is_one_convolution(self):
    # No batch chunks any more (they stopped paying with Eigen's convolutions).
    x, w = jnp.ones((64, 8, 8, 16)), jnp.ones((3, 3, 16, 16))
    text = _lowered_text(functools.partial(cross_correlate, padding="SAME"), x, w)
    self.assertEqual(_count(text, "convolution"), 1)


@pytest.mark.parametrize("name", ["cross_correlate", "conv_transpose", "locally_connected",
                                  "tiled_conv"])
def test_default_precision_is_within_the_backends_tolerance(name):
  # The suite pins precision="highest" (conftest.py); users get the platform's default:
  # float32 on CPU, TF32 on NVIDIA GPUs, bf16 passes on TPU (references.tolerance).
  import cnnjax  # noqa: PLC0415
  from references import ref_correlate_adjoint, ref_local, ref_tiled  # noqa: PLC0415
  rng = np.random.default_rng(11)
  x = rng.normal(size=(2, 8, 8, 16)).astype(np.float32)
  if name == "cross_correlate":
    w = rng.normal(size=(3, 3, 16, 8)).astype(np.float32)
    f = functools.partial(cnnjax.cross_correlate, padding="SAME")
    want = lax_reference(x.astype(np.float64), w.astype(np.float64), stride=(1, 1),
                         pads=((1, 1), (1, 1)))
  elif name == "conv_transpose":
    w = rng.normal(size=(3, 3, 8, 16)).astype(np.float32)
    f = functools.partial(cnnjax.conv_transpose, stride=2, padding="SAME")
    want = ref_correlate_adjoint(x, w, (2, 16, 16, 8), stride=2, padding="SAME")
  elif name == "locally_connected":
    w = rng.normal(size=(6, 6, 3, 3, 16, 8)).astype(np.float32)
    f, want = cnnjax.locally_connected, ref_local(x, w)
  else:
    w = rng.normal(size=(2, 2, 3, 3, 16, 8)).astype(np.float32)
    f = functools.partial(cnnjax.tiled_conv, tile=2, padding="SAME")
    want = ref_tiled(x, w, tile=2, padding="SAME")
  with jax.default_matmul_precision("default"):
    got = jax.jit(f)(x, w)
  assert got.dtype == jnp.float32
  assert_close(got, want, np.float32)
  got = jax.jit(functools.partial(f, precision="highest"))(x, w)
  assert_close(got, want, np.float32, precision="highest")


# ------------------------------------------ row-stacked forms on CPU (issue 19)


@st.composite
def rows_cases(draw):
  """2-D, stride-1 convolutions the row-stacked forms take, with every plan."""
  kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 4)))
  pads = tuple((draw(st.integers(0, k)), draw(st.integers(0, k))) for k in kernel)
  sizes = [draw(st.integers(max(1, k - lo - hi), k + 3)) for k, (lo, hi) in zip(kernel, pads)]
  how = cpu_rows.Plan(forward=draw(st.sampled_from(["rows", "lax"])),
                      input_grad=draw(st.sampled_from(["rows", "lax"])),
                      weight_chunks=draw(st.integers(1, 4)), dw_barrier=draw(st.booleans()),
                      dx_barrier=draw(st.booleans()))
  c_in = draw(st.integers(1, 3))
  stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
  if stride != (1, 1):  # the stacked forms are stride-1 forms; dw chunks take any stride
    how = how._replace(forward="lax", input_grad="lax")
  case = dict(x_shape=(draw(st.integers(1, 3)), *sizes, c_in),
              w_shape=(*kernel, c_in, draw(st.integers(1, 3))), pads=pads, how=how,
              stride=stride)
  # cpu.conv pads these first and never hands them to cpu_rows (SwapDefectTest).
  assume(not workarounds.aborts(case["x_shape"], case["w_shape"], _cfg(2, stride=stride, pads=pads)))
  return case


def _rows_fns(case):
  cfg = _cfg(2, stride=case.get("stride", (1, 1)), pads=case["pads"])
  f = lambda x, w: cpu_rows.conv(x, w, cfg, case["how"])
  # One program: the output and both gradients, as a train step takes them.
  return f, jax.jit(lambda x, w, g: (lambda y, vjp: (y, *vjp(g)))(*jax.vjp(f, x, w)))


def _rows_references(x, w, g, case):
  from references import (  # noqa: PLC0415
      ref_correlate, ref_correlate_adjoint, ref_correlate_weight_grad)
  pads = [list(p) for p in case["pads"]]
  stride = case.get("stride", (1, 1))
  return (ref_correlate(x, w, stride=stride, padding=pads),
          ref_correlate_adjoint(g, w, x.shape, stride=stride, padding=pads),
          ref_correlate_weight_grad(x, g, w.shape[:2], stride=stride, padding=pads))


class RowStackedFormsTest(chex.TestCase):

  @settings(**_SETTINGS)
  @given(rows_cases())
  def test_output_and_gradients_match_the_references(self, case):
    # float64: forward, input gradient and weight gradient of every plan (row-stacked or
    # blocked forward, row-stacked input gradient, any batch chunks, more chunks than
    # examples) against NumPy loops of the definitions.
    x, w = _arrays(case)
    f, step = _rows_fns(case)
    g = _random(jax.eval_shape(f, x, w).shape, 2)
    for got, want in zip(step(x, w, g), _rows_references(x, w, g, case)):
      self.assertEqual(got.dtype, jnp.float64)
      assert_close(got, want)

  @parameterized.named_parameters(
      dict(testcase_name="seed_cnn_conv2", x=(3, 14, 14, 8), w=(5, 5, 8, 16), pads=((0, 0),) * 2),
      dict(testcase_name="seed_cnn_conv1", x=(2, 16, 16, 3), w=(5, 5, 3, 8), pads=((0, 0),) * 2),
      dict(testcase_name="asymmetric_pads", x=(5, 9, 8, 4), w=(4, 3, 4, 6),
           pads=((2, 0), (1, 2))),
  )
  def test_float32_within_rounding(self, x, w, pads):
    # float32, as training runs it: within float32 rounding of float64 references, for
    # the plan the rule picks and for every form switched on.
    case = dict(x_shape=x, w_shape=w, pads=pads)
    xs, ws = _arrays(case, np.float32)
    for how in (cpu_rows.plan(x, w, _cfg(2, stride=(1, 1), pads=pads)),
                cpu_rows.Plan("rows", "rows", 3, dx_barrier=True),
                cpu_rows.Plan("lax", "lax", 2, True)):
      f, step = _rows_fns(dict(case, how=how))
      g = _random(jax.eval_shape(f, xs, ws).shape, 2, np.float32)
      for got, want in zip(step(xs, ws, g), _rows_references(xs, ws, g, case)):
        self.assertEqual(got.dtype, jnp.float32)
        assert_close(got, want, np.float32)

  def test_forward_mode_second_order_vmap_and_linear_transpose(self):
    # The tangent is made of transposable JAX ops: forward mode, reverse mode, second
    # order and vmap all work, and so does linear_transpose of the linearized map.
    x, w = _random((2, 6, 5, 2)), _random((3, 2, 2, 3), 1)
    cfg = _cfg(2, stride=(1, 1), pads=((0, 1), (1, 0)))
    f = lambda x, w: cpu_rows.conv(x, w, cfg, cpu_rows.Plan("rows", "rows", 2, True, True))
    check_grads(f, (x, w), order=2, modes=("fwd", "rev"))
    ref = lambda x, w: lax_reference(x, w, stride=(1, 1), pads=((0, 1), (1, 0)))
    np.testing.assert_allclose(jax.vmap(f, (None, 3), 3)(x, np.stack([w, 2 * w], -1)),
                               np.stack([ref(x, w), ref(x, 2 * w)], -1), rtol=1e-10, atol=1e-10)
    y, lin = jax.linearize(lambda x: f(x, w), x)
    g = _random(y.shape, 2)
    (got,) = jax.jit(jax.linear_transpose(lin, x))(g)
    (want,) = jax.vjp(lambda x: ref(x, w), x)[1](g)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)

  def test_the_rule(self):
    # The layers of seed-cnn and resnet20 take the forms the measurements chose
    # (``benchmarks/cpu_layers.py``, and whole train steps for the dw chunks and the dw
    # barrier of 3×3 layers); what the forms do not cover keeps lax's convolution.
    plan = lambda **forms: cpu_rows.Plan(**forms, dw_barrier=True)
    valid = _cfg(2, stride=(1, 1), pads=((0, 0), (0, 0)))
    same = _cfg(2, stride=(1, 1), pads=((1, 1), (1, 1)))
    self.assertEqual(cpu_rows.plan((128, 32, 32, 3), (5, 5, 3, 32), valid),
                     cpu_rows.Plan(input_grad="rows", dx_barrier=True))
    self.assertEqual(cpu_rows.plan((128, 14, 14, 32), (5, 5, 32, 64), valid),
                     cpu_rows.Plan(input_grad="rows", dx_barrier=True))
    self.assertEqual(cpu_rows.plan((128, 32, 32, 3), (3, 3, 3, 16), same),
                     plan(input_grad="rows", dx_barrier=True))
    for hw, c in ((32, 16), (16, 32), (8, 64)):
      self.assertEqual(cpu_rows.plan((128, hw, hw, c), (3, 3, c, c), same),
                       plan(weight_chunks=cpu_rows.WIDE_WEIGHT_CHUNKS))
    self.assertEqual(cpu_rows.plan((32, 32, 32, 16), (3, 3, 16, 16), same), plan())
    stride2 = _cfg(2, stride=(2, 2), pads=((1, 1), (1, 1)))
    self.assertEqual(cpu_rows.plan((128, 32, 32, 16), (3, 3, 16, 32), stride2),
                     plan(weight_chunks=cpu_rows.WIDE_WEIGHT_CHUNKS))
    self.assertTrue(cpu_rows.plan((128, 32, 32, 3), (5, 5, 3, 16), stride2).trivial)
    with self.assertRaisesRegex(ValueError, "stride-1 forms; got stride"):
      cpu_rows.conv(jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 3, 4)), stride2,
                    cpu_rows.Plan(forward="rows"))
    self.assertTrue(cpu_rows.plan((128, 32, 32, 3), (2, 2, 3, 16), valid).trivial)
    self.assertEqual(cpu_rows.plan((128, 32, 32, 8), (3, 3, 8, 16), same), plan())
    self.assertTrue(cpu_rows.plan((128, 32, 32, 16), (1, 3, 16, 16), same).trivial)
    x, w = jnp.ones((2, 8, 8, 4), jnp.float32), jnp.ones((3, 3, 4, 4), jnp.float32)
    self.assertTrue(cpu_rows.applies(x, w, valid))
    self.assertTrue(cpu_rows.applies(x.astype(jnp.float64), w.astype(jnp.float64), valid))
    self.assertTrue(cpu_rows.applies(x, w, _cfg(2, stride=(2, 1), pads=((0, 0), (0, 0)))))
    for change in (dict(dilation=(1, 2)), dict(pads=((-1, 0), (0, 0))),
                   dict(lhs_dilation=(2, 1)), dict(preferred_element_type=jnp.dtype(jnp.float64))):
      self.assertFalse(cpu_rows.applies(x, w, _cfg(2, **{**dict(
          stride=(1, 1), pads=((0, 0), (0, 0))), **change})))
    self.assertFalse(cpu_rows.applies(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), valid))
    self.assertFalse(cpu_rows.applies(x[..., :2], w[..., :2, :2],
                                      _cfg(2, stride=(1, 1), pads=((0, 0),) * 2, groups=2)))
    self.assertFalse(cpu_rows.applies(x[:, 0], w[0], _cfg(1, stride=(1,), pads=((0, 0),))))

  def test_public_op_takes_it_on_cpu_and_the_opt_out_removes_it(self):
    x, w = jnp.ones((4, 14, 14, 32), jnp.float32), jnp.ones((5, 5, 32, 64), jnp.float32)
    f = lambda: functools.partial(cross_correlate)  # a new function: no cached trace
    self.assertIn("custom_jvp_call", str(jax.make_jaxpr(f())(x, w)))
    for platform in ("cuda", "tpu"):
      text = _lowered_text(f(), x, w, platform=platform)
      self.assertEqual(_count(text, "convolution"), 1)
    for switch in (dict(enabled=False), dict(rows=False)):
      with cpu_forms(**switch):
        self.assertNotIn("custom_jvp_call", str(jax.make_jaxpr(f())(x, w)))
    # conv_transpose's tangents are transposed, so they keep lax's form.
    text = str(jax.make_jaxpr(functools.partial(conv_transpose, input_shape=(14, 14)))(
        jnp.ones((4, 10, 10, 64)), w))
    self.assertNotIn("custom_jvp_call(", text.replace("custom_jvp_call[name=adjoint_conv", ""))

  def test_gradient_program_has_no_stray_copies(self):
    # The compiled gradients of seed-cnn's conv2 (dx, dw): the row-stacked input gradient
    # is one 1×5 convolution (FULL-padded in width only) and one fused pad-and-add loop,
    # with no concatenate, and no transposes or copies of arrays larger than the kernel
    # beyond those of lax's own weight gradient.
    x = jnp.ones((16, 14, 14, 32), jnp.float32)
    w, g = jnp.ones((5, 5, 32, 64), jnp.float32), jnp.ones((16, 10, 10, 64), jnp.float32)
    cfg = _cfg(2, stride=(1, 1), pads=((0, 0), (0, 0)))

    def step(how):
      return lambda x, w, g: jax.vjp(lambda x, w: cpu_rows.conv(x, w, cfg, how), x, w)[1](g)

    def big_moves(text):
      shapes = re.findall(r"= f32\[([\d,]+)\]\S* (?:transpose|copy)\(", text)
      return sorted(s for s in shapes if np.prod([int(d) for d in s.split(",")]) > w.size)

    lax_text, rows_text = (_cpu_compiled_text(step(how), x, w, g)
                           for how in (cpu_rows.Plan(), cpu_rows.Plan(input_grad="rows")))
    self.assertEqual(len(re.findall(r" convolution\(", rows_text)), 2)
    self.assertIn("window={size=1x5 pad=0_0x4_4}", rows_text)
    self.assertIn("window={size=5x5 pad=4_4x4_4}", lax_text)
    self.assertEqual(_count(_lowered_text(step(cpu_rows.Plan(input_grad="rows")), x, w, g),
                            "concatenate"), 0)
    self.assertEqual(big_moves(rows_text), big_moves(lax_text))
    self.assertTrue(big_moves(lax_text))

  def test_weight_gradient_reads_the_stored_input(self):
    # With dw_barrier, the transpose feeding the weight gradient's convolution reads the
    # barrier's buffer; without it, XLA fuses x's producer (here a ReLU of a scaled
    # input) into that transpose and recomputes it there.
    a, s = jnp.ones((8, 8, 8, 16), jnp.float32), jnp.ones((1, 1, 1, 16), jnp.float32)
    w, g = jnp.ones((3, 3, 16, 16), jnp.float32), jnp.ones((8, 8, 8, 16), jnp.float32)
    cfg = _cfg(2, stride=(1, 1), pads=((1, 1), (1, 1)))

    def operands_of_transposed_x(how):
      dw = lambda a, s, w, g: jax.vjp(
          lambda w: cpu_rows.conv(jax.nn.relu(a * s + 1.0), w, cfg, how), w)[1](g)[0]
      text = _cpu_compiled_text(dw, a, s, w, g)
      (operands,) = re.findall(r"= f32\[16,8,8,8\]\S* fusion\(([^)]*)\)", text)
      return operands

    self.assertIn("%a", operands_of_transposed_x(cpu_rows.Plan()))
    self.assertNotIn("%a", operands_of_transposed_x(cpu_rows.Plan(dw_barrier=True)))

  def test_input_gradient_is_stored_before_a_pool_reads_it(self):
    # seed-cnn's conv2 input gradient (row-stacked) feeding a 2×2 max pool's backward,
    # which reads each value four times: with dx_barrier the row-shifted adds are one
    # stored array (a conditional's operand) and the pool's 28×28 backward reads that;
    # without it, XLA fuses the adds into the pool's backward and it reads the
    # convolution's output instead.
    a, w = jnp.ones((2, 28, 28, 8), jnp.float32), jnp.ones((5, 5, 8, 16), jnp.float32)
    cfg = _cfg(2, stride=(1, 1), pads=((0, 0), (0, 0)))

    def pool_backward_operands(how):
      f = lambda a, w: jnp.sum(cpu_rows.conv(max_pool(a, window=2), w, cfg, how) ** 2)
      text = _cpu_compiled_text(jax.grad(f), a, w)
      (operands,) = re.findall(r"= f32\[2,28,28,8\]\S* fusion\(([^)]*)\)", text)
      return text, operands

    text, operands = pool_backward_operands(cpu_rows.Plan(input_grad="rows",
                                                          dx_barrier=True))
    self.assertEqual(text.count(" conditional("), 1)
    self.assertNotRegex(operands, r"%convolution")
    text, operands = pool_backward_operands(cpu_rows.Plan(input_grad="rows"))
    self.assertEqual(text.count(" conditional("), 0)
    self.assertRegex(operands, r"%convolution")


class CpuBarrierTest(chex.TestCase):

  def test_is_the_identity_bit_for_bit(self):
    # One loop trip (a finite source) or none (a NaN source): signed zeros, NaNs and
    # infinities come back unchanged; empty arrays too. Subnormals come back as the
    # backend's arithmetic leaves them after a trip: XLA:CPU flushes them to zero in
    # every operation (the weight gradient's convolution reads them as zeros with or
    # without the barrier). On XLA:CPU, the only backend that compiles the barrier (a
    # GPU's arithmetic returns its canonical NaN, not the NaN's own bits).
    host = jax.devices("cpu")[0]
    for dtype in (np.float32, np.float64):
      x = _random((3, 4, 5, 2), 3, dtype)
      tiny = np.finfo(dtype).smallest_subnormal
      x[0, 0, 0, 0], x[1, 1, 1, 1], x[2, 2, 2, 1], x[2, 3, 4, 0] = -0.0, np.nan, -np.inf, tiny
      after_a_trip = x.copy()
      after_a_trip[2, 3, 4, 0] = jax.jit(jnp.multiply)(
          *jax.device_put((tiny, np.ones((), dtype)), host))
      for source, want in ((np.ones(3, np.float32), after_a_trip),
                           (np.array([1.0, np.nan]), x)):
        got = np.asarray(jax.jit(cpu_barrier.barrier)(*jax.device_put((x, source), host)))
        self.assertEqual(got.dtype, dtype)
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    self.assertEqual(cpu_barrier.barrier(jnp.ones((0, 3)), jnp.ones(2)).shape, (0, 3))

  def test_derivatives_are_the_identitys(self):
    # Forward and reverse mode to second order, and vmap, see the identity.
    x, source = _random((2, 3, 4), 1), jnp.ones(3)
    f = lambda x: jnp.sin(cpu_barrier.barrier(x * x, source))
    check_grads(f, (x,), order=2, modes=("fwd", "rev"))
    np.testing.assert_array_equal(
        jax.grad(lambda x: jnp.sum(cpu_barrier.barrier(x, source) ** 2))(x), 2 * x)
    np.testing.assert_array_equal(jax.vmap(cpu_barrier.barrier, (0, None))(x, source), x)

  def test_linear_barrier_is_the_identity_in_every_transformation(self):
    # The identity forward, in forward and reverse mode to second order, under vmap
    # (an unbatched and a batched source) and linear_transpose; a NaN source takes the
    # other branch, the identity too.
    x, source = _random((2, 3, 4), 1), jnp.ones(3)
    for s in (source, jnp.array([1.0, jnp.nan])):
      np.testing.assert_array_equal(jax.jit(cpu_barrier.linear_barrier)(x, s), x)
    f = lambda x: jnp.sin(cpu_barrier.linear_barrier(x * x, source))
    check_grads(f, (x,), order=2, modes=("fwd", "rev"))
    (back,) = jax.linear_transpose(lambda t: cpu_barrier.linear_barrier(t, source), x)(x)
    np.testing.assert_array_equal(back, x)
    np.testing.assert_array_equal(
        jax.vmap(cpu_barrier.linear_barrier, (0, None))(x, source), x)
    grad = jax.grad(lambda x, s: jnp.sum(cpu_barrier.linear_barrier(x, s) ** 2))
    np.testing.assert_array_equal(jax.vmap(grad)(x, jnp.ones((2, 3))), 2 * x)
    self.assertEqual(cpu_barrier.linear_barrier(jnp.ones((0, 3)), source).shape, (0, 3))

  def test_sharded_batch_needs_no_collective(self):
    # On 2 simulated devices with the batch sharded (explicit and automatic mesh axes),
    # the weight gradient through the barrier and the row-stacked input gradient through
    # the cotangent barrier compile and match the one-device results; the only
    # all-reduce is the weight gradient's sum over the batch. A barrier that sliced x's
    # first element failed under explicit axes.
    script = textwrap.dedent("""
        import json, os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        import jax, jax.numpy as jnp, numpy as np
        import cnnjax
        from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
        rng = np.random.default_rng(0)
        x, w, g, w5, g5 = (rng.normal(size=s).astype(np.float32) for s in (
            (8, 8, 8, 16), (3, 3, 16, 16), (8, 8, 8, 16), (5, 5, 16, 16), (8, 4, 4, 16)))
        dw = lambda x, w, g: jax.grad(lambda w: jnp.sum(
            cnnjax.cross_correlate(jax.nn.relu(x), w, padding="SAME") * g))(w)
        dx = lambda x, w, g: jax.grad(lambda x: jnp.sum(
            cnnjax.cross_correlate(x, w, padding="VALID") * g))(x)
        out = {}
        for name, f, (w_, g_) in (("dw", dw, (w, g)), ("dx", dx, (w5, g5))):
          want = np.asarray(jax.jit(f)(x, w_, g_))
          for kind in (AxisType.Explicit, AxisType.Auto):
            mesh = jax.make_mesh((2,), ("data",), axis_types=(kind,))
            xs, gs = (jax.device_put(a, NamedSharding(mesh, P("data"))) for a in (x, g_))
            with jax.set_mesh(mesh):
              compiled = jax.jit(f).lower(
                  xs, jax.device_put(w_, NamedSharding(mesh, P())), gs).compile()
              got = np.asarray(compiled(xs, w_, gs))
            text = compiled.as_text()
            out[f"{name} {kind}"] = [
                float(np.max(np.abs(got - want)) / np.max(np.abs(want))),
                [text.count(f" {op}(") for op in ("all-reduce", "while", "conditional")]]
        print(json.dumps(out))
        """)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=dict(env, JAX_PLATFORMS="cpu"), timeout=300)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    self.assertEqual(len(out), 4)
    for name, (relative_error, counts) in out.items():
      self.assertLess(relative_error, 1e-5, name)
      # [all-reduces, loops, conditionals]
      self.assertEqual(counts, [1, 1, 0] if name.startswith("dw") else [0, 0, 1], name)


if __name__ == "__main__":
  pytest.main([__file__, "-q"])
