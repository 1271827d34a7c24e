"""Tests for cnnjax.pooling against NumPy-loop references written here."""

import functools
import inspect
import itertools
import math
from fractions import Fraction

import chex
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from references import (
    per_dim,
    pool_windows,
    ref_aps_phase,
    ref_binomial_blur,
    ref_int_avg_pool,
    ref_max_grad,
    ref_max_pool_indices,
    ref_pads,
    ref_pool,
    ref_torch_max_grad,
    ref_torch_max_indices,
    ref_torch_out_size,
    ref_torch_pool,
    round_float32,
)

import cnnjax.pooling as pooling
from cnnjax.conv import cross_correlate
from cnnjax.pooling import (
    avg_pool,
    blur_pool,
    global_avg_pool,
    global_max_pool,
    lp_pool,
    max_pool,
    maxout,
    polyphase_downsample,
)

LECTURE = np.array([[1, 4, 3, 6], [2, 1, 0, 9], [2, 2, 7, 7], [5, 3, 3, 6]], np.float64)


# ------------------------------------------------------------------ NumPy references


def _tied(rng, shape, levels=3):
  """Small-integer floats: ties in almost every window."""
  return rng.integers(0, levels, size=shape).astype(np.float64)


# --------------------------------------------------------------- cases and variants

CASES = [
    # name, x shape, window, stride, padding
    ("1d_valid", (2, 7, 3), 3, 2, "VALID"),
    ("1d_same_overlap", (2, 6, 2), 3, 1, "SAME"),
    ("2d_drop_trailing", (1, 5, 7, 2), 2, None, "VALID"),
    ("2d_same_nonoverlap", (1, 5, 5, 2), 2, None, "SAME"),
    ("2d_overlap_pad", (2, 6, 5, 2), 3, 2, 1),
    ("2d_pairs", (1, 5, 6, 2), (2, 3), (1, 2), ((1, 0), (0, 2))),
    ("2d_stride_gt_window", (1, 7, 7, 2), 2, 3, "VALID"),
    ("2d_full", (1, 3, 4, 1), 2, 1, "FULL"),
    ("3d_valid", (1, 4, 5, 3, 2), 2, None, "VALID"),
    ("3d_overlap_same", (1, 4, 3, 5, 1), (3, 2, 3), (2, 1, 2), "SAME"),
]


class PoolReferenceTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*CASES)
  def test_max_pool(self, shape, window, stride, padding):
    x = np.random.default_rng(0).normal(size=shape)
    y = self.variant(functools.partial(max_pool, window=window, stride=stride, padding=padding))(x)
    np.testing.assert_array_equal(y, ref_pool(x, window, stride, padding, "max"))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*CASES)
  def test_avg_pool(self, shape, window, stride, padding):
    x = np.random.default_rng(1).normal(size=shape)
    kw = dict(window=window, stride=stride, padding=padding)
    ys = self.variant(  # with jit: one compilation for both
        lambda x: [avg_pool(x, count_include_pad=include, **kw) for include in (False, True)]
    )(x)
    for include, y in zip((False, True), ys, strict=True):
      np.testing.assert_allclose(
          y,
          ref_pool(x, window, stride, padding, "avg", count_include_pad=include),
          rtol=1e-12,
          atol=1e-12,
      )

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*CASES)
  def test_lp_pool(self, shape, window, stride, padding):
    x = np.random.default_rng(2).normal(size=shape)
    kw = dict(window=window, stride=stride, padding=padding)
    *ys, y_inf = self.variant(  # with jit: one compilation for every p
        lambda x: [lp_pool(x, p=p, **kw) for p in (1, 3, 0.5, np.inf)]
    )(x)
    for p, y in zip((1, 3, 0.5), ys, strict=True):
      np.testing.assert_allclose(y, ref_pool(x, window, stride, padding, "lp", p=p), rtol=1e-10)
    np.testing.assert_array_equal(y_inf, ref_pool(np.abs(x), window, stride, padding, "max"))

  @chex.variants(with_jit=True)
  @parameterized.named_parameters(*CASES)
  def test_max_grad_goes_to_first_maximum(self, shape, window, stride, padding):
    rng = np.random.default_rng(3)
    x = _tied(rng, shape)
    f = functools.partial(max_pool, window=window, stride=stride, padding=padding)
    g = rng.normal(size=jax.eval_shape(f, jnp.asarray(x)).shape)
    t = rng.normal(size=shape)
    dx, (_, y_dot) = self.variant(  # one compilation for both modes
        lambda x, g, t: (jax.grad(lambda x: jnp.vdot(f(x), g))(x), jax.jvp(f, (x,), (t,)))
    )(x, g, t)
    np.testing.assert_allclose(dx, ref_max_grad(x, g, window, stride, padding), rtol=1e-12)
    # Forward mode gives the same linear map: <jvp(t), g> == <t, vjp(g)>.
    np.testing.assert_allclose(np.vdot(y_dot, g), np.vdot(t, dx), rtol=1e-10)

  @chex.variants(with_jit=True)
  @parameterized.named_parameters(*CASES)
  def test_avg_grad(self, shape, window, stride, padding):
    x = np.random.default_rng(4).normal(size=shape)
    kw = dict(window=window, stride=stride, padding=padding)
    dxs = self.variant(  # one compilation for both
        lambda x: [
            jax.grad(lambda x, i=include: jnp.sum(avg_pool(x, count_include_pad=i, **kw)))(x)
            for include in (False, True)
        ]
    )(x)
    for include, dx in zip((False, True), dxs, strict=True):
      # Reference: every window adds 1 / divisor to each input it covers.
      win = per_dim(window, len(shape) - 2)
      strd = win if stride is None else per_dim(stride, len(shape) - 2)
      ref = np.zeros(shape)
      for _, slices, _ in pool_windows(x, win, strd, padding):
        count = math.prod(win) if include else math.prod(s.stop - s.start for s in slices)
        ref[(slice(None), *slices, slice(None))] += 1 / count
      np.testing.assert_allclose(dx, ref, rtol=1e-12)


# ------------------------------------------------------------------ specific values


def test_lecture_example():
  x = LECTURE[None, :, :, None]
  np.testing.assert_array_equal(max_pool(x, 2, stride=2)[0, :, :, 0], [[4, 9], [5, 7]])
  np.testing.assert_array_equal(max_pool(x, (2, 2))[0, :, :, 0], [[4, 9], [5, 7]])
  np.testing.assert_allclose(avg_pool(x, 2)[0, :, :, 0], [[2, 4.5], [3, 5.75]])


