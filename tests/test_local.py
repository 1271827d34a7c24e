"""Tests for cnnjax.local.locally_connected (unshared convolution).

The reference is written here: a NumPy loop of
y[b, n, o] = Σ_k Σ_c w[n, k, c, o] · x̃[b, n·s + k·t, c] over the input padded by
``numpy.pad`` (padding amounts computed here from their definitions).
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads
from references import MODES, ref_geometry, ref_local, ref_pads

from cnnjax.conv import cross_correlate
from cnnjax.local import locally_connected

_SETTINGS = dict(
    deadline=None, suppress_health_check=[HealthCheck.differing_executors, HealthCheck.too_slow]
)


# ------------------------------------------------------------------ references


def _random(shape, seed=0, dtype=np.float64):
  return np.random.default_rng(seed).normal(size=shape).astype(dtype)


@st.composite
def local_cases(draw):
  """Tiny random settings whose kernel fits the padded input (and reflect fits too)."""
  nd = draw(st.integers(1, 3))
  kernel = [draw(st.integers(1, 3)) for _ in range(nd)]
  stride = [draw(st.integers(1, 3)) for _ in range(nd)]
  dilation = [draw(st.integers(1, 2)) for _ in range(nd)]
  r_eff = [(r - 1) * t + 1 for r, t in zip(kernel, dilation, strict=True)]
  max_extra = {1: 5, 2: 3, 3: 1}[nd]
  sizes = [draw(st.integers(max(2, r - 2), r + max_extra)) for r in r_eff]
  padding = draw(
      st.one_of(
          st.sampled_from(["VALID", "SAME", "FULL"]),
          st.integers(0, 2),
          st.tuples(*[st.tuples(st.integers(0, 2), st.integers(0, 2))] * nd),
      )
  )
  pads = ref_pads(padding, sizes, r_eff, stride)
  assume(all(n + lo + hi >= r for n, (lo, hi), r in zip(sizes, pads, r_eff, strict=True)))
  mode = draw(st.sampled_from(MODES))
  if mode == "reflect":  # numpy's reflect needs padding smaller than the input.
    assume(all(lo < n and hi < n for n, (lo, hi) in zip(sizes, pads, strict=True)))
  return dict(
      x_shape=(draw(st.integers(1, 2)), *sizes, draw(st.integers(1, 2))),
      kernel=kernel,
      c_out=draw(st.integers(1, 2)),
      config=dict(
          stride=tuple(stride), padding=padding, dilation=tuple(dilation), padding_mode=mode
      ),
      seed=draw(st.integers(0, 2**16)),
  )


def _weights_for(x_shape, kernel, c_out, config, seed):
  _, _, _, out = ref_geometry(
      x_shape[1:-1],
      kernel,
      stride=config["stride"],
      padding=config["padding"],
      dilation=config["dilation"],
  )
  return _random((*out, *kernel, x_shape[-1], c_out), seed)


# ------------------------------------------------------------------ reference


class ReferenceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @settings(max_examples=12, **_SETTINGS)
  @given(case=local_cases())
  def test_matches_loop(self, case):
    x = _random(case["x_shape"], case["seed"])
    w = _weights_for(
        case["x_shape"], case["kernel"], case["c_out"], case["config"], case["seed"] + 1
    )
    got = self.variant(functools.partial(locally_connected, **case["config"]))(x, w)
    expected = ref_local(x, w, **case["config"])
    assert got.shape == expected.shape
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(
      dict(x_shape=(2, 7, 3), kernel=(3,), config=dict(stride=2, padding="SAME")),
      dict(
          x_shape=(1, 6, 5, 2),
          kernel=(3, 2),
          config=dict(stride=(1, 2), dilation=(2, 1), padding_mode="circular", padding="SAME"),
      ),
      dict(
          x_shape=(2, 4, 5, 3, 1),
          kernel=(2, 3, 1),
          config=dict(padding=((1, 0), (0, 2), (1, 1)), padding_mode="edge"),
      ),
      dict(
          x_shape=(1, 6, 6, 2),
          kernel=(3, 3),
          config=dict(padding="FULL", padding_mode="reflect", stride=3),
      ),
  )
  def test_configurations(self, x_shape, kernel, config):
    full = dict(dict(stride=1, padding="VALID", dilation=1, padding_mode="zeros"), **config)
    x = _random(x_shape, 1)
    w = _weights_for(x_shape, kernel, 2, full, 2)
    got = self.variant(functools.partial(locally_connected, **config))(x, w)
    np.testing.assert_allclose(got, ref_local(x, w, **config), rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------ properties


class PropertyTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(
      dict(x_shape=(2, 9, 2), kernel=(3,), config=dict(stride=2, padding="SAME")),
      dict(
          x_shape=(2, 6, 7, 3),
          kernel=(3, 2),
          config=dict(dilation=(1, 2), padding=1, padding_mode="circular"),
      ),
      dict(
          x_shape=(1, 4, 5, 4, 2),
          kernel=(2, 2, 3),
          config=dict(stride=(1, 2, 1), padding="FULL", padding_mode="edge"),
      ),
  )
  def test_equal_kernels_is_cross_correlate(self, x_shape, kernel, config):
    # jax's own lax_test property: every position's kernel equal → shared convolution.
    x = _random(x_shape, 3)
    shared = _random((*kernel, x_shape[-1], 2), 4)
    out = jax.eval_shape(functools.partial(cross_correlate, **config), x, shared).shape
    w = np.broadcast_to(shared, (*out[1:-1], *shared.shape))
    got = self.variant(functools.partial(locally_connected, **config))(x, w)
    want = jax.jit(functools.partial(cross_correlate, **config))(x, shared)  # (the reference)
    np.testing.assert_allclose(got, want, atol=1e-10)

  def test_lecture_weight_count(self):
    # 30×30×3 input, 7×7 kernels, stride 1, depth 5: 24×24 positions × 7·7·3·5 weights.
    x = jax.ShapeDtypeStruct((1, 30, 30, 3), jnp.float32)
    w = jax.ShapeDtypeStruct((24, 24, 7, 7, 3, 5), jnp.float32)
    assert np.prod(w.shape) == 423_360
    assert jax.eval_shape(locally_connected, x, w).shape == (1, 24, 24, 5)
    # The wrong grid is refused: a 7×7 kernel leaves 24×24 positions, not 30×30.
    with pytest.raises(ValueError, match="weight grid"):
      jax.eval_shape(locally_connected, x, jax.ShapeDtypeStruct((30, 30, 7, 7, 3, 5), jnp.float32))

  def test_each_position_uses_its_own_kernel(self):
    # An impulse kernel at one position only: the output is zero elsewhere.
    x = _random((1, 5, 5, 1), 5)
    w = np.zeros((3, 3, 3, 3, 1, 1))
    w[1, 2, 0, 1, 0, 0] = 1.0
    y = np.array(locally_connected(x, w))
    assert y[0, 1, 2, 0] == x[0, 1, 3, 0]
    y[0, 1, 2, 0] = 0
    np.testing.assert_array_equal(y, 0)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(jnp.float32, jnp.bfloat16, jnp.float64)
  def test_dtype_is_kept(self, dtype):
    x = jnp.asarray(_random((2, 6, 5, 3), 6), dtype)
    w = jnp.asarray(_random((4, 3, 3, 3, 3, 2), 7), dtype)
    y = self.variant(locally_connected)(x, w)
    assert y.dtype == dtype
    tol = 5e-2 if dtype == jnp.bfloat16 else 1e-5
    np.testing.assert_allclose(
        np.asarray(y, np.float64),
        ref_local(np.asarray(x, np.float64), np.asarray(w, np.float64)),
        rtol=tol,
        atol=tol,
    )

  def test_vmap(self):
    x = _random((3, 2, 5, 4, 2), 8)  # a leading vmapped axis over [N, H, W, C]
    w = _random((3, 4, 2, 2, 2, 3), 9)
    f = functools.partial(locally_connected, padding="SAME", stride=(2, 1))
    # Jitted: one compilation each, instead of op-by-op dispatch (the same batching rules).
    got = jax.jit(jax.vmap(f, in_axes=(0, None)))(x, w)
    np.testing.assert_allclose(got, np.stack([jax.jit(f)(xi, w) for xi in x]), atol=1e-12)
    ws = np.stack([w, 2 * w])
    got = jax.jit(jax.vmap(f, in_axes=(None, 0)))(x[0], ws)
    np.testing.assert_allclose(got[1], 2 * np.asarray(got[0]), atol=1e-12)

  @parameterized.parameters(
      dict(config=dict(stride=2, padding="SAME", padding_mode="reflect")),
      dict(config=dict(dilation=2, padding=((1, 0), (2, 1)), padding_mode="circular")),
  )
  def test_gradients(self, config):
    x = jnp.asarray(_random((1, 5, 4, 2), 10))
    out = jax.eval_shape(
        functools.partial(cross_correlate, **config), x, jnp.zeros((2, 2, 2, 2))
    ).shape
    w = jnp.asarray(_random((*out[1:-1], 2, 2, 2, 2), 11))
    f = jax.jit(functools.partial(locally_connected, **config))
    check_grads(f, (x, w), order=2, modes=("fwd", "rev"))


# ---------------------------------------------------------------------- errors


class ErrorTest(parameterized.TestCase):

  def test_weight_rank(self):
    x = jnp.zeros((1, 5, 5, 2))
    for shape in ((3, 3, 2, 2, 1), (3, 3, 3, 3, 3, 2, 2), (2, 2), (1,) * 10):
      with pytest.raises(ValueError, match=r"w has shape .*expected rank 4, 6 or 8"):
        locally_connected(x, jnp.zeros(shape))

  def test_input_rank_must_match_weights(self):
    # A rank-4 w has one spatial dim: a 2-D image is refused, naming x.
    with pytest.raises(ValueError, match=r"x has shape \(1, 5, 5, 2\) \(rank 4\).*expected rank 3"):
      locally_connected(jnp.zeros((1, 5, 5, 2)), jnp.zeros((3, 3, 2, 2)))

  def test_unbatched_input(self):
    with pytest.raises(ValueError, match=r"x has shape \(5, 5, 2\).*unbatched"):
      locally_connected(jnp.zeros((5, 5, 2)), jnp.zeros((3, 3, 3, 3, 2, 1)))

  def test_channel_mismatch(self):
    with pytest.raises(ValueError, match=r"channel mismatch: x has 3 channels.*w\.shape\[-2\]"):
      locally_connected(jnp.zeros((1, 5, 5, 3)), jnp.zeros((3, 3, 3, 3, 2, 1)))

  def test_weight_grid_mismatch(self):
    with pytest.raises(
        ValueError,
        match=r"weight grid .* is \(4, 4\) but the output's " r"spatial shape is \(3, 3\)",
    ):
      locally_connected(jnp.zeros((1, 5, 5, 2)), jnp.zeros((4, 4, 3, 3, 2, 1)))
    with pytest.raises(
        ValueError, match=r"is \(3, 3\) but the output's spatial shape is " r"\(5, 5\)"
    ):
      locally_connected(jnp.zeros((1, 5, 5, 2)), jnp.zeros((3, 3, 3, 3, 2, 1)), padding="SAME")

  @parameterized.parameters(
      dict(kwargs=dict(padding_mode="mirror"), match="padding_mode"),
      dict(kwargs=dict(stride=0), match="stride"),
      dict(kwargs=dict(stride=(1, 2, 1)), match="stride"),
      dict(kwargs=dict(dilation=-1), match="dilation"),
      dict(kwargs=dict(padding="HALF"), match="padding"),
      dict(kwargs=dict(padding=-1), match="padding"),
      dict(kwargs=dict(dilation=3), match="effective kernel size 7"),
  )
  def test_bad_configuration(self, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
      locally_connected(jnp.zeros((1, 5, 5, 2)), jnp.zeros((3, 3, 3, 3, 2, 1)), **kwargs)

  def test_error_names_the_op(self):
    with pytest.raises(ValueError, match="^locally_connected: stride"):
      locally_connected(jnp.zeros((1, 5, 5, 2)), jnp.zeros((3, 3, 3, 3, 2, 1)), stride=0)
