"""Tests for cnnjax._lowering.portable: one ``lax.conv_general_dilated`` (never with
negative padding) and the patch-matmul form (integer inputs, exactly, on every platform),
each checked against a ``lax.conv_general_dilated`` call written here (float64) over a
hypothesis grid of dims, kernels, strides, dilations, paddings (including negative,
cropping pads and ``lhs_dilation`` for the transposed convolution) and groups."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from lowering_helpers import _SETTINGS, _arrays, _cfg, lax_reference, lowering_cases
from references import on_cpu

from cnnjax import _lowering
from cnnjax._lowering import portable, workarounds

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
  @given(
      lowering_cases(negative_pads=True, lhs_dilation=True),
      st.sampled_from([np.int8, np.int16, np.int32, np.int64, np.uint8]),
  )
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
        x, w, cfg._replace(preferred_element_type=jnp.dtype(np.int64))
    )
    np.testing.assert_array_equal(wide, np.round(want).astype(np.int64))


if __name__ == "__main__":
  pytest.main([__file__, "-q"])
