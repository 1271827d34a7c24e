"""Tests for cnnjax.tiled.tiled_conv (tiled convolution, Le et al. 2010).

References are written here: a NumPy loop of
y[b, n, o] = Σ_k Σ_c w[n mod T, k, c, o] · x̃[b, n·s + k·t, c] over the input padded by
``numpy.pad``, and, for derivatives, the same formula vectorised in plain ``jax.numpy``
(one strided slice per kernel offset, per-position kernels gathered by index) so that
jax's own autodiff gives reference gradients for the op's custom JVP.
"""

import functools

import chex
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads
from references import MODES, NUMPY_MODE, assert_close, per_dim, ref_geometry, ref_pads, ref_tiled

from cnnjax.conv import cross_correlate
from cnnjax.local import locally_connected
from cnnjax.tiled import tiled_conv

_SETTINGS = dict(
    deadline=None, suppress_health_check=[HealthCheck.differing_executors, HealthCheck.too_slow]
)


# ------------------------------------------------------------------ references


def jnp_tiled(x, w, *, tile, stride=1, padding="VALID", dilation=1, padding_mode="zeros"):
  """The same formula in plain jax.numpy, differentiable by jax's own rules."""
  nd = (w.ndim - 2) // 2
  kernel, tile = w.shape[nd : 2 * nd], per_dim(tile, nd)
  s, t, pads, out = ref_geometry(
      x.shape[1:-1], kernel, stride=stride, padding=padding, dilation=dilation
  )
  xp = jnp.pad(x, [(0, 0), *pads, (0, 0)], mode=NUMPY_MODE[padding_mode])
  # Per-position kernels w[n mod T] by integer indexing: [*out, *kernel, C_in, C_out].
  index = np.ix_(*[np.arange(m) % tt for m, tt in zip(out, tile, strict=True)])
  w_pos = w[index]
  y = 0
  for k in np.ndindex(*kernel):
    sl = tuple(slice(k[d] * t[d], k[d] * t[d] + (out[d] - 1) * s[d] + 1, s[d]) for d in range(nd))
    patch = xp[(slice(None), *sl)]  # [N, *out, C_in]
    wk = w_pos[(*([slice(None)] * nd), *k)]  # [*out, C_in, C_out]
    y = y + jnp.einsum("n...c,...co->n...o", patch, wk)
  return y


def _random(shape, seed=0, dtype=np.float64):
  return np.random.default_rng(seed).normal(size=shape).astype(dtype)


@st.composite
def tiled_cases(draw, max_nd=3, modes=MODES):
  """Tiny random settings whose kernel fits the padded input (and reflect fits too)."""
  nd = draw(st.integers(1, max_nd))
  kernel = [draw(st.integers(1, 3)) for _ in range(nd)]
  stride = [draw(st.integers(1, 3)) for _ in range(nd)]
  dilation = [draw(st.integers(1, 2)) for _ in range(nd)]
  tile = [draw(st.integers(1, {1: 4, 2: 3, 3: 2}[nd])) for _ in range(nd)]
  r_eff = [(r - 1) * t + 1 for r, t in zip(kernel, dilation, strict=True)]
  max_extra = {1: 6, 2: 3, 3: 1}[nd]
  sizes = [draw(st.integers(max(2, r - 2), r + max_extra)) for r in r_eff]
  padding = draw(
      st.one_of(
          st.sampled_from(["VALID", "SAME", "FULL"]),
          st.integers(0, 3),
          st.tuples(*[st.tuples(st.integers(0, 3), st.integers(0, 3))] * nd),
      )
  )
  pads = ref_pads(padding, sizes, r_eff, stride)
  assume(all(n + lo + hi >= r for n, (lo, hi), r in zip(sizes, pads, r_eff, strict=True)))
  mode = draw(st.sampled_from(modes))
  if mode == "reflect":  # numpy's reflect needs padding smaller than the input.
    assume(all(lo < n and hi < n for n, (lo, hi) in zip(sizes, pads, strict=True)))
  if len(set(tile)) == 1 and draw(st.booleans()):
    tile = tile[0]
  return dict(
      x_shape=(draw(st.integers(1, 2)), *sizes, draw(st.integers(1, 2))),
      w_shape=(*per_dim(tile, nd), *kernel),
      c_out=draw(st.integers(1, 2)),
      config=dict(
          tile=tile if isinstance(tile, int) else tuple(tile),
          stride=tuple(stride),
          padding=padding,
          dilation=tuple(dilation),
          padding_mode=mode,
      ),
      seed=draw(st.integers(0, 2**16)),
  )