def test_max_grad_all_tied_goes_to_window_top_left():
  dx = jax.grad(lambda x: jnp.sum(max_pool(x, 2)))(jnp.ones((1, 4, 4, 1)))
  np.testing.assert_array_equal(
      dx[0, :, :, 0], [[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
  )
  # jnp.max would split each tie four ways instead.
  x = jnp.array([[0.0, 5.0], [5.0, 5.0]]).reshape(1, 2, 2, 1)
  np.testing.assert_array_equal(
      jax.grad(lambda x: max_pool(x, 2).sum())(x)[0, :, :, 0], [[0, 1], [0, 0]]
  )
  np.testing.assert_allclose(
      jax.grad(lambda x: jnp.max(x))(x)[0, :, :, 0], [[0, 1 / 3], [1 / 3, 1 / 3]]
  )


def test_max_grad_overlapping_ties_accumulate():
  # 3×3 windows, stride 1, SAME: every window of a constant image picks its top-left
  # real pixel, so corner (0, 0) receives from four windows.
  dx = jax.grad(lambda x: max_pool(x, 3, stride=1, padding="SAME").sum())(jnp.ones((1, 4, 4, 1)))
  np.testing.assert_array_equal(
      dx[0, :, :, 0], [[4, 2, 2, 0], [2, 1, 1, 0], [2, 1, 1, 0], [0, 0, 0, 0]]
  )


@pytest.mark.parametrize("window,stride", [((9, 9), 1), (12, None)])
def test_max_grad_large_windows(window, stride):
  # Beyond the unrolled limit: overlapping windows use reduce_window's gradient and
  # non-overlapping ones a reduction; both keep the first maximum.
  rng = np.random.default_rng(5)
  x = _tied(rng, (2, 12, 12, 2), levels=2)
  f = functools.partial(max_pool, window=window, stride=stride)
  g = rng.normal(size=f(x).shape)
  dx = jax.jit(jax.grad(lambda x, g: jnp.vdot(f(x), g)))(x, g)
  np.testing.assert_allclose(dx, ref_max_grad(x, g, window, stride, "VALID"), rtol=1e-12)


def test_max_pool_nan_propagates_and_takes_the_gradient():
  x = np.array([1.0, np.nan, np.nan, 0.0, 2.0, 1.0]).reshape(1, 6, 1)
  y = max_pool(x, 3)
  assert np.isnan(y[0, 0, 0]) and y[0, 1, 0] == 2.0
  dx = jax.grad(lambda x: max_pool(x, 3).sum())(x)
  np.testing.assert_array_equal(dx[0, :, 0], [0, 1, 0, 0, 1, 0])
  dx = jax.grad(lambda x: max_pool(x, 2, stride=1).sum())(x)  # overlapping path
  np.testing.assert_array_equal(dx[0, :, 0], [0, 2, 1, 0, 2, 0])


def test_max_pool_integers_and_padding_never_wins():
  x = -np.arange(1, 10, dtype=np.int32).reshape(1, 3, 3, 1) * 100
  y = max_pool(x, 2, stride=2, padding="SAME")
  assert y.dtype == jnp.int32
  np.testing.assert_array_equal(y[0, :, :, 0], [[-100, -300], [-700, -900]])
  yf = max_pool(-np.ones((1, 3, 1)), 3, stride=1, padding=1)
  np.testing.assert_array_equal(yf[0, :, 0], [-1, -1, -1])


# ----------------------------------------------------------- exact integer averages

_INT_DTYPES = [np.int8, np.int16, np.int32, np.uint8, np.uint16, np.uint32]


def _extreme_ints(shape, dtype, seed):
  """The dtype's max everywhere, its min everywhere, min and max mixed, and random
  values of the whole range, one per example."""
  info = np.iinfo(dtype)
  rng = np.random.default_rng(seed)
  lo, hi = np.array(info.min, dtype), np.array(info.max, dtype)
  return np.stack(
      [
          np.full(shape[1:], hi),
          np.full(shape[1:], lo),
          np.where(rng.random(shape[1:]) < 0.5, lo, hi),
          rng.integers(info.min, info.max, shape[1:], dtype=dtype, endpoint=True),
      ]
  )


_INT_AVG_CASES = [
    # window, stride, padding, count_include_pad
    (3, None, "VALID", False),
    ((3, 3), 1, 1, False),
    ((3, 3), 1, 1, True),
    ((2, 4), (1, 3), ((1, 1), (0, 3)), False),
    ((2, 4), (1, 3), ((1, 1), (0, 3)), True),
    (1, 1, "VALID", False),
    ((5, 5), 2, "SAME", False),
]


@pytest.mark.parametrize("x64", [False, True])
@pytest.mark.parametrize("dtype", _INT_DTYPES)
def test_integer_averages_are_exact_at_the_extremes(dtype, x64):
  # Issue 28: the window sums were int32 and wrapped (3e8 averaged to -1.77e8, a uint32
  # 2**31 to 0). Now the sum is exact and divided once: the float32 nearest the mean.
  x = _extreme_ints((4, 5, 6, 2), dtype, 17)
  with jax.enable_x64(x64):

    @jax.jit  # one compilation for every case (eagerly, each op compiles op by op)
    def run(x):
      avgs = [
          avg_pool(x, window, stride=stride, padding=padding, count_include_pad=incl)
          for window, stride, padding, incl in _INT_AVG_CASES
      ]
      return avgs, [global_avg_pool(x, keepdims=keepdims) for keepdims in (False, True)]

    avgs, global_avgs = run(x)
    for y, (window, stride, padding, incl) in zip(avgs, _INT_AVG_CASES, strict=True):
      assert y.dtype == jnp.float32
      want = ref_int_avg_pool(x, window, stride, padding, count_include_pad=incl)
      np.testing.assert_array_equal(y, want, err_msg=str((window, stride, padding, incl)))
    for keepdims, y in zip((False, True), global_avgs, strict=True):
      totals = x.astype(object).sum(axis=(1, 2))
      want = np.array([[round_float32(Fraction(int(t), 30)) for t in row] for row in totals])
      np.testing.assert_array_equal(y.reshape(want.shape), want)
      assert y.shape == ((4, 1, 1, 2) if keepdims else (4, 2)) and y.dtype == jnp.float32


def test_integer_averages_of_the_issue():
  with jax.enable_x64(False):
    np.testing.assert_array_equal(
        avg_pool(jnp.full((1, 3, 3, 1), 300_000_000, jnp.int32), 3),
        np.full((1, 1, 1, 1), 3e8, np.float32),
    )
    np.testing.assert_array_equal(
        avg_pool(jnp.full((1, 2, 1), 2**31, jnp.uint32), 2), np.full((1, 1, 1), 2**31, np.float32)
    )
    np.testing.assert_array_equal(
        global_avg_pool(jnp.full((1, 3, 3, 1), 300_000_000, jnp.int32)),
        np.full((1, 1), 3e8, np.float32),
    )


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_64_bit_integer_averages_are_exact(dtype):  # (x64, as conftest sets)
  x = _extreme_ints((4, 6, 3, 1), dtype, 18)
  np.testing.assert_array_equal(
      avg_pool(x, (3, 2), stride=1, padding=1), ref_int_avg_pool(x, (3, 2), (1, 1), 1)
  )
  np.testing.assert_array_equal(
      avg_pool(x, 3, padding=1, count_include_pad=True),
      ref_int_avg_pool(x, 3, None, 1, count_include_pad=True),
  )


@pytest.mark.parametrize("x64", [False, True])
def test_integer_averages_over_many_positions_and_near_ties(x64):
  # Counts above 2**15 cut the values into narrower fields; sums near float32
  # midpoints (2**24 + 1, odd multiples of half an ulp) must round once, to even.
  rng = np.random.default_rng(19)
  big = np.iinfo(np.int32).max
  x = np.where(rng.random((3, 70000, 1)) < 0.5, big, np.iinfo(np.int32).min).astype(np.int32)
  x[2] = rng.integers(-3, 4, (70000, 1)) + big // 70000
  ties = np.array(
      [
          [2**24 + 1, 0],
          [2**24 + 3, 0],
          [2**25 + 2, 0],
          [-(2**24) - 1, 0],
          [2**31 - 1, 2**31 - 1],
          [2**24 + 2, 1],
      ],
      np.int32,
  ).reshape(6, 2, 1)
  with jax.enable_x64(x64):

    @jax.jit  # one compilation for every case (eagerly, each op compiles op by op)
    def run(x, ties):
      return (
          [
              avg_pool(x, 40000, stride=30000, padding=((0, 10000),), count_include_pad=incl)
              for incl in (False, True)
          ],
          global_avg_pool(x),
          [avg_pool(ties, 2, count_include_pad=incl) for incl in (False, True)],
          avg_pool(ties[:, :1], 1),
      )

    windows, global_avg, tie_avgs, ones = run(x, ties)
    for count_include_pad, y in zip((False, True), windows, strict=True):
      want = ref_int_avg_pool(x, 40000, 30000, ((0, 10000),), count_include_pad=count_include_pad)
      np.testing.assert_array_equal(y, want)
    want = [[round_float32(Fraction(int(x[b].astype(object).sum()), 70000))] for b in range(3)]
    np.testing.assert_array_equal(global_avg, np.array(want, np.float32))
    for y in tie_avgs:  # (count_include_pad False, True)
      np.testing.assert_array_equal(y, ref_int_avg_pool(ties, 2, None, "VALID"))
    # count 1: the float32 of the integer itself
    np.testing.assert_array_equal(ones, ties[:, :1].astype(np.float32))


def test_integer_means_over_too_many_positions_are_refused():
  # Refused while tracing, so no gigabyte input is needed.
  x = jax.ShapeDtypeStruct((1, 2**15, 2**15, 1), jnp.int8)
  with pytest.raises(
      ValueError,
      match=r"global_avg_pool: x got \(1, 32768, 32768, 1\): an "
      r"integer mean over 1073741824 positions; expected at most 1073741823",
  ):
    jax.eval_shape(global_avg_pool, x)
  with pytest.raises(
      ValueError, match=r"avg_pool: window got 32768: an integer mean over " r"1073741824 positions"
  ):
    jax.eval_shape(lambda x: avg_pool(x, 2**15), x)
  assert jax.eval_shape(global_avg_pool, x.update(dtype=jnp.float32)).shape == (1, 1)


def test_lp_pool_gradient_is_finite_on_zero_windows():
  x = jnp.zeros((1, 4, 1)).at[0, 0, 0].set(3.0)
  dx = jax.grad(lambda x: lp_pool(x, 2, p=2).sum())(x)
  np.testing.assert_array_equal(dx[0, :, 0], [1, 0, 0, 0])


def _ref_lp(x, window, stride, padding, p):
  if np.isinf(p):
    return ref_pool(np.abs(x), window, stride, padding, "max")
  return ref_pool(x, window, stride, padding, "lp", p=p)


@pytest.mark.parametrize("p", [1, 2, 3, 0.5, 2.5, np.inf])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("window,stride,padding", [(2, None, "VALID"), (3, 1, 1)])
def test_lp_pool_non_finite_windows_follow_the_formula(p, dtype, window, stride, padding):
  # (Σ|x|^p)^(1/p): a window holding NaN is NaN (it was 0 for every finite p: the root
  # was kept where total > 0, which a NaN total is not), ±inf gives inf, zeros give 0.
  x = np.array(
      [np.nan, 1, np.inf, 2, -np.inf, -3, 0, 0, 0, 1, np.nan, 0, -0.0, np.inf, np.nan], dtype
  ).reshape(1, 15, 1)
  y = lp_pool(x, window, p=p, stride=stride, padding=padding)
  assert y.dtype == dtype
  want = _ref_lp(x.astype(np.float64), window, stride or window, padding, p)
  assert np.isnan(want).any() and np.isinf(want).any() and (want == 0).any()
  np.testing.assert_allclose(y, want, rtol=1e-6 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("p", [1, 2, 3, 2.5, np.inf])
def test_lp_pool_gradient_is_finite_on_zero_windows_for_every_p(p):
  x = jnp.zeros((1, 6, 1)).at[0, 0, 0].set(3.0).at[0, 4, 0].set(-2.0)
  dx = jax.grad(lambda x: lp_pool(x, 2, p=p).sum())(x)
  assert np.isfinite(dx).all(), dx
  if not np.isinf(p):  # (max |x| passes its gradient through |x|'s slope at 0)
    np.testing.assert_array_equal(dx[0, 2:4, 0], [0, 0])  # the window of zeros


# ------------------------------------------------------------------------ hypothesis


@st.composite
def pool_settings(draw):
  nd = draw(st.integers(1, 3))
  window = tuple(draw(st.integers(1, 3)) for _ in range(nd))
  stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
  kind = draw(st.sampled_from(["VALID", "SAME", "pairs"]))
  if kind == "pairs":
    padding = tuple((draw(st.integers(0, k - 1)), draw(st.integers(0, k - 1))) for k in window)
  else:
    padding = kind
  pads = ref_pads(padding, (0,) * nd, window, stride) if kind != "SAME" else [(0, 0)] * nd
  spatial = tuple(
      draw(st.integers(max(k - lo - hi, 1), 6)) for k, (lo, hi) in zip(window, pads, strict=True)
  )
  real = ref_pads(padding, spatial, window, stride)
  for n, k, s, (lo, hi) in zip(spatial, window, stride, real, strict=True):
    m = (n + lo + hi - k) // s + 1
    hypothesis.assume((m - 1) * s - lo < n)  # no window entirely in the padding
  return (2, *spatial, 2), window, stride, padding


@hypothesis.settings(max_examples=12, deadline=None)
@hypothesis.given(settings=pool_settings(), seed=st.integers(0, 2**16))
def test_pools_match_references_hypothesis(settings, seed):
  shape, window, stride, padding = settings
  rng = np.random.default_rng(seed)
  x = _tied(rng, shape, levels=4)  # ties everywhere: the gradient rule is exercised
  kw = dict(stride=stride, padding=padding)
  g = rng.normal(size=ref_pool(x, window, stride, padding, "max").shape)

  @jax.jit  # one compilation per example
  def run(x, g):
    y, vjp = jax.vjp(lambda x: max_pool(x, window, **kw), x)
    return (
        y,
        vjp(g)[0],
        avg_pool(x, window, **kw),
        avg_pool(x, window, count_include_pad=True, **kw),
        lp_pool(x + 1, window, p=3, **kw),
    )

  y, dx, avg, avg_incl, lp = run(x, g)
  np.testing.assert_array_equal(y, ref_pool(x, window, stride, padding, "max"))
  np.testing.assert_allclose(dx, ref_max_grad(x, g, window, stride, padding), rtol=1e-12)
  np.testing.assert_allclose(avg, ref_pool(x, window, stride, padding, "avg"), rtol=1e-12)
  np.testing.assert_allclose(
      avg_incl, ref_pool(x, window, stride, padding, "avg", count_include_pad=True), rtol=1e-12
  )
  np.testing.assert_allclose(lp, ref_pool(x + 1, window, stride, padding, "lp", p=3), rtol=1e-10)


# --------------------------------------------------------------------- global pools


class GlobalPoolTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters((2, 5, 3), (2, 4, 3, 2), (1, 3, 2, 4, 2))
  def test_global_pools(self, *shape):
    rng = np.random.default_rng(6)
    x = rng.normal(size=shape)
    axes = tuple(range(1, len(shape) - 1))
    gmax = self.variant(global_max_pool)(x)
    gavg = self.variant(global_avg_pool)(x)
    chex.assert_shape([gmax, gavg], (shape[0], shape[-1]))
    np.testing.assert_array_equal(gmax, x.max(axis=axes))
    np.testing.assert_allclose(gavg, x.mean(axis=axes), rtol=1e-12)
    keep = (shape[0], *(1,) * len(axes), shape[-1])
    chex.assert_shape(self.variant(functools.partial(global_max_pool, keepdims=True))(x), keep)
    chex.assert_shape(self.variant(functools.partial(global_avg_pool, keepdims=True))(x), keep)
    # The gradient goes to the first maximum in row-major spatial order.
    xt = _tied(rng, shape, levels=2)
    g = rng.normal(size=(shape[0], shape[-1]))
    dx = jax.jit(jax.grad(lambda x, g: jnp.vdot(global_max_pool(x), g)))(xt, g)
    ref = ref_max_grad(xt, g.reshape(keep), shape[1:-1], None, "VALID")
    np.testing.assert_allclose(dx, ref, rtol=1e-12)
    da = jax.jit(jax.grad(lambda x: global_avg_pool(x).sum()))(x)
    np.testing.assert_allclose(da, np.full(shape, 1 / math.prod(shape[1:-1])), rtol=1e-12)

  def test_global_max_large_image_tie(self):
    x = jnp.ones((1, 16, 16, 1))  # 256 positions: the reduction path
    dx = jax.grad(lambda x: global_max_pool(x).sum())(x)
    assert dx[0, 0, 0, 0] == 1 and float(dx.sum()) == 1


# ---------------------------------------------------------------------------- maxout


class MaxoutTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(((3, 6), 2, -1), ((3, 6), 3, 1), ((2, 4, 5), 2, 1), ((6, 2, 3), 3, 0))
  def test_maxout_reference(self, shape, pieces, axis):
    rng = np.random.default_rng(7)
    x = _tied(rng, shape)
    y = self.variant(functools.partial(maxout, pieces=pieces, axis=axis))(x)
    xm = np.moveaxis(x, axis, -1)
    ref = np.zeros((*xm.shape[:-1], xm.shape[-1] // pieces))
    for c in range(xm.shape[-1]):  # channel c belongs to group c // pieces
      grp = c // pieces
      ref[..., grp] = np.maximum(ref[..., grp], xm[..., c]) if c % pieces else xm[..., c]
    np.testing.assert_array_equal(y, np.moveaxis(ref, -1, axis))
    g = rng.normal(size=y.shape)
    dx = jax.jit(jax.grad(lambda x, g: jnp.vdot(maxout(x, pieces, axis=axis), g)))(x, g)
    gm = np.moveaxis(g, axis, -1)
    ref_dx = np.zeros_like(xm)
    for idx in np.ndindex(*xm.shape[:-1]):
      for grp in range(xm.shape[-1] // pieces):
        first = np.argmax(xm[idx][grp * pieces : (grp + 1) * pieces])
        ref_dx[(*idx, grp * pieces + first)] = gm[(*idx, grp)]
    np.testing.assert_allclose(dx, np.moveaxis(ref_dx, -1, axis), rtol=1e-12)

  def test_maxout_int_dtype(self):
    y = maxout(np.array([[1, 5, 3, 2]], np.int32), 2)
    assert y.dtype == jnp.int32
    np.testing.assert_array_equal(y, [[5, 3]])


# ------------------------------------------------------------------------- blur_pool


class BlurPoolTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(
      ((1, 7, 2), 2, 3),
      ((2, 6, 5, 2), 2, 3),
      ((1, 8, 8, 1), 2, 5),
      ((1, 9, 9, 1), 3, 4),
      ((1, 5, 4, 6, 1), 2, 3),
  )
  def test_matches_binomial_reference(self, shape, stride, k):
    x = np.random.default_rng(8).normal(size=shape)
    y = self.variant(functools.partial(blur_pool, stride=stride, kernel_size=k))(x)
    chex.assert_shape(y, (shape[0], *(-(-n // stride) for n in shape[1:-1]), shape[-1]))
    np.testing.assert_allclose(y, ref_binomial_blur(x, stride, k), rtol=1e-12, atol=1e-12)
    f = functools.partial(blur_pool, stride=stride, kernel_size=k, padding_mode="zeros")
    yz = self.variant(f)(x)
    np.testing.assert_allclose(yz, ref_binomial_blur(x, stride, k, "zeros"), rtol=1e-12, atol=1e-12)

  def test_constant_image_stays_constant(self):
    x = np.full((1, 9, 8, 2), 3.5)
    y, y53, yz = jax.jit(  # one compilation (eagerly, each op compiles op by op)
        lambda x: (
            blur_pool(x),
            blur_pool(x, kernel_size=5, stride=3),
            blur_pool(x, kernel_size=3, padding_mode="zeros"),
        )
    )(x)
    np.testing.assert_allclose(y, 3.5, rtol=1e-12)  # reflect: everywhere
    np.testing.assert_allclose(y53, 3.5, rtol=1e-12)
    np.testing.assert_allclose(yz[:, 1:4, 1:], 3.5, rtol=1e-12)  # away from the border
    assert not np.allclose(yz[:, 0, 0], 3.5)

  def test_kernel_size_one_is_subsampling(self):
    x = np.random.default_rng(9).normal(size=(2, 7, 6, 3))
    np.testing.assert_array_equal(blur_pool(x, kernel_size=1), x[:, ::2, ::2])

  def test_depthwise_conv_equivalence(self):
    x = np.random.default_rng(10).normal(size=(1, 6, 6, 3))
    w = np.broadcast_to((np.outer([1, 2, 1], [1, 2, 1]) / 16.0)[:, :, None, None], (3, 3, 1, 3))
    ref = cross_correlate(x, w, stride=2, padding=1, groups=3, padding_mode="reflect")
    np.testing.assert_allclose(blur_pool(x), ref, rtol=1e-12)


# --------------------------------------------------------------------------- APS


class PolyphaseTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(
      ((3, 8, 2), 2, 2),
      ((3, 6, 4, 2), 2, 1),
      ((2, 6, 6, 1), 3, np.inf),
      ((2, 4, 6, 2), (2, 3), 2),
      ((2, 4, 2, 4, 1), 2, 2),
  )
  def test_keeps_the_largest_norm_component(self, shape, stride, p):
    nd = len(shape) - 2
    stride_t = (stride,) * nd if isinstance(stride, int) else stride
    x = np.random.default_rng(11).normal(size=shape)
    y = self.variant(functools.partial(polyphase_downsample, stride=stride, p=p))(x)
    for b, r in enumerate(ref_aps_phase(x, stride_t, p)):
      comp = x[(b, *(slice(ri, None, s) for ri, s in zip(r, stride_t, strict=True)), slice(None))]
      np.testing.assert_array_equal(y[b], comp)

  def test_circular_shift_equivariance_every_shift(self):
    s = 2
    x = np.random.default_rng(12).normal(size=(2, 6, 6, 3))
    y = np.asarray(polyphase_downsample(x, stride=s))
    phases = ref_aps_phase(x, (s, s))
    for t in itertools.product(range(6), range(6)):
      ys = np.asarray(polyphase_downsample(np.roll(x, t, axis=(1, 2)), stride=s))
      for b, r in enumerate(phases):
        shift = tuple((ri + ti) // s for ri, ti in zip(r, t, strict=True))
        np.testing.assert_array_equal(ys[b], np.roll(y[b], shift, axis=(0, 1)))

  def test_network_with_aps_is_exactly_shift_invariant(self):
    rng = np.random.default_rng(13)
    x = rng.normal(size=(2, 8, 8, 3))
    w1, w2 = rng.normal(size=(3, 3, 3, 4)), rng.normal(size=(3, 3, 4, 5))

    def net(x, down):
      h = jax.nn.relu(cross_correlate(x, w1, padding="SAME", padding_mode="circular"))
      h = jax.nn.relu(cross_correlate(down(h), w2, padding="SAME", padding_mode="circular"))
      return global_max_pool(down(h)), global_avg_pool(down(h))

    aps = functools.partial(polyphase_downsample, stride=2)
    pool = functools.partial(max_pool, window=2)
    net_aps, net_pool = jax.jit(lambda x: net(x, aps)), jax.jit(lambda x: net(x, pool))
    ref_max, ref_avg = net_aps(x)
    for t in itertools.product(range(8), range(8)):
      got_max, got_avg = net_aps(np.roll(x, t, axis=(1, 2)))
      # float64: 1e-12 is exact up to the convolution's summation order.
      np.testing.assert_allclose(got_max, ref_max, rtol=1e-12)
      np.testing.assert_allclose(got_avg, ref_avg, rtol=1e-12)
    # The same network with 2×2 max pooling is not invariant to a one-pixel shift.
    assert not np.allclose(net_pool(np.roll(x, 1, axis=1))[1], net_pool(x)[1])

  @parameterized.parameters(1, 2, 3, 2.5, np.inf)
  def test_non_finite_and_extreme_components_as_numpy_chooses(self, p):
    # A component holding NaN has a NaN norm, which np.argmax takes as the largest (the
    # first NaN wins); inf norms tie (the first wins). Float32 magnitudes whose p-th
    # powers overflow (1e20) or underflow (1e-30) in float32 chose the first phase; the
    # float64 reference, exact for float32 inputs here, sees their order.
    rows = [
        [1, np.nan, 5, 0, 2, 1],
        [0, 5, np.nan, 1, 7, 7],
        [np.inf, 1, 2, np.inf, 0, 0],
        [1, 2, np.inf, np.nan, 0, 0],
        [1e20, 2e20, 1e20, 2e20, 1e20, 2e20],
        [3e-30, 2e-30, 1e-30, 2e-30, 3e-30, 2e-30],
        [1, -np.inf, 3, 4, 5, 6],
    ]
    for dtype in (np.float32, np.float64):
      x = np.array(rows, dtype)[:, :, None]
      y = polyphase_downsample(x, p=p)
      want = [x[b, r[0] :: 2] for b, r in enumerate(ref_aps_phase(x.astype(np.float64), (2,), p))]
      np.testing.assert_array_equal(y, np.stack(want))

  def test_integer_norms_that_overflow_float32(self):
    # (2**31 - 2)**10 overflows float32: both norms were inf and the first phase won.
    x = np.array([2**31 - 1, 2**31 - 2, 0, 2**31 - 2], np.int32).reshape(1, 4, 1)
    y = polyphase_downsample(x, p=10)
    assert y.dtype == np.int32
    (r,) = ref_aps_phase(x, (2,), 10)
    np.testing.assert_array_equal(y[0], x[0, r[0] :: 2])

  def test_ties_choose_the_first_phase_and_gradient_flows_to_it(self):
    x = np.array([1.0, 2.0, 2.0, 1.0]).reshape(1, 4, 1)  # phases [1, 2] and [2, 1] tie
    np.testing.assert_array_equal(polyphase_downsample(x)[0, :, 0], [1, 2])
    x = np.array([0.0, 1.0, 0.0, 3.0]).reshape(1, 4, 1)
    g = jnp.array([10.0, 20.0]).reshape(1, 2, 1)
    dx = jax.grad(lambda x: jnp.vdot(polyphase_downsample(x), g))(x)
    np.testing.assert_array_equal(dx[0, :, 0], [0, 10, 0, 20])


# ------------------------------------------------------------- dtypes, vmap, API


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
def test_dtype_kept(dtype):
  x = jnp.asarray(np.random.default_rng(14).normal(size=(1, 4, 4, 4)), dtype)
  outs = jax.jit(
      lambda x: [
          max_pool(x, 2),
          avg_pool(x, 3, stride=1, padding="SAME"),
          lp_pool(x, 2),
          global_max_pool(x),
          global_avg_pool(x),
          maxout(x, 2),
          blur_pool(x),
          polyphase_downsample(x),
          jax.grad(lambda x: max_pool(x, 2).astype(jnp.float32).sum())(x),
          avg_pool(x, 2),
      ]
  )(x)
  for y in outs:
    assert y.dtype == dtype
  np.testing.assert_allclose(
      np.asarray(outs[-1], np.float32),
      ref_pool(np.asarray(x, np.float64), 2, None, "VALID", "avg"),
      rtol=1e-2,
  )


def test_vmap():
  rng = np.random.default_rng(15)
  xs = rng.normal(size=(3, 2, 6, 6, 2))
  for f in (
      lambda x: max_pool(x, 3, stride=2, padding=1),
      lambda x: avg_pool(x, 2),
      lambda x: lp_pool(x, 2, p=3),
      lambda x: polyphase_downsample(x),
      lambda x: blur_pool(x),
      jax.grad(lambda x: max_pool(x, 2).sum()),
  ):
    f = jax.jit(f)
    np.testing.assert_allclose(jax.jit(jax.vmap(f))(xs), np.stack([f(x) for x in xs]), rtol=1e-12)


def test_optional_arguments_are_keyword_only():
  for name in pooling.__all__:
    for param in inspect.signature(getattr(pooling, name)).parameters.values():
      if param.default is not inspect.Parameter.empty:
        assert param.kind is inspect.Parameter.KEYWORD_ONLY, (name, param.name)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: max_pool(np.ones((1, 4, 4, 1)), (2, 2, 2)), ValueError, "window"),
        (lambda: max_pool(np.ones((1, 4, 4, 1)), 0), ValueError, "window"),
        (lambda: max_pool(np.ones((1, 4, 4, 1)), 2, stride=0), ValueError, "stride"),
        (lambda: avg_pool(np.ones((1, 4, 4, 1)), 2, padding="HALF"), ValueError, "padding"),
        (lambda: max_pool(np.ones((1, 4, 4, 1)), 2, padding=2), ValueError, "padding"),
        (lambda: avg_pool(np.ones((1, 2, 1)), 2, padding=((0, 2),)), ValueError, "padding"),
        (lambda: max_pool(np.ones((1, 4, 4, 1)), 5), ValueError, "kernel size"),
        (lambda: max_pool(np.ones((4, 4)), 2), ValueError, "x has shape"),
        (lambda: global_max_pool(np.ones((1, 2, 2, 2, 2, 1))), ValueError, "x has shape"),
        (lambda: avg_pool(np.ones((1, 4, 1), np.complex64), 2), TypeError, "x has dtype"),
        (lambda: max_pool(np.ones((1, 4, 1), bool), 2), TypeError, "x has dtype"),
        (
            lambda: avg_pool(np.ones((1, 4, 1)), 2, count_include_pad="yes"),
            ValueError,
            "avg_pool: count_include_pad got 'yes'; expected a bool",
        ),
        (
            lambda: max_pool(np.ones((1, 4, 1)), 2, return_indices="no"),
            ValueError,
            "max_pool: return_indices got 'no'; expected a bool",
        ),
        (lambda: lp_pool(np.ones((1, 4, 1)), 2, p=0), ValueError, "p got"),
        (lambda: lp_pool(np.ones((1, 4, 1)), 2, p="2"), ValueError, "p got"),
        (
            lambda: global_avg_pool(np.ones((1, 4, 1)), keepdims=1),
            ValueError,
            "global_avg_pool: keepdims got 1; expected a bool",
        ),
        (
            lambda: global_max_pool(np.ones((1, 4, 1)), keepdims="True"),
            ValueError,
            "global_max_pool: keepdims got 'True'; expected a bool",
        ),
        # An empty spatial dim: global_avg_pool returned NaN, global_max_pool blamed a
        # "window" the caller never gave.
        (
            lambda: global_avg_pool(np.ones((2, 0, 3, 1))),
            ValueError,
            r"global_avg_pool: x has shape \(2, 0, 3, 1\), an empty spatial dim",
        ),
        (
            lambda: global_avg_pool(np.ones((2, 3, 0, 1), np.int32)),
            ValueError,
            "global_avg_pool: x has shape",
        ),
        (
            lambda: global_max_pool(np.ones((1, 0, 1))),
            ValueError,
            r"global_max_pool: x has shape \(1, 0, 1\), an empty spatial dim",
        ),
        (
            lambda: max_pool(np.ones((1, 4, 1)), 2, stride=2**70),
            ValueError,
            r"max_pool: stride got 1180591620717411303424; .* 2\*\*63 - 1",
        ),
        (
            lambda: avg_pool(np.ones((1, 4, 1)), 2**63),
            ValueError,
            r"avg_pool: window got 9223372036854775808; .* 2\*\*63 - 1",
        ),
        (
            lambda: lp_pool(np.ones((1, 4, 1)), 2, padding=((0, np.uint64(2**64 - 1)),)),
            ValueError,
            r"lp_pool: padding got .* 2\*\*63 - 1",
        ),
        (lambda: max_pool(np.ones((1, 4, 1)), True), ValueError, "max_pool: window got True"),
        (lambda: max_pool(np.ones((1, 4, 1)), "2"), ValueError, "max_pool: window got '2'"),
        (
            lambda: maxout(np.ones((2, 6)), 2**64),
            ValueError,
            r"maxout: pieces got 18446744073709551616; expected a positive int of at most",
        ),
        (lambda: maxout(np.ones((2, 6)), True), ValueError, "maxout: pieces got True"),
        (lambda: maxout(np.ones((2, 6)), 2, axis=np.bool_(True)), ValueError, "maxout: axis"),
        (lambda: maxout(np.ones((2, 6)), 4), ValueError, "pieces"),
        (lambda: maxout(np.ones((2, 6)), 0), ValueError, "pieces"),
        (lambda: maxout(np.ones((2, 6)), 2, axis=2), ValueError, "axis"),
        (lambda: blur_pool(np.ones((1, 4, 4, 1)), stride=0), ValueError, "stride"),
        (lambda: blur_pool(np.ones((1, 4, 4, 1)), kernel_size=(3,)), ValueError, "kernel_size"),
        (
            lambda: blur_pool(np.ones((1, 4, 4, 1)), padding_mode="mirror"),
            ValueError,
            "padding_mode",
        ),
        (lambda: blur_pool(np.ones((1, 2, 2, 1)), kernel_size=5), ValueError, "kernel_size"),
        (lambda: polyphase_downsample(np.ones((1, 5, 4, 1))), ValueError, "stride"),
        (lambda: polyphase_downsample(np.ones((1, 4, 4, 1)), p=-1), ValueError, "p got"),
        (
            lambda: polyphase_downsample(np.ones((1, 4, 4, 1)), stride=(2, 2, 2)),
            ValueError,
            "stride",
        ),
    ],
)
def test_errors_name_the_argument(call, error, match):
  with pytest.raises(error, match=match):
    call()


@pytest.mark.parametrize("stride", [2**40, 2**62, 2**63 - 1, np.uint64(2**63 - 1)])
def test_a_stride_beyond_the_input_gives_one_window(stride):
  # One output position per dim: the stride is not used, but the pools' polyphase view
  # padded each dim to a multiple of it (2**40 in 2-D: a segfault).
  x = np.random.default_rng(16).normal(size=(2, 5, 6, 3))
  cases = [(max_pool, "max", {}), (avg_pool, "avg", {}), (lp_pool, "lp", {"p": 2})]
  windows = [((2, 3), "VALID"), ((3, 3), ((0, 2**39), (1, 0)))]
  cases = list(itertools.product(cases, windows))

  @jax.jit  # one compilation for every case (eagerly, each op compiles op by op)
  def run(x):
    ys = [
        op(x, window, stride=stride, padding=padding, **kw)
        for (op, _, kw), (window, padding) in cases
    ]
    return ys, max_pool(x, 2, stride=(1, stride), return_indices=True)

  ys, (y, idx) = run(x)
  for ((_, kind, _), (window, padding)), y_case in zip(cases, ys, strict=True):
    want = ref_pool(x, window, (int(stride),) * 2, padding, kind)
    np.testing.assert_allclose(y_case, want, rtol=1e-12)
  np.testing.assert_array_equal(y, ref_pool(x, 2, (1, int(stride)), "VALID", "max"))
  np.testing.assert_array_equal(idx, ref_max_pool_indices(x, 2, (1, int(stride)), "VALID"))


# ------------------------------------------ PyTorch's options: ceil_mode, dilation, divisor

# name, x shape, window, stride, padding, dilation (max_pool only), ceil_mode
TORCH_CASES = [
    ("1d_ceil", (2, 7, 3), 3, 2, 1, 1, True),
    ("1d_ceil_drops_padding_start", (2, 5, 2), 2, 3, 1, 1, True),
    ("1d_dilated", (2, 9, 2), 3, 1, 0, 2, False),
    ("1d_dilated_ceil_pairs", (2, 8, 2), 2, 3, ((1, 2),), 3, True),
    ("1d_causal", (2, 6, 2), 3, 1, "CAUSAL", 2, False),
    ("2d_ceil_googlenet", (1, 14, 14, 2), 3, 2, "VALID", 1, True),
    ("2d_ceil_pad", (2, 6, 5, 2), 3, 2, 1, 1, True),
    ("2d_same_lower", (1, 6, 5, 2), (2, 3), (2, 2), "SAME_LOWER", (1, 2), False),
    ("2d_dilated_pairs_ceil", (1, 7, 6, 2), (2, 3), (2, 1), ((1, 0), (0, 2)), (2, 1), True),
    ("3d_ceil_dilated", (1, 5, 4, 6, 2), (2, 2, 3), (2, 3, 2), 1, (2, 1, 1), True),
]


def _torch_kw(stride, padding, ceil_mode, dilation=None):
  kw = dict(stride=stride, padding=padding, ceil_mode=ceil_mode)
  return kw if dilation is None else dict(kw, dilation=dilation)


class TorchOptionsTest(parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*TORCH_CASES)
  def test_max_pool_values_indices_and_gradient(
      self, shape, window, stride, padding, dilation, ceil_mode
  ):
    rng = np.random.default_rng(20)
    x = _tied(rng, shape, levels=4)  # ties: the first maximum's rule matters
    kw = _torch_kw(stride, padding, ceil_mode, dilation)
    f = functools.partial(max_pool, window=window, **kw)
    want = ref_torch_pool(x, window, "max", **kw)
    g = rng.normal(size=want.shape)
    t = rng.normal(size=shape)  # forward mode: the same linear map

    def run(x, g, t):  # with jit: one compilation for all three
      return (
          f(x, return_indices=True),
          jax.grad(lambda x: jnp.vdot(f(x), g))(x),
          jax.jvp(f, (x,), (t,)),
      )

    (y, idx), dx, (_, y_dot) = self.variant(run)(x, g, t)
    np.testing.assert_array_equal(y, want)
    np.testing.assert_array_equal(idx, ref_torch_max_indices(x, window, **kw))
    np.testing.assert_allclose(dx, ref_torch_max_grad(x, g, window, **kw), rtol=1e-12)
    np.testing.assert_allclose(np.vdot(y_dot, g), np.vdot(t, dx), rtol=1e-10)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*TORCH_CASES)
  def test_avg_and_lp_pool(self, shape, window, stride, padding, dilation, ceil_mode):
    del dilation  # (max pooling's)
    x = np.random.default_rng(21).normal(size=shape)
    kw = _torch_kw(stride, padding, ceil_mode)
    avg_cases = list(itertools.product((False, True), (None, 1, 5)))
    lp_cases = (1, 3, 2.5)

    def run(x, g):  # with jit: one compilation for every case
      avgs, grads = [], []
      for include, override in avg_cases:
        f = functools.partial(
            avg_pool, window=window, count_include_pad=include, divisor_override=override, **kw
        )
        avgs.append(f(x))
        grads.append(jax.grad(lambda x, g, f=f: jnp.vdot(f(x), g))(x, g))
      return avgs, grads, [lp_pool(x, window, p=p, **kw) for p in lp_cases]

    want_shape = ref_torch_pool(x, window, "avg", **kw).shape
    g = np.random.default_rng(22).normal(size=want_shape)
    avgs, grads, lps = self.variant(run)(x, g)
    for (include, override), y, dx in zip(avg_cases, avgs, grads, strict=True):
      want = ref_torch_pool(
          x, window, "avg", count_include_pad=include, divisor_override=override, **kw
      )
      np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
      # The gradient: 1 / divisor to every input of a window (the divisors' sum).
      ref_dx = ref_torch_avg_grad(shape, g, window, include, override, **kw)
      np.testing.assert_allclose(dx, ref_dx, rtol=1e-10, atol=1e-12)
    for p, y in zip(lp_cases, lps, strict=True):
      want = ref_torch_pool(x, window, "lp", p=p, **kw)
      np.testing.assert_allclose(y, want, rtol=1e-10)


def ref_torch_avg_grad(x_shape, g, window, include, override, *, stride, padding, ceil_mode):
  """The average pool's gradient from the documented sum over a divisor: the pool is
  ``y = Wᵀ x`` per example and channel, W the [positions, outputs] matrix of the windows'
  taps over their divisors (``ref_torch_pool`` of one-hot inputs), so ``dx = W g``."""
  nd = len(x_shape) - 2
  flat = np.eye(math.prod(x_shape[1:-1])).reshape(-1, *x_shape[1:-1], 1)
  kw = dict(stride=stride, padding=padding, ceil_mode=ceil_mode)
  # [positions, *out, 1]: window averages of each one-hot input (the divisor included).
  weights = ref_torch_pool(
      flat, window, "avg", count_include_pad=include, divisor_override=override, **kw
  )
  assert weights.shape[1 : nd + 1] == g.shape[1:-1]
  g_cols = np.asarray(g).reshape(g.shape[0], -1, g.shape[-1])  # [N, outputs, C]
  dx = np.einsum("pq,nqc->npc", weights.reshape(weights.shape[0], -1), g_cols)
  return dx.reshape(x_shape)


def test_ceil_mode_average_divisor_by_hand():
  # PyTorch's AvgPool1d(3, stride=2, padding=1, ceil_mode=True) on [1, 2, 3, 4]: windows
  # start at −1, 1 and 3; the last covers input 3, padding 4 and position 5 beyond the
  # padding. count_include_pad divides it by 2 (input and padding), not 3; else by 1.
  x = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 4, 1)
  kw = dict(stride=2, padding=1, ceil_mode=True)
  incl = avg_pool(x, 3, count_include_pad=True, **kw)
  np.testing.assert_allclose(incl[0, :, 0], [3 / 3, 9 / 3, 4 / 2], rtol=1e-15)
  excl = avg_pool(x, 3, **kw)
  np.testing.assert_allclose(excl[0, :, 0], [3 / 2, 9 / 3, 4 / 1], rtol=1e-15)
  np.testing.assert_allclose(avg_pool(x, 3, divisor_override=4, **kw)[0, :, 0], [0.75, 2.25, 1])
  np.testing.assert_array_equal(max_pool(x, 3, **kw)[0, :, 0], [2, 4, 4])
  np.testing.assert_allclose(lp_pool(x, 3, p=1, **kw)[0, :, 0], [3, 9, 4])
  # Without ceil_mode the last window is not there.
  assert avg_pool(x, 3, stride=2, padding=1).shape == (1, 2, 1)


def test_dilated_max_pool_reads_only_its_taps():
  # A NaN between two taps of a dilated window does not reach it; one on a tap does,
  # and takes its gradient.
  x = np.array([0.0, np.nan, 2.0, 3.0, 1.0, -1.0]).reshape(1, 6, 1)
  y = max_pool(x, 2, stride=1, dilation=2)  # windows (0, 2), (1, 3), (2, 4), (3, 5)
  np.testing.assert_array_equal(y[0, :, 0], [2.0, np.nan, 2.0, 3.0])
  dx = jax.grad(lambda x: max_pool(x, 2, stride=1, dilation=2).sum())(x)
  np.testing.assert_array_equal(dx[0, :, 0], [0, 1, 2, 1, 0, 0])
  _, idx = max_pool(x, 2, stride=1, dilation=2, return_indices=True)
  np.testing.assert_array_equal(idx[0, :, 0], [2, 1, 2, 3])


def test_ceil_mode_nan_and_inf_reach_only_the_windows_that_read_them():
  x = np.arange(7.0).reshape(1, 7, 1)
  x[0, 6, 0] = np.nan  # only in the ceil window [6, 7, 8)
  x[0, 0, 0] = np.inf
  for op in (max_pool, avg_pool, functools.partial(lp_pool, p=2)):
    y = op(x, 3, stride=3, ceil_mode=True)[0, :, 0]
    assert y.shape == (3,)
    assert np.isposinf(y[0]) and np.isfinite(y[1]) and np.isnan(y[2]), (op, y)
    # Without ceil_mode the NaN is dropped with its window.
    y = op(x, 3, stride=3)[0, :, 0]
    assert y.shape == (2,) and not np.isnan(y).any()
  dx = jax.grad(lambda x: avg_pool(x, 3, stride=3, ceil_mode=True, count_include_pad=True).sum())(
      np.arange(7.0).reshape(1, 7, 1)
  )
  np.testing.assert_allclose(dx[0, :, 0], [1 / 3] * 6 + [1.0])  # the last window divides by 1


@pytest.mark.parametrize("x64", [False, True])
@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.uint16])
def test_integer_averages_with_the_new_divisors(dtype, x64):
  # Per-window divisors (ceil_mode with count_include_pad) and divisor_override go through
  # the exact integer mean: small values, so the float64 reference is exact before its
  # one rounding to float32 (a period of 1/c in binary is below float64's extra bits).
  rng = np.random.default_rng(23)
  info = np.iinfo(dtype)
  x = rng.integers(max(info.min, -100), min(info.max, 100), (2, 7, 6, 2)).astype(dtype)
  cases = [(True, None), (False, None), (True, 3), (False, 7)]
  kws = [dict(stride=2, padding=1, ceil_mode=True, count_include_pad=incl) for incl, _ in cases]
  with jax.enable_x64(x64):
    # One compilation for every case (eagerly, each op compiles op by op).
    ys = jax.jit(
        lambda x: [
            avg_pool(x, (3, 2), divisor_override=override, **kw)
            for (_, override), kw in zip(cases, kws, strict=True)
        ]
    )(x)
    for (include, override), kw, y in zip(cases, kws, ys, strict=True):
      assert y.dtype == jnp.float32
      want = ref_torch_pool(x, (3, 2), "avg", divisor_override=override, **kw)
      np.testing.assert_array_equal(y, want.astype(np.float32), err_msg=str((include, override)))


def test_torch_options_reach_the_modules():
  from cnnjax import nn as cnn

  x = np.random.default_rng(24).normal(size=(2, 9, 8, 3))
  kw = dict(stride=2, padding=1, ceil_mode=True)
  np.testing.assert_array_equal(
      cnn.MaxPool(3, dilation=2, **kw)(x), max_pool(x, 3, dilation=2, **kw)
  )
  np.testing.assert_array_equal(
      cnn.AvgPool(3, count_include_pad=True, divisor_override=4, **kw)(x),
      avg_pool(x, 3, count_include_pad=True, divisor_override=4, **kw),
  )
  np.testing.assert_array_equal(cnn.LpPool(3, p=3, **kw)(x), lp_pool(x, 3, p=3, **kw))


@st.composite
def torch_pool_settings(draw):
  """Every option at once, on windows that all read the input (PyTorch's sizes)."""
  nd = draw(st.integers(1, 3))
  window = tuple(draw(st.integers(1, 3)) for _ in range(nd))
  stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
  dilation = tuple(draw(st.integers(1, 3)) for _ in range(nd))
  ceil_mode = draw(st.booleans())
  kind = draw(st.sampled_from(["VALID", "SAME", "SAME_LOWER", "CAUSAL", "pairs"]))
  hypothesis.assume(kind != "CAUSAL" or nd == 1)
  if kind == "pairs":
    padding = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in window)
  else:
    padding = kind
  spatial = tuple(draw(st.integers(1, 7)) for _ in range(nd))
  for pool_dilation in (dilation, (1,) * nd):
    r_eff = [(k - 1) * t + 1 for k, t in zip(window, pool_dilation, strict=True)]
    pads = ref_pads(padding, spatial, r_eff, stride)
    for n, k, s, t, r, (lo, hi) in zip(
        spatial, window, stride, pool_dilation, r_eff, pads, strict=True
    ):
      hypothesis.assume(n + lo + hi >= r)
      m = ref_torch_out_size(n, k, s, lo, hi, dilation=t, ceil_mode=ceil_mode)
      hypothesis.assume(  # every window reads the input
          all(any(0 <= o * s - lo + j * t < n for j in range(k)) for o in range(m))
      )
  return (2, *spatial, 2), window, stride, padding, dilation, ceil_mode


@hypothesis.settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[hypothesis.HealthCheck.filter_too_much],
)
@hypothesis.given(settings=torch_pool_settings(), seed=st.integers(0, 2**16))
def test_torch_options_match_references_hypothesis(settings, seed):
  shape, window, stride, padding, dilation, ceil_mode = settings
  rng = np.random.default_rng(seed)
  x = _tied(rng, shape, levels=4)
  kw = dict(stride=stride, padding=padding, ceil_mode=ceil_mode)
  g = rng.normal(size=ref_torch_pool(x, window, "max", dilation=dilation, **kw).shape)

  @jax.jit  # one compilation per example
  def run(x, g):
    y, vjp = jax.vjp(lambda x: max_pool(x, window, dilation=dilation, **kw), x)
    return (
        y,
        vjp(g)[0],
        avg_pool(x, window, count_include_pad=True, **kw),
        avg_pool(x, window, divisor_override=3, **kw),
        lp_pool(x + 1, window, p=3, **kw),
    )

  y, dx, avg_incl, avg_div, lp = run(x, g)
  np.testing.assert_array_equal(y, ref_torch_pool(x, window, "max", dilation=dilation, **kw))
  np.testing.assert_allclose(
      dx, ref_torch_max_grad(x, g, window, dilation=dilation, **kw), rtol=1e-12
  )
  np.testing.assert_allclose(
      avg_incl, ref_torch_pool(x, window, "avg", count_include_pad=True, **kw), rtol=1e-12
  )
  np.testing.assert_allclose(
      avg_div, ref_torch_pool(x, window, "avg", divisor_override=3, **kw), rtol=1e-12
  )
  np.testing.assert_allclose(lp, ref_torch_pool(x + 1, window, "lp", p=3, **kw), rtol=1e-10)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (
            lambda: max_pool(np.ones((1, 6, 1)), 2, dilation=0),
            ValueError,
            r"max_pool: dilation got 0; expected a positive int",
        ),
        (
            lambda: max_pool(np.ones((1, 6, 6, 1)), 2, dilation=(1, 2, 3)),
            ValueError,
            r"max_pool: dilation got \(1, 2, 3\) \(3 values\) for 2 spatial dim",
        ),
        (
            lambda: max_pool(np.ones((1, 6, 1)), 2, ceil_mode="yes"),
            ValueError,
            r"max_pool: ceil_mode got 'yes'; expected a bool",
        ),
        (
            lambda: lp_pool(np.ones((1, 6, 1)), 2, ceil_mode=1),
            ValueError,
            r"lp_pool: ceil_mode got 1; expected a bool",
        ),
        (
            lambda: avg_pool(np.ones((1, 6, 1)), 2, divisor_override=0),
            ValueError,
            r"avg_pool: divisor_override got 0; expected a positive int",
        ),
        (
            lambda: avg_pool(np.ones((1, 6, 1)), 2, divisor_override=1.5),
            ValueError,
            r"avg_pool: divisor_override got 1.5; expected a positive int",
        ),
        (
            lambda: avg_pool(np.ones((1, 6, 1)), 2, divisor_override=True),
            ValueError,
            r"avg_pool: divisor_override got True; expected a positive int",
        ),
        (
            lambda: avg_pool(np.ones((1, 6, 1), np.int32), 2, divisor_override=2**30),
            ValueError,
            r"avg_pool: divisor_override got 1073741824; expected at most 1073741823 for "
            r"integer inputs",
        ),
        (
            lambda: max_pool(np.ones((1, 4, 4, 1)), 2, padding="CAUSAL"),
            ValueError,
            r"max_pool: padding got 'CAUSAL', which is for 1 spatial dim, but the input has 2",
        ),
        (  # taps at −1 and 2 of an input of 2: the window reads only padding
            lambda: max_pool(np.ones((1, 2, 1)), 2, dilation=3, padding=1),
            ValueError,
            r"max_pool: padding got 1, which puts a whole window in the padding in spatial "
            r"dim 0 \(input 2, padding \(1, 1\), window 2, dilation 3, stride 2\)",
        ),
        (
            lambda: avg_pool(np.ones((1, 4, 1)), 2, padding=((0, 3),), ceil_mode=True),
            ValueError,
            r"avg_pool: padding got \(\(0, 3\),\), which puts a whole window in the padding",
        ),
    ],
)
def test_torch_option_errors_name_the_argument(call, error, match):
  with pytest.raises(error, match=match):
    call()


