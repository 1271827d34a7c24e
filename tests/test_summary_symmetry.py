"""The symmetry column of cnnjax.summary, claim by claim, on random weights.

For zoo models (seed-cnn, lenet5, resnet20, p4-cnn) and stacks built here (circular
padding with max pooling, a strided conv, blur pooling and APS; zero padding with a
transposed and a tiled convolution), the network up to each row (its intermediate
output, captured with ``nnx.capture``) is checked with cnnjax.equivariance's property
tools against what the row claims:

- ``shift Pℤ``: circular shifts by multiples of P shift the output circularly by the
  step, on the whole map; a one-pixel shift (when P > 1) matches no circular shift of
  the output;
- ``shift Pℤ (interior)``: the same for zero-filled and circular shifts on the region
  that ``interior_region`` (or, for upsampling layers, a margin worked out by hand)
  leaves comparable, for a shift by ±P for which one exists; rows that say ``none``
  after an interior claim have no such region (``interior_region`` refuses);
- ``shift Pℤ (adaptive)``: each example's output is a circular shift of the unshifted
  one, by an amount that depends on the input;
- ``invariant Pℤ``: circular shifts by multiples of P leave the output unchanged, and
  a one-pixel shift (P > 1) does not; ``none`` after zero-padded global pooling or a
  flatten: a shift by P changes the output;
- ``p4``/``p4m``: every element of the group moves the output by ``group_action`` (maps
  over the group) or ``plane_action`` (images), or leaves it unchanged (``invariant``);
  rows without a group: a quarter turn does not commute with them.

In float64 with the float64 default tolerance (exactness), and in float32 with the
float32 one for two models.
"""

import itertools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cnnjax import equivariance as eqv
from cnnjax import models
from cnnjax import nn as cnn
from cnnjax.summary import summary

# A relative error above this means "not equivariant" (random weights: O(1) errors).
CLEARLY_NOT = 1e-3


def _forward(model: nnx.Module, paths):
  """``outputs(x)``: the outputs of the modules at ``paths`` (in row order), jitted and
  cached per input (each check evaluates x and its transforms once)."""
  model.eval()
  graphdef, state = nnx.split(model)

  @jax.jit
  def run(state, x):
    m = nnx.merge(graphdef, state)
    _, inter = nnx.capture(m, nnx.Intermediate, method_outputs=nnx.Intermediate)(x)
    flat = dict(nnx.to_flat_state(inter))
    return [flat[(*path, "__call__")].get_value()[0] for path in paths]

  cache = {}

  def outputs(x):
    x = jnp.asarray(x)
    key = (x.shape, x.dtype.name, np.asarray(x).tobytes())
    if key not in cache:
      cache[key] = run(state, x)
    return cache[key]

  return outputs


def _row_fn(outputs, i):
  return lambda x: outputs(x)[i]


def _shift(t, out_ndim: int):
  """A per-axis shift for a ``[N, H, W, (|G|,) C]`` output (the group axis unmoved)."""
  return tuple(t) + (0,) * (out_ndim - 2 - len(t))


def _best_circular_match(a: np.ndarray, b: np.ndarray) -> float:
  """The smallest relative error between ``b`` and a circular shift of ``a`` over the
  first two spatial axes, the worst over examples (each may move differently)."""
  worst = 0.0
  for n in range(a.shape[0]):
    best = np.inf
    for u in itertools.product(range(a.shape[1]), range(a.shape[2])):
      rolled = np.roll(a[n], u, axis=(0, 1))
      best = min(best, np.linalg.norm(b[n] - rolled) / np.linalg.norm(a[n]))
    worst = max(worst, best)
  return worst


def _region(in_spatial, layers, pads, t):
  """``interior_region`` for shift ``t``, or None where no position is interior."""
  try:
    return eqv.interior_region(in_spatial, layers, shift=t, padding=pads)
  except ValueError:
    return None


