"""Tests for cnnjax._lowering.cpu_rows: XLA:CPU's row-stacked input gradient and chunked
weight gradients against NumPy references, the rule that picks them, and the programs
they compile to."""

import functools
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads
from lowering_helpers import (
    _SETTINGS,
    _arrays,
    _cfg,
    _count,
    _cpu_compiled_text,
    _lowered_text,
    _random,
    lax_reference,
)
from references import assert_close

from cnnjax import cpu_forms
from cnnjax._lowering import cpu_rows, workarounds
from cnnjax.conv import conv_transpose, cross_correlate
from cnnjax.pooling import max_pool

# ------------------------------------------ row-stacked forms on CPU (issue 19)


@st.composite
def rows_cases(draw):
  """2-D, stride-1 convolutions the row-stacked forms take, with every plan."""
  kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 4)))
  pads = tuple((draw(st.integers(0, k)), draw(st.integers(0, k))) for k in kernel)
  sizes = [
      draw(st.integers(max(1, k - lo - hi), k + 3))
      for k, (lo, hi) in zip(kernel, pads, strict=True)
  ]
  how = cpu_rows.Plan(
      forward=draw(st.sampled_from(["rows", "lax"])),
      input_grad=draw(st.sampled_from(["rows", "lax"])),
      weight_chunks=draw(st.integers(1, 4)),
      dw_barrier=draw(st.booleans()),
      dx_barrier=draw(st.booleans()),
  )
  c_in = draw(st.integers(1, 3))
  stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
  if stride != (1, 1):  # the stacked forms are stride-1 forms; dw chunks take any stride
    how = how._replace(forward="lax", input_grad="lax")
  case = dict(
      x_shape=(draw(st.integers(1, 3)), *sizes, c_in),
      w_shape=(*kernel, c_in, draw(st.integers(1, 3))),
      pads=pads,
      how=how,
      stride=stride,
  )
  # cpu.conv pads these first and never hands them to cpu_rows (SwapDefectTest).
  assume(
      not workarounds.aborts(case["x_shape"], case["w_shape"], _cfg(2, stride=stride, pads=pads))
  )
  return case


def _rows_fns(case):
  cfg = _cfg(2, stride=case.get("stride", (1, 1)), pads=case["pads"])
  f = lambda x, w: cpu_rows.conv(x, w, cfg, case["how"])
  # One program: the output and both gradients, as a train step takes them.
  return f, jax.jit(lambda x, w, g: (lambda y, vjp: (y, *vjp(g)))(*jax.vjp(f, x, w)))


