"""Fuzzing at the extremes: integers at their dtype's min and max, odd configuration values.

Two families, each checked against the independent references of ``references.py``:

- **Integer extremes.** Every public op that takes integer inputs, on int8 … uint32
  (and int64/uint64, which need ``jax_enable_x64``), with ``jax_enable_x64`` on and off:
  the inputs are the dtype's max everywhere, its min everywhere, min and max mixed, or
  random over the whole range. Sums are exact and wrap modulo ``2**bits`` of the result
  dtype (``preferred_element_type`` where the op takes one, else the input's), as
  ``lax.conv_general_dilated`` does on integers; maxima, argmaxima and copies are exact;
  averages are the float32 nearest the exact mean; float results of integer inputs
  (L^p pools, blur, LRN) are within float32 rounding of the float64 formula.
- **Configuration values.** For every integer or bool option of every public op: ints
  beyond int64, NumPy unsigned ints beyond it, bools, strings, bytes, floats, None and
  complex numbers each raise a ``ValueError`` whose message names the op and the
  argument (not an ``OverflowError``, a pybind11 ``TypeError`` or a JAX-internal error,
  and never a crash or an accepted value); NumPy integer scalars of valid values
  (unsigned too) give what the Python int gives. The counting functions of
  :mod:`cnnjax.arithmetic` are exact Python-int maths, so only their wrong types count.

Budget: ``CNNJAX_FUZZ_EXAMPLES`` examples per integer test (default 3, as test_fuzz.py;
the configuration tests draw 30 times as many, which cost no compilation).
"""

from __future__ import annotations

import functools
import math
import re
from fractions import Fraction

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from references import (
    NUMPY_MODE,
    assert_close,
    ref_aps_phase,
    ref_binomial_blur,
    ref_correlate,
    ref_correlate_adjoint,
    ref_correlate_weight_grad,
    ref_exact_bilinear,
    ref_exact_linear,
    ref_fold,
    ref_geometry,
    ref_group_conv,
    ref_int_adaptive_max_pool,
    ref_int_avg_pool,
    ref_lift_conv,
    ref_local,
    ref_lrn,
    ref_max_pool_indices,
    ref_max_unpool,
    ref_pool,
    ref_tiled,
    ref_unfold,
    round_float32,
)
from test_fuzz import _SETTINGS, EXAMPLES, geometry, pool_geometry, tiled_geometry

import cnnjax

_CONFIG_SETTINGS = settings(
    max_examples=30 * EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 10,
    suppress_health_check=[HealthCheck.too_slow],
)

# The widest first: hypothesis's first (derandomized) examples take the first entries.
_DTYPES_32 = ("int32", "uint32", "int8", "uint8", "int16", "uint16")
_DTYPES_64 = ("int64", "uint64")
_FILLS = ("max", "mixed", "min", "random")


# ------------------------------------------------------------------ integer inputs


@st.composite
def int_setting(draw, *, preferred=False):
  """x64 on or off, an integer dtype it allows, a fill and a seed; with ``preferred``, a
  ``preferred_element_type`` (None or an integer dtype, wider or narrower)."""
  x64 = draw(st.booleans())
  names = _DTYPES_32 + (_DTYPES_64 if x64 else ())
  dtype = np.dtype(draw(st.sampled_from(names)))
  pet = draw(st.sampled_from((None, *names))) if preferred else None
  return dict(
      x64=x64,
      dtype=dtype,
      fill=draw(st.sampled_from(_FILLS)),
      seed=draw(st.integers(0, 2**16)),
      pet=None if pet is None else np.dtype(pet),
  )


def _extreme(shape, s, seed_offset=0):
  """An array of ``s["dtype"]``: its max, its min, both mixed, or the whole range."""
  dtype = s["dtype"]
  info = np.iinfo(dtype)
  rng = np.random.default_rng(s["seed"] + seed_offset)
  lo, hi = np.array(info.min, dtype), np.array(info.max, dtype)
  fill = s["fill"] if seed_offset == 0 else _FILLS[(_FILLS.index(s["fill"]) + seed_offset) % 4]
  if fill == "max":
    return np.full(shape, hi)
  if fill == "min":
    return np.full(shape, lo)
  if fill == "mixed":
    return np.where(rng.random(shape) < 0.5, lo, hi)
  return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def _run(s, f, *arrays):
  """``f(*arrays)`` compiled as one program (faster than op by op), with x64 as drawn."""
  with jax.enable_x64(s["x64"]):
    return jax.jit(f)(*arrays)


