"""Differential fuzzing of every public op: float32 and bfloat16 against float64 and NumPy.

For each public op (the convolution family with the weight gradient and the p4/p4m
group convolutions, deformable convolution, the matrix view, the pools with PyTorch's
options, adaptive pools, unpooling and group pooling, APS, LRN) hypothesis draws a
setting (rank, sizes, kernel, stride, tile, dilation, every padding form and mode,
groups, ceil_mode, divisors, odd sizes, batch 0–3). One jitted program per dtype
computes the op and its VJP (the gradients of every floating input); then

- the float64 result equals the independent NumPy reference (``references.py``);
- the float32 and bfloat16 results (and gradients) keep their dtype and are within that
  dtype's rounding (``references.tolerance``) of the float64 op applied to the same,
  rounded inputs.

That is the check that would have caught ``tiled_conv`` returning ~1e15 in float32 on
XLA:CPU while float64 was right (issue 18). This module compiles at full optimization,
what users run, even where the rest of the suite compiles with most optimizations off
(on CPU: ``tests/conftest.py``). On CPU the convolution family runs again in a subprocess
with ``CNNJAX_XLA_FLAGS=0`` (cnnjax's XLA:CPU flag off), since XLA:CPU picks other
convolution kernels either way.

Budget: ``CNNJAX_FUZZ_EXAMPLES`` examples per op (default 3), and a third of that
(at least one, besides each test's explicit examples) in the flag-off run; set it
higher for a nightly-style run, e.g.
``CNNJAX_FUZZ_EXAMPLES=200 python -m pytest -q tests/test_fuzz.py``.
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from references import (
    MODES,
    NUMPY_MODE,
    assert_close,
    ref_adaptive_pool,
    ref_aps,
    ref_binomial_blur,
    ref_correlate,
    ref_correlate_adjoint,
    ref_correlate_weight_grad,
    ref_deform_conv,
    ref_fold,
    ref_geometry,
    ref_group_conv,
    ref_lift_conv,
    ref_local,
    ref_lrn,
    ref_max_pool_indices,
    ref_max_unpool,
    ref_pads,
    ref_pool,
    ref_tiled,
    ref_torch_out_size,
    ref_torch_pool,
    ref_unfold,
)

import cnnjax

EXAMPLES = int(os.environ.get("CNNJAX_FUZZ_EXAMPLES", "3"))
_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 10,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
_LOW = (jnp.float32, jnp.bfloat16)


@pytest.fixture(autouse=True, scope="module")
def full_optimization():
  """Compiles this module's programs at full optimization (LLVM's vectorizer and FMA
  contraction included): the numerics users get, whatever the rest of the suite uses."""
  before = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", False)
  # The flag is not part of jit's cache key: drop programs compiled before with it on.
  jax.clear_caches()
  yield
  jax.config.update("jax_disable_most_optimizations", before)


# ----------------------------------------------------------------- the checker


def _rounded(a, dtype):
  """``a`` rounded to ``dtype`` and back to float64: what the low-precision op sees."""
  return np.asarray(np.asarray(a).astype(dtype), np.float64)


def check_op(
    f, inputs, reference=None, *, diff=None, forms=False, conv=False, nonfinite_reference=...
):
  """Checks ``f(*inputs)`` in float64 against ``reference`` and in float32/bfloat16, then
  again with non-finite values planted (:func:`check_nonfinite`).

  Args:
    f: the op with its configuration bound; takes ``inputs`` positionally.
    inputs: float64 NumPy arrays.
    reference: NumPy ``reference(*inputs)`` for the float64 result, or None.
    diff: the indices of the inputs to differentiate (default: all).
    forms: the op takes cnnjax's XLA:CPU forms: on CPU, each is checked too.
    conv: the op computes with XLA convolutions (see :func:`check_nonfinite`).
    nonfinite_reference: the reference for non-finite inputs, if not ``reference``.
  """
  diff = tuple(range(len(inputs))) if diff is None else diff

  @jax.jit
  def run(args, ct):
    y, vjp = jax.vjp(
        lambda *d: f(*[d[diff.index(i)] if i in diff else a for i, a in enumerate(args)]),
        *[args[i] for i in diff],
    )
    return y, vjp(ct.astype(y.dtype))

  shape = jax.eval_shape(f, *inputs).shape
  ct = np.random.default_rng(7).normal(size=shape)
  y64, _ = run(list(inputs), ct)  # the same program as the references below: one compile
  if reference is not None:
    want = reference(*inputs)
    assert y64.shape == want.shape, (y64.shape, want.shape)
    assert_close(y64, want, np.float64)
  for dtype in _LOW:
    low = [np.asarray(a).astype(dtype) for a in inputs]
    high = [_rounded(a, dtype) for a in inputs]
    ct_r = _rounded(ct, dtype)
    y, grads = run(low, ct_r.astype(dtype))
    y_ref, grads_ref = run(high, ct_r)
    assert y.dtype == dtype, (y.dtype, dtype)
    assert_close(y, y_ref, dtype)
    for g, g_ref in zip(grads, grads_ref, strict=True):
      assert g.dtype == dtype, (g.dtype, dtype)
      assert_close(g, g_ref, dtype)
  if nonfinite_reference is ...:
    nonfinite_reference = reference
  check_nonfinite(run, inputs, ct, nonfinite_reference, forms=forms, conv=conv)


# ------------------------------------------------------------ non-finite values

_NONFINITE = (np.nan, np.inf, -np.inf)


def _plant(a, rng):
  """``a`` with 1–3 of its entries (fewer if it is smaller) NaN, +inf or -inf."""
  a = np.array(a, np.float64)
  if a.size:
    where = rng.choice(a.size, size=min(int(rng.integers(1, 4)), a.size), replace=False)
    a.reshape(-1)[where] = rng.choice(_NONFINITE, size=len(where))
  return a


def _pattern(a):
  """0 where finite, 1 NaN, 2 +inf, 3 -inf."""
  a = np.asarray(a).astype(np.float64)
  return np.select([np.isnan(a), np.isposinf(a), np.isneginf(a)], [1, 2, 3], 0)


def assert_same_values(got, want, dtype, what):
  """The same NaN/±inf pattern, and the finite values within ``dtype``'s rounding."""
  got, want = np.asarray(got).astype(np.float64), np.asarray(want).astype(np.float64)
  assert got.shape == want.shape, (what, got.shape, want.shape)
  differ = np.argwhere(_pattern(got) != _pattern(want))
  assert not differ.size, (
      f"{what}: the non-finite pattern differs at {len(differ)} of {got.size} positions, "
      f"first {tuple(differ[0])}: got {got[tuple(differ[0])]}, want {want[tuple(differ[0])]}"
  )
  finite = np.isfinite(want)
  assert_close(np.where(finite, got, 0), np.where(finite, want, 0), dtype)