def _check_translation(f, x, sym, layers, pads, *, rtol):
  """Checks one row's translation claim (and that finer shifts are not claimable)."""
  y = np.asarray(f(x), np.float64)
  spatial = x.shape[1:3]
  period, step = sym.period, sym.step
  if sym.translation == "equivariant":
    for k in ((1, 1), (2, -1)):
      t = tuple(p * kk for p, kk in zip(period, k, strict=True))
      u = tuple(q * kk for q, kk in zip(step, k, strict=True))
      eqv.assert_equivariant(
          f, x, eqv.translate(t), eqv.translate(_shift(u, y.ndim)), rtol=rtol, atol=0
      )
  elif sym.translation == "interior":
    compared = 0
    for t in itertools.product(*[(p, -p) for p in period]):
      region = _region(spatial, layers, pads, t) if layers is not None else pads
      if region is None:
        continue
      u = tuple(ti // p * q for ti, p, q in zip(t, period, step, strict=True))
      for mode in ("zeros", "circular"):
        eqv.assert_equivariant(
            f,
            x,
            eqv.translate(t, mode=mode),
            eqv.translate(_shift(u, y.ndim)),
            region=region,
            rtol=rtol,
            atol=0,
        )
      compared += 1
    assert compared, f"{sym}: no shift by ±period has an interior position"
  elif sym.translation == "adaptive":
    for t in ((period[0], 0), (period[0], -2 * period[1])):
      moved = np.asarray(f(eqv.translate(t)(x)), np.float64)
      assert _best_circular_match(y, moved) < rtol, (sym, t)
  elif sym.translation == "invariant":
    for t in (period, (2 * period[0], -period[1])):
      eqv.assert_invariant(f, x, eqv.translate(t), rtol=rtol, atol=0)
  # Finer shifts: a one-pixel shift along an axis whose period is larger is no symmetry.
  if sym.translation in ("equivariant", "adaptive") and max(period) > 1:
    t = tuple(1 if p > 1 else 0 for p in period)
    moved = np.asarray(f(eqv.translate(t)(x)), np.float64)
    assert _best_circular_match(y, moved) > CLEARLY_NOT, (sym, t)
  if sym.translation == "invariant" and max(period) > 1:
    t = tuple(1 if p > 1 else 0 for p in period)
    assert eqv.invariance_error(f, x, eqv.translate(t)) > CLEARLY_NOT, (sym, t)


def _check_group(f, x, sym, *, rtol):
  y = np.asarray(f(x))
  if sym.group is None:
    if y.ndim == 4 and y.shape[1] == y.shape[2]:  # an image-shaped output: rot90 fails
      assert eqv.equivariance_error(f, x, eqv.rot90()) > CLEARLY_NOT, sym
    return
  order = {"p4": 4, "p4m": 8}[sym.group]
  for e in range(1, order):
    g_in = eqv.plane_action(e, group=sym.group)
    if sym.group_action == "invariant":
      eqv.assert_invariant(f, x, g_in, rtol=rtol, atol=0)
    elif sym.group_action == "map":
      g_out = eqv.group_action(e, group=sym.group)
      eqv.assert_equivariant(f, x, g_in, g_out, rtol=rtol, atol=0)
    else:
      eqv.assert_equivariant(f, x, g_in, g_in, rtol=rtol, atol=0)


def _check_rows(model, input_shape, paths, layers_per_row, *, dtype, expected=None):
  """Checks every row of ``summary(model)``; ``layers_per_row[i]`` is the
  ``(layers, paddings)`` the row adds for ``interior_region`` (None: not a window
  stack), or a region worked out by hand (a tuple of slices)."""
  s = summary(model, input_shape)
  assert len(s.rows) == len(paths)
  if expected is not None:
    assert [str(r.symmetry) for r in s.rows] == expected
  rtol = eqv.default_tolerance(dtype)[0]
  x = jax.random.normal(jax.random.key(0), (2, *input_shape), dtype)
  outputs = _forward(model, paths)
  layers, pads = [], []
  for i, row in enumerate(s.rows):
    f = _row_fn(outputs, i)
    sym = row.symmetry
    assert sym is not None  # summary derives every row's
    spec = layers_per_row[i]
    if isinstance(spec, list):
      layers += [layer for layer, _ in spec]
      pads += [pad for _, pad in spec]
      stack, region = list(layers), list(pads)
    else:  # a hand-made region for this row (or None)
      stack, region = None, spec
    _check_translation(f, x, sym, stack, region, rtol=rtol)
    _check_group(f, x, sym, rtol=rtol)
    previous = s.rows[i - 1].symmetry if i else None
    if sym.translation == "none" and previous is not None and previous.translation == "interior":
      y = np.asarray(f(x))
      if y.ndim >= 4 and stack is not None:  # the interior vanished: none for ±period
        for t in itertools.product(*[(p, -p) for p in previous.period]):
          assert _region(input_shape[:2], stack, region, t) is None, (row.name, t)
      else:  # pooled or flattened: a shift by the period changes the output
        t = previous.period
        assert eqv.invariance_error(f, x, eqv.translate(t)) > CLEARLY_NOT, row.name
  return s


def _f64(name, **options):
  return models.get(name, rngs=nnx.Rngs(1), param_dtype=jnp.float64, **options)


SEED_CNN_LAYERS = [
    [((5, 1), "VALID")],
    [((2, 2), "VALID")],
    [((5, 1), "VALID")],
    [((2, 2), "VALID")],
    None,
    None,
]


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_seed_cnn(dtype):
  # float64 on 24×24 (24 → 20 → 10 → 6 → 3: float64 convolutions are slow on XLA:CPU).
  shape = (24, 24, 3) if dtype == jnp.float64 else (32, 32, 3)
  param_dtype = jnp.float64 if dtype == jnp.float64 else jnp.float32
  model = models.get("seed-cnn", rngs=nnx.Rngs(1), param_dtype=param_dtype, input_shape=shape)
  paths = [("conv1",), ("pool1",), ("conv2",), ("pool2",), ("fc1",), ("fc2",)]
  s = _check_rows(model, shape, paths, SEED_CNN_LAYERS, dtype=dtype)
  assert [str(r.symmetry) for r in s.rows][3:] == ["shift 4ℤ (interior)", "none", "none"]


def test_lenet5():
  paths = [(p,) for p in ("c1", "s2", "c3", "s4", "c5", "f6", "output")]
  layers = [
      [((5, 1), "VALID")],
      [((2, 2), "VALID")],
      [((5, 1), "VALID")],
      [((2, 2), "VALID")],
      [((5, 1), "VALID")],  # 1×1: its window is the whole input
      None,
      None,
  ]
  s = _check_rows(_f64("lenet5", activation="relu"), (32, 32, 1), paths, layers, dtype=jnp.float64)
  assert str(s.rows[4].symmetry) == "none"


def test_resnet20():
  # The main path's convolutions (3×3, padding 1); the option-A shortcut reads the
  # centre of their windows, so their interior is the block's.
  paths = [("conv",), ("bn",), *[("blocks", "layers", i) for i in range(9)], ("pool",), ("fc",)]
  layers = [[((3, 1), 1)], [((1, 1), 0)]]
  for stage in range(3):
    for i in range(3):
      stride = 2 if stage and not i else 1
      layers.append([((3, stride), 1), ((3, 1), 1)])
  layers += [None, None]
  s = _check_rows(_f64("resnet20", width=4), (32, 32, 3), paths, layers, dtype=jnp.float64)
  got = [str(r.symmetry) for r in s.rows]
  assert got[:8] == ["shift ℤ (interior)"] * 5 + ["shift 2ℤ (interior)"] * 2 + ["none"]


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_p4_cnn(dtype):
  param_dtype = jnp.float64 if dtype == jnp.float64 else jnp.float32
  # Narrow (float64 convolutions are slow on XLA:CPU); the zoo's layers otherwise.
  model = models.get("p4-cnn", rngs=nnx.Rngs(1), param_dtype=param_dtype, widths=(4, 8), hidden=8)
  paths = [
      (p,) for p in ("lift", "pool1", "gconv", "pool2", "group_pool", "global_pool", "fc1", "fc2")
  ]
  layers = [
      [((5, 1), "VALID")],
      [((2, 2), "VALID")],
      [((5, 1), "VALID")],
      [((2, 2), "VALID")],
      [((1, 1), "VALID")],
      None,
      None,
      None,
  ]
  expected = [
      "shift ℤ (interior), p4",
      "shift 2ℤ (interior), p4",
      "shift 2ℤ (interior), p4",
      "shift 4ℤ (interior), p4",
      "shift 4ℤ (interior), p4",
      "invariant p4",
      "invariant p4",
      "invariant p4",
  ]
  _check_rows(model, (32, 32, 3), paths, layers, dtype=dtype, expected=expected)


@pytest.mark.parametrize("size", [30, 28])
def test_p4m_group_stack(size):
  # Pooling before the lift, p4m throughout, and blur pooling on the group pool's image:
  # at 30, 15 → 8 samples 0, 2, .. 14 of 0..14, symmetric about the centre; at 28,
  # 14 → 7 samples 0, 2, .. 12 of 0..13, and a quarter turn no longer commutes with it.
  r = nnx.Rngs(2)
  f64: dict[str, Any] = dict(param_dtype=jnp.float64, rngs=r)
  model = nnx.Sequential(
      cnn.AvgPool(3, stride=1, padding=1),
      cnn.LiftConv(3, 4, 3, group="p4m", **f64),
      cnn.MaxPool((2, 2, 1)),
      cnn.GroupConv(4, 4, 3, group="p4m", **f64),
      cnn.GroupPool(reduce="mean"),
      cnn.BlurPool(stride=2, padding_mode="reflect"),
      cnn.GlobalMaxPool(),
  )
  paths = [("layers", i) for i in range(7)]
  layers = [
      [((3, 1), 1)],
      [((3, 1), "SAME")],
      [((2, 2), "VALID")],
      [((3, 1), "SAME")],
      [((1, 1), 0)],
      [((3, 2), 1)],
      None,
  ]
  expected = [
      "shift ℤ (interior), p4m",
      "shift ℤ (interior), p4m",
      "shift 2ℤ (interior), p4m",
      "shift 2ℤ (interior), p4m",
      "shift 2ℤ (interior), p4m",
      "shift 4ℤ (interior), p4m" if size == 30 else "shift 4ℤ (interior)",
      "invariant p4m" if size == 30 else "none",
  ]
  _check_rows(model, (size, size, 3), paths, layers, dtype=jnp.float64, expected=expected)


def _circular_stack(dtype):
  r = nnx.Rngs(3)
  circular: dict[str, Any] = dict(
      padding="SAME", padding_mode="circular", param_dtype=dtype, rngs=r
  )
  return nnx.Sequential(
      cnn.Conv(3, 4, 3, **circular),
      cnn.MaxPool(2),
      cnn.Conv(4, 4, 3, stride=2, **circular),
      cnn.BlurPool(stride=2, padding_mode="circular"),
      cnn.PolyphaseDownsample(stride=2),
      cnn.Conv(4, 4, 3, **circular),
      cnn.GlobalAvgPool(),
      nnx.Linear(4, 3, param_dtype=dtype, rngs=r),
  )


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_circular_stack(dtype):
  expected = [
      "shift ℤ",
      "shift 2ℤ",
      "shift 4ℤ",
      "shift 8ℤ",
      "shift 8ℤ (adaptive)",
      "shift 8ℤ (adaptive)",
      "invariant 8ℤ",
      "invariant 8ℤ",
  ]
  paths = [("layers", i) for i in range(8)]
  _check_rows(
      _circular_stack(dtype), (64, 64, 3), paths, [None] * 8, dtype=dtype, expected=expected
  )


def test_aps_after_stride_one_is_invariant_to_every_shift():
  r = nnx.Rngs(4)
  circular: dict[str, Any] = dict(
      padding="SAME", padding_mode="circular", param_dtype=jnp.float64, rngs=r
  )
  model = nnx.Sequential(
      cnn.Conv(3, 4, 3, **circular),
      cnn.PolyphaseDownsample(stride=2),
      cnn.Conv(4, 4, 3, **circular),
      cnn.PolyphaseDownsample(stride=2),
      cnn.GlobalMaxPool(),
  )
  expected = ["shift ℤ", "shift ℤ (adaptive)", "shift ℤ (adaptive)", "shift ℤ (adaptive)"]
  expected.append("invariant ℤ")
  paths = [("layers", i) for i in range(5)]
  _check_rows(model, (16, 16, 3), paths, [None] * 5, dtype=jnp.float64, expected=expected)


def test_upsampling_and_tiles():
  r = nnx.Rngs(5)
  f64: dict[str, Any] = dict(param_dtype=jnp.float64, rngs=r)
  model = nnx.Sequential(
      cnn.Conv(3, 4, 3, stride=2, padding="SAME", **f64),
      cnn.ConvTranspose(4, 4, 3, stride=2, padding="SAME", **f64),
      cnn.TiledConv(4, 4, 3, tile=2, padding="SAME", **f64),
  )
  # Output j of the last two rows reads input pixels within [j − 4, j + 5] (conv: 2m ..
  # 2m + 2 at pads (0, 1); convT: m in [j/2 − 1, j/2]; tiled: j ± 1): for a shift by ±2,
  # positions 8..23 of 32 are off the border and the padding.
  hand = (slice(8, 24), slice(8, 24))
  layers = [[((3, 2), "SAME")], hand, hand]
  expected = ["shift 2ℤ (interior)", "shift 2ℤ→2ℤ (interior)", "shift 2ℤ→2ℤ (interior)"]
  paths = [("layers", i) for i in range(3)]
  _check_rows(model, (32, 32, 3), paths, layers, dtype=jnp.float64, expected=expected)
  # Shifts by 1 are not claimed: no output shift matches on that region.
  outputs = _forward(model, paths)
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3), jnp.float64)
  for i in (1, 2):
    errors = [
        eqv.equivariance_error(
            _row_fn(outputs, i), x, eqv.translate((1, 0)), eqv.translate((u, 0)), region=hand
        )
        for u in range(-2, 3)
    ]
    assert min(errors) > CLEARLY_NOT, errors
