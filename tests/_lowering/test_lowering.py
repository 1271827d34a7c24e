"""Tests for cnnjax._lowering, the package: its one entry point (``_lowering.conv``)
and the public ops on it.

``cnnjax._lowering.conv`` computes ``lax.conv_general_dilated`` with the form each platform
runs best (each form has its own file here: test_lowering_portable.py, test_lowering_cpu.py,
test_lowering_cpu_bf16.py, test_lowering_cpu_rows.py, ...). Here: the public ops on CPU
against a ``lax.conv_general_dilated`` call written here (float64), their gradients
(forward and reverse mode, second order), vmap and dtypes, the default precision, and
which program each platform is lowered to (lowered explicitly for each platform, so these
hold on any host)."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax.test_util import check_grads
from lowering_helpers import _count, _lax_padding, _lowered_text, _random, lax_reference
from references import assert_close

from cnnjax.conv import conv_transpose, convolve, cross_correlate

# --------------------------------------------------- the public ops on CPU vs lax


_PUBLIC_CASES = (
    dict(testcase_name="3x3_same", x=(4, 9, 9, 4), w=(3, 3, 4, 5), kw=dict(padding="SAME")),
    dict(
        testcase_name="strided_dilated",
        x=(3, 11, 10, 2),
        w=(3, 2, 2, 3),
        kw=dict(stride=(2, 3), dilation=(2, 1), padding=((1, 2), (0, 1))),
    ),
    dict(testcase_name="grouped", x=(2, 8, 8, 4), w=(3, 3, 2, 6), kw=dict(groups=2, padding=1)),
    dict(
        testcase_name="depthwise",
        x=(2, 8, 7, 3),
        w=(3, 3, 1, 6),
        kw=dict(groups=3, padding="SAME", stride=2),
    ),
    dict(testcase_name="one_by_one", x=(3, 7, 7, 4), w=(1, 1, 4, 5), kw=dict(stride=2, padding=1)),
    dict(testcase_name="conv1d", x=(3, 17, 3), w=(4, 3, 2), kw=dict(dilation=3, padding="FULL")),
    dict(
        testcase_name="conv3d",
        x=(2, 5, 6, 4, 2),
        w=(2, 3, 2, 2, 3),
        kw=dict(stride=(1, 2, 1), padding="SAME"),
    ),
)


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
    got = self.variant(functools.partial(conv_transpose, input_shape=x[1:-1], **config))(ct, ws)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)

  def test_float32_matches_lax_within_tolerance(self):
    # The main benchmark shape at a tiny batch; float32, as users run it, with the
    # precision pinned (the suite's default, conftest.py) and with the platform's default.
    x, w = _random((2, 16, 16, 32), 0, np.float32), _random((3, 3, 32, 16), 1, np.float32)
    want = lax_reference(
        x.astype(np.float64), w.astype(np.float64), stride=(1, 1), pads=((1, 1), (1, 1))
    )
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
      dict(
          testcase_name="depthwise",
          x=(2, 5, 5, 2),
          w=(3, 3, 1, 4),
          kw=dict(groups=2, stride=2, padding="SAME"),
      ),
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
    for g, r in zip(got, want, strict=True):
      np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-10)

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
      text = _lowered_text(f, x, w[..., :2, :] if "groups" in f.keywords else w, platform=platform)
      self.assertEqual(_count(text, "convolution"), 0)
      self.assertGreaterEqual(_count(text, "dot_general"), 1)


@pytest.mark.parametrize(
    "name", ["cross_correlate", "conv_transpose", "locally_connected", "tiled_conv"]
)
def test_default_precision_is_within_the_backends_tolerance(name):
  # The suite pins precision="highest" (conftest.py); users get the platform's default:
  # float32 on CPU, TF32 on NVIDIA GPUs, bf16 passes on TPU (references.tolerance).
  from references import ref_correlate_adjoint, ref_local, ref_tiled  # noqa: PLC0415

  import cnnjax  # noqa: PLC0415

  rng = np.random.default_rng(11)
  x = rng.normal(size=(2, 8, 8, 16)).astype(np.float32)
  if name == "cross_correlate":
    w = rng.normal(size=(3, 3, 16, 8)).astype(np.float32)
    f = functools.partial(cnnjax.cross_correlate, padding="SAME")
    want = lax_reference(
        x.astype(np.float64), w.astype(np.float64), stride=(1, 1), pads=((1, 1), (1, 1))
    )
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


if __name__ == "__main__":
  pytest.main([__file__, "-q"])