def _form_variants(forms: bool, dtype):
  """The XLA:CPU form settings a convolution is checked under (on CPU): lax's one
  convolution (no CPU forms: what GPU/TPU run, the reference), the default forms, and for
  bfloat16 the patch path."""
  if not (forms and jax.default_backend() == "cpu"):
    return {"default": {}}
  variants = {"lax": dict(enabled=False), "default": {}}
  if dtype == jnp.bfloat16:
    variants["bf16 patch matmuls"] = dict(bf16_matmul=True)
  return variants


def check_nonfinite(run, inputs, ct, reference=None, *, forms=False, conv=False):
  """NaN, +inf and -inf reach exactly the outputs (and gradients) they should.

  In float64, float32 and bfloat16:

  - Planted in the first input (the data): the result has the NumPy reference's pattern
    on the same (rounded) values, the finite values within rounding; so do its
    gradients against float64's on the rounded values (for ops without XLA convolutions,
    whose kernels differ by dtype where a NaN meets a zero: see below).
  - With ``forms``, on CPU: every XLA:CPU form gives exactly lax's pattern for the
    result and the gradients, and finite values within rounding.

  Not checked: non-finite *weights*. Where one meets the zero padding the textbook gives
  NaN (``0·inf``), and so mostly does XLA:CPU's float32 convolution, but its float64
  convolution leaves the padding out (lax's own pattern differs by dtype there), and so
  do its grouped and strided gradients: no pattern is lax's on every dtype and form.
  """
  rng = np.random.default_rng(11)
  data = [_plant(inputs[0], rng), *inputs[1:]]
  for dtype in (np.float64, *_LOW):
    name_of = np.dtype(dtype).name
    cast = lambda args: [np.asarray(a).astype(dtype) for a in args]
    results = {}
    for name, variant in _form_variants(forms, dtype).items():
      with cnnjax.cpu_forms(**variant):
        y, grads = run(cast(data), ct.astype(dtype))
        results[name] = (y, *grads)
    y, *grads = results["default"]
    rounded = [_rounded(a, dtype) for a in data]
    if reference is not None:
      with np.errstate(invalid="ignore", over="ignore"):
        want = reference(*rounded)
      assert_same_values(y, want, dtype, f"{name_of} result vs NumPy")
    if not (forms or conv) and dtype != np.float64:
      _, grads_ref = run(rounded, _rounded(ct, dtype))
      for i, (g, g_ref) in enumerate(zip(grads, grads_ref, strict=True)):
        assert_same_values(g, g_ref, dtype, f"{name_of} gradient {i} vs float64")
    for name, got in results.items():
      for i, (a, b) in enumerate(zip(got, results.get("lax", got), strict=True)):
        assert_same_values(a, b, dtype, f"{name_of} output {i}: {name} vs lax's form")