def _inputs(case):
  x = _random(case["x_shape"], case["seed"])
  w = _random((*case["w_shape"], case["x_shape"][-1], case["c_out"]), case["seed"] + 1)
  return x, w


# ------------------------------------------------------------------ reference


class ReferenceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @settings(max_examples=12, **_SETTINGS)
  @given(case=tiled_cases())
  def test_matches_loop(self, case):
    x, w = _inputs(case)
    got = self.variant(functools.partial(tiled_conv, **case["config"]))(x, w)
    expected = ref_tiled(x, w, **case["config"])
    assert got.shape == expected.shape
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(
      dict(x_shape=(2, 9, 2), w_shape=(3, 3), config=dict(tile=3, stride=2, padding="SAME")),
      dict(
          x_shape=(1, 7, 6, 2),
          w_shape=(2, 3, 3, 2),
          config=dict(tile=(2, 3), dilation=(2, 1), padding="SAME", padding_mode="circular"),
      ),
      dict(
          x_shape=(2, 5, 4, 3, 1),
          w_shape=(2, 1, 2, 2, 3, 1),
          config=dict(tile=(2, 1, 2), padding=((1, 0), (0, 2), (1, 1)), padding_mode="edge"),
      ),
      dict(
          x_shape=(1, 8, 8, 2),
          w_shape=(4, 4, 3, 3),
          config=dict(tile=4, padding="FULL", padding_mode="reflect", stride=2),
      ),
      # A tile larger than the output: only the first kernels are ever used.
      dict(x_shape=(1, 4, 3), w_shape=(5, 2), config=dict(tile=5, padding=((0, 2),))),
  )
  def test_configurations(self, x_shape, w_shape, config):
    x = _random(x_shape, 1)
    w = _random((*w_shape, x_shape[-1], 2), 2)
    got = self.variant(functools.partial(tiled_conv, **config))(x, w)
    np.testing.assert_allclose(got, ref_tiled(x, w, **config), rtol=1e-10, atol=1e-10)

  def test_benchmark_shape(self):
    # The benchmarked configuration (tile 2×2, 3×3, SAME), at a small batch, float32.
    x = _random((2, 32, 32, 4), 3, np.float32)
    w = _random((2, 2, 3, 3, 4, 3), 4, np.float32)
    got = jax.jit(functools.partial(tiled_conv, tile=2, padding="SAME"))(x, w)
    expected = ref_tiled(x, w, tile=2, padding="SAME")
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)

  def test_float32_phase_with_negative_low_padding(self):
    # Issue 18: the phase convolutions handed lax a negative low / positive high padding,
    # which XLA:CPU computes wrongly (openxla/xla#48713): float32 results around 1e15
    # where the reference is at most ~18. The phases now crop by lax.pad first.
    x = _random((2, 8, 8, 3), 5, np.float32)
    w = _random((4, 4, 3, 3, 3, 3), 6, np.float32)
    for config in (
        dict(tile=4, padding="SAME"),
        dict(tile=4, padding="FULL", stride=2),
        dict(tile=(3, 2), padding=((2, 0), (1, 2))),
    ):
      kernels = w[
          : config["tile"] if isinstance(config["tile"], int) else 3,
          : config["tile"] if isinstance(config["tile"], int) else 2,
      ]
      got = jax.jit(functools.partial(tiled_conv, **config))(x, kernels)
      assert_close(got, ref_tiled(x, kernels, **config), np.float32, precision="highest")

  def test_no_negative_padding_reaches_lax(self):
    x = jnp.zeros((1, 8, 8, 1), jnp.float32)
    w = jnp.zeros((4, 4, 3, 3, 1, 1), jnp.float32)
    jaxpr = jax.make_jaxpr(functools.partial(tiled_conv, tile=4, padding="SAME"))(x, w)
    pads = [
        p
        for eqn in _equations(jaxpr.jaxpr)
        if eqn.primitive.name == "conv_general_dilated"
        for p in eqn.params["padding"]
    ]
    assert pads and all(lo >= 0 and hi >= 0 for lo, hi in pads), pads


