"""Tests for cnnjax.padding: geometry canonicalisation, strict mode and padding by mode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax
from references import ref_torch_out_size

from cnnjax.padding import (
    PADDING_MODES,
    Geometry,
    check_padding_mode,
    check_spatial_rank,
    conv_geometry,
    effective_kernel_size,
    normalize_ints,
    pad_spatial,
    resolve_padding,
)

_NUMPY_MODE = {"zeros": "constant", "circular": "wrap", "reflect": "reflect", "edge": "edge"}


# ---------------------------------------------------------------- normalize_ints


def test_normalize_ints():
  assert normalize_ints(2, 3, name="stride", op="f") == (2, 2, 2)
  assert normalize_ints((1, 2), 2, name="stride", op="f") == (1, 2)
  assert normalize_ints([3], 1, name="stride", op="f") == (3,)
  assert normalize_ints(0, 2, name="pad", op="f", minimum=0) == (0, 0)


@pytest.mark.parametrize(
    "value, minimum, error, match",
    [
        (0, 1, ValueError, r"f: stride got 0; expected a positive int"),
        (-2, 1, ValueError, r"f: stride got -2"),
        ((1, 0), 1, ValueError, r"f: stride got \(1, 0\)"),
        ((1, 2, 3), 1, ValueError, r"f: stride got \(1, 2, 3\) \(3 values\) for 2 spatial"),
        (1.5, 1, ValueError, r"f: stride got 1.5"),
        ("2", 1, ValueError, r"f: stride got '2'"),
        (True, 1, ValueError, r"f: stride got True"),
        ((1, 2.0), 1, ValueError, r"f: stride got \(1, 2.0\)"),
        (-1, 0, ValueError, r"f: stride got -1; expected an int >= 0"),
        (np.bool_(True), 1, ValueError, r"f: stride got (np\.)?True_?"),
        (None, 1, ValueError, r"f: stride got None"),
        (2**63, 1, ValueError, r"f: stride got 9223372036854775808; .* at most 2\*\*63 - 1"),
        ((1, 2**70), 1, ValueError, r"f: stride got \(1, 1180591620717411303424\); .* 2\*\*63"),
        (np.uint64(2**64 - 1), 1, ValueError, r"f: stride got .*18446744073709551615.* 2\*\*63"),
    ],
)
def test_normalize_ints_errors(value, minimum, error, match):
  with pytest.raises(error, match=match):
    normalize_ints(value, 2, name="stride", op="f", minimum=minimum)


@pytest.mark.parametrize("value", [1.5, "2", True, np.bool_(False), (1, 2.0), None, b"2"])
def test_wrong_types_are_value_errors_and_type_errors(value):
  # A ValueError like every refused configuration value (one except clause catches them
  # all), and still the TypeError cnnjax raised before.
  with pytest.raises(ValueError, match="f: stride got") as info:
    normalize_ints(value, 2, name="stride", op="f")
  assert isinstance(info.value, TypeError)
  with pytest.raises(ValueError, match="f: padding got") as info:
    resolve_padding(value, (5, 5), (3, 3), (1, 1), op="f")
  assert isinstance(info.value, TypeError) or isinstance(value, str)  # '2': no such name


def test_numpy_unsigned_and_int64_limits_are_accepted():
  big = 2**63 - 1
  assert normalize_ints(np.uint8(2), 2, name="stride", op="f") == (2, 2)
  assert normalize_ints((np.uint64(3), np.uint16(1)), 2, name="stride", op="f") == (3, 1)
  assert normalize_ints(big, 1, name="stride", op="f") == (big,)
  assert conv_geometry((5,), (3,), stride=big, op="f").out_spatial == (1,)
  assert conv_geometry((5,), (3,), stride=np.uint64(big), op="f").out_spatial == (1,)


# ---------------------------------------------------------- effective_kernel_size


@pytest.mark.parametrize(
    "r, t, expected", [(1, 1, 1), (3, 1, 3), (3, 2, 5), (3, 4, 9), (1, 5, 1), (2, 3, 4)]
)
def test_effective_kernel_size(r, t, expected):
  assert effective_kernel_size(r, dilation=t) == expected
  # The positions a dilated kernel touches: 0, t, ..., (r - 1) t.
  assert len(range(0, (r - 1) * t + 1)) == expected


@pytest.mark.parametrize(
    "r, t, match",
    [
        (0, 1, "kernel_size got 0"),
        (2.0, 1, "kernel_size got 2.0"),
        (3, 0, "dilation got 0"),
        (True, 1, "kernel_size got True"),
        (3, "2", "dilation got '2'"),
        (2**63, 1, r"kernel_size got 9223372036854775808; .* 2\*\*63 - 1"),
        (
            3,
            2**62,
            r"dilation got 4611686018427387904, which makes the effective kernel size "
            r"9223372036854775809 \(kernel 3\) exceed 2\*\*63 - 1",
        ),
    ],
)
def test_effective_kernel_size_errors(r, t, match):
  with pytest.raises(ValueError, match=match):
    effective_kernel_size(r, dilation=t)


# ---------------------------------------------------------------- resolve_padding


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(
        st.tuples(st.integers(1, 12), st.integers(1, 7), st.integers(1, 4)),
        min_size=1,
        max_size=3,
    )
)
def test_same_padding_matches_lax(sizes):
  n, r, s = (tuple(v) for v in zip(*sizes, strict=True))
  pads = resolve_padding("SAME", n, r, s, op="f")
  assert pads == tuple(tuple(p) for p in lax.padtype_to_pads(n, r, s, "SAME"))
  for (lo, hi), size, k, stride in zip(pads, n, r, s, strict=True):
    assert 0 <= hi - lo <= 1  # the extra pixel goes on the high side
    assert (size + lo + hi - k) // stride + 1 == -(-size // stride)  # ceil(n / s)
  assert resolve_padding("same", n, r, s, op="f") == pads


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(
        st.tuples(st.integers(1, 12), st.integers(1, 7), st.integers(1, 4)),
        min_size=1,
        max_size=3,
    )
)
def test_same_lower_padding_matches_lax(sizes):
  # lax's (and Equinox's) SAME_LOWER: SAME's total, the odd pixel before.
  n, r, s = (tuple(v) for v in zip(*sizes, strict=True))
  pads = resolve_padding("SAME_LOWER", n, r, s, op="f")
  assert pads == tuple(tuple(p) for p in lax.padtype_to_pads(n, r, s, "SAME_LOWER"))
  same = resolve_padding("SAME", n, r, s, op="f")
  assert pads == tuple((hi, lo) for lo, hi in same)
  assert resolve_padding("same_lower", n, r, s, op="f") == pads


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 12), k=st.integers(1, 5), t=st.integers(1, 3), s=st.integers(1, 3))
def test_causal_padding_is_flax_s(n, k, t, s):
  # Flax: pad (dilation · (kernel − 1), 0), so output t reads inputs t and before only.
  r = k + (k - 1) * (t - 1)
  assert resolve_padding("CAUSAL", (n,), (r,), (s,), op="f") == ((t * (k - 1), 0),)
  geo = conv_geometry((n,), (k,), stride=s, padding="Causal", dilation=t, op="f")
  assert geo.pads == ((t * (k - 1), 0),)
  assert geo.out_spatial == ((n - 1) // s + 1,)
  for o in range(geo.out_spatial[0]):  # the last tap of output o is input o·s
    assert o * s - geo.pads[0][0] + (k - 1) * t == o * s


def test_resolve_padding_forms():
  n, r, s = (5, 6), (3, 4), (1, 2)
  assert resolve_padding("VALID", n, r, s, op="f") == ((0, 0), (0, 0))
  assert resolve_padding("valid", n, r, s, op="f") == ((0, 0), (0, 0))
  assert resolve_padding("FULL", n, r, s, op="f") == ((2, 2), (3, 3))
  assert resolve_padding("Full", n, r, s, op="f") == ((2, 2), (3, 3))
  assert resolve_padding("SAME", n, r, s, op="f") == ((1, 1), (1, 1))
  assert resolve_padding(2, n, r, s, op="f") == ((2, 2), (2, 2))
  assert resolve_padding(0, n, r, s, op="f") == ((0, 0), (0, 0))
  assert resolve_padding((1, 2), n, r, s, op="f") == ((1, 1), (2, 2))
  assert resolve_padding([1, 2], n, r, s, op="f") == ((1, 1), (2, 2))
  assert resolve_padding(((0, 1), (2, 3)), n, r, s, op="f") == ((0, 1), (2, 3))
  assert resolve_padding([[0, 1], [2, 3]], n, r, s, op="f") == ((0, 1), (2, 3))
  # 1-D: a tuple with one pair.
  assert resolve_padding(((1, 0),), (5,), (3,), (1,), op="f") == ((1, 0),)
  # SAME with an even kernel: the extra pixel goes high, as in lax.
  assert resolve_padding("SAME", (5,), (2,), (1,), op="f") == ((0, 1),)
  # SAME with a stride larger than the kernel needs no padding.
  assert resolve_padding("SAME", (6,), (1,), (3,), op="f") == ((0, 0),)
  # SAME_LOWER puts the extra pixel low; CAUSAL all of r̂ − 1 (1-D).
  assert resolve_padding("SAME_LOWER", n, r, s, op="f") == ((1, 1), (1, 1))
  assert resolve_padding("SAME_LOWER", (5,), (2,), (1,), op="f") == ((1, 0),)
  assert resolve_padding("CAUSAL", (5,), (3,), (2,), op="f") == ((2, 0),)


@pytest.mark.parametrize(
    "padding, error, match",
    [
        (
            "HALF",
            ValueError,
            r"f: padding got 'HALF'; expected one of \('VALID', 'SAME', 'SAME_LOWER', 'FULL', "
            r"'CAUSAL'\)",
        ),
        (
            "CAUSAL",
            ValueError,
            r"f: padding got 'CAUSAL', which is for 1 spatial dim, but the input has 2; "
            r"expected 'CAUSAL' only for 1-D inputs",
        ),
        ("causal", ValueError, r"f: padding got 'causal', which is for 1 spatial dim"),
        ("", ValueError, r"f: padding got ''"),
        (-1, ValueError, r"f: padding got -1"),
        ((1, -1), ValueError, r"f: padding got \(1, -1\)"),
        (((0, 1), (-1, 0)), ValueError, r"f: padding got \(\(0, 1\), \(-1, 0\)\)"),
        ((1, 2, 3), ValueError, r"f: padding got \(1, 2, 3\) \(3 entries\) for 2 spatial"),
        (((1, 1),), ValueError, r"f: padding got \(\(1, 1\),\) \(1 entries\)"),
        ((1, (1, 2)), ValueError, r"f: padding got \(1, \(1, 2\)\)"),
        (((1, 2, 3), (1, 2)), ValueError, r"f: padding got"),
        ((1.0, 2), ValueError, r"f: padding got \(1.0, 2\)"),
        (1.5, ValueError, r"f: padding got 1.5"),
        (None, ValueError, r"f: padding got None"),
        (True, ValueError, r"f: padding got True"),
        (("ab", (1, 1)), ValueError, r"f: padding got \('ab', \(1, 1\)\)"),
        (2**70, ValueError, r"f: padding got 1180591620717411303424; .* 2\*\*63 - 1"),
        (((0, 2**63), (0, 0)), ValueError, r"f: padding got .*9223372036854775808.* 2\*\*63"),
    ],
)
def test_resolve_padding_errors(padding, error, match):
  with pytest.raises(error, match=match):
    resolve_padding(padding, (5, 5), (3, 3), (1, 1), op="f")


# ----------------------------------------------------------------- conv_geometry


def test_conv_geometry_fields():
  geo = conv_geometry(
      (7, 8), (3, 2), stride=(2, 1), padding=((1, 0), (0, 2)), dilation=(1, 3), op="f"
  )
  assert isinstance(geo, Geometry)
  assert geo.in_spatial == (7, 8)
  assert geo.kernel == (3, 2)
  assert geo.stride == (2, 1)
  assert geo.dilation == (1, 3)
  assert geo.kernel_eff == (3, 4)
  assert geo.pads == ((1, 0), (0, 2))
  assert geo.padded_spatial == (8, 10)
  assert geo.out_spatial == ((8 - 3) // 2 + 1, (10 - 4) // 1 + 1)


@settings(max_examples=25, deadline=None)
@given(
    dims=st.lists(
        st.tuples(
            st.integers(1, 10),  # n
            st.integers(1, 4),  # kernel
            st.integers(1, 3),  # stride
            st.integers(1, 3),  # dilation
            st.integers(0, 3),  # pad low
            st.integers(0, 3),  # pad high
        ),
        min_size=1,
        max_size=3,
    )
)
def test_conv_geometry_output_matches_lax_shape(dims):
  n, k, s, t, lo, hi = (tuple(v) for v in zip(*dims, strict=True))
  pads = tuple(zip(lo, hi, strict=True))
  spans = [
      a + p + q - (b + (b - 1) * (d - 1)) for a, b, d, p, q in zip(n, k, t, lo, hi, strict=True)
  ]
  if min(spans) < 0:
    with pytest.raises(ValueError, match="larger than the padded input"):
      conv_geometry(n, k, stride=s, padding=pads, dilation=t, op="f")
    return
  geo = conv_geometry(n, k, stride=s, padding=pads, dilation=t, op="f")
  shape = jax.eval_shape(
      lambda x, w: lax.conv_general_dilated(x, w, s, pads, rhs_dilation=t),  # NC* layout
      jax.ShapeDtypeStruct((1, 1, *n), jnp.float32),
      jax.ShapeDtypeStruct((1, 1, *k), jnp.float32),
  ).shape
  assert geo.out_spatial == tuple(shape[2:])
  if all(span % stride == 0 for span, stride in zip(spans, s, strict=True)):
    assert conv_geometry(n, k, stride=s, padding=pads, dilation=t, strict=True, op="f") == geo
  else:
    with pytest.raises(ValueError, match="stride .* does not click"):
      conv_geometry(n, k, stride=s, padding=pads, dilation=t, strict=True, op="f")


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 12),
    k=st.integers(1, 4),
    s=st.integers(1, 4),
    t=st.integers(1, 3),
    lo=st.integers(0, 3),
    hi=st.integers(0, 3),
)
def test_ceil_mode_output_size_is_pytorch_s(n, k, s, t, lo, hi):
  r = k + (k - 1) * (t - 1)
  if n + lo + hi < r:
    with pytest.raises(ValueError, match="larger than the padded input"):
      conv_geometry((n,), (k,), stride=s, padding=((lo, hi),), dilation=t, ceil_mode=True, op="f")
    return
  geo = conv_geometry((n,), (k,), stride=s, padding=((lo, hi),), dilation=t, ceil_mode=True, op="f")
  (m,) = geo.out_spatial
  assert m == ref_torch_out_size(n, k, s, lo, hi, dilation=t, ceil_mode=True)
  floor = conv_geometry((n,), (k,), stride=s, padding=((lo, hi),), dilation=t, op="f")
  assert floor.out_spatial == (ref_torch_out_size(n, k, s, lo, hi, dilation=t),)
  # The geometry is consistent: the low padding as asked, the high padding reaching the
  # last window (so the floor formula gives m), and the lowering needs nothing else.
  ((lo2, hi2),) = geo.pads
  assert lo2 == lo and hi2 >= 0
  assert (n + lo + hi2 - r) // s + 1 == m
  assert geo.kernel_eff == (r,) and geo.stride == (s,)
  # strict refuses exactly the settings that still drop trailing input: the last
  # window ends before the last input position.
  drops = (m - 1) * s - lo + r - 1 < n - 1
  if drops:
    with pytest.raises(ValueError, match="does not click"):
      conv_geometry(
          (n,), (k,), stride=s, padding=((lo, hi),), dilation=t, ceil_mode=True, strict=True, op="f"
      )
  else:
    strict = conv_geometry(
        (n,), (k,), stride=s, padding=((lo, hi),), dilation=t, ceil_mode=True, strict=True, op="f"
    )
    assert strict == geo


def test_ceil_mode_known_sizes():
  # GoogLeNet's stride-2 3×3 pools (torchvision: MaxPool2d(3, 2, ceil_mode=True)).
  for n, m in [(112, 56), (56, 28), (28, 14), (14, 7)]:
    assert conv_geometry((n,), (3,), stride=2, ceil_mode=True, op="f").out_spatial == (m,)
    assert conv_geometry((n,), (3,), stride=2, op="f").out_spatial == (m - 1,)
  # n = 4, k = 3, s = 2, p = 1: ⌈3 / 2⌉ + 1 = 3 windows (floor: 2), starting at −1, 1
  # and 3; the last covers 3, 4 and 5, one position beyond the padding.
  geo = conv_geometry((4,), (3,), stride=2, padding=1, ceil_mode=True, op="f")
  assert geo.out_spatial == (3,) and geo.pads == ((1, 2),)
  # A window may not start in the high padding: n = 5, k = 2, s = 3, p = 1 gives
  # ⌈5 / 3⌉ + 1 = 3, but the third would start at 6 − 1 = 5 = n: less one.
  geo = conv_geometry((5,), (2,), stride=3, padding=1, ceil_mode=True, op="f")
  assert geo.out_spatial == (2,)
  # A ceil window overhanging the padding extends the geometry's high side.
  geo = conv_geometry((6, 5), (3, 3), stride=2, ceil_mode=True, op="f")
  assert geo.out_spatial == (3, 2) and geo.pads == ((0, 1), (0, 0))


def test_strict_mode():
  # A 7-wide input, 3-wide kernel and stride 3: (7 - 3) / 3 does not divide.
  assert conv_geometry((7,), (3,), stride=3, op="f").out_spatial == (2,)
  with pytest.raises(
      ValueError,
      match=r"f: stride 3 does not click in spatial dim 0: .* 1 trailing input position\(s\)"
      r" would be dropped \(strict=True\)",
  ):
    conv_geometry((7,), (3,), stride=3, strict=True, op="f")
  # Settings that click are accepted, and give the same geometry.
  clicks = [(7, 3, 2, 0), (7, 3, 1, 0), (7, 3, 3, 1), (8, 3, 3, ((0, 1),)), (32, 5, 1, 0)]
  for n, k, s, padding in clicks:
    loose = conv_geometry((n,), (k,), stride=s, padding=padding, op="f")
    strict = conv_geometry((n,), (k,), stride=s, padding=padding, strict=True, op="f")
    assert strict == loose
  # The check is per dim: the second dim does not click.
  with pytest.raises(ValueError, match="spatial dim 1"):
    conv_geometry((7, 7), (3, 3), stride=(2, 3), strict=True, op="f")
  # SAME drops inputs too when the kernel is smaller than the stride (8 → 0, 3, 6).
  with pytest.raises(ValueError, match="does not click"):
    conv_geometry((8,), (1,), stride=3, padding="SAME", strict=True, op="f")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"stride": 0}, ValueError, r"g: stride got 0"),
        ({"stride": (1, -1)}, ValueError, r"g: stride got \(1, -1\)"),
        ({"stride": (1, 1, 1)}, ValueError, r"g: stride got \(1, 1, 1\)"),
        ({"dilation": 0}, ValueError, r"g: dilation got 0"),
        ({"dilation": "2"}, ValueError, r"g: dilation got '2'"),
        ({"padding": "half"}, ValueError, r"g: padding got 'half'"),
        ({"padding": -2}, ValueError, r"g: padding got -2"),
        # Issue 28: these reached lax as an OverflowError, a pybind11 TypeError ("get():
        # incompatible function arguments") and a "Negative padding" from JAX's internals.
        ({"stride": 2**70}, ValueError, r"g: stride got 1180591620717411303424; .* 2\*\*63"),
        ({"padding": 2**70}, ValueError, r"g: padding got 1180591620717411303424; .* 2\*\*63"),
        (
            {"padding": 2**62},
            ValueError,
            r"g: padding got 4611686018427387904, which makes the padded input .* 2\*\*63 - 1 "
            r"positions",
        ),
        (
            {"dilation": 2**62},
            ValueError,
            r"g: dilation got 4611686018427387904, which makes the effective kernel size "
            r"9223372036854775809 \(kernel 3\) in spatial dim 0 exceed 2\*\*63 - 1",
        ),
        ({"strict": "no"}, ValueError, r"g: strict got 'no'; expected a bool"),
        ({"strict": 1}, ValueError, r"g: strict got 1; expected a bool"),
        ({"strict": None}, ValueError, r"g: strict got None; expected a bool"),
        ({"ceil_mode": "yes"}, ValueError, r"g: ceil_mode got 'yes'; expected a bool"),
        ({"ceil_mode": 1}, ValueError, r"g: ceil_mode got 1; expected a bool"),
        ({"padding": "causal"}, ValueError, r"g: padding got 'causal', which is for 1 spatial"),
    ],
)
def test_conv_geometry_errors(kwargs, error, match):
  with pytest.raises(error, match=match):
    conv_geometry((5, 5), (3, 3), op="g", **kwargs)


def test_conv_geometry_kernel_and_bool_options():
  # A zero-size kernel dim was reported as "effective_kernel_size: kernel_size got 0".
  with pytest.raises(
      ValueError,
      match=r"g: w has a zero-size kernel dim: kernel spatial " r"shape \(3, 0\) \(spatial dim 1\)",
  ):
    conv_geometry((5, 5), (3, 0), op="g")
  with pytest.raises(ValueError, match=r"g: window has a zero-size kernel dim"):
    conv_geometry((5,), (0,), op="g", kernel_name="window")
  assert conv_geometry((5,), (3,), strict=np.bool_(True), op="g").out_spatial == (3,)
  with pytest.raises(ValueError, match="does not click"):
    conv_geometry((6,), (3,), stride=2, strict=np.bool_(True), op="g")


def test_kernel_larger_than_padded_input():
  with pytest.raises(
      ValueError,
      match=r"g: the effective kernel size 5 \(kernel 3, dilation 2\) is larger than the "
      r"padded input size 4 \(input 4, padding \(0, 0\)\) in spatial dim 1",
  ):
    conv_geometry((9, 4), (3, 3), dilation=2, op="g")
  with pytest.raises(ValueError, match="kernel size 4 .* padded input size 3"):
    conv_geometry((2,), (4,), padding=((1, 0),), op="g")
  # Exactly as large is fine: one output.
  assert conv_geometry((2,), (4,), padding=1, op="g").out_spatial == (1,)
  assert conv_geometry((4,), (3,), dilation=2, padding=(1,), op="g").out_spatial == (2,)


# ---------------------------------------------- check_spatial_rank, padding mode


def test_check_spatial_rank():
  check_spatial_rank(jnp.zeros((1, 4, 4, 2)), 2, name="x", op="h")
  with pytest.raises(
      ValueError, match=r"h: x has shape \(4, 4, 2\) \(rank 3\) \(an unbatched input"
  ):
    check_spatial_rank(jnp.zeros((4, 4, 2)), 2, name="x", op="h")
  with pytest.raises(ValueError, match=r"h: y has shape \(1, 4, 2\) \(rank 3\); expected rank 5"):
    check_spatial_rank(jnp.zeros((1, 4, 2)), 3, name="y", op="h")


def test_check_padding_mode():
  for mode in ("zeros", "circular", "reflect", "edge"):
    assert check_padding_mode(mode, op="h") == mode
  assert PADDING_MODES == ("zeros", "circular", "reflect", "edge")
  for bad in ("zero", "wrap", "constant", "Reflect", None):
    with pytest.raises(ValueError, match=f"h: padding_mode got {bad!r}; expected one of"):
      check_padding_mode(bad, op="h")


# ----------------------------------------------------------------- pad_spatial


@settings(max_examples=25, deadline=None)
@given(
    data=st.data(),
    num_spatial=st.integers(1, 3),
    mode=st.sampled_from(PADDING_MODES),
)
def test_pad_spatial_matches_numpy_pad(data, num_spatial, mode):
  spatial = data.draw(st.lists(st.integers(1, 5), min_size=num_spatial, max_size=num_spatial))
  pads = data.draw(
      st.lists(
          st.tuples(st.integers(0, 6), st.integers(0, 6)),
          min_size=num_spatial,
          max_size=num_spatial,
      )
  )
  x = np.random.default_rng(0).normal(size=(2, *spatial, 3))
  expected = np.pad(x, [(0, 0), *pads, (0, 0)], mode=_NUMPY_MODE[mode])
  got = pad_spatial(jnp.asarray(x), tuple(map(tuple, pads)), mode)
  np.testing.assert_array_equal(np.asarray(got), expected)


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_pad_spatial_each_mode_by_hand(mode):
  x = jnp.arange(1.0, 4.0).reshape(1, 3, 1)  # [1, 2, 3]
  got = np.asarray(pad_spatial(x, ((2, 1),), mode))[0, :, 0]
  expected = {
      "zeros": [0, 0, 1, 2, 3, 0],
      "circular": [2, 3, 1, 2, 3, 1],
      "reflect": [3, 2, 1, 2, 3, 2],
      "edge": [1, 1, 1, 2, 3, 3],
  }[mode]
  np.testing.assert_array_equal(got, expected)


def test_pad_spatial_no_padding_and_dtype():
  x = jnp.ones((2, 3, 3, 1), jnp.bfloat16)
  assert pad_spatial(x, ((0, 0), (0, 0)), "reflect") is x
  for mode in PADDING_MODES:
    y = pad_spatial(x, ((1, 0), (0, 2)), mode)
    assert y.shape == (2, 4, 5, 1)
    assert y.dtype == jnp.bfloat16


def test_pad_spatial_jit_and_grad():
  x = jnp.arange(6.0).reshape(1, 3, 2, 1)
  pads = ((1, 1), (2, 0))
  for mode in PADDING_MODES:
    f = jax.jit(lambda x, mode=mode: pad_spatial(x, pads, mode))
    np.testing.assert_array_equal(f(x), pad_spatial(x, pads, mode))
    # Each input pixel's gradient counts its copies in the padded output.
    grad = jax.grad(lambda x, mode=mode: pad_spatial(x, pads, mode).sum())(x)
    assert float(grad.sum()) == (5 * 4 if mode != "zeros" else 6)
    assert float(grad.min()) >= 1.0