def _equal(got, want):
  got = np.asarray(got)
  assert got.dtype == want.dtype, (got.dtype, want.dtype)
  assert got.shape == want.shape, (got.shape, want.shape)
  np.testing.assert_array_equal(got, want)


class TestIntegerConvolutions:

  @_SETTINGS
  @given(geometry(), int_setting(preferred=True), st.sampled_from([1, 2]), st.booleans())
  def test_cross_correlate_and_convolve(self, g, s, groups, flip):
    x = _extreme((g["batch"], *g["sizes"], 2 * groups), s)
    w = _extreme((*g["kernel"], 2, 2 * groups), s, 1)
    config = dict(g["config"], groups=groups, padding_mode=g["mode"])
    op = cnnjax.convolve if flip else cnnjax.cross_correlate
    y = _run(s, lambda x, w: op(x, w, preferred_element_type=s["pet"], **config), x, w)
    ref = functools.partial(ref_correlate, flip=flip)
    _equal(y, ref_exact_bilinear(ref, x, w, s["pet"] or s["dtype"], **config))

  @_SETTINGS
  @given(geometry(modes=("zeros",)), int_setting(preferred=True), st.sampled_from([1, 2]))
  def test_conv_transpose(self, g, s, groups):
    _, _, _, out = ref_geometry(g["sizes"], g["kernel"], **g["config"])
    y = _extreme((g["batch"], *out, 2 * groups), s)
    w = _extreme((*g["kernel"], 2, 2 * groups), s, 1)
    config = dict(g["config"], groups=groups)
    x = _run(
        s,
        lambda y, w: cnnjax.conv_transpose(
            y, w, input_shape=g["sizes"], preferred_element_type=s["pet"], **config
        ),
        y,
        w,
    )
    x_shape = (g["batch"], *g["sizes"], 2 * groups)
    _equal(
        x,
        ref_exact_bilinear(
            ref_correlate_adjoint, y, w, s["pet"] or s["dtype"], x_shape=x_shape, **config
        ),
    )

  @_SETTINGS
  @given(geometry(), int_setting(preferred=True))
  def test_locally_connected(self, g, s):
    _, _, _, out = ref_geometry(g["sizes"], g["kernel"], **g["config"])
    x = _extreme((g["batch"], *g["sizes"], 2), s)
    w = _extreme((*out, *g["kernel"], 2, 3), s, 1)
    config = dict(g["config"], padding_mode=g["mode"])
    y = _run(
        s,
        lambda x, w: cnnjax.locally_connected(x, w, preferred_element_type=s["pet"], **config),
        x,
        w,
    )
    _equal(y, ref_exact_bilinear(ref_local, x, w, s["pet"] or s["dtype"], **config))

  @_SETTINGS
  @given(tiled_geometry(), int_setting(preferred=True))
  def test_tiled_conv(self, g, s):
    x = _extreme((g["batch"], *g["sizes"], 2), s)
    w = _extreme((*g["tile"], *g["kernel"], 2, 3), s, 1)
    config = dict(g["config"], tile=g["tile"], padding_mode=g["mode"])
    y = _run(
        s, lambda x, w: cnnjax.tiled_conv(x, w, preferred_element_type=s["pet"], **config), x, w
    )
    _equal(y, ref_exact_bilinear(ref_tiled, x, w, s["pet"] or s["dtype"], **config))

  @_SETTINGS
  @given(geometry(), int_setting(), st.sampled_from([1, 2]))
  def test_conv_weight_grad(self, g, s, groups):
    _, _, pads, out = ref_geometry(g["sizes"], g["kernel"], **g["config"])
    x = _extreme((g["batch"], *g["sizes"], 2 * groups), s)
    dy = _extreme((g["batch"], *out, 2 * groups), s, 1)
    config = dict(g["config"], groups=groups, padding_mode=g["mode"])
    w_shape = (*g["kernel"], 2, 2 * groups)
    dw = _run(s, lambda x, dy: cnnjax.conv_weight_grad(x, dy, w_shape, **config), x, dy)

    def reference(x, dy):  # as test_fuzz: the padded input correlated with dy, per group
      xp = np.pad(x, [(0, 0), *pads, (0, 0)], mode=NUMPY_MODE[g["mode"]])
      return np.concatenate(
          [
              ref_correlate_weight_grad(
                  xp[..., 2 * i : 2 * i + 2],
                  dy[..., 2 * i : 2 * i + 2],
                  g["kernel"],
                  stride=g["config"]["stride"],
                  padding=0,
                  dilation=g["config"]["dilation"],
              )
              for i in range(groups)
          ],
          axis=-1,
      )

    _equal(dw, ref_exact_bilinear(reference, x, dy, s["dtype"]))

  @_SETTINGS
  @given(
      st.sampled_from(["p4", "p4m"]),
      st.booleans(),
      st.integers(1, 3),
      st.integers(1, 2),
      st.sampled_from(["VALID", "SAME", 1]),
      st.integers(0, 2),
      st.integers(3, 5),
      int_setting(),
  )
  def test_lift_and_group_conv(self, group, lift, k, stride, padding, batch, size, s):
    assume(size >= k or padding != "VALID")
    order = {"p4": 4, "p4m": 8}[group]
    if lift:
      x, w = _extreme((batch, size, size, 2), s), _extreme((k, k, 2, 3), s, 1)
      op, ref = cnnjax.lift_conv, ref_lift_conv
    else:
      x = _extreme((batch, size, size, order, 2), s)
      w = _extreme((k, k, order, 2, 3), s, 1)
      op, ref = cnnjax.group_conv, ref_group_conv
    y = _run(s, lambda x, w: op(x, w, group=group, stride=stride, padding=padding), x, w)
    _equal(
        y, ref_exact_bilinear(ref, x, w, s["dtype"], group=group, stride=stride, padding=padding)
    )

  @_SETTINGS
  @given(geometry(), int_setting(), st.sampled_from([1, 2]))
  def test_conv_matrix(self, g, s, groups):
    w = _extreme((*g["kernel"], 2, 2 * groups), s)
    in_shape = (*g["sizes"], 2 * groups)
    config = dict(g["config"], groups=groups, padding_mode=g["mode"])
    m = _run(s, lambda w: cnnjax.conv_matrix(w, in_shape, **config), w)

    def reference(w):  # column j: the correlation of the j-th unit image
      units = np.eye(math.prod(in_shape)).reshape(-1, *in_shape)
      return ref_correlate(units, w, **config).reshape(len(units), -1).T

    _equal(m, ref_exact_linear(reference, w, s["dtype"]))

  @_SETTINGS
  @given(geometry(), int_setting(), st.booleans())
  def test_unfold_and_fold(self, g, s, use_fold):
    kernel, config = g["kernel"], g["config"]
    if use_fold:
      _, _, _, out = ref_geometry(g["sizes"], kernel, **config)
      shape = (g["batch"], *g["sizes"], 2)
      p = _extreme((g["batch"], *out, math.prod(kernel) * 2), s)
      y = _run(s, lambda p: cnnjax.fold(p, shape, kernel, **config), p)
      _equal(y, ref_exact_linear(lambda p: ref_fold(p, shape, kernel, **config), p, s["dtype"]))
    else:
      x = _extreme((g["batch"], *g["sizes"], 2), s)
      y = _run(s, lambda x: cnnjax.unfold(x, kernel, padding_mode=g["mode"], **config), x)
      _equal(
          y,
          ref_exact_linear(
              lambda x: ref_unfold(x, kernel, padding_mode=g["mode"], **config), x, s["dtype"]
          ),
      )