def _equations(jaxpr):
  """Every equation of a jaxpr, sub-jaxprs (platform_dependent's branches, custom JVPs) included."""
  for eqn in jaxpr.eqns:
    yield eqn
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      yield from _equations(sub)


# ------------------------------------------------------------------ properties


class PropertyTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(
      dict(x_shape=(2, 9, 2), kernel=(3,), config=dict(stride=2, padding="SAME")),
      dict(
          x_shape=(1, 6, 7, 3),
          kernel=(3, 2),
          config=dict(dilation=(1, 2), padding=1, padding_mode="circular"),
      ),
      dict(
          x_shape=(1, 4, 5, 4, 2),
          kernel=(2, 2, 3),
          config=dict(stride=(1, 2, 1), padding="FULL", padding_mode="edge"),
      ),
  )
  def test_tile_one_is_cross_correlate(self, x_shape, kernel, config):
    x = _random(x_shape, 5)
    shared = _random((*kernel, x_shape[-1], 2), 6)
    w = shared.reshape((1,) * len(kernel) + shared.shape)
    got = self.variant(functools.partial(tiled_conv, tile=1, **config))(x, w)
    want = jax.jit(functools.partial(cross_correlate, **config))(x, shared)  # (the reference)
    np.testing.assert_allclose(got, want, atol=1e-10)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(
      dict(x_shape=(2, 9, 2), kernel=(3,), config=dict(stride=2, padding="SAME")),
      dict(
          x_shape=(1, 6, 7, 3),
          kernel=(3, 2),
          config=dict(dilation=(1, 2), padding=1, padding_mode="reflect"),
      ),
      dict(
          x_shape=(1, 3, 4, 4, 2),
          kernel=(2, 2, 3),
          config=dict(stride=(1, 2, 2), padding="VALID", padding_mode="edge"),
      ),
  )
  def test_tile_as_large_as_the_output_is_locally_connected(self, x_shape, kernel, config):
    x = _random(x_shape, 7)
    out = jax.eval_shape(
        functools.partial(cross_correlate, **config), x, np.zeros((*kernel, x_shape[-1], 1))
    ).shape[1:-1]
    w = _random((*out, *kernel, x_shape[-1], 2), 8)
    got = self.variant(functools.partial(tiled_conv, tile=out, **config))(x, w)
    want = jax.jit(functools.partial(locally_connected, **config))(x, w)  # (the reference)
    np.testing.assert_allclose(got, want, atol=1e-10)

  def test_each_tile_position_uses_its_own_kernel(self):
    # Only kernel (1, 0) is non-zero: outputs with n mod 2 == (1, 0) alone respond.
    x = _random((1, 6, 6, 1), 9)
    w = np.zeros((2, 2, 1, 1, 1, 1))
    w[1, 0] = 1.0
    y = np.asarray(tiled_conv(x, w, tile=2))[0, ..., 0]
    np.testing.assert_array_equal(y[1::2, 0::2], x[0, 1::2, 0::2, 0])
    mask = np.ones((6, 6), bool)
    mask[1::2, 0::2] = False
    np.testing.assert_array_equal(y[mask], 0)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(jnp.float32, jnp.bfloat16, jnp.float64)
  def test_dtype_is_kept(self, dtype):
    x = jnp.asarray(_random((2, 6, 5, 3), 10), dtype)
    w = jnp.asarray(_random((2, 3, 3, 3, 3, 2), 11), dtype)
    f = functools.partial(tiled_conv, tile=(2, 3), padding="SAME")
    y = self.variant(f)(x, w)
    assert y.dtype == dtype
    tol = 1e-1 if dtype == jnp.bfloat16 else 1e-5
    np.testing.assert_allclose(
        np.asarray(y, np.float64),
        ref_tiled(
            np.asarray(x, np.float64), np.asarray(w, np.float64), tile=(2, 3), padding="SAME"
        ),
        rtol=tol,
        atol=tol,
    )

  def test_gradient_dtype_is_kept(self):
    f = functools.partial(tiled_conv, tile=(2, 3), padding="SAME")
    grad = jax.jit(jax.grad(lambda x, w: f(x, w).astype(jnp.float32).sum(), (0, 1)))
    for dtype in (jnp.bfloat16, jnp.float32):
      x = jnp.asarray(_random((2, 6, 5, 3), 10), dtype)
      w = jnp.asarray(_random((2, 3, 3, 3, 3, 2), 11), dtype)
      gx, gw = grad(x, w)
      assert gx.dtype == dtype and gw.dtype == dtype
      # d(sum y)/dx[i] = Σ over the kernels that read x[i]: compare with the formula.
      ref_gx = jax.jit(
          jax.grad(lambda x: jnp_tiled(x, w.astype(jnp.float64), tile=(2, 3), padding="SAME").sum())
      )(x.astype(jnp.float64))
      np.testing.assert_allclose(np.asarray(gx, np.float64), ref_gx, rtol=0.1, atol=0.1)

  def test_vmap(self):
    x = _random((3, 2, 5, 4, 2), 12)  # a leading vmapped axis over [N, H, W, C]
    w = _random((2, 2, 2, 2, 2, 3), 13)
    f = functools.partial(tiled_conv, tile=2, padding="SAME", stride=(2, 1))
    # Jitted: one compilation each, instead of op-by-op dispatch (the same batching rules).
    got = jax.jit(jax.vmap(f, in_axes=(0, None)))(x, w)
    np.testing.assert_allclose(got, np.stack([jax.jit(f)(xi, w) for xi in x]), atol=1e-12)
    # Per-example weight gradients: vmap of grad through the custom JVP.
    grad_w = jax.grad(lambda x, w: f(x[None], w).sum(), 1)
    got = jax.jit(jax.vmap(grad_w, (0, None)))(x[0], w)
    expected = [jax.jit(grad_w)(xi, w) for xi in x[0]]
    np.testing.assert_allclose(got, np.stack(expected), atol=1e-12)


