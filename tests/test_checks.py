"""Tests for cnnjax._checks: the shared argument checks and dtype rules, through every op.

- NumPy integer scalars are accepted wherever a Python int is (one ``is_int``);
- integer inputs give exact results in every conv-family op and every pool (the
  integer lowering is a patch matmul, which every platform supports);
- ``preferred_element_type`` sets the result dtype of every conv-family op: int8 inputs
  accumulate without wrapping, bfloat16 inputs can return float32;
- complex inputs work in every conv-family op.
References are the NumPy loops of ``references.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from references import (
    assert_close,
    ref_aps,
    ref_binomial_blur,
    ref_correlate,
    ref_correlate_adjoint,
    ref_local,
    ref_pool,
    ref_tiled,
)

import cnnjax
from cnnjax import _checks
from cnnjax import equivariance as eq


def _ints(shape, seed, dtype=np.int32, lo=-4, hi=5):
  return np.random.default_rng(seed).integers(lo, hi, shape).astype(dtype)


# ------------------------------------------------------------ integer scalars


def test_is_int():
  for v in (2, np.int64(2), np.int8(-1), np.uint16(3)):
    assert _checks.is_int(v)
  for v in (True, np.bool_(True), 2.0, np.float32(2), "2", None):
    assert not _checks.is_int(v)


def test_numpy_integer_scalars_are_accepted_everywhere():
  x, w = np.ones((1, 8, 8, 2)), np.ones((3, 3, 2, 2))
  i = np.int64
  assert cnnjax.cross_correlate(
      x, w, stride=i(2), dilation=(i(1), 1), padding=i(1), groups=i(1)
  ).shape == (1, 4, 4, 2)
  assert cnnjax.convolve(x, w, padding=((i(1), i(0)), (0, 1))).shape == (1, 7, 7, 2)
  assert cnnjax.conv_transpose(np.ones((1, 3, 3, 2)), w, stride=i(2)).shape == (1, 7, 7, 2)
  assert cnnjax.tiled_conv(x, np.ones((2, 2, 3, 3, 2, 2)), tile=i(2)).shape == (1, 6, 6, 2)
  assert cnnjax.max_pool(x, i(2), stride=i(2)).shape == (1, 4, 4, 2)
  assert cnnjax.avg_pool(x, (i(2), 2)).shape == (1, 4, 4, 2)
  assert cnnjax.output_size(i(32), i(3), stride=i(2)) == 15
  assert cnnjax.effective_kernel_size(i(3), dilation=i(2)) == 5
  assert cnnjax.local_response_norm(x, size=i(3)).shape == x.shape
  assert eq.output_shift(i(4), [(3, 2)]) == eq.output_shift(4, [(3, 2)])
  assert cnnjax.nn.Conv(2, 3, i(3), stride=i(2), rngs=nnx.Rngs(0))(x).shape == (1, 3, 3, 3)
  with pytest.raises(TypeError, match="stride got True"):
    cnnjax.cross_correlate(x, w, stride=True)


# --------------------------------------------------------------- integer inputs


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8])
def test_integer_conv_family_is_exact(dtype):
  lo = 0 if np.issubdtype(dtype, np.unsignedinteger) else -3
  x = _ints((2, 7, 6, 4), 0, dtype, lo, 4)
  w = _ints((3, 2, 2, 4), 1, dtype, lo, 4)
  cfg = dict(stride=(2, 1), padding="SAME", dilation=(1, 2), groups=2)
  wl = _ints((5, 5, 3, 2, 4, 3), 2, dtype, lo, 4)
  wt = _ints((2, 3, 3, 2, 4, 3), 3, dtype, lo, 4)

  @jax.jit  # one compilation for every op (eagerly, each op compiles op by op)
  def run(x, w, wl, wt):
    y = cnnjax.cross_correlate(x, w, **cfg)
    return [
        y,
        cnnjax.convolve(x, w, padding_mode="circular", padding=1, groups=2),
        cnnjax.conv_transpose(y, w, input_shape=(7, 6), **cfg),
        cnnjax.locally_connected(x, wl),
        cnnjax.tiled_conv(x, wt, tile=(2, 3), padding="SAME"),
    ]

  gots = run(x, w, wl, wt)
  y = np.asarray(gots[0])
  wants = [
      ref_correlate(x, w, **cfg),
      ref_correlate(x, w, padding_mode="circular", padding=1, groups=2, flip=True),
      ref_correlate_adjoint(y, w, x.shape, **cfg),
      ref_local(x, wl),
      ref_tiled(x, wt, tile=(2, 3), padding="SAME"),
  ]
  for got, want in zip(gots, wants, strict=True):
    assert got.dtype == dtype
    # The exact integer result, wrapped to the dtype as two's complement arithmetic does.
    np.testing.assert_array_equal(got, np.round(want).astype(np.int64).astype(dtype))


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.uint8])
def test_integer_pools(dtype):
  x = _ints((2, 6, 6, 3), 4, dtype, 0, 50)
  xf = x.astype(np.float64)

  @jax.jit  # one compilation for every pool (eagerly, each op compiles op by op)
  def run(x):
    means = [
        cnnjax.avg_pool(x, 3, stride=2, padding="SAME"),
        cnnjax.lp_pool(x, 2),
        cnnjax.global_avg_pool(x),
        cnnjax.blur_pool(x),
    ]
    return (
        cnnjax.max_pool(x, 2, padding="SAME"),
        means,
        cnnjax.global_max_pool(x),
        cnnjax.maxout(x, 3),
        cnnjax.polyphase_downsample(x, stride=2),
    )

  max_pooled, means, global_max, maxed, aps = run(x)
  np.testing.assert_array_equal(max_pooled, ref_pool(xf, 2, None, "SAME", "max").astype(dtype))
  wants = (
      ref_pool(xf, 3, 2, "SAME", "avg"),
      ref_pool(xf, 2, None, "VALID", "lp"),
      xf.mean(axis=(1, 2)),
      ref_binomial_blur(xf, 2, 3),
  )
  for got, want in zip(means, wants, strict=True):
    assert got.dtype == jnp.float32
    assert_close(got, want, np.float32)
  assert global_max.dtype == dtype
  np.testing.assert_array_equal(global_max, x.max(axis=(1, 2)))
  np.testing.assert_array_equal(maxed, x.max(axis=-1, keepdims=True))
  assert aps.dtype == dtype
  np.testing.assert_array_equal(aps, ref_aps(xf, (2, 2)).astype(dtype))


# ------------------------------------------------------- preferred_element_type


def test_int8_accumulates_without_wrapping():
  x = np.full((1, 3, 3, 1), 127, np.int8)
  w = np.full((3, 3, 1, 1), 127, np.int8)
  assert int(cnnjax.cross_correlate(x, w)[0, 0, 0, 0]) == 9  # 127·127·9 mod 256, as lax
  y = cnnjax.cross_correlate(x, w, preferred_element_type=jnp.int32)
  assert y.dtype == jnp.int32 and int(y[0, 0, 0, 0]) == 127 * 127 * 9


_OPS = {
    "cross_correlate": (cnnjax.cross_correlate, (2, 6, 6, 3), (3, 3, 3, 4), {}),
    "convolve": (cnnjax.convolve, (2, 6, 6, 3), (3, 3, 3, 4), dict(padding="SAME")),
    "conv_transpose": (cnnjax.conv_transpose, (2, 3, 3, 4), (3, 3, 3, 4), dict(stride=2)),
    "locally_connected": (cnnjax.locally_connected, (2, 6, 6, 3), (4, 4, 3, 3, 3, 4), {}),
    "tiled_conv": (cnnjax.tiled_conv, (2, 6, 6, 3), (2, 2, 3, 3, 3, 4), dict(tile=2)),
}


@pytest.mark.parametrize("name", sorted(_OPS))
def test_preferred_element_type(name):
  op, xs, ws, kw = _OPS[name]
  x, w = _ints(xs, 5, np.int8, -128, 128), _ints(ws, 6, np.int8, -128, 128)
  xb = jnp.asarray(np.random.default_rng(7).normal(size=xs), jnp.bfloat16)
  wb = jnp.asarray(np.random.default_rng(8).normal(size=ws), jnp.bfloat16)
  dtypes = (np.float32, np.float64)  # float64: np.dtype("float64") == None in NumPy

  @jax.jit  # one compilation for every call (eagerly, each op compiles op by op)
  def run(x, w, xb, wb):
    return (
        op(x, w, preferred_element_type=jnp.int32, **kw),
        op(x.astype(np.int64), w.astype(np.int64), **kw),
        op(xb.astype(np.float64), wb.astype(np.float64), **kw),
        [op(xb, wb, preferred_element_type=dtype, **kw) for dtype in dtypes],
        # Gradients flow through the wider result.
        jax.grad(lambda w: jnp.sum(op(xb, w, preferred_element_type=jnp.float32, **kw)))(wb),
    )

  wide, exact, want, ys, g = run(x, w, xb, wb)
  exact = np.asarray(exact)
  assert wide.dtype == jnp.int32
  np.testing.assert_array_equal(wide, exact)
  assert np.abs(exact).max() > 127  # the int8 result would have wrapped
  for dtype, y in zip(dtypes, ys, strict=True):
    assert y.dtype == dtype
    assert_close(y, want, np.float32, scale=float(np.abs(want).max()) * 8)
  assert g.dtype == jnp.bfloat16
  with pytest.raises(TypeError, match=f"{name}: preferred_element_type got float32"):
    op(x, w, preferred_element_type=jnp.float32, **kw)


# --------------------------------------------------------------------- complex


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_conv_family(dtype):
  rng = np.random.default_rng(9)
  c = lambda shape: (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(dtype)
  x, w = c((2, 6, 5, 2)), c((3, 2, 2, 3))
  cfg = dict(stride=(2, 1), padding="SAME")
  y = c((2, 3, 5, 3))
  wl = c((4, 4, 3, 2, 2, 3))
  wt = c((2, 2, 3, 2, 2, 3))

  @jax.jit  # one compilation for every op (eagerly, each op compiles op by op)
  def run(x, w, y, wl, wt):
    return [
        cnnjax.cross_correlate(x, w, **cfg),
        cnnjax.convolve(x, w, padding="FULL"),
        cnnjax.conv_transpose(y, w, input_shape=(6, 5), **cfg),
        cnnjax.locally_connected(x, wl),
        cnnjax.tiled_conv(x, wt, tile=2, padding="SAME"),
    ]

  wants = [
      ref_correlate(x, w, **cfg),
      ref_correlate(x, w, padding="FULL", flip=True),
      ref_correlate_adjoint(y, w, x.shape, **cfg),
      ref_local(x, wl),
      ref_tiled(x, wt, tile=2, padding="SAME"),
  ]
  for got, want in zip(run(x, w, y, wl, wt), wants, strict=True):
    assert got.dtype == dtype
    assert_close(got, want, dtype)
  # A real input with a complex kernel computes in complex.
  assert jax.eval_shape(cnnjax.cross_correlate, x.real, w).dtype == dtype


def test_dtype_rules():
  f32, i8 = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int8)
  assert _checks.compute_dtype(f32, i8, op="t") == jnp.float32
  assert _checks.compute_dtype(i8, f32, op="t") == jnp.float32
  assert _checks.compute_dtype(i8, jnp.zeros((), jnp.int16), op="t") == jnp.int16
  assert _checks.accumulation_dtype(jnp.bfloat16) == jnp.float32
  assert _checks.accumulation_dtype(jnp.int8) == jnp.int32
  assert _checks.accumulation_dtype(jnp.int8, jnp.int64) == jnp.int64
  assert _checks.mean_dtype(jnp.int16) == jnp.float32
  assert _checks.mean_dtype(jnp.bfloat16) == jnp.bfloat16
  with pytest.raises(TypeError, match="op: x has dtype bool"):
    _checks.compute_dtype(jnp.zeros((), bool), f32, op="op")
  with pytest.raises(TypeError, match="preferred_element_type got 'nope'"):
    _checks.result_dtype(jnp.float32, "nope", op="op")


# ------------------------------------------------- configuration values (issue 28)


def test_check_bool_takes_only_bools():
  assert _checks.check_bool(True, name="flag", op="op") is True
  assert _checks.check_bool(np.bool_(False), name="flag", op="op") is False
  for value in ("no", "False", 0, 1, None, 1.0, np.int8(1), [True]):
    with pytest.raises(ValueError, match=r"op: flag got .*; expected a bool") as info:
      _checks.check_bool(value, name="flag", op="op")
    assert isinstance(info.value, TypeError)  # what cnnjax raised for these before


def test_check_positive_int_bounds():
  assert _checks.check_positive_int(np.uint64(2**63 - 1), name="n", op="op") == 2**63 - 1
  for value in (2**63, 2**70, np.uint64(2**64 - 1)):
    with pytest.raises(
        ValueError, match=r"op: n got .*; expected a positive int of at most " r"2\*\*63 - 1"
    ):
      _checks.check_positive_int(value, name="n", op="op")
  for value in (0, -1, True, "3", 3.0, None):
    with pytest.raises(ValueError, match=r"op: n got .*; expected a positive int\."):
      _checks.check_positive_int(value, name="n", op="op")


def test_check_kernel_refuses_a_zero_size_kernel_dim():
  # Was "effective_kernel_size: kernel_size got 0", naming neither the op nor w.
  with pytest.raises(ValueError, match=r"op: w has a zero-size kernel dim: shape \(3, 0, 2, 4\)"):
    _checks.check_kernel(jnp.zeros((3, 0, 2, 4)), op="op")
  assert _checks.check_kernel(jnp.zeros((3, 1, 0, 4)), op="op") == 2  # channels may be 0
  x = np.ones((1, 5, 5, 2))
  for op in ("cross_correlate", "convolve", "conv_transpose"):
    with pytest.raises(ValueError, match=f"{op}: w has a zero-size kernel dim"):
      getattr(cnnjax, op)(x, np.ones((0, 3, 2, 2)))


def test_check_extent_refuses_what_xla_aborts_on():
  _checks.check_extent((2**30, 2**30, 4), jnp.int8, name="shape", value=1, op="op")
  with pytest.raises(
      ValueError,
      match=r"op: shape got 7, a result of 4611686018427387904 "
      r"float32 elements \(18446744073709551616 bytes\)",
  ):
    _checks.check_extent((2**31, 2**31), jnp.float32, name="shape", value=7, op="op")


@pytest.mark.parametrize(
    "call",
    [
        lambda x, w, p: cnnjax.cross_correlate(x, w, padding=p),
        lambda x, w, p: cnnjax.convolve(x, w, padding=p),
        lambda x, w, p: cnnjax.tiled_conv(x, w[None, None], tile=(1, 1), padding=p),
        lambda x, w, p: cnnjax.unfold(x, (3, 3), padding=p),
    ],
    ids=["cross_correlate", "convolve", "tiled_conv", "unfold"],
)
def test_a_padding_whose_result_overflows_int64_bytes_is_refused_naming_it(call):
  # 6 + 2 * 2**30 - 2 outputs per side: 2**62 float32 elements, 2**64 bytes. XLA aborts
  # the process on such a shape ("overflow in static extent product"), so it must not
  # get there.
  x, w = np.ones((1, 6, 6, 1), np.float32), np.ones((3, 3, 1, 1), np.float32)
  with pytest.raises(ValueError, match=r"padding got 1073741824, a result of \d+ float32"):
    call(x, w, 2**30)