def _s(dtype, fill, x64=False, pet=None, seed=0):
  return dict(
      x64=x64,
      dtype=np.dtype(dtype),
      fill=fill,
      seed=seed,
      pet=None if pet is None else np.dtype(pet),
  )


def _g(sizes, kernel, stride=None, padding="VALID", batch=1, mode="zeros"):
  nd = len(sizes)
  return dict(
      nd=nd,
      batch=batch,
      sizes=list(sizes),
      kernel=list(kernel),
      config=dict(stride=stride or (1,) * nd, padding=padding, dilation=(1,) * nd),
      mode=mode,
      stride=stride,
  )


class TestIntegerPools:

  @_SETTINGS
  @given(pool_geometry(), int_setting(), st.booleans())
  # Issue 28: a 3x3 average of int32 3e8 (any int32 max) wrapped; a uint32 2**31 gave 0.
  @example(_g((3, 3), (3, 3)), _s("int32", "max"), False)
  @example(_g((4, 5), (2, 2), (1, 2), ((1, 0), (1, 1))), _s("uint32", "max"), True)
  @example(_g((6,), (3,), (2,), "SAME", batch=2), _s("int64", "mixed", x64=True), False)
  def test_window_pools(self, g, s, count_include_pad):
    x = _extreme((g["batch"], *g["sizes"], 3), s)
    window, stride, padding = tuple(g["kernel"]), g["stride"], g["config"]["padding"]
    kw = dict(stride=stride, padding=padding)
    y, idx, avg, lp = _run(
        s,
        lambda x: (
            *cnnjax.max_pool(x, window, return_indices=True, **kw),
            cnnjax.avg_pool(x, window, count_include_pad=count_include_pad, **kw),
            cnnjax.lp_pool(x, window, p=2, **kw),
        ),
        x,
    )
    want_idx = ref_max_pool_indices(x, window, stride, padding)
    _equal(idx, want_idx.astype(np.int32))
    positions, out = math.prod(g["sizes"]), math.prod(want_idx.shape[1:-1])
    flat = x.reshape(x.shape[0], positions, x.shape[-1])
    _equal(
        y,
        np.take_along_axis(flat, want_idx.reshape(x.shape[0], out, x.shape[-1]), axis=1).reshape(
            want_idx.shape
        ),
    )
    _equal(avg, ref_int_avg_pool(x, window, stride, padding, count_include_pad=count_include_pad))
    assert lp.dtype == np.float32
    x32 = x.astype(np.float32).astype(np.float64)  # lp_pool computes in float32
    assert_close(lp, ref_pool(x32, window, stride or window, padding, "lp"), np.float32)

  @_SETTINGS
  @given(geometry(), int_setting(), st.booleans())
  @example(_g((3, 3), (1, 1)), _s("int32", "max"), False)
  @example(_g((2, 3, 2), (1, 1, 1)), _s("uint32", "mixed"), True)
  def test_global_pools(self, g, s, keepdims):
    x = _extreme((g["batch"], *g["sizes"], 3), s)
    axes = tuple(range(1, g["nd"] + 1))
    gmax, gavg = _run(
        s,
        lambda x: (
            cnnjax.global_max_pool(x, keepdims=keepdims),
            cnnjax.global_avg_pool(x, keepdims=keepdims),
        ),
        x,
    )
    _equal(gmax, x.max(axis=axes, keepdims=keepdims))
    count = math.prod(g["sizes"])
    totals = x.astype(object).sum(axis=axes, keepdims=keepdims)
    nearest = np.vectorize(lambda t: round_float32(Fraction(int(t), count)), otypes=[np.float32])
    _equal(gavg, nearest(totals))

  @_SETTINGS
  @given(st.integers(0, 3), st.integers(1, 4), st.integers(1, 3), int_setting())
  @example(1, 2, 2, _s("int32", "max"))  # the group mean was a float32 of an int32 sum
  def test_maxout_and_group_pool(self, batch, groups, pieces, s):
    x = _extreme((batch, 3, groups * pieces), s)
    y = _run(s, lambda x: cnnjax.maxout(x, pieces), x)
    _equal(y, x.reshape(batch, 3, groups, pieces).max(axis=-1))
    z = _extreme((batch, 2, 3, 4, 2), s, 1)
    zmax, zmean = _run(
        s, lambda z: (cnnjax.group_pool(z, reduce="max"), cnnjax.group_pool(z, reduce="mean")), z
    )
    _equal(zmax, z.max(axis=3))
    truncated = np.vectorize(lambda t: int(Fraction(int(t), 4)), otypes=[object])  # to 0
    totals = z.astype(object).sum(axis=3)
    _equal(zmean, np.array(truncated(totals).tolist(), s["dtype"]).reshape(totals.shape))

  @_SETTINGS
  @given(
      st.integers(1, 3).flatmap(
          lambda nd: st.tuples(
              st.lists(st.integers(1, 7), min_size=nd, max_size=nd),
              st.lists(st.one_of(st.none(), st.integers(1, 9)), min_size=nd, max_size=nd),
          )
      ),
      st.integers(0, 2),
      int_setting(),
  )
  def test_adaptive_pools(self, sizes_and_outputs, batch, s):
    sizes, output_size = sizes_and_outputs
    x = _extreme((batch, *sizes, 3), s)
    y = _run(s, lambda x: cnnjax.adaptive_max_pool(x, output_size), x)
    with (
        jax.enable_x64(s["x64"]),
        pytest.raises(TypeError, match="adaptive_avg_pool: x has dtype"),
    ):
      cnnjax.adaptive_avg_pool(x, output_size)  # floating only: says so
    _equal(y, ref_int_adaptive_max_pool(x, output_size))

  @_SETTINGS
  @given(pool_geometry(), int_setting())
  def test_max_unpool(self, g, s):
    window, padding = tuple(g["kernel"]), g["config"]["padding"]
    x = _extreme((g["batch"], *g["sizes"], 2), s, 1)
    indices = ref_max_pool_indices(x, window, None, padding)
    y = _extreme(indices.shape, s)
    out = _run(s, lambda y, indices: cnnjax.max_unpool(y, indices, x.shape), y, indices)
    _equal(out, ref_exact_linear(lambda y: ref_max_unpool(y, indices, x.shape), y, s["dtype"]))

  @_SETTINGS
  @given(geometry(), st.integers(1, 3), st.sampled_from([2, 3]), int_setting())
  def test_float_results_of_integers(self, g, stride, taps, s):
    # blur_pool and local_response_norm compute in floating point: within its rounding
    # of the formula on the inputs they see; APS keeps one component, exactly.
    assume(all(n >= taps for n in g["sizes"]))
    assume(all(n >= stride for n in g["sizes"]))
    x = _extreme((g["batch"], *g["sizes"], 2), s)
    aps_x = x[(slice(None), *(slice(0, n - n % stride) for n in g["sizes"]))]
    blur, lrn, aps = _run(
        s,
        lambda x, aps_x: (
            cnnjax.blur_pool(x, stride=stride, kernel_size=taps),
            cnnjax.local_response_norm(x, size=3, alpha=1e-4, beta=0.75, k=2.0),
            cnnjax.polyphase_downsample(aps_x, stride=stride),
        ),
        x,
        aps_x,
    )
    assert blur.dtype == np.float32
    x32 = x.astype(np.float32).astype(np.float64)
    assert_close(blur, ref_binomial_blur(x32, stride, taps), np.float32)
    lrn_dtype = np.float64 if s["x64"] else np.float32
    assert lrn.dtype == lrn_dtype
    xl = x.astype(lrn_dtype).astype(np.float64)
    assert_close(lrn, ref_lrn(xl, 3, 1e-4, 0.75, 2.0), lrn_dtype)
    strides = (stride,) * g["nd"]
    phases = [
        np.asarray(
            aps_x[(slice(None), *(slice(r, None, t) for r, t in zip(p, strides, strict=True)))]
        )
        for p in np.ndindex(*strides)
    ]
    assert aps.dtype == s["dtype"]
    for b in range(aps_x.shape[0]):  # one of the components, copied exactly
      assert any(np.array_equal(aps[b], ph[b]) for ph in phases)
      (want,) = ref_aps_phase(aps_x[b : b + 1], strides)
      norms = [np.sum(np.abs(ph[b].astype(np.float64)) ** 2) for ph in phases]
      chosen = [i for i, ph in enumerate(phases) if np.array_equal(aps[b], ph[b])]
      # the phase chosen on float32 norms: the reference's, or one within its rounding
      top = norms[list(np.ndindex(*strides)).index(want)]
      assert any(norms[i] >= top * (1 - 1e-4) for i in chosen), (norms, chosen, want)


