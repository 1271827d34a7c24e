"""Tests for cnnjax._lowering.cpu: XLA:CPU's forms (depthwise as shifted-slice
multiply-adds, 1×1 as a matmul) against a ``lax.conv_general_dilated`` call written here
(float64), the opt-out, the convolutions XLA:CPU aborts compiling from lax (which
``cpu.conv`` pads first), and the programs lowered for CPU."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lowering_helpers import (
    _SETTINGS,
    _arrays,
    _cfg,
    _count,
    _lowered_text,
    _random,
    lax_reference,
    lowering_cases,
)
from references import assert_close

from cnnjax import cpu_forms
from cnnjax._lowering import cpu, workarounds
from cnnjax.conv import conv_transpose, cross_correlate
from cnnjax.tiled import tiled_conv

# ------------------------------------------------------- each form vs lax


class FormsMatchLaxTest(chex.TestCase):

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

  def test_opt_out_gives_the_portable_form(self):
    x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 1, 8))
    cfg = _cfg(2, stride=(1, 1), pads=((1, 1), (1, 1)), groups=4)
    f = lambda: functools.partial(cpu.conv, cfg=cfg)  # a new function: no cached trace
    self.assertEqual(_count(_lowered_text(f(), x, w), "convolution"), 0)
    with cpu_forms(enabled=False):
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
      k, s, n, lo, hi = (
          2,
          1 if tiled else 2,
          2 * draw(st.integers(2, 3)),
          1,
          draw(st.integers(0 if tiled else 1, 2)),
      )
      t = 2
    else:
      k, s = draw(st.integers(1, 4 if nd == 2 else 3)), draw(st.integers(1, 2))
      lo, hi = draw(st.integers(0, k)), draw(st.integers(0, k))
      n = draw(st.integers(max(1, k - lo - hi), k + 2))
      t = draw(st.integers(1, 2))
    sizes.append(n), kernel.append(k), stride.append(s), pads.append((lo, hi)), tile.append(t)
  c_in = draw(st.integers(1, 2))
  return dict(
      x_shape=(draw(st.integers(1, 2)), *sizes, c_in),
      w_shape=(*kernel, c_in, draw(st.integers(1, 2))),
      stride=tuple(stride),
      pads=tuple(pads),
      tile=tuple(tile),
  )


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
        ref_correlate,
        ref_correlate_adjoint,
        ref_correlate_weight_grad,
    )

    kw = dict(stride=case["stride"], padding=case["pads"])
    f = lambda x, w: cross_correlate(x, w, **kw)
    step = lambda x, w, g: (lambda y, vjp: (y, *vjp(g)))(*jax.vjp(f, x, w))
    x_shape = case["x_shape"]
    adjoint = lambda g, w: conv_transpose(g, w, input_shape=x_shape[1:-1], **kw)
    x, w = _random(x_shape), _random(case["w_shape"], 1)
    g = _random(jax.eval_shape(f, x, w).shape, 2)
    for dtype in (np.float64, jnp.float32, jnp.bfloat16):
      xs, ws, gs = (np.asarray(a.astype(dtype), np.float64) for a in (x, w, g))
      with cpu_forms(enabled=forms_on):
        got = jax.jit(step)(*(a.astype(dtype) for a in (xs, ws, gs)))
        got = (*got, jax.jit(adjoint)(gs.astype(dtype), ws.astype(dtype)))
      dx = ref_correlate_adjoint(gs, ws, x_shape, **kw)
      want = (
          ref_correlate(xs, ws, **kw),
          dx,
          ref_correlate_weight_grad(xs, gs, ws.shape[:-2], **kw),
          dx,
      )
      for a, b in zip(got, want, strict=True):
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
    self.assertTrue(
        workarounds.aborts((1, 1, 4, 6), (2, 2, 2, 6), cfg(stride=(2, 2), pads=((1, 1),) * 2))
    )
    self.assertFalse(workarounds.aborts((1, 5, 4, 1), w, cfg()))  # odd size: the gradient is padded
    self.assertFalse(workarounds.aborts(x, w, cfg(pads=((0, 1), (0, 0)))))
    self.assertFalse(workarounds.aborts(x, w, cfg(stride=(1, 1))))
    self.assertFalse(workarounds.aborts(x, w, cfg(dilation=(2, 1))))
    self.assertFalse(workarounds.aborts((1, 4, 1), (2, 1, 1), _cfg(1, stride=(2,), pads=((1, 1),))))
    self.assertFalse(
        workarounds.aborts((1, 6, 6, 1), (2, 2, 1, 1), cfg(stride=(2, 2), pads=((1, 1),) * 2))
    )
    # An lhs-dilated convolution (conv_transpose's): window 2 = input dilation, stride 1,
    # no padding, an input size other than 2 (and the old case: window over 1 row).
    lhs = lambda **c: cfg(stride=(1, 1), lhs_dilation=(2, 1), **c)
    self.assertTrue(workarounds.aborts((1, 3, 2, 1), w, lhs(pads=((0, 0), (0, 0)))))
    self.assertFalse(workarounds.aborts((1, 2, 2, 1), w, lhs(pads=((0, 0), (0, 0)))))
    self.assertFalse(workarounds.aborts((1, 3, 2, 1), w, lhs(pads=((1, 1), (0, 0)))))


# ----------------------------------------------------- which program is lowered


class LoweredProgramTest(chex.TestCase):

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


if __name__ == "__main__":
  pytest.main([__file__, "-q"])