def _normal(shape, seed):
  return np.random.default_rng(seed).normal(size=shape)


# ---------------------------------------------------------------- strategies


@st.composite
def geometry(
    draw,
    *,
    max_kernel=3,
    dilation=True,
    modes=MODES,
    strings=("VALID", "SAME", "SAME_LOWER", "FULL", "CAUSAL"),
    ranks=(1, 2, 2, 3),  # 2-D, what most users run, twice as often
):
  """Rank, input sizes (odd ones too), kernel, stride, dilation, padding and mode
  ("CAUSAL" padding only in 1-D, where it is defined)."""
  nd = draw(st.sampled_from(ranks))
  sizes = [draw(st.integers(1, {1: 9, 2: 8, 3: 4}[nd])) for _ in range(nd)]
  kernel = [draw(st.integers(1, max_kernel)) for _ in range(nd)]
  stride = [draw(st.integers(1, 3)) for _ in range(nd)]
  dil = [draw(st.integers(1, 2)) if dilation else 1 for _ in range(nd)]
  form = draw(st.sampled_from(["string", "int", "ints", "pairs"]))
  if form == "string":
    padding = draw(st.sampled_from(strings))
    assume(padding != "CAUSAL" or nd == 1)
  elif form == "int":
    padding = draw(st.integers(0, 2))
  elif form == "ints":
    padding = tuple(draw(st.integers(0, 2)) for _ in range(nd))
  else:
    padding = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(nd))
  mode = draw(st.sampled_from(modes))
  _, _, pads, out = ref_geometry(sizes, kernel, stride=stride, padding=padding, dilation=dil)
  assume(all(o >= 1 for o in out))
  if mode == "reflect":
    assume(all(lo < n and hi < n for n, (lo, hi) in zip(sizes, pads, strict=True)))
  batch = draw(st.sampled_from([0, 1, 2, 2, 3]))
  return dict(
      nd=nd,
      batch=batch,
      sizes=sizes,
      kernel=kernel,
      config=dict(stride=tuple(stride), padding=padding, dilation=tuple(dil)),
      mode=mode,
  )