def _rows_references(x, w, g, case):
  from references import (  # noqa: PLC0415
      ref_correlate,
      ref_correlate_adjoint,
      ref_correlate_weight_grad,
  )

  pads = [list(p) for p in case["pads"]]
  stride = case.get("stride", (1, 1))
  return (
      ref_correlate(x, w, stride=stride, padding=pads),
      ref_correlate_adjoint(g, w, x.shape, stride=stride, padding=pads),
      ref_correlate_weight_grad(x, g, w.shape[:2], stride=stride, padding=pads),
  )


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
    for got, want in zip(step(x, w, g), _rows_references(x, w, g, case), strict=True):
      self.assertEqual(got.dtype, jnp.float64)
      assert_close(got, want)

  @parameterized.named_parameters(
      dict(testcase_name="seed_cnn_conv2", x=(3, 14, 14, 8), w=(5, 5, 8, 16), pads=((0, 0),) * 2),
      dict(testcase_name="seed_cnn_conv1", x=(2, 16, 16, 3), w=(5, 5, 3, 8), pads=((0, 0),) * 2),
      dict(testcase_name="asymmetric_pads", x=(5, 9, 8, 4), w=(4, 3, 4, 6), pads=((2, 0), (1, 2))),
  )
  def test_float32_within_rounding(self, x, w, pads):
    # float32, as training runs it: within float32 rounding of float64 references, for
    # the plan the rule picks and for every form switched on.
    case = dict(x_shape=x, w_shape=w, pads=pads)
    xs, ws = _arrays(case, np.float32)
    for how in (
        cpu_rows.plan(x, w, _cfg(2, stride=(1, 1), pads=pads)),
        cpu_rows.Plan("rows", "rows", 3, dx_barrier=True),
        cpu_rows.Plan("lax", "lax", 2, True),
    ):
      f, step = _rows_fns(dict(case, how=how))
      g = _random(jax.eval_shape(f, xs, ws).shape, 2, np.float32)
      for got, want in zip(step(xs, ws, g), _rows_references(xs, ws, g, case), strict=True):
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
    np.testing.assert_allclose(
        jax.vmap(f, (None, 3), 3)(x, np.stack([w, 2 * w], -1)),
        np.stack([ref(x, w), ref(x, 2 * w)], -1),
        rtol=1e-10,
        atol=1e-10,
    )
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
    self.assertEqual(
        cpu_rows.plan((128, 32, 32, 3), (5, 5, 3, 32), valid),
        cpu_rows.Plan(input_grad="rows", dx_barrier=True),
    )
    self.assertEqual(
        cpu_rows.plan((128, 14, 14, 32), (5, 5, 32, 64), valid),
        cpu_rows.Plan(input_grad="rows", dx_barrier=True),
    )
    self.assertEqual(
        cpu_rows.plan((128, 32, 32, 3), (3, 3, 3, 16), same),
        plan(input_grad="rows", dx_barrier=True),
    )
    for hw, c in ((32, 16), (16, 32), (8, 64)):
      self.assertEqual(
          cpu_rows.plan((128, hw, hw, c), (3, 3, c, c), same),
          plan(weight_chunks=cpu_rows.WIDE_WEIGHT_CHUNKS),
      )
    self.assertEqual(cpu_rows.plan((32, 32, 32, 16), (3, 3, 16, 16), same), plan())
    stride2 = _cfg(2, stride=(2, 2), pads=((1, 1), (1, 1)))
    self.assertEqual(
        cpu_rows.plan((128, 32, 32, 16), (3, 3, 16, 32), stride2),
        plan(weight_chunks=cpu_rows.WIDE_WEIGHT_CHUNKS),
    )
    self.assertTrue(cpu_rows.plan((128, 32, 32, 3), (5, 5, 3, 16), stride2).trivial)
    with self.assertRaisesRegex(ValueError, "stride-1 forms; got stride"):
      cpu_rows.conv(
          jnp.ones((1, 8, 8, 3)), jnp.ones((3, 3, 3, 4)), stride2, cpu_rows.Plan(forward="rows")
      )
    self.assertTrue(cpu_rows.plan((128, 32, 32, 3), (2, 2, 3, 16), valid).trivial)
    self.assertEqual(cpu_rows.plan((128, 32, 32, 8), (3, 3, 8, 16), same), plan())
    self.assertTrue(cpu_rows.plan((128, 32, 32, 16), (1, 3, 16, 16), same).trivial)
    x, w = jnp.ones((2, 8, 8, 4), jnp.float32), jnp.ones((3, 3, 4, 4), jnp.float32)
    self.assertTrue(cpu_rows.applies(x, w, valid))
    self.assertTrue(cpu_rows.applies(x.astype(jnp.float64), w.astype(jnp.float64), valid))
    self.assertTrue(cpu_rows.applies(x, w, _cfg(2, stride=(2, 1), pads=((0, 0), (0, 0)))))
    for change in (
        dict(dilation=(1, 2)),
        dict(pads=((-1, 0), (0, 0))),
        dict(lhs_dilation=(2, 1)),
        dict(preferred_element_type=jnp.dtype(jnp.float64)),
    ):
      self.assertFalse(
          cpu_rows.applies(
              x, w, _cfg(2, **{**dict(stride=(1, 1), pads=((0, 0), (0, 0))), **change})
          )
      )
    self.assertFalse(cpu_rows.applies(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), valid))
    self.assertFalse(
        cpu_rows.applies(
            x[..., :2], w[..., :2, :2], _cfg(2, stride=(1, 1), pads=((0, 0),) * 2, groups=2)
        )
    )
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
    text = str(
        jax.make_jaxpr(functools.partial(conv_transpose, input_shape=(14, 14)))(
            jnp.ones((4, 10, 10, 64)), w
        )
    )
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

    lax_text, rows_text = (
        _cpu_compiled_text(step(how), x, w, g)
        for how in (cpu_rows.Plan(), cpu_rows.Plan(input_grad="rows"))
    )
    self.assertEqual(len(re.findall(r" convolution\(", rows_text)), 2)
    self.assertIn("window={size=1x5 pad=0_0x4_4}", rows_text)
    self.assertIn("window={size=5x5 pad=4_4x4_4}", lax_text)
    self.assertEqual(
        _count(_lowered_text(step(cpu_rows.Plan(input_grad="rows")), x, w, g), "concatenate"), 0
    )
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
          lambda w: cpu_rows.conv(jax.nn.relu(a * s + 1.0), w, cfg, how), w
      )[1](g)[0]
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

    text, operands = pool_backward_operands(cpu_rows.Plan(input_grad="rows", dx_barrier=True))
    self.assertEqual(text.count(" conditional("), 1)
    self.assertNotRegex(operands, r"%convolution")
    text, operands = pool_backward_operands(cpu_rows.Plan(input_grad="rows"))
    self.assertEqual(text.count(" conditional("), 0)
    self.assertRegex(operands, r"%convolution")


if __name__ == "__main__":
  pytest.main([__file__, "-q"])