# ------------------------------------------------------------- configuration values

_X2 = np.ones((1, 6, 6, 2))
_W2 = np.ones((3, 3, 2, 2))

# op: (a valid call taking keyword overrides, its integer options, its bool options)
_OPS = {
    "cross_correlate": (
        lambda **k: cnnjax.cross_correlate(_X2, _W2, **k),
        ("stride", "dilation", "padding", "groups"),
        ("strict",),
    ),
    "convolve": (
        lambda **k: cnnjax.convolve(_X2, _W2, **k),
        ("stride", "dilation", "padding", "groups"),
        ("strict",),
    ),
    "conv_transpose": (
        lambda **k: cnnjax.conv_transpose(np.ones((1, 4, 4, 2)), _W2, **k),
        ("stride", "dilation", "padding", "groups", "input_shape"),
        (),
    ),
    "tiled_conv": (
        lambda **k: cnnjax.tiled_conv(_X2, np.ones((2, 2, 3, 3, 2, 2)), **{"tile": 2, **k}),
        ("tile", "stride", "dilation", "padding"),
        (),
    ),
    "locally_connected": (
        lambda **k: cnnjax.locally_connected(_X2, np.ones((4, 4, 3, 3, 2, 2)), **k),
        ("stride", "dilation", "padding"),
        (),
    ),
    "conv_weight_grad": (
        lambda **k: cnnjax.conv_weight_grad(
            _X2, np.ones((1, 4, 4, 2)), **{"kernel_shape": (3, 3, 2, 2), **k}
        ),
        ("stride", "dilation", "padding", "groups", "kernel_shape"),
        (),
    ),
    "conv_matrix": (
        lambda **k: cnnjax.conv_matrix(_W2, **{"input_shape": (6, 6, 2), **k}),
        ("stride", "dilation", "padding", "groups", "max_bytes", "input_shape"),
        (),
    ),
    "unfold": (
        lambda **k: cnnjax.unfold(_X2, **{"kernel_size": 3, **k}),
        ("kernel_size", "stride", "dilation", "padding"),
        (),
    ),
    "fold": (
        lambda **k: cnnjax.fold(
            np.ones((1, 4, 4, 18)), **{"output_shape": (1, 6, 6, 2), "kernel_size": 3, **k}
        ),
        ("kernel_size", "stride", "dilation", "padding", "output_shape"),
        (),
    ),
    "lift_conv": (
        lambda **k: cnnjax.lift_conv(_X2, _W2, group="p4", **k),
        ("stride", "padding"),
        (),
    ),
    "group_conv": (
        lambda **k: cnnjax.group_conv(
            np.ones((1, 6, 6, 4, 2)), np.ones((3, 3, 4, 2, 2)), group="p4", **k
        ),
        ("stride", "padding"),
        (),
    ),
    "max_pool": (
        lambda **k: cnnjax.max_pool(_X2, **{"window": 2, **k}),
        ("window", "stride", "padding"),
        ("return_indices",),
    ),
    "avg_pool": (
        lambda **k: cnnjax.avg_pool(_X2, **{"window": 2, **k}),
        ("window", "stride", "padding"),
        ("count_include_pad",),
    ),
    "lp_pool": (
        lambda **k: cnnjax.lp_pool(_X2, **{"window": 2, **k}),
        ("window", "stride", "padding"),
        (),
    ),
    "global_max_pool": (lambda **k: cnnjax.global_max_pool(_X2, **k), (), ("keepdims",)),
    "global_avg_pool": (lambda **k: cnnjax.global_avg_pool(_X2, **k), (), ("keepdims",)),
    "maxout": (lambda **k: cnnjax.maxout(_X2, **{"pieces": 2, **k}), ("pieces", "axis"), ()),
    "blur_pool": (lambda **k: cnnjax.blur_pool(_X2, **k), ("stride", "kernel_size"), ()),
    "polyphase_downsample": (lambda **k: cnnjax.polyphase_downsample(_X2, **k), ("stride",), ()),
    "adaptive_avg_pool": (
        lambda **k: cnnjax.adaptive_avg_pool(_X2, **{"output_size": 2, **k}),
        ("output_size",),
        (),
    ),
    "adaptive_max_pool": (
        lambda **k: cnnjax.adaptive_max_pool(_X2, **{"output_size": 2, **k}),
        ("output_size",),
        (),
    ),
    "max_unpool": (
        lambda **k: cnnjax.max_unpool(
            np.ones((1, 3, 3, 2)),
            np.zeros((1, 3, 3, 2), np.int32),
            **{"output_shape": (1, 6, 6, 2), **k},
        ),
        ("output_shape",),
        (),
    ),
    "local_response_norm": (lambda **k: cnnjax.local_response_norm(_X2, **k), ("size",), ()),
    "output_size": (
        lambda **k: cnnjax.output_size(**{"n": 8, "kernel": 3, **k}),
        ("n", "kernel", "stride", "padding", "dilation"),
        ("strict",),
    ),
    "effective_kernel_size": (
        lambda **k: cnnjax.effective_kernel_size(**{"kernel_size": 3, **k}),
        ("kernel_size", "dilation"),
        (),
    ),
}
# Exact Python-int maths: ints beyond int64 are answers, not errors; wrong types are.
_COUNTING = {
    "param_count": (
        lambda **k: cnnjax.param_count(
            "conv", **{"kernel": (3, 3), "in_channels": 2, "out_channels": 4, **k}
        ),
        ("in_channels", "out_channels", "groups", "kernel"),
        ("use_bias",),
    ),
    "op_count": (
        lambda **k: cnnjax.op_count(
            "conv", **{"in_shape": (6, 6, 2), "out_shape": (4, 4, 4), "kernel": (3, 3), **k}
        ),
        ("in_channels", "groups", "kernel", "in_shape"),
        (),
    ),
    "receptive_field": (
        lambda **k: cnnjax.receptive_field([(3, 1), (2, k.get("layers", 2))]),
        ("layers",),
        (),
    ),
}
# Shapes given as tuples: the odd value goes in one entry.
_SHAPES = {
    ("conv_transpose", "input_shape"): (6, 6),
    ("conv_matrix", "input_shape"): (6, 6, 2),
    ("conv_weight_grad", "kernel_shape"): (3, 3, 2, 2),
    ("fold", "output_shape"): (1, 6, 6, 2),
    ("max_unpool", "output_shape"): (1, 6, 6, 2),
    ("param_count", "kernel"): (3, 3),
    ("op_count", "kernel"): (3, 3),
    ("op_count", "in_shape"): (6, 6, 2),
}
# Arguments for which None is a valid value (a default).
_NONE_OK = {
    ("max_pool", "stride"),
    ("avg_pool", "stride"),
    ("lp_pool", "stride"),
    ("conv_transpose", "input_shape"),
}

