"""Tests for cnnjax.arithmetic: sizes against the ops, counts against the lecture."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax
from references import ref_torch_out_size

import cnnjax
from cnnjax import arithmetic
from cnnjax.arithmetic import (
    jump,
    op_count,
    output_size,
    param_count,
    receptive_field,
)
from cnnjax.conv import cross_correlate


def test_effective_kernel_size_is_the_padding_one():
  from cnnjax import padding

  assert arithmetic.effective_kernel_size is padding.effective_kernel_size
  assert arithmetic.effective_kernel_size(3, dilation=2) == 5
  assert arithmetic.effective_kernel_size(5, dilation=1) == 5
  assert arithmetic.effective_kernel_size(1, dilation=7) == 1


# ---------------------------------------------------------------- output_size


@pytest.mark.parametrize(
    "n, kernel, kwargs, expected",
    [
        (32, 5, {}, 28),
        (28, 2, {"stride": 2}, 14),
        (32, 5, {"padding": 2}, 32),
        (32, 5, {"padding": "SAME"}, 32),
        (32, 3, {"stride": 2, "padding": "SAME"}, 16),
        (33, 3, {"stride": 2, "padding": "SAME"}, 17),
        (5, 3, {"padding": "FULL"}, 7),
        (5, 3, {"padding": "valid"}, 3),
        (7, 3, {"stride": 3}, 2),  # does not click: the last input is dropped
        (7, 3, {"stride": 2}, 3),
        (10, 3, {"dilation": 2}, 6),
        (7, 3, {"stride": 2, "padding": (1, 0), "dilation": 2}, 2),
        (227, 11, {"stride": 4}, 55),  # AlexNet conv1
        (224, 7, {"stride": 2, "padding": 1}, 110),  # ZFNet conv1
    ],
)
def test_output_size_examples(n, kernel, kwargs, expected):
  assert output_size(n, kernel, **kwargs) == expected


def _lax_pads(padding, n, r_eff, s):
  """Padding pair computed independently of cnnjax (lax for SAME)."""
  if padding == "VALID":
    return (0, 0)
  if padding == "FULL":
    return (r_eff - 1, r_eff - 1)
  if padding in ("SAME", "SAME_LOWER"):
    return tuple(lax.padtype_to_pads((n,), (r_eff,), (s,), padding)[0])
  if padding == "CAUSAL":  # Flax: dilation · (kernel − 1) before
    return (r_eff - 1, 0)
  if isinstance(padding, int):
    return (padding, padding)
  return tuple(padding)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 12),
    kernel=st.integers(1, 4),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 3),
    padding=st.one_of(
        st.sampled_from(["VALID", "SAME", "SAME_LOWER", "FULL", "CAUSAL"]),
        st.integers(0, 3),
        st.tuples(st.integers(0, 3), st.integers(0, 3)),
    ),
)
def test_output_size_matches_formula_and_op(n, kernel, stride, dilation, padding):
  r_eff = kernel + (kernel - 1) * (dilation - 1)
  lo, hi = _lax_pads(padding, n, r_eff, stride)
  span = n + lo + hi - r_eff
  kwargs = dict(stride=stride, padding=padding, dilation=dilation)
  if span < 0:
    with pytest.raises(ValueError, match="kernel"):
      output_size(n, kernel, **kwargs)
    return
  expected = span // stride + 1
  assert output_size(n, kernel, **kwargs) == expected
  if padding in ("SAME", "SAME_LOWER"):
    assert expected == -(-n // stride)
  # The op returns exactly this size.
  op_padding = (tuple(padding),) if isinstance(padding, tuple) else padding
  shape = jax.eval_shape(
      lambda x, w: cross_correlate(x, w, stride=stride, padding=op_padding, dilation=dilation),
      jax.ShapeDtypeStruct((1, n, 1), jnp.float32),
      jax.ShapeDtypeStruct((kernel, 1, 1), jnp.float32),
  ).shape
  assert shape == (1, expected, 1)
  # strict refuses exactly the settings that do not click.
  if span % stride:
    with pytest.raises(ValueError, match="stride"):
      output_size(n, kernel, strict=True, **kwargs)
  else:
    assert output_size(n, kernel, strict=True, **kwargs) == expected


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 12),
    kernel=st.integers(1, 4),
    stride=st.integers(1, 3),
    dilation=st.integers(1, 3),
    pads=st.tuples(st.integers(0, 3), st.integers(0, 3)),
)
def test_output_size_ceil_mode_is_pytorch_s_and_the_pools(n, kernel, stride, dilation, pads):
  lo, hi = pads
  if n + lo + hi < kernel + (kernel - 1) * (dilation - 1):
    return
  m = output_size(n, kernel, stride=stride, padding=pads, dilation=dilation, ceil_mode=True)
  assert m == ref_torch_out_size(n, kernel, stride, lo, hi, dilation=dilation, ceil_mode=True)
  # max_pool returns this size wherever every window reads the input.
  reads = all(any(0 <= o * stride - lo + j * dilation < n for j in range(kernel)) for o in range(m))
  if reads:
    shape = jax.eval_shape(
        lambda x: cnnjax.max_pool(
            x, kernel, stride=stride, padding=(pads,), dilation=dilation, ceil_mode=True
        ),
        jax.ShapeDtypeStruct((1, n, 1), jnp.float32),
    ).shape
    assert shape == (1, m, 1)


def test_output_size_ceil_mode_and_new_paddings():
  assert output_size(112, 3, stride=2, ceil_mode=True) == 56  # GoogLeNet's pools
  assert output_size(112, 3, stride=2) == 55
  assert output_size(5, 2, stride=3, padding=1, ceil_mode=True) == 2  # not from the padding
  assert output_size(6, 2, padding="SAME_LOWER") == 6
  assert output_size(6, 3, padding="CAUSAL", dilation=2) == 6
  with pytest.raises(ValueError, match="output_size: ceil_mode got 'yes'; expected a bool"):
    output_size(6, 2, ceil_mode="yes")
  with pytest.raises(ValueError, match=r"output_size: padding got 'HALF'; .*'SAME_LOWER'"):
    output_size(6, 2, padding="HALF")


def test_output_size_strict():
  with pytest.raises(ValueError, match=r"output_size: stride 3 does not click"):
    output_size(7, 3, stride=3, strict=True)
  assert output_size(7, 3, stride=2, strict=True) == 3
  assert output_size(7, 3, stride=3, padding=1, strict=True) == 3
  assert output_size(7, 3, stride=3, padding=(0, 2), strict=True) == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": 0, "kernel": 3}, "output_size: n got 0"),
        ({"n": 5.0, "kernel": 3}, "output_size: n got 5.0"),
        ({"n": 5, "kernel": 0}, "output_size: kernel got 0"),
        ({"n": 5, "kernel": (3,)}, r"output_size: kernel got \(3,\)"),
        ({"n": 5, "kernel": 3, "stride": 0}, "output_size: stride got 0"),
        ({"n": 5, "kernel": 3, "dilation": -1}, "output_size: dilation got -1"),
        ({"n": 5, "kernel": 3, "padding": "HALF"}, "output_size: padding got 'HALF'"),
        ({"n": 5, "kernel": 3, "padding": -1}, "output_size: padding got -1"),
        ({"n": 5, "kernel": 3, "padding": (1, -1)}, r"output_size: padding got \(1, -1\)"),
        ({"n": 5, "kernel": 3, "padding": (1, 2, 3)}, r"output_size: padding got \(1, 2, 3\)"),
        ({"n": 2, "kernel": 3}, "effective kernel size 3 .* larger than the padded input"),
        ({"n": 4, "kernel": 3, "dilation": 2}, "effective kernel size 5"),
    ],
)
def test_output_size_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    output_size(**kwargs)


# ------------------------------------------------------- receptive field, jump


def test_receptive_field_examples():
  assert receptive_field([]) == 1
  assert receptive_field([(3, 1)]) == 3
  assert receptive_field([(3, 1)] * 3) == 7
  assert receptive_field([(3, 1, 1)] * 3) == 7
  assert receptive_field([(7, 1)]) == 7  # one 7x7 sees what three 3x3 see
  assert receptive_field([(2, 2)] * 3) == 8
  assert receptive_field([(3, 1, 1), (3, 1, 2), (3, 1, 4), (3, 1, 8)]) == 31
  # The seed CNN: conv5, pool2, conv5, pool2.
  layers = [(5, 1), (2, 2), (5, 1), (2, 2)]
  assert receptive_field(layers) == 16
  assert jump(layers) == 4
  assert jump([]) == 1
  assert jump([(3, 2, 2), (3, 3)]) == 6


@settings(max_examples=15, deadline=None)
@given(
    layers=st.lists(
        st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 3)),
        min_size=1,
        max_size=4,
    )
)
def test_receptive_field_is_the_gradient_support(layers):
  # Independent check: the input pixels that output pixel 0 of a stack of all-ones
  # 1-D convolutions depends on (non-zero gradient) span exactly the receptive field.
  size = receptive_field(layers)
  n = size + 8
  ws = [jnp.ones((k, 1, 1)) for k, _, _ in layers]

  def first_output(x):
    for w, (_, s, t) in zip(ws, layers, strict=True):
      x = cross_correlate(x, w, stride=s, dilation=t)
    return x[0, 0, 0]

  grad = np.asarray(jax.grad(first_output)(jnp.ones((1, n, 1))))[0, :, 0]
  support = np.flatnonzero(grad)
  assert support[0] == 0
  assert support[-1] + 1 == size
  assert jump(layers) == math.prod(s for _, s, _ in layers)


@pytest.mark.parametrize(
    "fn, layers, match",
    [
        (receptive_field, 3, "receptive_field: layers got 3"),
        (receptive_field, "33", "receptive_field: layers got '33'"),
        (receptive_field, [(3,)], r"receptive_field: layers\[0\] got \(3,\)"),
        (receptive_field, [(3, 1), (3, 0)], r"receptive_field: layers\[1\] got \(3, 0\)"),
        (receptive_field, [(3, 1, 1, 1)], r"layers\[0\] got \(3, 1, 1, 1\)"),
        (receptive_field, [(3.0, 1)], r"layers\[0\] got \(3.0, 1\)"),
        (jump, [(3, 1), 2], r"jump: layers\[1\] got 2"),
    ],
)
def test_receptive_field_errors(fn, layers, match):
  with pytest.raises(ValueError, match=match):
    fn(layers)


# ------------------------------------------------------------ param/op counts


def test_seed_cnn_table():
  # The lecture's seed CNN on 32x32x3 (params, ops, output shape).
  rows = []
  shape = (32, 32, 3)

  def conv(k, c):
    nonlocal shape
    out = (output_size(shape[0], k), output_size(shape[1], k), c)
    rows.append(
        (
            param_count("conv", kernel=(k, k), in_channels=shape[-1], out_channels=c),
            op_count("conv", in_shape=shape, out_shape=out, kernel=(k, k)),
            out,
        )
    )
    shape = out

  def pool(k):
    nonlocal shape
    out = (output_size(shape[0], k, stride=k), output_size(shape[1], k, stride=k), shape[2])
    rows.append((param_count("pool"), op_count("pool", in_shape=shape, out_shape=out), out))
    shape = out

  def fc(c):
    nonlocal shape
    features = math.prod(shape)
    out = (c,)
    rows.append(
        (
            param_count("fc", in_channels=features, out_channels=c),
            op_count("fc", in_shape=shape, out_shape=out),
            out,
        )
    )
    shape = out

  conv(5, 32)
  assert op_count("activation", in_shape=shape, out_shape=shape) == 0
  pool(2)
  conv(5, 64)
  pool(2)
  fc(100)
  fc(10)
  assert rows == [
      (2_432, 1_906_688, (28, 28, 32)),
      (0, 25_088, (14, 14, 32)),
      (51_264, 5_126_400, (10, 10, 64)),
      (0, 6_400, (5, 5, 64)),
      (160_100, 160_100, (100,)),
      (1_010, 1_010, (10,)),
  ]
  assert op_count("softmax", in_shape=(10,)) == 10
  assert op_count("softmax", out_shape=(10,)) == 10
  assert param_count("softmax") == 0


def test_locally_connected_lecture_example():
  out = output_size(30, 7)
  assert out == 24
  kwargs = dict(kernel=(7, 7), in_channels=3, out_channels=5, out_spatial=(out, out))
  assert param_count("locally_connected", use_bias=False, **kwargs) == 423_360
  assert param_count("locally_connected", **kwargs) == 423_360 + 24 * 24 * 5
  # Matches the weight shape the op takes: [*out_spatial, *kernel, C_in, C_out].
  assert math.prod((24, 24, 7, 7, 3, 5)) == 423_360
  # Ops as a conv: one multiply-add per weight, plus the bias.
  assert op_count(
      "locally_connected", in_shape=(30, 30, 3), out_shape=(24, 24, 5), kernel=(7, 7)
  ) == 24 * 24 * 5 * (49 * 3 + 1)


def test_param_counts_per_kind():
  conv = dict(kernel=(3, 3), in_channels=8, out_channels=4)
  assert param_count("conv", **conv) == 9 * 8 * 4 + 4
  assert param_count("conv", use_bias=False, **conv) == 9 * 8 * 4
  assert param_count("conv", groups=2, **conv) == 9 * 4 * 4 + 4
  assert param_count("conv", groups=4, use_bias=False, **conv) == 9 * 2 * 4
  assert param_count("conv", kernel=(3,), in_channels=2, out_channels=5) == 3 * 2 * 5 + 5
  assert param_count("conv", kernel=(3, 3, 3), in_channels=2, out_channels=5) == 27 * 10 + 5
  assert param_count("conv_transpose", **conv) == param_count("conv", **conv)
  assert param_count("tiled", tile=(2, 2), **conv) == 4 * 9 * 8 * 4 + 4
  assert param_count("tiled", tile=2, use_bias=False, **conv) == 4 * 9 * 8 * 4
  assert param_count("tiled", tile=1, **conv) == param_count("conv", **conv)
  assert param_count("tiled", tile=(3, 1), **conv) == 3 * 9 * 8 * 4 + 4
  assert param_count("locally_connected", out_spatial=(1, 1), **conv) == param_count("conv", **conv)
  assert param_count("fc", in_channels=10, out_channels=3) == 33
  assert param_count("fc", in_channels=10, out_channels=3, use_bias=False) == 30
  for kind in ("pool", "norm", "activation", "softmax"):
    assert param_count(kind) == 0
    assert param_count(kind, kernel=(2, 2), in_channels=3, out_channels=3) == 0


def test_op_counts_per_kind():
  conv = dict(in_shape=(8, 8, 6), out_shape=(6, 6, 4), kernel=(3, 3))
  assert op_count("conv", **conv) == 36 * 4 * (9 * 6 + 1)
  assert op_count("conv", groups=2, **conv) == 36 * 4 * (9 * 3 + 1)
  assert op_count("conv", in_channels=6, **conv) == op_count("conv", **conv)
  assert op_count("conv", out_shape=(6, 6, 4), kernel=(3, 3), in_channels=6) == op_count(
      "conv", **conv
  )
  assert op_count("tiled", **conv) == op_count("conv", **conv)
  assert op_count("locally_connected", **conv) == op_count("conv", **conv)
  assert op_count("conv", in_shape=(10, 3), out_shape=(8, 2), kernel=(3,)) == 16 * 10
  assert op_count("pool", in_shape=(8, 8, 6), out_shape=(4, 4, 6)) == 384
  assert op_count("norm", in_shape=(8, 8, 6), out_shape=(8, 8, 6)) == 384
  assert op_count("activation", in_shape=(8, 8, 6), out_shape=(8, 8, 6)) == 0
  assert op_count("activation") == 0
  assert op_count("softmax", in_shape=(7,), out_shape=(7,)) == 7
  assert op_count("fc", in_shape=(10,), out_shape=(3,)) == 33
  assert op_count("fc", in_channels=10, out_shape=(3,)) == 33
  assert op_count("fc", in_shape=(2, 5), out_shape=(3,)) == param_count(
      "fc", in_channels=10, out_channels=3
  )


@pytest.mark.parametrize(
    "n, k, s, groups", [(7, 3, 2, 1), (8, 3, 2, 2), (6, 2, 2, 1), (5, 3, 1, 3)]
)
def test_conv_transpose_ops_are_the_forward_multiply_adds(n, k, s, groups):
  m = output_size(n, k, stride=s)
  x_shape, y_shape = (n, n, 6), (m, m, 12)
  forward = op_count("conv", in_shape=x_shape, out_shape=y_shape, kernel=(k, k), groups=groups)
  backward = op_count(
      "conv_transpose", in_shape=y_shape, out_shape=x_shape, kernel=(k, k), groups=groups
  )
  assert forward - math.prod(y_shape) == backward - math.prod(x_shape)
  # Counting the inserted zeros would give (s**2 as many) more for s > 1.
  if s > 1:
    assert backward < math.prod(x_shape) * (k * k * 12 // groups + 1)


@pytest.mark.parametrize(
    "kind, kwargs, match",
    [
        ("dense", {}, "param_count: kind got 'dense'"),
        ("Conv", {}, "param_count: kind got 'Conv'"),
        ("conv", {"kernel": (3, 3), "out_channels": 4}, "param_count: in_channels got 0"),
        ("conv", {"kernel": (3, 3), "in_channels": 4}, "param_count: out_channels got 0"),
        ("fc", {"in_channels": 4}, "param_count: out_channels got 0"),
        ("fc", {"in_channels": -1, "out_channels": 2}, "param_count: in_channels got -1"),
        ("conv", {"in_channels": 3, "out_channels": 4}, "param_count: kernel is missing"),
        ("conv", {"kernel": 5, "in_channels": 3, "out_channels": 4}, "param_count: kernel got 5"),
        ("conv", {"kernel": (5, 0), "in_channels": 3, "out_channels": 4}, "kernel got"),
        (
            "conv",
            {"kernel": (3,), "in_channels": 3, "out_channels": 4, "groups": 0},
            "param_count: groups got 0",
        ),
        (
            "conv",
            {"kernel": (3,), "in_channels": 3, "out_channels": 4, "groups": 2},
            "groups got 2, which does not divide in_channels",
        ),
        (
            "conv",
            {"kernel": (3,), "in_channels": 4, "out_channels": 6, "groups": 4},
            "groups got 4, which does not divide out_channels",
        ),
        (
            "locally_connected",
            {"kernel": (3, 3), "in_channels": 3, "out_channels": 4},
            "param_count: out_spatial is missing",
        ),
        (
            "locally_connected",
            {"kernel": (3, 3), "in_channels": 3, "out_channels": 4, "out_spatial": (5,)},
            r"param_count: out_spatial got \(5,\)",
        ),
        (
            "locally_connected",
            {"kernel": (3, 3), "in_channels": 3, "out_channels": 4, "out_spatial": (5, 0)},
            "param_count: out_spatial got",
        ),
        (
            "tiled",
            {"kernel": (3, 3), "in_channels": 3, "out_channels": 4},
            "param_count: tile is missing",
        ),
        (
            "tiled",
            {"kernel": (3, 3), "in_channels": 3, "out_channels": 4, "tile": 0},
            "param_count: tile got 0",
        ),
        (
            "tiled",
            {"kernel": (3, 3), "in_channels": 3, "out_channels": 4, "tile": (2, 2, 2)},
            r"param_count: tile got \(2, 2, 2\)",
        ),
    ],
)
def test_param_count_errors(kind, kwargs, match):
  with pytest.raises(ValueError, match=match):
    param_count(kind, **kwargs)


@pytest.mark.parametrize(
    "kind, kwargs, match",
    [
        ("relu", {}, "op_count: kind got 'relu'"),
        ("pool", {}, "op_count: in_shape is missing"),
        ("norm", {"in_shape": (4, 0, 3)}, r"op_count: in_shape got \(4, 0, 3\)"),
        ("softmax", {}, "op_count: out_shape is missing"),
        ("fc", {"in_shape": (10,)}, "op_count: out_shape is missing"),
        ("fc", {"out_shape": (3,)}, r"op_count: in_channels \(or in_shape\) got 0"),
        ("conv", {"in_shape": (8, 8, 3), "out_shape": (6, 6, 4)}, "op_count: kernel is missing"),
        (
            "conv",
            {"out_shape": (6, 6, 4), "kernel": (3, 3)},
            r"op_count: in_channels \(or in_shape\) got 0",
        ),
        (
            "conv",
            {"in_shape": (8, 8, 3), "out_shape": (6, 4), "kernel": (3, 3)},
            r"op_count: out_shape got \(6, 4\) \(rank 2\)",
        ),
        (
            "conv",
            {"in_shape": (8, 3), "out_shape": (6, 6, 4), "kernel": (3, 3)},
            r"op_count: in_shape got \(8, 3\) \(rank 2\)",
        ),
        (
            "conv",
            {"in_shape": (8, 8, 3), "out_shape": (6, 6, 4), "kernel": (3, 3), "in_channels": 5},
            "op_count: in_channels got 5",
        ),
        (
            "conv",
            {"in_shape": (8, 8, 3), "out_shape": (6, 6, 4), "kernel": (3, 3), "groups": 2},
            "op_count: groups got 2",
        ),
        (
            "conv_transpose",
            {"out_shape": (8, 8, 3), "kernel": (3, 3), "in_channels": 4},
            "op_count: in_shape is missing",
        ),
    ],
)
def test_op_count_errors(kind, kwargs, match):
  with pytest.raises(ValueError, match=match):
    op_count(kind, **kwargs)