@st.composite
def tiled_geometry(draw):
  g = draw(geometry())
  return dict(g, tile=tuple(draw(st.integers(1, 4)) for _ in range(g["nd"])))


# ------------------------------------------------------------ the convolutions


class TestConvolutionFamily:

  @pytest.mark.parametrize("where", [(0, 0), (2, 3), (5, 5)])
  @pytest.mark.parametrize("value", _NONFINITE)
  @pytest.mark.parametrize("dtype", [np.float32, np.float64])
  def test_a_nonfinite_input_reaches_only_the_outputs_that_read_it(self, where, value, dtype):
    # Issue 28: XLA:CPU's 2x2-block form (narrow inputs, kernels of 3x3 or more, stride
    # 1) multiplied zero taps by the input, so one NaN at a corner made 4 NaN outputs
    # instead of 1, one at the centre 16 instead of 9; conv_transpose spread an inf.
    x = np.ones((1, 6, 6, 1))
    x[0, where[0], where[1], 0] = value
    w = np.ones((3, 3, 1, 1))
    for op, ref in (
        (cnnjax.cross_correlate, ref_correlate),
        (cnnjax.convolve, functools.partial(ref_correlate, flip=True)),
    ):
      for padding in ("VALID", "SAME"):
        assert_same_values(
            op(x.astype(dtype), w.astype(dtype), padding=padding),
            ref(x, w, padding=padding),
            dtype,
            f"{op.__name__} {padding}",
        )
    got = cnnjax.conv_transpose(x.astype(dtype), w.astype(dtype), padding="VALID")
    want = ref_correlate_adjoint(x, w, (1, 8, 8, 1), padding="VALID")
    assert_same_values(got, want, dtype, "conv_transpose")

  @_SETTINGS
  @given(geometry(), st.sampled_from([1, 2]), st.integers(1, 2), st.booleans())
  def test_cross_correlate_and_convolve(self, g, groups, c_out_per_group, flip):
    x = _normal((g["batch"], *g["sizes"], 2 * groups), 0)
    w = _normal((*g["kernel"], 2, groups * c_out_per_group), 1)
    op = cnnjax.convolve if flip else cnnjax.cross_correlate
    config = dict(g["config"], groups=groups, padding_mode=g["mode"])
    check_op(
        functools.partial(op, **config),
        [x, w],
        functools.partial(ref_correlate, flip=flip, **config),
        forms=True,
    )

  @_SETTINGS
  @given(geometry(modes=("zeros",)), st.sampled_from([1, 2]))
  def test_conv_transpose(self, g, groups):
    x_shape = (g["batch"], *g["sizes"], 2 * groups)
    w = _normal((*g["kernel"], 2, 2 * groups), 1)
    _, _, _, out = ref_geometry(g["sizes"], g["kernel"], **g["config"])
    y = _normal((g["batch"], *out, 2 * groups), 0)
    config = dict(g["config"], groups=groups)
    check_op(
        functools.partial(cnnjax.conv_transpose, input_shape=g["sizes"], **config),
        [y, w],
        functools.partial(ref_correlate_adjoint, x_shape=x_shape, **config),
        forms=True,
    )

  @_SETTINGS
  @given(geometry())
  def test_locally_connected(self, g):
    _, _, _, out = ref_geometry(g["sizes"], g["kernel"], **g["config"])
    x = _normal((g["batch"], *g["sizes"], 2), 0)
    w = _normal((*out, *g["kernel"], 2, 3), 1)
    config = dict(g["config"], padding_mode=g["mode"])
    check_op(
        functools.partial(cnnjax.locally_connected, **config),
        [x, w],
        functools.partial(ref_local, **config),
    )

  @_SETTINGS
  @given(tiled_geometry())
  @example(
      dict(
          nd=2,
          batch=2,
          sizes=[6, 6],
          kernel=[3, 3],
          tile=(3, 3),
          mode="zeros",
          config=dict(stride=(1, 1), padding="SAME", dilation=(1, 1)),
      )
  )  # issue 18's defect (3x3 phases, some cropping): fails with the crop workaround off
  def test_tiled_conv(self, g):
    x = _normal((g["batch"], *g["sizes"], 2), 0)
    w = _normal((*g["tile"], *g["kernel"], 2, 3), 1)
    config = dict(g["config"], tile=g["tile"], padding_mode=g["mode"])
    check_op(
        functools.partial(cnnjax.tiled_conv, **config),
        [x, w],
        functools.partial(ref_tiled, **config),
        forms=True,
    )

  @_SETTINGS
  @given(geometry(), st.sampled_from([1, 2]))
  def test_conv_weight_grad(self, g, groups):
    # A correlation of x with g whose stride is the dilation and dilation the stride.
    _, _, pads, out = ref_geometry(g["sizes"], g["kernel"], **g["config"])
    x = _normal((g["batch"], *g["sizes"], 2 * groups), 0)
    dy = _normal((g["batch"], *out, 2 * groups), 1)
    config = dict(g["config"], groups=groups, padding_mode=g["mode"])

    def reference(x, dy):
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

    w_shape = (*g["kernel"], 2, 2 * groups)
    check_op(
        functools.partial(cnnjax.conv_weight_grad, kernel_shape=w_shape, **config),
        [x, dy],
        reference,
        forms=True,
    )

  @_SETTINGS
  @given(
      st.sampled_from(["p4", "p4m"]),
      st.booleans(),
      st.integers(1, 3),
      st.integers(1, 2),
      st.sampled_from(["VALID", "SAME", 1]),
      st.integers(0, 2),
      st.integers(3, 7),
  )
  def test_lift_and_group_conv(self, group, lift, k, stride, padding, batch, size):
    assume(size >= k or padding != "VALID")
    order = {"p4": 4, "p4m": 8}[group]
    settings = dict(stride=stride, padding=padding)
    if lift:
      x, w = _normal((batch, size, size, 2), 0), _normal((k, k, 2, 3), 1)
      op, ref = cnnjax.lift_conv, ref_lift_conv
    else:
      x, w = _normal((batch, size, size, order, 2), 0), _normal((k, k, order, 2, 3), 1)
      op, ref = cnnjax.group_conv, ref_group_conv
    check_op(
        functools.partial(op, group=group, **settings),
        [x, w],
        functools.partial(ref, group=group, **settings),
        forms=True,
    )