_BEYOND_INT64 = [2**63, 2**70, -(2**63) - 1, -(2**70), np.uint64(2**64 - 1), np.uint64(2**63)]
_WRONG_TYPES = [
    True,
    False,
    np.bool_(True),
    "2",
    "",
    "VALID2",
    b"2",
    2.0,
    np.float32(3.0),
    float("nan"),
    None,
    1 + 0j,
]
_NOT_BOOLS = ["no", "False", "", 0, 1, np.int8(1), None, 1.0, [True]]


def _pass(op, name, value):
  """The keyword argument ``name`` carrying ``value`` (in a shape, one entry of it)."""
  if (op, name) in _SHAPES:
    shape = list(_SHAPES[op, name])
    shape[len(shape) // 2] = value
    return {name: tuple(shape)}
  return {name: value}


def _refused(op, call, name, value):
  with pytest.raises(ValueError) as info:
    call(**_pass(op, name, value))
  message = str(info.value)
  assert message.startswith(f"{op}:"), (op, name, value, message)
  assert re.search(rf"\b{re.escape(name)}\b", message), (op, name, value, message)


def _int_cases(op):
  call, ints, _ = {**_OPS, **_COUNTING}[op]
  values = _WRONG_TYPES if op in _COUNTING else _BEYOND_INT64 + _WRONG_TYPES
  for name in ints:
    for value in values:
      if value is None and (op, name) in _NONE_OK:
        continue
      yield call, name, value
      if name in ("stride", "dilation", "padding", "window", "tile", "kernel_size"):
        # the odd value as the second of two per-dim values
        yield (lambda **k: call(**{n: (1, v) for n, v in k.items()})), name, value


@pytest.mark.parametrize("op", sorted({**_OPS, **_COUNTING}))
def test_odd_integer_options_are_refused_by_name(op):
  for call, name, value in _int_cases(op):
    _refused(op, call, name, value)


@pytest.mark.parametrize(
    "op", sorted(op for op, (_, _, bools) in {**_OPS, **_COUNTING}.items() if bools)
)
def test_bool_options_take_only_bools(op):
  call, _, bools = {**_OPS, **_COUNTING}[op]
  for name in bools:
    for value in _NOT_BOOLS:
      _refused(op, call, name, value)


_ODD = st.one_of(
    st.integers(min_value=2**63),
    st.integers(max_value=-(2**63) - 1),
    st.integers(2**63, 2**64 - 1).map(np.uint64),
    st.booleans(),
    st.sampled_from([np.bool_(True), np.bool_(False)]),
    st.text(max_size=3),
    st.binary(max_size=3),
    st.floats(),
    st.none(),
    st.complex_numbers(),
)
_ODD_TYPES = st.one_of(
    st.booleans(),
    st.text(max_size=3),
    st.binary(max_size=3),
    st.floats(),
    st.none(),
    st.complex_numbers(),
)


@_CONFIG_SETTINGS
@given(
    st.sampled_from(
        [(op, name) for op, (_, ints, _) in {**_OPS, **_COUNTING}.items() for name in ints]
    ),
    st.data(),
)
def test_drawn_odd_values_are_refused_by_name(op_name, data):
  op, name = op_name
  call = {**_OPS, **_COUNTING}[op][0]
  value = data.draw(_ODD_TYPES if op in _COUNTING else _ODD)
  assume(not (value is None and (op, name) in _NONE_OK))
  _refused(op, call, name, value)


# Values that give each op the configuration of its call without them (one compilation).
_VALID = {
    "window": 2,
    "pieces": 2,
    "kernel_size": 3,
    "tile": 2,
    "size": 5,
    "output_size": 2,
    "max_bytes": 2**30,
    "n": 8,
    "kernel": 3,
    "padding": 0,
    ("lift_conv", "padding"): 1,
    ("group_conv", "padding"): 1,
    ("blur_pool", "stride"): 2,
    ("polyphase_downsample", "stride"): 2,
    ("max_pool", "stride"): 2,
    ("avg_pool", "stride"): 2,
    ("lp_pool", "stride"): 2,
}


@pytest.mark.parametrize("op", sorted(_OPS))
def test_numpy_integers_of_valid_values_are_the_int(op):
  # NumPy integer scalars, unsigned ones included, are ints here (bools are not).
  call, ints, bools = _OPS[op]
  base = call()
  for name in ints:
    if name == "axis":
      continue  # (-1, the default, has no unsigned form; int axes are checked above)
    for cast in (np.uint8, np.uint64, np.int64):
      if (op, name) in _SHAPES:
        value = tuple(cast(v) for v in _SHAPES[op, name])
      else:
        plain = _VALID.get((op, name), _VALID.get(name, 1))
        if plain > np.iinfo(cast).max:
          continue
        value = cast(plain)
      np.testing.assert_array_equal(call(**{name: value}), base)
  for name in bools:
    np.testing.assert_array_equal(call(**{name: np.bool_(False)}), base)