# ----------------------------------------------------------------- derivatives


class GradientTest(chex.TestCase):

  @settings(max_examples=6, **_SETTINGS)
  @given(case=tiled_cases(max_nd=2))
  def test_vjp_and_jvp_match_autodiff_of_the_formula(self, case):
    # The op's custom JVP (strided-convolution adjoint) against jax's rules applied to
    # the plain formula, in reverse and forward mode.
    x, w = _inputs(case)
    f = functools.partial(tiled_conv, **case["config"])
    g = functools.partial(jnp_tiled, **case["config"])
    ct = _random(jax.eval_shape(f, x, w).shape, case["seed"] + 2)
    tx, tw = _random(x.shape, case["seed"] + 3), _random(w.shape, case["seed"] + 4)

    @jax.jit
    def derivatives(x, w):
      vjp_f, vjp_g = jax.vjp(f, x, w)[1](ct), jax.vjp(g, x, w)[1](ct)
      jvp_f, jvp_g = jax.jvp(f, (x, w), (tx, tw))[1], jax.jvp(g, (x, w), (tx, tw))[1]
      return vjp_f, vjp_g, jvp_f, jvp_g

    vjp_f, vjp_g, jvp_f, jvp_g = derivatives(x, w)
    for a, b in zip(vjp_f, vjp_g, strict=True):
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(jvp_f, jvp_g, rtol=1e-10, atol=1e-10)

  def test_check_grads(self):
    # Second order, forward and reverse, in 1-D with stride, dilation and padding.
    x = jnp.asarray(_random((1, 7, 2), 14))
    w = jnp.asarray(_random((3, 2, 2, 2), 15))
    f = jax.jit(
        functools.partial(
            tiled_conv, tile=3, stride=2, dilation=2, padding=((3, 1),), padding_mode="circular"
        )
    )
    check_grads(f, (x, w), order=2, modes=("fwd", "rev"))
    # (2-D and 3-D derivatives are compared with autodiff of the formula above.)

  def test_only_one_argument_differentiated(self):
    x, w = _random((2, 5, 5, 2), 16), _random((2, 2, 3, 3, 2, 2), 17)
    f = functools.partial(tiled_conv, tile=2, padding="SAME")
    g = functools.partial(jnp_tiled, tile=2, padding="SAME")
    for argnum in (0, 1):
      np.testing.assert_allclose(
          jax.jit(jax.grad(lambda *a: (f(*a) ** 2).sum(), argnum))(x, w),
          jax.jit(jax.grad(lambda *a: (g(*a) ** 2).sum(), argnum))(x, w),
          rtol=1e-10,
      )