# ------------------------------------------------------ deformable convolution


class TestDeformable:

  @_SETTINGS
  @given(
      geometry(modes=("zeros",), ranks=(2,)),
      st.sampled_from([1, 2]),
      st.sampled_from([1, 2, 4]),
      st.booleans(),
  )
  def test_deform_conv(self, g, groups, offset_groups, modulated):
    # Offsets of a few pixels: samples inside, across the border and outside the input.
    _, _, _, out = ref_geometry(g["sizes"], g["kernel"], **g["config"])
    taps = math.prod(g["kernel"])
    x = _normal((g["batch"], *g["sizes"], 4), 0)
    w = _normal((*g["kernel"], 4 // groups, 2 * groups), 1)
    offsets = 2 * _normal((g["batch"], *out, offset_groups * taps * 2), 2)
    inputs = [x, w, offsets]
    if modulated:
      inputs.append(_normal((g["batch"], *out, offset_groups * taps), 3))
    config = dict(g["config"], groups=groups, offset_groups=offset_groups)

    def op(x, w, offsets, mask=None):
      return cnnjax.deform_conv(x, w, offsets, mask=mask, **config)

    check_op(op, inputs, functools.partial(ref_deform_conv, **config))


# -------------------------------------------------------------- the matrix view


class TestMatrixView:

  @_SETTINGS
  @given(geometry(), st.sampled_from([1, 2]))
  def test_conv_matrix(self, g, groups):
    w = _normal((*g["kernel"], 2, 2 * groups), 1)
    in_shape = (*g["sizes"], 2 * groups)
    config = dict(g["config"], groups=groups, padding_mode=g["mode"])

    def reference(w):
      # Column j is the correlation of the j-th unit image (the images as one batch).
      units = np.eye(math.prod(in_shape)).reshape(-1, *in_shape)
      return ref_correlate(units, w, **config).reshape(len(units), -1).T

    def placed(w):
      # With zero padding each entry is one tap or none (0·NaN in the correlation above
      # is NaN): which tap, found by correlating the unit images with the taps' labels
      # 1..K (exact), is read from w.
      labels = np.arange(1, w.size + 1, dtype=np.float64).reshape(w.shape)
      tap = np.rint(reference(labels)).astype(np.int64)
      return np.where(tap > 0, w.reshape(-1)[np.maximum(tap, 1) - 1], 0.0)

    check_op(
        functools.partial(cnnjax.conv_matrix, input_shape=in_shape, **config),
        [w],
        reference,
        nonfinite_reference=placed if g["mode"] == "zeros" else None,
    )

  @_SETTINGS
  @given(geometry(), st.booleans())
  def test_unfold_and_fold(self, g, use_fold):
    kernel, config = g["kernel"], g["config"]
    if use_fold:
      _, _, _, out = ref_geometry(g["sizes"], kernel, **config)
      shape = (g["batch"], *g["sizes"], 2)
      p = _normal((g["batch"], *out, math.prod(kernel) * 2), 0)
      check_op(
          lambda p: cnnjax.fold(p, shape, kernel, **config),
          [p],
          lambda p: ref_fold(p, shape, kernel, **config),
      )
    else:
      x = _normal((g["batch"], *g["sizes"], 2), 0)
      check_op(
          lambda x: cnnjax.unfold(x, kernel, padding_mode=g["mode"], **config),
          [x],
          lambda x: ref_unfold(x, kernel, padding_mode=g["mode"], **config),
      )


# ------------------------------------------------------------------- the pools


@st.composite
def pool_geometry(draw):
  g = draw(geometry(dilation=False, modes=("zeros",), strings=("VALID", "SAME")))
  stride = draw(st.sampled_from([None, g["config"]["stride"]]))
  _, _, pads, out = ref_geometry(
      g["sizes"],
      g["kernel"],
      padding=g["config"]["padding"],
      stride=g["kernel"] if stride is None else stride,
  )
  # Every window must overlap the input (the pools refuse all-padding windows).
  s = g["kernel"] if stride is None else stride
  assume(
      all(
          lo < k and (m - 1) * si - lo < n
          for (lo, _), k, si, m, n in zip(pads, g["kernel"], s, out, g["sizes"], strict=True)
      )
  )
  return dict(g, stride=stride)


@st.composite
def torch_pool_geometry(draw):
  """A pool with PyTorch's options: ceil_mode, max pooling's dilation, average pooling's
  count_include_pad and divisor_override; every padding form; every window reads the
  input (the pools refuse the others)."""
  g = draw(geometry(modes=("zeros",)))
  nd = g["nd"]
  kind = draw(st.sampled_from(["max", "avg", "lp"]))
  stride = draw(st.sampled_from([None, g["config"]["stride"]]))
  s = g["kernel"] if stride is None else stride
  ceil_mode = draw(st.booleans())
  options = dict(ceil_mode=ceil_mode)
  dilation = (1,) * nd
  if kind == "max":
    dilation = g["config"]["dilation"]
    options["dilation"] = dilation
  elif kind == "avg":
    options["count_include_pad"] = draw(st.booleans())
    options["divisor_override"] = draw(st.sampled_from([None, None, 1, 3]))
  r_eff = [(k - 1) * t + 1 for k, t in zip(g["kernel"], dilation, strict=True)]
  pads = ref_pads(g["config"]["padding"], g["sizes"], r_eff, s)
  for n, k, si, t, r, (lo, hi) in zip(
      g["sizes"], g["kernel"], s, dilation, r_eff, pads, strict=True
  ):
    assume(n + lo + hi >= r)
    m = ref_torch_out_size(n, k, si, lo, hi, dilation=t, ceil_mode=ceil_mode)
    assume(all(any(0 <= o * si - lo + j * t < n for j in range(k)) for o in range(m)))
  return dict(g, kind=kind, stride=stride, options=options)


class TestPools:

  @_SETTINGS
  @given(pool_geometry(), st.sampled_from(["max", "avg", "lp"]))
  def test_window_pools(self, g, kind):
    x = _normal((g["batch"], *g["sizes"], 3), 0)
    window, stride, padding = tuple(g["kernel"]), g["stride"], g["config"]["padding"]
    op = {
        "max": cnnjax.max_pool,
        "avg": cnnjax.avg_pool,
        "lp": functools.partial(cnnjax.lp_pool, p=2),
    }[kind]
    check_op(
        lambda x: op(x, window, stride=stride, padding=padding),
        [x],
        lambda x: ref_pool(x, window, stride, padding, kind),
    )

  @_SETTINGS
  @given(torch_pool_geometry())
  def test_window_pools_with_pytorch_options(self, g):
    x = _normal((g["batch"], *g["sizes"], 3), 0)
    window, kind = tuple(g["kernel"]), g["kind"]
    kw = dict(stride=g["stride"], padding=g["config"]["padding"], **g["options"])
    op = {
        "max": cnnjax.max_pool,
        "avg": cnnjax.avg_pool,
        "lp": functools.partial(cnnjax.lp_pool, p=2),
    }[kind]
    check_op(
        lambda x: op(x, window, **kw),
        [x],
        lambda x: ref_torch_pool(x, window, kind, p=2, **kw),
    )

  @_SETTINGS
  @given(geometry(), st.booleans())
  def test_global_pools(self, g, use_max):
    x = _normal((g["batch"], *g["sizes"], 3), 0)
    axes = tuple(range(1, g["nd"] + 1))
    op = cnnjax.global_max_pool if use_max else cnnjax.global_avg_pool
    ref = (lambda x: x.max(axis=axes)) if use_max else (lambda x: x.mean(axis=axes))
    check_op(op, [x], ref)

  @_SETTINGS
  @given(st.integers(0, 3), st.integers(1, 4), st.integers(1, 3))
  def test_maxout(self, batch, groups, pieces):
    x = _normal((batch, 3, groups * pieces), 0)
    check_op(
        lambda x: cnnjax.maxout(x, pieces),
        [x],
        lambda x: x.reshape(batch, 3, groups, pieces).max(axis=-1),
    )

  @_SETTINGS
  @given(geometry(), st.integers(1, 3), st.sampled_from([2, 3, 4]))
  def test_blur_pool(self, g, stride, taps):
    assume(all(n >= taps for n in g["sizes"]))  # reflect padding needs the room
    x = _normal((g["batch"], *g["sizes"], 2), 0)
    check_op(
        lambda x: cnnjax.blur_pool(x, stride=stride, kernel_size=taps),
        [x],
        lambda x: ref_binomial_blur(x, stride, taps),
    )

  @_SETTINGS
  @given(geometry(), st.integers(1, 3))
  def test_polyphase_downsample(self, g, s):
    stride = (s,) * g["nd"]
    g["sizes"] = [max(n // s, 1) * s for n in g["sizes"]]  # APS needs multiples of the stride
    x = _normal((g["batch"], *g["sizes"], 2), 0)
    check_op(
        lambda x: cnnjax.polyphase_downsample(x, stride=stride), [x], lambda x: ref_aps(x, stride)
    )

  @_SETTINGS
  @given(
      st.integers(0, 3),
      st.integers(1, 7),
      st.integers(1, 6),
      st.floats(1e-3, 1.0),
      st.floats(0.25, 1.0),
  )
  def test_local_response_norm(self, batch, channels, size, alpha, beta):
    x = _normal((batch, 3, 2, channels), 0) * 2
    f = functools.partial(cnnjax.local_response_norm, size=size, alpha=alpha, beta=beta, k=1.0)
    check_op(f, [x], lambda x: ref_lrn(x, size, alpha, beta, 1.0))

  @_SETTINGS
  @given(
      st.integers(1, 3).flatmap(
          lambda nd: st.tuples(
              st.lists(st.integers(1, 7), min_size=nd, max_size=nd),
              st.lists(st.one_of(st.none(), st.integers(1, 9)), min_size=nd, max_size=nd),
          )
      ),
      st.sampled_from(["avg", "max"]),
      st.integers(0, 2),
  )
  def test_adaptive_pools(self, sizes_and_outputs, kind, batch):
    sizes, output_size = sizes_and_outputs  # an output may exceed the input size
    x = _normal((batch, *sizes, 3), 0)
    op = cnnjax.adaptive_avg_pool if kind == "avg" else cnnjax.adaptive_max_pool
    check_op(lambda x: op(x, output_size), [x], lambda x: ref_adaptive_pool(x, output_size, kind))

  @_SETTINGS
  @given(pool_geometry())
  def test_max_unpool(self, g):
    # Non-overlapping windows (stride = window), so no position is written twice.
    window, padding = tuple(g["kernel"]), g["config"]["padding"]
    x = _normal((g["batch"], *g["sizes"], 2), 0)
    indices = ref_max_pool_indices(x, window, None, padding)
    y = _normal(indices.shape, 1)
    check_op(
        lambda y: cnnjax.max_unpool(y, indices, x.shape),
        [y],
        lambda y: ref_max_unpool(y, indices, x.shape),
    )

  @_SETTINGS
  @given(st.integers(0, 3), st.sampled_from([4, 8]), st.sampled_from(["max", "mean"]))
  def test_group_pool(self, batch, order, reduce):
    x = _normal((batch, 3, 2, order, 2), 0)
    check_op(
        functools.partial(cnnjax.group_pool, reduce=reduce),
        [x],
        lambda x: x.max(axis=3) if reduce == "max" else x.mean(axis=3),
    )


# ------------------------------------------------ again: the XLA:CPU flag off


def test_the_flag_and_the_optimization_are_as_this_run_says():
  off = os.environ.get("CNNJAX_XLA_FLAGS", "1") == "0"
  on = "xla_cpu_experimental_ynn_fusion_type" in os.environ.get("XLA_FLAGS", "")
  assert on != off or jax.default_backend() != "cpu", os.environ.get("XLA_FLAGS")
  assert not jax.config.read("jax_disable_most_optimizations")


@pytest.mark.skipif(
    jax.default_backend() != "cpu", reason="the XLA:CPU flag only changes XLA:CPU's kernels"
)
def test_the_convolutions_again_with_the_xla_cpu_flag_off():
  # The flag changes which kernels XLA:CPU runs convolutions with; nothing else
  # (locally_connected is a dot_general). The child must pass and skip nothing.
  proc = subprocess.run(
      [
          sys.executable,
          "-m",
          "pytest",
          "-q",
          "-p",
          "no:cacheprovider",
          "-x",
          f"{__file__}::TestConvolutionFamily",
          f"{__file__}::test_the_flag_and_the_optimization_are_as_this_run_says",
          "-k",
          "not locally_connected",
      ],
      env=dict(
          os.environ,
          CNNJAX_XLA_FLAGS="0",
          XLA_FLAGS="",
          CNNJAX_FUZZ_EXAMPLES=str(max(1, EXAMPLES // 3)),
      ),
      capture_output=True,
      text=True,
      timeout=600,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
  )
  assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
  assert " passed" in proc.stdout and " skipped" not in proc.stdout, proc.stdout[-2000:]
