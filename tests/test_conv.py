"""Tests for cnnjax.conv: cross_correlate, convolve and conv_transpose.

References are written here, independently of cnnjax: a NumPy loop of the textbook
formula y[n] = Σ_k w[k] · x̃[n·s + k·t] over the padded input x̃ (padding computed
here, padded with ``numpy.pad``), ``scipy.signal`` for one channel, and ``jax.vjp``
for the transpose.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal
from absl.testing import parameterized
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jax import lax
from jax.test_util import check_grads
from references import MODES, per_dim, ref_correlate, ref_correlate_adjoint, ref_pads

from cnnjax.conv import conv_transpose, convolve, cross_correlate

# One @given test runs under several chex variants (several TestCase instances).
_SETTINGS = dict(
    deadline=None, suppress_health_check=[HealthCheck.differing_executors, HealthCheck.too_slow]
)

LECTURE_IMAGE = [
    [1, 1, 1, 0, 0],
    [0, 1, 1, 1, 0],
    [0, 0, 1, 1, 1],
    [0, 0, 1, 1, 0],
    [0, 1, 1, 0, 0],
]
LECTURE_KERNEL = [[1, 0, 1], [0, 1, 0], [1, 0, 1]]
LECTURE_OUTPUT = [[4, 3, 4], [2, 4, 3], [2, 3, 4]]


# ------------------------------------------------------------------ references


def _random(shape, seed=0, dtype=np.float64):
  return np.random.default_rng(seed).normal(size=shape).astype(dtype)


# ------------------------------------------------------------- hypothesis cases


@st.composite
def conv_cases(draw, modes=MODES, groups=(1, 2)):
  """Tiny random settings whose kernel fits the padded input."""
  nd = draw(st.integers(1, 3))
  kernel = [draw(st.integers(1, 3)) for _ in range(nd)]
  stride = [draw(st.integers(1, 3)) for _ in range(nd)]
  dilation = [draw(st.integers(1, 2)) for _ in range(nd)]
  r_eff = [(r - 1) * t + 1 for r, t in zip(kernel, dilation, strict=True)]
  max_extra = {1: 6, 2: 3, 3: 2}[nd]
  sizes = [draw(st.integers(max(1, r - 2), r + max_extra)) for r in r_eff]
  padding = draw(
      st.one_of(
          st.sampled_from(["VALID", "SAME", "FULL", "same"]),
          st.integers(0, 2),
          st.tuples(*[st.integers(0, 2)] * nd),
          st.tuples(*[st.tuples(st.integers(0, 2), st.integers(0, 2))] * nd),
      )
  )
  pads = ref_pads(padding, sizes, r_eff, stride)
  assume(all(n + lo + hi >= r for n, (lo, hi), r in zip(sizes, pads, r_eff, strict=True)))
  g = draw(st.sampled_from(groups))
  c_in, c_out = g * draw(st.integers(1, 2)), g * draw(st.integers(1, 2))
  # Sometimes an int for every dim, as users write it.
  if len(set(stride)) == 1 and draw(st.booleans()):
    stride = stride[0]
  if len(set(dilation)) == 1 and draw(st.booleans()):
    dilation = dilation[0]
  return dict(
      x_shape=(draw(st.integers(1, 2)), *sizes, c_in),
      w_shape=(*kernel, c_in // g, c_out),
      config=dict(
          stride=stride if isinstance(stride, int) else tuple(stride),
          padding=padding,
          dilation=dilation if isinstance(dilation, int) else tuple(dilation),
          groups=g,
      ),
      padding_mode=draw(st.sampled_from(modes)),
      seed=draw(st.integers(0, 2**16)),
  )


class ReferenceTest(chex.TestCase):
  """Each op against the NumPy loop of its formula, with and without jit."""

  @chex.variants(with_jit=True, without_jit=True)
  @settings(max_examples=15, **_SETTINGS)
  @given(case=conv_cases())
  def test_cross_correlate_matches_loop(self, case):
    x = _random(case["x_shape"], case["seed"])
    w = _random(case["w_shape"], case["seed"] + 1)
    config = dict(case["config"], padding_mode=case["padding_mode"])
    got = self.variant(functools.partial(cross_correlate, **config))(x, w)
    expected = ref_correlate(x, w, **config)
    assert got.shape == expected.shape
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)

  @chex.variants(with_jit=True, without_jit=True)
  @settings(max_examples=10, **_SETTINGS)
  @given(case=conv_cases())
  def test_convolve_matches_loop(self, case):
    x = _random(case["x_shape"], case["seed"])
    w = _random(case["w_shape"], case["seed"] + 1)
    config = dict(case["config"], padding_mode=case["padding_mode"])
    got = self.variant(functools.partial(convolve, **config))(x, w)
    expected = ref_correlate(x, w, flip=True, **config)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)

  @chex.variants(with_jit=True, without_jit=True)
  @settings(max_examples=10, **_SETTINGS)
  @given(case=conv_cases(modes=("zeros",), groups=(1, 2, 3)))
  def test_conv_transpose_is_the_vjp(self, case):
    config = case["config"]
    x = _random(case["x_shape"], case["seed"])
    w = _random(case["w_shape"], case["seed"] + 1)
    forward = functools.partial(cross_correlate, **config)
    y = _random(jax.eval_shape(forward, x, w).shape, case["seed"] + 2)
    expected = ref_correlate_adjoint(y, w, x.shape, **config)
    got = self.variant(functools.partial(conv_transpose, input_shape=x.shape[1:-1], **config))(y, w)
    assert got.shape == x.shape
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    # Without input_shape, the smallest input size with this output is taken.
    if x.shape[1:-1] == _default_input_shape(y.shape[1:-1], w.shape[:-2], **config):
      got = self.variant(functools.partial(conv_transpose, **config))(y, w)
      np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)

  @settings(max_examples=10, **_SETTINGS)
  @given(case=conv_cases(modes=("zeros",), groups=(1, 2, 3)))
  def test_reference_adjoint_is_the_adjoint(self, case):
    """<ref_correlate(x, w), y> == <x, ref_correlate_adjoint(y, w)>: the two NumPy
    references agree with each other, independently of JAX."""
    config = case["config"]
    x = _random(case["x_shape"], case["seed"])
    w = _random(case["w_shape"], case["seed"] + 1)
    y = _random(ref_correlate(x, w, **config).shape, case["seed"] + 2)
    lhs = np.vdot(ref_correlate(x, w, **config), y)
    rhs = np.vdot(x, ref_correlate_adjoint(y, w, x.shape, **config))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-10)

  @chex.variants(with_jit=True, without_jit=True)
  def test_conv_transpose_with_a_window_larger_than_the_input(self):
    """The kernel (2 rows) is taller than the input (1 row): XLA:CPU (jaxlib 0.10.2) aborts
    compiling such an lhs-dilated convolution from lax; conv_transpose compiles and is
    right. (jax.vjp of lax's convolution still aborts on it, hence the NumPy adjoint.)"""
    config = dict(stride=2, padding="FULL", dilation=1, groups=3)
    x_shape = (2, 1, 4, 6)
    w = _random((2, 2, 2, 6), 1)
    y = _random(ref_correlate(np.zeros(x_shape), w, **config).shape, 2)
    got = self.variant(functools.partial(conv_transpose, input_shape=x_shape[1:-1], **config))(y, w)
    np.testing.assert_allclose(
        got, ref_correlate_adjoint(y, w, x_shape, **config), rtol=1e-10, atol=1e-10
    )

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(
      dict(stride=2, padding="VALID", dilation=1, groups=1),
      dict(stride=(3, 2), padding="SAME", dilation=(2, 1), groups=2),
      dict(stride=2, padding="FULL", dilation=2, groups=1),
      dict(stride=(2, 3), padding=((2, 0), (1, 1)), dilation=1, groups=2),
      dict(stride=3, padding=1, dilation=1, groups=1),
  )
  def test_conv_transpose_default_input_shape_is_the_vjp(self, **config):
    w = _random((3, 2, 4 // config["groups"], 2), 40)
    y = _random((1, 3, 4, 2), 41)
    in_spatial = _default_input_shape(y.shape[1:-1], w.shape[:-2], **config)
    x = np.zeros((1, *in_spatial, 4))
    forward = functools.partial(cross_correlate, **config)
    assert jax.eval_shape(forward, x, w).shape == y.shape
    got = self.variant(functools.partial(conv_transpose, **config))(y, w)
    np.testing.assert_allclose(
        got, ref_correlate_adjoint(y, w, x.shape, **config), rtol=1e-10, atol=1e-10
    )


def _default_input_shape(out_spatial, kernel, *, stride, padding, dilation, groups):
  """conv_transpose's documented default: m·s for SAME, else (m − 1)·s + r̂ − lo − hi."""
  del groups
  nd = len(kernel)
  s, t = per_dim(stride, nd), per_dim(dilation, nd)
  r_eff = [(r - 1) * d + 1 for r, d in zip(kernel, t, strict=True)]
  if isinstance(padding, str) and padding.upper() == "SAME":
    return tuple(m * si for m, si in zip(out_spatial, s, strict=True))
  pads = ref_pads(padding, [0] * nd, r_eff, s)
  return tuple(
      (m - 1) * si + r - lo - hi
      for m, si, r, (lo, hi) in zip(out_spatial, s, r_eff, pads, strict=True)
  )


# ----------------------------------------------------------------------- scipy


class ScipyTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(
      shapes=[((9,), (3,)), ((9,), (4,)), ((7, 6), (3, 2)), ((5, 6, 4), (3, 2, 3))],
      mode=["valid", "full", "same"],
  )
  def test_one_channel_matches_scipy(self, shapes, mode):
    x_spatial, k = shapes
    x = _random(x_spatial, 3)
    w = _random(k, 4)
    xb, wb = x[None, ..., None], w[..., None, None]
    if mode == "same" and any(r % 2 == 0 for r in k):
      mode = "full"  # scipy centres an even kernel differently from lax's SAME.
    padding = mode.upper()
    corr = self.variant(functools.partial(cross_correlate, padding=padding))(xb, wb)
    conv = self.variant(functools.partial(convolve, padding=padding))(xb, wb)
    np.testing.assert_allclose(
        corr[0, ..., 0],
        scipy.signal.correlate(x, w, mode=mode, method="direct"),
        rtol=1e-10,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        conv[0, ..., 0],
        scipy.signal.convolve(x, w, mode=mode, method="direct"),
        rtol=1e-10,
        atol=1e-12,
    )

  @chex.variants(with_jit=True, without_jit=True)
  @settings(max_examples=10, **_SETTINGS)
  @given(
      data=st.data(),
      nd=st.integers(1, 3),
      mode=st.sampled_from(["valid", "full"]),
  )
  def test_random_shapes_match_scipy(self, data, nd, mode):
    k = data.draw(st.lists(st.integers(1, 4), min_size=nd, max_size=nd))
    n = [data.draw(st.integers(r, r + 4)) for r in k]
    x, w = _random(n, 5), _random(k, 6)
    corr = self.variant(functools.partial(cross_correlate, padding=mode))(
        x[None, ..., None], w[..., None, None]
    )
    conv = self.variant(functools.partial(convolve, padding=mode))(
        x[None, ..., None], w[..., None, None]
    )
    np.testing.assert_allclose(corr[0, ..., 0], scipy.signal.correlate(x, w, mode), atol=1e-10)
    np.testing.assert_allclose(conv[0, ..., 0], scipy.signal.convolve(x, w, mode), atol=1e-10)

  @chex.variants(with_jit=True, without_jit=True)
  def test_strided_dilated_scipy(self):
    # Stride s and dilation t: scipy on the dilated kernel, then every s-th output.
    x, w = _random((11, 12), 7), _random((3, 2), 8)
    w_dilated = np.zeros((5, 4))
    w_dilated[::2, ::3] = w
    got = self.variant(functools.partial(cross_correlate, stride=(2, 3), dilation=(2, 3)))(
        x[None, ..., None], w[..., None, None]
    )
    expected = scipy.signal.correlate(x, w_dilated, "valid")[::2, ::3]
    np.testing.assert_allclose(got[0, ..., 0], expected, atol=1e-10)


# -------------------------------------------------------------------- examples


class ExampleTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(jnp.float32, jnp.int32, jnp.float64)
  def test_lecture_example(self, dtype):
    x = jnp.asarray(LECTURE_IMAGE, dtype)[None, :, :, None]
    w = jnp.asarray(LECTURE_KERNEL, dtype)[:, :, None, None]
    y = self.variant(cross_correlate)(x, w)
    assert y.shape == (1, 3, 3, 1)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y[0, :, :, 0], LECTURE_OUTPUT)
    # The kernel is symmetric under flips, so convolution gives the same.
    np.testing.assert_array_equal(self.variant(convolve)(x, w)[0, :, :, 0], LECTURE_OUTPUT)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(1, 2, 3)
  def test_impulse_response(self, nd):
    # Correlating an impulse gives the flipped kernel; convolving gives the kernel.
    k = (3, 2, 2)[:nd]
    w = _random((*k, 1, 1), 9)
    x = np.zeros((1, *(5,) * nd, 1))
    x[(0, *(2,) * nd, 0)] = 1.0
    corr = self.variant(functools.partial(cross_correlate, padding="FULL"))(x, w)
    conv = self.variant(functools.partial(convolve, padding="FULL"))(x, w)
    window = tuple(slice(2, 2 + r) for r in k)
    np.testing.assert_allclose(conv[(0, *window, 0)], w[..., 0, 0])
    np.testing.assert_allclose(corr[(0, *window, 0)], np.flip(w[..., 0, 0]))
    assert float(jnp.abs(conv).sum()) == pytest.approx(float(np.abs(w).sum()))

  def test_convolve_is_correlate_of_the_flipped_kernel(self):
    x, w = _random((2, 6, 7, 4), 10), _random((3, 2, 2, 6), 11)
    config = dict(stride=(2, 1), padding="SAME", dilation=(1, 2), groups=2, padding_mode="reflect")
    np.testing.assert_allclose(
        convolve(x, w, **config), cross_correlate(x, np.flip(w, (0, 1)), **config), atol=1e-12
    )

  def test_docstring_shapes(self):
    assert cross_correlate(jnp.ones((1, 5, 5, 1)), jnp.ones((3, 3, 1, 1))).shape == (1, 3, 3, 1)
    y = convolve(
        jnp.arange(5.0).reshape(1, 5, 1), jnp.array([1.0, 2.0]).reshape(2, 1, 1), padding="FULL"
    )
    np.testing.assert_array_equal(y[0, :, 0], [0.0, 1.0, 4.0, 7.0, 10.0, 8.0])
    assert conv_transpose(jnp.ones((1, 3, 3, 2)), jnp.ones((3, 3, 4, 2)), stride=2).shape == (
        1,
        7,
        7,
        4,
    )

  def test_strict_accepts_settings_that_click(self):
    x, w = jnp.ones((1, 7, 7, 1)), jnp.ones((3, 3, 1, 1))
    assert cross_correlate(x, w, stride=2, strict=True).shape == (1, 3, 3, 1)
    assert cross_correlate(x, w, stride=3, padding=1, strict=True).shape == (1, 3, 3, 1)
    assert convolve(x, w, stride=(2, 1), strict=True).shape == (1, 3, 5, 1)
    # Without strict, a stride that does not click silently drops the last column.
    assert cross_correlate(x, w, stride=3).shape == (1, 2, 2, 1)

  def test_conv_transpose_ambiguous_input_shape(self):
    # Inputs of size 7 and 8 both give 3 outputs with kernel 3 and stride 2.
    w = _random((3, 2, 3), 12)
    y = _random((1, 3, 3), 13)
    small = conv_transpose(y, w, stride=2)
    large = conv_transpose(y, w, stride=2, input_shape=(8,))
    assert small.shape == (1, 7, 2)
    assert large.shape == (1, 8, 2)
    np.testing.assert_allclose(large[:, :7], small, atol=1e-12)
    np.testing.assert_array_equal(large[:, 7], 0.0)  # the dropped input gets no gradient
    assert conv_transpose(y, w, stride=2, padding="SAME").shape == (1, 6, 2)
    assert conv_transpose(y, w, stride=2, padding="SAME", input_shape=(5,)).shape == (1, 5, 2)

  def test_precision_is_passed(self):
    x, w = _random((1, 6, 6, 2), 14, np.float32), _random((3, 3, 2, 2), 15, np.float32)
    expected = ref_correlate(x, w)
    for op in (cross_correlate, convolve):
      got = op(x, w, precision=lax.Precision.HIGHEST)
      assert got.dtype == jnp.float32
    np.testing.assert_allclose(
        cross_correlate(x, w, precision=lax.Precision.HIGHEST), expected, rtol=1e-5, atol=1e-5
    )
    got = conv_transpose(_random((1, 4, 4, 2), 16, np.float32), w, precision="highest")
    assert got.shape == (1, 6, 6, 2)


# ------------------------------------------------------------ grads, dtypes, vmap


class TransformTest(chex.TestCase):

  @parameterized.product(
      mode=MODES,
      config=[
          dict(stride=2, padding="SAME", dilation=1, groups=1),
          dict(stride=(1, 2), padding=((1, 0), (2, 1)), dilation=(2, 1), groups=2),
      ],
  )
  def test_cross_correlate_grads(self, mode, config):
    x, w = _random((1, 5, 4, 2), 20), _random((2, 3, 2 // config["groups"], 2), 21)
    f = functools.partial(cross_correlate, padding_mode=mode, **config)
    check_grads(f, (x, w), order=1, modes=("fwd", "rev"))

  def test_second_order_grads(self):
    x, w = _random((1, 5, 2), 22), _random((3, 2, 2), 23)
    f = jax.jit(functools.partial(convolve, stride=2, padding=1, padding_mode="circular"))
    check_grads(f, (x, w), order=2, modes=("rev",))

  @parameterized.parameters(
      dict(stride=2, padding="VALID", dilation=1, groups=1, input_shape=(6, 5)),
      dict(stride=(2, 3), padding="SAME", dilation=(1, 2), groups=2, input_shape=None),
      dict(stride=1, padding=((0, 1), (2, 0)), dilation=1, groups=1, input_shape=None),
  )
  def test_conv_transpose_grads(self, **config):
    w = _random((3, 2, 2 // config["groups"], 2), 24)
    y = _random((1, 2, 2, 2), 25)
    f = jax.jit(functools.partial(conv_transpose, **config))  # one program per derivative
    check_grads(f, (y, w), order=1, modes=("fwd", "rev"))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(
      (jnp.float32, "zeros"), (jnp.bfloat16, "reflect"), (jnp.float64, "edge")
  )
  def test_dtype_is_kept(self, dtype, mode):
    x = jnp.asarray(_random((2, 6, 5, 4), 26), dtype)
    w = jnp.asarray(_random((3, 3, 2, 4), 27), dtype)
    expected = ref_correlate(
        np.asarray(x, np.float64),
        np.asarray(w, np.float64),
        padding="SAME",
        groups=2,
        padding_mode=mode,
    )
    tol = {jnp.float32: 1e-4, jnp.bfloat16: 1e-1, jnp.float64: 1e-10}[dtype]
    corr = self.variant(
        functools.partial(cross_correlate, padding="SAME", groups=2, padding_mode=mode)
    )(x, w)
    conv = self.variant(functools.partial(convolve, padding="SAME", groups=2, padding_mode=mode))(
        x, w
    )
    trans = self.variant(functools.partial(conv_transpose, stride=2, groups=2))(x, w)
    for out in (corr, conv, trans):
      assert out.dtype == dtype
    np.testing.assert_allclose(np.asarray(corr, np.float64), expected, rtol=tol, atol=tol * 10)
    # A float kernel on an integer image computes in the kernel's float dtype.
    xi = jnp.asarray(np.asarray(LECTURE_IMAGE)[None, :, :, None], jnp.int32)
    wf = jnp.asarray(np.asarray(LECTURE_KERNEL)[:, :, None, None], dtype)
    out = self.variant(cross_correlate)(xi, wf)
    assert out.dtype == dtype
    np.testing.assert_array_equal(np.asarray(out[0, :, :, 0], np.float64), LECTURE_OUTPUT)

  def test_bfloat16_gradient_dtype(self):
    x = jnp.asarray(_random((1, 5, 5, 2), 28), jnp.bfloat16)
    w = jnp.asarray(_random((3, 3, 2, 2), 29), jnp.bfloat16)
    gx, gw = jax.jit(
        jax.grad(lambda x, w: cross_correlate(x, w).astype(jnp.float32).sum(), (0, 1))
    )(x, w)
    assert gx.dtype == jnp.bfloat16 and gw.dtype == jnp.bfloat16

  @chex.variants(with_jit=True, without_jit=True)
  def test_vmap(self):
    xs = _random((3, 2, 6, 6, 2), 30)
    ws = _random((4, 3, 3, 2, 5), 31)
    config = dict(stride=2, padding="SAME", padding_mode="circular")
    f = functools.partial(cross_correlate, **config)
    # Over an extra leading axis of x.
    got = self.variant(jax.vmap(lambda x: f(x, ws[0])))(xs)
    for i in range(3):
      np.testing.assert_allclose(got[i], ref_correlate(xs[i], ws[0], **config), atol=1e-10)
    # Over a stack of kernels, for convolve.
    got = self.variant(jax.vmap(lambda w: convolve(xs[0], w, padding="FULL")))(ws)
    for i in range(4):
      np.testing.assert_allclose(
          got[i], ref_correlate(xs[0], ws[i], padding="FULL", flip=True), atol=1e-10
      )
    # Over both, for conv_transpose.
    ys = _random((3, 2, 3, 3, 5), 32)
    got = self.variant(jax.vmap(functools.partial(conv_transpose, stride=2)))(ys, ws[:3])
    per_example = jax.jit(functools.partial(conv_transpose, stride=2))  # one program for all 3
    for i in range(3):
      np.testing.assert_allclose(got[i], per_example(ys[i], ws[i]), atol=1e-10)


# ---------------------------------------------------------------------- errors

_X2 = np.ones((1, 5, 5, 2))
_W2 = np.ones((3, 3, 2, 4))


@pytest.mark.parametrize("op", [cross_correlate, convolve])
@pytest.mark.parametrize(
    "x, w, kwargs, error, match",
    [
        (
            np.ones((1, 5, 5, 3)),
            _W2,
            {},
            ValueError,
            r"channel mismatch: x has 3 channels .* "
            r"expected x.shape\[-1\] == w.shape\[-2\] \* groups",
        ),
        (_X2, np.ones((3, 3, 1, 4)), {}, ValueError, "channel mismatch: x has 2 channels"),
        (
            np.ones((5, 5, 2)),
            _W2,
            {},
            ValueError,
            r"x has shape \(5, 5, 2\) \(rank 3\) \(an unbatched input",
        ),
        (
            np.ones((1, 5, 5, 5, 2)),
            _W2,
            {},
            ValueError,
            r"x has shape \(1, 5, 5, 5, 2\) \(rank 5\); expected rank 4",
        ),
        (_X2, np.ones((3, 3)), {}, ValueError, r"w has shape \(3, 3\) \(rank 2\)"),
        (_X2, np.ones((2, 2, 2, 2, 2, 2)), {}, ValueError, r"w has shape .* \(rank 6\)"),
        (_X2, _W2, {"stride": 0}, ValueError, "stride got 0"),
        (_X2, _W2, {"stride": (1, -1)}, ValueError, r"stride got \(1, -1\)"),
        (_X2, _W2, {"stride": (1, 1, 1)}, ValueError, r"stride got \(1, 1, 1\)"),
        (_X2, _W2, {"stride": 1.0}, TypeError, "stride got 1.0"),
        (_X2, _W2, {"dilation": 0}, ValueError, "dilation got 0"),
        (_X2, _W2, {"dilation": (2, -2)}, ValueError, r"dilation got \(2, -2\)"),
        (_X2, _W2, {"groups": 0}, ValueError, "groups got 0"),
        (_X2, _W2, {"groups": True}, ValueError, "groups got True"),
        (
            _X2,
            np.ones((3, 3, 1, 3)),
            {"groups": 2},
            ValueError,
            r"out_channels \(3\) is not divisible by groups \(2\)",
        ),
        (
            _X2,
            np.ones((3, 6, 2, 4)),
            {},
            ValueError,
            r"effective kernel size 6 \(kernel 6, dilation 1\) is larger than the padded input "
            r"size 5",
        ),
        (_X2, _W2, {"dilation": 3}, ValueError, "effective kernel size 7 .* dilation 3"),
        (
            np.ones((1, 5, 1, 2)),
            _W2,
            {"padding": ((0, 0), (1, 0))},
            ValueError,
            r"larger than the padded input size 2 \(input 1, padding \(1, 0\)\) in spatial dim 1",
        ),
        (_X2, _W2, {"padding": "HALF"}, ValueError, "padding got 'HALF'"),
        (_X2, _W2, {"padding": -1}, ValueError, "padding got -1"),
        (_X2, _W2, {"padding": (1, 1, 1)}, ValueError, r"padding got \(1, 1, 1\)"),
        (_X2, _W2, {"padding": 1.5}, TypeError, "padding got 1.5"),
        (
            _X2,
            _W2,
            {"padding_mode": "wrap"},
            ValueError,
            r"padding_mode got 'wrap'; expected one of \('zeros', 'circular', 'reflect', 'edge'\)",
        ),
        (_X2, _W2, {"padding_mode": "ZEROS"}, ValueError, "padding_mode got 'ZEROS'"),
        (
            np.ones((1, 7, 7, 2)),
            _W2,
            {"stride": 3, "strict": True},
            ValueError,
            r"stride 3 does not click in spatial dim 0.*strict=True",
        ),
        (
            np.ones((1, 7, 6, 2)),
            _W2,
            {"stride": (2, 2), "strict": True},
            ValueError,
            "stride 2 does not click in spatial dim 1",
        ),
        (
            _X2,
            _W2,
            {"preferred_element_type": np.int32},
            TypeError,
            "preferred_element_type got int32 for a computation in float",
        ),
        (_X2, np.ones((3, 3, 2, 4), bool), {}, TypeError, "w has dtype bool"),
    ],
)
def test_errors_name_the_argument(op, x, w, kwargs, error, match):
  with pytest.raises(error, match=f"^{op.__name__}: .*{match}"):
    op(x, w, **kwargs)


_Y = np.ones((1, 3, 3, 4))


@pytest.mark.parametrize(
    "y, w, kwargs, error, match",
    [
        (
            np.ones((1, 3, 3, 3)),
            _W2,
            {},
            ValueError,
            r"channel mismatch: y has 3 channels but the kernel's out_channels "
            r"\(w.shape\[-1\]\) is 4",
        ),
        (
            np.ones((3, 3, 4)),
            _W2,
            {},
            ValueError,
            r"y has shape \(3, 3, 4\) \(rank 3\) \(an unbatched",
        ),
        (np.ones((1, 3, 3, 3, 4)), _W2, {}, ValueError, r"y has shape .* \(rank 5\)"),
        (_Y, np.ones((4,)), {}, ValueError, r"w has shape \(4,\) \(rank 1\)"),
        (_Y, _W2, {"groups": 0}, ValueError, "groups got 0"),
        (
            _Y,
            np.ones((3, 3, 2, 4)),
            {"groups": 3},
            ValueError,
            r"out_channels \(4\) is not divisible by groups \(3\)",
        ),
        (_Y, _W2, {"stride": 0}, ValueError, "stride got 0"),
        (_Y, _W2, {"stride": (2,)}, ValueError, r"stride got \(2,\)"),
        (_Y, _W2, {"dilation": -1}, ValueError, "dilation got -1"),
        (_Y, _W2, {"padding": "HALF"}, ValueError, "padding got 'HALF'"),
        (_Y, _W2, {"padding": -1}, ValueError, "padding got -1"),
        (
            _Y,
            _W2,
            {"input_shape": (9, 9)},
            ValueError,
            r"input_shape \(9, 9\) gives a forward output of spatial shape \(7, 7\) .* but y has "
            r"spatial shape \(3, 3\)",
        ),
        (
            _Y,
            _W2,
            {"stride": 2, "input_shape": (9, 5)},
            ValueError,
            r"input_shape \(9, 5\) gives a forward output of spatial shape \(4, 2\)",
        ),
        (_Y, _W2, {"input_shape": (0, 5)}, ValueError, r"input_shape got \(0, 5\)"),
        (_Y, _W2, {"input_shape": (5,)}, ValueError, r"input_shape got \(5,\)"),
        (
            _Y,
            _W2,
            {"input_shape": (2, 2)},
            ValueError,
            "effective kernel size 3 .* larger than the padded input size 2",
        ),
        (np.ones((1, 3, 3, 4), bool), _W2, {}, TypeError, "y has dtype bool"),
    ],
)
def test_conv_transpose_errors_name_the_argument(y, w, kwargs, error, match):
  with pytest.raises(error, match=f"^conv_transpose: .*{match}"):
    conv_transpose(y, w, **kwargs)