# ---------------------------------------------------------------------- errors


class ErrorTest(parameterized.TestCase):

  def _call(self, **kwargs):
    config = dict(tile=2)
    config.update(kwargs)
    x = config.pop("x", jnp.zeros((1, 6, 6, 2)))
    w = config.pop("w", jnp.zeros((2, 2, 3, 3, 2, 1)))
    return tiled_conv(x, w, **config)

  @parameterized.parameters(dict(tile=0), dict(tile=-1), dict(tile=(2, 0)))
  def test_non_positive_tile(self, tile):
    with pytest.raises(ValueError, match=r"^tiled_conv: tile got .*positive"):
      self._call(tile=tile)

  def test_tile_length_and_type(self):
    with pytest.raises(ValueError, match=r"tile got \(2, 2, 2\) \(3 values\)"):
      self._call(tile=(2, 2, 2))
    with pytest.raises(TypeError, match="tile got 2.0"):
      self._call(tile=2.0)

  def test_tile_must_match_weight_grid(self):
    with pytest.raises(
        ValueError, match=r"kernel grid w\.shape\[:2\] is \(2, 2\) but tile " r"is \(3, 2\)"
    ):
      self._call(tile=(3, 2))

  def test_weight_rank(self):
    for shape in ((3, 3, 2, 2, 1), (2, 2, 3, 3, 3, 2, 1), (2,)):
      with pytest.raises(ValueError, match=r"w has shape .*expected rank 4, 6 or 8"):
        self._call(w=jnp.zeros(shape))

  def test_input_rank(self):
    with pytest.raises(ValueError, match=r"x has shape \(6, 6, 2\).*unbatched"):
      self._call(x=jnp.zeros((6, 6, 2)))
    with pytest.raises(ValueError, match=r"x has shape \(1, 6, 6, 6, 2\) \(rank 5\)"):
      self._call(x=jnp.zeros((1, 6, 6, 6, 2)))

  def test_channel_mismatch(self):
    with pytest.raises(ValueError, match=r"channel mismatch: x has 3 channels"):
      self._call(x=jnp.zeros((1, 6, 6, 3)))

  @parameterized.parameters(
      dict(kwargs=dict(padding_mode="mirror"), match="padding_mode"),
      dict(kwargs=dict(stride=0), match="stride"),
      dict(kwargs=dict(dilation=(1, 0)), match="dilation"),
      dict(kwargs=dict(padding="HALF"), match="padding"),
      dict(kwargs=dict(padding=((1, 1),)), match="padding"),
      dict(kwargs=dict(dilation=4), match="effective kernel size 9"),
  )
  def test_bad_configuration(self, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
      self._call(**kwargs)

  def test_tile_is_keyword_only_and_required(self):
    with pytest.raises(TypeError):
      tiled_conv(jnp.zeros((1, 6, 6, 2)), jnp.zeros((2, 2, 3, 3, 2, 1)))  # no tile
