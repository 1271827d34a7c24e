"""Tests for cnnjax._lowering.cpu_bf16: bfloat16 stride-1 convolutions on XLA:CPU as
patch matmuls with custom VJPs, against lax (forward, gradients, second order, chunks)."""

import contextlib
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from lowering_helpers import (
    _SETTINGS,
    _arrays,
    _cfg,
    _count,
    _lax_padding,
    _lowered_text,
    _random,
    lax_reference,
)

from cnnjax import cpu_forms
from cnnjax._lowering import cpu, cpu_bf16
from cnnjax.conv import conv_transpose, convolve, cross_correlate

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
  sizes = [
      draw(st.integers(max(1, k - lo - hi), k + 3))
      for k, (lo, hi) in zip(kernel, pads, strict=True)
  ]
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


def _assert_bf16_close(got, want, *, rtol=2**-7):
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
      gy, gw = jax.jit(
          jax.grad(
              lambda y, w: jnp.sum(
                  conv_transpose(y, w, padding=padding, input_shape=x.shape[1:-1]).astype(
                      jnp.float32
                  )
                  * x32
              ),
              argnums=(0, 1),
          )
      )(ct, w)
      want_y, want_w = jax.grad(
          lambda y, w: jnp.sum(jax.vjp(lambda x: lax_reference(x, w, **cfg), x32)[1](y)[0] * x32),
          argnums=(0, 1),
      )(ct.astype(jnp.float32), w32)
      _assert_bf16_close(gy, want_y, rtol=2**-5)
      _assert_bf16_close(gw, want_w, rtol=2**-5)
      self.assertGreaterEqual(_count(text, "bitcast_convert"), 2)
    flipped = jnp.flip(w32, (0, 1))
    _assert_bf16_close(
        jax.jit(functools.partial(convolve, padding="SAME"))(x, w),
        lax_reference(x32, flipped, **_lax_padding(x.shape, w.shape, dict(padding="SAME"))),
    )

    def second_order(conv):
      def h(x, w):
        gx, gw = jax.grad(
            lambda x, w: jnp.sum(jnp.sin(conv(x, w).astype(jnp.float32))), argnums=(0, 1)
        )(x, w)
        return jnp.sum(gx.astype(jnp.float32) ** 2) + jnp.sum(gw.astype(jnp.float32) ** 2)

      return jax.jit(jax.grad(h, argnums=(0, 1)))

    # C_in < C_out takes lax's convolution for the input gradient, C_in >= C_out patches.
    for x_shape, w_shape in (((5, 7, 6, 3), (3, 3, 3, 4)), ((3, 6, 5, 4), (2, 3, 4, 2))):
      x, w, x32, w32 = _bf16_arrays(dict(x_shape=x_shape, w_shape=w_shape))
      cfg = _lax_padding(x.shape, w.shape, dict(padding="SAME"))
      got = second_order(functools.partial(cross_correlate, padding="SAME"))(x, w)
      want = second_order(lambda x, w: lax_reference(x, w, **cfg))(x32, w32)
      for g, r in zip(got, want, strict=True):
        _assert_bf16_close(g, r, rtol=2**-5)  # three bf16 roundings deep

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
    _assert_bf16_close(gy, gy32, rtol=2**-5)
    np.testing.assert_allclose(
        np.asarray(grads.kernel[...], np.float32),
        grads32.kernel[...],
        rtol=2**-5,
        atol=2**-5 * float(np.abs(grads32.kernel[...]).max()),
    )

  def test_configurations_it_leaves_to_lax(self):
    # float32, strides, dilations, groups and pads of a whole kernel or more keep their
    # lowerings; a 1×1 kernel stays a plain matmul.
    x = jnp.ones((2, 8, 8, 4), jnp.bfloat16)
    w = jnp.ones((3, 3, 4, 4), jnp.bfloat16)
    base = dict(stride=(1, 1), pads=((1, 1), (1, 1)), dilation=(1, 1), groups=1)
    applies = lambda x, w, **c: cpu_bf16.applies(x, w, _cfg(2, **c))
    self.assertTrue(applies(x, w, **base))
    self.assertFalse(applies(x.astype(jnp.float32), w, **base))
    for change in (
        dict(stride=(2, 1)),
        dict(dilation=(1, 2)),
        dict(groups=2),
        dict(pads=((3, 0), (1, 1))),
        dict(lhs_dilation=(2, 1)),
        dict(preferred_element_type=jnp.dtype(jnp.float32)),
        dict(preferred_element_type=jnp.dtype(jnp.float64)),
    ):  # == None in NumPy
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


if __name__ == "__main__":
  pytest.main([__file__, "-q"])