def test_large_dilated_windows_have_a_gradient():
  # 81 taps: beyond the unrolled limit, where undilated windows take reduce_window's
  # gradient; lax has no reverse mode for a dilated max pool, so these keep the chain.
  rng = np.random.default_rng(25)
  x = _tied(rng, (1, 20, 19, 2), levels=3)
  kw = dict(stride=1, dilation=2)
  g = rng.normal(size=ref_torch_pool(x, 9, "max", **kw).shape)
  dx = jax.jit(jax.grad(lambda x: jnp.vdot(max_pool(x, 9, **kw), g)))(x)
  np.testing.assert_allclose(dx, ref_torch_max_grad(x, g, 9, **kw), rtol=1e-12)


@pytest.mark.parametrize("stride", [2**40, 2**63 - 1])
def test_a_dilated_window_with_a_stride_beyond_the_input(stride):
  x = np.random.default_rng(26).normal(size=(2, 5, 6, 3))
  kw = dict(dilation=(2, 3), stride=stride)
  y, idx = max_pool(x, 2, return_indices=True, **kw)
  np.testing.assert_array_equal(y, ref_torch_pool(x, 2, "max", **kw))
  np.testing.assert_array_equal(idx, ref_torch_max_indices(x, 2, **kw))
  kw = dict(kw, ceil_mode=True, padding=((0, 2**39), (1, 0)))
  np.testing.assert_array_equal(max_pool(x, 2, **kw), ref_torch_pool(x, 2, "max", **kw))
